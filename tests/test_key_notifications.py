"""A key change made by another process reaches a running server at once on PostgreSQL
(LISTEN/NOTIFY), not at its next key refresh: a withdrawn key leaves the JWKS and stops
signing without waiting for the interval, which here is an hour so that only the
notification can explain what the test sees."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
import requests
from sqlalchemy import Engine

from authserver import create_app
from authserver.config import Config
from authserver.db import db, utcnow
from authserver.runtime import runtime
from authserver.services import keys as key_service
from authserver.services.key_notifications import KeyChangeListener
from tests.conftest import (
    LiveServer,
    listening_socket,
    serving,
    stop_outbox_sender,
    truncate_all,
    url_of,
)
from tests.helpers import HANG_SECONDS, PASSWORD, make_client, make_user, wait_until

pytestmark = pytest.mark.postgres_only

HOUR = 3600


@pytest.fixture
def listening_server(engine: Engine, config: Config) -> Iterator[LiveServer]:
    listener = listening_socket()
    url = url_of(listener)
    application = create_app(
        replace(config, issuer=url, key_change_notifications=1, key_refresh_interval=HOUR)
    )
    with serving(application, listener):
        yield LiveServer(application, url)
    stop_outbox_sender(application)
    db.state(application).engine.dispose()
    truncate_all(engine)


def jwks_kids(server: LiveServer) -> set[str]:
    response = requests.get(server.url + "/.well-known/jwks.json", timeout=10)
    assert response.status_code == 200
    return {key["kid"] for key in response.json()["keys"]}


def kid_of(token: str) -> str:
    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def started_listener(server: LiveServer) -> KeyChangeListener:
    """The listener starts with the process's first request."""
    first = jwks_kids(server)
    assert first
    listener = runtime(server.app).key_listener
    assert listener is not None
    wait_until(listener.listening.is_set, "the key-change listener to listen")
    return listener


def test_a_key_withdrawn_elsewhere_leaves_the_jwks_and_stops_signing_at_once(
    listening_server: LiveServer,
) -> None:
    started_listener(listening_server)
    with db.transaction(listening_server.app) as session:
        make_user(listening_server.app, session)
        registered = make_client(session)
    auth = (registered.client.client_id, registered.client_secret)
    (old_kid,) = jwks_kids(listening_server)
    rt = runtime(listening_server.app)

    # Another process's transaction (the CLI's, here a connection of its own).
    with db.transaction(listening_server.app) as session:
        withdrawal = key_service.withdraw_signing_key(
            session,
            rt.key_cipher,
            rt.config.signing_alg,
            old_kid,
            utcnow(),
            stale_for=timedelta(seconds=rt.config.key_refresh_interval),
            token_ttl=timedelta(seconds=rt.config.access_token_ttl),
        )
    assert withdrawal.replacement is not None
    new_kid = withdrawal.replacement.kid

    wait_until(
        lambda: jwks_kids(listening_server) == {new_kid},
        "the JWKS to drop the withdrawn key",
        timeout=HANG_SECONDS,
    )
    token = requests.post(
        listening_server.url + "/oauth/token",
        data={"grant_type": "password", "username": "ann@example.com", "password": PASSWORD},
        auth=auth,
        timeout=10,
    ).json()["access_token"]
    assert kid_of(token) == new_kid


def test_the_listener_reads_the_keys_again_when_it_is_back(
    listening_server: LiveServer,
) -> None:
    listener = started_listener(listening_server)
    rt = runtime(listening_server.app)
    (old_kid,) = jwks_kids(listening_server)
    listener.close()  # nobody listens while the key changes

    with db.transaction(listening_server.app) as session:
        rotated = key_service.create_signing_key(
            session, rt.key_cipher, rt.config.signing_alg, utcnow()
        )
    assert jwks_kids(listening_server) == {old_kid}  # an hour's interval: nothing yet

    again = KeyChangeListener(
        db.state(listening_server.app)
        .engine.url.set(drivername="postgresql")
        .render_as_string(hide_password=False),
        rt.keys.refresh,
    )
    again.ensure_started()
    try:
        wait_until(again.listening.is_set, "the new listener to listen")
        assert jwks_kids(listening_server) == {old_kid, rotated.kid}
    finally:
        again.close()
