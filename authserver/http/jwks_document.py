"""The JWKS, answered before Flask.

Every resource server fetches ``/.well-known/jwks.json``, so it is the busiest public
document, and its answer is bytes already in memory (the key ring's snapshot). Through Flask
it cost as much again as Flask itself: request and session objects, the CSRF and rate-limit
hooks, response header handling. This WSGI wrapper answers GET and HEAD of that one path
directly, with what the Flask view sent (the same headers, a 304 for a matching
If-None-Match, RFC 9110 §13.1.2), and still does what the hooks did that matters here: it
re-reads the keys when due and counts the request in the metrics. Anything it cannot answer
from memory (keys never loaded) goes to Flask, whose view and error handlers answer it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.http import parse_etags

from authserver.http.web import HSTS_VALUE
from authserver.metrics import LATENCY, REQUESTS
from authserver.oauth.metadata import JWKS_PATH
from authserver.runtime import Runtime
from authserver.services.keys import KeySnapshot

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# The Flask endpoint name, so the metrics read the same whichever way the answer went.
ENDPOINT = "wellknown.jwks"
STATUS_LINES = {200: "200 OK", 304: "304 Not Modified"}


class JwksResponder:
    def __init__(self, app: WSGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.max_age = runtime.config.jwks_max_age
        self.production = runtime.config.is_production

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        if environ.get("PATH_INFO") != JWKS_PATH or method not in ("GET", "HEAD"):
            return self.app(environ, start_response)
        started = time.perf_counter()
        keys = self.runtime.keys
        keys.refresh_if_due()
        if self.runtime.key_listener is not None:
            # Flask's before_request does not run here: a process that so far served only
            # the JWKS listens for key changes too.
            self.runtime.key_listener.ensure_started()
        snapshot = keys.loaded()
        if snapshot is None:
            return self.app(environ, start_response)
        status, headers, body = jwks_answer(
            snapshot, self.max_age, environ.get("HTTP_IF_NONE_MATCH")
        )
        headers.append(("X-Content-Type-Options", "nosniff"))
        if self.production:
            headers.append(("Strict-Transport-Security", HSTS_VALUE))
        start_response(STATUS_LINES[status], headers)
        LATENCY.labels(ENDPOINT).observe(time.perf_counter() - started)
        REQUESTS.labels(ENDPOINT, method, str(status)).inc()
        return [b"" if method == "HEAD" else body]


def jwks_answer(
    snapshot: KeySnapshot, max_age: int, if_none_match: str | None
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of the JWKS (RFC 7517 §5), for this wrapper and for the Flask
    view alike: 304 when If-None-Match names this representation (RFC 9110 §13.1.2)."""
    headers = [
        ("Cache-Control", f"public, max-age={max_age}"),
        ("ETag", f'"{snapshot.jwks_etag}"'),
        # A public document: any origin's script may read it (http/cors.py), the same for
        # every request, so no Vary.
        ("Access-Control-Allow-Origin", "*"),
    ]
    if if_none_match and parse_etags(if_none_match).contains(snapshot.jwks_etag):
        return 304, headers, b""
    headers.append(("Content-Type", "application/jwk-set+json"))
    headers.append(("Content-Length", str(len(snapshot.jwks_body))))
    return 200, headers, snapshot.jwks_body
