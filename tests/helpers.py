"""Small builders shared by the tests. They call the services, never raw SQL."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.models import User
from authserver.runtime import runtime
from authserver.services import clients as client_service
from authserver.services import users as user_service
from authserver.services.clients import RegisteredClient

PASSWORD = "correct horse battery staple"

# How long a test waits for something that should happen before it calls it a hang. A test
# waits for a condition and is judged on it, never on how soon it came: on a shared two-core
# machine under load, anything may take many times longer than on a quiet one.
HANG_SECONDS = 120.0


def wait_until(condition: Callable[[], bool], what: str, *, timeout: float = HANG_SECONDS) -> None:
    """Return as soon as ``condition()`` holds; fail the test if it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {timeout:.0f} s for {what}"
        time.sleep(0.02)


def waiting_on_a_lock(engine: Engine) -> bool:
    """Whether a connection to the test database is waiting on a lock (PostgreSQL): the
    condition a race test waits for before it lets the first transaction commit."""
    with engine.connect() as conn:
        waiting = conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return bool(waiting)


def make_user(
    app: Flask, session: Session, email: str = "ann@example.com", password: str = PASSWORD
) -> User:
    rt = runtime(app)
    user = user_service.create_user(
        session, rt.hasher, email, password, password_policy=rt.password_policy
    )
    session.commit()
    return user


def make_client(session: Session, **overrides: Any) -> RegisteredClient:
    options: dict[str, Any] = {
        "name": "Test app",
        "grant_types": ["password", "refresh_token", "client_credentials"],
        "first_party": True,
        "scopes": ["read", "write"],
    }
    options.update(overrides)
    registered = client_service.create_client(session, **options)
    session.commit()
    return registered


# The `config` fixture's default audience: what tokens carry when no resource is named.
DEFAULT_AUDIENCE = "https://api.example.test"


def make_resource_server(
    session: Session, serves: str = DEFAULT_AUDIENCE, **overrides: Any
) -> RegisteredClient:
    """A confidential client registered as the resource server of ``serves``: it may
    introspect tokens for that audience and read the revocation feed."""
    options: dict[str, Any] = {
        "name": "Orders API",
        "grant_types": ["client_credentials"],
        "first_party": False,
        "served_audiences": [serves],
    }
    options.update(overrides)
    return make_client(session, **options)


def basic_auth(registered: RegisteredClient) -> dict[str, str]:
    raw = f"{registered.client.client_id}:{registered.client_secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def client_auth(registered: RegisteredClient) -> tuple[dict[str, str], dict[str, str]]:
    """(headers, form fields) that authenticate this client the way it is registered to."""
    if registered.client_secret is None:
        return {}, {"client_id": registered.client.client_id}
    return basic_auth(registered), {}


def account_api_request(app: Flask) -> dict[str, str]:
    """Token-request (or authorization-request) fields that ask for an account-API token:
    its audience by name (RFC 8707 ``resource``) and its scope."""
    return {"resource": runtime(app).config.issuer + "/account", "scope": "account"}


def token_request(http: FlaskClient, registered: RegisteredClient, **form: str) -> TestResponse:
    headers, extra = client_auth(registered)
    return http.post("/oauth/token", data={**extra, **form}, headers=headers)


def password_login(
    http: FlaskClient,
    registered: RegisteredClient,
    email: str = "ann@example.com",
    password: str = PASSWORD,
    **form: str,
) -> TestResponse:
    return token_request(
        http, registered, grant_type="password", username=email, password=password, **form
    )


def refresh(
    http: FlaskClient, registered: RegisteredClient, token: str, **form: str
) -> TestResponse:
    return token_request(http, registered, grant_type="refresh_token", refresh_token=token, **form)


def token_from(
    http: FlaskClient, registered: RegisteredClient, ip: str = "192.0.2.1", **form: str
) -> TestResponse:
    """A token request from a given client address, with the client's Basic credentials."""
    return http.post(
        "/oauth/token",
        data=form,
        auth=(registered.client.client_id, registered.client_secret or ""),
        environ_base={"REMOTE_ADDR": ip},
    )


def advance_clock(app: Flask, seconds: float) -> None:
    """Move the server's clock (``runtime(app).clock``) forward, for expiries and delays."""
    rt = runtime(app)
    later = rt.now() + timedelta(seconds=seconds)
    rt.clock = lambda: later


class Clock:
    """A clock the test moves by hand; installed as ``runtime(app).clock`` by the ``clock``
    fixture."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)
