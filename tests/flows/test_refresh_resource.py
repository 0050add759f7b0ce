"""Resource indicators at refresh (RFC 8707 §2.2): a refresh token is bound to the audience of
the grant that started its family. ``resource`` at refresh may name that audience and nothing
else, not even another audience the client is registered for; a refused request leaves the
token usable."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.models import RefreshToken
from authserver.services.clients import RegisteredClient
from authserver.services.refresh_tokens import digest_token
from tests.helpers import basic_auth, make_client, make_user, password_login, refresh

ORDERS = "https://orders.example.test"
BILLING = "https://billing.example.test"
DEFAULT_AUDIENCE = "https://api.example.test"  # the `config` fixture's default_audience


def _audience(response: TestResponse) -> str:
    """The access token's ``aud``; its signature is the subject of test_access_tokens.py."""
    claims: dict[str, Any] = jwt.decode(
        response.json["access_token"], options={"verify_signature": False}
    )
    audience: str = claims["aud"]
    return audience


def _signed_in_for_billing(
    app: Flask, session: Session, http: FlaskClient
) -> tuple[RegisteredClient, str]:
    """A client registered for ORDERS (its default) and BILLING, and a refresh token of a
    family granted for BILLING."""
    make_user(app, session)
    registered = make_client(session, audiences=[ORDERS, BILLING])
    response = password_login(http, registered, resource=BILLING)
    assert response.status_code == 200, response.json
    assert _audience(response) == BILLING
    return registered, response.json["refresh_token"]


def _token_is_unused(session: Session, token: str) -> bool:
    session.expire_all()
    row = session.scalars(
        select(RefreshToken).where(RefreshToken.token_digest == digest_token(token))
    ).one()
    return row.used_at is None


def test_refresh_naming_the_granted_resource_gets_a_token_for_it(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, token = _signed_in_for_billing(app, session, client)

    response = refresh(client, registered, token, resource=BILLING)

    assert response.status_code == 200, response.json
    assert _audience(response) == BILLING


def test_refresh_without_a_resource_keeps_the_granted_audience_not_the_clients_default(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, token = _signed_in_for_billing(app, session, client)

    response = refresh(client, registered, token)

    assert _audience(response) == BILLING


@pytest.mark.parametrize(
    "resources",
    [
        pytest.param([ORDERS], id="another-audience-of-the-client"),
        pytest.param(["https://evil.example.test"], id="an-audience-of-no-client"),
        pytest.param([DEFAULT_AUDIENCE], id="the-server-default"),
        pytest.param([BILLING, ORDERS], id="the-granted-one-and-another"),
        pytest.param([BILLING, BILLING], id="the-granted-one-twice"),
    ],
)
def test_refresh_naming_anything_but_the_granted_resource_is_invalid_target(
    app: Flask, session: Session, client: FlaskClient, resources: list[str]
) -> None:
    registered, token = _signed_in_for_billing(app, session, client)

    response = client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": token, "resource": resources},
        headers=basic_auth(registered),
    )

    assert response.status_code == 400
    assert response.json["error"] == "invalid_target"
    assert "access_token" not in response.json


@pytest.mark.parametrize(
    "resource",
    [
        pytest.param("https://billing.example.test\x00", id="nul"),
        pytest.param("https://billing.example.test\n", id="newline"),
        pytest.param("https://billing\x7f.example.test", id="delete"),
    ],
)
def test_a_resource_no_audience_could_be_is_invalid_target(
    app: Flask, session: Session, client: FlaskClient, resource: str
) -> None:
    registered, token = _signed_in_for_billing(app, session, client)

    response = refresh(client, registered, token, resource=resource)

    assert response.status_code == 400
    assert response.json["error"] == "invalid_target"
    assert _token_is_unused(session, token)


def test_a_refused_resource_leaves_the_token_usable(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, token = _signed_in_for_billing(app, session, client)

    refused = refresh(client, registered, token, resource=ORDERS)

    assert refused.json["error"] == "invalid_target"
    assert _token_is_unused(session, token)
    assert _audience(refresh(client, registered, token)) == BILLING


def test_a_family_keeps_refreshing_for_an_audience_its_client_was_since_deregistered_from(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    """What the user granted stands until the family ends or is revoked; the registration
    governs new grants. (Withdrawing an API from live sessions is a revocation.)"""
    registered, token = _signed_in_for_billing(app, session, client)
    registered.client.audiences = [ORDERS]
    session.commit()

    response = refresh(client, registered, token, resource=BILLING)

    assert response.status_code == 200, response.json
    assert _audience(response) == BILLING


def test_a_family_granted_for_the_server_default_refreshes_naming_it(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    """A client registered for no audience gets the server default, and may name it again."""
    make_user(app, session)
    registered = make_client(session)
    token = password_login(client, registered).json["refresh_token"]

    response = refresh(client, registered, token, resource=DEFAULT_AUDIENCE)

    assert response.status_code == 200, response.json
    assert _audience(response) == DEFAULT_AUDIENCE
