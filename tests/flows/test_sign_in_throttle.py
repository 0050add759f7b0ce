"""The throttle on failed password and client-secret guesses (services/sign_in_throttle.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.config import Config
from authserver.services.clients import RegisteredClient
from tests.browser_helpers import csrf_token_of
from tests.helpers import PASSWORD, advance_clock, make_client, make_user, token_from


@pytest.fixture
def config(config: Config) -> Config:
    return replace(
        config,
        ratelimit_token="1000/minute",
        ratelimit_token_per_client="1000/minute",
        ratelimit_signin="1000/minute",
        ratelimit_signin_per_account="1000/minute",
        signin_free_failures=3,
        signin_failures_per_hour=8,
    )


def _password(
    http: FlaskClient, registered: RegisteredClient, password: str, ip: str = "192.0.2.1"
) -> TestResponse:
    return token_from(
        http,
        registered,
        ip=ip,
        grant_type="password",
        username="ann@example.com",
        password=password,
    )


def _form_sign_in(http: FlaskClient, password: str, ip: str) -> TestResponse:
    page = http.get("/login", environ_base={"REMOTE_ADDR": ip})
    return http.post(
        "/login",
        data={"email": "ann@example.com", "password": password, "csrf_token": csrf_token_of(page)},
        environ_base={"REMOTE_ADDR": ip},
    )


def test_failed_passwords_past_the_free_ones_must_wait(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    registered = make_client(session)
    for _ in range(4):  # 3 free failures, then a 2-second delay starts
        assert _password(client, registered, "wrong").status_code == 400

    refused = _password(client, registered, PASSWORD)

    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    advance_clock(app, 3)
    assert _password(client, registered, PASSWORD).status_code == 200


def test_delays_grow_with_every_further_failure(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    registered = make_client(session)
    waits = []
    for _ in range(7):
        answer = _password(client, registered, "wrong")
        if answer.status_code == 429:
            waits.append(int(answer.headers["Retry-After"]))
            advance_clock(app, waits[-1])
            _password(client, registered, "wrong")

    assert waits == sorted(waits)
    assert waits[-1] > waits[0]


def test_a_guesser_at_one_address_does_not_slow_the_user_at_another(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    registered = make_client(session)
    for _ in range(5):
        _password(client, registered, "wrong", ip="203.0.113.66")

    assert _password(client, registered, PASSWORD, ip="198.51.100.7").status_code == 200


def test_past_the_hourly_cap_an_untrusted_browser_is_refused_but_a_trusted_one_gets_in(
    app: Flask, session: Session
) -> None:
    make_user(app, session)
    users_browser = app.test_client()
    assert _form_sign_in(users_browser, PASSWORD, "198.51.100.7").status_code == 303
    # Signed out since (only the device cookie remains), as a returning user would be.
    users_browser.delete_cookie("authserver_session")
    attacker = app.test_client()
    for n in range(8):  # a distributed guesser: a new address each time
        _form_sign_in(attacker, "wrong", f"203.0.113.{n}")

    locked = _form_sign_in(app.test_client(), PASSWORD, "198.51.100.8")
    trusted = _form_sign_in(users_browser, PASSWORD, "198.51.100.9")

    assert locked.status_code == 429
    assert "Too many failed attempts" in locked.get_data(as_text=True)
    assert trusted.status_code == 303


def test_client_secret_guesses_are_throttled_too(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered = make_client(session, grant_types=["client_credentials"])
    wrong = RegisteredClient(client=registered.client, client_secret="not-the-secret")

    codes = [
        token_from(client, wrong, grant_type="client_credentials").status_code for _ in range(5)
    ]

    assert codes == [401, 401, 401, 401, 429]
    # The guesser's delays grow like a password guesser's.
    advance_clock(app, 2)
    assert token_from(client, wrong, grant_type="client_credentials").status_code == 401
    assert token_from(client, wrong, grant_type="client_credentials").status_code == 429


def test_guessing_a_client_secret_cannot_lock_the_real_client_out(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    """A client_id is public and its secret is 256 bits: anyone could send a hundred wrong
    secrets an hour, nobody can find the right one. So the right secret always gets in, even
    from the guesser's own address and past the hourly cap of failures."""
    registered = make_client(session, grant_types=["client_credentials"])
    wrong = RegisteredClient(client=registered.client, client_secret="not-the-secret")
    for n in range(8):  # the hourly cap in this module's config, from many addresses
        token_from(client, wrong, ip=f"203.0.113.{n}", grant_type="client_credentials")

    capped = token_from(client, wrong, ip="203.0.113.99", grant_type="client_credentials")
    from_guesser = token_from(client, registered, ip="203.0.113.7", grant_type="client_credentials")
    from_elsewhere = token_from(
        client, registered, ip="198.51.100.7", grant_type="client_credentials"
    )

    assert capped.status_code == 429
    assert from_guesser.status_code == 200
    assert from_elsewhere.status_code == 200
