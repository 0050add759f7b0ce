"""Cross-origin requests (http/cors.py): a browser app on the origin of a public client's
redirect URI may call the endpoints a single-page app needs and read their answers; no other
origin may, and nothing else answers cross-origin at all."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.resource.dpop import web_origin
from authserver.runtime import runtime
from authserver.services.clients import RegisteredClient, disable_client
from tests.dpop_keys import DPoPKey
from tests.helpers import make_client, make_resource_server

SPA_ORIGIN = "https://app.photos.example.test"
SPA_REDIRECT = SPA_ORIGIN + "/callback"
ISSUER = "http://127.0.0.1:8000"


@pytest.fixture
def spa(app: Flask, session: Session) -> RegisteredClient:
    # Origins are read again at once, so a change made in a test is seen by the next request.
    runtime(app).config = replace(runtime(app).config, client_cache_seconds=0)
    return make_client(
        session,
        name="Photos web app",
        public=True,
        first_party=False,
        grant_types=["authorization_code", "refresh_token"],
        redirect_uris=[SPA_REDIRECT],
        scopes=["openid"],
    )


def _preflight(http: FlaskClient, path: str, origin: str, method: str = "POST") -> TestResponse:
    return http.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "dpop, content-type",
        },
    )


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke", "/oauth/par", "/oauth/userinfo"])
def test_a_public_clients_origin_may_call_the_app_endpoints(
    client: FlaskClient, spa: RegisteredClient, path: str
) -> None:
    answer = _preflight(client, path, SPA_ORIGIN)

    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == SPA_ORIGIN
    assert "DPoP" in answer.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in answer.headers
    assert "Origin" in answer.headers["Vary"]


def test_the_token_answer_is_readable_by_the_app_errors_and_nonces_included(
    client: FlaskClient, spa: RegisteredClient
) -> None:
    refused = client.post(
        "/oauth/token",
        data={"grant_type": "authorization_code", "code": "x", "client_id": spa.client.client_id},
        headers={"Origin": SPA_ORIGIN, "DPoP": DPoPKey().proof("POST", ISSUER + "/oauth/token")},
    )

    assert refused.status_code == 400
    assert refused.headers["Access-Control-Allow-Origin"] == SPA_ORIGIN
    assert "DPoP-Nonce" in refused.headers["Access-Control-Expose-Headers"]
    assert "Origin" in refused.headers["Vary"]


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example.test",
        "https://app.photos.example.test:8443",  # another port is another origin
        "http://app.photos.example.test",  # another scheme too
        "null",
        "https://APP.photos.example.test.evil.test",
    ],
)
def test_other_origins_get_no_cors_answer(
    client: FlaskClient, spa: RegisteredClient, origin: str
) -> None:
    preflight = _preflight(client, "/oauth/token", origin)
    answer = client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, headers={"Origin": origin}
    )

    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert "Access-Control-Allow-Origin" not in answer.headers


def test_a_confidential_clients_origin_gets_no_cors_answer(
    client: FlaskClient, session: Session
) -> None:
    # A confidential client redeems its codes from its server, never from a browser.
    make_client(session, redirect_uris=["https://server-app.example.test/cb"])
    answer = _preflight(client, "/oauth/token", "https://server-app.example.test")
    assert "Access-Control-Allow-Origin" not in answer.headers


def test_a_disabled_clients_origin_is_refused_from_then_on(
    app: Flask, client: FlaskClient, session: Session, spa: RegisteredClient
) -> None:
    assert _preflight(client, "/oauth/token", SPA_ORIGIN).status_code == 204
    disable_client(
        session,
        spa.client.client_id,
        runtime(app).now(),
        stale_for=timedelta(0),
        token_ttl=timedelta(minutes=10),
    )
    session.commit()

    refused = _preflight(client, "/oauth/token", SPA_ORIGIN)
    assert "Access-Control-Allow-Origin" not in refused.headers


@pytest.mark.parametrize(
    "path", ["/oauth/introspect", "/oauth/revocations", "/admin/v1/users", "/login", "/account"]
)
def test_endpoints_no_browser_app_needs_answer_no_origin(
    client: FlaskClient, spa: RegisteredClient, path: str
) -> None:
    preflight = _preflight(client, path, SPA_ORIGIN, method="GET")
    answer = client.get(path, headers={"Origin": SPA_ORIGIN})

    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert "Access-Control-Allow-Origin" not in answer.headers


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ],
)
def test_public_documents_are_readable_from_any_origin(client: FlaskClient, path: str) -> None:
    answer = client.get(path, headers={"Origin": "https://anyone.example.test"})
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == "*"


def test_a_resource_servers_origin_is_not_an_app_origin(
    client: FlaskClient, session: Session
) -> None:
    make_resource_server(session)
    assert (
        "Access-Control-Allow-Origin"
        not in _preflight(client, "/oauth/token", "https://api.example.test").headers
    )


@pytest.mark.parametrize(
    ("uri", "origin"),
    [
        ("https://a.example.test/cb?x=1", "https://a.example.test"),
        ("https://a.example.test:443/cb", "https://a.example.test"),
        ("http://127.0.0.1:8080/cb", "http://127.0.0.1:8080"),
        ("http://[::1]:8080/cb", "http://[::1]:8080"),
        ("com.example.app:/callback", None),
        ("https://a.example.test:99999/cb", None),
    ],
)
def test_the_origin_of_a_redirect_uri(uri: str, origin: str | None) -> None:
    assert web_origin(uri) == origin
