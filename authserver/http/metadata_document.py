"""The server metadata (RFC 8414 §3, OpenID Connect Discovery 1.0 §4), answered before Flask.

Every client and resource server reads ``/.well-known/openid-configuration`` or
``/.well-known/oauth-authorization-server``, and the answer depends on the configuration
alone, which a process never changes. So the first GET of each path goes through Flask (its
view, its hooks, its error handling), and when that answer is a plain 200 (no cookie, no
``Vary``: the same for every request) its status, headers and body are kept and every later
GET or HEAD of the path gets them from memory, counted in the metrics under the view's name.
Through Flask each answer cost about as much as Flask itself (docs/PERFORMANCE.md); anything
else (another method, an answer that varies) still goes to Flask. Like the JWKS, an answer
from memory is not counted against a signed-in browser's request budget (the limit meant for
pages). The view sets its CORS header itself, so the kept answer is right for any Origin.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from authserver.http.jwks_document import WSGIApp
from authserver.metrics import LATENCY, REQUESTS

# The Flask endpoint name, so the metrics read the same whichever way the answer went.
ENDPOINT = "wellknown.metadata"
METADATA_PATHS = frozenset(
    {"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"}
)


class KeptAnswer:
    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class MetadataResponder:
    def __init__(self, app: WSGIApp) -> None:
        self.app = app
        self._kept: dict[str, KeptAnswer] = {}
        self._lock = threading.Lock()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        method = environ.get("REQUEST_METHOD")
        if path not in METADATA_PATHS or method not in ("GET", "HEAD"):
            return self.app(environ, start_response)
        kept = self._kept.get(path)
        if kept is None:
            return self._through_flask(path, environ, start_response)
        started = time.perf_counter()
        start_response(kept.status, kept.headers)
        LATENCY.labels(ENDPOINT).observe(time.perf_counter() - started)
        REQUESTS.labels(ENDPOINT, method, kept.status[:3]).inc()
        return [b"" if method == "HEAD" else kept.body]

    def _through_flask(
        self, path: str, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """Flask answers; a GET's answer that is the same for everyone is kept for the path."""
        seen: list[tuple[str, list[tuple[str, str]]]] = []

        def remember(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            seen.append((status, list(headers)))
            return start_response(status, headers, *rest)

        body = b"".join(self.app(environ, remember))
        if environ.get("REQUEST_METHOD") == "GET" and seen:
            status, headers = seen[0]
            names = {name.lower() for name, _ in headers}
            if status.startswith("200 ") and not names & {"set-cookie", "vary"}:
                with self._lock:
                    self._kept.setdefault(path, KeptAnswer(status, headers, body))
        return [body]
