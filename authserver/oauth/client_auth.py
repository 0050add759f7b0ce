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
    rt = runtime()
    now = rt.now()
    if client.check_client_secret(secret, now):
        # The right secret is never throttled. Client secrets are 256-bit random values that
        # no rate of guessing can find, so refusing them protects nothing, while it would let
        # anyone who knows a client_id (a public value) lock a backend service out for an
        # hour with a hundred wrong guesses. And a success needs no database read.
        return client
    # A wrong secret: read the row again (the secret may have changed since it was cached),
    # then count the guess like a failed password (services/sign_in_throttle.py).
    fresh = rt.clients.reload(db.session, client.client_id, now)
    if fresh is None or fresh.disabled:
        return None
    if fresh.check_client_secret(secret, now):
        return fresh
    account = "client:" + client.client_id
    ip = request.remote_addr or "-"
    wait = seconds_to_wait(db.session, account, ip, now, rt.throttle_policy)
    if wait:
        raise TooManyAttempts(wait)
    record_failure(db.session, account, ip, now, rt.throttle_policy)
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
