"""Recovery codes (services/recovery_codes.py): ten at a time, only digests at rest, each
single use and only its own user's, replaced all together, forgiving about how they are typed."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from authserver.models import RecoveryCode, User
from authserver.runtime import runtime
from authserver.services.audit import recent_events
from authserver.services.recovery_codes import (
    ALPHABET,
    canonical_code,
    generate,
    remaining_count,
    use_code,
)
from authserver.services.users import create_user
from tests.conftest import StatementLog, truncate_all
from tests.helpers import PASSWORD, make_user
from tests.unit.test_totp import race_two_sessions

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
SHAPE = re.compile(f"[{ALPHABET}]{{5}}-[{ALPHABET}]{{5}}")


@pytest.fixture
def user(app: Flask, session: Session) -> User:
    return make_user(app, session)


def test_a_set_is_ten_distinct_codes_of_fifty_bits_shown_as_two_groups_of_five(
    session: Session, user: User
) -> None:
    codes = generate(session, user, NOW)

    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert all(SHAPE.fullmatch(code) for code in codes), codes
    assert len(ALPHABET) == len(set(ALPHABET)) == 32  # 5 bits a character, 10 characters
    assert remaining_count(session, user) == 10


# Reads the raw rows with PostgreSQL's row-to-text cast and binds UUIDs as PostgreSQL does.
@pytest.mark.postgres_only
def test_only_the_digests_are_stored(session: Session, user: User) -> None:
    codes = generate(session, user, NOW)

    digests = {bytes(d) for d in session.scalars(text("SELECT code_digest FROM recovery_codes"))}
    rows = "\n".join(session.scalars(text("SELECT r::text FROM recovery_codes r")))

    expected = {hashlib.sha256(code.replace("-", "").encode()).digest() for code in codes}
    assert digests == expected
    for code in codes:
        assert code not in rows
        assert code.replace("-", "") not in rows
    (event,) = recent_events(session, event_type="recovery_codes_generated")
    assert event.user_id == user.id
    assert not any(code.replace("-", "") in str(event.details) for code in codes)


def test_each_code_works_once(session: Session, user: User) -> None:
    codes = generate(session, user, NOW)

    assert use_code(session, user, codes[3], NOW)
    assert not use_code(session, user, codes[3], LATER)

    assert remaining_count(session, user) == 9
    assert all(use_code(session, user, code, LATER) for code in codes if code != codes[3])
    assert remaining_count(session, user) == 0


def test_another_users_code_is_refused(app: Flask, session: Session, user: User) -> None:
    bob = make_user(app, session, "bob@example.com")
    generate(session, user, NOW)
    bobs = generate(session, bob, NOW)

    assert not use_code(session, user, bobs[0], NOW)

    assert remaining_count(session, bob) == 10
    assert use_code(session, bob, bobs[0], NOW)


def test_a_new_set_ends_every_code_of_the_old_one(session: Session, user: User) -> None:
    old = generate(session, user, NOW)
    assert use_code(session, user, old[0], NOW)

    new = generate(session, user, LATER)

    assert not set(old) & set(new)
    assert not any(use_code(session, user, code, LATER) for code in old)
    assert remaining_count(session, user) == 10
    assert session.scalar(select(RecoveryCode.id).where(RecoveryCode.used_at.is_not(None))) is None
    assert use_code(session, user, new[0], LATER)


@pytest.mark.parametrize(
    "typed",
    [
        lambda code: code.upper(),
        lambda code: code.replace("-", ""),
        lambda code: code.replace("-", " "),
        lambda code: f"  {code[:3]} {code[3:]}  ",
        lambda code: "-".join(code.replace("-", "")),
    ],
    ids=["upper case", "no dash", "a space", "spaces anywhere", "dashes anywhere"],
)
def test_case_spaces_and_dashes_do_not_matter(
    session: Session, user: User, typed: Callable[[str], str]
) -> None:
    (code, *_) = generate(session, user, NOW)

    assert use_code(session, user, typed(code), NOW)


def test_letters_left_out_of_the_alphabet_read_as_the_digits_they_look_like() -> None:
    assert canonical_code("OIL0a-bcdef") == "0110abcdef"
    assert canonical_code("oil0A-BCDEF") == "0110abcdef"
    # u is left out, and is nothing else.
    assert canonical_code("uuuuu-uuuuu") is None


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "abcde-fghj",  # nine
        "abcde-fghjkm",  # eleven
        "abcde-fghj\u0661",  # an Arabic-Indic digit
        "abcde-fghj\x00",
        "abcde-fghjk" * 1000,  # eleven kilobytes
    ],
    ids=["empty", "nine", "eleven", "unicode digit", "NUL", "kilobytes"],
)
def test_malformed_input_is_refused_without_asking_the_database(
    session: Session, user: User, statements: StatementLog, typed: str
) -> None:
    generate(session, user, NOW)
    statements.statements.clear()

    assert not use_code(session, user, typed, NOW)

    assert statements.statements == []


@pytest.fixture
def committed_user(engine: Engine, app: Flask) -> Iterator[User]:
    rt = runtime(app)
    with Session(engine, expire_on_commit=False) as setup:
        user = create_user(
            setup, rt.hasher, "racer@example.com", PASSWORD, password_policy=rt.password_policy
        )
        setup.commit()
    try:
        yield user
    finally:
        truncate_all(engine)


@pytest.mark.postgres_only
def test_two_requests_racing_with_one_code_let_exactly_one_in(
    engine: Engine, committed_user: User
) -> None:
    with Session(engine, expire_on_commit=False) as setup:
        user = setup.get(User, committed_user.id)
        assert user is not None
        (code, *_) = generate(setup, user, NOW)
        setup.commit()

    def attempt(session: Session) -> bool:
        racer = session.get(User, committed_user.id)
        assert racer is not None
        return use_code(session, racer, code, NOW)

    assert race_two_sessions(engine, attempt) == [True, False]
    with Session(engine) as check:
        assert remaining_count(check, committed_user) == 9
