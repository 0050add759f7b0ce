"""The signed-in devices of the token's user, as JSON (bearer access token)."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, jsonify

from authserver.db import db
from authserver.http.audit import audit
from authserver.http.bearer import bearer_claims
from authserver.http.web import csrf
from authserver.models import RefreshFamily
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


def _caller() -> tuple[uuid.UUID, uuid.UUID | None, uuid.UUID | None]:
    """(user id, caller's family id, caller's browser session id) from the access token."""
    claims = bearer_claims()
    user_id = uuid.UUID(claims["sub"])
    family_id = uuid.UUID(claims["sid"]) if claims.get("sid") else None
    session_id = None
    if family_id is not None:
        family = db.session.get(RefreshFamily, family_id)
        session_id = family.browser_session_id if family else None
    return user_id, family_id, session_id


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
def list_sessions() -> Response:
    user_id, family_id, session_id = _caller()
    devices = list_devices(
        db.session,
        user_id,
        runtime().now(),
        current_session_id=session_id,
        current_family_id=family_id,
    )
    response = jsonify(sessions=[_device_json(d) for d in devices])
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.delete("/account/sessions/<uuid:device_id>")
def revoke_session(device_id: uuid.UUID) -> Response | tuple[Response, int]:
    user_id, _, _ = _caller()
    if not revoke_device(db.session, user_id, device_id, runtime().now()):
        return jsonify(error="not_found", error_description="No such session."), 404
    audit(AuditEventType.LOGOUT, user_id=user_id, reason="device_signed_out")
    return Response(status=204)


@bp.post("/account/sessions/revoke-others")
def revoke_other_sessions() -> Response:
    user_id, family_id, session_id = _caller()
    sessions, families = end_user_sessions(
        db.session,
        user_id,
        RevocationReason.LOGOUT_EVERYWHERE,
        runtime().now(),
        keep_session_id=session_id,
        keep_family_id=family_id,
    )
    audit(
        AuditEventType.LOGOUT_EVERYWHERE,
        user_id=user_id,
        reason="everywhere_else",
        sessions_ended=sessions,
        families_revoked=families,
    )
    return jsonify(revoked_sessions=sessions, revoked_families=families)


@bp.post("/account/logout-all")
def logout_all() -> Response:
    user_id, _, _ = _caller()
    sessions, families = end_user_sessions(
        db.session, user_id, RevocationReason.LOGOUT_EVERYWHERE, runtime().now()
    )
    audit(
        AuditEventType.LOGOUT_EVERYWHERE,
        user_id=user_id,
        sessions_ended=sessions,
        families_revoked=families,
    )
    return jsonify(revoked_sessions=sessions, revoked_families=families)
