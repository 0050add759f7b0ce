"""The one way this kit talks HTTP: a plain callable, so it can be swapped.

``HttpCall`` is ``http(method, url, headers, body) -> (status, headers, body_bytes)``. It
returns every HTTP answer, 4xx and 5xx included, and raises ``OSError`` when there is no answer
(refused, timed out, unreadable). The default uses urllib, so a resource server needs no HTTP
library; pass your own (for a proxy, mutual TLS, or connection pooling) with the same contract.
"""

from __future__ import annotations

import base64
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from email.message import Message
from typing import IO, Any

HttpResponse = tuple[int, Mapping[str, str], bytes]
HttpCall = Callable[[str, str, Mapping[str, str], bytes | None], HttpResponse]

DEFAULT_TIMEOUT_SECONDS = 5.0
# A JWKS, the metadata or a revocation page is a few KiB; more than this is not one of them.
MAX_RESPONSE_BYTES = 1024 * 1024


class TransportError(OSError):
    """No usable HTTP answer: a scheme we refuse, a broken response, an oversized body."""


class FetchFailed(Exception):
    """A document could not be fetched, or was not what its specification says it is."""


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Report a redirect as the 3xx it is. Following one would send client credentials to,
    or take signing keys from, an address nobody configured."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


def _lowercase_headers(headers: Message) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _read_limited(response: IO[bytes]) -> bytes:
    body = response.read(MAX_RESPONSE_BYTES + 1)
    if len(body) > MAX_RESPONSE_BYTES:
        raise TransportError("response body too large")
    return body


def make_urllib_http(timeout: float = DEFAULT_TIMEOUT_SECONDS) -> HttpCall:
    """An ``HttpCall`` on urllib: a short timeout, no redirects, http(s) only."""
    opener = urllib.request.build_opener(_RefuseRedirects)

    def urllib_http(
        method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> HttpResponse:
        if urllib.parse.urlsplit(url).scheme not in ("https", "http"):
            # A hostile metadata document must not make us open file: or ftp: URLs.
            raise TransportError("only http and https URLs are fetched")
        # S310: the scheme is checked just above.
        request = urllib.request.Request(url, body, dict(headers), method=method)  # noqa: S310
        try:
            with opener.open(request, timeout=timeout) as response:
                return (
                    response.status,
                    _lowercase_headers(response.headers),
                    _read_limited(response),
                )
        except urllib.error.HTTPError as answer:
            try:
                return answer.code, _lowercase_headers(answer.headers), _read_limited(answer)
            finally:
                answer.close()
        except http.client.HTTPException as exc:
            raise TransportError(f"broken HTTP response: {type(exc).__name__}") from exc

    return urllib_http


def call(
    http: HttpCall,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Make one request; a transport failure becomes ``FetchFailed``. Header names come back
    lower-cased whatever the ``http`` callable returned."""
    try:
        status, response_headers, response_body = http(method, url, headers, body)
    except OSError as exc:
        raise FetchFailed(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
    return status, {name.lower(): value for name, value in response_headers.items()}, response_body


def json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: nesting past the interpreter's limit. The issuer is trusted, but a
        # reply that is not a document must fail like one, not crash the verifying request.
        raise FetchFailed(f"{what} is not JSON") from exc
    if not isinstance(document, dict):
        raise FetchFailed(f"{what} is not a JSON object")
    return document


def basic_authorization(client_id: str, client_secret: str) -> str:
    """RFC 6749 §2.3.1: each part form-urlencoded before the RFC 7617 Basic encoding, so a
    colon in a client_id survives."""
    user = urllib.parse.quote_plus(client_id)
    password = urllib.parse.quote_plus(client_secret)
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
