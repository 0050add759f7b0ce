"""The password policy (OWASP ASVS 5.0 V6.2): length, guessability with zxcvbn, context words,
the reason given, and the setting that turns the guessability check off."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from authserver.services import password_policy as policy_module
from authserver.services.password_policy import FALLBACK_ADVICE, PasswordPolicy
from authserver.services.passwords import PasswordRejected

EMAIL = "ann.smith@example.com"
POLICY = PasswordPolicy()


def _refusal(password: str, policy: PasswordPolicy = POLICY, email: str = EMAIL) -> str:
    with pytest.raises(PasswordRejected) as refused:
        policy.check(password, email=email)
    return refused.value.description


# -- common and easily guessed passwords ----------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "password123",
        "iloveyou2",
        "P@ssw0rd2024",  # substitutions and a year do not hide a common password
        "summer2024!",
        "qwertyuiopasdf",  # a keyboard row
        "aaaaaaaaaaaa",
        "12345678901",
    ],
)
def test_common_and_easily_guessed_passwords_are_refused(password: str) -> None:
    _refusal(password)


def test_refusal_gives_zxcvbns_reason_on_one_line() -> None:
    reason = _refusal("password123")

    assert reason.startswith("This password is too easy to guess.")
    assert "This is a very common password." in reason
    assert "\n" not in reason


@pytest.mark.parametrize("password", ["password123", "ann.smith2024!", "aaaaaaaaaaaa"])
def test_refusal_never_contains_the_password(password: str) -> None:
    reason = _refusal(password)

    assert password not in reason
    assert password.lower() not in reason.lower()


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery staple",
        "a long and unguessable passphrase",
        "Tr0ub4dor&3 violet",
        # 96 random bits, as the demo seed makes them; fixed, so every test worker collects
        # the same parameter.
        "VpKMLXoJNakPtfAW",
    ],
)
def test_strong_passwords_are_accepted(password: str) -> None:
    POLICY.check(password, email=EMAIL)


def test_no_composition_rule_a_lowercase_passphrase_is_enough() -> None:
    # ASVS 6.2.5: no digits, capitals or symbols demanded.
    POLICY.check("violet heron ferries lanterns", email=EMAIL)


# -- context words (ASVS 6.1.2, 6.2.11) ------------------------------------------------------


@pytest.mark.parametrize(
    "password", ["ann.smith2024!", "annsmith1990", "example.com2024", "Authserver!2024"]
)
def test_password_built_from_the_address_or_the_service_name_is_refused(password: str) -> None:
    reason = _refusal(password)

    assert "It contains your address or the name of this service." in reason


def test_the_address_is_what_makes_the_refusal() -> None:
    POLICY.check("annexample2024", email="bob@other.org")

    _refusal("annexample2024", email="ann@example.com")


def test_the_issuers_host_name_is_a_context_word() -> None:
    policy = PasswordPolicy.for_issuer(
        "https://login.acmecorp.example", min_length=8, max_bytes=1024, min_score=3
    )
    POLICY.check("acmecorp2024!", email=EMAIL)

    _refusal("acmecorp2024!", policy=policy)


def test_context_words_are_the_address_its_parts_and_the_site_words() -> None:
    policy = PasswordPolicy.for_issuer(
        "https://login.acmecorp.example", min_length=8, max_bytes=1024, min_score=3
    )

    assert policy.context_words("ann@example.com") == [
        "ann@example.com",
        "ann",
        "example.com",
        "example",
        "com",
        "annexample",
        "ann.example",
        "ann@example",
        "authserver",
        "login",
        "acmecorp",
    ]


def test_an_ip_address_issuer_adds_no_site_word() -> None:
    policy = PasswordPolicy.for_issuer(
        "http://127.0.0.1:8000", min_length=8, max_bytes=1024, min_score=3
    )

    assert policy.site_words == ("authserver",)


def test_zxcvbn_runs_under_the_lock_since_it_keeps_context_words_in_module_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = policy_module.zxcvbn
    held: list[bool] = []

    def watched(password: str, **options: Any) -> Any:
        held.append(policy_module._zxcvbn_lock.locked())
        return real(password, **options)

    monkeypatch.setattr(policy_module, "zxcvbn", watched)

    POLICY.check("correct horse battery staple", email=EMAIL)

    assert held == [True]


# -- length ----------------------------------------------------------------------------------


def test_too_short_password_is_refused_before_any_guessing() -> None:
    reason = _refusal("Xq7#vL2", policy=PasswordPolicy(min_length=8))

    assert reason == "password must be at least 8 characters"


def test_password_over_max_bytes_is_refused() -> None:
    # 22 characters, 66 bytes: short by characters, too long by bytes.
    reason = _refusal("€" * 22, policy=PasswordPolicy(max_bytes=64))

    assert "at most 64 bytes" in reason


def test_password_that_is_not_valid_unicode_is_refused() -> None:
    _refusal("correct horse battery staple\udc80")


def test_a_long_strong_password_is_accepted_past_zxcvbns_72_characters() -> None:
    password = "the quick violet heron ferries eleven lanterns across a sleepy harbour at dawn"
    assert len(password) > policy_module.ANALYSED_CHARACTERS

    POLICY.check(password, email=EMAIL)


def test_a_password_past_72_characters_is_judged_by_its_first_72() -> None:
    # A strong tail does not rescue a guessable head: a guess of the whole must get it right.
    password = "a" * policy_module.ANALYSED_CHARACTERS + secrets.token_urlsafe(30)

    reason = _refusal(password)

    assert 'Repeats like "aaa" are easy to guess.' in reason


def test_a_password_of_max_bytes_is_checked_without_error() -> None:
    password = secrets.token_urlsafe(1024)[:1024]

    POLICY.check(password, email=EMAIL)


# -- the setting -----------------------------------------------------------------------------


def test_min_score_zero_turns_the_guessability_check_off_but_not_the_length() -> None:
    policy = PasswordPolicy(min_score=0)

    policy.check("password123", email=EMAIL)
    assert _refusal("pass", policy=policy) == "password must be at least 8 characters"


def test_a_higher_min_score_refuses_more_with_a_plain_reason_when_zxcvbn_has_none() -> None:
    # Score 3: accepted by default; zxcvbn gives no feedback above score 2.
    POLICY.check("long password 1", email=EMAIL)

    reason = _refusal("long password 1", policy=PasswordPolicy(min_score=4))

    assert reason == f"This password is too easy to guess. {FALLBACK_ADVICE}"


def test_describe_says_what_the_policy_refuses() -> None:
    assert PasswordPolicy(min_length=10).describe().startswith("At least 10 characters.")
    assert "refused" in PasswordPolicy().describe()
    assert PasswordPolicy(min_score=0).describe() == "At least 8 characters."
