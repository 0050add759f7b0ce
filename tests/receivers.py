"""Real HTTP receivers on 127.0.0.1 for the outbox's deliveries: they record what they are
sent and answer what the test tells them, and can be down (a port that refuses) and then up
on that same port."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import jwt
from flask import Flask, Response, request

from authserver.services.backchannel_logout import LOGOUT_EVENT
from tests.conftest import listening_socket, serving, url_of


@dataclass(frozen=True)
class Received:
    path: str
    content_type: str
    form: dict[str, str]

    @property
    def logout_token(self) -> str:
        return self.form["logout_token"]


class Receiver:
    """Records every POST; answers ``status`` (200 unless told otherwise). ``hold``, when
    set, keeps each request waiting until the test releases it."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status = 200
        self.location: str | None = None
        self._lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.app = Flask(__name__)
        self.app.add_url_rule("/<path:path>", "receive", self._receive, methods=["POST", "GET"])

    def _receive(self, path: str) -> Response:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.received.append(
                Received("/" + path, request.content_type or "", request.form.to_dict())
            )
            status, location = self.status, self.location
        try:
            headers = {"Location": location} if location else {}
            return Response(status=status, headers=headers)
        finally:
            with self._lock:
                self.in_flight -= 1

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def count(self) -> int:
        with self._lock:
            return len(self.received)


@contextmanager
def receiving(listener: socket.socket | None = None) -> Iterator[tuple[Receiver, str]]:
    """A receiver served on ``listener`` (a fresh one by default): (receiver, base URL)."""
    sock = listener if listener is not None else listening_socket()
    base = url_of(sock)
    receiver = Receiver()
    with serving(receiver.app, sock):
        yield receiver, base


def refusing_socket() -> socket.socket:
    """A socket bound to a port of 127.0.0.1 and not listening: connections to it are
    refused, and nothing else can take the port. ``listen()`` on it later and hand it to
    ``receiving`` to bring a receiver up on that port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def verified_logout_token(
    token: str, jwks: dict[str, Any], *, issuer: str, client_id: str
) -> dict[str, Any]:
    """The claims of a logout token checked the way Back-Channel Logout §2.6 says a relying
    party checks them, with PyJWT (not the library that signed it); fails the test
    otherwise."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "logout+jwt"
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=[key.algorithm_name],
        audience=client_id,
        issuer=issuer,
        options={"require": ["iss", "aud", "iat", "exp", "jti", "events"]},
    )
    assert claims["events"] == {LOGOUT_EVENT: {}}
    assert "nonce" not in claims
    assert claims["exp"] - claims["iat"] == 120
    return claims
