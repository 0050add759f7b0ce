"""Request rate limits (Flask-Limiter): 429 with Retry-After, per address and per client."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from authserver.config import Config
from authserver.models import AuditEvent
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


def _redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.mark.skipif(not _redis_answers(), reason="no Redis on 127.0.0.1:6379")
def test_counts_kept_in_redis_outlive_the_process_that_made_them(
    app: Flask, config: Config, session: Session
) -> None:
    from authserver.app import create_app
    from authserver.db import db

    with socket.create_connection(("127.0.0.1", 6379), timeout=1) as sock:
        sock.sendall(b"SELECT 15\r\nFLUSHDB\r\n")
        sock.recv(64)
    shared = replace(config, ratelimit_storage_uri="redis://127.0.0.1:6379/15")
    registered = make_client(session, grant_types=["client_credentials"])

    def server() -> Flask:
        # A fresh app opens its own connection to the store: like another process would.
        application = create_app(shared)
        db.state(application).session_factory = db.state(app).session_factory
        return application

    first = [
        token_from(server().test_client(), registered, grant_type="client_credentials").status_code
        for _ in range(4)
    ]
    fifth = token_from(server().test_client(), registered, grant_type="client_credentials")

    assert first == [200, 200, 200, 200]
    assert fifth.status_code == 429
