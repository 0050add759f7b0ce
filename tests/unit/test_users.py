"""Users: email normalisation, creation (look-alike addresses, invisible characters, the password
policy), password sign-in (with rehash), disabling, and the password change."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from authserver.db import db
from authserver.errors import NotFound, ValidationError
from authserver.models import RefreshFamily, User
from authserver.services.demo import DEMO_EMAIL, seed_demo
from authserver.services.lookalikes import email_skeleton_digest
from authserver.services.password_policy import PasswordPolicy
from authserver.services.passwords import PasswordHasher, PasswordRejected
from authserver.services.refresh_tokens import RefreshPolicy, start_family
from authserver.services.users import (
    LOOKALIKE_EXISTS,
    check_password,
    create_user,
    disable_user,
    normalize_email,
)
from tests.conftest import truncate_all
from tests.helpers import make_client

PASSWORD = "correct horse battery staple"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = PasswordPolicy()


class CountingHasher(PasswordHasher):
    """A real hasher that also counts how many verifications it ran."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.verify_calls = 0

    def verify(self, password_hash: str, password: str) -> bool:
        self.verify_calls += 1
        return super().verify(password_hash, password)


def make_hasher(**overrides: Any) -> CountingHasher:
    options: dict[str, Any] = {
        "time_cost": 2,
        "memory_cost_kib": 19456,
        "parallelism": 1,
        "max_bytes": 1024,
        "concurrency": 2,
    }
    options.update(overrides)
    return CountingHasher(**options)


@pytest.fixture(scope="module")
def hasher() -> CountingHasher:
    return make_hasher()


def _stored_user(session: Session, email: str) -> User:
    session.expire_all()
    return session.scalars(select(User).where(User.email == email)).one()


# -- email normalisation ---------------------------------------------------------------------


def test_email_is_trimmed_and_case_folded() -> None:
    assert normalize_email("  Ann.Smith@Example.COM \n") == "ann.smith@example.com"


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) for ch in text)


def test_email_is_nfkc_normalised() -> None:
    # Fullwidth letters and the "ﬁ" ligature are compatibility forms of plain ASCII.
    assert normalize_email(_fullwidth("ANN@example") + ".com") == "ann@example.com"
    assert normalize_email("ﬁona@example.com") == "fiona@example.com"


def test_email_case_folding_is_full_not_just_lowercase() -> None:
    assert normalize_email("STRAßE@example.com") == "strasse@example.com"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "ann",
        "ann@",
        "@example.com",
        "ann@localhost",
        "ann@.example.com",
        "ann@example.com.",
        "ann smith@example.com",
        "ann\x00@example.com",
        "a" * 250 + "@example.com",
    ],
)
def test_invalid_email_is_refused(raw: str) -> None:
    with pytest.raises(ValidationError, match="not a valid email address"):
        normalize_email(raw)


# -- creation --------------------------------------------------------------------------------


def test_create_user_stores_the_normalised_email_and_an_argon2id_hash(
    session: Session, hasher: CountingHasher
) -> None:
    create_user(session, hasher, " Ann@Example.com ", PASSWORD, password_policy=POLICY)

    stored = _stored_user(session, "ann@example.com")
    assert stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash
    assert stored.disabled is False


def test_create_user_refuses_an_invalid_email(session: Session, hasher: CountingHasher) -> None:
    with pytest.raises(ValidationError, match="not a valid email address"):
        create_user(session, hasher, "not-an-email", PASSWORD, password_policy=POLICY)


def test_duplicate_email_in_another_case_is_refused(
    session: Session, hasher: CountingHasher
) -> None:
    create_user(session, hasher, "ann@example.com", PASSWORD, password_policy=POLICY)

    with pytest.raises(ValidationError, match="already exists"):
        create_user(session, hasher, "ANN@Example.com", PASSWORD, password_policy=POLICY)

    assert len(session.scalars(select(User)).all()) == 1


def test_create_user_refuses_a_common_password_and_creates_nothing(
    session: Session, hasher: CountingHasher
) -> None:
    with pytest.raises(PasswordRejected, match=re.escape("This is a very common password.")):
        create_user(session, hasher, "ann@example.com", "password123", password_policy=POLICY)

    assert session.scalars(select(User)).all() == []


def test_create_user_stores_the_skeleton_digest_of_the_address(
    session: Session, hasher: CountingHasher
) -> None:
    create_user(session, hasher, "Ann@Example.com", PASSWORD, password_policy=POLICY)

    stored = _stored_user(session, "ann@example.com")
    assert stored.email_skeleton_digest == email_skeleton_digest("ann@example.com")


def test_the_demo_seed_creates_a_user_whose_password_passes_the_default_policy(
    session: Session, hasher: CountingHasher
) -> None:
    credentials = seed_demo(
        session, hasher, POLICY, {}, NOW, api_audience="https://api.example.test"
    )

    assert credentials["email"] == DEMO_EMAIL
    POLICY.check(credentials["password"], email=DEMO_EMAIL)


# -- look-alike addresses (UTS #39 skeleton) --------------------------------------------------

ALICE = "alice@example.com"


@pytest.mark.parametrize(
    "lookalike",
    [
        pytest.param("al\u0130ce@example.com", id="dotted-capital-I"),
        pytest.param("AL\u0130CE@EXAMPLE.COM", id="dotted-capital-I-in-capitals"),
        pytest.param("ali\u0307ce@example.com", id="i-with-combining-dot-above"),
        pytest.param("al\u0131ce@example.com", id="dotless-i"),
        pytest.param("\u0430lice@example.com", id="cyrillic-a"),
        pytest.param("alice@ex\u0430mple.com", id="cyrillic-a-in-the-domain"),
        pytest.param("alice@example.c\u03bfm", id="greek-omicron"),
        pytest.param("\u0430l\u0130\u0441e@ex\u0430mple.com", id="mixed-cyrillic-and-dotted-I"),
        pytest.param(
            "\uff41l\u0130\u0441e@\uff45xample.com", id="mixed-fullwidth-cyrillic-dotted-I"
        ),
        pytest.param("a1ice@example.com", id="digit-one-for-l"),
    ],
)
def test_an_address_that_looks_like_an_existing_one_is_refused(
    session: Session, hasher: CountingHasher, lookalike: str
) -> None:
    create_user(session, hasher, ALICE, PASSWORD, password_policy=POLICY)

    with pytest.raises(ValidationError) as refused:
        create_user(session, hasher, lookalike, PASSWORD, password_policy=POLICY)

    assert refused.value.description == LOOKALIKE_EXISTS
    assert len(session.scalars(select(User)).all()) == 1


def test_the_plain_address_is_refused_when_its_look_alike_came_first(
    session: Session, hasher: CountingHasher
) -> None:
    create_user(session, hasher, "al\u0130ce@example.com", PASSWORD, password_policy=POLICY)

    with pytest.raises(ValidationError, match=LOOKALIKE_EXISTS):
        create_user(session, hasher, ALICE, PASSWORD, password_policy=POLICY)


def test_digit_zero_and_letter_o_look_alike_once_the_skeleton_is_case_folded(
    session: Session, hasher: CountingHasher
) -> None:
    # UTS #39 maps 0 to the capital O; only folding the skeleton brings it to the stored o.
    create_user(session, hasher, "bob@example.com", PASSWORD, password_policy=POLICY)

    with pytest.raises(ValidationError, match=LOOKALIKE_EXISTS):
        create_user(session, hasher, "b0b@example.com", PASSWORD, password_policy=POLICY)


def test_fullwidth_letters_are_the_same_address_not_a_second_account(
    session: Session, hasher: CountingHasher
) -> None:
    create_user(session, hasher, ALICE, PASSWORD, password_policy=POLICY)

    with pytest.raises(ValidationError, match="already exists"):
        create_user(
            session, hasher, _fullwidth("ALICE") + "@example.com", PASSWORD, password_policy=POLICY
        )


def test_the_lookalike_refusal_does_not_say_which_account(
    session: Session, hasher: CountingHasher
) -> None:
    create_user(session, hasher, ALICE, PASSWORD, password_policy=POLICY)

    with pytest.raises(ValidationError) as refused:
        create_user(session, hasher, "\u0430lice@example.com", PASSWORD, password_policy=POLICY)

    assert "alice" not in refused.value.description
    assert "example" not in refused.value.description


@pytest.mark.parametrize(
    "neighbour",
    ["alicia@example.com", "alice@example.org", "alice.b@example.com", "ali@example.com"],
)
def test_addresses_that_only_resemble_each_other_are_both_accepted(
    session: Session, hasher: CountingHasher, neighbour: str
) -> None:
    create_user(session, hasher, ALICE, PASSWORD, password_policy=POLICY)

    create_user(session, hasher, neighbour, PASSWORD, password_policy=POLICY)

    assert len(session.scalars(select(User)).all()) == 2


def test_the_database_refuses_two_accounts_with_one_skeleton_digest(session: Session) -> None:
    digest = email_skeleton_digest(ALICE)
    session.add(User(email=ALICE, email_skeleton_digest=digest, password_hash="x"))
    session.flush()

    session.add(
        User(email="\u0430lice@example.com", email_skeleton_digest=digest, password_hash="x")
    )
    with pytest.raises(IntegrityError):
        session.flush()


# -- invisible characters in a new address ---------------------------------------------------


@pytest.mark.parametrize(
    "hidden",
    [
        pytest.param("\u200b", id="zero-width-space"),
        pytest.param("\u200c", id="zero-width-non-joiner"),
        pytest.param("\u200d", id="zero-width-joiner"),
        pytest.param("\u2060", id="word-joiner"),
        pytest.param("\ufeff", id="byte-order-mark"),
        pytest.param("\u00ad", id="soft-hyphen"),
        pytest.param("\u202e", id="right-to-left-override"),
        pytest.param("\ufe0f", id="variation-selector"),
        pytest.param("\U000e0041", id="tag-letter"),
        pytest.param("\ue000", id="private-use"),
        pytest.param("\u0378", id="unassigned"),
    ],
)
def test_a_new_address_with_a_character_that_does_not_show_is_refused(
    session: Session, hasher: CountingHasher, hidden: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        create_user(session, hasher, f"al{hidden}ice@example.com", PASSWORD, password_policy=POLICY)

    assert f"U+{ord(hidden):04X}" in refused.value.description
    assert "does not show" in refused.value.description
    assert session.scalars(select(User)).all() == []


def test_an_account_made_before_the_rule_with_a_hidden_character_still_signs_in(
    session: Session, hasher: CountingHasher
) -> None:
    legacy = "al\u200bice@example.com"
    session.add(User(email=legacy, password_hash=hasher.hash(PASSWORD)))
    session.flush()

    assert check_password(session, hasher, legacy, PASSWORD).user is not None
    assert check_password(session, hasher, ALICE, PASSWORD).user is None


# -- two creations at once (PostgreSQL: the second waits on the unique index) -----------------


def _blocked_on_a_lock(engine: Engine, backend_pid: int) -> bool:
    with engine.connect() as conn:
        blockers = conn.execute(
            text("SELECT cardinality(pg_blocking_pids(:pid))"), {"pid": backend_pid}
        ).scalar_one()
    return bool(blockers)


@pytest.mark.postgres_only
def test_a_lookalike_created_while_the_first_is_uncommitted_is_refused_not_a_crash(
    engine: Engine, hasher: CountingHasher
) -> None:
    first = Session(engine)
    second = Session(engine)
    outcome: list[BaseException | None] = []
    try:
        create_user(first, hasher, ALICE, PASSWORD, password_policy=POLICY)
        second_pid = second.execute(text("SELECT pg_backend_pid()")).scalar_one()

        def create_the_lookalike() -> None:
            try:
                create_user(
                    second, hasher, "\u0430lice@example.com", PASSWORD, password_policy=POLICY
                )
                outcome.append(None)
            except BaseException as exc:  # handed to the test thread
                outcome.append(exc)

        racer = threading.Thread(target=create_the_lookalike)
        racer.start()
        deadline = time.monotonic() + 30
        while not _blocked_on_a_lock(engine, second_pid):
            assert racer.is_alive(), outcome
            assert time.monotonic() < deadline, "the second creation never waited on the index"
            time.sleep(0.01)
        first.commit()
        racer.join(timeout=30)

        (refusal,) = outcome
        assert isinstance(refusal, ValidationError)
        assert refusal.description == LOOKALIKE_EXISTS
        # Only the row was undone: the rest of the transaction goes on and commits.
        second.commit()
        emails = second.scalars(select(User.email)).all()
        assert emails == [ALICE]
    finally:
        first.close()
        second.close()
        truncate_all(engine)


# -- sign-in ---------------------------------------------------------------------------------


def test_authenticate_returns_the_user_for_the_right_password(
    session: Session, hasher: CountingHasher
) -> None:
    user = create_user(session, hasher, "ann@example.com", PASSWORD, password_policy=POLICY)

    signed_in = check_password(session, hasher, "ANN@example.com", PASSWORD).user

    assert signed_in is not None
    assert signed_in.id == user.id


def test_authenticate_returns_none_for_a_wrong_password(
    session: Session, hasher: CountingHasher
) -> None:
    create_user(session, hasher, "ann@example.com", PASSWORD, password_policy=POLICY)

    assert check_password(session, hasher, "ann@example.com", "wrong password!").user is None


def test_authenticate_returns_none_for_an_unknown_email(
    session: Session, hasher: CountingHasher
) -> None:
    create_user(session, hasher, "ann@example.com", PASSWORD, password_policy=POLICY)

    assert check_password(session, hasher, "bob@example.com", PASSWORD).user is None


def test_authenticate_returns_none_for_a_disabled_user_even_with_the_right_password(
    session: Session, hasher: CountingHasher
) -> None:
    create_user(session, hasher, "ann@example.com", PASSWORD, password_policy=POLICY)
    disable_user(session, "ann@example.com", NOW)

    assert check_password(session, hasher, "ann@example.com", PASSWORD).user is None


@pytest.mark.parametrize(
    ("email", "password", "disabled"),
    [
        pytest.param("bob@example.com", PASSWORD, False, id="unknown-email"),
        pytest.param("not an email", PASSWORD, False, id="malformed-email"),
        pytest.param("ann@example.com", "wrong password!", False, id="wrong-password"),
        pytest.param("ann@example.com", PASSWORD, True, id="disabled-user"),
    ],
)
def test_every_refused_sign_in_spends_exactly_one_argon2_verification(
    session: Session, email: str, password: str, disabled: bool
) -> None:
    hasher = make_hasher()
    create_user(session, hasher, "ann@example.com", PASSWORD, password_policy=POLICY)
    if disabled:
        disable_user(session, "ann@example.com", NOW)

    assert check_password(session, hasher, email, password).user is None

    assert hasher.verify_calls == 1


def test_sign_in_with_raised_parameters_rehashes_the_stored_password(session: Session) -> None:
    old = make_hasher(time_cost=2)
    new = make_hasher(time_cost=3)
    create_user(session, old, "ann@example.com", PASSWORD, password_policy=POLICY)
    assert re.search(r"\$m=19456,t=2,p=1\$", _stored_user(session, "ann@example.com").password_hash)

    assert check_password(session, new, "ann@example.com", PASSWORD).user is not None

    stored = _stored_user(session, "ann@example.com").password_hash
    assert re.search(r"\$m=19456,t=3,p=1\$", stored)
    assert new.verify(stored, PASSWORD) is True
    assert new.needs_rehash(stored) is False


def test_sign_in_with_unchanged_parameters_keeps_the_stored_hash(
    session: Session, hasher: CountingHasher
) -> None:
    create_user(session, hasher, "ann@example.com", PASSWORD, password_policy=POLICY)
    before = _stored_user(session, "ann@example.com").password_hash

    check_password(session, hasher, "ann@example.com", PASSWORD)

    assert _stored_user(session, "ann@example.com").password_hash == before


def test_wrong_password_with_raised_parameters_does_not_rehash(session: Session) -> None:
    old = make_hasher(time_cost=2)
    new = make_hasher(time_cost=3)
    create_user(session, old, "ann@example.com", PASSWORD, password_policy=POLICY)
    before = _stored_user(session, "ann@example.com").password_hash

    check_password(session, new, "ann@example.com", "wrong password!")

    assert _stored_user(session, "ann@example.com").password_hash == before


# -- disabling -------------------------------------------------------------------------------


def test_disable_user_marks_the_user_disabled(session: Session, hasher: CountingHasher) -> None:
    create_user(session, hasher, "ann@example.com", PASSWORD, password_policy=POLICY)

    disable_user(session, " Ann@Example.com", NOW)

    assert _stored_user(session, "ann@example.com").disabled is True


def test_disable_user_revokes_every_refresh_family_of_that_user_only(
    session: Session, hasher: CountingHasher
) -> None:
    ann = create_user(session, hasher, "ann@example.com", PASSWORD, password_policy=POLICY)
    bob = create_user(session, hasher, "bob@example.com", PASSWORD, password_policy=POLICY)
    client = make_client(session).client
    policy = RefreshPolicy.for_client(client, idle_ttl=3600, absolute_ttl=7200, reuse_grace=15)
    for user in (ann, ann, bob):
        start_family(
            session, user=user, client=client, scope="read", audience="", policy=policy, now=NOW
        )

    disable_user(session, "ann@example.com", NOW)

    session.expire_all()
    families = session.scalars(select(RefreshFamily)).all()
    anns = [(f.revoked_at, f.revoked_reason) for f in families if f.user_id == ann.id]
    bobs = [(f.revoked_at, f.revoked_reason) for f in families if f.user_id == bob.id]
    assert anns == [(NOW, "user_disabled"), (NOW, "user_disabled")]
    assert bobs == [(None, None)]


def test_disable_of_an_unknown_email_raises_not_found(
    session: Session, hasher: CountingHasher
) -> None:
    create_user(session, hasher, "ann@example.com", PASSWORD, password_policy=POLICY)

    with pytest.raises(NotFound, match=re.escape("bob@example.com")):
        disable_user(session, "bob@example.com", NOW)


def test_without_a_policy_the_running_apps_rules_apply(app: Any, hasher: CountingHasher) -> None:
    """A script inside ``app.app_context()`` that names no policy (the peers' fixture does
    this) gets the server's rules, never none."""
    with app.app_context():
        with pytest.raises(PasswordRejected):
            create_user(db.session, hasher, "weak@example.com", "password1")
        user = create_user(db.session, hasher, "strong@example.com", PASSWORD)
        assert user.email == "strong@example.com"
