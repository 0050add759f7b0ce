"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from dataclasses import replace

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from authserver.app import create_app
from authserver.config import Config
from authserver.db import db
from authserver.runtime import runtime
from authserver.services.keys import KeyCipher
from tests.helpers import make_client, make_user, password_login, refresh

METRICS_TOKEN = "a-scrapers-bearer-token-of-forty-characters"
SCRAPER = {"Authorization": f"Bearer {METRICS_TOKEN}"}


@pytest.fixture
def config(config: Config) -> Config:
    """The test configuration with /metrics turned on for the scraper's token."""
    return replace(config, metrics_token=METRICS_TOKEN)


def _metric(client: FlaskClient, name: str, **labels: str) -> float:
    """The value of one sample in /metrics (0 when absent)."""
    response = client.get("/metrics", headers=SCRAPER)
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    wanted = name + (
        "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""
    )
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        if sample == wanted:
            return float(value)
    return 0.0


def test_healthz_answers_while_the_process_lives(client: FlaskClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_is_ready_with_the_database_and_a_signing_key(client: FlaskClient) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json["checks"] == {"database": "ok", "signing_key": "ok"}


def test_readyz_is_not_ready_without_signing_keys(app: Flask, client: FlaskClient) -> None:
    rt = runtime(app)

    def no_database() -> list[object]:
        raise ConnectionError("database down")

    rt.keys._load_rows = no_database  # type: ignore[method-assign,assignment]
    rt.keys._snapshot = None  # a process that never loaded its keys

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json["checks"]["signing_key"] == "unavailable"


def test_keys_that_do_not_decrypt_make_readyz_503_and_say_why(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    # A database restored under another AUTHSERVER_KEY_ENCRYPTION_KEY: every key is there and
    # none opens.
    assert client.get("/readyz").status_code == 200  # the keys exist, sealed with the first
    rt = runtime(app)
    # As a process that starts under the other key sees them: nothing read or opened yet.
    rt.keys._cipher = KeyCipher("another-key-encryption-key-than-the-keys-were-sealed-with")
    rt.keys._snapshot = None
    rt.keys._parsed = {}

    response = client.get("/readyz")
    jwks = client.get("/.well-known/jwks.json")

    assert response.status_code == 503
    assert jwks.status_code == 503
    assert "AUTHSERVER_KEY_ENCRYPTION_KEY is not the key they were stored with" in caplog.text


def test_metrics_count_tokens_by_grant_rotations_and_failed_signins(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    registered = make_client(session)
    before = {
        "password": _metric(client, "authserver_tokens_issued_total", grant_type="password"),
        "rotations": _metric(client, "authserver_refresh_rotations_total"),
        "failures": _metric(client, "authserver_signin_failures_total"),
    }

    tokens = password_login(client, registered).json
    refresh(client, registered, tokens["refresh_token"])
    password_login(client, registered, password="not the password")

    assert _metric(client, "authserver_tokens_issued_total", grant_type="password") == (
        before["password"] + 1
    )
    assert _metric(client, "authserver_refresh_rotations_total") == before["rotations"] + 1
    assert _metric(client, "authserver_signin_failures_total") == before["failures"] + 1


def test_metrics_count_requests_by_endpoint_not_by_path(client: FlaskClient) -> None:
    before = _metric(
        client,
        "authserver_http_requests_total",
        endpoint="wellknown.jwks",
        method="GET",
        status="200",
    )

    client.get("/.well-known/jwks.json")

    after = _metric(
        client,
        "authserver_http_requests_total",
        endpoint="wellknown.jwks",
        method="GET",
        status="200",
    )
    assert after == before + 1
    metrics = client.get("/metrics", headers=SCRAPER).get_data(True)
    assert "authserver_db_pool_connections_in_use" in metrics


# -- who may read /metrics -------------------------------------------------------------------


def test_metrics_are_off_without_a_scraper_token(app: Flask, config: Config) -> None:
    without_token = create_app(replace(config, metrics_token=""))
    # Inside the test's rolled-back transaction, like the `app` fixture: the signing key this
    # app creates on its first request must not outlive the test.
    db.state(without_token).engine.dispose()
    db.state(without_token).session_factory = db.state(app).session_factory

    response = without_token.test_client().get("/metrics", headers=SCRAPER)

    assert response.status_code == 404
    assert "authserver_" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="no-credentials"),
        pytest.param("Bearer not-the-token", id="wrong-token"),
        pytest.param(f"Bearer {METRICS_TOKEN}x", id="token-with-a-suffix"),
        pytest.param(f"Bearer {METRICS_TOKEN[:-1]}", id="token-prefix"),
        pytest.param(f"Basic {METRICS_TOKEN}", id="other-scheme"),
    ],
)
def test_metrics_refuse_anyone_without_the_scraper_token(
    client: FlaskClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    response = client.get("/metrics", headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    assert "authserver_" not in response.get_data(as_text=True)


def test_metrics_answer_the_scraper_that_presents_the_token(client: FlaskClient) -> None:
    response = client.get("/metrics", headers=SCRAPER)

    assert response.status_code == 200
    assert "authserver_http_requests_total" in response.get_data(as_text=True)


def test_every_response_says_nosniff(client: FlaskClient) -> None:
    for path in ("/healthz", "/.well-known/jwks.json", "/login", "/nope"):
        assert client.get(path).headers["X-Content-Type-Options"] == "nosniff", path


@pytest.mark.parametrize("path", ["/healthz", "/.well-known/jwks.json"])
def test_production_responses_carry_hsts(app: Flask, config: Config, path: str) -> None:
    production = replace(
        config,
        env="production",
        issuer="https://login.example.test",
        secret_key="s" * 40,
        key_encryption_key="k" * 40,
    )
    production_app = create_app(production)
    # Inside the test's rolled-back transaction, like every other app here: a key this app
    # creates (sealed with its own key-encryption key) must not outlive the test.
    db.state(production_app).engine.dispose()
    db.state(production_app).session_factory = db.state(app).session_factory

    response = production_app.test_client().get(path, base_url="https://login.example.test")

    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_development_responses_carry_no_hsts(client: FlaskClient) -> None:
    assert "Strict-Transport-Security" not in client.get("/healthz").headers
