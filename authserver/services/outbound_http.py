"""The one way the server itself sends HTTP requests to other systems (the outbox channels).

One POST, one answer's status. What a sender of security notices needs and what a general
client would not give by default:

- a deadline on the whole exchange, not only on each socket operation: a receiver that
  trickles its answer a byte at a time must not hold a sender past its lease on the message
  (``services/outbox.py``), or a second sender could take the message over while the first
  is still sending it;
- no redirects: a 3xx is reported as the 3xx it is; following it would send a logout token
  to an address nobody registered;
- nothing of the answer is kept but its status, so no receiver's body reaches a log.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from urllib.parse import urlsplit

# The whole exchange: connect, send, and read the answer's status line and headers.
DEFAULT_TIMEOUT_SECONDS = 5.0
USER_AGENT = "authserver"


class NoAnswer(OSError):
    """No HTTP answer: refused, unreachable, timed out, broken. The message says which, in a
    few words and without the request."""


def post(url: str, body: bytes, content_type: str, *, timeout: float) -> int:
    """POST ``body`` to ``url`` and return the answer's status code; ``NoAnswer`` when there is
    none within ``timeout`` seconds all told."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise NoAnswer("not an http(s) URL")
    try:
        port = parts.port
    except ValueError:
        raise NoAnswer("not a valid port") from None
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname, port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = _Deadline(connection, timeout)
    try:
        connection.connect()
        if deadline.passed:
            # The time ran out while connecting, before there was a socket to cut.
            raise TimeoutError
        connection.request(
            "POST",
            target,
            body=body,
            headers={"Content-Type": content_type, "User-Agent": USER_AGENT, "Accept": "*/*"},
        )
        response = connection.getresponse()
        return response.status
    except (OSError, http.client.HTTPException) as exc:
        # The deadline cut the socket, or a single read waited the whole time (the two
        # bounds are the same length and race): either way, no answer in time.
        if deadline.passed or isinstance(exc, TimeoutError):
            raise NoAnswer(f"no answer within {timeout:g} s") from None
        raise NoAnswer(_describe(exc)) from None
    finally:
        deadline.cancel()
        connection.close()


def _describe(exc: BaseException) -> str:
    """A few words for ``last_error`` and the log: the kind of failure, never the request."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "host name not resolved"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "TLS certificate not trusted"
    if isinstance(exc, ssl.SSLError):
        return "TLS handshake failed"
    if isinstance(exc, http.client.HTTPException):
        return f"broken HTTP answer ({type(exc).__name__})"
    return f"{type(exc).__name__}"


class _Deadline:
    """Shuts the connection's socket down when the time is up; a read blocked on it then
    returns at once (``close`` from another thread would not wake it on Linux)."""

    def __init__(self, connection: http.client.HTTPConnection, timeout: float) -> None:
        self._connection = connection
        self.passed = False
        self._timer = threading.Timer(timeout, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def _cut(self) -> None:
        self.passed = True
        sock = self._connection.sock
        if sock is not None:
            # Already closed: nothing left to cut.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()
