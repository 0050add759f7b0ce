"""argon2id password hashing: parameters, the byte limit it shares with verify, verification and
rehash checks. What a new password must be is tests/unit/test_password_policy.py."""

from __future__ import annotations

import re
from typing import Any

import pytest

from authserver.services.passwords import PasswordHasher, PasswordRejected

PASSWORD = "correct horse battery staple"
PHC = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$")


def make_hasher(**overrides: Any) -> PasswordHasher:
    options: dict[str, Any] = {
        "time_cost": 2,
        "memory_cost_kib": 19456,
        "parallelism": 1,
        "max_bytes": 64,
        "concurrency": 2,
    }
    options.update(overrides)
    return PasswordHasher(**options)


def _parameters(password_hash: str) -> tuple[int, int, int]:
    match = PHC.match(password_hash)
    assert match is not None, password_hash
    m, t, p = match.groups()
    return int(m), int(t), int(p)


def test_hash_is_argon2id_with_the_configured_parameters() -> None:
    hasher = make_hasher(time_cost=3, memory_cost_kib=20480, parallelism=2)

    password_hash = hasher.hash(PASSWORD)

    assert _parameters(password_hash) == (20480, 3, 2)


def test_hashing_the_same_password_twice_uses_different_salts() -> None:
    hasher = make_hasher()

    assert hasher.hash(PASSWORD) != hasher.hash(PASSWORD)


def test_verify_accepts_the_right_password() -> None:
    hasher = make_hasher()

    assert hasher.verify(hasher.hash(PASSWORD), PASSWORD) is True


def test_verify_refuses_a_wrong_password() -> None:
    hasher = make_hasher()

    assert hasher.verify(hasher.hash(PASSWORD), PASSWORD + "!") is False


def test_verify_refuses_a_malformed_hash_instead_of_raising() -> None:
    hasher = make_hasher()

    assert hasher.verify("not-an-argon2-hash", PASSWORD) is False


def test_password_over_max_bytes_is_refused_by_hash() -> None:
    hasher = make_hasher(max_bytes=64)

    with pytest.raises(PasswordRejected, match="at most 64 bytes"):
        hasher.hash("p" * 65)


def test_max_bytes_counts_utf8_bytes_not_characters() -> None:
    hasher = make_hasher(max_bytes=64)
    # 22 characters, 66 bytes: short by characters, too long by bytes.
    password = "€" * 22

    with pytest.raises(PasswordRejected, match="at most 64 bytes"):
        hasher.hash(password)


def test_password_of_exactly_max_bytes_is_accepted() -> None:
    hasher = make_hasher(max_bytes=64)
    password = "€" * 21 + "x"  # 64 bytes

    assert hasher.verify(hasher.hash(password), password) is True


def test_verify_refuses_an_over_long_password_without_hashing_it() -> None:
    hasher = make_hasher(max_bytes=64)
    password = "€" * 22
    # rehash skips the policy, so this hash really matches: only a verify that never reaches
    # argon2 can answer False.
    matching_hash = hasher.rehash(password)

    assert hasher.verify(matching_hash, password) is False


def test_password_that_is_not_valid_unicode_is_refused_by_hash() -> None:
    hasher = make_hasher()

    with pytest.raises(PasswordRejected):
        hasher.hash("password\udc80")


def test_verify_refuses_a_password_that_is_not_valid_unicode() -> None:
    hasher = make_hasher()

    assert hasher.verify(hasher.hash(PASSWORD), "password\udc80") is False


def test_needs_rehash_when_time_cost_changed() -> None:
    old = make_hasher(time_cost=2)
    new = make_hasher(time_cost=3)

    password_hash = old.hash(PASSWORD)

    assert new.needs_rehash(password_hash) is True
    assert old.needs_rehash(password_hash) is False


def test_a_hash_made_with_old_parameters_still_verifies() -> None:
    old = make_hasher(time_cost=2)
    new = make_hasher(time_cost=3)

    assert new.verify(old.hash(PASSWORD), PASSWORD) is True
