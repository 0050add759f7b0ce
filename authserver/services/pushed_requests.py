"""Pushed authorization requests (RFC 9126): a client sends the parameters of its
authorization request to ``/oauth/par`` over an authenticated back channel and gets a
``request_uri`` to send the browser with instead (§2, §4). The parameters never travel
through the browser, where they could be read or changed, and the client is authenticated
before any user sees its request.

A request_uri is ``urn:ietf:params:oauth:request_uri:`` and 256 random bits, of which only
the SHA-256 is stored. It names one request of one client, works for ``AUTHSERVER_PAR_TTL``
seconds, and is used up when the authorization endpoint answers it (a code, or the user's
refusal): until then the browser may come back to it (sign-in, a second factor, the consent
page; §4 allows a reload), and after that never again (§4: one use).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from authserver.models import Client, PushedAuthorizationRequest

REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"
REQUEST_URI_BYTES = 32  # 256 bits
# Parameters the push may not carry (§2.1): a request_uri inside a request_uri, and the
# client's own credentials, which belong to the push and not to the request.
NOT_PUSHABLE = frozenset(
    {"request_uri", "client_secret", "client_assertion", "client_assertion_type"}
)


def _digest(request_uri: str) -> bytes:
    return hashlib.sha256(request_uri.encode()).digest()


@dataclass(frozen=True)
class PushedRequest:
    request_uri: str
    expires_in: int


def push_authorization_request(
    session: Session, client: Client, parameters: list[tuple[str, str]], now: datetime, ttl: int
) -> PushedRequest:
    """Keep ``parameters`` (already checked as an authorization request of ``client``) and
    return the request_uri that names them (§2.2)."""
    request_uri = REQUEST_URI_PREFIX + secrets.token_urlsafe(REQUEST_URI_BYTES)
    session.add(
        PushedAuthorizationRequest(
            request_uri_digest=_digest(request_uri),
            client_pk=client.id,
            parameters=[[name, value] for name, value in parameters],
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )
    )
    session.flush()
    return PushedRequest(request_uri=request_uri, expires_in=ttl)


def find_pushed_request(
    session: Session, request_uri: str, client: Client, now: datetime
) -> PushedAuthorizationRequest | None:
    """The live request ``request_uri`` names, if it is ``client``'s: not expired, not used.
    None for anything else, which the caller refuses in one way (``invalid_request_uri``)."""
    if not request_uri.startswith(REQUEST_URI_PREFIX) or len(request_uri) > 200:
        return None
    pushed = session.scalars(
        select(PushedAuthorizationRequest).where(
            PushedAuthorizationRequest.request_uri_digest == _digest(request_uri)
        )
    ).one_or_none()
    if (
        pushed is None
        or pushed.client_pk != client.id
        or pushed.used_at is not None
        or pushed.expires_at <= now
    ):
        return None
    return pushed


def use_pushed_request(session: Session, pushed: PushedAuthorizationRequest, now: datetime) -> bool:
    """Mark the request answered, in one conditional UPDATE: of two answers racing for one
    request_uri (two consent forms posted at once), one wins. False for the loser. The row
    is named by the digest it is looked up by as well as its id (README "Past one primary")."""
    used = session.execute(
        update(PushedAuthorizationRequest)
        .where(
            PushedAuthorizationRequest.request_uri_digest == pushed.request_uri_digest,
            PushedAuthorizationRequest.id == pushed.id,
            PushedAuthorizationRequest.used_at.is_(None),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(used.rowcount)  # type: ignore[attr-defined]
