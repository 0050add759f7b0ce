"""An authorization code is spent by its first presentation, and a replay takes back what it
issued (RFC 6749 §4.1.2, §10.5; RFC 9700 §4.2.4).

- A replay by the code's own client revokes everything the first redemption issued: the
  refresh family if one was started, and the access token by its ``jti``, so also when no
  family was started (a third-party client without ``offline_access``). The revocation reaches
  userinfo, introspection and the revocation feed.
- A presentation that is refused once the code has been read (a wrong, missing or malformed
  PKCE verifier, another redirect URI) uses the code up: whoever holds a stolen code gets one
  guess. A request refused before the code is read (client authentication) does not.
- A code shown by another client has leaked: an unused one is used up, but another client
  never revokes what the code issued (codes leak through the browser after use, and anyone can
  name a public client).

Concurrent presentations are in ``test_authorization_code_concurrency.py``.
"""

from __future__ import annotations

import base64
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
    authorize_url,
    csrf_token_of,
    pkce_pair,
    query_of,
    sign_in,
    web_client,
)
from tests.helpers import (
    DEFAULT_AUDIENCE,
    basic_auth,
    make_resource_server,
    make_user,
    refresh,
    token_request,
)

OTHER_REDIRECT_URI = "https://rp.example.test/other-callback"


def _signed_in(app: Flask, session: Session, http: FlaskClient) -> None:
    make_user(app, session)
    assert sign_in(http).status_code == 303


def _code_for(http: FlaskClient, rp: RegisteredClient, scope: str) -> tuple[str, str]:
    """(code, verifier) for the signed-in user, consent given if asked."""
    verifier, challenge = pkce_pair()
    url = authorize_url(rp.client.client_id, challenge, scope=scope)
    response = http.get(url)
    if response.status_code == 200:
        response = http.post(url, data={"csrf_token": csrf_token_of(response), "decision": "allow"})
    assert response.status_code == 302, response.get_data(as_text=True)
    return query_of(response.headers["Location"])["code"], verifier


def _redeem(
    http: FlaskClient, rp: RegisteredClient, code: str, verifier: str | None, **form: str | None
) -> TestResponse:
    """A token request for the code; a field given as None is left out."""
    fields: dict[str, str | None] = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
        **form,
    }
    return token_request(http, rp, **{k: v for k, v in fields.items() if v is not None})


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
    _signed_in(app, session, http)
    rp = web_client(session, **registration)
    code, verifier = _code_for(http, rp, scope)
    first = _redeem(http, rp, code, verifier)
    assert first.status_code == 200, first.json
    return rp, code, verifier, dict(first.json)


@pytest.mark.parametrize(("registration", "scope"), CODE_FLOW_CLIENTS)
def test_a_replayed_code_gets_its_first_access_token_refused_at_userinfo(
    app: Flask, session: Session, client: FlaskClient, registration: dict[str, Any], scope: str
) -> None:
    rp, code, verifier, tokens = _redeemed_once(app, session, client, registration, scope)
    assert _userinfo(client, tokens["access_token"]).status_code == 200

    replay = _redeem(client, rp, code, verifier)

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

    _redeem(client, rp, code, verifier)

    assert _introspect(client, rs, tokens["access_token"]) == {"active": False}


@pytest.mark.parametrize(("registration", "scope"), CODE_FLOW_CLIENTS)
def test_a_replayed_code_puts_its_first_access_token_in_the_revocation_feed(
    app: Flask, session: Session, client: FlaskClient, registration: dict[str, Any], scope: str
) -> None:
    rp, code, verifier, tokens = _redeemed_once(app, session, client, registration, scope)
    rs = make_resource_server(session)
    claims = _claims(tokens["access_token"])
    assert claims["jti"] not in _feed_jtis(client, rs)

    _redeem(client, rp, code, verifier)

    # Listed until the token would have expired anyway.
    assert _feed_jtis(client, rs)[claims["jti"]] == claims["exp"]


def test_a_replay_with_a_wrong_verifier_still_revokes_what_the_code_issued(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    """The replay is the second presentation: what it carries does not matter."""
    rp, code, _, tokens = _redeemed_once(
        app, session, client, {"first_party": False}, "openid email"
    )

    _redeem(client, rp, code, SOMEONE_ELSES_VERIFIER)

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
    _signed_in(app, session, client)
    rp = web_client(session, public=public, redirect_uris=[REDIRECT_URI, OTHER_REDIRECT_URI])
    code, verifier = _code_for(client, rp, "openid email")
    refused = _redeem(client, rp, code, verifier, **refused_because)
    assert (refused.status_code, refused.json["error"]) == (400, error)

    right = _redeem(client, rp, code, verifier)

    assert right.status_code == 400
    assert right.json["error"] == "invalid_grant"
    assert "access_token" not in right.json


def test_a_redemption_naming_the_codes_own_audience_gets_its_tokens(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    _signed_in(app, session, client)
    rp = web_client(session)
    code, verifier = _code_for(client, rp, "openid email")

    tokens = _redeem(client, rp, code, verifier, resource=DEFAULT_AUDIENCE)

    assert tokens.status_code == 200, tokens.json
    assert _claims(tokens.json["access_token"])["aud"] == DEFAULT_AUDIENCE


def test_a_request_refused_before_the_code_is_read_leaves_it_redeemable(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    """Client authentication comes first: whoever cannot authenticate as the code's
    confidential client cannot spend its code either."""
    _signed_in(app, session, client)
    rp = web_client(session)
    code, verifier = _code_for(client, rp, "openid email")
    wrong_secret = base64.b64encode(f"{rp.client.client_id}:not-the-secret".encode()).decode()
    unauthenticated = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        headers={"Authorization": f"Basic {wrong_secret}"},
    )
    assert unauthenticated.status_code == 401

    redeemed = _redeem(client, rp, code, verifier)

    assert redeemed.status_code == 200, redeemed.json


# -- a code shown by another client -----------------------------------------------------------


def test_a_code_shown_by_another_client_can_no_longer_be_redeemed(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    _signed_in(app, session, client)
    rp = web_client(session)
    other = web_client(session, name="Other app", public=True)
    code, verifier = _code_for(client, rp, "openid email")
    shown_elsewhere = _redeem(client, other, code, verifier)
    assert shown_elsewhere.json["error"] == "invalid_grant"

    redeemed = _redeem(client, rp, code, verifier)

    assert redeemed.status_code == 400
    assert redeemed.json["error"] == "invalid_grant"


def test_a_redeemed_code_shown_by_another_client_revokes_nothing(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    rp, code, verifier, tokens = _redeemed_once(
        app, session, client, {"first_party": False}, "openid email offline_access"
    )
    other = web_client(session, name="Other app", public=True)

    shown_elsewhere = _redeem(client, other, code, verifier)

    assert shown_elsewhere.json["error"] == "invalid_grant"
    assert _userinfo(client, tokens["access_token"]).status_code == 200
    assert refresh(client, rp, tokens["refresh_token"]).status_code == 200
