"""Signing-key lifecycle: next -> current -> retired -> removed (services/keys.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.models import KeyState, SigningKey
from authserver.services.keys import (
    KeyCipher,
    KeySchedule,
    NextKeyPending,
    add_next_signing_key,
    create_signing_key,
    maintain_signing_keys,
    published_key_rows,
)

KEK = "test-key-encryption-key-for-lifecycle-tests"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SCHEDULE = KeySchedule(publish_delay=timedelta(minutes=15), retired_for=timedelta(minutes=11))


@pytest.fixture
def cipher() -> KeyCipher:
    return KeyCipher(KEK)


def _states(session: Session) -> dict[str, KeyState]:
    session.expire_all()
    return {row.kid: row.state for row in session.scalars(select(SigningKey))}


def _maintain(session: Session, cipher: KeyCipher, at: datetime, **schedule: object) -> None:
    plan = SCHEDULE if not schedule else KeySchedule(**{**SCHEDULE.__dict__, **schedule})  # type: ignore[arg-type]
    maintain_signing_keys(session, cipher, "ES256", at, plan)


def test_maintenance_creates_the_first_key_as_current(session: Session, cipher: KeyCipher) -> None:
    _maintain(session, cipher, NOW)

    assert list(_states(session).values()) == [KeyState.CURRENT]


def test_next_key_is_published_but_does_not_sign_before_the_publish_delay(
    session: Session, cipher: KeyCipher
) -> None:
    current = create_signing_key(session, cipher, "ES256", NOW)
    upcoming = add_next_signing_key(session, cipher, "ES256", NOW)

    _maintain(session, cipher, NOW + SCHEDULE.publish_delay - timedelta(seconds=1))

    assert _states(session) == {current.kid: KeyState.CURRENT, upcoming.kid: KeyState.NEXT}
    assert upcoming.kid in {row.kid for row in published_key_rows(session)}


def test_next_key_becomes_current_once_published_for_the_delay(
    session: Session, cipher: KeyCipher
) -> None:
    current = create_signing_key(session, cipher, "ES256", NOW)
    upcoming = add_next_signing_key(session, cipher, "ES256", NOW)

    _maintain(session, cipher, NOW + SCHEDULE.publish_delay)

    assert _states(session) == {current.kid: KeyState.RETIRED, upcoming.kid: KeyState.CURRENT}


def test_retired_key_stays_published_until_its_tokens_have_expired(
    session: Session, cipher: KeyCipher
) -> None:
    old = create_signing_key(session, cipher, "ES256", NOW)
    add_next_signing_key(session, cipher, "ES256", NOW)
    promoted_at = NOW + SCHEDULE.publish_delay
    _maintain(session, cipher, promoted_at)

    _maintain(session, cipher, promoted_at + SCHEDULE.retired_for - timedelta(seconds=1))
    assert _states(session)[old.kid] == KeyState.RETIRED
    _maintain(session, cipher, promoted_at + SCHEDULE.retired_for)

    assert _states(session)[old.kid] == KeyState.REMOVED
    assert old.kid not in {row.kid for row in published_key_rows(session)}


def test_only_one_next_key_may_wait(session: Session, cipher: KeyCipher) -> None:
    create_signing_key(session, cipher, "ES256", NOW)
    waiting = add_next_signing_key(session, cipher, "ES256", NOW)

    with pytest.raises(NextKeyPending) as refused:
        add_next_signing_key(session, cipher, "ES256", NOW)

    assert str(refused.value) == waiting.kid


def test_automatic_rotation_publishes_a_next_key_when_the_current_one_is_old(
    session: Session, cipher: KeyCipher
) -> None:
    create_signing_key(session, cipher, "ES256", NOW)

    _maintain(session, cipher, NOW + timedelta(days=29), rotate_every=timedelta(days=30))
    assert KeyState.NEXT not in _states(session).values()
    _maintain(session, cipher, NOW + timedelta(days=30), rotate_every=timedelta(days=30))

    assert sorted(_states(session).values()) == sorted([KeyState.CURRENT, KeyState.NEXT])


def test_automatic_rotation_completes_the_whole_cycle(session: Session, cipher: KeyCipher) -> None:
    first = create_signing_key(session, cipher, "ES256", NOW)
    every = timedelta(days=30)
    _maintain(session, cipher, NOW + every, rotate_every=every)
    _maintain(session, cipher, NOW + every + SCHEDULE.publish_delay, rotate_every=every)
    _maintain(
        session,
        cipher,
        NOW + every + SCHEDULE.publish_delay + SCHEDULE.retired_for,
        rotate_every=every,
    )

    states = _states(session)
    assert states[first.kid] == KeyState.REMOVED
    assert list(states.values()).count(KeyState.CURRENT) == 1


def test_ring_publishes_the_next_key_but_signs_with_the_current_one(
    session: Session, cipher: KeyCipher
) -> None:
    from authserver.services.keys import KeyRing

    current = create_signing_key(session, cipher, "ES256", NOW)
    upcoming = add_next_signing_key(session, cipher, "ES256", NOW)
    ring = KeyRing(lambda: published_key_rows(session), cipher, refresh_interval=30)

    snapshot = ring.snapshot()

    assert snapshot.signing is not None
    assert snapshot.signing.kid == current.kid
    assert upcoming.kid.encode() in snapshot.jwks_body
