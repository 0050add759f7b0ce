"""The per-process memory of client registrations (services/client_cache.py).

A change made by another process is simulated with a plain SQL UPDATE, which no ORM event of
this process sees: that is what another instance's change looks like from here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from authserver.config import Config
from authserver.models import Client
from authserver.models.clients import digest_client_secret
from authserver.services.clients import RegisteredClient
from tests.conftest import StatementLog
from tests.helpers import Clock, make_client, token_request


def _client_credentials(http: FlaskClient, registered: RegisteredClient) -> int:
    return token_request(http, registered, grant_type="client_credentials").status_code


def _changed_elsewhere(session: Session, registered: RegisteredClient, **values: Any) -> None:
    session.execute(
        update(Client).where(Client.id == registered.client.id).values(**values),
        execution_options={"synchronize_session": False},
    )
    session.commit()


def test_a_known_client_authenticates_from_memory(
    session: Session, client: FlaskClient, statements: StatementLog
) -> None:
    registered = make_client(session)
    assert _client_credentials(client, registered) == 200
    statements.statements.clear()

    assert _client_credentials(client, registered) == 200
    assert _client_credentials(client, registered) == 200

    assert statements.reading("clients") == []
    assert statements.reading("sign_in_throttles") == []


def test_a_client_disabled_elsewhere_is_refused_once_the_cache_time_is_over(
    session: Session, client: FlaskClient, clock: Clock, config: Config
) -> None:
    registered = make_client(session)
    assert _client_credentials(client, registered) == 200
    _changed_elsewhere(session, registered, disabled=True)

    clock.advance(seconds=config.client_cache_seconds - 1)
    still_remembered = _client_credentials(client, registered)
    clock.advance(seconds=1)
    after = _client_credentials(client, registered)

    assert still_remembered == 200
    assert after == 401


def test_a_client_disabled_in_this_process_is_refused_at_once(
    session: Session, client: FlaskClient
) -> None:
    registered = make_client(session)
    assert _client_credentials(client, registered) == 200

    registered.client.disabled = True
    session.commit()

    assert _client_credentials(client, registered) == 401


def test_a_new_secret_works_at_once_and_the_old_one_is_refused_after_the_cache_time(
    session: Session, client: FlaskClient, clock: Clock, config: Config
) -> None:
    registered = make_client(session)
    assert _client_credentials(client, registered) == 200
    new = RegisteredClient(client=registered.client, client_secret="a-new-secret-" + "x" * 32)
    _changed_elsewhere(session, registered, secret_digest=digest_client_secret(new.client_secret))

    assert _client_credentials(client, new) == 200
    clock.advance(seconds=config.client_cache_seconds)
    assert _client_credentials(client, registered) == 401
    assert _client_credentials(client, new) == 200


def test_a_wrong_secret_is_never_accepted_from_memory(
    session: Session, client: FlaskClient
) -> None:
    registered = make_client(session)
    assert _client_credentials(client, registered) == 200
    wrong = RegisteredClient(client=registered.client, client_secret="not-the-secret")

    assert _client_credentials(client, wrong) == 401


class TestCacheOff:
    @pytest.fixture
    def config(self, config: Config) -> Config:
        return replace(config, client_cache_seconds=0)

    def test_every_request_reads_the_registration(
        self, app: Flask, session: Session, client: FlaskClient
    ) -> None:
        registered = make_client(session)
        assert _client_credentials(client, registered) == 200

        _changed_elsewhere(session, registered, disabled=True)

        assert _client_credentials(client, registered) == 401
