"""Helpers for the browser-facing flows: PKCE pairs, CSRF tokens from pages, sign-in, the
"Photo app" web client and the code flow through a signed-in browser."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.models import BrowserSession
from authserver.services.clients import RegisteredClient
from tests.helpers import PASSWORD, make_client, make_user, token_request

REDIRECT_URI = "https://rp.example.test/callback"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def csrf_token_of(page: TestResponse) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert match, "page has no CSRF field"
    return match.group(1)


def sign_in(
    http: FlaskClient,
    email: str = "ann@example.com",
    password: str = PASSWORD,
    next_path: str = "/account",
) -> TestResponse:
    page = http.get("/login", query_string={"next": next_path})
    return http.post(
        "/login",
        data={
            "email": email,
            "password": password,
            "csrf_token": csrf_token_of(page),
            "next": next_path,
        },
    )


def sign_in_new_user(app: Flask, session: Session, http: FlaskClient) -> None:
    """Ann, created and signed in in ``http``."""
    make_user(app, session)
    assert sign_in(http).status_code == 303


def authorize_url(client_id: str, challenge: str, **extra: str) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid email offline_access",
        "state": "xyz",
        "nonce": "n-0S6_WzA2Mj",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(extra)
    return "/oauth/authorize?" + urlencode(params)


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def web_client(session: Session, **overrides: object) -> RegisteredClient:
    """A third-party web app using the code flow: consent is asked."""
    options: dict[str, object] = {
        "name": "Photo app",
        "grant_types": ["authorization_code", "refresh_token"],
        "first_party": False,
        "redirect_uris": [REDIRECT_URI],
        "scopes": ["openid", "email", "profile", "offline_access"],
    }
    options.update(overrides)
    return make_client(session, **options)


def code_through_browser(
    browser: FlaskClient, rp: RegisteredClient, **authorize_params: str
) -> tuple[str, str]:
    """(code, verifier) from the authorization endpoint in this signed-in browser; the consent
    page is approved if one is shown (a third-party client asks first). ``authorize_params``
    go to the authorization request."""
    verifier, challenge = pkce_pair()
    url = authorize_url(rp.client.client_id, challenge, **authorize_params)
    answer = browser.get(url)
    if answer.status_code == 200:
        answer = browser.post(url, data={"csrf_token": csrf_token_of(answer), "decision": "allow"})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?"), location
    return query_of(location)["code"], verifier


def redeem_code(
    http: FlaskClient, rp: RegisteredClient, code: str, verifier: str | None, **form: str | None
) -> TestResponse:
    """The token request for ``code``; a field given as None (the verifier too) is left out."""
    fields: dict[str, str | None] = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
        **form,
    }
    return token_request(http, rp, **{k: v for k, v in fields.items() if v is not None})


def tokens_through_browser(
    browser: FlaskClient,
    rp: RegisteredClient,
    redeemer: FlaskClient | None = None,
    **authorize_params: str,
) -> dict[str, Any]:
    """Code flow in this signed-in browser (``code_through_browser``), the code redeemed by
    ``redeemer`` (the app's server; the browser itself by default). The refresh family is
    tied to the browser session."""
    code, verifier = code_through_browser(browser, rp, **authorize_params)
    tokens = redeem_code(redeemer or browser, rp, code, verifier)
    assert tokens.status_code == 200, tokens.json
    return dict(tokens.json)


def signed_in_as(http: FlaskClient) -> str | None:
    """Whom the account page greets, or None when it sends the browser to sign in."""
    page = http.get("/account")
    if page.status_code == 303:
        assert page.headers["Location"].startswith("/login?next=")
        return None
    assert page.status_code == 200
    match = re.search(r"Signed in as <strong>([^<]+)</strong>", page.get_data(as_text=True))
    assert match, "account page does not say who is signed in"
    return match.group(1)


def refused_as_csrf(response: TestResponse) -> bool:
    """The page that answers a form without a valid CSRF token."""
    return (
        response.status_code == 400
        and response.mimetype == "text/html"
        and "Please try again" in response.get_data(as_text=True)
    )


def browser_session_rows(session: Session) -> list[BrowserSession]:
    session.expire_all()
    return list(session.scalars(select(BrowserSession)))
