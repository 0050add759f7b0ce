"""How strongly the user signed in, and asking for more (issue 15, part 3): ``acr`` in ID
tokens and, with ``auth_time``, in access tokens (RFC 9068 §2.2.1), through refreshes too;
``acr_values`` (OpenID Connect Core §3.1.2.1) stepped up by asking only for the second
factor; the server's and a client's policy of two factors, which has a user without one set
it up first and refuses the password grant; discovery."""

from __future__ import annotations

import html
import re
from dataclasses import replace
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.runtime import runtime
from authserver.services.clients import RegisteredClient
from tests.browser_helpers import (
    REDIRECT_URI,
    authorize_url,
    csrf_token_of,
    pkce_pair,
    query_of,
    redeem_code,
    sign_in,
    web_client,
)
from tests.flows.test_two_step import SECOND_STEP, code_at, set_up_app
from tests.helpers import Clock, make_client, make_user, password_login, refresh, token_request

PASSWORD_ACR = "urn:authserver:acr:password"
MFA_ACR = "urn:authserver:acr:mfa"


def claims_of(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def authorize(http: FlaskClient, rp: RegisteredClient, **params: str) -> tuple[TestResponse, str]:
    verifier, challenge = pkce_pair()
    url = authorize_url(rp.client.client_id, challenge, **params)
    answer = http.get(url)
    if answer.status_code == 200:  # consent
        answer = http.post(url, data={"csrf_token": csrf_token_of(answer), "decision": "allow"})
    return answer, verifier


def tokens_from(
    http: FlaskClient, rp: RegisteredClient, answer: TestResponse, verifier: str
) -> dict[str, Any]:
    assert answer.status_code == 302, answer.headers.get("Location")
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?"), location
    tokens = redeem_code(http, rp, query_of(location)["code"], verifier)
    assert tokens.status_code == 200, tokens.json
    return dict(tokens.json)


def follow_to_client(http: FlaskClient, answer: TestResponse) -> TestResponse:
    """Follow authserver's own redirects (allowing a consent page on the way) until the
    answer is one for the client."""
    for _ in range(10):
        if answer.status_code == 200 and 'name="decision"' in answer.get_data(as_text=True):
            answer = http.post(
                answer.request.url,
                data={"csrf_token": csrf_token_of(answer), "decision": "allow"},
            )
        elif answer.status_code in (302, 303) and not answer.headers["Location"].startswith(
            REDIRECT_URI
        ):
            answer = http.get(answer.headers["Location"])
        else:
            break
    return answer


@pytest.fixture
def rp(session: Session) -> RegisteredClient:
    return web_client(session)


# -- the claims ------------------------------------------------------------------------------


def test_a_password_sign_in_is_the_password_class_in_both_tokens_and_through_refreshes(
    app: Flask, session: Session, client: FlaskClient, rp: RegisteredClient, clock: Clock
) -> None:
    make_user(app, session)
    signed_in_at = clock.now
    assert sign_in(client).status_code == 303
    clock.advance(seconds=40)

    tokens = tokens_from(client, rp, *authorize(client, rp))
    clock.advance(seconds=40)
    refreshed = refresh(client, rp, tokens["refresh_token"]).json

    assert claims_of(tokens["id_token"])["acr"] == PASSWORD_ACR
    for access_token in (tokens["access_token"], refreshed["access_token"]):
        claims = claims_of(access_token)
        assert claims["acr"] == PASSWORD_ACR
        assert claims["auth_time"] == int(signed_in_at.timestamp())


def test_client_credentials_tokens_say_nothing_of_a_sign_in(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    service = make_client(session, grant_types=["client_credentials"], scopes=["read"])

    answer = token_request(client, service, grant_type="client_credentials")

    claims = claims_of(answer.json["access_token"])
    assert "acr" not in claims
    assert "auth_time" not in claims


def test_two_factors_are_the_mfa_class_in_both_tokens_and_through_refreshes(
    app: Flask, session: Session, client: FlaskClient, rp: RegisteredClient, clock: Clock
) -> None:
    make_user(app, session)
    assert sign_in(client).status_code == 303
    key, _ = set_up_app(client, clock)
    browser = app.test_client()
    assert sign_in(browser).headers["Location"].startswith(SECOND_STEP)
    clock.advance(seconds=30)
    page = browser.get(SECOND_STEP, query_string={"next": "/account"})
    done = browser.post(
        SECOND_STEP,
        data={"csrf_token": csrf_token_of(page), "code": code_at(key, clock.now), "next": "/"},
    )
    assert done.status_code == 303

    tokens = tokens_from(browser, rp, *authorize(browser, rp))
    refreshed = refresh(browser, rp, tokens["refresh_token"]).json

    assert claims_of(tokens["id_token"])["acr"] == MFA_ACR
    assert claims_of(tokens["access_token"])["acr"] == MFA_ACR
    assert claims_of(refreshed["access_token"])["acr"] == MFA_ACR


# -- acr_values ----------------------------------------------------------------------------


def _password_session_of_a_user_with_an_app(
    app: Flask, session: Session, clock: Clock
) -> tuple[FlaskClient, str]:
    """A browser signed in with the password only (before the user set up an app, which
    another browser then did): (that browser, the app's key)."""
    make_user(app, session)
    older = app.test_client()
    assert sign_in(older).status_code == 303
    setting_up = app.test_client()
    assert sign_in(setting_up).status_code == 303
    key, _ = set_up_app(setting_up, clock)
    return older, key


def _give_the_code(http: FlaskClient, to_code_page: TestResponse, key: str, clock: Clock) -> str:
    """On the code's page a step-up sent the browser to, type the app's next code; returns
    where the page sends the browser then."""
    assert to_code_page.status_code == 303
    location = to_code_page.headers["Location"]
    assert location.startswith(SECOND_STEP), location
    page = http.get(location)
    assert page.status_code == 200
    assert 'name="password"' not in page.get_data(as_text=True)  # only what is missing
    clock.advance(seconds=30)
    done = http.post(
        SECOND_STEP,
        data={
            "csrf_token": csrf_token_of(page),
            "code": code_at(key, clock.now),
            "next": query_of(location)["next"],
        },
    )
    assert done.status_code == 303, done.get_data(as_text=True)
    return str(done.headers["Location"])


def test_acr_values_mfa_asks_a_password_session_for_the_code_only(
    app: Flask, session: Session, rp: RegisteredClient, clock: Clock
) -> None:
    browser, key = _password_session_of_a_user_with_an_app(app, session, clock)
    verifier, challenge = pkce_pair()
    url = authorize_url(rp.client.client_id, challenge, acr_values=MFA_ACR)

    back = _give_the_code(browser, browser.get(url), key, clock)

    assert back.startswith("/oauth/authorize?")
    answer = follow_to_client(browser, browser.get(back))
    tokens = tokens_from(browser, rp, answer, verifier)
    id_token = claims_of(tokens["id_token"])
    assert id_token["acr"] == MFA_ACR
    assert id_token["amr"] == ["pwd", "otp", "mfa"]
    assert id_token["auth_time"] == int(clock.now.timestamp())


def test_a_step_up_with_prompt_none_is_login_required(
    app: Flask, session: Session, rp: RegisteredClient, clock: Clock
) -> None:
    browser, _ = _password_session_of_a_user_with_an_app(app, session, clock)

    answer, _ = authorize(browser, rp, acr_values=MFA_ACR, prompt="none")

    assert answer.status_code == 302
    params = query_of(answer.headers["Location"])
    assert params["error"] == "login_required"
    assert "code" not in params


def test_a_consent_posted_without_the_step_up_is_sent_back_to_it(
    app: Flask, session: Session, rp: RegisteredClient, clock: Clock
) -> None:
    browser, _ = _password_session_of_a_user_with_an_app(app, session, clock)
    _, challenge = pkce_pair()
    url = authorize_url(rp.client.client_id, challenge, acr_values=MFA_ACR)
    token = csrf_token_of(browser.get("/account"))

    posted = browser.post(url, data={"csrf_token": token, "decision": "allow"})

    assert posted.status_code == 303
    assert posted.headers["Location"] == url
    assert not posted.headers["Location"].startswith(REDIRECT_URI)


def test_acr_values_naming_no_class_of_ours_asks_for_nothing(
    app: Flask, session: Session, client: FlaskClient, rp: RegisteredClient
) -> None:
    make_user(app, session)
    assert sign_in(client).status_code == 303

    answer, verifier = authorize(client, rp, acr_values="urn:example:loa:9 gold")

    tokens = tokens_from(client, rp, answer, verifier)
    assert claims_of(tokens["id_token"])["acr"] == PASSWORD_ACR


def test_acr_values_mfa_for_a_user_without_a_second_factor_is_answered_with_what_there_is(
    app: Flask, session: Session, client: FlaskClient, rp: RegisteredClient
) -> None:
    make_user(app, session)
    assert sign_in(client).status_code == 303

    answer, verifier = authorize(client, rp, acr_values=MFA_ACR)

    # acr_values is a wish (Core §3.1.2.1): the ID token tells the client what it got.
    tokens = tokens_from(client, rp, answer, verifier)
    assert claims_of(tokens["id_token"])["acr"] == PASSWORD_ACR


# -- discovery -------------------------------------------------------------------------------


def test_discovery_lists_the_classes_weakest_first(client: FlaskClient) -> None:
    metadata = client.get("/.well-known/openid-configuration").json

    assert metadata["acr_values_supported"] == [PASSWORD_ACR, MFA_ACR]
    assert "acr" in metadata["claims_supported"]


# -- the policy of two factors ---------------------------------------------------------------


def test_a_client_that_requires_two_factors_refuses_the_password_grant(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    strict = make_client(session, require_second_factor=True)
    relaxed = make_client(session)

    refused = password_login(client, strict)

    assert refused.status_code == 400
    assert refused.json["error"] == "unauthorized_client"
    assert "two factors" in refused.json["error_description"]
    assert password_login(client, relaxed).status_code == 200


def test_the_server_wide_policy_refuses_the_password_grant_to_every_client(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    rt = runtime(app)
    rt.config = replace(rt.config, require_second_factor=1)

    refused = password_login(client, make_client(session))

    assert refused.status_code == 400
    assert refused.json["error"] == "unauthorized_client"


def test_a_client_that_requires_two_factors_steps_a_password_session_up(
    app: Flask, session: Session, clock: Clock
) -> None:
    browser, key = _password_session_of_a_user_with_an_app(app, session, clock)
    strict = web_client(session, require_second_factor=True)
    verifier, challenge = pkce_pair()

    back = _give_the_code(
        browser, browser.get(authorize_url(strict.client.client_id, challenge)), key, clock
    )

    tokens = tokens_from(
        strict_browser := browser,
        strict,
        follow_to_client(strict_browser, strict_browser.get(back)),
        verifier,
    )
    assert claims_of(tokens["id_token"])["acr"] == MFA_ACR


def test_a_user_without_a_second_factor_sets_one_up_before_a_client_that_requires_it(
    app: Flask, session: Session, client: FlaskClient, clock: Clock
) -> None:
    make_user(app, session)
    assert sign_in(client).status_code == 303
    strict = web_client(session, require_second_factor=True)
    verifier, challenge = pkce_pair()
    url = authorize_url(strict.client.client_id, challenge)

    to_setup = client.get(url)

    assert to_setup.status_code == 303
    setup_path = to_setup.headers["Location"]
    assert setup_path.startswith("/account/two-step?")
    assert query_of(setup_path)["next"] == url
    page = client.get(setup_path)
    key = re.search(r'id="manual_key">([A-Z2-7 ]+)<', page.get_data(as_text=True))
    assert key
    done = client.post(
        "/account/two-step",
        data={
            "csrf_token": csrf_token_of(page),
            "code": code_at(key[1], clock.now),
            "next": url,
        },
    )
    assert done.status_code == 200
    assert f'href="{html.escape(url)}"' in done.get_data(as_text=True)  # "continue"
    tokens = tokens_from(client, strict, follow_to_client(client, client.get(url)), verifier)
    assert claims_of(tokens["id_token"])["acr"] == MFA_ACR


def test_the_server_wide_policy_asks_every_client_for_two_factors(
    app: Flask, session: Session, rp: RegisteredClient, clock: Clock
) -> None:
    browser, _ = _password_session_of_a_user_with_an_app(app, session, clock)
    rt = runtime(app)
    rt.config = replace(rt.config, require_second_factor=1)
    _, challenge = pkce_pair()

    answer = browser.get(authorize_url(rp.client.client_id, challenge))

    assert answer.status_code == 303
    assert answer.headers["Location"].startswith(SECOND_STEP)
