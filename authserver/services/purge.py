"""Deleting what the server no longer needs: dead refresh families, spent authorization codes,
revocation entries no token can carry any more, ended browser sessions, removed signing keys,
outbox messages delivered or given up, Security Event Tokens acknowledged or never polled for,
account links (password reset, verification) a day past their expiry, passkey challenges
never answered once expired, and audit events past their retention.

Safe while serving: every batch is its own short transaction (select at most ``batch_size``
primary keys, delete those rows, commit), so no lock is held for longer than one batch and a
failure loses at most one batch, which the next run deletes again. Everything deleted is dead
for good (a revoked or expired row never comes back to life), so a batch needs no lock on
rows it has only selected.

Safe when two run at once: on PostgreSQL a session-level advisory lock, taken on a connection
of its own for the whole run, lets one purge work and makes any other return at once. SQLite
needs no lock: it has one writer at a time (every transaction begins IMMEDIATE), so two
purges only take turns batch by batch and never delete a row twice.

Unlike the other services this one commits: one transaction per batch is the point. It takes
a session factory, not a session, and never imports Flask.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    delete,
    func,
    or_,
    select,
    text,
)
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from authserver.models import (
    AccountLink,
    AuditEvent,
    AuthorizationCode,
    BrowserSession,
    DeviceAuthorization,
    DPoPProofSeen,
    KeyState,
    OutboundMessage,
    PasskeyChallenge,
    PushedAuthorizationRequest,
    RefreshFamily,
    RefreshToken,
    Revocation,
    SecurityEvent,
    SigningKey,
    SignInThrottle,
)
from authserver.services.revocations import longest_access_token_ttl

DEFAULT_BATCH_SIZE = 500
DEFAULT_GRACE = timedelta(days=1)
DEFAULT_AUDIT_RETENTION_DAYS = 365
# An arbitrary constant naming the advisory lock held by a running purge ("authpurg").
PURGE_LOCK = 0x61757468_70757267
# Seconds between two batches on SQLite (see _Purge.run).
SQLITE_PAUSE_BETWEEN_BATCHES = 0.12
POSTGRES_PAUSE_BETWEEN_BATCHES = 0.01


@dataclass(frozen=True)
class PurgePolicy:
    """What is old enough to go.

    ``access_token_ttl``: the server-wide access-token lifetime in seconds; a client may be
    configured longer, and the longest of all decides how long a revocation entry stays.
    ``grace``: how long a dead row is kept before it goes, for operators looking into what
    just happened.
    """

    access_token_ttl: int
    grace: timedelta = DEFAULT_GRACE
    audit_retention_days: int = DEFAULT_AUDIT_RETENTION_DAYS
    batch_size: int = DEFAULT_BATCH_SIZE
    # How long a polled Security Event Token waits for its receiver's acknowledgement: as long
    # as a pushed one is retried (AUTHSERVER_OUTBOX_GIVE_UP_SECONDS), the same durability.
    unacknowledged_events_kept: timedelta = DEFAULT_GRACE

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.audit_retention_days < 1:
            raise ValueError("audit_retention_days must be at least 1")
        if self.grace < timedelta(0):
            raise ValueError("grace must not be negative")


# What a purge deletes, in the order it deletes them.
KINDS = (
    "authorization_codes",
    "refresh_families",
    "refresh_tokens",
    "browser_sessions",
    "revocations",
    "signing_keys",
    "outbound_messages",
    "security_events",
    "account_links",
    "passkey_challenges",
    "pushed_authorization_requests",
    "device_authorizations",
    "dpop_proofs_seen",
    "audit_events",
    "sign_in_throttles",
)


@dataclass
class PurgeReport:
    """Rows deleted, per kind. ``another_purge_running``: nothing was done because another
    purge holds the lock. ``stopped``: asked to stop, so the run ended between two batches."""

    authorization_codes: int = 0
    refresh_families: int = 0
    # Deleted with their families, never on their own.
    refresh_tokens: int = 0
    browser_sessions: int = 0
    revocations: int = 0
    signing_keys: int = 0
    outbound_messages: int = 0
    security_events: int = 0
    account_links: int = 0
    passkey_challenges: int = 0
    pushed_authorization_requests: int = 0
    device_authorizations: int = 0
    dpop_proofs_seen: int = 0
    sign_in_throttles: int = 0
    audit_events: int = 0
    another_purge_running: bool = False
    stopped: bool = False

    def add(self, counted: dict[str, int]) -> None:
        for kind, rows in counted.items():
            setattr(self, kind, getattr(self, kind) + rows)

    def counts(self) -> dict[str, int]:
        """Kind -> rows deleted, in the order the kinds are purged."""
        return {kind: getattr(self, kind) for kind in KINDS}

    @property
    def total(self) -> int:
        return sum(self.counts().values())


class _Stop(Exception):
    """Raised between batches when the caller asked the run to stop."""


def purge(
    session_factory: sessionmaker[Session],
    *,
    now: datetime,
    policy: PurgePolicy,
    should_stop: Callable[[], bool] = lambda: False,
) -> PurgeReport:
    """Delete everything that is due, one batch per transaction; see the module docstring.

    ``should_stop`` is asked before every batch (a janitor got SIGTERM): the run then ends
    cleanly with what it has deleted so far.
    """
    report = PurgeReport()
    with _purge_lock(session_factory) as acquired:
        if not acquired:
            report.another_purge_running = True
            return report
        try:
            _Purge(session_factory, now, policy, should_stop, report).run()
        except _Stop:
            report.stopped = True
    return report


@contextmanager
def _purge_lock(session_factory: sessionmaker[Session]) -> Iterator[bool]:
    """Hold the purge's advisory lock for the whole run; yields whether it was acquired."""
    with session_factory() as probe:
        bind = probe.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    if engine.dialect.name != "postgresql":
        # SQLite serialises writers; see the module docstring.
        yield True
        return
    # A connection of its own in autocommit: a session-level lock outlives the batches'
    # transactions, and no transaction (no snapshot holding back vacuum) stays open with it.
    connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        acquired = bool(
            connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": PURGE_LOCK}
            ).scalar_one()
        )
        try:
            yield acquired
        finally:
            if acquired:
                _release_lock(connection)
    finally:
        connection.close()


def _release_lock(connection: Connection) -> None:
    try:
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PURGE_LOCK})
    except Exception:
        # The pool would hand this connection out again still holding the lock, and every
        # later purge would find "another purge running". Closing it for real ends the
        # server session, and the lock with it.
        connection.invalidate()


class _Purge:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        now: datetime,
        policy: PurgePolicy,
        should_stop: Callable[[], bool],
        report: PurgeReport,
    ) -> None:
        self._factory = session_factory
        self._now = now
        self._policy = policy
        self._should_stop = should_stop
        self._report = report

    def run(self) -> None:
        with self._factory() as session:
            token_ttl = longest_access_token_ttl(session, self._policy.access_token_ttl)
            sqlite = session.get_bind().dialect.name == "sqlite"
        # SQLite's busy handler polls for the write lock, sleeping up to 100 ms between tries;
        # a purge that began its next batch the moment it committed would win every time and
        # starve the server's writers. Pausing longer than one poll lets every waiter in.
        # On PostgreSQL a shorter pause hands the CPU and the WAL back to the server's own
        # transactions between two batches (docs/PERFORMANCE.md: refresh p99 during a purge of
        # 1,000,000 rows 27-31 ms with it, 28-55 ms without, on two cores).
        self._pause = SQLITE_PAUSE_BETWEEN_BATCHES if sqlite else POSTGRES_PAUSE_BETWEEN_BATCHES
        grace_cutoff = self._now - self._policy.grace
        # Codes first: every family deleted makes the database set its codes' family_id to
        # NULL; fewer codes, less work.
        self._purge_codes(grace_cutoff)
        self._purge_families(token_ttl)
        self._purge_browser_sessions(grace_cutoff)
        self._purge_revocations(token_ttl)
        self._purge_removed_keys(grace_cutoff, token_ttl)
        self._purge_outbound_messages(grace_cutoff)
        self._purge_security_events(grace_cutoff)
        self._purge_account_links(grace_cutoff)
        self._purge_passkey_challenges()
        self._purge_pushed_requests()
        self._purge_device_authorizations(grace_cutoff)
        self._purge_seen_dpop_proofs()
        self._purge_audit_events()
        self._purge_sign_in_throttles()

    # -- one kind at a time ------------------------------------------------------------------

    def _purge_families(self, token_ttl: timedelta) -> None:
        # Only whole families go, never single tokens. A used token of a live family is how
        # reuse is detected (RFC 9700 §4.14.2): a thief presenting a stolen, already-rotated
        # token must find it marked used so that the whole family is revoked; deleted, it
        # would be an unknown token, refused quietly while the thief's copy of the lineage
        # lived on. So used tokens stay exactly as long as their family is live.
        # A dead family answers every token with invalid_grant (a used one is still reuse and
        # recorded, but there is nothing left to revoke), so it and its tokens can go.
        # Expired: its last access token may still be out there and be checked against the
        # family (introspection, userinfo), so wait at least the longest access-token
        # lifetime. Revoked: the family already says no; a missing family says no as well.
        expired_cutoff = self._now - max(self._policy.grace, token_ttl)
        due = or_(
            RefreshFamily.expires_at <= expired_cutoff,
            # Idle expiry is as final as the absolute one: rotation refuses before it slides.
            RefreshFamily.idle_expires_at <= expired_cutoff,
            RefreshFamily.revoked_at <= self._now - self._policy.grace,
        )

        def delete_tokens_first(session: Session, ids: list[Any]) -> dict[str, int]:
            # ON DELETE CASCADE would do this on PostgreSQL, and on SQLite only where
            # PRAGMA foreign_keys is on; deleting them here works everywhere and counts them.
            # (authorization_codes.family_id is left to its ON DELETE SET NULL: a code that
            # kept the id of a deleted family would only revoke nothing when replayed.)
            deleted = session.execute(
                delete(RefreshToken)
                .where(RefreshToken.family_id.in_(ids))
                .execution_options(synchronize_session=False)
            )
            return {"refresh_tokens": _rowcount(deleted)}

        self._in_batches("refresh_families", RefreshFamily.id, due, delete_tokens_first)

    def _purge_codes(self, cutoff: datetime) -> None:
        # Single use and short-lived (RFC 6749 §4.1.2). A used code is kept for the grace
        # period so that a replay soon after still revokes the tokens issued from it.
        due = or_(AuthorizationCode.used_at <= cutoff, AuthorizationCode.expires_at <= cutoff)
        self._in_batches("authorization_codes", AuthorizationCode.id, due)

    def _purge_browser_sessions(self, cutoff: datetime) -> None:
        # Signed out, or past either expiry: none of these ever becomes live again.
        due = or_(
            BrowserSession.revoked_at <= cutoff,
            BrowserSession.expires_at <= cutoff,
            BrowserSession.idle_expires_at <= cutoff,
        )

        # Their codes go by ON DELETE CASCADE and the families issued through them stay,
        # unlinked, by ON DELETE SET NULL: a live family outlives the browser it began in.
        self._in_batches("browser_sessions", BrowserSession.id, due)

    def _purge_revocations(self, token_ttl: timedelta) -> None:
        # The same liveness as the feed (revocations.read_feed): a jti until its token's exp,
        # a sid or sub for the longest access-token lifetime after it was recorded.
        due = or_(
            Revocation.expires_at <= self._now,
            Revocation.expires_at.is_(None) & (Revocation.created_at <= self._now - token_ttl),
        )
        # The newest entry always stays, dead or not: the feed's cursor is the largest id, and
        # SQLite gives an INTEGER PRIMARY KEY max(id) + 1, so deleting the newest row would
        # hand its id out again to an entry that resource servers past that cursor never see.
        newest = select(func.max(Revocation.id)).scalar_subquery()
        self._in_batches("revocations", Revocation.id, due & (Revocation.id < newest))

    def _purge_removed_keys(self, cutoff: datetime, token_ttl: timedelta) -> None:
        # There is no removed_at: a key is removed once every token it signed has expired,
        # the longest access-token lifetime after retirement (plus the key-refresh interval
        # and a minute, runtime.key_schedule). So retired_at + that lifetime + grace is when
        # it has been removed for about the grace period. A removed key is in no JWKS and no
        # key ring, so deleting it a little early would harm nothing.
        # A withdrawn key likewise: it left the JWKS and every key ring when it was
        # withdrawn, and its feed entry ("kid") lives on its own until it expires.
        gone = SigningKey.state.in_((KeyState.REMOVED, KeyState.WITHDRAWN))
        due = gone & (SigningKey.retired_at <= cutoff - token_ttl)
        self._in_batches("signing_keys", SigningKey.kid, due)

    def _purge_outbound_messages(self, cutoff: datetime) -> None:
        # Delivered or given up: nothing will send them again, and their audit events say
        # what became of them. Pending messages stay however old (the sender gives them up).
        # Walked by id, oldest first, which is where finished messages are.
        due = or_(OutboundMessage.delivered_at <= cutoff, OutboundMessage.gave_up_at <= cutoff)
        self._in_batches("outbound_messages", OutboundMessage.id, due)

    def _purge_security_events(self, cutoff: datetime) -> None:
        # Acknowledged: the receiver has it. Never acknowledged in time: given up, as a push
        # would have been. Walked by id, oldest first.
        abandoned = self._now - self._policy.unacknowledged_events_kept
        due = or_(
            SecurityEvent.acknowledged_at <= cutoff,
            SecurityEvent.acknowledged_at.is_(None) & (SecurityEvent.created_at <= abandoned),
        )
        self._in_batches("security_events", SecurityEvent.id, due)

    def _purge_account_links(self, cutoff: datetime) -> None:
        # Expired for the grace period: a used or ended link is already useless, but the
        # per-hour cap on reset mails counts the links sent in the last hour, and an expired
        # one is older than its lifetime; a day's grace keeps both questions answerable.
        self._in_batches("account_links", AccountLink.id, AccountLink.expires_at <= cutoff)

    def _purge_passkey_challenges(self) -> None:
        # An answered challenge's row is deleted as it is accepted; one never answered is
        # refused once expired and counts nothing: no grace.
        self._in_batches(
            "passkey_challenges", PasskeyChallenge.id, PasskeyChallenge.expires_at <= self._now
        )

    def _purge_pushed_requests(self) -> None:
        # A pushed request opens nothing once answered or expired (RFC 9126 §4): no grace.
        due = or_(
            PushedAuthorizationRequest.used_at.is_not(None),
            PushedAuthorizationRequest.expires_at <= self._now,
        )
        self._in_batches("pushed_authorization_requests", PushedAuthorizationRequest.id, due)

    def _purge_seen_dpop_proofs(self) -> None:
        # A proof past its window is refused as too old whatever is remembered of it
        # (RFC 9449 §11.1): its row protects nothing any more. No grace.
        self._in_batches(
            "dpop_proofs_seen", DPoPProofSeen.replay_key, DPoPProofSeen.expires_at <= self._now
        )

    def _purge_device_authorizations(self, cutoff: datetime) -> None:
        # Expired, or answered with tokens, a day ago: a device polling with a code kept
        # that long gets expired_token or invalid_grant as it would have from the row.
        due = or_(
            DeviceAuthorization.expires_at <= cutoff,
            (DeviceAuthorization.status == "used") & (DeviceAuthorization.decided_at <= cutoff),
        )
        self._in_batches("device_authorizations", DeviceAuthorization.id, due)

    def _purge_sign_in_throttles(self) -> None:
        # Counters whose last failure is older than the longest window they count in (an hour)
        # and the longest delay they impose (minutes) count nothing any more.
        cutoff = self._now - timedelta(hours=1) - self._policy.grace
        self._in_batches(
            "sign_in_throttles", SignInThrottle.id, SignInThrottle.last_failure_at < cutoff
        )

    def _purge_audit_events(self) -> None:
        cutoff = self._now - timedelta(days=self._policy.audit_retention_days)
        self._in_batches("audit_events", AuditEvent.id, AuditEvent.occurred_at < cutoff)

    # -- the batch loop ------------------------------------------------------------------------

    def _in_batches(
        self,
        kind: str,
        key: InstrumentedAttribute[Any],
        due: ColumnElement[bool],
        before_delete: Callable[[Session, list[Any]], dict[str, int]] | None = None,
    ) -> None:
        """Delete the rows of ``key``'s table matching ``due``, ``batch_size`` per
        transaction, counting them under ``kind`` as each batch commits.

        Batches walk the primary key upwards from where the previous one stopped, so each
        starts where there is something to find instead of re-reading from the start of a
        table whose deleted rows vacuum has not cleared yet.
        """
        size = self._policy.batch_size
        last: Any = None
        while True:
            if self._should_stop():
                raise _Stop
            query = select(key).where(due).order_by(key).limit(size)
            if last is not None:
                query = query.where(key > last)
            with self._factory() as session:
                ids = list(session.scalars(query))
                if not ids:
                    return  # read only: closing the session rolls back, no commit
                counted = before_delete(session, ids) if before_delete is not None else {}
                deleted = session.execute(
                    delete(key.class_)
                    .where(key.in_(ids))
                    .execution_options(synchronize_session=False)
                )
                counted[kind] = _rowcount(deleted)
                session.commit()
            self._report.add(counted)
            if len(ids) < size:
                return
            last = ids[-1]
            if self._pause:
                time.sleep(self._pause)


def _rowcount(result: object) -> int:
    count: int = result.rowcount  # type: ignore[attr-defined]
    return count
