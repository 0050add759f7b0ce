"""An authorization code is spent by its first presentation, and a replay takes back what it
issued (RFC 6749 §4.1.2, §10.5; RFC 9700 §4.2.4).

- A replay by the code's own client revokes everything the first redemption issued: the
  refresh family if one was started, and the access token by its ``jti``, so also when no
  family was started (a third-party client without ``offline_access``). The revocation reaches
  userinfo, introspection and the revocation feed.
- A presentation that is refused once the code has been read (a wrong, missing or malformed
  PKCE verifier, another redirect URI) uses the code up: whoever holds a stolen code gets one
  guess. A request refused before the code is read (client authentication) does not
  (``test_authorization_code.py``, the wrong-secret test).
- A code shown by another client has leaked: an unused one is used up, but another client
  never revokes what the code issued (codes leak through the browser after use, and anyone can
  name a public client).

Concurrent presentations are in ``test_authorization_code_concurrency.py``.
"""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.services.clients import RegisteredClient
from tests.browser_helpers import (
    REDIRECT_URI,
    code_through_browser,
    redeem_code,
    sign_in_new_user,
    web_client,
)
from tests.helpers import (
    DEFAULT_AUDIENCE,
    basic_auth,
    make_resource_server,
    refresh,
)

OTHER_REDIRECT_URI = "https://rp.example.test/other-callback"


def _userinfo(http: FlaskClient, access_token: str) -> TestResponse:
    return http.get("/oauth/userinfo", headers={"Authorization": f"Bearer {access_token}"})


def _introspect(http: FlaskClient, rs: RegisteredClient, token: str) -> dict[str, Any]:
    response = http.post("/oauth/introspect", data={"token": token}, headers=basic_auth(rs))
    assert response.status_code == 200, response.json
    body: dict[str, Any] = response.json
    return body


def _feed_jtis(http: FlaskClient, rs: RegisteredClient) -> dict[str, int]:
    """jti -> expires_at of the revocation feed's jti entries."""
    response = http.get("/oauth/revocations", headers=basic_auth(rs))
    assert response.status_code == 200, response.json
    return {e["value"]: e["expires_at"] for e in response.json["entries"] if e["type"] == "jti"}


def _claims(access_token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(access_token, options={"verify_signature": False})
    return claims


# -- a replay revokes everything the first redemption issued --------------------------------

CODE_FLOW_CLIENTS = [
    pytest.param(
        {"first_party": True}, "openid email offline_access", id="first-party-offline-access"
    ),
    pytest.param({"first_party": True}, "openid email", id="first-party-no-offline-access"),
    pytest.param(
        {"first_party": True, "grant_types": ["authorization_code"]},
        "openid email",
        id="first-party-no-refresh-grant",
    ),
    pytest.param(
        {"first_party": False}, "openid email offline_access", id="third-party-offline-access"
    ),
    pytest.param({"first_party": False}, "openid email", id="third-party-no-offline-access"),
]


def _redeemed_once(
    app: Flask, session: Session, http: FlaskClient, registration: dict[str, Any], scope: str
) -> tuple[RegisteredClient, str, str, dict[str, Any]]:
    """(client, code, verifier, tokens of the first redemption)."""
    sign_in_new_user(app, session, http)
    rp = web_client(session, **registration)
    code, verifier = code_through_browser(http, rp, scope=scope)
    first = redeem_code(http, rp, code, verifier)
    assert first.status_code == 200, first.json
    return rp, code, verifier, dict(first.json)


@pytest.mark.parametrize(("registration", "scope"), CODE_FLOW_CLIENTS)
def test_a_replayed_code_gets_its_first_access_token_refused_at_userinfo(
    app: Flask, session: Session, client: FlaskClient, registration: dict[str, Any], scope: str
) -> None:
    rp, code, verifier, tokens = _redeemed_once(app, session, client, registration, scope)
    assert _userinfo(client, tokens["access_token"]).status_code == 200

    replay = redeem_code(client, rp, code, verifier)

    assert replay.json["error"] == "invalid_grant"
    refused = _userinfo(client, tokens["access_token"])
    assert refused.status_code == 401
    assert refused.json["error"] == "invalid_token"


@pytest.mark.parametrize(("registration", "scope"), CODE_FLOW_CLIENTS)
def test_a_replayed_code_makes_its_first_access_token_inactive_at_introspection(
    app: Flask, session: Session, client: FlaskClient, registration: dict[str, Any], scope: str
) -> None:
    rp, code, verifier, tokens = _redeemed_once(app, session, client, registration, scope)
    rs = make_resource_server(session)
    assert _introspect(client, rs, tokens["access_token"])["active"] is True

    redeem_code(client, rp, code, verifier)

    assert _introspect(client, rs, tokens["access_token"]) == {"active": False}


@pytest.mark.parametrize(("registration", "scope"), CODE_FLOW_CLIENTS)
def test_a_replayed_code_puts_its_first_access_token_in_the_revocation_feed(
    app: Flask, session: Session, client: FlaskClient, registration: dict[str, Any], scope: str
) -> None:
    rp, code, verifier, tokens = _redeemed_once(app, session, client, registration, scope)
    rs = make_resource_server(session)
    claims = _claims(tokens["access_token"])
    assert claims["jti"] not in _feed_jtis(client, rs)

    redeem_code(client, rp, code, verifier)

    # Listed until the token would have expired anyway.
    assert _feed_jtis(client, rs)[claims["jti"]] == claims["exp"]


def test_a_replay_with_a_wrong_verifier_still_revokes_what_the_code_issued(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    """The replay is the second presentation: what it carries does not matter."""
    rp, code, _, tokens = _redeemed_once(
        app, session, client, {"first_party": False}, "openid email"
    )

    redeem_code(client, rp, code, SOMEONE_ELSES_VERIFIER)

    assert _userinfo(client, tokens["access_token"]).status_code == 401


# -- a refused presentation uses the code up --------------------------------------------------


# Well formed (RFC 7636 §4.1: 43 characters of the unreserved set), but not the code's.
SOMEONE_ELSES_VERIFIER = "x" * 43

REFUSED_PRESENTATIONS = [
    pytest.param({"code_verifier": SOMEONE_ELSES_VERIFIER}, "invalid_grant", id="wrong-verifier"),
    pytest.param({"code_verifier": None}, "invalid_request", id="missing-verifier"),
    pytest.param({"code_verifier": "too-short"}, "invalid_request", id="malformed-verifier"),
    pytest.param({"redirect_uri": OTHER_REDIRECT_URI}, "invalid_grant", id="other-redirect-uri"),
    pytest.param({"redirect_uri": None}, "invalid_grant", id="missing-redirect-uri"),
    # RFC 8707 §2.2: the code was for the default audience; a resource may only name it.
    pytest.param(
        {"resource": "https://billing.example.test"}, "invalid_target", id="another-resource"
    ),
]


@pytest.mark.parametrize("public", [False, True], ids=["confidential", "public"])
@pytest.mark.parametrize(("refused_because", "error"), REFUSED_PRESENTATIONS)
def test_a_refused_presentation_uses_the_code_up(
    app: Flask,
    session: Session,
    client: FlaskClient,
    public: bool,
    refused_because: dict[str, str | None],
    error: str,
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session, public=public, redirect_uris=[REDIRECT_URI, OTHER_REDIRECT_URI])
    code, verifier = code_through_browser(client, rp, scope="openid email")
    refused = redeem_code(client, rp, code, verifier, **refused_because)
    assert (refused.status_code, refused.json["error"]) == (400, error)

    right = redeem_code(client, rp, code, verifier)

    assert right.status_code == 400
    assert right.json["error"] == "invalid_grant"
    assert "access_token" not in right.json


def test_a_redemption_naming_the_codes_own_audience_gets_its_tokens(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    code, verifier = code_through_browser(client, rp, scope="openid email")

    tokens = redeem_code(client, rp, code, verifier, resource=DEFAULT_AUDIENCE)

    assert tokens.status_code == 200, tokens.json
    assert _claims(tokens.json["access_token"])["aud"] == DEFAULT_AUDIENCE


# -- a code shown by another client -----------------------------------------------------------


def test_a_code_shown_by_another_client_can_no_longer_be_redeemed(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    other = web_client(session, name="Other app", public=True)
    code, verifier = code_through_browser(client, rp, scope="openid email")
    shown_elsewhere = redeem_code(client, other, code, verifier)
    assert shown_elsewhere.json["error"] == "invalid_grant"

    redeemed = redeem_code(client, rp, code, verifier)

    assert redeemed.status_code == 400
    assert redeemed.json["error"] == "invalid_grant"


def test_a_redeemed_code_shown_by_another_client_revokes_nothing(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    rp, code, verifier, tokens = _redeemed_once(
        app, session, client, {"first_party": False}, "openid email offline_access"
    )
    other = web_client(session, name="Other app", public=True)

    shown_elsewhere = redeem_code(client, other, code, verifier)

    assert shown_elsewhere.json["error"] == "invalid_grant"
    assert _userinfo(client, tokens["access_token"]).status_code == 200
    assert refresh(client, rp, tokens["refresh_token"]).status_code == 200
