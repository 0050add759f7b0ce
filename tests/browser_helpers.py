"""Helpers for the browser-facing flows: PKCE pairs, CSRF tokens from pages, sign-in."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.helpers import PASSWORD

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
