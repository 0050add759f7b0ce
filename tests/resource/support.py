"""A tiny issuer on a real socket, keys, and token builders for the resource-kit tests.

``FakeIssuer`` is a real HTTP server on 127.0.0.1 (http.server in a thread) that serves what
the kit reads from authserver: the metadata, the JWKS (with Cache-Control and ETag), the
revocation feed (the contract in ``authserver/resource/revocation_feed.py``) and an
introspection endpoint. It records every request, so tests can count fetches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jws, jwt
from joserfc.jwk import ECKey, RSAKey

from tests.helpers import HANG_SECONDS

AUDIENCE = "https://api.example.test"
FEED_CLIENT_ID = "resource-server"
FEED_CLIENT_SECRET = "resource-server-secret"
START_TIME = 1_750_000_000.0


class FakeClock:
    """Unix time that moves only when told."""

    def __init__(self, now: float = START_TIME) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class IssuerKey:
    private: ECKey | RSAKey
    kid: str
    alg: str

    def public_jwk(self, **overrides: Any) -> dict[str, Any]:
        jwk = dict(self.private.as_dict(private=False))
        jwk.update(kid=self.kid, alg=self.alg, use="sig")
        jwk.update(overrides)
        return {name: value for name, value in jwk.items() if value is not None}


def ec_key() -> IssuerKey:
    key = ECKey.generate_key("P-256", private=True)
    return IssuerKey(private=key, kid=key.thumbprint(), alg="ES256")


def rsa_key() -> IssuerKey:
    key = RSAKey.generate_key(2048, private=True)
    return IssuerKey(private=key, kid=key.thumbprint(), alg="RS256")


def claims_for(issuer: str, now: float, **overrides: Any) -> dict[str, Any]:
    """RFC 9068 §2.2 claims as authserver issues them; an override of None removes a claim."""
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": "user-1",
        "aud": AUDIENCE,
        "exp": int(now) + 300,
        "iat": int(now),
        "jti": secrets.token_urlsafe(12),
        "client_id": "client-1",
        "scope": "read write",
        "sid": "family-1",
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def mint(
    key: IssuerKey,
    issuer: str,
    now: float,
    *,
    header: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A token signed by ``key`` with its own algorithm; ``header`` adds or replaces members
    (``kid``, ``typ``, ``jku``...) but the signature is always made with ``key.alg``."""
    protected: dict[str, Any] = {"typ": "at+jwt", "alg": key.alg, "kid": key.kid}
    protected.update(header or {})
    protected["alg"] = key.alg
    return jwt.encode(protected, claims_for(issuer, now, **claims), key.private, [key.alg])


def sign_raw_payload(key: IssuerKey, payload: bytes) -> str:
    header = {"typ": "at+jwt", "alg": key.alg, "kid": key.kid}
    return jws.serialize_compact(header, payload, key.private, [key.alg])


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A token put together by hand, signed by nobody unless ``signature`` says otherwise."""
    return f"{b64url_json(header)}.{b64url_json(claims)}.{b64url(signature)}"


def hs256_with_public_pem(key: IssuerKey, issuer: str, now: float) -> str:
    """The classic confusion attack: HMAC with the issuer's public key PEM as the secret."""
    header = {"typ": "at+jwt", "alg": "HS256", "kid": key.kid}
    signing_input = f"{b64url_json(header)}.{b64url_json(claims_for(issuer, now))}"
    pem = key.private.as_pem(private=False)
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass
class FakeIssuer:
    """An issuer's public surface, served for real on 127.0.0.1."""

    clock: FakeClock
    jwks: list[dict[str, Any]] = field(default_factory=list)
    jwks_cache_control: str | None = "public, max-age=300"
    jwks_status: int = 200
    metadata_issuer: str | None = None  # None: the server's own URL, as it should be
    introspection_enabled: bool = False
    active_tokens: set[str] = field(default_factory=set)
    # Members an active token's introspection answer carries besides active and sub (cnf).
    introspection_members: dict[str, dict[str, Any]] = field(default_factory=dict)
    revocations: list[dict[str, Any]] = field(default_factory=list)  # cursor = len()
    feed_status: int = 200
    # Seconds the feed server's clock is ahead of the verifier's (negative: behind).
    feed_clock_skew: float = 0.0
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._request_seen = threading.Condition(self._lock)
        handler = type("Handler", (_IssuerHandler,), {"issuer": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        self._stopped = False

    def stop(self) -> None:
        """Shut the server down; later connections are refused."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def publish(self, *keys: IssuerKey) -> None:
        self.jwks.extend(key.public_jwk() for key in keys)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def wait_for_requests(self, path: str, count: int, timeout: float = HANG_SECONDS) -> None:
        """Block until ``path`` has been requested ``count`` times in all."""
        with self._request_seen:
            ok = self._request_seen.wait_for(
                lambda: sum(r.path == path for r in self.requests) >= count, timeout
            )
        assert ok, f"{path} was requested fewer than {count} times in {timeout}s"

    def revoke(self, **entry: Any) -> None:
        with self._lock:
            self.revocations.append(entry)

    def record(self, request: RecordedRequest) -> None:
        with self._request_seen:
            self.requests.append(request)
            self._request_seen.notify_all()

    # -- what the endpoints answer: (status, headers, JSON body or None) ---------------------

    def metadata(self) -> tuple[int, dict[str, str], Any]:
        document: dict[str, Any] = {
            "issuer": self.metadata_issuer or self.url,
            "jwks_uri": self.url + "/.well-known/jwks.json",
            "token_endpoint": self.url + "/oauth/token",
        }
        if self.introspection_enabled:
            document["introspection_endpoint"] = self.url + "/oauth/introspect"
        return 200, {}, document

    def jwks_document(self, if_none_match: str | None) -> tuple[int, dict[str, str], Any]:
        if self.jwks_status != 200:
            return self.jwks_status, {}, {"error": "unavailable"}
        document = {"keys": list(self.jwks)}
        etag = '"' + hashlib.sha256(json.dumps(document).encode()).hexdigest()[:16] + '"'
        headers = {"ETag": etag}
        if self.jwks_cache_control is not None:
            headers["Cache-Control"] = self.jwks_cache_control
        if if_none_match == etag:
            return 304, headers, None
        return 200, headers, document

    def revocation_page(self, request: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        if request.headers.get("authorization") != _basic(FEED_CLIENT_ID, FEED_CLIENT_SECRET):
            return 401, {"WWW-Authenticate": 'Basic realm="feed"'}, {"error": "invalid_client"}
        if self.feed_status != 200:
            return self.feed_status, {}, {"error": "unavailable"}
        with self._lock:
            entries = list(self.revocations)
        cursor = len(entries)
        headers = {"ETag": f'"{cursor}"'}
        if request.headers.get("if-none-match") == f'"{cursor}"':
            return 304, headers, None
        since = request.query.get("since")
        if since is None:
            now = self.clock() + self.feed_clock_skew
            live = [e for e in entries if e["expires_at"] > now]
        else:
            live = entries[int(since) :]
        return 200, headers, {"cursor": cursor, "entries": live}

    def introspection(self, request: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        if request.headers.get("authorization") != _basic(FEED_CLIENT_ID, FEED_CLIENT_SECRET):
            return 401, {}, {"error": "invalid_client"}
        form = dict(urllib.parse.parse_qsl(request.body.decode()))
        token = form.get("token", "")
        if token in self.active_tokens:
            return (
                200,
                {},
                {"active": True, "sub": "user-1", **self.introspection_members.get(token, {})},
            )
        return 200, {}, {"active": False}


def _basic(client_id: str, client_secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()


class _IssuerHandler(BaseHTTPRequestHandler):
    issuer: FakeIssuer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read ``issuer.requests`` instead."""

    def _recorded(self) -> RecordedRequest:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        recorded = RecordedRequest(
            method=self.command,
            path=url.path,
            query=dict(urllib.parse.parse_qsl(url.query)),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=self.rfile.read(length) if length else b"",
        )
        self.issuer.record(recorded)
        return recorded

    def _answer(self, status: int, headers: dict[str, str], document: Any) -> None:
        body = b"" if document is None else json.dumps(document).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if document is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        request = self._recorded()
        if request.path == "/.well-known/oauth-authorization-server":
            self._answer(*self.issuer.metadata())
        elif request.path == "/.well-known/jwks.json":
            self._answer(*self.issuer.jwks_document(request.headers.get("if-none-match")))
        elif request.path == "/oauth/revocations":
            self._answer(*self.issuer.revocation_page(request))
        else:
            self._answer(404, {}, {"error": "not_found"})

    def do_POST(self) -> None:
        request = self._recorded()
        if request.path == "/oauth/introspect" and self.issuer.introspection_enabled:
            self._answer(*self.issuer.introspection(request))
        else:
            self._answer(404, {}, {"error": "not_found"})
