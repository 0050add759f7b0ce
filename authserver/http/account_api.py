"""The account API: the signed-in devices of the token's user, as JSON, and signing out.

Only access tokens meant for it are served: audience ``{issuer}/account`` and the ``account``
scope (``own_apis.ACCOUNT_API``, checked by ``http/bearer.require_user_token``)."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, jsonify

from authserver.db import db
from authserver.http.audit import audit
from authserver.http.bearer import require_user_token
from authserver.http.rate_limits import per_ip_bearer_api
from authserver.http.web import csrf
from authserver.own_apis import ACCOUNT_API
from authserver.runtime import runtime
from authserver.services.audit import AuditEventType
from authserver.services.browser_sessions import (
    Device,
    end_user_sessions,
    list_devices,
    revoke_device,
)
from authserver.services.refresh_tokens import RevocationReason

bp = Blueprint("account_api", __name__)
csrf.exempt(bp)  # bearer tokens are not sent by browsers on their own: no CSRF to fear


def _device_json(device: Device) -> dict[str, object]:
    return {
        "id": str(device.id),
        "type": device.kind,
        "client_name": device.client_name,
        "created_at": device.created_at.isoformat(),
        "last_used_at": device.last_used_at.isoformat(),
        "ip_address": device.ip_address,
        "user_agent": device.user_agent,
        "current": device.current,
    }


@bp.get("/account/sessions")
@per_ip_bearer_api
def list_sessions() -> Response:
    caller = require_user_token(ACCOUNT_API)
    devices = list_devices(
        db.session,
        caller.user_id,
        runtime().now(),
        current_session_id=caller.browser_session_id(),
        current_family_id=caller.family_id,
    )
    response = jsonify(sessions=[_device_json(d) for d in devices])
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.delete("/account/sessions/<uuid:device_id>")
@per_ip_bearer_api
def revoke_session(device_id: uuid.UUID) -> Response | tuple[Response, int]:
    caller = require_user_token(ACCOUNT_API)
    if not revoke_device(db.session, caller.user_id, device_id, runtime().now()):
        return jsonify(error="not_found", error_description="No such session."), 404
    audit(
        AuditEventType.LOGOUT,
        user_id=caller.user_id,
        client_id=caller.client_id,
        reason="device_signed_out",
    )
    return Response(status=204)


@bp.post("/account/sessions/revoke-others")
@per_ip_bearer_api
def revoke_other_sessions() -> Response:
    caller = require_user_token(ACCOUNT_API)
    sessions, families = end_user_sessions(
        db.session,
        caller.user_id,
        RevocationReason.LOGOUT_EVERYWHERE,
        runtime().now(),
        keep_session_id=caller.browser_session_id(),
        keep_family_id=caller.family_id,
    )
    audit(
        AuditEventType.LOGOUT_EVERYWHERE,
        user_id=caller.user_id,
        client_id=caller.client_id,
        reason="everywhere_else",
        sessions_ended=sessions,
        families_revoked=families,
    )
    return jsonify(revoked_sessions=sessions, revoked_families=families)


@bp.post("/account/logout-all")
@per_ip_bearer_api
def logout_all() -> Response:
    caller = require_user_token(ACCOUNT_API)
    sessions, families = end_user_sessions(
        db.session, caller.user_id, RevocationReason.LOGOUT_EVERYWHERE, runtime().now()
    )
    audit(
        AuditEventType.LOGOUT_EVERYWHERE,
        user_id=caller.user_id,
        client_id=caller.client_id,
        sessions_ended=sessions,
        families_revoked=families,
    )
    return jsonify(revoked_sessions=sessions, revoked_families=families)
