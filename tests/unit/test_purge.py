"""`services/purge.py`: what goes, what stays, and that it goes in short transactions.

The purge commits once per batch, so these tests use committed data (``committed_app``, whose
teardown truncates every table) and pin the clock: every row is placed relative to ``NOW``.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, event, func, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from authserver.config import Config, ConfigError
from authserver.db import db
from authserver.errors import RefreshTokenReused
from authserver.models import (
    AccountLink,
    AuditEvent,
    AuthorizationCode,
    BrowserSession,
    Client,
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
    User,
)
from authserver.runtime import runtime
from authserver.services.audit import AuditEventType, record
from authserver.services.authorization_codes import claim_code, issue_code
from authserver.services.browser_sessions import SessionPolicy, end_session, start_session
from authserver.services.keys import create_signing_key
from authserver.services.outbox import enqueue
from authserver.services.purge import PURGE_LOCK, PurgePolicy, PurgeReport, purge
from authserver.services.refresh_tokens import (
    RefreshPolicy,
    RevocationReason,
    digest_token,
    revoke_family,
    rotate_refresh_token,
    start_family,
)
from authserver.services.revocations import (
    denylist_access_token,
    record_user_signed_out_everywhere,
)
from authserver.services.sign_in_throttle import ThrottlePolicy, record_failure
from tests.helpers import HANG_SECONDS, make_client, make_user

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
GRACE = timedelta(days=1)
MINUTE = timedelta(minutes=1)
SIX_DAYS = timedelta(days=6)
ACCESS_TOKEN_TTL = 600
POLICY = PurgePolicy(access_token_ttl=ACCESS_TOKEN_TTL)
REFRESH_POLICY = RefreshPolicy(
    idle_ttl=timedelta(days=14), absolute_ttl=timedelta(days=30), reuse_grace=timedelta(seconds=15)
)


@dataclass(frozen=True)
class Owner:
    user_id: uuid.UUID
    client_id: uuid.UUID


@pytest.fixture
def factory(committed_app: Flask) -> sessionmaker[Session]:
    return db.state(committed_app).session_factory


@pytest.fixture
def owner(committed_app: Flask, factory: sessionmaker[Session]) -> Owner:
    with factory() as session:
        user = make_user(committed_app, session)
        client = make_client(session).client
        return Owner(user.id, client.id)


def run_purge(factory: sessionmaker[Session], policy: PurgePolicy = POLICY) -> PurgeReport:
    return purge(factory, now=NOW, policy=policy)


def exists(factory: sessionmaker[Session], model: type[Any], key: object) -> bool:
    with factory() as session:
        return session.get(model, key) is not None


def count(factory: sessionmaker[Session], model: type[Any]) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


# -- builders: the services, with the clock set ----------------------------------------------


@dataclass(frozen=True)
class Family:
    id: uuid.UUID
    tokens: list[str]  # oldest first; the last one is live


def make_family(
    factory: sessionmaker[Session],
    owner: Owner,
    created: datetime,
    *,
    rotations: int = 0,
    every: timedelta = MINUTE,
    policy: RefreshPolicy = REFRESH_POLICY,
    client_id: uuid.UUID | None = None,
) -> Family:
    with factory() as session:
        user = session.get_one(User, owner.user_id)
        client = session.get_one(Client, client_id or owner.client_id)
        issued = start_family(
            session,
            user=user,
            client=client,
            scope="read",
            audience="https://api.example.test",
            policy=policy,
            now=created,
        )
        tokens = [issued.token]
        for n in range(1, rotations + 1):
            issued = rotate_refresh_token(
                session,
                presented=tokens[-1],
                client=client,
                requested_scope=None,
                policy=policy,
                now=created + n * every,
            )
            tokens.append(issued.token)
        session.commit()
        return Family(issued.family_id, tokens)


def revoke(factory: sessionmaker[Session], family: Family, at: datetime) -> None:
    with factory() as session:
        revoke_family(
            session, session.get_one(RefreshFamily, family.id), RevocationReason.LOGOUT, at
        )
        session.commit()


def tokens_of(factory: sessionmaker[Session], family: Family) -> int:
    with factory() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(RefreshToken)
                .where(RefreshToken.family_id == family.id)
            )
            or 0
        )


def make_code(
    factory: sessionmaker[Session],
    owner: Owner,
    issued: datetime,
    *,
    used: datetime | None = None,
    browser_session_id: uuid.UUID | None = None,
) -> uuid.UUID:
    with factory() as session:
        code = issue_code(
            session,
            client=session.get_one(Client, owner.client_id),
            user=session.get_one(User, owner.user_id),
            browser_session=(
                session.get_one(BrowserSession, browser_session_id) if browser_session_id else None
            ),
            redirect_uri="https://app.example.test/callback",
            scope="read",
            audience="https://api.example.test",
            nonce=None,
            code_challenge=None,
            code_challenge_method=None,
            ttl=timedelta(seconds=60),
            now=issued,
        )
        row = session.scalars(
            select(AuthorizationCode).where(AuthorizationCode.code_digest == digest_token(code))
        ).one()
        if used is not None:
            claim_code(session, row, used)
        session.commit()
        return row.id


def make_browser_session(
    factory: sessionmaker[Session],
    owner: Owner,
    started: datetime,
    *,
    idle: timedelta = timedelta(minutes=30),
    absolute: timedelta = timedelta(hours=12),
    revoked: datetime | None = None,
) -> uuid.UUID:
    with factory() as session:
        started_session = start_session(
            session,
            user=session.get_one(User, owner.user_id),
            policy=SessionPolicy(idle_ttl=idle, absolute_ttl=absolute),
            now=started,
            ip_address=None,
            user_agent=None,
        )
        if revoked is not None:
            end_session(session, started_session.session, RevocationReason.LOGOUT, revoked)
        session.commit()
        return started_session.session.id


def signed_out_everywhere(factory: sessionmaker[Session], owner: Owner, at: datetime) -> int:
    with factory() as session:
        record_user_signed_out_everywhere(session, owner.user_id, at)
        session.commit()
        return session.scalars(select(func.max(Revocation.id))).one()


def denylist(factory: sessionmaker[Session], expires: datetime) -> int:
    with factory() as session:
        jti = uuid.uuid4().hex
        denylist_access_token(session, jti, expires, expires - timedelta(minutes=10))
        session.commit()
        return session.scalars(select(Revocation.id).where(Revocation.value == jti)).one()


def audit_event(factory: sessionmaker[Session], at: datetime) -> int:
    with factory() as session:
        record(session, AuditEventType.SIGNIN_FAILED, at, reason="test")
        session.commit()
        return session.scalars(select(func.max(AuditEvent.id))).one()


# -- refresh families ------------------------------------------------------------------------


def test_live_family_keeps_its_used_tokens_however_old(
    factory: sessionmaker[Session], owner: Owner
) -> None:
    # Rotated every six days: its first token was used two weeks ago, the family is live.
    family = make_family(factory, owner, NOW - timedelta(days=20), rotations=3, every=SIX_DAYS)

    report = run_purge(factory)

    assert exists(factory, RefreshFamily, family.id)
    assert tokens_of(factory, family) == 4
    assert (report.refresh_families, report.refresh_tokens) == (0, 0)


def test_after_a_purge_a_replayed_old_token_of_a_live_family_still_revokes_it(
    factory: sessionmaker[Session], owner: Owner
) -> None:
    family = make_family(factory, owner, NOW - timedelta(days=20), rotations=2, every=SIX_DAYS)
    run_purge(factory)

    with factory() as session:
        with pytest.raises(RefreshTokenReused):
            rotate_refresh_token(
                session,
                presented=family.tokens[0],
                client=session.get_one(Client, owner.client_id),
                requested_scope=None,
                policy=REFRESH_POLICY,
                now=NOW,
            )
        session.commit()
    with factory() as session:
        assert session.get_one(RefreshFamily, family.id).revoked_at == NOW


@pytest.mark.parametrize(
    ("revoked_ago", "goes"),
    [(GRACE + MINUTE, True), (GRACE - MINUTE, False)],
    ids=["past-grace", "within-grace"],
)
def test_revoked_family_goes_with_its_tokens_once_grace_has_passed(
    factory: sessionmaker[Session], owner: Owner, revoked_ago: timedelta, goes: bool
) -> None:
    family = make_family(factory, owner, NOW - timedelta(days=3), rotations=2)
    revoke(factory, family, NOW - revoked_ago)

    report = run_purge(factory)

    assert exists(factory, RefreshFamily, family.id) is not goes
    assert tokens_of(factory, family) == (0 if goes else 3)
    assert (report.refresh_families, report.refresh_tokens) == ((1, 3) if goes else (0, 0))


@pytest.mark.parametrize(
    ("expired_ago", "goes"),
    [(GRACE + MINUTE, True), (GRACE - MINUTE, False)],
    ids=["past-grace", "within-grace"],
)
def test_family_past_its_absolute_expiry_goes_once_grace_has_passed(
    factory: sessionmaker[Session], owner: Owner, expired_ago: timedelta, goes: bool
) -> None:
    created = NOW - REFRESH_POLICY.absolute_ttl - expired_ago
    # Used every day, so it never idled out: only the absolute expiry ends it.
    family = make_family(factory, owner, created, rotations=1)
    with factory() as session:
        session.execute(
            update(RefreshFamily)
            .where(RefreshFamily.id == family.id)
            .values(idle_expires_at=created + REFRESH_POLICY.absolute_ttl)
        )
        session.commit()

    run_purge(factory)

    assert exists(factory, RefreshFamily, family.id) is not goes
    assert tokens_of(factory, family) == (0 if goes else 2)


@pytest.mark.parametrize(
    ("idled_ago", "goes"),
    [(GRACE + MINUTE, True), (GRACE - MINUTE, False)],
    ids=["past-grace", "within-grace"],
)
def test_family_past_its_idle_expiry_goes_once_grace_has_passed(
    factory: sessionmaker[Session], owner: Owner, idled_ago: timedelta, goes: bool
) -> None:
    family = make_family(factory, owner, NOW - REFRESH_POLICY.idle_ttl - idled_ago)

    run_purge(factory)

    assert exists(factory, RefreshFamily, family.id) is not goes


def test_expired_family_stays_while_a_client_access_token_could_still_carry_its_sid(
    factory: sessionmaker[Session], owner: Owner
) -> None:
    with factory() as session:
        long_lived = make_client(session, name="Long tokens", access_token_ttl=2 * 86400).client
    family = make_family(
        factory, owner, NOW - REFRESH_POLICY.idle_ttl - GRACE - MINUTE, client_id=long_lived.id
    )

    run_purge(factory)

    assert exists(factory, RefreshFamily, family.id)


def test_purging_a_family_leaves_the_code_it_came_from_without_it(
    factory: sessionmaker[Session], owner: Owner
) -> None:
    family = make_family(factory, owner, NOW - timedelta(hours=1))
    code_id = make_code(factory, owner, NOW - timedelta(hours=1), used=NOW - timedelta(hours=1))
    with factory() as session:
        session.get_one(AuthorizationCode, code_id).family_id = family.id
        session.commit()
    # Revoked long ago by the clock the purge sees (the code itself is within grace).
    with factory() as session:
        session.execute(
            update(RefreshFamily)
            .where(RefreshFamily.id == family.id)
            .values(revoked_at=NOW - GRACE - MINUTE)
        )
        session.commit()

    run_purge(factory)

    assert not exists(factory, RefreshFamily, family.id)
    with factory() as session:
        assert session.get_one(AuthorizationCode, code_id).family_id is None


# -- authorization codes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("used_ago", "goes"),
    [(GRACE + MINUTE, True), (GRACE - MINUTE, False)],
    ids=["past-grace", "within-grace"],
)
def test_used_code_goes_once_grace_has_passed(
    factory: sessionmaker[Session], owner: Owner, used_ago: timedelta, goes: bool
) -> None:
    # Issued with a clock ahead of its use, so only the use makes it due.
    code_id = make_code(factory, owner, NOW - used_ago + timedelta(days=5), used=NOW - used_ago)

    report = run_purge(factory)

    assert exists(factory, AuthorizationCode, code_id) is not goes
    assert report.authorization_codes == (1 if goes else 0)


@pytest.mark.parametrize(
    ("expired_ago", "goes"),
    [(GRACE + MINUTE, True), (GRACE - MINUTE, False)],
    ids=["past-grace", "within-grace"],
)
def test_unused_code_goes_once_grace_has_passed_since_it_expired(
    factory: sessionmaker[Session], owner: Owner, expired_ago: timedelta, goes: bool
) -> None:
    code_id = make_code(factory, owner, NOW - expired_ago - timedelta(seconds=60))

    run_purge(factory)

    assert exists(factory, AuthorizationCode, code_id) is not goes


# -- browser sessions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("revoked_ago", "goes"),
    [(GRACE + MINUTE, True), (GRACE - MINUTE, False)],
    ids=["past-grace", "within-grace"],
)
def test_signed_out_browser_session_goes_once_grace_has_passed(
    factory: sessionmaker[Session], owner: Owner, revoked_ago: timedelta, goes: bool
) -> None:
    long = timedelta(days=30)
    session_id = make_browser_session(
        factory, owner, NOW - timedelta(days=2), idle=long, absolute=long, revoked=NOW - revoked_ago
    )

    report = run_purge(factory)

    assert exists(factory, BrowserSession, session_id) is not goes
    assert report.browser_sessions == (1 if goes else 0)


@pytest.mark.parametrize(
    ("idle", "absolute"),
    [(timedelta(minutes=30), timedelta(days=30)), (timedelta(hours=12), timedelta(hours=12))],
    ids=["idle", "absolute"],
)
@pytest.mark.parametrize(
    ("expired_ago", "goes"),
    [(GRACE + MINUTE, True), (GRACE - MINUTE, False)],
    ids=["past-grace", "within-grace"],
)
def test_expired_browser_session_goes_once_grace_has_passed(
    factory: sessionmaker[Session],
    owner: Owner,
    idle: timedelta,
    absolute: timedelta,
    expired_ago: timedelta,
    goes: bool,
) -> None:
    started = NOW - expired_ago - min(idle, absolute)
    session_id = make_browser_session(factory, owner, started, idle=idle, absolute=absolute)

    run_purge(factory)

    assert exists(factory, BrowserSession, session_id) is not goes


def test_purging_a_browser_session_keeps_the_live_family_issued_through_it(
    factory: sessionmaker[Session], owner: Owner
) -> None:
    session_id = make_browser_session(factory, owner, NOW - timedelta(days=3))
    family = make_family(factory, owner, NOW - timedelta(days=3), rotations=1)
    with factory() as session:
        session.get_one(RefreshFamily, family.id).browser_session_id = session_id
        session.commit()

    run_purge(factory)

    assert not exists(factory, BrowserSession, session_id)
    with factory() as session:
        assert session.get_one(RefreshFamily, family.id).browser_session_id is None
    assert tokens_of(factory, family) == 2


# -- revocations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_in", "goes"),
    [(timedelta(seconds=-1), True), (timedelta(seconds=1), False)],
    ids=["past-exp", "before-exp"],
)
def test_denylisted_jti_stays_until_its_token_expires(
    factory: sessionmaker[Session], expires_in: timedelta, goes: bool
) -> None:
    entry = denylist(factory, NOW + expires_in)
    denylist(factory, NOW + timedelta(hours=1))  # a newer entry: the newest always stays

    report = run_purge(factory)

    assert exists(factory, Revocation, entry) is not goes
    assert report.revocations == (1 if goes else 0)


@pytest.mark.parametrize(
    ("recorded_ago", "goes"),
    [(timedelta(hours=1, minutes=1), True), (timedelta(minutes=59), False)],
    ids=["older-than-ttl", "within-ttl"],
)
def test_sign_out_everywhere_entry_stays_for_the_longest_client_access_token_lifetime(
    factory: sessionmaker[Session], owner: Owner, recorded_ago: timedelta, goes: bool
) -> None:
    with factory() as session:
        make_client(session, name="Hour tokens", access_token_ttl=3600)
    entry = signed_out_everywhere(factory, owner, NOW - recorded_ago)
    denylist(factory, NOW + timedelta(hours=1))

    run_purge(factory)

    assert exists(factory, Revocation, entry) is not goes


def test_family_revocation_entry_goes_after_the_server_access_token_lifetime(
    factory: sessionmaker[Session], owner: Owner
) -> None:
    family = make_family(factory, owner, NOW - timedelta(hours=2))
    revoke(factory, family, NOW - timedelta(seconds=ACCESS_TOKEN_TTL + 1))
    denylist(factory, NOW + timedelta(hours=1))

    report = run_purge(factory)

    with factory() as session:
        assert session.scalars(select(Revocation).where(Revocation.kind == "sid")).all() == []
    assert report.revocations == 1


def test_newest_revocation_stays_even_when_dead_so_its_id_is_never_handed_out_again(
    factory: sessionmaker[Session],
) -> None:
    older = denylist(factory, NOW - timedelta(hours=2))
    newest = denylist(factory, NOW - timedelta(hours=1))

    run_purge(factory)

    assert not exists(factory, Revocation, older)
    assert exists(factory, Revocation, newest)


# -- signing keys ----------------------------------------------------------------------------


def make_key(committed_app: Flask, state: KeyState, retired: datetime | None) -> str:
    factory = db.state(committed_app).session_factory
    with factory() as session:
        key = create_signing_key(session, runtime(committed_app).key_cipher, "ES256", NOW)
        key.state = state
        key.retired_at = retired
        session.commit()
        return key.kid


@pytest.mark.parametrize("state", [KeyState.REMOVED, KeyState.WITHDRAWN])
def test_removed_or_withdrawn_key_goes_once_out_for_the_grace_period(
    committed_app: Flask, factory: sessionmaker[Session], state: KeyState
) -> None:
    # A key is removed the longest access-token lifetime after it retired; a withdrawn one
    # left the JWKS at once, and its tokens are dead by then anyway.
    removed_long_ago = NOW - timedelta(seconds=ACCESS_TOKEN_TTL) - GRACE - MINUTE
    removed_lately = NOW - timedelta(seconds=ACCESS_TOKEN_TTL) - GRACE + MINUTE
    gone = make_key(committed_app, state, removed_long_ago)
    kept = make_key(committed_app, state, removed_lately)

    report = run_purge(factory)

    assert not exists(factory, SigningKey, gone)
    assert exists(factory, SigningKey, kept)
    assert report.signing_keys == 1


@pytest.mark.parametrize("state", [KeyState.NEXT, KeyState.CURRENT, KeyState.RETIRED])
def test_published_keys_stay_however_old(
    committed_app: Flask, factory: sessionmaker[Session], state: KeyState
) -> None:
    kid = make_key(committed_app, state, NOW - timedelta(days=400))

    run_purge(factory)

    assert exists(factory, SigningKey, kid)


# -- outbox messages -------------------------------------------------------------------------


def make_message(
    factory: sessionmaker[Session],
    *,
    delivered: datetime | None = None,
    gave_up: datetime | None = None,
    written: datetime = NOW - timedelta(days=30),
) -> int:
    with factory() as session, session.begin():
        message = enqueue(session, "backchannel_logout", "https://rp.example.test/bcl", {}, written)
        message.delivered_at = delivered
        message.gave_up_at = gave_up
        session.flush()
        return message.id


def test_delivered_and_given_up_messages_go_once_grace_has_passed(
    factory: sessionmaker[Session],
) -> None:
    delivered_long_ago = make_message(factory, delivered=NOW - GRACE - MINUTE)
    given_up_long_ago = make_message(factory, gave_up=NOW - GRACE - MINUTE)
    delivered_just_now = make_message(factory, delivered=NOW - GRACE + MINUTE)
    given_up_just_now = make_message(factory, gave_up=NOW - GRACE + MINUTE)

    report = run_purge(factory)

    assert report.outbound_messages == 2
    assert not exists(factory, OutboundMessage, delivered_long_ago)
    assert not exists(factory, OutboundMessage, given_up_long_ago)
    assert exists(factory, OutboundMessage, delivered_just_now)
    assert exists(factory, OutboundMessage, given_up_just_now)


def test_a_pending_message_stays_however_old(factory: sessionmaker[Session]) -> None:
    pending = make_message(factory, written=NOW - timedelta(days=400))

    run_purge(factory)

    assert exists(factory, OutboundMessage, pending)


# -- audit events ----------------------------------------------------------------------------


def test_audit_event_at_364_days_stays_and_at_366_goes(factory: sessionmaker[Session]) -> None:
    kept = audit_event(factory, NOW - timedelta(days=364))
    gone = audit_event(factory, NOW - timedelta(days=366))

    report = run_purge(factory)

    assert exists(factory, AuditEvent, kept)
    assert not exists(factory, AuditEvent, gone)
    assert report.audit_events == 1


def test_sign_in_throttles_go_once_they_count_nothing(factory: sessionmaker[Session]) -> None:
    policy = ThrottlePolicy()
    with factory() as session, session.begin():
        record_failure(session, "old@example.com", "192.0.2.1", NOW - timedelta(days=2), policy)
        record_failure(session, "new@example.com", "192.0.2.1", NOW - MINUTE, policy)

    report = run_purge(factory)

    with factory() as session:
        left = set(session.scalars(select(SignInThrottle.account)))
    assert left == {"new@example.com"}
    assert report.sign_in_throttles == 2  # the address row and the account-wide row


def test_audit_retention_follows_the_policy(factory: sessionmaker[Session]) -> None:
    event_id = audit_event(factory, NOW - timedelta(days=31))

    run_purge(factory, replace(POLICY, audit_retention_days=30))

    assert not exists(factory, AuditEvent, event_id)


def test_audit_retention_days_is_read_from_the_environment() -> None:
    assert Config.from_env({"AUTHSERVER_AUDIT_RETENTION_DAYS": "90"}).audit_retention_days == 90
    assert Config.from_env({}).audit_retention_days == 365


def test_audit_retention_of_zero_days_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"AUTHSERVER_AUDIT_RETENTION_DAYS": "0"})

    assert caught.value.problems == ["AUTHSERVER_AUDIT_RETENTION_DAYS must be at least 1"]


# -- batches ---------------------------------------------------------------------------------


@pytest.fixture
def commits(committed_app: Flask) -> Iterator[list[int]]:
    """One entry per transaction committed on the app's engine while the test runs."""
    engine: Engine = db.state(committed_app).engine
    seen: list[int] = []

    def on_commit(_connection: object) -> None:
        seen.append(1)

    event.listen(engine, "commit", on_commit)
    yield seen
    event.remove(engine, "commit", on_commit)


def test_five_due_rows_with_batch_size_two_go_in_three_transactions(
    factory: sessionmaker[Session], commits: list[int]
) -> None:
    for days in range(400, 405):
        audit_event(factory, NOW - timedelta(days=days))
    commits.clear()

    report = run_purge(factory, replace(POLICY, batch_size=2))

    assert report.audit_events == 5
    assert count(factory, AuditEvent) == 0
    assert len(commits) == 3


def test_a_stop_request_ends_the_run_between_batches(factory: sessionmaker[Session]) -> None:
    for days in range(400, 405):
        audit_event(factory, NOW - timedelta(days=days))
    asked = 0

    def stop_after_two_batches() -> bool:
        nonlocal asked
        asked += 1
        # Asked once before each kind's first batch and before every further batch; codes,
        # families, sessions, revocations, keys, outbox messages, security events, account
        # links, passkey challenges, pushed requests, device authorizations and DPoP proofs
        # find nothing, then two audit batches run.
        return asked > 14

    report = purge(
        factory, now=NOW, policy=replace(POLICY, batch_size=2), should_stop=stop_after_two_batches
    )

    assert report.stopped
    assert report.audit_events == 4
    assert count(factory, AuditEvent) == 1


# -- security events awaiting a poll ----------------------------------------------------------


def make_security_event(
    factory: sessionmaker[Session],
    owner: Owner,
    *,
    written: datetime,
    acknowledged: datetime | None = None,
) -> int:
    with factory() as session, session.begin():
        event = SecurityEvent(
            jti=secrets.token_urlsafe(32),
            receiver_pk=owner.client_id,
            claims={"sub_id": {}, "events": {}},
            created_at=written,
            acknowledged_at=acknowledged,
        )
        session.add(event)
        session.flush()
        return event.id


def test_security_events_go_once_acknowledged_or_never_polled_for(
    factory: sessionmaker[Session], owner: Owner
) -> None:
    kept_for = timedelta(hours=24)
    acknowledged_long_ago = make_security_event(
        factory, owner, written=NOW - SIX_DAYS, acknowledged=NOW - GRACE - MINUTE
    )
    acknowledged_lately = make_security_event(
        factory, owner, written=NOW - SIX_DAYS, acknowledged=NOW - GRACE + MINUTE
    )
    abandoned = make_security_event(factory, owner, written=NOW - kept_for - MINUTE)
    waiting = make_security_event(factory, owner, written=NOW - kept_for + MINUTE)

    report = run_purge(
        factory, PurgePolicy(access_token_ttl=ACCESS_TOKEN_TTL, unacknowledged_events_kept=kept_for)
    )

    assert report.security_events == 2
    assert not exists(factory, SecurityEvent, acknowledged_long_ago)
    assert not exists(factory, SecurityEvent, abandoned)
    assert exists(factory, SecurityEvent, acknowledged_lately)
    assert exists(factory, SecurityEvent, waiting)


# -- account links -----------------------------------------------------------------------------


def make_link(factory: sessionmaker[Session], owner: Owner, *, expires: datetime) -> uuid.UUID:
    with factory() as session, session.begin():
        link = AccountLink(
            purpose="password_reset",
            user_id=owner.user_id,
            token_digest=hashlib.sha256(secrets.token_bytes(32)).digest(),
            created_at=expires - timedelta(minutes=30),
            expires_at=expires,
        )
        session.add(link)
        session.flush()
        return link.id


def test_account_links_go_a_grace_period_after_they_expire(
    factory: sessionmaker[Session], owner: Owner
) -> None:
    long_expired = make_link(factory, owner, expires=NOW - GRACE - MINUTE)
    lately_expired = make_link(factory, owner, expires=NOW - GRACE + MINUTE)
    live = make_link(factory, owner, expires=NOW + MINUTE)

    report = run_purge(factory)

    assert report.account_links == 1
    assert not exists(factory, AccountLink, long_expired)
    assert exists(factory, AccountLink, lately_expired)
    assert exists(factory, AccountLink, live)


def test_sign_up_and_invitation_links_without_a_user_go_too(
    factory: sessionmaker[Session],
) -> None:
    with factory() as session, session.begin():
        links = [
            AccountLink(
                purpose=purpose,
                user_id=None,
                email="new.person@example.com",
                token_digest=hashlib.sha256(secrets.token_bytes(32)).digest(),
                created_at=expires - timedelta(hours=1),
                expires_at=expires,
            )
            for purpose, expires in (
                ("signup", NOW - GRACE - MINUTE),
                ("invitation", NOW - GRACE - MINUTE),
                ("invitation", NOW + MINUTE),
            )
        ]
        session.add_all(links)
        session.flush()
        expired_signup, expired_invitation, live = (link.id for link in links)

    report = run_purge(factory)

    assert report.account_links == 2
    assert not exists(factory, AccountLink, expired_signup)
    assert not exists(factory, AccountLink, expired_invitation)
    assert exists(factory, AccountLink, live)


def test_passkey_challenges_go_once_expired(factory: sessionmaker[Session], owner: Owner) -> None:
    with factory() as session, session.begin():
        challenges = [
            PasskeyChallenge(
                challenge_digest=hashlib.sha256(secrets.token_bytes(32)).digest(),
                purpose=purpose,
                user_id=user_id,
                created_at=expires - timedelta(minutes=5),
                expires_at=expires,
            )
            for purpose, user_id, expires in (
                ("sign_in", None, NOW - MINUTE),
                ("registration", owner.user_id, NOW),
                ("sign_in", None, NOW + MINUTE),
            )
        ]
        session.add_all(challenges)
        session.flush()
        expired, just_expired, live = (challenge.id for challenge in challenges)

    report = run_purge(factory)

    assert report.passkey_challenges == 2
    assert not exists(factory, PasskeyChallenge, expired)
    assert not exists(factory, PasskeyChallenge, just_expired)
    assert exists(factory, PasskeyChallenge, live)


def test_pushed_requests_go_once_answered_or_expired(
    factory: sessionmaker[Session], owner: Owner
) -> None:
    with factory() as session, session.begin():
        pushed = [
            PushedAuthorizationRequest(
                request_uri_digest=hashlib.sha256(secrets.token_bytes(32)).digest(),
                client_pk=owner.client_id,
                parameters=[["response_type", "code"]],
                created_at=expires - timedelta(minutes=10),
                expires_at=expires,
                used_at=used,
            )
            for expires, used in (
                (NOW - MINUTE, None),
                (NOW + MINUTE, NOW - MINUTE),
                (NOW + MINUTE, None),
            )
        ]
        session.add_all(pushed)
        session.flush()
        expired, answered, live = (row.id for row in pushed)

    report = run_purge(factory)

    assert report.pushed_authorization_requests == 2
    assert not exists(factory, PushedAuthorizationRequest, expired)
    assert not exists(factory, PushedAuthorizationRequest, answered)
    assert exists(factory, PushedAuthorizationRequest, live)


def test_seen_dpop_proofs_go_once_they_could_no_longer_be_accepted(
    factory: sessionmaker[Session],
) -> None:
    with factory() as session, session.begin():
        session.add_all(
            [
                DPoPProofSeen(replay_key="expired", expires_at=NOW - MINUTE),
                DPoPProofSeen(replay_key="expires-now", expires_at=NOW),
                DPoPProofSeen(replay_key="live", expires_at=NOW + MINUTE),
            ]
        )

    report = run_purge(factory)

    assert report.dpop_proofs_seen == 2
    with factory() as session:
        left = session.scalars(select(DPoPProofSeen.replay_key)).all()
    assert left == ["live"]


def test_device_authorizations_go_a_day_after_they_expire_or_are_used(
    factory: sessionmaker[Session], owner: Owner
) -> None:
    with factory() as session, session.begin():
        rows = [
            DeviceAuthorization(
                device_code_digest=hashlib.sha256(secrets.token_bytes(32)).digest(),
                user_code_digest=hashlib.sha256(secrets.token_bytes(32)).digest(),
                client_pk=owner.client_id,
                scope="openid",
                audience="https://api.example.test",
                status=status,
                interval=5,
                created_at=expires - timedelta(minutes=10),
                expires_at=expires,
                decided_at=decided,
            )
            for status, expires, decided in (
                ("pending", NOW - GRACE - MINUTE, None),
                ("used", NOW + MINUTE, NOW - GRACE - MINUTE),
                ("used", NOW + MINUTE, NOW - MINUTE),
                ("pending", NOW - MINUTE, None),
            )
        ]
        session.add_all(rows)
        session.flush()
        expired, used_long_ago, used_now, just_expired = (row.id for row in rows)

    report = run_purge(factory)

    assert report.device_authorizations == 2
    assert not exists(factory, DeviceAuthorization, expired)
    assert not exists(factory, DeviceAuthorization, used_long_ago)
    assert exists(factory, DeviceAuthorization, used_now)
    assert exists(factory, DeviceAuthorization, just_expired)


def test_report_total_adds_every_kind(factory: sessionmaker[Session], owner: Owner) -> None:
    family = make_family(factory, owner, NOW - timedelta(days=3), rotations=1)
    revoke(factory, family, NOW - GRACE - MINUTE)  # also a sid entry and an audit event
    audit_event(factory, NOW - timedelta(days=400))

    report = run_purge(factory)

    assert report.counts() == {
        "authorization_codes": 0,
        "refresh_families": 1,
        "refresh_tokens": 2,
        "browser_sessions": 0,
        "revocations": 0,  # the sid entry is the newest revocation
        "signing_keys": 0,
        "outbound_messages": 0,
        "security_events": 0,
        "account_links": 0,
        "passkey_challenges": 0,
        "pushed_authorization_requests": 0,
        "device_authorizations": 0,
        "dpop_proofs_seen": 0,
        "audit_events": 1,
        "sign_in_throttles": 0,
    }
    assert report.total == 4


# -- two purges at once, and purging while serving (PostgreSQL) ------------------------------


@pytest.mark.postgres_only
def test_second_purge_returns_at_once_while_another_holds_the_lock(
    engine: Engine, factory: sessionmaker[Session]
) -> None:
    event_id = audit_event(factory, NOW - timedelta(days=400))
    outcome: dict[str, PurgeReport] = {}
    second = threading.Thread(target=lambda: outcome.update(report=run_purge(factory)))
    with engine.connect() as other:
        assert other.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": PURGE_LOCK}).scalar()
        try:
            second.start()
            # It must return while the lock is still held: one that waited for the lock would
            # still be waiting here. The bound only ends a hang.
            second.join(timeout=HANG_SECONDS)
            returned_while_locked = not second.is_alive()
        finally:
            other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PURGE_LOCK})
    second.join()

    assert returned_while_locked
    assert outcome["report"].another_purge_running
    assert outcome["report"].total == 0
    assert exists(factory, AuditEvent, event_id)


@pytest.mark.postgres_only
def test_purge_releases_its_lock_even_when_it_fails(
    engine: Engine, factory: sessionmaker[Session]
) -> None:
    def fail() -> bool:
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError):
        purge(factory, now=NOW, policy=POLICY, should_stop=fail)

    # Asked from another pool: advisory locks are re-entrant within one server session, so
    # a connection the purge's pool hands out again would get the lock even if it leaked.
    with engine.connect() as other:
        free = other.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": PURGE_LOCK}).scalar()
        other.execute(text("SELECT pg_advisory_unlock_all()"))
    assert free


def _bulk_insert_dead_families(factory: sessionmaker[Session], owner: Owner, n: int) -> None:
    expired = NOW - timedelta(days=10)
    families = [uuid.uuid4() for _ in range(n)]
    with factory() as session:
        session.execute(
            insert(RefreshFamily),
            [
                {
                    "id": family_id,
                    "user_id": owner.user_id,
                    "client_pk": owner.client_id,
                    "scope": "read",
                    "audience": "https://api.example.test",
                    "created_at": expired - timedelta(days=30),
                    "last_used_at": expired - timedelta(days=1),
                    "expires_at": expired,
                    "idle_expires_at": expired,
                }
                for family_id in families
            ],
        )
        session.execute(
            insert(RefreshToken),
            [
                {
                    "id": uuid.uuid4(),
                    "family_id": family_id,
                    "token_digest": hashlib.sha256(family_id.bytes).digest(),
                    "generation": 0,
                    "issued_at": expired - timedelta(days=1),
                    "expires_at": expired,
                }
                for family_id in families
            ],
        )
        session.commit()


def test_purging_20000_families_never_holds_up_a_refresh_for_long(
    factory: sessionmaker[Session], owner: Owner
) -> None:
    _bulk_insert_dead_families(factory, owner, 20_000)
    live = make_family(factory, owner, NOW - MINUTE)
    outcome: dict[str, Any] = {}
    # How many refreshes had been answered when each batch began.
    answered_at_batch: list[int] = []

    def run() -> None:
        started = time.perf_counter()
        outcome["report"] = purge(
            factory,
            now=NOW,
            policy=replace(POLICY, batch_size=1000),
            should_stop=lambda: bool(answered_at_batch.append(len(waits))),
        )
        outcome["seconds"] = time.perf_counter() - started

    purger = threading.Thread(target=run)
    waits: list[float] = []
    token = live.tokens[-1]
    purger.start()
    while purger.is_alive():
        started = time.perf_counter()
        with factory() as session:
            token = rotate_refresh_token(
                session,
                presented=token,
                client=session.get_one(Client, owner.client_id),
                requested_scope=None,
                policy=REFRESH_POLICY,
                now=NOW + timedelta(milliseconds=len(waits)),
            ).token
            session.commit()
        waits.append(time.perf_counter() - started)
        time.sleep(0.02)  # a busy client, not a loop that never lets go of SQLite's lock
    purger.join()

    print(  # the figure the README quotes; shown with pytest -s
        f"\npurged 20000 families in {outcome['seconds']:.2f}s; {len(waits)} refreshes "
        f"meanwhile, longest {max(waits) * 1000:.0f} ms, median "
        f"{sorted(waits)[len(waits) // 2] * 1000:.0f} ms"
    )
    # Refreshes were answered between batches, not held until the purge was done: a purge
    # that kept its lock (or the database) from the first batch to the last would let none
    # through in between. How long each refresh took is reported above, never judged.
    gaps_with_answers = sum(
        1 for earlier, later in itertools.pairwise(answered_at_batch) if later > earlier
    )
    assert outcome["report"].refresh_families == 20_000
    assert len(answered_at_batch) >= 20
    assert gaps_with_answers >= 2, answered_at_batch
    assert tokens_of(factory, live) == len(waits) + 1
