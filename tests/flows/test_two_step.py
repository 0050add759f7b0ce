"""Two-step sign-in (issue 15, part 2 and the pages of parts 4 and 5): an authenticator app
set up from the account page (a recent sign-in, a code to confirm), recovery codes shown
once, the code's page after the password, and what it refuses: a code used twice, a
half-done sign-in used twice or too late, guesses past the throttle, the password grant for
an account that has a second factor. Mail goes over real SMTP and is read back."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime

import jwt
import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.runtime import runtime
from authserver.services.second_factor_enrolment import reset_second_factors
from authserver.services.totp import has_confirmed_totp
from authserver.services.users import find_user_by_email
from tests.browser_helpers import (
    csrf_token_of,
    query_of,
    sign_in,
    signed_in_as,
    tokens_through_browser,
    web_client,
)
from tests.helpers import PASSWORD, Clock, make_client, make_user, password_login
from tests.smtp_servers import Mailbox
from tests.test_mail import deliver, parts

EMAIL = "ann@example.com"
SECOND_STEP = "/login/second-factor"
SETUP = "/account/two-step"


def code_at(key: str, when: datetime) -> str:
    """What the user's app shows at ``when`` (pyotp, as an authenticator app computes it)."""
    return pyotp.TOTP(key.replace(" ", "")).at(when)


def set_up_app(http: FlaskClient, clock: Clock) -> tuple[str, list[str]]:
    """Set up an authenticator app on the account page: (its key, the recovery codes)."""
    page = http.get(SETUP)
    assert page.status_code == 200, page.headers.get("Location")
    key = re.search(r'id="manual_key">([A-Z2-7 ]+)<', page.get_data(as_text=True))
    assert key, "no manual key on the setup page"
    done = http.post(
        SETUP, data={"csrf_token": csrf_token_of(page), "code": code_at(key[1], clock.now)}
    )
    assert done.status_code == 200, done.get_data(as_text=True)
    codes = re.findall(r"<li>([a-z0-9]{5}-[a-z0-9]{5})</li>", done.get_data(as_text=True))
    return key[1], codes


def password_step(http: FlaskClient, next_path: str = "/account") -> TestResponse:
    return sign_in(http, EMAIL, PASSWORD, next_path)


def code_step(http: FlaskClient, code: str, *, recovery: bool = False) -> TestResponse:
    page = http.get(SECOND_STEP, query_string={"next": "/account"})
    assert page.status_code == 200, page.headers.get("Location")
    data = {"csrf_token": csrf_token_of(page), "code": code, "next": "/account"}
    if recovery:
        data["recovery"] = "1"
    return http.post(SECOND_STEP, data=data)


@pytest.fixture
def enrolled(
    app: Flask, session: Session, client: FlaskClient, clock: Clock
) -> tuple[str, list[str]]:
    """Ann, signed in on ``client``, with an authenticator app set up."""
    make_user(app, session)
    assert sign_in(client).status_code == 303
    return set_up_app(client, clock)


def new_browser(app: Flask) -> FlaskClient:
    http = app.test_client()
    http.environ_base.update(REMOTE_ADDR="198.51.100.20", HTTP_USER_AGENT="Second browser")
    return http


# -- setting it up -------------------------------------------------------------------------


def test_setting_up_shows_the_key_and_ten_recovery_codes_once_and_tells_the_user(
    app: Flask, session: Session, mailbox: Mailbox, enrolled: tuple[str, list[str]]
) -> None:
    key, codes = enrolled

    assert len(key.replace(" ", "")) == 32  # 160 bits, base32
    assert len(codes) == 10
    assert len(set(codes)) == 10
    user = find_user_by_email(session, EMAIL)
    assert user is not None
    assert has_confirmed_totp(session, user)
    deliver(app)
    (notice,) = mailbox.received
    assert notice["Subject"] == "Two-step sign-in changed on your authserver account"
    assert "two-step sign-in is now on" in parts(notice)["text/plain"]
    body = parts(notice)["text/plain"]
    assert key.replace(" ", "") not in body
    for code in codes:
        assert code not in body


def test_a_wrong_confirmation_code_shows_the_same_key_again_and_turns_nothing_on(
    app: Flask, session: Session, client: FlaskClient, clock: Clock
) -> None:
    make_user(app, session)
    assert sign_in(client).status_code == 303
    page = client.get(SETUP)
    key = re.search(r'id="manual_key">([A-Z2-7 ]+)<', page.get_data(as_text=True))
    assert key

    wrong = client.post(SETUP, data={"csrf_token": csrf_token_of(page), "code": "000000"})

    assert wrong.status_code == 400
    assert key[1] in wrong.get_data(as_text=True)
    user = find_user_by_email(session, EMAIL)
    assert user is not None
    assert not has_confirmed_totp(session, user)
    assert password_step(new_browser(app)).headers["Location"] == "/account"


def test_setting_up_needs_a_sign_in_from_the_last_five_minutes(
    app: Flask, session: Session, client: FlaskClient, clock: Clock
) -> None:
    make_user(app, session)
    assert sign_in(client).status_code == 303
    clock.advance(minutes=5, seconds=1)

    answer = client.get(SETUP)

    assert answer.status_code == 303
    location = answer.headers["Location"]
    assert location.startswith("/login?")
    assert query_of(location)["prompt"] == "login"
    assert query_of(location)["next"] == SETUP


# -- signing in ------------------------------------------------------------------------------


def test_the_password_alone_starts_no_session_and_the_code_does(
    app: Flask, enrolled: tuple[str, list[str]], clock: Clock
) -> None:
    key, _ = enrolled
    browser = new_browser(app)

    after_password = password_step(browser)

    assert after_password.status_code == 303
    assert after_password.headers["Location"].startswith(SECOND_STEP)
    assert signed_in_as(browser) is None
    clock.advance(seconds=30)
    done = code_step(browser, code_at(key, clock.now))
    assert done.status_code == 303
    assert done.headers["Location"] == "/account"
    assert signed_in_as(browser) == EMAIL


def test_the_id_token_says_two_factors(
    app: Flask, session: Session, enrolled: tuple[str, list[str]], clock: Clock
) -> None:
    key, _ = enrolled
    browser = new_browser(app)
    assert password_step(browser).status_code == 303
    clock.advance(seconds=30)
    assert code_step(browser, code_at(key, clock.now)).status_code == 303

    tokens = tokens_through_browser(browser, web_client(session))

    import jwt

    claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims["amr"] == ["pwd", "otp", "mfa"]


def test_a_wrong_code_is_refused_and_the_right_one_still_works(
    app: Flask, enrolled: tuple[str, list[str]], clock: Clock
) -> None:
    key, _ = enrolled
    browser = new_browser(app)
    assert password_step(browser).status_code == 303
    clock.advance(seconds=30)
    right = code_at(key, clock.now)
    wrong = "000000" if right != "000000" else "111111"

    refused = code_step(browser, wrong)

    assert refused.status_code == 400
    assert "That code is not right" in refused.get_data(as_text=True)
    assert signed_in_as(browser) is None
    assert code_step(browser, right).status_code == 303


def test_a_code_works_once(app: Flask, enrolled: tuple[str, list[str]], clock: Clock) -> None:
    key, _ = enrolled
    clock.advance(seconds=30)
    code = code_at(key, clock.now)
    first, second = new_browser(app), new_browser(app)
    assert password_step(first).status_code == 303
    assert password_step(second).status_code == 303

    assert code_step(first, code).status_code == 303
    replayed = code_step(second, code)

    assert replayed.status_code == 400
    assert signed_in_as(second) is None


def test_a_half_done_sign_in_works_once(
    app: Flask, enrolled: tuple[str, list[str]], clock: Clock
) -> None:
    key, _ = enrolled
    browser = new_browser(app)
    assert password_step(browser).status_code == 303
    cookie = browser.get_cookie("authserver_second_step")
    assert cookie is not None
    clock.advance(seconds=30)
    assert code_step(browser, code_at(key, clock.now)).status_code == 303

    # Someone with a copy of the cookie and the next code gets no session.
    copy = new_browser(app)
    copy.set_cookie("authserver_second_step", cookie.value)
    clock.advance(seconds=30)
    page = copy.get(SECOND_STEP, query_string={"next": "/account"})
    posted = copy.post(
        SECOND_STEP,
        data={
            "csrf_token": csrf_token_of(copy.get("/login")),
            "code": code_at(key, clock.now),
            "next": "/account",
        },
    )

    assert page.status_code == 303
    assert "expired=1" in page.headers["Location"]
    assert posted.status_code == 303
    assert "expired=1" in posted.headers["Location"]
    assert signed_in_as(copy) is None


def test_a_half_done_sign_in_ends_after_five_minutes(
    app: Flask, enrolled: tuple[str, list[str]], clock: Clock
) -> None:
    key, _ = enrolled
    browser = new_browser(app)
    assert password_step(browser).status_code == 303
    page = browser.get(SECOND_STEP, query_string={"next": "/account"})
    clock.advance(minutes=5, seconds=1)

    late = browser.post(
        SECOND_STEP,
        data={"csrf_token": csrf_token_of(page), "code": code_at(key, clock.now), "next": "/"},
    )

    assert late.status_code == 303
    assert "expired=1" in late.headers["Location"]
    assert "took too long" in browser.get(late.headers["Location"]).get_data(as_text=True)
    assert signed_in_as(browser) is None


def test_code_guesses_are_throttled_even_the_right_code_waits(
    app: Flask, enrolled: tuple[str, list[str]], clock: Clock
) -> None:
    key, _ = enrolled
    browser = new_browser(app)
    assert password_step(browser).status_code == 303
    clock.advance(seconds=30)
    free = runtime(app).config.signin_free_failures
    right = code_at(key, clock.now)
    guesses = [f"{n:06d}" for n in range(free + 1) if f"{n:06d}" != right][: free + 1]
    assert [code_step(browser, guess).status_code for guess in guesses] == [400] * len(guesses)

    throttled = code_step(browser, right)

    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) > 0
    assert signed_in_as(browser) is None


def test_a_trusted_device_is_still_asked_for_the_code(
    app: Flask, client: FlaskClient, enrolled: tuple[str, list[str]]
) -> None:
    # ``client`` signed in before: it carries the account's device cookie.
    client.post("/logout", data={"csrf_token": csrf_token_of(client.get("/logout"))})

    again = password_step(client)

    assert again.headers["Location"].startswith(SECOND_STEP)
    assert signed_in_as(client) is None


def test_a_recovery_code_signs_in_once_and_the_user_is_told_how_many_are_left(
    app: Flask, mailbox: Mailbox, enrolled: tuple[str, list[str]]
) -> None:
    _, codes = enrolled
    browser, other = new_browser(app), new_browser(app)
    assert password_step(browser).status_code == 303

    assert code_step(browser, codes[3].upper().replace("-", " "), recovery=True).status_code == 303
    assert signed_in_as(browser) == EMAIL
    assert password_step(other).status_code == 303
    assert code_step(other, codes[3], recovery=True).status_code == 400

    deliver(app)
    used = [m for m in mailbox.received if "recovery code was used" in m["Subject"]]
    assert len(used) == 1
    assert "9 unused recovery codes left" in parts(used[0])["text/plain"]


def test_new_recovery_codes_end_the_old_ones(
    app: Flask, client: FlaskClient, enrolled: tuple[str, list[str]]
) -> None:
    _, old = enrolled
    page = client.get("/account")

    fresh = client.post(SETUP + "/recovery-codes", data={"csrf_token": csrf_token_of(page)})

    new = re.findall(r"<li>([a-z0-9]{5}-[a-z0-9]{5})</li>", fresh.get_data(as_text=True))
    assert len(new) == 10
    assert not set(new) & set(old)
    browser = new_browser(app)
    assert password_step(browser).status_code == 303
    assert code_step(browser, old[0], recovery=True).status_code == 400
    assert code_step(browser, new[0], recovery=True).status_code == 303


def test_the_password_grant_is_refused_for_an_account_with_a_second_factor(
    app: Flask, session: Session, enrolled: tuple[str, list[str]]
) -> None:
    registered = make_client(session)

    refused = password_login(app.test_client(), registered)
    wrong_password = password_login(app.test_client(), registered, password="not it")

    assert refused.status_code == 400
    assert refused.json is not None
    assert refused.json["error"] == "invalid_grant"
    assert "second factor" in refused.json["error_description"]
    # Only whoever knows the password learns that the account has a second factor.
    assert wrong_password.json is not None
    assert "second factor" not in wrong_password.json["error_description"]


# -- turning it off ----------------------------------------------------------------------------


def test_turning_it_off_needs_a_recent_sign_in_then_the_password_is_enough(
    app: Flask,
    session: Session,
    client: FlaskClient,
    mailbox: Mailbox,
    enrolled: tuple[str, list[str]],
    clock: Clock,
) -> None:
    clock.advance(minutes=6)
    token = csrf_token_of(client.get("/account"))

    too_old = client.post(SETUP + "/off", data={"csrf_token": token})

    assert too_old.status_code == 303
    assert query_of(too_old.headers["Location"])["prompt"] == "login"
    user = find_user_by_email(session, EMAIL)
    assert user is not None
    assert has_confirmed_totp(session, user)

    # Signed in again (with the code), it works.
    key, _ = enrolled
    login = client.get("/login", query_string={"prompt": "login", "next": "/account"})
    again = client.post(
        "/login",
        data={
            "email": EMAIL,
            "password": PASSWORD,
            "csrf_token": csrf_token_of(login),
            "next": "/account",
        },
    )
    assert again.headers["Location"].startswith(SECOND_STEP)
    assert code_step(client, code_at(key, clock.now)).status_code == 303
    turned_off = client.post(
        SETUP + "/off", data={"csrf_token": csrf_token_of(client.get("/account"))}
    )

    assert turned_off.status_code == 303
    assert not has_confirmed_totp(session, user)
    assert password_step(new_browser(app)).headers["Location"] == "/account"
    deliver(app)
    assert any("turned off" in parts(m)["text/plain"] for m in mailbox.received)


def test_the_operator_reset_turns_it_off_and_tells_the_user(
    app: Flask, session: Session, mailbox: Mailbox, enrolled: tuple[str, list[str]]
) -> None:
    user = find_user_by_email(session, EMAIL)
    assert user is not None

    assert reset_second_factors(session, runtime(app).notices, user, runtime(app).now())
    session.commit()

    assert not has_confirmed_totp(session, user)
    assert not reset_second_factors(session, runtime(app).notices, user, runtime(app).now())
    deliver(app)
    assert any("administrator" in parts(m)["text/plain"] for m in mailbox.received)


# -- a session without the second factor --------------------------------------------------


def test_a_session_from_before_the_app_was_set_up_must_give_the_code_to_turn_it_off(
    app: Flask, session: Session, clock: Clock
) -> None:
    make_user(app, session)
    older = new_browser(app)
    assert password_step(older).status_code == 303  # signed in with the password only
    setting_up = app.test_client()
    assert sign_in(setting_up).status_code == 303
    key, _ = set_up_app(setting_up, clock)
    token = csrf_token_of(older.get("/account"))

    asked = older.post(SETUP + "/off", data={"csrf_token": token})

    assert asked.status_code == 303
    assert asked.headers["Location"].startswith(SECOND_STEP)
    user = find_user_by_email(session, EMAIL)
    assert user is not None
    assert has_confirmed_totp(session, user)
    # The code, and only the code: then it may.
    clock.advance(seconds=30)
    page = older.get(asked.headers["Location"])
    assert 'name="password"' not in page.get_data(as_text=True)
    done = older.post(
        SECOND_STEP,
        data={
            "csrf_token": csrf_token_of(page),
            "code": code_at(key, clock.now),
            "next": query_of(asked.headers["Location"])["next"],
        },
    )
    assert done.status_code == 303
    token = csrf_token_of(older.get("/account"))
    assert older.post(SETUP + "/off", data={"csrf_token": token}).status_code == 303
    assert not has_confirmed_totp(session, user)


def test_a_trusted_device_skips_the_code_only_where_the_operator_allows_it_and_says_so(
    app: Flask, session: Session, client: FlaskClient, enrolled: tuple[str, list[str]]
) -> None:
    rt = runtime(app)
    rt.config = replace(rt.config, trusted_device_skips_second_factor=1)
    # ``client`` signed in to the account before: it carries the device cookie.
    client.post("/logout", data={"csrf_token": csrf_token_of(client.get("/logout"))})
    stranger = new_browser(app)

    trusted = password_step(client)
    untrusted = password_step(stranger)

    assert trusted.headers["Location"] == "/account"
    assert signed_in_as(client) == EMAIL
    assert untrusted.headers["Location"].startswith(SECOND_STEP)
    tokens = tokens_through_browser(client, web_client(session))
    claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims["amr"] == ["pwd"]
    assert claims["acr"] == "urn:authserver:acr:password"
    # Changing the factors from that session asks for the code.
    token = csrf_token_of(client.get("/account"))
    asked = client.post(SETUP + "/off", data={"csrf_token": token})
    assert asked.headers["Location"].startswith(SECOND_STEP)
