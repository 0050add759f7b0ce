"""Revocations pushed as Security Event Tokens (RFC 8417, delivered by RFC 8935 push), for a
resource server that wants them sooner than its next revocation-feed poll.

    verifier = TokenVerifier(issuer, audience, revocation_feed=True, client_id=...,
                             client_secret=..., poll_interval=300)
    receiver = SecurityEventReceiver(verifier, audience=client_id)

    @app.post("/security-events")          # the URL given to `authserver clients events`
    def security_events():
        answer = receiver.receive_push(request.get_data(), request.content_type)
        return answer.body or "", answer.status, answer.headers

A pushed SET is verified like an access token (the issuer's JWKS, the key's own algorithm,
no withdrawn key) but must have ``typ`` ``secevent+jwt`` (RFC 8417 §2.3), so no other token
of the issuer passes as one; then its ``iss``, its ``aud`` (this receiver's client_id), its
``iat`` (no older than ``max_age``: a captured SET replayed later is refused) and its ``jti``
(a SET seen before is answered 202 again but not applied twice: the issuer re-sends when an
answer is lost). Its event joins the verifier's revocation state at once.

What push guarantees, and what it does not: the issuer delivers each SET at least once,
retrying while the receiver is down, so a receiver that comes back gets what it missed. The
revocation feed stays the ground truth: poll it too (a long ``poll_interval`` is fine), since
it also serves the state at start-up and any SET the issuer gave up on. A SET carries no
expiry, so an entry learnt from one is kept ``entry_lifetime`` seconds (default a day, longer
than any access token lives) unless the feed's own entry says more.

Answers (RFC 8935 §2.2 and §2.3): 202 accepted; 400 with ``{"err": ..., "description": ...}``
where ``err`` is ``invalid_request``, ``invalid_key`` (a bad signature, a withdrawn key),
``invalid_issuer`` or ``invalid_audience``; 503 when the SET could not be judged, because the
issuer's keys cannot be had or it names a key not fetched yet (the issuer retries a 503).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import BadSignature, InvalidToken, JWKSUnavailable, TokenRevoked, UnknownKey
from .verifier import TokenVerifier

log = logging.getLogger(__name__)

SET_TYPES = frozenset({"secevent+jwt", "application/secevent+jwt"})
SET_MEDIA_TYPE = "application/secevent+jwt"
SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
KEY_WITHDRAWN = "urn:authserver:secevent:event-type:signing-key-withdrawn"
DEFAULT_MAX_AGE = 300.0
DEFAULT_ENTRY_LIFETIME = 86400.0
# Replay memory: every jti seen within max_age, at most this many (the oldest go first).
MAX_REMEMBERED_JTIS = 100_000


class SetRejected(Exception):
    """RFC 8935 §2.4 error code and a description that names no secret."""

    def __init__(self, err: str, description: str) -> None:
        super().__init__(description)
        self.err = err
        self.description = description


@dataclass(frozen=True)
class PushAnswer:
    status: int
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _entries_of(claims: Mapping[str, Any], issuer: str, until: float) -> list[dict[str, Any]]:
    """The revocation-feed entries a SET stands for (``revocation_feed`` has the types).
    Events this kit does not act on (credential-change, account-disabled: the sessions they
    end arrive as session-revoked events of their own) give none."""
    events = claims.get("events")
    if not isinstance(events, dict) or len(events) != 1:
        raise SetRejected("invalid_request", "A SET carries exactly one event (SSF 1.0).")
    ((event_type, payload),) = events.items()
    subject = claims.get("sub_id")
    if (
        not isinstance(subject, dict)
        or not isinstance(subject.get("format"), str)
        or not isinstance(payload, dict)
    ):
        raise SetRejected("invalid_request", "The SET has no subject (sub_id) or event object.")
    entry: dict[str, Any] = {"expires_at": until}
    if event_type == KEY_WITHDRAWN:
        entry.update(type="kid", value=subject.get("id"))
        return [entry]
    if event_type != SESSION_REVOKED:
        return []
    timestamp = payload.get("event_timestamp")
    form = subject.get("format")
    if form == "complex" and isinstance(subject.get("session"), dict):
        entry.update(type="sid", value=subject["session"].get("id"))
    elif form == "complex" and isinstance(subject.get("application"), dict):
        entry.update(type="client", value=subject["application"].get("id"), not_before=timestamp)
    elif form == "iss_sub" and subject.get("iss") == issuer:
        entry.update(type="sub", value=subject.get("sub"), not_before=timestamp)
    elif form == "jwt_id" and subject.get("iss") == issuer:
        entry.update(type="jti", value=subject.get("jti"))
    else:
        return []
    return [entry]


class SecurityEventReceiver:
    """Receives the issuer's pushed SETs and applies them to ``verifier``'s revocation state.
    ``verifier`` must have been made with ``revocation_feed=True``. Thread-safe."""

    def __init__(
        self,
        verifier: TokenVerifier,
        audience: str,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        entry_lifetime: float = DEFAULT_ENTRY_LIFETIME,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not audience:
            raise ValueError("audience (this receiver's client_id) is required")
        if max_age <= 0 or entry_lifetime <= 0:
            raise ValueError("max_age and entry_lifetime must be positive")
        self.verifier = verifier
        self.audience = audience
        self.max_age = max_age
        self.entry_lifetime = entry_lifetime
        self._clock = clock or time.time
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}  # jti -> iat, oldest first

    def receive_push(self, body: bytes, content_type: str | None) -> PushAnswer:
        """RFC 8935 §2: the whole exchange, from the request body to the answer."""
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        try:
            if media_type != SET_MEDIA_TYPE:
                raise SetRejected("invalid_request", f"The body must be {SET_MEDIA_TYPE}.")
            try:
                token = body.decode("ascii").strip()
            except UnicodeDecodeError:
                raise SetRejected("invalid_request", "The body is not a compact JWS.") from None
            self.accept(token)
        except SetRejected as rejected:
            return PushAnswer(
                400,
                json.dumps({"err": rejected.err, "description": rejected.description}),
                {"Content-Type": "application/json"},
            )
        except (JWKSUnavailable, UnknownKey):
            # Nothing was judged: the keys could not be had, or the SET names a key this
            # verifier has not seen and may not refetch yet (a key rotated a moment ago; the
            # JWKS cache refetches at most every min_refetch_interval). The issuer retries a
            # 5xx, so the SET arrives once the key is known; a 400 would lose it for good.
            return PushAnswer(503, None, {"Retry-After": "5"})
        return PushAnswer(202)

    def accept(self, token: str) -> bool:
        """Verify a SET and apply it; returns False when it was seen before (and so not
        applied again). Raises ``SetRejected``, or ``UnknownKey`` / ``JWKSUnavailable`` when
        it could not be judged."""
        try:
            claims = self.verifier.signed_claims(token, SET_TYPES)
        except UnknownKey:
            raise
        except (BadSignature, TokenRevoked) as exc:
            raise SetRejected("invalid_key", exc.description) from None
        except InvalidToken as exc:
            raise SetRejected("invalid_request", exc.description) from None
        if claims.get("iss") != self.verifier.issuer:
            raise SetRejected("invalid_issuer", "The SET is from another issuer.")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.audience not in audiences:
            raise SetRejected("invalid_audience", "The SET is meant for another receiver.")
        jti, issued_at = claims.get("jti"), claims.get("iat")
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            raise SetRejected("invalid_request", "The SET has no jti.")
        if isinstance(issued_at, bool) or not isinstance(issued_at, int | float):
            raise SetRejected("invalid_request", "The SET has no iat.")
        now = self._clock()
        leeway = self.verifier.leeway
        if not math.isfinite(issued_at) or issued_at > now + leeway:
            raise SetRejected("invalid_request", "The SET was issued in the future.")
        if issued_at < now - self.max_age - leeway:
            # RFC 8417 §4.1: an old SET replayed by someone who captured it.
            raise SetRejected("invalid_request", "The SET is too old.")
        entries = _entries_of(claims, self.verifier.issuer, now + self.entry_lifetime)
        if not self._first_time(jti, issued_at, now):
            return False
        if entries:
            self.verifier.add_revocations(entries)
        return True

    def _first_time(self, jti: str, issued_at: float, now: float) -> bool:
        with self._lock:
            # Oldest first, by arrival: a SET past the horizon is refused by its iat anyway.
            horizon = now - self.max_age - self.verifier.leeway
            while self._seen and next(iter(self._seen.values())) < horizon:
                del self._seen[next(iter(self._seen))]
            if jti in self._seen:
                return False
            while len(self._seen) >= MAX_REMEMBERED_JTIS:
                del self._seen[next(iter(self._seen))]
            self._seen[jti] = issued_at
            return True
