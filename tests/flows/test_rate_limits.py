"""Request rate limits (Flask-Limiter): 429 with Retry-After, per address and per client."""

from __future__ import annotations

from dataclasses import replace

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from authserver.app import create_app
from authserver.config import Config
from authserver.db import db
from authserver.models import AuditEvent
from authserver.services.clients import RegisteredClient
from tests.conftest import REDIS_URL, redis_answers
from tests.helpers import make_client, token_from


@pytest.fixture
def config(config: Config) -> Config:
    return replace(
        config,
        ratelimit_token="5/minute",
        ratelimit_token_per_client="4/minute",
    )


def test_the_token_endpoint_answers_429_with_retry_after_past_the_per_client_limit(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered = make_client(session, grant_types=["client_credentials"])

    answers = [token_from(client, registered, grant_type="client_credentials") for _ in range(5)]

    assert [a.status_code for a in answers] == [200, 200, 200, 200, 429]
    assert "Retry-After" not in answers[0].headers
    refused = answers[-1]
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.json["error"] == "temporarily_unavailable"


def test_the_per_address_limit_counts_every_client_from_that_address(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    clients = [
        make_client(session, name=f"svc {n}", grant_types=["client_credentials"]) for n in range(6)
    ]

    codes = [token_from(client, c, grant_type="client_credentials").status_code for c in clients]

    assert codes == [200, 200, 200, 200, 200, 429]


def test_a_rate_limit_hit_is_audited_once_per_minute_not_per_request(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered = make_client(session, grant_types=["client_credentials"])
    for _ in range(8):
        token_from(client, registered, grant_type="client_credentials")

    hits = session.scalar(select(func.count()).where(AuditEvent.event_type == "rate_limit_hit"))

    assert hits == 1


def _server(app: Flask, config: Config) -> Flask:
    """A fresh app with its own connection to the store, as another process would have, on
    the test's transaction."""
    application = create_app(config)
    db.state(application).session_factory = db.state(app).session_factory
    return application


def _client_credentials(server: Flask, registered: RegisteredClient) -> int:
    return token_from(server.test_client(), registered, grant_type="client_credentials").status_code


@pytest.mark.skipif(not redis_answers(), reason="no Redis on 127.0.0.1:6379")
def test_counts_kept_in_redis_outlive_the_process_that_made_them(
    app: Flask, config: Config, session: Session, rate_limit_key_prefix: str
) -> None:
    shared = replace(
        config, ratelimit_storage_uri=REDIS_URL, ratelimit_key_prefix=rate_limit_key_prefix
    )
    registered = make_client(session, grant_types=["client_credentials"])

    first = [_client_credentials(_server(app, shared), registered) for _ in range(4)]
    fifth = _client_credentials(_server(app, shared), registered)

    assert first == [200, 200, 200, 200]
    assert fifth == 429


@pytest.mark.skipif(not redis_answers(), reason="no Redis on 127.0.0.1:6379")
def test_servers_with_different_key_prefixes_count_apart_in_one_redis(
    app: Flask, config: Config, session: Session, rate_limit_key_prefix: str
) -> None:
    east, west = (
        replace(
            config,
            ratelimit_storage_uri=REDIS_URL,
            ratelimit_key_prefix=f"{rate_limit_key_prefix}.{region}",
        )
        for region in ("east", "west")
    )
    registered = make_client(session, grant_types=["client_credentials"])

    in_east = [_client_credentials(_server(app, east), registered) for _ in range(5)]
    in_west = [_client_credentials(_server(app, west), registered) for _ in range(5)]

    assert in_east == [200, 200, 200, 200, 429]
    assert in_west == [200, 200, 200, 200, 429]
