"""The database work of the hot paths, as README's "What each operation costs the database"
table states it: one statement each, so one round trip (in autocommit outside the tests'
wrapping transaction, db.execute_alone)."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from tests.conftest import StatementLog
from tests.helpers import make_client, make_user, password_login, refresh, token_request


@pytest.mark.postgres_only  # SQLite rotates in three statements and writes the row apart
def test_a_refresh_is_one_statement_that_also_writes_its_audit_row(
    app: Flask, session: Session, client: FlaskClient, statements: StatementLog
) -> None:
    make_user(app, session)
    registered = make_client(session)
    signed_in = password_login(client, registered).json
    assert signed_in is not None
    statements.statements.clear()

    response = refresh(client, registered, signed_in["refresh_token"])

    assert response.status_code == 200
    [statement] = statements.of_the_request()
    assert "UPDATE refresh_tokens" in statement
    assert "INSERT INTO refresh_tokens" in statement
    assert "INSERT INTO audit_events" in statement


@pytest.mark.postgres_only  # SQLite rotates in three statements and writes the row apart
def test_a_refresh_naming_its_resource_is_one_statement_too(
    app: Flask, session: Session, client: FlaskClient, statements: StatementLog
) -> None:
    """RFC 8707 clients send the resource on every refresh: the check that it is the family's
    audience is part of the claim."""
    make_user(app, session)
    registered = make_client(session, audiences=["https://orders.example.test"])
    signed_in = password_login(client, registered).json
    assert signed_in is not None
    statements.statements.clear()

    response = refresh(
        client, registered, signed_in["refresh_token"], resource="https://orders.example.test"
    )

    assert response.status_code == 200
    [statement] = statements.of_the_request()
    assert "UPDATE refresh_tokens" in statement
    assert "INSERT INTO refresh_tokens" in statement


def test_client_credentials_is_one_insert_of_its_audit_row(
    session: Session, client: FlaskClient, statements: StatementLog
) -> None:
    registered = make_client(session)
    token_request(client, registered, grant_type="client_credentials")  # the client is cached
    statements.statements.clear()

    response = token_request(client, registered, grant_type="client_credentials")

    assert response.status_code == 200
    [statement] = statements.of_the_request()
    assert statement.lstrip().startswith("INSERT INTO audit_events")


def test_introspecting_an_access_token_is_one_select(
    app: Flask, session: Session, client: FlaskClient, statements: StatementLog
) -> None:
    make_user(app, session)
    registered = make_client(session)
    resource_server = make_client(
        session,
        grant_types=["client_credentials"],
        first_party=False,
        served_audiences=["https://api.example.test"],  # the `config` fixture's default
    )
    access_token = password_login(client, registered).json["access_token"]  # type: ignore[index]
    token_request(client, resource_server, grant_type="client_credentials")  # cached
    statements.statements.clear()

    response = client.post(
        "/oauth/introspect",
        data={"token": access_token},
        auth=(resource_server.client.client_id, resource_server.client_secret or ""),
    )

    assert response.status_code == 200
    assert response.json is not None
    assert response.json["active"] is True
    [statement] = statements.of_the_request()
    assert statement.lstrip().startswith("SELECT")
