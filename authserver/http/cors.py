"""Cross-origin requests from browser apps (the Fetch standard's CORS protocol).

A single-page app is a public client whose code runs on its own origin. For it to redeem a
code, refresh, push a request, revoke and call userinfo from the browser, with DPoP proofs
(RFC 9449) whose ``htu`` names authserver's own URL, the browser must be allowed to read
authserver's answers. It is, for exactly the origins of the redirect URIs of public clients
that are not disabled: an app can only get a code to the page it was registered with, so
those pages are the only ones that need to read a token response.

* Those endpoints answer an allowed ``Origin`` with ``Access-Control-Allow-Origin`` naming it
  (never ``*``), and a preflight with the methods and the request headers they take
  (``Authorization``, ``DPoP``); ``DPoP-Nonce`` and ``WWW-Authenticate`` are exposed, so the
  app can follow a ``use_dpop_nonce`` answer. No credentials: these endpoints read no cookie,
  so a browser's cookies never reach them from another site.
* Discovery and the JWKS are public documents: any origin may read them.
* Everything else, introspection and the revocation feed (confidential resource servers
  only), the admin API, and every page, answers no cross-origin request at all.
"""

from __future__ import annotations

import threading
import time

from flask import Flask, Response, g, request
from sqlalchemy import select

from authserver.db import db
from authserver.models import Client
from authserver.oauth.metadata import (
    JWKS_PATH,
    PUSHED_AUTHORIZATION_PATH,
    REVOCATION_PATH,
    TOKEN_PATH,
    USERINFO_PATH,
)
from authserver.resource.dpop import web_origin
from authserver.runtime import runtime

# Endpoints a browser app of a registered origin may call, and with which methods.
APP_ENDPOINTS = {
    TOKEN_PATH: "POST",
    REVOCATION_PATH: "POST",
    PUSHED_AUTHORIZATION_PATH: "POST",
    USERINFO_PATH: "GET, POST",
}
# Public documents any origin may read.
PUBLIC_DOCUMENTS = frozenset(
    {
        JWKS_PATH,
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    }
)
ALLOWED_REQUEST_HEADERS = "Authorization, DPoP, Content-Type"
EXPOSED_HEADERS = "DPoP-Nonce, WWW-Authenticate, Retry-After"
# How long a browser may reuse a preflight's answer, seconds.
PREFLIGHT_MAX_AGE = 600


class AppOrigins:
    """The origins of public clients' redirect URIs, read from the database at most once per
    ``AUTHSERVER_CLIENT_CACHE_SECONDS`` per process: a client registered or disabled is
    seen as soon as its registration is (the same delay as every other client change)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._origins: frozenset[str] = frozenset()
        self._read_at: float | None = None

    def allows(self, origin: str) -> bool:
        max_age = runtime().config.client_cache_seconds
        now = time.monotonic()
        with self._lock:
            if self._read_at is None or now - self._read_at >= max_age:
                self._origins = _public_client_origins()
                self._read_at = now
            return origin in self._origins


def _public_client_origins() -> frozenset[str]:
    uris = db.session.scalars(
        select(Client.redirect_uris).where(Client.is_public.is_(True), Client.disabled.is_(False))
    ).all()
    return frozenset(
        origin for registered in uris for uri in registered if (origin := web_origin(uri))
    )


def init_cors(app: Flask) -> None:
    """Register the CORS hooks. Registered before the rate limits, so that a 429 (and any
    refusal after them) carries the headers that let the app read it."""
    origins = AppOrigins()

    def decide() -> Response | None:
        # Decided before the view, where a database error is answered as any other (503),
        # and remembered for the answer, whatever it turns out to be.
        if "Origin" not in request.headers:
            return None
        allowed = _allowed_origin(origins)
        g.cors_allowed_origin = allowed
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        if allowed is None:
            return None  # Flask's own OPTIONS answer, without CORS: the browser stops there
        response = Response(status=204)
        response.headers["Access-Control-Allow-Origin"] = allowed
        response.headers["Access-Control-Allow-Methods"] = APP_ENDPOINTS.get(request.path, "GET")
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_REQUEST_HEADERS
        response.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE)
        response.vary.add("Origin")
        return response

    def answer_headers(response: Response) -> Response:
        allowed = g.get("cors_allowed_origin")
        if allowed is not None and "Access-Control-Allow-Origin" not in response.headers:
            response.headers["Access-Control-Allow-Origin"] = allowed
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        if request.path in APP_ENDPOINTS:
            # The answer depends on the Origin: caches must keep them apart.
            response.vary.add("Origin")
        return response

    app.before_request(decide)
    app.after_request(answer_headers)


def _allowed_origin(origins: AppOrigins) -> str | None:
    """What ``Access-Control-Allow-Origin`` says for this request, or None for nothing."""
    if request.path in PUBLIC_DOCUMENTS:
        return "*"
    origin = request.headers.get("Origin", "")
    if request.path in APP_ENDPOINTS and origin != "null" and origins.allows(origin):
        return origin
    return None
