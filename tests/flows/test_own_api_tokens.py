"""authserver's own APIs accept only tokens meant for them (own_apis.py, http/bearer.py).

The account API takes access tokens whose audience is ``{issuer}/account`` and whose scope
holds ``account``; userinfo takes a user's token that carries ``openid``. A token another app
got for its own API, a client's own token (client_credentials) and a token without the
scope are refused, and nothing they asked for happens.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.services.clients import RegisteredClient
from tests.browser_helpers import (
    REDIRECT_URI,
    authorize_url,
    csrf_token_of,
    pkce_pair,
    query_of,
    sign_in,
    signed_in_as,
    tokens_through_browser,
    web_client,
)
from tests.helpers import (
    account_api_request,
    make_client,
    make_user,
    password_login,
    refresh,
    token_request,
)

PHOTOS_API = "https://photos.example.test"
ACCOUNT_ENDPOINTS = [
    pytest.param("GET", "/account/sessions", id="list"),
    pytest.param("DELETE", "/account/sessions/00000000-0000-4000-8000-000000000000", id="delete"),
    pytest.param("POST", "/account/sessions/revoke-others", id="revoke-others"),
    pytest.param("POST", "/account/logout-all", id="logout-all"),
]


def _call(http: FlaskClient, method: str, path: str, access_token: str) -> TestResponse:
    return http.open(path, method=method, headers={"Authorization": f"Bearer {access_token}"})


def _photo_app(session: Session) -> RegisteredClient:
    """A third-party web app with an API of its own, not registered for the account API."""
    return web_client(
        session,
        audiences=[PHOTOS_API],
        scopes=["openid", "email", "offline_access", "read"],
    )


@pytest.fixture
def signed_in(app: Flask, session: Session, client: FlaskClient) -> FlaskClient:
    """Ann, signed in in a browser."""
    make_user(app, session)
    assert sign_in(client).status_code == 303
    return client


def _photo_tokens(browser: FlaskClient, photo_app: RegisteredClient) -> dict[str, Any]:
    return tokens_through_browser(
        browser, photo_app, resource=PHOTOS_API, scope="openid offline_access read"
    )


# -- a token meant for another API --------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ACCOUNT_ENDPOINTS)
def test_a_photo_apps_token_for_its_own_api_is_refused_by_the_account_api(
    session: Session, signed_in: FlaskClient, method: str, path: str
) -> None:
    tokens = _photo_tokens(signed_in, _photo_app(session))

    response = _call(signed_in, method, path, tokens["access_token"])

    assert response.status_code == 401
    assert response.json["error"] == "invalid_token"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert "sessions" not in response.json


def test_a_photo_apps_token_cannot_sign_the_user_out_everywhere(
    session: Session, signed_in: FlaskClient
) -> None:
    photo_app = _photo_app(session)
    tokens = _photo_tokens(signed_in, photo_app)

    _call(signed_in, "POST", "/account/logout-all", tokens["access_token"])

    assert signed_in_as(signed_in) == "ann@example.com"
    assert refresh(signed_in, photo_app, tokens["refresh_token"]).status_code == 200


def test_a_first_party_token_for_the_default_audience_is_refused_by_the_account_api(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    tokens = password_login(client, make_client(session)).json

    response = _call(client, "GET", "/account/sessions", tokens["access_token"])

    assert response.status_code == 401
    assert response.json["error_description"] == "The access token is not meant for this API."


def test_an_account_token_without_the_account_scope_is_403_insufficient_scope(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    first_party = make_client(session)
    resource = account_api_request(app)["resource"]
    tokens = password_login(client, first_party, resource=resource, scope="read").json

    response = _call(client, "POST", "/account/logout-all", tokens["access_token"])

    assert response.status_code == 403
    assert response.json["error"] == "insufficient_scope"
    challenge = response.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="account"' in challenge
    assert refresh(client, first_party, tokens["refresh_token"]).status_code == 200


# -- a token that names no user --------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ACCOUNT_ENDPOINTS)
def test_a_clients_own_token_is_401_at_the_account_api(
    session: Session, client: FlaskClient, method: str, path: str
) -> None:
    service = make_client(session, name="Batch job", grant_types=["client_credentials"])
    token = token_request(client, service, grant_type="client_credentials").json["access_token"]

    response = _call(client, method, path, token)

    assert response.status_code == 401
    assert response.json["error"] == "invalid_token"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_clients_own_token_is_401_at_userinfo(
    session: Session, client: FlaskClient, method: str
) -> None:
    service = make_client(session, name="Batch job", grant_types=["client_credentials"])
    token = token_request(client, service, grant_type="client_credentials").json["access_token"]

    response = _call(client, method, "/oauth/userinfo", token)

    assert response.status_code == 401
    assert response.json["error_description"] == "The access token does not act for a user."


@pytest.mark.parametrize("scope", ["openid", "account", "read openid email"])
def test_client_credentials_never_grants_a_user_scope(
    session: Session, client: FlaskClient, scope: str
) -> None:
    service = make_client(
        session,
        name="Batch job",
        grant_types=["client_credentials"],
        scopes=["read", "openid", "email", "account"],
    )

    response = token_request(client, service, grant_type="client_credentials", scope=scope)

    assert response.status_code == 400
    assert response.json["error"] == "invalid_scope"


def test_client_credentials_without_a_scope_leaves_out_the_user_scopes(
    session: Session, client: FlaskClient
) -> None:
    service = make_client(
        session, name="Batch job", grant_types=["client_credentials"], scopes=["read", "openid"]
    )

    response = token_request(client, service, grant_type="client_credentials")

    assert response.status_code == 200
    assert response.json["scope"] == "read"


def test_client_credentials_cannot_get_a_token_for_the_account_api(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    first_party = make_client(session)

    response = token_request(
        client,
        first_party,
        grant_type="client_credentials",
        resource=account_api_request(app)["resource"],
    )

    assert response.status_code == 400
    assert response.json["error"] == "invalid_target"


# -- who may get an account token -----------------------------------------------------------------


def test_a_first_party_app_gets_an_account_token_by_naming_the_account_api(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    tokens = password_login(client, make_client(session), **account_api_request(app)).json

    response = _call(client, "GET", "/account/sessions", tokens["access_token"])

    assert response.status_code == 200
    assert [d["current"] for d in response.json["sessions"]] == [True]


def test_a_third_party_app_cannot_ask_for_the_account_api(
    app: Flask, session: Session, signed_in: FlaskClient
) -> None:
    photo_app = _photo_app(session)
    _, challenge = pkce_pair()
    resource = account_api_request(app)["resource"]

    answer = signed_in.get(authorize_url(photo_app.client.client_id, challenge, resource=resource))
    if answer.status_code == 200:  # the consent page comes first for a third-party app
        answer = signed_in.post(
            authorize_url(photo_app.client.client_id, challenge, resource=resource),
            data={"csrf_token": csrf_token_of(answer), "decision": "allow"},
        )

    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT_URI)
    assert query_of(location)["error"] == "invalid_target"
    assert "code" not in query_of(location)


def test_a_third_party_app_cannot_ask_for_the_account_scope(
    app: Flask, session: Session, signed_in: FlaskClient
) -> None:
    photo_app = _photo_app(session)
    _, challenge = pkce_pair()

    answer = signed_in.get(
        authorize_url(photo_app.client.client_id, challenge, scope="openid account")
    )

    assert answer.status_code == 302
    assert query_of(answer.headers["Location"])["error"] == "invalid_scope"


def test_a_third_party_app_registered_for_the_account_api_reaches_it(
    app: Flask, session: Session, signed_in: FlaskClient
) -> None:
    account = account_api_request(app)
    registered = web_client(
        session,
        name="Account manager",
        audiences=[account["resource"]],
        scopes=["openid", "account"],
    )
    tokens = tokens_through_browser(
        signed_in, registered, resource=account["resource"], scope="openid account"
    )

    response = _call(signed_in, "GET", "/account/sessions", tokens["access_token"])

    assert response.status_code == 200
    assert [d["type"] for d in response.json["sessions"]] == ["browser"]


def test_a_client_registered_with_the_account_api_first_gets_its_api_by_default(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    registered = make_client(session, audiences=[account_api_request(app)["resource"], PHOTOS_API])

    tokens = password_login(client, registered).json

    assert _call(client, "GET", "/account/sessions", tokens["access_token"]).status_code == 401
    introspected = client.post(
        "/oauth/introspect",
        data={"token": tokens["access_token"]},
        auth=(registered.client.client_id, registered.client_secret or ""),
    ).json
    assert introspected["aud"] == PHOTOS_API


# -- userinfo --------------------------------------------------------------------------------


def test_userinfo_answers_the_photo_apps_sign_in_token(
    session: Session, signed_in: FlaskClient
) -> None:
    # OpenID Connect Core §5.3: a relying party calls userinfo with the access token of its
    # sign-in, whatever API that token is for.
    tokens = _photo_tokens(signed_in, _photo_app(session))

    response = _call(signed_in, "GET", "/oauth/userinfo", tokens["access_token"])

    assert response.status_code == 200
    assert "sub" in response.json
