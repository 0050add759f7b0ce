"""Dynamic client registration over HTTP: ``POST /register`` (RFC 7591 §3) and the client
configuration endpoint ``/register/<client_id>`` (RFC 7592 §2: GET, PUT, DELETE).

JSON in, JSON out, authenticated by bearer tokens (RFC 6750 §2.1): an initial access token to
register, the client's registration access token to manage it. 404 unless
``AUTHSERVER_DYNAMIC_REGISTRATION`` is on. The rules are in services/client_registration.py.
"""

from __future__ import annotations

import json
from datetime import timedelta

from flask import Blueprint, Response, abort, jsonify, request

from authserver.db import db
from authserver.errors import NO_STORE_HEADERS, InvalidClientMetadata
from authserver.http.rate_limits import per_ip_registration
from authserver.http.web import csrf
from authserver.runtime import runtime
from authserver.services import client_registration as registration
from authserver.services.revocations import longest_access_token_ttl

bp = Blueprint("client_registration", __name__)
csrf.exempt(bp)  # bearer tokens are not sent by browsers on their own: no CSRF to fear


@bp.before_request
def hide_when_off() -> None:
    if not runtime().config.dynamic_registration:
        abort(404)


def _bearer_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _json_body() -> object:
    """The request body as JSON (RFC 7591 §3.1: application/json). The parser's refusals,
    nesting too deep for it included, are the client's mistake, not the server's."""
    if request.mimetype != "application/json":
        raise InvalidClientMetadata("The request body must be application/json.")
    try:
        return json.loads(request.get_data(cache=False))
    except (ValueError, RecursionError):
        raise InvalidClientMetadata("The request body is not valid JSON.") from None


def _answer(body: dict[str, object], status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    # It carries credentials (RFC 7591 §3.2.1 / RFC 7592 §3).
    response.headers.update(NO_STORE_HEADERS)
    return response


@bp.post(registration.REGISTRATION_PATH)
@per_ip_registration
def register() -> Response:
    rt = runtime()
    issuer = rt.config.issuer
    token = registration.authenticate_initial_access_token(db.session, _bearer_token(), rt.now())
    registered = registration.register_client(
        db.session, token, _json_body(), rt.now(), issuer=issuer
    )
    body = registration.client_information(
        registered.client, registered.registration_access_token, issuer=issuer
    )
    if registered.client_secret is not None:
        body["client_secret"] = registered.client_secret
    return _answer(body, 201)


@bp.get(f"{registration.REGISTRATION_PATH}/<client_id>")
@per_ip_registration
def read_registration(client_id: str) -> Response:
    token = _bearer_token()
    client = registration.authenticate_registration(db.session, client_id, token)
    assert token is not None  # authenticated
    return _answer(registration.client_information(client, token, issuer=runtime().config.issuer))


@bp.put(f"{registration.REGISTRATION_PATH}/<client_id>")
@per_ip_registration
def replace_registration(client_id: str) -> Response:
    rt = runtime()
    client = registration.authenticate_registration(db.session, client_id, _bearer_token())
    replaced = registration.replace_registration(
        db.session, client, _json_body(), rt.now(), issuer=rt.config.issuer
    )
    return _answer(
        registration.client_information(
            replaced.client, replaced.registration_access_token, issuer=rt.config.issuer
        )
    )


@bp.delete(f"{registration.REGISTRATION_PATH}/<client_id>")
@per_ip_registration
def delete_registration(client_id: str) -> Response:
    rt = runtime()
    client = registration.authenticate_registration(db.session, client_id, _bearer_token())
    registration.delete_registration(
        db.session,
        client,
        rt.now(),
        stale_for=timedelta(seconds=rt.config.client_cache_seconds),
        token_ttl=longest_access_token_ttl(db.session, rt.config.access_token_ttl),
    )
    return Response(status=204, headers=NO_STORE_HEADERS)
