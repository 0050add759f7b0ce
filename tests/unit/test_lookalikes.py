"""Look-alike addresses: the UTS #39 skeleton with authserver's three added steps, the characters
refused as invisible, and the groups of existing accounts that look alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from authserver.models import User
from authserver.services.lookalikes import (
    email_skeleton,
    email_skeleton_digest,
    invisible_characters,
    lookalike_groups,
)
from authserver.services.users import normalize_email

ALICE = "alice@example.com"
START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "lookalike",
    [
        pytest.param("AL\u0130CE@example.com", id="dotted-capital-I"),
        pytest.param("\u0430lice@example.com", id="cyrillic-a"),
        pytest.param("al\u200bice@example.com", id="zero-width-space"),
        pytest.param("al\u200dice@example.com", id="zero-width-joiner"),
        pytest.param("al\u00adice@example.com", id="soft-hyphen"),
        pytest.param("\uff21\uff2c\uff29\uff23\uff25@example.com", id="fullwidth"),
        pytest.param("\u0430l\u0130\u200b\u0441e@\uff45x\u0430mple.com", id="all-at-once"),
    ],
)
def test_lookalike_addresses_share_the_skeleton_of_the_plain_one(lookalike: str) -> None:
    assert email_skeleton(normalize_email(lookalike)) == email_skeleton(ALICE)


@pytest.mark.parametrize(
    "other", ["alicia@example.com", "alice@example.org", "bob@example.com", "al1ce@example.com"]
)
def test_different_addresses_have_different_skeletons(other: str) -> None:
    assert email_skeleton(other) != email_skeleton(ALICE)


def test_a_combining_dot_above_is_dropped_only_where_it_does_not_show() -> None:
    # On i it merges with i's own dot; on l, or on i after an acute accent, it shows.
    assert email_skeleton("i\u0307") == email_skeleton("i")
    assert email_skeleton("j\u0307") == email_skeleton("j")
    assert email_skeleton("l\u0307") != email_skeleton("l")
    assert email_skeleton("i\u0301\u0307") != email_skeleton("i\u0301")


def test_the_skeleton_is_case_folded_so_zero_meets_the_letter_o() -> None:
    assert email_skeleton("b0b@example.com") == email_skeleton("bob@example.com")


def test_the_skeleton_is_its_own_fixed_point() -> None:
    # Cherokee letter LU: its prototype M folds to m, whose prototype is rn.
    skeleton = email_skeleton("\u13b7@example.com")

    assert skeleton == email_skeleton("m@example.com")
    assert email_skeleton(skeleton) == skeleton


def test_the_digest_is_64_hex_characters_for_any_address() -> None:
    # Hangul syllables decompose into up to seven prototypes each.
    long_address = "\uaf66" * 200 + "@example.com"

    assert len(email_skeleton(long_address)) > 1000
    assert len(email_skeleton_digest(long_address)) == 64


def test_invisible_characters_are_named_by_code_point() -> None:
    assert invisible_characters("a\u200bb\u202ec\ue000d") == ["U+200B", "U+202E", "U+E000"]


@pytest.mark.parametrize(
    "visible", [ALICE, "jos\u00e9@example.com", "\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a"]
)
def test_ordinary_addresses_have_no_invisible_characters(visible: str) -> None:
    assert invisible_characters(visible) == []


# -- groups of existing accounts -------------------------------------------------------------


def _account(session: Session, email: str, minutes: int) -> User:
    """An account as an older version of authserver could have stored it: no digest."""
    user = User(email=email, password_hash="x", created_at=START + timedelta(minutes=minutes))
    session.add(user)
    session.flush()
    return user


def test_lookalike_groups_finds_accounts_that_collided_before_the_digest_existed(
    session: Session,
) -> None:
    alice = _account(session, ALICE, 0)
    cyrillic = _account(session, "\u0430lice@example.com", 1)
    hidden = _account(session, "al\u200bice@example.com", 2)
    _account(session, "bob@example.com", 3)

    groups = lookalike_groups(session)

    assert [[account.id for account in group] for group in groups] == [
        [alice.id, cyrillic.id, hidden.id]
    ]


def test_lookalike_groups_lists_each_group_oldest_first_and_groups_by_their_oldest(
    session: Session,
) -> None:
    bob_lookalike = _account(session, "b0b@example.com", 5)
    alice_lookalike = _account(session, "al\u0131ce@example.com", 4)
    bob = _account(session, "bob@example.com", 2)
    alice = _account(session, ALICE, 3)

    groups = lookalike_groups(session, batch_size=1)

    assert [[account.email for account in group] for group in groups] == [
        [bob.email, bob_lookalike.email],
        [alice.email, alice_lookalike.email],
    ]


def test_lookalike_groups_is_empty_when_no_addresses_look_alike(session: Session) -> None:
    _account(session, ALICE, 0)
    _account(session, "bob@example.com", 1)

    assert lookalike_groups(session) == []
