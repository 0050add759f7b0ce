"""OAuth endpoints: parse nothing ourselves, hand the request to authlib."""

from __future__ import annotations

from collections.abc import Mapping

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from flask import Blueprint, Response, jsonify, request

from authserver.db import db
from authserver.errors import (
    NO_STORE_HEADERS,
    NotAResourceServer,
    NotASecurityEventReceiver,
    TemporarilyUnavailable,
)
from authserver.http.authorize import InvalidMaxAge, parse_max_age
from authserver.http.dpop import NONCE_HEADER, current_nonce
from authserver.http.rate_limits import per_account_password_grant, per_client, per_ip
from authserver.oauth import device_code
from authserver.oauth.metadata import (
    DEVICE_AUTHORIZATION_PATH,
    INTROSPECTION_PATH,
    PUSHED_AUTHORIZATION_PATH,
    REVOCATION_PATH,
    REVOCATIONS_FEED_PATH,
    SECURITY_EVENTS_POLL_PATH,
    TOKEN_PATH,
)
from authserver.oauth.pushed_authorization import RequestRefused, push
from authserver.oauth.server import authorization_server, check_form_shape
from authserver.runtime import runtime
from authserver.services import security_events
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


@bp.post(DEVICE_AUTHORIZATION_PATH)
@per_ip["token"]
@per_client["token"]
def device_authorization() -> Response:
    """RFC 8628 §3.1: a device code, and the user code to show."""
    check_form_shape()
    response = jsonify(device_code.start(authorization_server()))
    response.headers.update(NO_STORE_HEADERS)
    return response


@bp.post(PUSHED_AUTHORIZATION_PATH)
@per_ip["token"]
@per_client["token"]
def pushed_authorization_request() -> Response:
    """RFC 9126 §2: 201 with the request_uri to send the browser with, or the error the
    authorization endpoint would have given, in JSON."""
    check_form_shape()
    server = authorization_server()
    try:
        pushed = push(server, _check_max_age)
    except RequestRefused as refused:
        refusal: Response = server.handle_error_response(None, refused.error)
        return refusal
    response = jsonify(request_uri=pushed.request_uri, expires_in=pushed.expires_in)
    response.status_code = 201
    response.headers.update(NO_STORE_HEADERS)
    nonce = current_nonce()
    if nonce is not None:
        # RFC 9449 §8.2: the nonce for the client's next proof, here or at the token endpoint.
        response.headers[NONCE_HEADER] = nonce
    return response


def _check_max_age(parameters: Mapping[str, str]) -> None:
    try:
        parse_max_age(parameters)
    except InvalidMaxAge:
        raise InvalidRequestError("max_age must be a whole number of seconds.") from None


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
    seconds: everything live, or with ``since`` what that poll may not have had; 304 when that
    is nothing and ``If-None-Match`` names ``since``'s ETag."""
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
    if page.follows_since and not page.entries and request.if_none_match.contains_weak(str(since)):
        # The cursor moves whenever any transaction ends, so comparing it would never match.
        # Nothing is new for ``since``: the poller keeps the answer it has, ``since`` its
        # cursor, which stays sound (a lower cursor only reads again). RFC 9110 §13.1.2 (weak
        # comparison), §15.4.5 (the 304 names the representation the client holds).
        # JSON's mimetype, as the 200 has: the page hooks give text/html answers page headers.
        response = Response(status=304, mimetype="application/json")
        response.set_etag(str(since))
    else:
        response = jsonify(cursor=page.cursor, entries=page.entries)
        response.set_etag(str(page.cursor))
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.post(SECURITY_EVENTS_POLL_PATH)
def poll_security_events() -> Response:
    """RFC 8936 §2.4: acknowledge SETs and receive the next ones. Answered at once whatever
    ``returnImmediately`` says (§2.4.1 lets the transmitter choose)."""
    client = authorization_server().authenticate_feed_client()
    if client.security_event_delivery != security_events.POLL or not client.served_audiences:
        raise NotASecurityEventReceiver()
    rt = runtime()
    now = rt.now()
    answer = security_events.poll(
        db.session,
        client.id,
        security_events.parse_poll_request(
            request.get_json(silent=True) if request.is_json else None
        ),
        now,
    )
    signing = rt.keys.snapshot().signing
    if signing is None and answer.events:
        raise TemporarilyUnavailable()
    sets = {
        event.jti: security_events.sign_security_event(
            signing, rt.config.issuer, client.client_id, event.jti, event.claims, now
        )
        for event in answer.events
        if signing is not None
    }
    body: dict[str, object] = {"sets": sets}
    if answer.more_available:
        body["moreAvailable"] = True
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response
