"""Signing in with a password (services/sign_in.py): one flow for the page and the password
grant, and the operator's trail of every attempt on an account."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from authserver.db import utcnow
from authserver.models import AuditEvent
from authserver.runtime import runtime
from authserver.services.audit import recent_events
from authserver.services.browser_sessions import SessionPolicy, is_live
from authserver.services.sign_in import (
    RequestContext,
    SignInFailed,
    SignInThrottled,
    sign_in_browser,
    sign_in_for_token,
)
from authserver.services.users import disable_user
from tests.helpers import PASSWORD, make_user

CONTEXT = RequestContext(ip_address="203.0.113.7", user_agent="Test browser", now=utcnow())
SESSIONS = SessionPolicy(idle_ttl=timedelta(minutes=30), absolute_ttl=timedelta(hours=12))
WRONG = "a wrong password, typed with care"


def _for_token(app: Flask, session: Session, email: str, password: str) -> object:
    rt = runtime(app)
    return sign_in_for_token(
        session,
        rt.hasher,
        rt.throttle_policy,
        email=email,
        password=password,
        client_id="cli-app",
        context=CONTEXT,
    )


def _failures(session: Session) -> list[AuditEvent]:
    return recent_events(session, event_type="signin_failed")


def test_a_failed_sign_in_of_an_existing_account_names_the_account_and_why(
    app: Flask, session: Session
) -> None:
    user = make_user(app, session)

    with pytest.raises(SignInFailed):
        _for_token(app, session, "ann@example.com", WRONG)

    (failure,) = _failures(session)
    assert failure.user_id == user.id
    assert failure.client_id == "cli-app"
    assert failure.ip_address == "203.0.113.7"
    assert failure.details["reason"] == "wrong_password"
    assert failure.details["method"] == "password"


def test_a_failed_sign_in_of_an_unknown_address_names_no_account(
    app: Flask, session: Session
) -> None:
    make_user(app, session)

    with pytest.raises(SignInFailed):
        _for_token(app, session, "nobody@example.com", WRONG)

    (failure,) = _failures(session)
    assert failure.user_id is None
    assert failure.details["reason"] == "unknown_account"
    assert failure.details["email"] == "nobody@example.com"


def test_a_disabled_account_fails_like_a_wrong_password_but_the_trail_says_why(
    app: Flask, session: Session
) -> None:
    user = make_user(app, session)
    disable_user(session, "ann@example.com", utcnow())

    with pytest.raises(SignInFailed) as disabled:
        _for_token(app, session, "ann@example.com", PASSWORD)
    with pytest.raises(SignInFailed) as unknown:
        _for_token(app, session, "nobody@example.com", PASSWORD)

    assert disabled.value.description == unknown.value.description
    assert [(f.user_id, f.details["reason"]) for f in _failures(session)] == [
        (user.id, "account_disabled"),
        (None, "unknown_account"),
    ]


def test_a_password_typed_into_the_email_field_never_reaches_the_trail(
    app: Flask, session: Session
) -> None:
    make_user(app, session)

    with pytest.raises(SignInFailed):
        _for_token(app, session, PASSWORD, PASSWORD)

    (failure,) = _failures(session)
    assert failure.details["email"] is None
    assert PASSWORD not in str(failure.details)


def test_a_throttled_attempt_is_refused_unhashed_and_names_the_account(
    app: Flask, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = make_user(app, session)
    rt = runtime(app)
    for _ in range(rt.throttle_policy.free_failures + 1):
        with pytest.raises(SignInFailed):
            _for_token(app, session, "ann@example.com", WRONG)
    verified: list[str] = []
    real_verify = rt.hasher.verify

    def counting_verify(password_hash: str, password: str) -> bool:
        verified.append(password_hash)
        return real_verify(password_hash, password)

    monkeypatch.setattr(rt.hasher, "verify", counting_verify)

    with pytest.raises(SignInThrottled) as throttled:
        _for_token(app, session, "ann@example.com", PASSWORD)

    assert throttled.value.retry_after >= 1
    (hit,) = recent_events(session, event_type="rate_limit_hit")
    assert hit.user_id == user.id
    assert hit.details["endpoint"] == "sign_in_throttle"
    assert verified == []


def test_the_browser_sign_in_starts_a_session_and_audits_it(app: Flask, session: Session) -> None:
    user = make_user(app, session)
    rt = runtime(app)

    started = sign_in_browser(
        session,
        rt.hasher,
        rt.throttle_policy,
        SESSIONS,
        email="ANN@example.com",
        password=PASSWORD,
        context=CONTEXT,
        trusted_device=False,
        previous=None,
        notices=rt.notices,
    )

    assert started.session.user_id == user.id
    assert is_live(started.session, CONTEXT.now)
    (succeeded,) = recent_events(session, event_type="signin_succeeded")
    assert succeeded.details == {
        "method": "password_form",
        "browser_session_id": str(started.session.id),
    }
