"""Browser sessions: sign-in, the session cookie, CSRF and cross-site refusal, page headers,
idle and absolute timeouts, sign-out, fixation, and the ``next`` redirect.

Cookies follow RFC 6265bis (``__Host-`` prefix, §4.1.3.2); login CSRF and fixation follow the
OWASP session management guidance the issue quotes.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import replace
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver import create_app
from authserver.config import Config
from authserver.db import db, utcnow
from authserver.models import BrowserSession, RefreshFamily
from authserver.runtime import runtime
from authserver.services.refresh_tokens import digest_token
from tests.browser_helpers import (
    browser_session_rows,
    csrf_token_of,
    refused_as_csrf,
    sign_in,
    signed_in_as,
    tokens_through_browser,
    web_client,
)
from tests.helpers import (
    PASSWORD,
    Clock,
    make_client,
    make_user,
    password_login,
    refresh,
)

DEV_COOKIE = "authserver_session"
HTTPS_ISSUER = "https://login.example.test"
HTTPS_HOST = "login.example.test"
HTTPS_COOKIE = "__Host-authserver"


def _login_form_token(http: FlaskClient) -> str:
    return csrf_token_of(http.get("/login", query_string={"prompt": "login"}))


def _post_login(
    http: FlaskClient,
    csrf_token: str | None,
    headers: dict[str, str] | None = None,
    next_path: str = "/account",
) -> TestResponse:
    form = {"email": "ann@example.com", "password": PASSWORD, "next": next_path}
    if csrf_token is not None:
        form["csrf_token"] = csrf_token
    return http.post("/login", data=form, headers=headers or {})


def _post_logout(
    http: FlaskClient, csrf_token: str | None, headers: dict[str, str] | None = None
) -> TestResponse:
    form = {"csrf_token": csrf_token} if csrf_token is not None else {}
    return http.post("/logout", data=form, headers=headers or {})


def _account_token(http: FlaskClient) -> str:
    return csrf_token_of(http.get("/account"))


def _row_of(session: Session, cookie_value: str) -> BrowserSession | None:
    session.expire_all()
    return session.scalars(
        select(BrowserSession).where(BrowserSession.token_digest == digest_token(cookie_value))
    ).one_or_none()


def _cookie_value(http: FlaskClient) -> str:
    cookie = http.get_cookie(DEV_COOKIE)
    assert cookie is not None, "browser holds no session cookie"
    return cookie.value


def _set_cookie(response: TestResponse, name: str) -> tuple[str, dict[str, str]]:
    """(value, attributes) of the Set-Cookie header for ``name``; flags map to ""."""
    for header in response.headers.getlist("Set-Cookie"):
        first, *attributes = (part.strip() for part in header.split(";"))
        cookie_name, _, value = first.partition("=")
        if cookie_name == name:
            parsed: dict[str, str] = {}
            for attribute in attributes:
                key, _, attribute_value = attribute.partition("=")
                parsed[key.lower()] = attribute_value
            return value, parsed
    raise AssertionError(f"no Set-Cookie for {name}: {response.headers.getlist('Set-Cookie')}")


def _refused_as_cross_site(response: TestResponse) -> bool:
    return (
        response.status_code == 403
        and response.mimetype == "text/html"
        and "sent from another site" in response.get_data(as_text=True)
    )


# -- sign-in ---------------------------------------------------------------------------------


def test_sign_in_answers_303_to_next_and_the_account_page_greets_the_user(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)

    response = sign_in(client)

    assert response.status_code == 303
    assert response.headers["Location"] == "/account"
    assert signed_in_as(client) == "ann@example.com"


def test_wrong_password_shows_the_form_again_and_starts_no_session(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)

    response = sign_in(client, password="not the password")

    assert response.status_code == 401
    assert "Email or password is incorrect." in response.get_data(as_text=True)
    assert client.get_cookie(DEV_COOKIE) is None
    assert browser_session_rows(session) == []


def test_session_row_records_user_times_address_and_user_agent(
    app: Flask, session: Session, client: FlaskClient, clock: Clock
) -> None:
    user = make_user(app, session)
    client.environ_base.update(REMOTE_ADDR="203.0.113.7", HTTP_USER_AGENT="Firefox/133.0")
    signed_in_at = clock.now

    sign_in(client)

    row = _row_of(session, _cookie_value(client))
    assert row is not None
    assert row.user_id == user.id
    assert row.created_at == row.last_seen_at == signed_in_at
    assert row.idle_expires_at == signed_in_at + timedelta(minutes=30)
    assert row.expires_at == signed_in_at + timedelta(hours=12)
    assert row.ip_address == "203.0.113.7"
    assert row.user_agent == "Firefox/133.0"
    assert row.revoked_at is None


def test_session_id_is_256_random_bits_and_only_its_digest_is_stored(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    sign_in(client)
    value = _cookie_value(client)

    assert len(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))) == 32
    (row,) = browser_session_rows(session)
    assert row.token_digest == digest_token(value)
    stored = " ".join(repr(getattr(row, column.key)) for column in BrowserSession.__table__.c)
    assert value not in stored
    assert value.encode() not in row.token_digest


# -- cookie attributes ------------------------------------------------------------------------


def test_development_cookie_is_httponly_lax_path_root_host_only_and_not_secure(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)

    response = sign_in(client)

    value, attributes = _set_cookie(response, DEV_COOKIE)
    assert value
    assert "httponly" in attributes
    assert attributes["samesite"] == "Lax"
    assert attributes["path"] == "/"
    assert "domain" not in attributes
    # Plain-http development on 127.0.0.1: a Secure cookie would never come back.
    assert "secure" not in attributes
    assert attributes["max-age"] == str(12 * 3600)


class TestOnAnHttpsIssuer:
    """The same server behind https: the cookie takes the __Host- prefix and Secure."""

    @pytest.fixture
    def config(self, config: Config) -> Config:
        return replace(config, issuer=HTTPS_ISSUER)

    @pytest.fixture
    def client(self, app: Flask) -> FlaskClient:
        # The test client builds its base URL (https://login.example.test) from these.
        app.config.update(SERVER_NAME=HTTPS_HOST, PREFERRED_URL_SCHEME="https")
        return app.test_client()

    def test_session_cookie_is_host_prefixed_secure_httponly_lax_path_root_without_domain(
        self, app: Flask, session: Session, client: FlaskClient
    ) -> None:
        make_user(app, session)

        response = sign_in(client)

        assert response.status_code == 303
        value, attributes = _set_cookie(response, HTTPS_COOKIE)
        assert value
        assert "secure" in attributes
        assert "httponly" in attributes
        assert attributes["samesite"] == "Lax"
        assert attributes["path"] == "/"
        assert "domain" not in attributes
        assert not any(
            c.startswith(f"{DEV_COOKIE}=") for c in response.headers.getlist("Set-Cookie")
        )

    def test_csrf_cookie_is_host_prefixed_and_secure_too(self, client: FlaskClient) -> None:
        response = client.get("/login")

        value, attributes = _set_cookie(response, "__Host-authserver-csrf")
        assert value
        assert "secure" in attributes
        assert "httponly" in attributes
        assert attributes["path"] == "/"
        assert "domain" not in attributes

    def test_signed_in_browser_is_greeted_on_the_account_page(
        self, app: Flask, session: Session, client: FlaskClient
    ) -> None:
        make_user(app, session)

        sign_in(client)

        assert signed_in_as(client) == "ann@example.com"

    def test_sign_out_expires_the_host_prefixed_cookie(
        self, app: Flask, session: Session, client: FlaskClient
    ) -> None:
        make_user(app, session)
        sign_in(client)

        response = _post_logout(client, _account_token(client))

        value, attributes = _set_cookie(response, HTTPS_COOKIE)
        assert value == ""
        assert attributes["max-age"] == "0"
        # A __Host- cookie is only replaced by one with the same Secure and Path=/.
        assert "secure" in attributes
        assert attributes["path"] == "/"
        assert client.get_cookie(HTTPS_COOKIE, domain=HTTPS_HOST) is None
        assert signed_in_as(client) is None

    def test_form_from_the_issuer_origin_is_accepted(
        self, app: Flask, session: Session, client: FlaskClient
    ) -> None:
        make_user(app, session)

        response = _post_login(client, _login_form_token(client), {"Origin": HTTPS_ISSUER})

        assert response.status_code == 303
        assert signed_in_as(client) == "ann@example.com"

    def test_form_from_the_http_origin_of_the_same_host_is_refused(
        self, app: Flask, session: Session, client: FlaskClient
    ) -> None:
        make_user(app, session)

        response = _post_login(
            client, _login_form_token(client), {"Origin": f"http://{HTTPS_HOST}"}
        )

        assert _refused_as_cross_site(response)
        assert browser_session_rows(session) == []


class TestOnAPlainHttpIssuerOtherThanLoopback:
    """The issue relaxes Secure "only for http://127.0.0.1 in development"."""

    @pytest.fixture
    def config(self, config: Config) -> Config:
        return replace(config, issuer="http://auth.example.test")

    @pytest.fixture
    def client(self, app: Flask) -> FlaskClient:
        app.config.update(SERVER_NAME="auth.example.test")
        return app.test_client()

    def test_session_cookie_is_still_secure(
        self, app: Flask, session: Session, client: FlaskClient
    ) -> None:
        make_user(app, session)

        response = sign_in(client)

        assert response.status_code == 303
        set_cookies = response.headers.getlist("Set-Cookie")
        assert set_cookies
        assert all("; Secure" in header for header in set_cookies)


# -- CSRF --------------------------------------------------------------------------------------


def test_login_without_csrf_token_is_refused_with_a_friendly_page_and_starts_no_session(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    client.get("/login")

    response = _post_login(client, csrf_token=None)

    assert refused_as_csrf(response)
    assert client.get_cookie(DEV_COOKIE) is None
    assert browser_session_rows(session) == []


def test_login_with_csrf_token_of_another_browser_is_refused_and_starts_no_session(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    client.get("/login")
    foreign = _login_form_token(app.test_client())

    response = _post_login(client, foreign)

    assert refused_as_csrf(response)
    assert client.get_cookie(DEV_COOKIE) is None
    assert browser_session_rows(session) == []


def test_login_without_any_prior_page_visit_is_refused(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    # An attacker's page posting the victim's browser into the attacker's account: the
    # browser has no pre-session CSRF secret, and a token minted elsewhere does not match.
    make_user(app, session)
    foreign = _login_form_token(app.test_client())

    response = _post_login(client, foreign)

    assert refused_as_csrf(response)
    assert browser_session_rows(session) == []


@pytest.mark.parametrize("token", ["missing", "foreign"])
def test_logout_with_a_bad_csrf_token_leaves_the_user_signed_in(
    app: Flask, session: Session, client: FlaskClient, token: str
) -> None:
    make_user(app, session)
    sign_in(client)
    client.get("/logout")
    csrf_token = None if token == "missing" else _login_form_token(app.test_client())

    response = _post_logout(client, csrf_token)

    assert refused_as_csrf(response)
    assert signed_in_as(client) == "ann@example.com"
    assert [row.revoked_at for row in browser_session_rows(session)] == [None]


# -- CSRF tokens live as long as the browser session they were issued in ----------------------


def _sign_out_others(http: FlaskClient, csrf_token: str) -> TestResponse:
    return http.post("/account/devices/sign-out-others", data={"csrf_token": csrf_token})


def _assert_refused_leaving_the_phone_signed_in(
    app: Flask, http: FlaskClient, csrf_token: str
) -> None:
    """Ann's phone, signed in too, is what "sign out everywhere else" with ``csrf_token``
    would end; the form must be refused as CSRF and the phone stay signed in."""
    phone = app.test_client()
    sign_in(phone)

    response = _sign_out_others(http, csrf_token)

    assert refused_as_csrf(response)
    assert signed_in_as(phone) == "ann@example.com"


def test_a_token_from_before_signing_out_is_refused_after_signing_in_again(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    sign_in(client)
    old_token = _account_token(client)
    _post_logout(client, _account_token(client))
    sign_in(client)

    _assert_refused_leaving_the_phone_signed_in(app, client, old_token)


def test_a_token_from_a_session_that_timed_out_is_refused_in_the_next_one(
    app: Flask, session: Session, client: FlaskClient, clock: Clock
) -> None:
    make_user(app, session)
    sign_in(client)
    old_token = _account_token(client)
    clock.advance(minutes=31)
    sign_in(client)

    _assert_refused_leaving_the_phone_signed_in(app, client, old_token)


def test_a_token_issued_before_sign_in_does_not_serve_the_signed_in_session(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    anonymous_token = _login_form_token(client)
    assert _post_login(client, anonymous_token).status_code == 303

    _assert_refused_leaving_the_phone_signed_in(app, client, anonymous_token)


def test_a_token_issued_in_the_current_session_keeps_working_across_pages(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    sign_in(client)
    token = _account_token(client)
    client.get("/account")
    client.get("/logout")
    phone = app.test_client()
    sign_in(phone)

    response = _sign_out_others(client, token)

    assert response.status_code == 303
    assert signed_in_as(phone) is None
    assert signed_in_as(client) == "ann@example.com"


# -- cross-site forms --------------------------------------------------------------------------

CROSS_SITE_HEADERS = [
    pytest.param({"Sec-Fetch-Site": "cross-site"}, id="sec-fetch-site"),
    pytest.param({"Origin": "https://evil.example"}, id="foreign-origin"),
    pytest.param({"Origin": "http://127.0.0.1:8001"}, id="other-port"),
]


@pytest.mark.parametrize("headers", CROSS_SITE_HEADERS)
def test_cross_site_login_post_is_refused_and_starts_no_session(
    app: Flask, session: Session, client: FlaskClient, headers: dict[str, str]
) -> None:
    make_user(app, session)

    response = _post_login(client, _login_form_token(client), headers)

    assert _refused_as_cross_site(response)
    assert client.get_cookie(DEV_COOKIE) is None
    assert browser_session_rows(session) == []


@pytest.mark.parametrize("headers", CROSS_SITE_HEADERS)
def test_cross_site_logout_post_leaves_the_user_signed_in(
    app: Flask, session: Session, client: FlaskClient, headers: dict[str, str]
) -> None:
    make_user(app, session)
    sign_in(client)

    response = _post_logout(client, _account_token(client), headers)

    assert _refused_as_cross_site(response)
    assert signed_in_as(client) == "ann@example.com"


def test_login_with_origin_null_and_a_valid_csrf_token_signs_in(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    # What a browser sends for a same-origin form on a Referrer-Policy: no-referrer page.
    make_user(app, session)

    response = _post_login(client, _login_form_token(client), {"Origin": "null"})

    assert response.status_code == 303
    assert signed_in_as(client) == "ann@example.com"


def test_login_with_origin_null_and_no_csrf_token_is_refused_as_csrf(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    client.get("/login")

    response = _post_login(client, csrf_token=None, headers={"Origin": "null"})

    assert refused_as_csrf(response)
    assert browser_session_rows(session) == []


def test_login_from_the_issuer_origin_signs_in(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    same_origin = {"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"}

    response = _post_login(client, _login_form_token(client), same_origin)

    assert response.status_code == 303
    assert signed_in_as(client) == "ann@example.com"


# -- page headers -----------------------------------------------------------------------------


def _assert_page_headers(response: TestResponse) -> None:
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", ["/login?prompt=login", "/logout", "/logged-out", "/account"])
def test_pages_forbid_framing_referrers_and_caching(
    app: Flask, session: Session, client: FlaskClient, path: str
) -> None:
    make_user(app, session)
    sign_in(client)

    page = client.get(path)

    assert page.status_code == 200
    _assert_page_headers(page)


def test_sign_in_answer_that_sets_the_cookie_is_not_cacheable(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)

    response = sign_in(client)

    assert response.status_code == 303
    _assert_page_headers(response)


@pytest.mark.parametrize(
    "headers", [pytest.param({}, id="csrf"), pytest.param({"Origin": "https://evil.example"})]
)
def test_refusal_pages_forbid_framing_referrers_and_caching(
    app: Flask, session: Session, client: FlaskClient, headers: dict[str, str]
) -> None:
    make_user(app, session)
    client.get("/login")

    response = _post_login(client, csrf_token=None, headers=headers)

    assert response.status_code in (400, 403)
    _assert_page_headers(response)


# -- timeouts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("idle_minutes", "greeted"), [(29, "ann@example.com"), (31, None)])
def test_a_session_ends_after_30_minutes_idle_and_not_before(
    app: Flask,
    session: Session,
    client: FlaskClient,
    clock: Clock,
    idle_minutes: int,
    greeted: str | None,
) -> None:
    make_user(app, session)
    sign_in(client)

    clock.advance(minutes=idle_minutes)

    assert signed_in_as(client) == greeted


def test_activity_every_20_minutes_keeps_the_session_for_2_hours(
    app: Flask, session: Session, client: FlaskClient, clock: Clock
) -> None:
    make_user(app, session)
    sign_in(client)

    for _ in range(6):
        clock.advance(minutes=20)
        assert signed_in_as(client) == "ann@example.com"

    # Still alive 2 h in, and the idle limit counts from the last visit, not from sign-in.
    clock.advance(minutes=29)
    assert signed_in_as(client) == "ann@example.com"


def test_with_an_idle_lifetime_under_a_minute_activity_still_keeps_the_session(
    app: Flask, config: Config, session: Session
) -> None:
    short_idle = create_app(replace(config, session_idle_ttl=30))
    # Inside the test's rolled-back transaction, like the `app` fixture.
    db.state(short_idle).engine.dispose()
    db.state(short_idle).session_factory = db.state(app).session_factory
    clock = Clock(utcnow())
    runtime(short_idle).clock = clock
    http = short_idle.test_client()
    make_user(app, session)
    sign_in(http)

    for _ in range(15):  # a visit every 20 s for 5 minutes
        clock.advance(seconds=20)
        assert signed_in_as(http) == "ann@example.com"
    clock.advance(seconds=31)

    assert signed_in_as(http) is None


def test_session_ends_12_hours_after_sign_in_despite_activity(
    app: Flask, session: Session, client: FlaskClient, clock: Clock
) -> None:
    make_user(app, session)
    sign_in(client)

    for _ in range(35):  # every 20 minutes up to 11 h 40 min
        clock.advance(minutes=20)
        assert signed_in_as(client) == "ann@example.com"
    clock.advance(minutes=20)

    assert signed_in_as(client) is None


def test_expired_session_gets_the_login_form_instead_of_being_waved_through(
    app: Flask, session: Session, client: FlaskClient, clock: Clock
) -> None:
    make_user(app, session)
    sign_in(client)
    clock.advance(minutes=31)

    page = client.get("/login")

    assert page.status_code == 200
    assert 'name="password"' in page.get_data(as_text=True)


# -- sign-out ---------------------------------------------------------------------------------


def test_get_logout_only_asks_and_leaves_the_user_signed_in(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    sign_in(client)

    page = client.get("/logout")

    assert page.status_code == 200
    assert "Sign out?" in page.get_data(as_text=True)
    assert signed_in_as(client) == "ann@example.com"


def test_sign_out_shows_the_signed_out_page_and_expires_the_cookie(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    sign_in(client)

    response = _post_logout(client, _account_token(client))

    assert response.status_code == 303
    assert response.headers["Location"] == "/logged-out"
    value, attributes = _set_cookie(response, DEV_COOKIE)
    assert value == ""
    assert attributes["max-age"] == "0"
    assert "You are signed out" in client.get("/logged-out").get_data(as_text=True)
    assert signed_in_as(client) is None


def test_old_cookie_replayed_after_sign_out_is_anonymous(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    sign_in(client)
    old_value = _cookie_value(client)
    _post_logout(client, _account_token(client))
    replayer = app.test_client()
    replayer.set_cookie(DEV_COOKIE, old_value)

    assert signed_in_as(replayer) is None
    row = _row_of(session, old_value)
    assert row is not None
    assert row.revoked_at is not None
    assert row.revoked_reason == "logout"


def test_sign_out_revokes_refresh_families_issued_through_that_browser(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    rp = web_client(session)
    sign_in(client)
    tokens = tokens_through_browser(client, rp)

    _post_logout(client, _account_token(client))

    assert refresh(client, rp, tokens["refresh_token"]).json["error"] == "invalid_grant"
    session.expire_all()
    family = session.scalars(select(RefreshFamily)).one()
    assert family.revoked_reason == "logout"
    # The access token names the family (sid), so it stops working at once.
    userinfo = client.get(
        "/oauth/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert userinfo.status_code == 401


def test_sign_out_leaves_other_browsers_and_apps_of_the_user_alone(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    other_browser = app.test_client()
    sign_in(other_browser)
    cli = make_client(session)
    cli_refresh = password_login(client, cli).json["refresh_token"]
    sign_in(client)

    _post_logout(client, _account_token(client))

    assert signed_in_as(client) is None
    assert signed_in_as(other_browser) == "ann@example.com"
    assert refresh(client, cli, cli_refresh).status_code == 200


def test_sign_out_without_a_session_just_shows_the_signed_out_page(
    app: Flask, client: FlaskClient
) -> None:
    response = _post_logout(client, _login_form_token(client))

    assert response.status_code == 303
    assert response.headers["Location"] == "/logged-out"


# -- fixation ---------------------------------------------------------------------------------


def test_session_id_known_before_sign_in_never_becomes_the_signed_in_session(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    make_user(app, session, email="mallory@example.com")
    attacker = app.test_client()
    sign_in(attacker, email="mallory@example.com")
    planted = _cookie_value(attacker)
    client.set_cookie(DEV_COOKIE, planted)

    response = _post_login(client, _login_form_token(client))

    assert response.status_code == 303
    assert _set_cookie(response, DEV_COOKIE)[0] != planted
    assert signed_in_as(client) == "ann@example.com"
    assert signed_in_as(attacker) is None


def test_invented_session_id_is_replaced_at_sign_in_and_never_stored(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    planted = secrets.token_urlsafe(32)
    client.set_cookie(DEV_COOKIE, planted)

    sign_in(client)

    assert _cookie_value(client) != planted
    assert _row_of(session, planted) is None
    holder = app.test_client()
    holder.set_cookie(DEV_COOKIE, planted)
    assert signed_in_as(holder) is None


def test_signing_in_again_issues_a_new_session_id_and_ends_the_old_one(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    sign_in(client)
    first = _cookie_value(client)

    response = _post_login(client, _login_form_token(client))

    assert response.status_code == 303
    second = _cookie_value(client)
    assert second != first
    holder = app.test_client()
    holder.set_cookie(DEV_COOKIE, first)
    assert signed_in_as(holder) is None
    assert signed_in_as(client) == "ann@example.com"


def test_signing_in_again_as_the_same_user_keeps_apps_connected_through_this_browser(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    # What an app's prompt=login (OpenID Connect Core §3.1.2.1) leads to: re-authentication,
    # which must not cut off the other apps the user connected through this browser.
    make_user(app, session)
    rp = web_client(session)
    sign_in(client)
    tokens = tokens_through_browser(client, rp)

    _post_login(client, _login_form_token(client))

    assert refresh(client, rp, tokens["refresh_token"]).status_code == 200


# -- the ``next`` parameter -------------------------------------------------------------------

OFF_SITE_TARGETS = [
    "https://evil.example/",
    "//evil.example/",
    "///evil.example/",
    "/\\evil.example",
    "\\\\evil.example",
    "/\t/evil.example",
    "javascript:alert(1)",
    "evil.example",
    "https:evil.example",
    "/account\r\nSet-Cookie: planted=1",
]


@pytest.mark.parametrize("target", OFF_SITE_TARGETS)
def test_sign_in_never_redirects_off_site(
    app: Flask, session: Session, client: FlaskClient, target: str
) -> None:
    make_user(app, session)

    response = _post_login(client, _login_form_token(client), next_path=target)

    assert response.status_code == 303
    assert response.headers["Location"] == "/account"


def test_sign_in_returns_to_a_local_next_path(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    target = "/oauth/authorize?client_id=abc&state=xyz"

    response = _post_login(client, _login_form_token(client), next_path=target)

    assert response.headers["Location"] == target


def test_login_form_does_not_carry_an_off_site_next(client: FlaskClient) -> None:
    page = client.get("/login", query_string={"next": "https://evil.example/"})

    assert 'name="next" value="/account"' in page.get_data(as_text=True)
    assert "evil.example" not in page.get_data(as_text=True)


def test_signed_in_visit_to_login_never_redirects_off_site(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    sign_in(client)

    response = client.get("/login", query_string={"next": "//evil.example/"})

    assert response.status_code == 303
    assert response.headers["Location"] == "/account"
