"""Token revocation, RFC 7009."""

from __future__ import annotations

import base64
import secrets

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from authserver.models import RefreshFamily, RefreshToken
from authserver.services.clients import RegisteredClient
from authserver.services.refresh_tokens import digest_token
from tests.helpers import (
    basic_auth,
    make_client,
    make_resource_server,
    make_user,
    password_login,
    refresh,
)

REVOKE = "/oauth/revoke"
INTROSPECT = "/oauth/introspect"


def _setup(app: Flask, session: Session, http: FlaskClient) -> tuple[RegisteredClient, dict]:  # type: ignore[type-arg]
    make_user(app, session)
    registered = make_client(session)
    tokens = password_login(http, registered).json
    assert tokens is not None
    return registered, tokens


def _active(http: FlaskClient, rs: RegisteredClient, token: str) -> bool:
    answer = http.post(INTROSPECT, data={"token": token}, headers=basic_auth(rs)).json
    assert answer is not None
    return bool(answer["active"])


def test_revoking_a_refresh_token_revokes_its_whole_family(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, tokens = _setup(app, session, client)
    rotated = refresh(client, registered, tokens["refresh_token"]).json
    assert rotated is not None

    response = client.post(
        REVOKE, data={"token": rotated["refresh_token"]}, headers=basic_auth(registered)
    )

    assert response.status_code == 200
    assert refresh(client, registered, rotated["refresh_token"]).json["error"] == "invalid_grant"
    family = session.scalars(select(RefreshFamily)).one()
    assert family.revoked_reason == "revoked_by_client"


def test_access_tokens_of_a_revoked_family_are_inactive_at_once(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, tokens = _setup(app, session, client)
    rs = make_resource_server(session)
    assert _active(client, rs, tokens["access_token"])

    client.post(REVOKE, data={"token": tokens["refresh_token"]}, headers=basic_auth(registered))

    assert not _active(client, rs, tokens["access_token"])


def test_revoking_an_access_token_denylists_it_but_leaves_the_family(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, tokens = _setup(app, session, client)
    rs = make_resource_server(session)

    response = client.post(
        REVOKE,
        data={"token": tokens["access_token"], "token_type_hint": "access_token"},
        headers=basic_auth(registered),
    )

    assert response.status_code == 200
    assert not _active(client, rs, tokens["access_token"])
    assert refresh(client, registered, tokens["refresh_token"]).status_code == 200


def test_a_wrong_type_hint_still_finds_the_token(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, tokens = _setup(app, session, client)

    client.post(
        REVOKE,
        data={"token": tokens["refresh_token"], "token_type_hint": "access_token"},
        headers=basic_auth(registered),
    )

    assert refresh(client, registered, tokens["refresh_token"]).json["error"] == "invalid_grant"


def test_unknown_token_answers_200(app: Flask, session: Session, client: FlaskClient) -> None:
    registered, _ = _setup(app, session, client)

    response = client.post(REVOKE, data={"token": "no-such-token"}, headers=basic_auth(registered))

    assert response.status_code == 200


def test_already_revoked_token_answers_200(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, tokens = _setup(app, session, client)
    data = {"token": tokens["refresh_token"]}
    client.post(REVOKE, data=data, headers=basic_auth(registered))

    again = client.post(REVOKE, data=data, headers=basic_auth(registered))

    assert again.status_code == 200


def test_a_client_cannot_revoke_another_clients_refresh_token(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, tokens = _setup(app, session, client)
    other = make_client(session, name="Other app")

    response = client.post(
        REVOKE, data={"token": tokens["refresh_token"]}, headers=basic_auth(other)
    )

    assert response.status_code == 200
    assert refresh(client, registered, tokens["refresh_token"]).status_code == 200


def test_a_client_cannot_revoke_another_clients_access_token(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    _, tokens = _setup(app, session, client)
    other = make_client(session, name="Other app")
    rs = make_resource_server(session)

    client.post(REVOKE, data={"token": tokens["access_token"]}, headers=basic_auth(other))

    assert _active(client, rs, tokens["access_token"])


def test_revocation_needs_client_authentication(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, tokens = _setup(app, session, client)

    response = client.post(
        REVOKE,
        data={"token": tokens["refresh_token"], "client_id": registered.client.client_id},
    )

    assert response.status_code == 401
    assert response.json["error"] == "invalid_client"
    assert refresh(client, registered, tokens["refresh_token"]).status_code == 200


def test_a_public_client_revokes_its_own_refresh_token(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    public = make_client(
        session, name="Phone app", public=True, grant_types=["password", "refresh_token"]
    )
    tokens = password_login(client, public).json

    response = client.post(
        REVOKE,
        data={"token": tokens["refresh_token"], "client_id": public.client.client_id},
    )

    assert response.status_code == 200
    assert refresh(client, public, tokens["refresh_token"]).json["error"] == "invalid_grant"


def test_missing_token_parameter_is_invalid_request(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, _ = _setup(app, session, client)

    response = client.post(REVOKE, data={}, headers=basic_auth(registered))

    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"


def test_an_unknown_token_type_hint_is_ignored_and_the_token_still_revoked(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, tokens = _setup(app, session, client)

    response = client.post(
        REVOKE,
        data={"token": tokens["refresh_token"], "token_type_hint": "saml"},
        headers=basic_auth(registered),
    )

    # RFC 7009 §2.1: the hint only orders the search.
    assert response.status_code == 200
    assert refresh(client, registered, tokens["refresh_token"]).json["error"] == "invalid_grant"


def test_a_made_up_refresh_token_naming_a_real_family_revokes_nothing(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, tokens = _setup(app, session, client)
    family_part = tokens["refresh_token"].partition(".")[0]
    forged = f"{family_part}.{secrets.token_urlsafe(32)}"

    response = client.post(REVOKE, data={"token": forged}, headers=basic_auth(registered))

    assert response.status_code == 200
    assert session.scalars(select(RefreshFamily)).one().revoked_at is None
    assert refresh(client, registered, tokens["refresh_token"]).status_code == 200


def test_a_refresh_token_from_before_tokens_named_their_family_is_introspected_and_revoked(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, tokens = _setup(app, session, client)
    old = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.token_digest == digest_token(tokens["refresh_token"]))
        .values(token_digest=digest_token(old))
    )
    assert _active(client, registered, old)

    response = client.post(REVOKE, data={"token": old}, headers=basic_auth(registered))

    assert response.status_code == 200
    assert session.scalars(select(RefreshFamily)).one().revoked_reason == "revoked_by_client"
