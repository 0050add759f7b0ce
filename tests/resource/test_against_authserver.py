"""End to end: tokens from authserver's real endpoints, checked by the kit over HTTP."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from sqlalchemy.orm import Session

from authserver.db import db
from authserver.resource import (
    IntrospectionClient,
    TokenRevoked,
    TokenVerifier,
    WrongAudience,
)
from tests.conftest import LiveServer
from tests.helpers import HANG_SECONDS, PASSWORD, make_client, make_user

DEFAULT_AUDIENCE = "https://api.example.test"  # the `config` fixture's default_audience


@dataclass(frozen=True)
class Credentials:
    client_id: str
    client_secret: str

    @property
    def auth(self) -> tuple[str, str]:
        return self.client_id, self.client_secret


@dataclass(frozen=True)
class Login:
    access_token: str
    refresh_token: str
    user_id: str
    app: Credentials
    resource_server: Credentials


def _credentials(session: Session, **options: Any) -> Credentials:
    registered = make_client(session, **options)
    assert registered.client_secret is not None
    return Credentials(registered.client.client_id, registered.client_secret)


@pytest.fixture
def login(live_server: LiveServer) -> Login:
    """A user signed in with the password grant; and a client the resource server uses
    for the feed and introspection."""
    with db.transaction(live_server.app) as session:
        user_id = str(make_user(live_server.app, session).id)
        app = _credentials(session)
        resource_server = _credentials(
            session,
            name="Orders API",
            grant_types=["client_credentials"],
            first_party=False,
            served_audiences=[DEFAULT_AUDIENCE],
        )
    with requests.Session() as http:
        response = http.post(
            live_server.url + "/oauth/token",
            data={
                "grant_type": "password",
                "username": "ann@example.com",
                "password": PASSWORD,
                "scope": "read",
            },
            auth=app.auth,
            timeout=10,
        )
    assert response.status_code == 200, response.text
    tokens = response.json()
    return Login(tokens["access_token"], tokens["refresh_token"], user_id, app, resource_server)


def revoke_refresh_token(live_server: LiveServer, login: Login) -> None:
    """RFC 7009: the app revokes its refresh token, and with it the family (``sid``)."""
    with requests.Session() as http:
        response = http.post(
            live_server.url + "/oauth/revoke",
            data={"token": login.refresh_token},
            auth=login.app.auth,
            timeout=10,
        )
    assert response.status_code == 200, response.text


@pytest.fixture
def feed_verifier(live_server: LiveServer, login: Login) -> Iterator[TokenVerifier]:
    with TokenVerifier(
        live_server.url,
        DEFAULT_AUDIENCE,
        revocation_feed=True,
        client_id=login.resource_server.client_id,
        client_secret=login.resource_server.client_secret,
        poll_interval=0.05,
    ) as verifier:
        yield verifier


def test_token_from_the_token_endpoint_verifies_with_the_kit(
    live_server: LiveServer, login: Login
) -> None:
    verifier = TokenVerifier(live_server.url, DEFAULT_AUDIENCE)

    verified = verifier.verify(login.access_token)

    assert verified.subject == login.user_id
    assert verified.client_id == login.app.client_id
    assert verified.scope == frozenset({"read"})
    assert verified.audience == (DEFAULT_AUDIENCE,)
    assert verified.session_id is not None
    assert uuid.UUID(verified.session_id)  # the refresh family the password grant started


def test_token_from_the_server_is_refused_for_another_audience(
    live_server: LiveServer, login: Login
) -> None:
    verifier = TokenVerifier(live_server.url, "https://another-api.example.test")

    with pytest.raises(WrongAudience):
        verifier.verify(login.access_token)


def test_revocation_reaches_the_kit_through_the_servers_feed(
    live_server: LiveServer, login: Login, feed_verifier: TokenVerifier
) -> None:
    assert feed_verifier.verify(login.access_token).subject == login.user_id

    revoke_refresh_token(live_server, login)

    deadline = time.monotonic() + HANG_SECONDS
    while True:
        try:
            feed_verifier.verify(login.access_token)
        except TokenRevoked:
            break
        assert time.monotonic() < deadline, "the revocation never arrived through the feed"
        time.sleep(0.02)
    state = feed_verifier.revocation_state
    assert state is not None
    assert state.cursor is not None
    assert state.cursor > 0


def test_introspection_against_the_server_follows_revocation(
    live_server: LiveServer, login: Login
) -> None:
    introspection = IntrospectionClient(
        live_server.url, login.resource_server.client_id, login.resource_server.client_secret
    )
    assert introspection.introspect(login.access_token)["active"] is True

    revoke_refresh_token(live_server, login)

    assert introspection.introspect(login.access_token) == {"active": False}
    # Offline verification alone still accepts it: this is what the online check is for.
    offline = TokenVerifier(live_server.url, DEFAULT_AUDIENCE)
    assert offline.verify(login.access_token).subject == login.user_id
