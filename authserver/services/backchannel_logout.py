"""OpenID Connect Back-Channel Logout 1.0: telling apps that a browser session they signed in
through has ended.

- *Remembering who signed in* (§2.3): ``record_signed_in_client`` when an authorization code
  is issued in a browser session (``services/authorization_codes.issue_code``), so a client
  that got only an ID token is remembered too.
- *Enqueueing* (``enqueue_logout_tokens``): every path that ends browser sessions goes through
  ``services/browser_sessions`` (``end_session``, ``end_user_sessions``), which calls this in
  the same transaction: one outbox message per client with a ``backchannel_logout_uri`` and
  per ``sid`` it was given. A session already ended is not ended again, so nobody is told
  twice.
- *Delivering* (``BackchannelLogoutChannel``, an outbox channel): the logout token (§2.4) is
  signed at each attempt, with a fresh ``iat`` and a two-minute ``exp``, and the message's
  own ``jti``, and POSTed as ``logout_token`` (§2.5).

Why sign at each attempt and keep one ``jti``: ``exp`` must be short (§2.4 suggests about two
minutes), and a receiver that is down for an hour must still get a token it accepts; so a
token signed once could not be retried for long. The ``jti`` names the logout, not the
attempt: a receiver that keeps the ``jti``s it has acted on (§2.6, optional) recognises a
retry whose first copy it did take (the answer was lost) and does not act twice, which is
what turns at-least-once delivery into a logout performed once. Signing late also means no
signed token is ever at rest, and it is signed with the key that is current then.

The token always carries both ``sid`` and ``sub``: a client that registered
``backchannel_logout_session_required`` gets the ``sid`` it needs, and one that keys its
sessions by user gets ``sub``. Never ``nonce`` (§2.4), and ``typ`` is ``logout+jwt``, so a
logout token is neither an ID token (``JWT``) nor an access token (``at+jwt``) to anyone who
checks the type (§4.1, RFC 8725 §3.11).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from joserfc import jwt
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from authserver.db import utcnow
from authserver.models import BrowserSession, BrowserSessionClient, Client
from authserver.services import outbound_http
from authserver.services.keys import KeyRing
from authserver.services.outbox import (
    Attempt,
    AuditSubject,
    Outcome,
    attempt_of_http_status,
    enqueue,
)

log = logging.getLogger(__name__)

CHANNEL = "backchannel_logout"
# §2.4: the member of ``events`` that makes a JWT a logout token.
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# §2.4: explicit typing, so that no other kind of JWT is taken for one, and the reverse.
LOGOUT_TOKEN_TYPE = "logout+jwt"  # noqa: S105 (a media type, not a secret)
# §2.4 recommends a short expiry, about two minutes; the token is signed at each attempt.
LOGOUT_TOKEN_TTL_SECONDS = 120
# §2.5: the request's form.
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

PostForm = Callable[..., int]


def record_signed_in_client(
    db: Session, browser_session: BrowserSession, client: Client, now: datetime
) -> None:
    """Remember that ``client`` signed in through ``browser_session`` (§2.3); once per client
    and sid (the session's own id, which its ID tokens carry)."""
    values = {
        "browser_session_id": browser_session.id,
        "client_pk": client.id,
        "sid": browser_session.id,
        "created_at": now,
    }
    # Two authorization requests of one browser at once must not fail on the second insert.
    dialect = postgresql if db.get_bind().dialect.name == "postgresql" else sqlite
    db.execute(dialect.insert(BrowserSessionClient).values(values).on_conflict_do_nothing())


def move_signed_in_clients(db: Session, source: BrowserSession, target: BrowserSession) -> None:
    """The clients remembered for ``source`` now belong to ``target`` (the same user signed in
    again, ``prompt=login``), each keeping the sid it was given: ending ``target`` tells them,
    in the words they know."""
    assert source.user_id == target.user_id
    db.execute(
        update(BrowserSessionClient)
        .where(BrowserSessionClient.browser_session_id == source.id)
        .values(browser_session_id=target.id)
        .execution_options(synchronize_session=False)
    )


def enqueue_logout_tokens(db: Session, session_ids: Sequence[uuid.UUID], now: datetime) -> int:
    """In the caller's transaction: one logout for every client with a back-channel logout URI
    that signed in through one of these (just ended) sessions. Returns how many."""
    if not session_ids:
        return 0
    rows = db.execute(
        select(
            BrowserSessionClient.sid,
            BrowserSession.user_id,
            Client.client_id,
            Client.backchannel_logout_uri,
        )
        .join(BrowserSession, BrowserSession.id == BrowserSessionClient.browser_session_id)
        .join(Client, Client.id == BrowserSessionClient.client_pk)
        .where(
            BrowserSessionClient.browser_session_id.in_(session_ids),
            Client.backchannel_logout_uri.is_not(None),
        )
        .order_by(BrowserSessionClient.created_at)
    ).all()
    for row in rows:
        payload = {
            "aud": row.client_id,
            "sub": str(row.user_id),
            "sid": str(row.sid),
            # One per logout, kept across attempts (see the module docstring).
            "jti": secrets.token_urlsafe(16),
        }
        enqueue(db, CHANNEL, row.backchannel_logout_uri, payload, now)
    return len(rows)


class NoSigningKey(Exception):
    """The key ring has no current key to sign with (yet)."""


def sign_logout_token(
    keys: KeyRing, *, issuer: str, payload: Mapping[str, Any], now: datetime
) -> str:
    """The logout token of §2.4 for a stored payload (``aud``, ``sub``, ``sid``, ``jti``)."""
    signing = keys.snapshot().signing
    if signing is None:
        raise NoSigningKey
    issued_at = int(now.timestamp())
    claims: dict[str, object] = {
        "iss": issuer,
        "sub": payload["sub"],
        "aud": payload["aud"],
        "iat": issued_at,
        "exp": issued_at + LOGOUT_TOKEN_TTL_SECONDS,
        "jti": payload["jti"],
        "events": {LOGOUT_EVENT: {}},
        "sid": payload["sid"],
    }
    header = {"typ": LOGOUT_TOKEN_TYPE, "alg": signing.algorithm, "kid": signing.kid}
    return jwt.encode(header, claims, signing.private_key, algorithms=[signing.algorithm])


class BackchannelLogoutChannel:
    """The outbox channel that delivers logout tokens (§2.5, §2.8)."""

    def __init__(
        self,
        issuer: str,
        keys: KeyRing,
        *,
        timeout: float = outbound_http.DEFAULT_TIMEOUT_SECONDS,
        post: PostForm = outbound_http.post,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._issuer = issuer
        self._keys = keys
        self._timeout = timeout
        self._post = post
        # The wall clock, not the server's request clock: receivers check iat and exp
        # against theirs.
        self._clock = clock

    def deliver(self, destination: str, payload: Mapping[str, Any]) -> Attempt:
        # The sender runs outside any request, where the ring is otherwise refreshed.
        self._keys.refresh_if_due()
        try:
            token = sign_logout_token(
                self._keys, issuer=self._issuer, payload=payload, now=self._clock()
            )
        except NoSigningKey:
            return Attempt(Outcome.RETRY, "no signing key loaded")
        except KeyError as missing:
            return Attempt(Outcome.GIVE_UP, f"payload without {missing}")
        body = urlencode({"logout_token": token}).encode()
        try:
            status = self._post(destination, body, FORM_CONTENT_TYPE, timeout=self._timeout)
        except outbound_http.NoAnswer as exc:
            return Attempt(Outcome.RETRY, str(exc))
        return attempt_of_http_status(status)

    def audit_subject(self, payload: Mapping[str, Any]) -> AuditSubject:
        return AuditSubject(
            user_id=uuid.UUID(payload["sub"]),
            client_id=payload["aud"],
            details={"browser_session_id": payload["sid"]},
        )
