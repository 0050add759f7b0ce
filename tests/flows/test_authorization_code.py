"""Authorization code flow with PKCE and OpenID Connect (RFC 6749 §4.1, RFC 7636, Core §3.1)."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from authserver.services.clients import RegisteredClient
from tests.browser_helpers import (
    REDIRECT_URI,
    authorize_url,
    csrf_token_of,
    pkce_pair,
    query_of,
    sign_in,
)
from tests.helpers import make_client, make_user, token_request


def _web_client(session: Session, **overrides: object) -> RegisteredClient:
    options: dict[str, object] = {
        "name": "Photo app",
        "grant_types": ["authorization_code", "refresh_token"],
        "first_party": False,
        "redirect_uris": [REDIRECT_URI],
        "scopes": ["openid", "email", "profile", "offline_access"],
    }
    options.update(overrides)
    return make_client(session, **options)


def test_full_code_flow_with_pkce_and_consent_returns_tokens(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    rp = _web_client(session)
    verifier, challenge = pkce_pair()
    url = authorize_url(rp.client.client_id, challenge)

    first = client.get(url)
    assert first.status_code == 303
    assert first.headers["Location"].startswith("/login?next=")
    signed_in = sign_in(client, next_path=url)
    assert signed_in.status_code == 303
    consent = client.get(signed_in.headers["Location"])
    assert consent.status_code == 200
    assert "Photo app" in consent.get_data(as_text=True)
    approved = client.post(url, data={"csrf_token": csrf_token_of(consent), "decision": "allow"})
    assert approved.status_code == 302
    location = approved.headers["Location"]
    assert location.startswith(REDIRECT_URI)
    params = query_of(location)
    assert params["state"] == "xyz"
    assert params["iss"] == app.config["AUTHSERVER"].issuer

    tokens = token_request(
        client,
        rp,
        grant_type="authorization_code",
        code=params["code"],
        redirect_uri=REDIRECT_URI,
        code_verifier=verifier,
    )
    assert tokens.status_code == 200, tokens.json
    assert {"access_token", "refresh_token", "id_token"} <= set(tokens.json)
