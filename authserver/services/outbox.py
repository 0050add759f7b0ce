"""A transactional outbox: messages for other systems, written in the transaction of the change
they report and delivered afterwards, at least once.

Why: telling another system about a change (an app that a browser session has ended) cannot
be part of the change's transaction, and doing it after the commit loses it when the process
dies in between or the receiver is down. So the message is a row written with the change
(``enqueue``, flush only: it commits or rolls back with the caller's work), and a sender
delivers it later, retrying until the receiver takes it or the message is too old.

**Delivering** (``deliver_due``) commits, like ``services/purge.py``: it takes a session
factory. One round:

1. *Claim* (one short transaction): ``UPDATE ... SET attempts = attempts + 1,
   next_attempt_at = now + lease, lease_id = :new WHERE id IN (SELECT id ... due ... LIMIT n
   FOR UPDATE SKIP LOCKED) RETURNING ...``. The lease is ``next_attempt_at`` itself: while a
   sender holds a message it is not due for anyone else. On PostgreSQL, SKIP LOCKED lets two
   senders claim at once without waiting and without taking the same row (a row another
   claim is updating is skipped; one it has committed is re-checked and no longer due). On
   SQLite every transaction begins IMMEDIATE, so claims simply take turns.
2. *Deliver*, no transaction open, each claimed message on its own thread, through its
   channel's handler, which answers delivered, retry or give up.
3. *Settle* (one short transaction per message): delivered, or the next attempt, or given
   up; written only ``WHERE lease_id = :ours``, so a sender whose lease ran out and whose
   message another sender took over writes nothing. Delivered and given-up messages are
   audited.

A lease (``OutboxPolicy.lease``, 30 s) outlasts any delivery: every HTTP exchange has a
deadline of a few seconds on the whole exchange (``services/outbound_http.py``). So two
senders never deliver one message at the same time.

**Retries**: exponential backoff from ``retry_base`` with "equal jitter" (between half the
step and the step), the step capped at ``retry_max``: a receiver that comes back is reached
within ``retry_max`` of its return, plus the time a sender takes to wake. A message still
undelivered ``give_up_after`` after it was written is given up; so is one whose channel says
retrying cannot help (an HTTP 4xx other than 408 and 429).

**What a crash can do**: a sender that dies after the receiver took a message but before it
settled leaves it claimed; when the lease ends another sender delivers it again. Delivery is
at least once, never exactly once: receivers must take a message twice calmly (a logout
token keeps its ``jti``, so a receiver recognises the repeat). A crash before the change
commits loses both the change and the message, never one of them.

**Channels**: ``channel`` names the handler that delivers a message (``Channel``). A handler
gets the destination and the stored payload and does the whole delivery (build and sign the
request, the HTTP call, reading the answer), so what it sends is made fresh at each attempt
(a logout token with a fresh ``iat`` and ``exp``). To add one (as Security Event Token
push, ``security_events.py``, and e-mail, ``mail.py``, did), write a ``Channel``, register
it under a new name in ``runtime.build_runtime``'s registry, and ``enqueue`` under that
name. A sender claims only
messages of channels it knows, so a process without a newer channel leaves its messages to
processes that have it.
"""

from __future__ import annotations

import enum
import logging
import random
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from authserver.models import OutboundMessage
from authserver.services.audit import AuditEventType, record

log = logging.getLogger(__name__)

# Set on a session that enqueued a message, so that whatever wakes a sender after a commit
# (app.py) knows there is something to wake it for.
ENQUEUED = "authserver.outbox_enqueued"
DEFAULT_RETRY_BASE = timedelta(seconds=1)
DEFAULT_LEASE = timedelta(seconds=30)
# Messages claimed, and so delivered at once, per round.
DEFAULT_BATCH_SIZE = 8
# last_error's column size.
MAX_ERROR_LENGTH = 200


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    GIVE_UP = "give_up"


@dataclass(frozen=True)
class Attempt:
    """What a channel's handler says of one delivery. ``error``: why it failed, in a few
    words for operators; never a token, a body or a secret."""

    outcome: Outcome
    error: str | None = None


DELIVERED = Attempt(Outcome.DELIVERED)


def attempt_of_http_status(status: int) -> Attempt:
    """What an HTTP channel makes of the receiver's answer. 2xx: taken (Back-Channel Logout
    §2.8 names 200 and 204; RFC 8935 §2.3 202). 408, 429 and 5xx: the receiver is busy or
    down, later may work. 3xx: not followed (a redirect is not where the message was
    registered to go), but retried, since the receiver may be moving. Any other 4xx: it
    refuses this message, and sending it again cannot change that.
    """
    if 200 <= status < 300:
        return DELIVERED
    error = f"HTTP {status}"
    if 400 <= status < 500 and status not in (408, 429):
        return Attempt(Outcome.GIVE_UP, error)
    return Attempt(Outcome.RETRY, error)


@dataclass(frozen=True)
class AuditSubject:
    """Whom a message concerns, for its audit events (details: ``services/audit.py``'s
    allowed keys only)."""

    user_id: uuid.UUID | None = None
    client_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


class Channel(Protocol):
    """Delivers the messages of one channel. ``deliver`` is called with no transaction open
    and must return within the lease (every network call with a deadline); it may raise,
    which counts as a failure worth retrying."""

    def deliver(self, destination: str, payload: Mapping[str, Any]) -> Attempt: ...

    def audit_subject(self, payload: Mapping[str, Any]) -> AuditSubject: ...


@dataclass(frozen=True)
class OutboxPolicy:
    retry_max: timedelta
    give_up_after: timedelta
    retry_base: timedelta = DEFAULT_RETRY_BASE
    lease: timedelta = DEFAULT_LEASE
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        if self.retry_base <= timedelta(0) or self.retry_max < self.retry_base:
            raise ValueError("retry_max must be at least retry_base, which must be positive")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")


@dataclass(frozen=True)
class ClaimedMessage:
    id: int
    channel: str
    destination: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime
    lease_id: uuid.UUID


@dataclass
class DeliveryReport:
    """What one ``deliver_due`` did. ``lost``: outcomes not written because the lease had
    been taken over. ``next_attempt_at``: when the earliest pending message is due, or None
    when none is pending."""

    delivered: int = 0
    retrying: int = 0
    given_up: int = 0
    lost: int = 0
    next_attempt_at: datetime | None = None

    @property
    def attempted(self) -> int:
        return self.delivered + self.retrying + self.given_up + self.lost


def enqueue(
    db: Session, channel: str, destination: str, payload: dict[str, Any], now: datetime
) -> OutboundMessage:
    """Add a message in the caller's transaction, due at once. Flushes, never commits."""
    message = OutboundMessage(
        channel=channel,
        destination=destination,
        payload=payload,
        created_at=now,
        attempts=0,
        next_attempt_at=now,
    )
    db.add(message)
    db.flush()
    db.info[ENQUEUED] = True
    return message


def _pending() -> Any:
    return OutboundMessage.delivered_at.is_(None) & OutboundMessage.gave_up_at.is_(None)


def claim_due(
    db: Session, channels: Mapping[str, Channel], now: datetime, policy: OutboxPolicy
) -> list[ClaimedMessage]:
    """Take up to ``batch_size`` due messages of these channels for one lease (see the module
    docstring). The caller commits at once, before delivering."""
    if not channels:
        return []
    due = (
        select(OutboundMessage.id)
        .where(
            _pending(),
            OutboundMessage.next_attempt_at <= now,
            OutboundMessage.channel.in_(sorted(channels)),
        )
        .order_by(OutboundMessage.next_attempt_at, OutboundMessage.id)
        .limit(policy.batch_size)
        # PostgreSQL: rows another sender is claiming are skipped, not waited for. SQLite
        # has no row locks and renders nothing here; its claims take turns (BEGIN IMMEDIATE).
        .with_for_update(skip_locked=True)
    )
    lease_id = uuid.uuid4()
    rows = db.execute(
        update(OutboundMessage)
        .where(OutboundMessage.id.in_(due.scalar_subquery()))
        .values(
            attempts=OutboundMessage.attempts + 1,
            next_attempt_at=now + policy.lease,
            lease_id=lease_id,
        )
        .returning(
            OutboundMessage.id,
            OutboundMessage.channel,
            OutboundMessage.destination,
            OutboundMessage.payload,
            OutboundMessage.attempts,
            OutboundMessage.created_at,
        )
        .execution_options(synchronize_session=False)
    ).all()
    return sorted(
        (
            ClaimedMessage(
                id=row.id,
                channel=row.channel,
                destination=row.destination,
                payload=dict(row.payload),
                attempts=row.attempts,
                created_at=row.created_at,
                lease_id=lease_id,
            )
            for row in rows
        ),
        key=lambda message: message.id,
    )


def retry_delay(attempts: int, policy: OutboxPolicy, rng: random.Random | None = None) -> timedelta:
    """How long to wait after the ``attempts``-th failed attempt: the step doubles from
    ``retry_base`` up to ``retry_max``, and the wait is between half the step and the step
    (so senders retrying many messages for one receiver spread out)."""
    doublings = min(max(attempts - 1, 0), 32)
    step = min(policy.retry_max, policy.retry_base * 2**doublings)
    fraction: float = (rng or random).uniform(0.5, 1.0)
    delay: timedelta = step * fraction
    return delay


def settle(
    db: Session,
    message: ClaimedMessage,
    attempt: Attempt,
    now: datetime,
    policy: OutboxPolicy,
    subject: AuditSubject,
    rng: random.Random | None = None,
) -> str:
    """Write the outcome of one attempt, if this sender's lease still holds the message.
    Returns "delivered", "retrying", "given_up" or "lost" (the lease was taken over)."""
    error = (attempt.error or "")[:MAX_ERROR_LENGTH] or None
    values: dict[str, Any] = {"lease_id": None}
    if attempt.outcome is Outcome.DELIVERED:
        outcome = "delivered"
        values.update(delivered_at=now, last_error=None)
    else:
        outcome = "given_up"
        reason = error or "failed"
        if attempt.outcome is Outcome.RETRY:
            delay = retry_delay(message.attempts, policy, rng)
            if now + delay - message.created_at <= policy.give_up_after:
                outcome = "retrying"
                values.update(next_attempt_at=now + delay, last_error=error)
            else:
                age = int((now - message.created_at).total_seconds())
                reason = f"undelivered after {age} s; last: {reason}"[:MAX_ERROR_LENGTH]
        if outcome == "given_up":
            values.update(gave_up_at=now, last_error=reason)
    written = db.execute(
        update(OutboundMessage)
        .where(
            OutboundMessage.id == message.id,
            OutboundMessage.lease_id == message.lease_id,
            _pending(),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if written.rowcount != 1:  # type: ignore[attr-defined]
        return "lost"
    if outcome == "retrying":
        log.info(
            "outbox message %d (%s) not delivered: %s; attempt %d, next in %.0f s",
            message.id,
            message.channel,
            error,
            message.attempts,
            (values["next_attempt_at"] - now).total_seconds(),
        )
        return outcome
    if outcome == "given_up":
        log.warning(
            "outbox message %d (%s) given up after %d attempts: %s",
            message.id,
            message.channel,
            message.attempts,
            values["last_error"],
        )
    delivered = outcome == "delivered"
    record(
        db,
        AuditEventType.OUTBOX_DELIVERED if delivered else AuditEventType.OUTBOX_GAVE_UP,
        now,
        user_id=subject.user_id,
        client_id=subject.client_id,
        channel=message.channel,
        message_id=message.id,
        attempts=message.attempts,
        **({} if delivered else {"reason": values["last_error"]}),
        **subject.details,
    )
    return outcome


def next_attempt_at(db: Session, channels: Mapping[str, Channel]) -> datetime | None:
    """When the earliest pending message of these channels is due (or its lease ends); None
    if none is pending."""
    if not channels:
        return None
    due: datetime | None = db.scalar(
        select(func.min(OutboundMessage.next_attempt_at)).where(
            _pending(), OutboundMessage.channel.in_(sorted(channels))
        )
    )
    return due


@dataclass(frozen=True)
class ChannelStatus:
    """What the outbox holds of one channel (``authserver outbox status``)."""

    channel: str
    pending: int
    delivered: int
    given_up: int
    # When the oldest pending message was written; None if none is pending.
    oldest_pending_at: datetime | None


def outbox_status(db: Session) -> list[ChannelStatus]:
    """Per channel: messages pending, delivered and given up (until purged)."""
    pending = _pending()
    rows = db.execute(
        select(
            OutboundMessage.channel,
            func.count().filter(pending),
            func.count().filter(OutboundMessage.delivered_at.is_not(None)),
            func.count().filter(OutboundMessage.gave_up_at.is_not(None)),
            func.min(OutboundMessage.created_at).filter(pending),
        )
        .group_by(OutboundMessage.channel)
        .order_by(OutboundMessage.channel)
    ).all()
    return [ChannelStatus(*row) for row in rows]


def _attempt(channel: Channel, message: ClaimedMessage) -> Attempt:
    try:
        return channel.deliver(message.destination, message.payload)
    except Exception as exc:
        # A handler's bug or an unexpected failure: retried like a receiver that is down.
        log.exception("outbox channel %s failed on message %d", message.channel, message.id)
        return Attempt(Outcome.RETRY, f"{type(exc).__name__} in the sender")


def _subject(channel: Channel, message: ClaimedMessage) -> AuditSubject:
    try:
        return channel.audit_subject(message.payload)
    except Exception:
        log.exception(
            "outbox channel %s could not describe message %d", message.channel, message.id
        )
        return AuditSubject()


def deliver_due(
    session_factory: sessionmaker[Session],
    channels: Mapping[str, Channel],
    policy: OutboxPolicy,
    *,
    clock: Callable[[], datetime],
    rng: random.Random | None = None,
) -> DeliveryReport:
    """Deliver every message that is due now, in rounds of ``batch_size`` (see the module
    docstring); commits. Returns what it did and when the next pending message is due."""
    report = DeliveryReport()
    while True:
        with session_factory() as db, db.begin():
            claimed = claim_due(db, channels, clock(), policy)
        if not claimed:
            break
        with ThreadPoolExecutor(
            max_workers=len(claimed), thread_name_prefix="authserver-outbox-delivery"
        ) as pool:
            attempts = list(
                pool.map(lambda message: _attempt(channels[message.channel], message), claimed)
            )
        for message, attempt in zip(claimed, attempts, strict=True):
            subject = _subject(channels[message.channel], message)
            with session_factory() as db, db.begin():
                outcome = settle(db, message, attempt, clock(), policy, subject, rng)
            setattr(report, outcome, getattr(report, outcome) + 1)
        if len(claimed) < policy.batch_size:
            break
    with session_factory() as db:
        report.next_attempt_at = next_attempt_at(db, channels)
    return report
