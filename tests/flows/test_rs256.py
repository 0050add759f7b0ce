"""With AUTHSERVER_SIGNING_ALG=RS256 the server signs and publishes RSA keys instead of P-256."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import jwt
import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from authserver.config import Config
from tests.helpers import make_client, token_request

JWKS_PATH = "/.well-known/jwks.json"
ISSUER = "http://127.0.0.1:8000"  # the `config` fixture's issuer
DEFAULT_AUDIENCE = "https://api.example.test"
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth"}


@pytest.fixture
def config(config: Config) -> Config:
    return replace(config, signing_alg="RS256")


def _access_token(session: Session, http: FlaskClient) -> str:
    registered = make_client(session)
    response = token_request(http, registered, grant_type="client_credentials")
    assert response.status_code == 200, response.json
    token: str = response.json["access_token"]
    return token


def _jwks(http: FlaskClient) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(http.get(JWKS_PATH).get_data())
    return document


def test_rs256_access_token_header_says_rs256(session: Session, client: FlaskClient) -> None:
    header = jwt.get_unverified_header(_access_token(session, client))

    assert header["alg"] == "RS256"
    assert header["typ"] == "at+jwt"


def test_rs256_access_token_verifies_against_the_published_jwks(
    session: Session, client: FlaskClient
) -> None:
    token = _access_token(session, client)
    keys = jwt.PyJWKSet.from_dict(_jwks(client))

    claims = jwt.decode(
        token,
        keys[jwt.get_unverified_header(token)["kid"]].key,
        algorithms=["RS256"],
        audience=DEFAULT_AUDIENCE,
        issuer=ISSUER,
    )

    assert claims["aud"] == DEFAULT_AUDIENCE


def test_rs256_jwks_publishes_a_public_rsa_key_only(client: FlaskClient) -> None:
    keys = _jwks(client)["keys"]

    assert [key["kty"] for key in keys] == ["RSA"]
    assert keys[0]["alg"] == "RS256"
    assert keys[0]["use"] == "sig"
    assert not PRIVATE_JWK_MEMBERS & set(keys[0])
