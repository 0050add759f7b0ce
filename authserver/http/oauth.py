"""OAuth endpoints: parse nothing ourselves, hand the request to authlib."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from authserver.db import db
from authserver.errors import NotAResourceServer
from authserver.http.rate_limits import per_account_password_grant, per_client, per_ip
from authserver.oauth.metadata import (
    INTROSPECTION_PATH,
    REVOCATION_PATH,
    REVOCATIONS_FEED_PATH,
    TOKEN_PATH,
)
from authserver.oauth.server import authorization_server, check_form_shape
from authserver.runtime import runtime
from authserver.services.revocations import (
    longest_access_token_ttl,
    parse_feed_cursor,
    read_feed,
)

bp = Blueprint("oauth", __name__)


@bp.post(TOKEN_PATH)
@per_ip["token"]
@per_client["token"]
@per_account_password_grant
def token() -> Response:
    """RFC 6749 §3.2, the token endpoint."""
    return authorization_server().create_token_response()


@bp.post(REVOCATION_PATH)
@per_ip["revocation"]
@per_client["revocation"]
def revoke() -> Response:
    """RFC 7009 §2."""
    check_form_shape()
    response: Response = authorization_server().create_endpoint_response("revocation")
    return response


@bp.post(INTROSPECTION_PATH)
@per_ip["introspection"]
@per_client["introspection"]
def introspect() -> Response:
    """RFC 7662 §2."""
    check_form_shape()
    response: Response = authorization_server().create_endpoint_response("introspection")
    return response


@bp.get(REVOCATIONS_FEED_PATH)
def revocations_feed() -> Response:
    """What resource servers verifying JWTs offline must reject, for polling every few
    seconds: everything live, or with ``since`` only what is newer; 304 when nothing is."""
    client = authorization_server().authenticate_feed_client()
    if not client.served_audiences:
        raise NotAResourceServer()
    since_text = request.args.get("since")
    since = parse_feed_cursor(since_text) if since_text is not None else None
    rt = runtime()
    page = read_feed(
        db.session,
        since,
        rt.now(),
        longest_access_token_ttl(db.session, rt.config.access_token_ttl),
    )
    response = jsonify(cursor=page.cursor, entries=page.entries)
    response.headers["Cache-Control"] = "no-cache"
    response.set_etag(str(page.cursor))
    if since is not None:
        response.make_conditional(request)
    return response
