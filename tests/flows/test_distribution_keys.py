"""Every statement of the hot paths names the key its table would be distributed by (README
"Past one primary"): the family for refresh families and tokens, the digest for codes and
browser sessions. A statement that names none would be sent to every node."""

from __future__ import annotations

import base64
import re
import secrets

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from authserver.models import RefreshToken
from authserver.services.refresh_tokens import digest_token
from tests.browser_helpers import (
    authorize_url,
    csrf_token_of,
    pkce_pair,
    query_of,
    redeem_code,
    sign_in,
    web_client,
)
from tests.conftest import StatementLog
from tests.helpers import (
    advance_clock,
    basic_auth,
    make_client,
    make_resource_server,
    make_user,
    password_login,
    refresh,
)

# The distributed engines this is for speak PostgreSQL, and the statements are read as
# PostgreSQL's dialect writes them.
pytestmark = pytest.mark.postgres_only

# What a statement reading or writing the table must bind to a parameter (psycopg's
# ``%(name)s``). A family's two tables are co-located: either key addresses both.
KEY_OF = {
    "refresh_tokens": re.compile(
        r"refresh_(tokens\.family_id|families(_\d+)?\.id) = %\(|"
        r"%\(\w+\)s = refresh_(tokens\.family_id|families\.id)"
    ),
    "refresh_families": re.compile(r"refresh_(tokens\.family_id|families(_\d+)?\.id) = %\("),
    "authorization_codes": re.compile(r"authorization_codes\.code_digest = %\("),
    "browser_sessions": re.compile(r"browser_sessions\.token_digest = %\("),
}


def _unaddressed(statements: StatementLog, *tables: str) -> list[str]:
    """The statements reading or writing one of ``tables`` without naming its key."""
    return [
        statement
        for statement in statements.of_the_request()
        if any(
            re.search(rf"\b(FROM|UPDATE|JOIN)\s+{table}\b", statement)
            and not KEY_OF[table].search(statement)
            for table in tables
        )
    ]


FAMILY = ("refresh_tokens", "refresh_families")


def _signed_in(app: Flask, session: Session, http: FlaskClient):  # type: ignore[no-untyped-def]
    make_user(app, session)
    registered = make_client(session)
    tokens = password_login(http, registered).json
    assert tokens is not None
    return registered, tokens


def test_a_refresh_names_its_family_in_every_statement(
    app: Flask, session: Session, client: FlaskClient, statements: StatementLog
) -> None:
    registered, tokens = _signed_in(app, session, client)
    statements.statements.clear()

    rotated = refresh(client, registered, tokens["refresh_token"])
    narrowed = refresh(client, registered, rotated.json["refresh_token"], scope="read")

    assert rotated.status_code == 200
    assert narrowed.status_code == 200
    assert _unaddressed(statements, *FAMILY) == []


def test_a_retry_and_a_reuse_name_the_family_in_every_statement(
    app: Flask, session: Session, client: FlaskClient, statements: StatementLog
) -> None:
    registered, tokens = _signed_in(app, session, client)
    first = tokens["refresh_token"]
    second = refresh(client, registered, first).json["refresh_token"]
    statements.statements.clear()

    retried = refresh(client, registered, first)
    refresh(client, registered, second)
    reused = refresh(client, registered, first)

    assert retried.status_code == 200
    assert reused.json["error"] == "invalid_grant"
    assert _unaddressed(statements, *FAMILY) == []


def test_introspection_and_revocation_name_the_family_in_every_statement(
    app: Flask, session: Session, client: FlaskClient, statements: StatementLog
) -> None:
    registered, tokens = _signed_in(app, session, client)
    rs = make_resource_server(session)
    statements.statements.clear()

    for token in (tokens["refresh_token"], tokens["access_token"]):
        introspected = client.post(
            "/oauth/introspect", data={"token": token}, headers=basic_auth(registered)
        )
        assert introspected.json["active"] is True
    by_resource_server = client.post(
        "/oauth/introspect", data={"token": tokens["access_token"]}, headers=basic_auth(rs)
    )
    revoked = client.post(
        "/oauth/revoke", data={"token": tokens["refresh_token"]}, headers=basic_auth(registered)
    )

    assert by_resource_server.json["active"] is True
    assert revoked.status_code == 200
    assert _unaddressed(statements, *FAMILY) == []


def test_only_the_lookup_of_a_token_from_before_names_no_family(
    app: Flask, session: Session, client: FlaskClient, statements: StatementLog
) -> None:
    registered, tokens = _signed_in(app, session, client)
    old = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.token_digest == digest_token(tokens["refresh_token"]))
        .values(token_digest=digest_token(old))
    )
    statements.statements.clear()

    rotated = refresh(client, registered, old)

    assert rotated.status_code == 200
    [lookup] = _unaddressed(statements, *FAMILY)
    assert "refresh_tokens.token_digest = %(" in lookup


@pytest.mark.parametrize("replayed", [False, True])
def test_a_code_is_named_by_its_digest_in_every_statement(
    app: Flask, session: Session, client: FlaskClient, statements: StatementLog, replayed: bool
) -> None:
    make_user(app, session)
    rp = web_client(session, first_party=True)
    verifier, challenge = pkce_pair()
    url = authorize_url(rp.client.client_id, challenge)
    sign_in(client, next_path=url)
    code = query_of(client.get(url).headers["Location"])["code"]
    if replayed:
        assert redeem_code(client, rp, code, verifier).status_code == 200
    statements.statements.clear()

    redeemed = redeem_code(client, rp, code, verifier)

    assert redeemed.status_code == (400 if replayed else 200)
    assert _unaddressed(statements, "authorization_codes", *FAMILY) == []


def test_a_browser_session_is_named_by_its_digest_in_every_statement_of_an_authorization(
    app: Flask, session: Session, client: FlaskClient, statements: StatementLog
) -> None:
    """An authorization request reads the session and, past the touch interval, writes its
    idle expiry. (The account page's device list is by user, on every node.)"""
    make_user(app, session)
    rp = web_client(session, first_party=True)
    _, challenge = pkce_pair()
    sign_in(client)
    advance_clock(app, 120)  # past the touch interval: the next request writes the session
    statements.statements.clear()

    authorized = client.get(authorize_url(rp.client.client_id, challenge))

    assert "code" in query_of(authorized.headers["Location"])
    assert any("UPDATE browser_sessions" in s for s in statements.of_the_request())
    assert _unaddressed(statements, "browser_sessions", "authorization_codes") == []


def test_signing_out_names_the_session_by_its_digest(
    app: Flask, session: Session, client: FlaskClient, statements: StatementLog
) -> None:
    """Its own row; the families issued through it and the apps to tell are found by the
    session's id, on every node (README "Past one primary")."""
    make_user(app, session)
    sign_in(client)
    csrf_token = csrf_token_of(client.get("/account"))
    statements.statements.clear()

    signed_out = client.post("/logout", data={"csrf_token": csrf_token})

    assert signed_out.status_code in (302, 303)
    [ended] = [s for s in statements.of_the_request() if "UPDATE browser_sessions" in s]
    assert KEY_OF["browser_sessions"].search(ended)


def test_a_made_up_token_is_refused_before_any_statement(
    app: Flask, session: Session, client: FlaskClient, statements: StatementLog
) -> None:
    registered, _ = _signed_in(app, session, client)
    statements.statements.clear()

    refused = refresh(client, registered, f"not-a-family.{secrets.token_urlsafe(32)}")

    assert refused.json["error"] == "invalid_grant"
    assert [s for s in statements.of_the_request() if "refresh_" in s] == []
