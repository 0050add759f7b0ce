"""Token introspection, RFC 7662."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import update
from sqlalchemy.orm import Session

from authserver.db import utcnow
from authserver.models import User
from authserver.runtime import runtime
from authserver.services.browser_sessions import end_user_sessions
from authserver.services.clients import RegisteredClient, set_served_audiences
from authserver.services.refresh_tokens import RevocationReason
from authserver.services.users import disable_user
from tests.helpers import (
    basic_auth,
    make_client,
    make_resource_server,
    make_user,
    password_login,
    refresh,
    token_request,
)

INTROSPECT = "/oauth/introspect"
# The `config` fixture's default audience: the API that tokens without a resource are for.
ORDERS_API = "https://api.example.test"


def _rs(session: Session, serves: str = ORDERS_API) -> RegisteredClient:
    return make_resource_server(session, serves)


def _introspect(http: FlaskClient, rs: RegisteredClient, token: str) -> dict[str, Any]:
    response = http.post(INTROSPECT, data={"token": token}, headers=basic_auth(rs))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = response.json
    return body


def _login(
    app: Flask, session: Session, http: FlaskClient
) -> tuple[RegisteredClient, dict[str, Any]]:
    make_user(app, session)
    registered = make_client(session)
    tokens: dict[str, Any] = password_login(http, registered).json
    return registered, tokens


def test_live_access_token_is_active_with_its_claims(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, tokens = _login(app, session, client)

    answer = _introspect(client, _rs(session), tokens["access_token"])

    assert answer["active"] is True
    assert answer["client_id"] == registered.client.client_id
    assert answer["scope"] == "read write"
    assert answer["token_type"] == "Bearer"
    assert answer["iss"] == app.config["AUTHSERVER"].issuer
    assert {"sub", "exp", "iat", "aud", "jti", "sid"} <= set(answer)


def test_client_credentials_token_is_active(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    service = make_client(session, name="Batch job", grant_types=["client_credentials"])
    token = token_request(client, service, grant_type="client_credentials").json["access_token"]

    answer = _introspect(client, _rs(session), token)

    assert answer["active"] is True
    assert answer["sub"] == service.client.client_id


def test_expired_access_token_is_inactive_and_says_nothing_else(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    _, tokens = _login(app, session, client)
    rt = runtime(app)
    later = rt.now() + timedelta(seconds=601)
    rt.clock = lambda: later

    assert _introspect(client, _rs(session), tokens["access_token"]) == {"active": False}


def test_access_token_of_a_disabled_user_is_inactive(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    _, tokens = _login(app, session, client)
    disable_user(session, "ann@example.com", runtime(app).now())
    session.commit()

    assert _introspect(client, _rs(session), tokens["access_token"]) == {"active": False}


def test_access_token_without_a_family_of_a_user_disabled_is_inactive(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    """No refresh grant, so no family (no sid) to be revoked with the user: the user row
    itself is checked."""
    user = make_user(app, session)
    no_refresh = make_client(session, grant_types=["password"])
    tokens = password_login(client, no_refresh).json
    payload = tokens["access_token"].split(".")[1]
    assert "sid" not in json.loads(base64.urlsafe_b64decode(payload + "=="))
    session.execute(update(User).where(User.id == user.id).values(disabled=True))
    session.commit()

    assert _introspect(client, _rs(session), tokens["access_token"]) == {"active": False}


def test_access_token_issued_before_sign_out_everywhere_is_inactive(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    user = make_user(app, session)
    # A first-party app without refresh tokens: its access tokens carry no sid.
    no_refresh = make_client(session, name="Kiosk", grant_types=["password"])
    token = password_login(client, no_refresh).json["access_token"]
    end_user_sessions(
        session,
        user.id,
        RevocationReason.LOGOUT_EVERYWHERE,
        runtime(app).now() + timedelta(seconds=1),
    )
    session.commit()

    assert _introspect(client, _rs(session), token) == {"active": False}


def test_live_refresh_token_is_active_for_its_own_client(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, tokens = _login(app, session, client)

    answer = _introspect(client, registered, tokens["refresh_token"])

    assert answer["active"] is True
    assert answer["token_type"] == "refresh_token"


def test_refresh_token_is_inactive_to_another_client(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    _, tokens = _login(app, session, client)

    assert _introspect(client, _rs(session), tokens["refresh_token"]) == {"active": False}


def test_used_refresh_token_is_inactive(app: Flask, session: Session, client: FlaskClient) -> None:
    registered, tokens = _login(app, session, client)
    refresh(client, registered, tokens["refresh_token"])

    assert _introspect(client, registered, tokens["refresh_token"]) == {"active": False}


def test_token_from_another_issuer_is_inactive(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    foreign_key = ECKey.generate_key("P-256", private=True)
    claims = {"iss": "https://evil.example", "sub": "x", "exp": 4_000_000_000, "client_id": "x"}
    forged = jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": "evil"}, claims, foreign_key)

    assert _introspect(client, _rs(session), forged) == {"active": False}


def test_garbage_is_inactive(app: Flask, session: Session, client: FlaskClient) -> None:
    assert _introspect(client, _rs(session), "x" * 5000) == {"active": False}


def test_introspection_requires_an_authenticated_confidential_client(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    _, tokens = _login(app, session, client)
    public = make_client(session, name="Phone", public=True, grant_types=["refresh_token"])

    anonymous = client.post(INTROSPECT, data={"token": tokens["access_token"]})
    as_public = client.post(
        INTROSPECT,
        data={"token": tokens["access_token"], "client_id": public.client.client_id},
    )

    assert anonymous.status_code == 401
    assert as_public.status_code == 401
    assert "active" not in (as_public.json or {})


# -- who may learn about which token (RFC 7662 §2.1, §4) -------------------------------------


def test_a_resource_server_learns_nothing_of_a_token_for_an_audience_it_does_not_serve(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    _, tokens = _login(app, session, client)
    billing = _rs(session, serves="https://billing.example.test")

    assert _introspect(client, billing, tokens["access_token"]) == {"active": False}


def test_a_client_that_serves_nothing_learns_nothing_of_other_clients_tokens(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    _, tokens = _login(app, session, client)
    bystander = make_client(session, name="Bystander", grant_types=["client_credentials"])

    assert _introspect(client, bystander, tokens["access_token"]) == {"active": False}


def test_a_client_may_introspect_the_access_tokens_issued_to_it(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, tokens = _login(app, session, client)
    assert not registered.client.served_audiences

    answer = _introspect(client, registered, tokens["access_token"])

    assert answer["active"] is True
    assert answer["client_id"] == registered.client.client_id


def test_serving_an_audience_does_not_open_other_clients_refresh_tokens(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    _, tokens = _login(app, session, client)

    assert _introspect(client, _rs(session), tokens["access_token"])["active"] is True
    assert _introspect(client, _rs(session), tokens["refresh_token"]) == {"active": False}


def test_a_resource_server_registered_later_sees_the_tokens_of_its_audience(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    _, tokens = _login(app, session, client)
    orders = make_client(session, name="Orders API", grant_types=["client_credentials"])
    assert _introspect(client, orders, tokens["access_token"]) == {"active": False}

    set_served_audiences(session, orders.client.client_id, [ORDERS_API], utcnow())
    session.commit()

    assert _introspect(client, orders, tokens["access_token"])["active"] is True


def test_discovery_advertises_revocation_and_introspection(client: FlaskClient) -> None:
    metadata = client.get("/.well-known/oauth-authorization-server").json

    assert metadata["revocation_endpoint"].endswith("/oauth/revoke")
    assert metadata["introspection_endpoint"].endswith("/oauth/introspect")
    assert "client_secret_basic" in metadata["introspection_endpoint_auth_methods_supported"]
    assert "none" not in metadata["introspection_endpoint_auth_methods_supported"]
    assert "none" in metadata["revocation_endpoint_auth_methods_supported"]
