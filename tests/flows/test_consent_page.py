"""The consent page: the app's name, logo, policy and terms links (RFC 7591 §2 metadata),
each scope in plain words, and "Not you? Switch account", which signs this browser out and
comes back to the same authorization request after the next sign-in."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.errors import ValidationError
from authserver.models import BrowserSession
from authserver.runtime import runtime
from authserver.services import client_registration as registration
from authserver.services.clients import find_client
from tests.browser_helpers import (
    REDIRECT_URI,
    authorize_url,
    csrf_token_of,
    pkce_pair,
    sign_in,
    sign_in_new_user,
    web_client,
)
from tests.helpers import make_user

LOGO = "https://photos.example/logo.png"
POLICY = "https://photos.example/privacy"
TERMS = "https://photos.example/terms"


def _consent_page(http: FlaskClient, client_id: str, scope: str) -> tuple[str, Any]:
    _, challenge = pkce_pair()
    url = authorize_url(client_id, challenge, scope=scope)
    page = http.get(url)
    assert page.status_code == 200, page.headers.get("Location")
    return url, page


def test_consent_page_shows_the_apps_logo_and_links_its_policy_and_terms(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session, logo_uri=LOGO, policy_uri=POLICY, tos_uri=TERMS)

    _, page = _consent_page(client, rp.client.client_id, "openid email")

    html = page.get_data(as_text=True)
    assert f'<img src="{LOGO}"' in html
    assert (
        f'<a href="{POLICY}" target="_blank" rel="noopener noreferrer">privacy policy</a>' in html
    )
    assert (
        f'<a href="{TERMS}" target="_blank" rel="noopener noreferrer">terms of service</a>' in html
    )
    # The page's policy lets that logo in, and no other site's images.
    assert "img-src 'self' https://photos.example;" in page.headers["Content-Security-Policy"]


def test_consent_page_of_an_app_without_logo_or_links_shows_neither(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)

    _, page = _consent_page(client, rp.client.client_id, "openid email")

    html = page.get_data(as_text=True)
    assert "<img" not in html
    assert "privacy policy" not in html
    assert "img-src 'self';" in page.headers["Content-Security-Policy"]


def test_each_scope_is_described_in_plain_words(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session, scopes=["openid", "email", "offline_access", "photos.read"])

    _, page = _consent_page(client, rp.client.client_id, "openid email offline_access photos.read")

    html = page.get_data(as_text=True)
    assert "<strong>Stay signed in</strong>" in html
    assert "<strong>Know who you are</strong>" in html
    assert "<strong>See your email address</strong>" in html
    assert "ann@example.com, and whether you confirmed it." in html
    # A scope without words is still shown, by its name.
    assert "“photos.read” access." in html
    assert "<li>offline_access</li>" not in html


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("logo_uri", "javascript:alert(1)"),
        ("logo_uri", "http://photos.example/logo.png"),
        ("policy_uri", "data:text/html,hello"),
        ("tos_uri", 'https://photos.example/"onmouseover="x'),
        ("logo_uri", "https://photos.example/a.png; script-src *"),
        ("tos_uri", "https://["),
    ],
)
def test_page_links_that_are_not_plain_https_are_refused(
    session: Session, field: str, value: str
) -> None:
    with pytest.raises(ValidationError, match=f"{field} must be an https URL"):
        web_client(session, **{field: value})


def test_dynamic_registration_takes_and_echoes_the_page_links(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    runtime(app).config = replace(runtime(app).config, dynamic_registration=1)
    issued = registration.create_initial_access_token(
        session, runtime(app).now(), expires_in=timedelta(days=1), uses=3
    )
    session.commit()
    body = {
        "client_name": "Notes app",
        "redirect_uris": [REDIRECT_URI],
        "token_endpoint_auth_method": "none",
        "scope": "openid email",
        "logo_uri": LOGO,
        "policy_uri": POLICY,
        "tos_uri": TERMS,
    }
    auth = {"Authorization": f"Bearer {issued.token}"}
    answer = client.post("/register", json=body, headers=auth)
    assert answer.status_code == 201, answer.json
    assert answer.json is not None
    assert (answer.json["logo_uri"], answer.json["policy_uri"], answer.json["tos_uri"]) == (
        LOGO,
        POLICY,
        TERMS,
    )
    stored = find_client(session, answer.json["client_id"], fresh=True)
    assert stored is not None
    assert stored.logo_uri == LOGO

    refused = client.post(
        "/register", json={**body, "logo_uri": "javascript:alert(1)"}, headers=auth
    )
    assert refused.status_code == 400
    assert refused.json == {
        "error": "invalid_client_metadata",
        "error_description": "logo_uri must be an https URL without spaces or quotes",
    }


def test_switch_account_signs_out_and_returns_to_the_same_request_after_sign_in(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    make_user(app, session, "bob@example.com")
    rp = web_client(session)
    url, page = _consent_page(client, rp.client.client_id, "openid email")

    switched = client.post("/logout", data={"csrf_token": csrf_token_of(page), "next": url})

    assert switched.status_code == 303
    login_url = switched.headers["Location"]
    assert login_url.startswith("/login?next=")
    session.expire_all()
    ended = session.scalars(select(BrowserSession)).one()
    assert ended.revoked_reason == "logout"
    # Bob signs in; the sign-in page sends him back to the same authorization request.
    signed_in = sign_in(client, "bob@example.com", next_path=url)
    assert signed_in.status_code == 303
    assert signed_in.headers["Location"] == url
    again = client.get(url)
    assert again.status_code == 200
    assert "Signed in as <strong>bob@example.com</strong>" in again.get_data(as_text=True)


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil"])
def test_switch_account_never_sends_the_browser_to_another_site(
    app: Flask, session: Session, client: FlaskClient, target: str
) -> None:
    sign_in_new_user(app, session, client)
    page = client.get("/account")

    answer = client.post("/logout", data={"csrf_token": csrf_token_of(page), "next": target})

    assert answer.status_code == 303
    assert answer.headers["Location"] == "/logged-out"
