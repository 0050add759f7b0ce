"""Security Event Tokens (RFC 8417) that tell resource servers about revocations, in the
shape of the OpenID Shared Signals Framework (SSF 1.0): one event per SET, its subject in
``sub_id`` (RFC 9493 subject identifiers), the event types of CAEP and RISC where one fits.

The same revocations the feed (``GET /oauth/revocations``) lists reach the resource servers
registered as receivers (``authserver clients events``), in the transaction of the change:

- a refresh family revoked (feed ``sid``): CAEP session-revoked; ``sub_id`` complex, its
  ``session`` the opaque family id (the tokens' ``sid`` claim), its ``user`` iss_sub;
- a user signed out everywhere or disabled (feed ``sub``): CAEP session-revoked; ``sub_id``
  iss_sub; ``event_timestamp`` is the feed's ``not_before``;
- one access token revoked (feed ``jti``): CAEP session-revoked; ``sub_id`` jwt_id;
- a client disabled (feed ``client``): CAEP session-revoked; ``sub_id`` complex, its
  ``application`` the opaque client_id; ``event_timestamp`` is the feed's ``not_before``;
- a signing key withdrawn (feed ``kid``): ``KEY_WITHDRAWN`` (below); ``sub_id`` the opaque kid;
- a password changed: CAEP credential-change; ``sub_id`` iss_sub;
- an account disabled: RISC account-disabled; ``sub_id`` iss_sub.

A receiver gets them by push (RFC 8935: the outbox POSTs each SET to its URL, retrying as it
does every message) or by poll (RFC 8936: ``POST /oauth/security-events``; a SET waits in
``security_events`` until acknowledged). Either way a SET is signed when it leaves, with the
``jti`` it was given when the change committed: a repeat after a lost answer is the same
event, and its ``iat`` says how fresh the copy is (a receiver refuses stale copies, so an old
SET replayed by someone who captured it is refused).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from joserfc import jwt
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from authserver.db import utcnow
from authserver.errors import InvalidRequest
from authserver.models import Client, SecurityEvent
from authserver.services import outbound_http
from authserver.services.outbox import (
    Attempt,
    AuditSubject,
    Outcome,
    attempt_of_http_status,
    enqueue,
)

if TYPE_CHECKING:  # keys imports revocations, which imports this module
    from authserver.services.keys import ActiveKey, KeyRing

# RFC 8417 §2.3: the media type of a SET, in its "typ" header.
SET_TYPE = "secevent+jwt"
SET_MEDIA_TYPE = "application/secevent+jwt"
CAEP_SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
CAEP_CREDENTIAL_CHANGE = "https://schemas.openid.net/secevent/caep/event-type/credential-change"
RISC_ACCOUNT_DISABLED = "https://schemas.openid.net/secevent/risc/event-type/account-disabled"
RISC_ACCOUNT_ENABLED = "https://schemas.openid.net/secevent/risc/event-type/account-enabled"
RISC_ACCOUNT_PURGED = "https://schemas.openid.net/secevent/risc/event-type/account-purged"
# No registered event type says "the issuer withdrew one of its signing keys"; SET event types
# are collision-resistant URIs of their definer's choosing (RFC 8417 §2.2), this is ours.
KEY_WITHDRAWN = "urn:authserver:secevent:event-type:signing-key-withdrawn"
# SSF 1.0 §7.1 delivery method identifiers.
PUSH_DELIVERY_METHOD = "urn:ietf:rfc:8935"
POLL_DELIVERY_METHOD = "urn:ietf:rfc:8936"

PUSH = "push"
POLL = "poll"
DELIVERY_MODES = (PUSH, POLL)
# The outbox channel that pushes SETs (services/outbox.py).
PUSH_CHANNEL = "security_event"
# RFC 8936 §2.4: how many SETs one poll may return at most, whatever maxEvents asks.
MAX_EVENTS_PER_POLL = 1000
DEFAULT_EVENTS_PER_POLL = 100


@dataclass(frozen=True)
class Event:
    """One thing a resource server should hear about: its subject and its one event. Subject
    identifiers of format iss_sub and jwt_id get the issuer when the SET is signed."""

    sub_id: dict[str, Any]
    event_type: str
    payload: dict[str, Any]

    def claims(self) -> dict[str, Any]:
        return {"sub_id": self.sub_id, "events": {self.event_type: self.payload}}


def _user(user_id: uuid.UUID | str) -> dict[str, Any]:
    return {"format": "iss_sub", "sub": str(user_id)}


def _revoked(initiating_entity: str, at: datetime, reason: str) -> dict[str, Any]:
    # CAEP 1.0 §3.1: event_timestamp, initiating_entity (admin, user, policy, system) and a
    # reason for administrators in a language-tagged object.
    return {
        "event_timestamp": int(at.timestamp()),
        "initiating_entity": initiating_entity,
        "reason_admin": {"en": reason},
    }


# What started a revocation, by its RevocationReason value: CAEP's initiating_entity.
_INITIATED_BY = {
    "logout": "user",
    "logout_everywhere": "user",
    "password_changed": "user",
    "password_reset": "user",
    "revoked_by_client": "user",
    "user_disabled": "admin",
    "client_disabled": "admin",
    "password_set": "admin",
    "user_deleted": "admin",
    "client_deleted": "admin",
    "reuse_detected": "policy",
    "code_replayed": "policy",
}


def family_revoked(family_id: uuid.UUID, user_id: uuid.UUID, reason: str, at: datetime) -> Event:
    return Event(
        sub_id={
            "format": "complex",
            "session": {"format": "opaque", "id": str(family_id)},
            "user": _user(user_id),
        },
        event_type=CAEP_SESSION_REVOKED,
        payload=_revoked(_INITIATED_BY.get(reason, "system"), at, reason),
    )


def user_signed_out(user_id: uuid.UUID, not_before: datetime) -> Event:
    """Every session of the user: tokens issued before ``event_timestamp`` are dead."""
    return Event(
        sub_id=_user(user_id),
        event_type=CAEP_SESSION_REVOKED,
        payload=_revoked("user", not_before, "logout_everywhere"),
    )


def access_token_revoked(jti: str, at: datetime) -> Event:
    return Event(
        sub_id={"format": "jwt_id", "jti": jti},
        event_type=CAEP_SESSION_REVOKED,
        payload=_revoked("user", at, "revoked_by_client"),
    )


def client_disabled(client_id: str, not_before: datetime) -> Event:
    """Every session of the application: its tokens issued before ``event_timestamp``."""
    return Event(
        sub_id={"format": "complex", "application": {"format": "opaque", "id": client_id}},
        event_type=CAEP_SESSION_REVOKED,
        payload=_revoked("admin", not_before, "client_disabled"),
    )


def key_withdrawn(kid: str, at: datetime) -> Event:
    return Event(
        sub_id={"format": "opaque", "id": kid},
        event_type=KEY_WITHDRAWN,
        payload={"event_timestamp": int(at.timestamp())},
    )


def password_changed(user_id: uuid.UUID, at: datetime, *, initiating_entity: str = "user") -> Event:
    # CAEP 1.0 §3.3; "admin" when the operator set it.
    return Event(
        sub_id=_user(user_id),
        event_type=CAEP_CREDENTIAL_CHANGE,
        payload={
            "credential_type": "password",
            "change_type": "update",
            "event_timestamp": int(at.timestamp()),
            "initiating_entity": initiating_entity,
        },
    )


def account_enabled(user_id: uuid.UUID) -> Event:
    # RISC 1.0 §2.4.
    return Event(sub_id=_user(user_id), event_type=RISC_ACCOUNT_ENABLED, payload={})


def account_purged(user_id: uuid.UUID) -> Event:
    # RISC 1.0 §2.2: the account was deleted.
    return Event(sub_id=_user(user_id), event_type=RISC_ACCOUNT_PURGED, payload={})


def account_disabled(user_id: uuid.UUID) -> Event:
    # RISC 1.0 §2.3: no reason member; "hijacking" and "bulk-account" are its only values.
    return Event(sub_id=_user(user_id), event_type=RISC_ACCOUNT_DISABLED, payload={})


# -- writing them, in the transaction of the change ---------------------------------------------


@dataclass(frozen=True)
class Receiver:
    pk: uuid.UUID
    client_id: str
    delivery: str
    push_url: str | None


def receivers(db: Session) -> list[Receiver]:
    """Clients registered for SETs that are still resource servers: one that no longer serves
    an audience may not read the feed, and so hears nothing this way either."""
    rows = db.execute(
        select(
            Client.id,
            Client.client_id,
            Client.security_event_delivery,
            Client.security_event_push_url,
            Client.served_audiences,
        ).where(Client.security_event_delivery.is_not(None), Client.disabled.is_(False))
    ).all()
    return [Receiver(row[0], row[1], row[2] or POLL, row[3]) for row in rows if row[4]]


def new_jti() -> str:
    return secrets.token_urlsafe(32)


def emit(db: Session, events: Sequence[Event], now: datetime) -> int:
    """Queue ``events`` for every receiver, in the caller's transaction (flush, no commit).
    Returns how many SETs were queued."""
    if not events:
        return 0
    targets = receivers(db)
    if not targets:
        return 0
    queued = 0
    for receiver in targets:
        for event in events:
            jti = new_jti()
            if receiver.delivery == PUSH and receiver.push_url:
                enqueue(
                    db,
                    PUSH_CHANNEL,
                    receiver.push_url,
                    {"jti": jti, "aud": receiver.client_id, "claims": event.claims()},
                    now,
                )
            else:
                db.add(
                    SecurityEvent(
                        jti=jti, receiver_pk=receiver.pk, claims=event.claims(), created_at=now
                    )
                )
            queued += 1
    db.flush()
    return queued


# -- signing -------------------------------------------------------------------------------------


def _with_issuer(sub_id: Mapping[str, Any], issuer: str) -> dict[str, Any]:
    """RFC 9493 §3.2.3 and §3.2.5: iss_sub and jwt_id subjects name their issuer, this one."""
    filled: dict[str, Any] = {}
    for name, value in sub_id.items():
        filled[name] = _with_issuer(value, issuer) if isinstance(value, Mapping) else value
    if sub_id.get("format") in ("iss_sub", "jwt_id"):
        filled["iss"] = issuer
    return filled


def sign_security_event(
    key: ActiveKey, issuer: str, audience: str, jti: str, claims: Mapping[str, Any], now: datetime
) -> str:
    """The SET as it leaves: RFC 8417 §2.2 claims, "typ" ``secevent+jwt`` (§2.3) so that it
    can never pass as an access or ID token, and no "exp" or "sub" (SSF 1.0 §4.1.x: the
    subject is in "sub_id")."""
    body: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "iat": int(now.timestamp()),
        "jti": jti,
        "sub_id": _with_issuer(claims["sub_id"], issuer),
        "events": claims["events"],
    }
    header = {"typ": SET_TYPE, "alg": key.algorithm, "kid": key.kid}
    return jwt.encode(header, body, key.private_key, algorithms=[key.algorithm])


# -- RFC 8935 push --------------------------------------------------------------------------------


class SecurityEventPushChannel:
    """The outbox channel that pushes SETs (RFC 8935 §2): each attempt signs the stored event
    afresh (a fresh ``iat``, the same ``jti``) and POSTs it as ``application/secevent+jwt``.
    202 (any 2xx) is delivered; a 400 names an error the receiver will give again
    (invalid_key, invalid_audience...), so it is given up, as every 4xx but 408 and 429."""

    def __init__(
        self,
        issuer: str,
        keys: KeyRing,
        *,
        timeout: float = outbound_http.DEFAULT_TIMEOUT_SECONDS,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._issuer = issuer
        self._keys = keys
        self._timeout = timeout
        # The wall clock: receivers judge iat against theirs.
        self._clock = clock

    def deliver(self, destination: str, payload: Mapping[str, Any]) -> Attempt:
        # The sender runs outside any request, where the ring is otherwise refreshed.
        self._keys.refresh_if_due()
        signing = self._keys.snapshot().signing
        if signing is None:
            return Attempt(Outcome.RETRY, "no signing key loaded")
        try:
            token = sign_security_event(
                signing,
                self._issuer,
                payload["aud"],
                payload["jti"],
                payload["claims"],
                self._clock(),
            )
        except (KeyError, TypeError) as broken:
            return Attempt(Outcome.GIVE_UP, f"payload unusable: {type(broken).__name__}")
        try:
            status = outbound_http.post(
                destination, token.encode(), SET_MEDIA_TYPE, timeout=self._timeout
            )
        except outbound_http.NoAnswer as exc:
            return Attempt(Outcome.RETRY, str(exc))
        return attempt_of_http_status(status)

    def audit_subject(self, payload: Mapping[str, Any]) -> AuditSubject:
        return AuditSubject(client_id=str(payload.get("aud", "")))


# -- RFC 8936 poll -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PollRequest:
    acknowledged: list[str]
    errors: dict[str, Any]
    max_events: int


@dataclass(frozen=True)
class Pending:
    jti: str
    claims: dict[str, Any]


@dataclass(frozen=True)
class PollAnswer:
    events: list[Pending]
    more_available: bool


# An acknowledgement names a jti this server made (43 characters); a longer one is not ours.
MAX_JTI_LENGTH = 64


def parse_poll_request(body: object) -> PollRequest:
    """RFC 8936 §2.4.1's request body, or ``InvalidRequest`` saying what is wrong with it
    (never repeating it). Every member is optional; an empty object asks for SETs."""
    if not isinstance(body, dict):
        raise InvalidRequest("The poll request must be a JSON object (application/json).")
    acknowledged = body.get("ack", [])
    if not isinstance(acknowledged, list) or not all(
        isinstance(jti, str) and 0 < len(jti) <= MAX_JTI_LENGTH for jti in acknowledged
    ):
        raise InvalidRequest("'ack' must be a list of SET identifiers (jti).")
    errors = body.get("setErrs", {})
    if not isinstance(errors, dict) or not all(0 < len(jti) <= MAX_JTI_LENGTH for jti in errors):
        raise InvalidRequest("'setErrs' must be an object keyed by SET identifiers (jti).")
    if len(acknowledged) + len(errors) > MAX_EVENTS_PER_POLL:
        raise InvalidRequest(f"At most {MAX_EVENTS_PER_POLL} SETs can be acknowledged at once.")
    max_events = body.get("maxEvents", DEFAULT_EVENTS_PER_POLL)
    if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 0:
        raise InvalidRequest("'maxEvents' must be a whole number, 0 or more.")
    if not isinstance(body.get("returnImmediately", True), bool):
        raise InvalidRequest("'returnImmediately' must be true or false.")
    return PollRequest(
        acknowledged=list(dict.fromkeys(acknowledged)),
        errors=errors,
        max_events=min(max_events, MAX_EVENTS_PER_POLL),
    )


def poll(db: Session, receiver_pk: uuid.UUID, request: PollRequest, now: datetime) -> PollAnswer:
    """Acknowledge what the receiver says it has (RFC 8936 §2.4.2: "ack" and "setErrs" alike,
    a SET it could not process is not sent again), then hand out the oldest unacknowledged
    ones. Acknowledgements of SETs that are not this receiver's change nothing."""
    settled = request.acknowledged + list(request.errors)
    if settled:
        db.execute(
            update(SecurityEvent)
            .where(
                SecurityEvent.receiver_pk == receiver_pk,
                SecurityEvent.jti.in_(settled),
                SecurityEvent.acknowledged_at.is_(None),
            )
            .values(acknowledged_at=now)
            .execution_options(synchronize_session=False)
        )
    if request.max_events == 0:
        return PollAnswer(events=[], more_available=False)
    rows = db.execute(
        select(SecurityEvent.jti, SecurityEvent.claims)
        .where(SecurityEvent.receiver_pk == receiver_pk, SecurityEvent.acknowledged_at.is_(None))
        .order_by(SecurityEvent.id)
        .limit(request.max_events + 1)
    ).all()
    events = [Pending(jti, claims) for jti, claims in rows[: request.max_events]]
    return PollAnswer(events=events, more_available=len(rows) > request.max_events)
