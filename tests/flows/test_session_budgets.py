"""Per-session request budgets, beside the per-address, per-client and per-account limits: a
signed-in browser session and a refresh family each have their own, and one that is spent
refuses only its own requests (429 with Retry-After)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.config import Config
from tests.browser_helpers import sign_in
from tests.helpers import (
    Clock,
    account_api_request,
    make_client,
    make_user,
    password_login,
    refresh,
)

BROWSER_BUDGET = 4
FAMILY_BUDGET = 3


@pytest.fixture
def config(config: Config) -> Config:
    # Per day: the counting windows are aligned to the epoch, and a test that straddled the
    # end of one would see part of its count weighted down.
    return replace(
        config,
        ratelimit_per_browser_session=f"{BROWSER_BUDGET}/day",
        ratelimit_per_family=f"{FAMILY_BUDGET}/day",
    )


def _sessions(http: FlaskClient, access_token: str) -> TestResponse:
    return http.get("/account/sessions", headers={"Authorization": f"Bearer {access_token}"})


def _account_tokens(app: Flask, http: FlaskClient, registered: Any) -> dict[str, Any]:
    response = password_login(http, registered, **account_api_request(app))
    assert response.status_code == 200, response.json
    return dict(response.json)


# -- a browser session ----------------------------------------------------------------------------


def test_a_browser_session_that_spent_its_budget_is_refused_with_retry_after(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    # The sign-in's answer sets the cookie; the session's budget counts from the next request.
    assert sign_in(client).status_code == 303

    answers = [client.get("/account") for _ in range(BROWSER_BUDGET + 1)]

    assert [a.status_code for a in answers[:-1]] == [200] * BROWSER_BUDGET
    refused = answers[-1]
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0


def test_another_browser_session_and_anonymous_visitors_keep_their_budgets(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    sign_in(client)
    assert [client.get("/account").status_code for _ in range(BROWSER_BUDGET + 1)][-1] == 429
    other = app.test_client()
    assert sign_in(other).status_code == 303
    anonymous = app.test_client()

    assert other.get("/account").status_code == 200
    assert [anonymous.get("/login").status_code for _ in range(BROWSER_BUDGET + 2)] == [200] * (
        BROWSER_BUDGET + 2
    )


# -- a refresh family at the bearer APIs ----------------------------------------------------------


def test_a_familys_tokens_share_one_budget_at_the_account_api(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    registered = make_client(session)
    tokens = _account_tokens(app, client, registered)
    first = [_sessions(client, tokens["access_token"]).status_code for _ in range(FAMILY_BUDGET)]
    # A new access token of the same family: the same budget, already spent.
    rotated = refresh(client, registered, tokens["refresh_token"]).json

    refused = _sessions(client, rotated["access_token"])

    assert first == [200] * FAMILY_BUDGET
    assert refused.status_code == 429
    assert refused.json["error"] == "temporarily_unavailable"
    assert int(refused.headers["Retry-After"]) > 0


def test_another_family_of_the_same_user_keeps_its_budget(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    registered = make_client(session)
    spent = _account_tokens(app, client, registered)
    calls = [_sessions(client, spent["access_token"]) for _ in range(FAMILY_BUDGET + 1)]
    assert calls[-1].status_code == 429
    fresh = _account_tokens(app, client, registered)

    assert _sessions(client, fresh["access_token"]).status_code == 200


def test_tokens_that_are_refused_spend_nothing_of_a_familys_budget(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    registered = make_client(session)
    tokens = _account_tokens(app, client, registered)
    other_api = password_login(client, registered).json  # the default audience, not this API
    for _ in range(FAMILY_BUDGET * 2):
        assert _sessions(client, other_api["access_token"]).status_code == 401
        assert _sessions(client, tokens["access_token"][:-4] + "AAAA").status_code == 401

    answers = [_sessions(client, tokens["access_token"]).status_code for _ in range(FAMILY_BUDGET)]

    assert answers == [200] * FAMILY_BUDGET


# -- a refresh family at the token endpoint -----------------------------------------------------


def test_a_family_that_spent_its_rotations_is_refused_with_its_token_left_usable(
    app: Flask, session: Session, client: FlaskClient, clock: Clock
) -> None:
    make_user(app, session)
    registered = make_client(session)
    token = password_login(client, registered).json["refresh_token"]
    for _ in range(FAMILY_BUDGET):
        rotated = refresh(client, registered, token)
        assert rotated.status_code == 200
        token = rotated.json["refresh_token"]

    refused = refresh(client, registered, token)

    assert refused.status_code == 429
    assert refused.json["error"] == "temporarily_unavailable"
    assert 0 < int(refused.headers["Retry-After"]) <= 24 * 3600
    # The window ends: the same token, untouched by the refusal, rotates.
    clock.advance(days=1)
    assert refresh(client, registered, token).status_code == 200


def test_another_family_of_the_same_client_rotates_while_one_is_out_of_budget(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    registered = make_client(session)
    spent = password_login(client, registered).json["refresh_token"]
    fresh = password_login(client, registered).json["refresh_token"]
    for _ in range(FAMILY_BUDGET):
        spent = refresh(client, registered, spent).json["refresh_token"]
    assert refresh(client, registered, spent).status_code == 429

    assert refresh(client, registered, fresh).status_code == 200


def test_a_retry_of_the_last_rotation_is_answered_though_the_budget_is_spent(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    registered = make_client(session)
    token = password_login(client, registered).json["refresh_token"]
    for _ in range(FAMILY_BUDGET - 1):
        token = refresh(client, registered, token).json["refresh_token"]
    last = refresh(client, registered, token)

    # The answer was lost; the client retries inside the grace window (no new rotation).
    retried = refresh(client, registered, token)

    assert retried.status_code == 200
    assert retried.json["refresh_token"] == last.json["refresh_token"]
