"""Client authentication at the token endpoint (RFC 6749 §2.3.1).

These replace authlib's built-in methods so that an unknown client and a wrong secret fail
the same way (one 401 ``invalid_client``, one digest comparison), and a disabled client
cannot authenticate at all.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from authlib.oauth2.rfc6749.util import extract_basic_authorization
from flask import request

from authserver.db import db
from authserver.errors import TooManyAttempts
from authserver.models import Client
from authserver.models.clients import digest_client_secret
from authserver.runtime import runtime
from authserver.services.sign_in_throttle import record_failure, seconds_to_wait

QueryClient = Callable[[str], Client | None]
_UNKNOWN_CLIENT_DIGEST = digest_client_secret("authserver-unknown-client")


def _verify_secret(client: Client | None, secret: str) -> Client | None:
    if client is None:
        hmac.compare_digest(_UNKNOWN_CLIENT_DIGEST, digest_client_secret(secret))
        return None
    # Secret guesses are throttled like passwords (services/sign_in_throttle.py).
    rt = runtime()
    account = "client:" + client.client_id
    ip = request.remote_addr or "-"
    wait = seconds_to_wait(db.session, account, ip, rt.now(), rt.throttle_policy)
    if wait:
        raise TooManyAttempts(wait)
    if client.check_client_secret(secret):
        return client
    record_failure(db.session, account, ip, rt.now(), rt.throttle_policy)
    return None


def authenticate_client_secret_basic(query_client: QueryClient, request: Any) -> Client | None:
    try:
        client_id, secret = extract_basic_authorization(request.headers)
    except ValueError:  # credentials that are not UTF-8 text
        return None
    if not client_id or not secret:
        return None
    return _verify_secret(query_client(client_id), secret)


def authenticate_client_secret_post(query_client: QueryClient, request: Any) -> Client | None:
    client_id = request.form.get("client_id")
    secret = request.form.get("client_secret")
    if not client_id or not secret:
        return None
    return _verify_secret(query_client(client_id), secret)


def authenticate_none(query_client: QueryClient, request: Any) -> Client | None:
    """A public client identifies itself by client_id alone (RFC 6749 §2.1)."""
    client_id = request.form.get("client_id")
    if not client_id or request.form.get("client_secret") or _has_basic_auth(request):
        return None
    client = query_client(client_id)
    return client if client is not None and client.is_public else None


def _has_basic_auth(request: Any) -> bool:
    header = request.headers.get("Authorization", "")
    return bool(header) and header.split(" ", 1)[0].lower() == "basic"


CLIENT_AUTH_METHODS = {
    "client_secret_basic": authenticate_client_secret_basic,
    "client_secret_post": authenticate_client_secret_post,
    "none": authenticate_none,
}
