"""``/admin/v1/clients``: register, list, read, update, disable, enable and delete clients,
and rotate a secret, under the rules of ``authserver clients ...`` (the same services).

One rule the CLI does not need: an admin client never gains, or hands out, more than it
holds. It may give a client only admin scopes it holds itself, and it may change, rotate,
disable or delete only clients whose admin scopes it holds all of (else a client with
``admin:clients:write`` could rotate the secret of a stronger admin client and use it). It
cannot disable or delete itself.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Response, jsonify, request, url_for

from authserver.db import db
from authserver.errors import BearerError, Conflict, InvalidRequest
from authserver.http.admin_api import bp
from authserver.http.admin_api.common import (
    Body,
    admin_endpoint,
    etag_of,
    iso,
    optional_body,
    require_if_match,
    with_etag,
)
from authserver.http.bearer import AdminCaller
from authserver.runtime import runtime
from authserver.services import clients as client_service
from authserver.services.revocations import longest_access_token_ttl

READ = "admin:clients:read"
WRITE = "admin:clients:write"


def _client_json(client_id: str) -> dict[str, Any]:
    overview = client_service.client_overview(db.session, client_id, runtime().now())
    return client_service.registration_fields(overview)


def _check_may_grant(caller: AdminCaller, admin_scopes: list[str] | None) -> None:
    beyond = sorted(set(admin_scopes or []) - caller.scopes)
    if beyond:
        raise BearerError(
            403,
            "insufficient_scope",
            f"Only admin scopes this client holds can be given; it lacks '{beyond[0]}'.",
            scope=beyond[0],
        )


def _check_may_manage(caller: AdminCaller, client_id: str) -> None:
    client = client_service.get_client(db.session, client_id)
    _check_may_grant(caller, list(client.admin_scopes))


def _check_not_itself(caller: AdminCaller, client_id: str) -> None:
    if client_id == caller.client_id:
        raise Conflict("An admin client cannot disable or delete itself.")


@bp.get("/clients")
@admin_endpoint(READ)
def list_clients(caller: AdminCaller) -> Response:
    """Every client, oldest first, with what it is registered for (never a secret)."""
    now = runtime().now()
    rows = [
        client_service.registration_fields(
            client_service.client_overview(db.session, client.client_id, now)
        )
        for client in client_service.list_clients(db.session)
    ]
    return jsonify(clients=rows)


@bp.post("/clients")
@admin_endpoint(WRITE)
def create_client(caller: AdminCaller) -> Response:
    """Register a client; the secret of a confidential one is in this answer only."""
    body = Body()
    kind = body.string("type") or "confidential"
    if kind not in ("confidential", "public"):
        raise InvalidRequest("The field 'type' must be confidential or public.")
    admin_scopes = body.strings("admin_scopes")
    fields: dict[str, Any] = {
        "name": body.string("name", required=True),
        "grant_types": body.strings("grant_types") or [],
        "public": kind == "public",
        "first_party": bool(body.boolean("first_party")),
        "redirect_uris": body.strings("redirect_uris"),
        "post_logout_redirect_uris": body.strings("post_logout_redirect_uris"),
        "scopes": body.strings("scopes"),
        "audiences": body.strings("audiences"),
        "served_audiences": body.strings("served_audiences"),
        "backchannel_logout_uri": body.string("backchannel_logout_uri"),
        "logo_uri": body.string("logo_uri"),
        "policy_uri": body.string("policy_uri"),
        "tos_uri": body.string("tos_uri"),
        "backchannel_logout_session_required": bool(
            body.boolean("backchannel_logout_session_required")
        ),
        "require_second_factor": bool(body.boolean("require_second_factor")),
        "require_pushed_authorization_requests": bool(
            body.boolean("require_pushed_authorization_requests")
        ),
        "dpop_bound_access_tokens": bool(body.boolean("dpop_bound_access_tokens")),
        "access_token_ttl": body.seconds("access_token_ttl"),
        "refresh_idle_ttl": body.seconds("refresh_idle_ttl"),
        "refresh_absolute_ttl": body.seconds("refresh_absolute_ttl"),
        "admin_scopes": admin_scopes,
    }
    body.finish()
    _check_may_grant(caller, admin_scopes)
    registered = client_service.create_client(db.session, **fields)
    client_id = registered.client.client_id
    representation = _client_json(client_id)
    # The secret goes in this body only; the ETag is of the registration as GET shows it.
    secret = {"client_secret": registered.client_secret} if registered.client_secret else {}
    response = jsonify({**representation, **secret})
    response.status_code = 201
    response.set_etag(etag_of(representation))
    response.headers["Location"] = url_for(".get_client", client_id=client_id, _external=True)
    return response


@bp.get("/clients/<client_id>")
@admin_endpoint(READ)
def get_client(caller: AdminCaller, client_id: str) -> Response:
    response = with_etag(_client_json(client_id))
    response.make_conditional(request)  # 304 for an If-None-Match that still holds
    return response


@bp.patch("/clients/<client_id>")
@admin_endpoint(WRITE)
def update_client(caller: AdminCaller, client_id: str) -> Response:
    """Replace any of redirect_uris, post_logout_redirect_uris, scopes, admin_scopes,
    audiences, the lifetimes (null: the server-wide setting), the consent page's logo_uri,
    policy_uri and tos_uri ("": none), require_second_factor,
    require_pushed_authorization_requests and dpop_bound_access_tokens, under the rules of
    ``clients create``. Needs ``If-Match``."""
    body = Body()
    unchanged = client_service.UNCHANGED
    changes: dict[str, Any] = {}
    for name in ("redirect_uris", "post_logout_redirect_uris", "scopes", "audiences"):
        value = body.strings(name)
        changes[name] = unchanged if value is None else value
    admin_scopes = body.strings("admin_scopes")
    changes["admin_scopes"] = unchanged if admin_scopes is None else admin_scopes
    for name in ("access_token_ttl", "refresh_idle_ttl", "refresh_absolute_ttl"):
        changes[name] = body.seconds(name) if body.has(name) else unchanged
    for name in ("logo_uri", "policy_uri", "tos_uri"):
        # "": the consent page no longer shows it.
        link = body.string(name)
        changes[name] = unchanged if link is None else link
    for name in (
        "require_second_factor",
        "require_pushed_authorization_requests",
        "dpop_bound_access_tokens",
    ):
        flag = body.boolean(name)
        changes[name] = unchanged if flag is None else flag
    body.finish()
    _check_may_manage(caller, client_id)
    _check_may_grant(caller, admin_scopes)
    client_service.lock_client(db.session, client_id)
    require_if_match(_client_json(client_id))
    client_service.update_client(db.session, client_id, runtime().now(), **changes)
    return with_etag(_client_json(client_id))


def _recall(client_id: str, end: Any) -> int:
    config = runtime().config
    families: int = end(
        db.session,
        client_id,
        runtime().now(),
        stale_for=timedelta(seconds=config.client_cache_seconds),
        token_ttl=longest_access_token_ttl(db.session, config.access_token_ttl),
    )
    return families


@bp.post("/clients/<client_id>/disable")
@admin_endpoint(WRITE)
def disable_client(caller: AdminCaller, client_id: str) -> Response:
    """Refuse the client from now on: its refresh tokens are revoked, its access tokens
    recalled; running servers refuse it within AUTHSERVER_CLIENT_CACHE_SECONDS."""
    _check_not_itself(caller, client_id)
    _check_may_manage(caller, client_id)
    if client_service.get_client(db.session, client_id).disabled:
        raise Conflict("The client is disabled already.")
    _recall(client_id, client_service.disable_client)
    return with_etag(_client_json(client_id))


@bp.post("/clients/<client_id>/enable")
@admin_endpoint(WRITE)
def enable_client(caller: AdminCaller, client_id: str) -> Response:
    _check_may_manage(caller, client_id)
    client_service.enable_client(db.session, client_id, runtime().now())
    return with_etag(_client_json(client_id))


@bp.delete("/clients/<client_id>")
@admin_endpoint(WRITE)
def delete_client(caller: AdminCaller, client_id: str) -> Response:
    """Delete the client, as ``clients delete`` does: what it holds is revoked first."""
    _check_not_itself(caller, client_id)
    _check_may_manage(caller, client_id)
    _recall(client_id, client_service.delete_client)
    return Response(status=204)


@bp.post("/clients/<client_id>/secret")
@admin_endpoint(WRITE)
def rotate_secret(caller: AdminCaller, client_id: str) -> Response:
    """A new secret, in this answer only. The old one keeps working for
    AUTHSERVER_CLIENT_SECRET_OVERLAP_SECONDS, or stops at once with ``immediately``."""
    body = optional_body()
    immediately = bool(body.boolean("immediately")) if body is not None else False
    if body is not None:
        body.finish()
    _check_may_manage(caller, client_id)
    config = runtime().config
    overlap = timedelta(seconds=0 if immediately else config.client_secret_overlap_seconds)
    rotated = client_service.rotate_client_secret(
        db.session, client_id, runtime().now(), overlap=overlap
    )
    return jsonify(
        client_id=client_id,
        client_secret=rotated.client_secret,
        previous_secret_valid_until=iso(rotated.previous_valid_until),
    )
