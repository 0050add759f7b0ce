"""The second step of signing in (services/second_factors.py): an app's code or a recovery
code, guesses throttled like passwords but on a budget of their own."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from authserver.models import User
from authserver.runtime import runtime
from authserver.services import recovery_codes
from authserver.services.audit import recent_events
from authserver.services.keys import KeyCipher
from authserver.services.second_factors import (
    SecondFactorMethod,
    SecondFactorThrottled,
    check_second_factor,
)
from authserver.services.sign_in import (
    RequestContext,
    SecondFactorRequired,
    SignInFailed,
    SignInThrottled,
    sign_in_for_token,
)
from authserver.services.sign_in_throttle import ThrottlePolicy
from authserver.services.totp import time_step
from tests.conftest import StatementLog
from tests.helpers import PASSWORD, make_user
from tests.unit.test_totp import ENROLLED_AT, NOW, _row, code_at, enrolled, wrong_code

CONTEXT = RequestContext(ip_address="203.0.113.7", user_agent="Test browser", now=NOW)


@pytest.fixture
def cipher(app: Flask) -> KeyCipher:
    return runtime(app).key_cipher


@pytest.fixture
def policy(app: Flask) -> ThrottlePolicy:
    return runtime(app).throttle_policy


@pytest.fixture
def user(app: Flask, session: Session) -> User:
    return make_user(app, session)


def _check(
    session: Session,
    cipher: KeyCipher,
    user: User,
    code: str,
    policy: ThrottlePolicy,
    context: RequestContext = CONTEXT,
) -> SecondFactorMethod | None:
    return check_second_factor(session, cipher, user, code, context, policy)


def _password_sign_in(app: Flask, session: Session, password: str) -> object:
    rt = runtime(app)
    return sign_in_for_token(
        session,
        rt.hasher,
        rt.throttle_policy,
        email="ann@example.com",
        password=password,
        client_id="cli-app",
        context=CONTEXT,
    )


def test_the_apps_code_and_a_recovery_code_are_each_a_second_factor(
    session: Session, cipher: KeyCipher, user: User, policy: ThrottlePolicy
) -> None:
    secret = enrolled(session, cipher, user)
    codes = recovery_codes.generate(session, user, NOW)

    assert _check(session, cipher, user, code_at(secret, NOW), policy) is SecondFactorMethod.TOTP
    assert _check(session, cipher, user, codes[0], policy) is SecondFactorMethod.RECOVERY_CODE

    (used,) = recent_events(session, event_type="recovery_code_used")
    assert used.details == {"recovery_codes_left": 9}
    assert _check(session, cipher, user, codes[0], policy) is None


def test_a_wrong_code_is_counted_and_audited_without_the_code(
    session: Session, cipher: KeyCipher, user: User, policy: ThrottlePolicy
) -> None:
    secret = enrolled(session, cipher, user)
    wrong = wrong_code(secret, NOW)

    assert _check(session, cipher, user, wrong, policy) is None
    assert _check(session, cipher, user, "abcde-fghjk", policy) is None

    failures = recent_events(session, event_type="second_factor_failed")
    assert [f.details["method"] for f in failures] == ["totp", "recovery_code"]
    assert all(f.user_id == user.id and f.ip_address == CONTEXT.ip_address for f in failures)
    assert not any(wrong in str(f.details) or "fghjk" in str(f.details) for f in failures)


def test_past_the_free_failures_even_the_right_code_is_refused_before_it_is_checked(
    session: Session,
    cipher: KeyCipher,
    user: User,
    policy: ThrottlePolicy,
    statements: StatementLog,
) -> None:
    secret = enrolled(session, cipher, user)
    for _ in range(policy.free_failures + 1):
        assert _check(session, cipher, user, wrong_code(secret, NOW), policy) is None
    statements.statements.clear()

    with pytest.raises(SecondFactorThrottled) as throttled:
        _check(session, cipher, user, code_at(secret, NOW), policy)

    assert throttled.value.retry_after >= 1
    assert statements.reading("totp_credentials") == []
    assert _row(session, user).last_used_step == time_step(ENROLLED_AT)  # the code not spent
    (hit,) = recent_events(session, event_type="rate_limit_hit")
    assert hit.user_id == user.id
    assert hit.details["endpoint"] == "second_factor_throttle"
    # A recovery code is held back the same way.
    (code, *_) = recovery_codes.generate(session, user, NOW)
    with pytest.raises(SecondFactorThrottled):
        _check(session, cipher, user, code, policy)
    assert recovery_codes.remaining_count(session, user) == 10

    # Once the delay has passed, the right code gets in.
    later = RequestContext(
        CONTEXT.ip_address,
        CONTEXT.user_agent,
        NOW + timedelta(seconds=throttled.value.retry_after),
    )
    assert _check(session, cipher, user, code_at(secret, later.now), policy, later) is not None


def test_wrong_passwords_do_not_spend_the_code_budget_nor_wrong_codes_the_passwords(
    app: Flask, session: Session, cipher: KeyCipher, user: User, policy: ThrottlePolicy
) -> None:
    secret = enrolled(session, cipher, user)
    for _ in range(policy.free_failures + 1):
        with pytest.raises(SignInFailed):
            _password_sign_in(app, session, "a wrong password, typed with care")
    with pytest.raises(SignInThrottled):
        _password_sign_in(app, session, PASSWORD)

    assert _check(session, cipher, user, code_at(secret, NOW), policy) is SecondFactorMethod.TOTP

    bob = make_user(app, session, "bob@example.com")
    bobs_secret = enrolled(session, cipher, bob)
    for _ in range(policy.free_failures + 1):
        assert _check(session, cipher, bob, wrong_code(bobs_secret, NOW), policy) is None
    with pytest.raises(SecondFactorThrottled):
        _check(session, cipher, bob, code_at(bobs_secret, NOW), policy)
    rt = runtime(app)
    # Bob's password is still checked (not throttled): the grant gets as far as refusing an
    # account with a second factor, which it says only after the right password.
    with pytest.raises(SecondFactorRequired):
        sign_in_for_token(
            session,
            rt.hasher,
            policy,
            email="bob@example.com",
            password=PASSWORD,
            client_id="cli-app",
            context=CONTEXT,
        )


def test_one_accounts_wrong_codes_do_not_hold_back_another_account(
    app: Flask, session: Session, cipher: KeyCipher, user: User, policy: ThrottlePolicy
) -> None:
    secret = enrolled(session, cipher, user)
    bob = make_user(app, session, "bob@example.com")
    bobs_secret = enrolled(session, cipher, bob)
    for _ in range(policy.free_failures + 1):
        assert _check(session, cipher, bob, wrong_code(bobs_secret, NOW), policy) is None

    assert _check(session, cipher, user, code_at(secret, NOW), policy) is SecondFactorMethod.TOTP
