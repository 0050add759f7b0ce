"""Users: email normalisation, creation (with the password policy), password sign-in (with
rehash), disabling, and the password change."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.errors import NotFound, ValidationError
from authserver.models import RefreshFamily, User
from authserver.services.demo import DEMO_EMAIL, seed_demo
from authserver.services.password_policy import PasswordPolicy
from authserver.services.passwords import PasswordHasher, PasswordRejected
from authserver.services.refresh_tokens import RefreshPolicy, start_family
from authserver.services.users import (
    authenticate_user,
    change_password,
    create_user,
    disable_user,
    normalize_email,
)
from tests.helpers import make_client

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new passphrase"
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


def test_the_demo_seed_creates_a_user_whose_password_passes_the_default_policy(
    session: Session, hasher: CountingHasher
) -> None:
    credentials = seed_demo(session, hasher, POLICY, {}, NOW)

    assert credentials["email"] == DEMO_EMAIL
    POLICY.check(credentials["password"], email=DEMO_EMAIL)


# -- sign-in ---------------------------------------------------------------------------------


def test_authenticate_returns_the_user_for_the_right_password(
    session: Session, hasher: CountingHasher
) -> None:
    user = create_user(session, hasher, "ann@example.com", PASSWORD, password_policy=POLICY)

    signed_in = authenticate_user(session, hasher, "ANN@example.com", PASSWORD)

    assert signed_in is not None
    assert signed_in.id == user.id


def test_authenticate_returns_none_for_a_wrong_password(
    session: Session, hasher: CountingHasher
) -> None:
    create_user(session, hasher, "ann@example.com", PASSWORD, password_policy=POLICY)

    assert authenticate_user(session, hasher, "ann@example.com", "wrong password!") is None


def test_authenticate_returns_none_for_an_unknown_email(
    session: Session, hasher: CountingHasher
) -> None:
    create_user(session, hasher, "ann@example.com", PASSWORD, password_policy=POLICY)

    assert authenticate_user(session, hasher, "bob@example.com", PASSWORD) is None


def test_authenticate_returns_none_for_a_disabled_user_even_with_the_right_password(
    session: Session, hasher: CountingHasher
) -> None:
    create_user(session, hasher, "ann@example.com", PASSWORD, password_policy=POLICY)
    disable_user(session, "ann@example.com", NOW)

    assert authenticate_user(session, hasher, "ann@example.com", PASSWORD) is None


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

    assert authenticate_user(session, hasher, email, password) is None

    assert hasher.verify_calls == 1


def test_sign_in_with_raised_parameters_rehashes_the_stored_password(session: Session) -> None:
    old = make_hasher(time_cost=2)
    new = make_hasher(time_cost=3)
    create_user(session, old, "ann@example.com", PASSWORD, password_policy=POLICY)
    assert re.search(r"\$m=19456,t=2,p=1\$", _stored_user(session, "ann@example.com").password_hash)

    assert authenticate_user(session, new, "ann@example.com", PASSWORD) is not None

    stored = _stored_user(session, "ann@example.com").password_hash
    assert re.search(r"\$m=19456,t=3,p=1\$", stored)
    assert new.verify(stored, PASSWORD) is True
    assert new.needs_rehash(stored) is False


def test_sign_in_with_unchanged_parameters_keeps_the_stored_hash(
    session: Session, hasher: CountingHasher
) -> None:
    create_user(session, hasher, "ann@example.com", PASSWORD, password_policy=POLICY)
    before = _stored_user(session, "ann@example.com").password_hash

    authenticate_user(session, hasher, "ann@example.com", PASSWORD)

    assert _stored_user(session, "ann@example.com").password_hash == before


def test_wrong_password_with_raised_parameters_does_not_rehash(session: Session) -> None:
    old = make_hasher(time_cost=2)
    new = make_hasher(time_cost=3)
    create_user(session, old, "ann@example.com", PASSWORD, password_policy=POLICY)
    before = _stored_user(session, "ann@example.com").password_hash

    authenticate_user(session, new, "ann@example.com", "wrong password!")

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


# -- changing the password -------------------------------------------------------------------


def test_change_password_refuses_a_weak_new_password_and_keeps_the_old_one(
    session: Session, hasher: CountingHasher
) -> None:
    user = create_user(session, hasher, "ann@example.com", PASSWORD, password_policy=POLICY)

    with pytest.raises(PasswordRejected, match="too easy to guess"):
        change_password(
            session,
            hasher,
            user,
            current_password=PASSWORD,
            new_password="annexample2024",
            now=NOW,
            password_policy=POLICY,
        )

    assert authenticate_user(session, hasher, "ann@example.com", PASSWORD) is not None


def test_change_password_accepts_a_strong_new_password(
    session: Session, hasher: CountingHasher
) -> None:
    user = create_user(session, hasher, "ann@example.com", PASSWORD, password_policy=POLICY)

    change_password(
        session,
        hasher,
        user,
        current_password=PASSWORD,
        new_password=NEW_PASSWORD,
        now=NOW,
        password_policy=POLICY,
    )

    assert authenticate_user(session, hasher, "ann@example.com", NEW_PASSWORD) is not None
