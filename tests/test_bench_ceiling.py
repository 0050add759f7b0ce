"""bench/ceiling_app.py is only a fair ceiling if it does authserver's work: the rotation
really claims the token (a replay is refused), every token leaves its audit row, and
introspection answers from authserver's own query. It reuses authserver's statements, so
this test also fails when they change in a way the ceiling no longer fits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from flask.testing import FlaskClient
from sqlalchemy import make_url

from authserver.db import db
from authserver.services.clients import RegisteredClient
from bench.ceiling_app import create_app as create_ceiling_app
from bench.run import _start_floor_family
from tests.conftest import LiveServer
from tests.helpers import basic_auth, make_client, make_user, password_login

pytestmark = pytest.mark.postgres_only  # the rotation statement is PostgreSQL's CTE form

AUDIENCE = "https://api.example.test"


@pytest.fixture
def libpq_url(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


@dataclass(frozen=True)
class Arranged:
    user_id: str
    app_client: RegisteredClient
    api_client: RegisteredClient  # the resource server that introspects
    access_token: str  # authserver's, issued to the user through app_client


@pytest.fixture
def arranged(live_server: LiveServer) -> Arranged:
    with db.transaction(live_server.app) as session:
        user = make_user(live_server.app, session)
        app_client = make_client(session)
        api_client = make_client(
            session, name="API", grant_types=["client_credentials"], first_party=False
        )
    signed_in = password_login(live_server.app.test_client(), app_client).json
    assert signed_in is not None
    return Arranged(str(user.id), app_client, api_client, signed_in["access_token"])


@pytest.fixture
def ceiling(
    live_server: LiveServer, arranged: Arranged, libpq_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FlaskClient]:
    settings = {
        "CEILING_DATABASE_URL": libpq_url,
        "CEILING_ISSUER": live_server.url,
        "CEILING_AUDIENCE": AUDIENCE,
        "CEILING_APP_CLIENT_ID": arranged.app_client.client.client_id,
        "CEILING_APP_CLIENT_SECRET": arranged.app_client.client_secret or "",
        "CEILING_APP_CLIENT_PK": str(arranged.app_client.client.id),
        "CEILING_RS_CLIENT_ID": arranged.api_client.client.client_id,
        "CEILING_RS_CLIENT_SECRET": arranged.api_client.client_secret or "",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    app = create_ceiling_app()
    yield app.test_client()
    for connection in app.extensions["ceiling_connections"]:
        connection.close()


def token_issued_rows(libpq_url: str, grant_type: str) -> int:
    with psycopg.connect(libpq_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM audit_events WHERE event_type = 'token_issued'"
            " AND details->>'grant_type' = %s",
            (grant_type,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_ceiling_rotates_refuses_a_replay_and_writes_a_row_per_token(
    ceiling: FlaskClient, arranged: Arranged, libpq_url: str
) -> None:
    registered = arranged.app_client
    with psycopg.connect(libpq_url) as conn:
        first = _start_floor_family(conn, arranged.user_id, str(registered.client.id))
    rows_before = token_issued_rows(libpq_url, "refresh_token")

    def rotate(token: str) -> tuple[int, dict[str, str]]:
        response = ceiling.post(
            "/ceiling/refresh",
            data={"grant_type": "refresh_token", "refresh_token": token},
            headers=basic_auth(registered),
        )
        assert response.json is not None
        return response.status_code, response.json

    status, body = rotate(first)
    assert status == 200
    second = body["refresh_token"]
    assert rotate(second)[0] == 200
    assert rotate(first) == (400, {"error": "invalid_grant"})  # used: the claim refuses it
    assert token_issued_rows(libpq_url, "refresh_token") == rows_before + 2


def test_the_ceiling_issues_a_client_token_with_its_row_and_without_when_asked(
    ceiling: FlaskClient, arranged: Arranged, libpq_url: str
) -> None:
    registered = arranged.api_client
    form = {"grant_type": "client_credentials"}

    issued = ceiling.post("/ceiling/client_credentials", data=form, headers=basic_auth(registered))
    assert issued.status_code == 200
    assert issued.json is not None
    assert issued.json["access_token"].count(".") == 2
    assert token_issued_rows(libpq_url, "client_credentials") == 1

    without = ceiling.post(
        "/ceiling/client_credentials?audit=0", data=form, headers=basic_auth(registered)
    )
    assert without.status_code == 200
    assert token_issued_rows(libpq_url, "client_credentials") == 1

    wrong = ceiling.post(
        "/ceiling/client_credentials",
        data=form,
        auth=(registered.client.client_id, "not-the-secret"),
    )
    assert wrong.status_code == 401


def test_the_ceiling_introspects_with_authservers_query(
    ceiling: FlaskClient, arranged: Arranged, libpq_url: str
) -> None:
    def introspect() -> dict[str, object]:
        response = ceiling.post(
            "/ceiling/introspect",
            data={"token": arranged.access_token},
            headers=basic_auth(arranged.api_client),
        )
        assert response.status_code == 200
        assert response.json is not None
        return dict(response.json)

    answer = introspect()
    assert answer["active"] is True
    assert answer["sub"] == arranged.user_id
    # The same query as authserver's: a disabled user's token is no longer granted.
    with psycopg.connect(libpq_url) as conn:
        conn.execute("UPDATE users SET disabled = true WHERE id = %s", (arranged.user_id,))
    assert introspect() == {"active": False}
