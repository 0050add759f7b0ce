"""``/admin/v1/users``: find, create, update, disable, enable and delete accounts; set a
password, mail a reset link, reset second factors; list and end an account's sessions (its
browser sessions and its apps' refresh families)."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response, jsonify, request, url_for

from authserver.db import db
from authserver.errors import Conflict, InvalidRequest, NotFound
from authserver.http.admin_api import bp
from authserver.http.admin_api.common import (
    Body,
    admin_endpoint,
    decode_cursor,
    iso,
    page,
    page_limit,
    require_if_match,
    with_etag,
)
from authserver.http.audit import audit
from authserver.http.bearer import AdminCaller
from authserver.models import User
from authserver.request_context import request_context
from authserver.runtime import runtime
from authserver.services import account_administration as accounts
from authserver.services import users as user_service
from authserver.services.audit import AuditEventType
from authserver.services.browser_sessions import (
    Device,
    end_user_sessions,
    list_devices,
    revoke_device,
)
from authserver.services.factor_status import has_second_factor
from authserver.services.password_reset import reset_settings, send_reset_link
from authserver.services.refresh_tokens import RevocationReason
from authserver.services.second_factor_enrolment import reset_second_factors

READ = "admin:users:read"
MAX_SEARCH_LENGTH = 254  # the longest address (RFC 5321 §4.5.3.1.3)
WRITE = "admin:users:write"


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "email": user.email,
        "email_verified": user.email_verified,
        "disabled": user.disabled,
        "second_factor": has_second_factor(db.session, user),
        "created_at": iso(user.created_at),
        "updated_at": iso(user.updated_at),
        "last_sign_in_at": iso(user.last_sign_in_at),
    }


def _summary_json(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "email": user.email,
        "email_verified": user.email_verified,
        "disabled": user.disabled,
        "created_at": iso(user.created_at),
        "last_sign_in_at": iso(user.last_sign_in_at),
    }


def _device_json(device: Device) -> dict[str, Any]:
    return {
        "id": str(device.id),
        "type": device.kind,
        "client_name": device.client_name,
        "created_at": iso(device.created_at),
        "last_used_at": iso(device.last_used_at),
        "ip_address": device.ip_address,
        "user_agent": device.user_agent,
    }


@bp.get("/users")
@admin_endpoint(READ)
def list_users(caller: AdminCaller) -> Response:
    """Accounts in address order; ``search`` matches part of the address."""
    limit = page_limit()
    position = decode_cursor("users")
    after = position.get("after") if position else None
    if after is not None and not isinstance(after, str):
        raise InvalidRequest("The cursor is not one this list gave.")
    search = request.args.get("search") or None
    if search is not None and len(search) > MAX_SEARCH_LENGTH:
        raise InvalidRequest(f"search is at most {MAX_SEARCH_LENGTH} characters (an address).")
    found = user_service.list_users(db.session, search=search, after=after, limit=limit)
    following = {"kind": "users", "after": found[-1].email} if len(found) == limit else None
    return page("users", [_summary_json(user) for user in found], following)


@bp.post("/users")
@admin_endpoint(WRITE)
def create_user(caller: AdminCaller) -> Response:
    """A new account. Without ``password`` it gets one nobody knows: send a reset link
    (``send_reset_link``) and its owner chooses one."""
    body = Body()
    email = body.string("email", required=True)
    password = body.string("password")
    body.finish()
    assert email is not None
    rt = runtime()
    user = accounts.create_account(
        db.session, rt.hasher, email, password, password_policy=rt.password_policy
    )
    response = with_etag(user_json(user), status=201)
    response.headers["Location"] = url_for(".get_user", user_id=user.id, _external=True)
    return response


@bp.get("/users/<uuid:user_id>")
@admin_endpoint(READ)
def get_user(caller: AdminCaller, user_id: uuid.UUID) -> Response:
    response = with_etag(user_json(accounts.get_user(db.session, user_id)))
    response.make_conditional(request)  # 304 for an If-None-Match that still holds
    return response


@bp.patch("/users/<uuid:user_id>")
@admin_endpoint(WRITE)
def update_user(caller: AdminCaller, user_id: uuid.UUID) -> Response:
    """Change ``email`` (the new address starts out unverified, unless ``email_verified``
    is true too) or set ``email_verified`` to true. Needs ``If-Match``."""
    body = Body()
    changes = accounts.AccountChanges(
        email=body.string("email"), email_verified=body.boolean("email_verified")
    )
    body.finish()
    user = accounts.lock_user(db.session, user_id)
    require_if_match(user_json(user))
    accounts.update_account(db.session, user, changes, request_context())
    return with_etag(user_json(user))


@bp.post("/users/<uuid:user_id>/disable")
@admin_endpoint(WRITE)
def disable_user(caller: AdminCaller, user_id: uuid.UUID) -> Response:
    """Disable the account: its browser sessions end and its refresh tokens are revoked."""
    user = accounts.get_user(db.session, user_id)
    if user.disabled:
        raise Conflict("The user is disabled already.")
    user_service.disable_user(db.session, user.email, runtime().now())
    return with_etag(user_json(user))


@bp.post("/users/<uuid:user_id>/enable")
@admin_endpoint(WRITE)
def enable_user(caller: AdminCaller, user_id: uuid.UUID) -> Response:
    user = accounts.get_user(db.session, user_id)
    if not user.disabled:
        raise Conflict("The user is not disabled.")
    user_service.enable_user(db.session, user.email, runtime().now())
    return with_etag(user_json(user))


@bp.delete("/users/<uuid:user_id>")
@admin_endpoint(WRITE)
def delete_user(caller: AdminCaller, user_id: uuid.UUID) -> Response:
    """Delete the account, as ``users delete`` does: everything it holds is revoked first
    and the address is mailed a notice; its audit events stay."""
    user = accounts.get_user(db.session, user_id)
    user_service.delete_user(db.session, user.email, runtime().now(), runtime().notices)
    return Response(status=204)


@bp.put("/users/<uuid:user_id>/password")
@admin_endpoint(WRITE)
def set_password(caller: AdminCaller, user_id: uuid.UUID) -> Response:
    """Set the password (the policy applies) and sign the user out everywhere; the user is
    mailed a notice."""
    body = Body()
    password = body.string("password", required=True)
    body.finish()
    assert password is not None
    rt = runtime()
    user = accounts.get_user(db.session, user_id)
    sessions, families = user_service.set_password(
        db.session,
        rt.hasher,
        user,
        password,
        now=rt.now(),
        password_policy=rt.password_policy,
        notices=rt.notices,
    )
    return jsonify(revoked_sessions=sessions, revoked_families=families)


@bp.post("/users/<uuid:user_id>/reset-link")
@admin_endpoint(WRITE)
def mail_reset_link(caller: AdminCaller, user_id: uuid.UUID) -> Response:
    """Mail the user the link "Forgot password?" sends; it works once."""
    rt = runtime()
    user = accounts.get_user(db.session, user_id)
    settings = reset_settings(rt.config)
    send_reset_link(db.session, rt.composer, settings, user.email, rt.now())
    response = jsonify(sent_to=user.email, expires_in=int(settings.ttl.total_seconds()))
    response.status_code = 202
    return response


@bp.delete("/users/<uuid:user_id>/second-factors")
@admin_endpoint(WRITE)
def reset_factors(caller: AdminCaller, user_id: uuid.UUID) -> Response:
    """Remove the authenticator app, recovery codes and passkeys of a user who lost them;
    the user is told by mail. 409 when there is nothing to remove."""
    user = accounts.get_user(db.session, user_id)
    if not reset_second_factors(db.session, runtime().notices, user, runtime().now()):
        raise Conflict("The user has no second factor.")
    return Response(status=204)


@bp.get("/users/<uuid:user_id>/sessions")
@admin_endpoint(READ)
def list_sessions(caller: AdminCaller, user_id: uuid.UUID) -> Response:
    """Where the user is signed in: live browser sessions ("browser") and apps' refresh
    families ("app"), most recently used first."""
    user = accounts.get_user(db.session, user_id)
    devices = list_devices(db.session, user.id, runtime().now())
    return jsonify(sessions=[_device_json(device) for device in devices])


@bp.delete("/users/<uuid:user_id>/sessions/<uuid:session_id>")
@admin_endpoint(WRITE)
def revoke_session(caller: AdminCaller, user_id: uuid.UUID, session_id: uuid.UUID) -> Response:
    """End one browser session or revoke one refresh family of this user."""
    user = accounts.get_user(db.session, user_id)
    if not revoke_device(db.session, user.id, session_id, runtime().now()):
        raise NotFound("The user has no such session.")
    audit(AuditEventType.LOGOUT, user_id=user.id, reason="signed_out_by_admin")
    return Response(status=204)


@bp.delete("/users/<uuid:user_id>/sessions")
@admin_endpoint(WRITE)
def revoke_all_sessions(caller: AdminCaller, user_id: uuid.UUID) -> Response:
    """Sign the user out everywhere: every browser session, every refresh family, and the
    access tokens issued before now (through the revocation feed)."""
    user = accounts.get_user(db.session, user_id)
    sessions, families = end_user_sessions(
        db.session, user.id, RevocationReason.LOGOUT_EVERYWHERE, runtime().now()
    )
    audit(
        AuditEventType.LOGOUT_EVERYWHERE,
        user_id=user.id,
        reason="signed_out_by_admin",
        sessions_ended=sessions,
        families_revoked=families,
    )
    return jsonify(revoked_sessions=sessions, revoked_families=families)
