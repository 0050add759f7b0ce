"""JWT access tokens (RFC 9068), the JWKS (RFC 7517) and server metadata (RFC 8414).

The live-server tests verify tokens the way a resource server does: PyJWT fetches the JWKS over
HTTP and checks signature, issuer and audience; forged tokens must fail that same check.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import replace
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask import Flask, request
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.app import create_app
from authserver.config import Config
from authserver.db import db, utcnow
from authserver.metrics import REQUESTS
from authserver.models import RefreshFamily
from authserver.runtime import runtime
from authserver.services.clients import RegisteredClient
from authserver.services.keys import create_signing_key
from tests.conftest import LiveServer
from tests.helpers import make_client, make_user, password_login, token_request

TOKEN_PATH = "/oauth/token"
JWKS_PATH = "/.well-known/jwks.json"
METADATA_PATHS = ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
ISSUER = "http://127.0.0.1:8000"  # the `config` fixture's issuer
DEFAULT_AUDIENCE = "https://api.example.test"  # the `config` fixture's default_audience
RFC9068_CLAIMS = {"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope"}
# RFC 9068 §2.2.1, where the user signed in: when, and how strongly.
AUTHENTICATION_CLAIMS = {"auth_time", "acr"}
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64url_json(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def _unb64url_json(segment: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return decoded


def _jwks(http: FlaskClient) -> dict[str, Any]:
    response = http.get(JWKS_PATH)
    assert response.status_code == 200
    document: dict[str, Any] = json.loads(response.get_data())
    return document


def _verified_claims(
    http: FlaskClient, token: str, audience: str = DEFAULT_AUDIENCE
) -> dict[str, Any]:
    """Verify against the JWKS the server publishes, as a resource server would."""
    kid = jwt.get_unverified_header(token)["kid"]
    keys = jwt.PyJWKSet.from_dict(_jwks(http))
    claims: dict[str, Any] = jwt.decode(
        token, keys[kid].key, algorithms=["ES256"], audience=audience, issuer=ISSUER
    )
    return claims


def _password_token(app: Flask, session: Session, http: FlaskClient) -> str:
    make_user(app, session)
    registered = make_client(session)
    response = password_login(http, registered)
    assert response.status_code == 200, response.json
    token: str = response.json["access_token"]
    return token


def _client_token(http: FlaskClient, registered: RegisteredClient) -> str:
    response = token_request(http, registered, grant_type="client_credentials")
    assert response.status_code == 200, response.json
    token: str = response.json["access_token"]
    return token


def _rotate_signing_key(app: Flask, session: Session) -> None:
    rt = runtime(app)
    rt.keys.refresh()  # the first key exists before it is rotated away
    create_signing_key(session, rt.key_cipher, rt.config.signing_alg, utcnow())
    session.commit()
    rt.keys.refresh()


# -- the token itself (RFC 9068 §2) ----------------------------------------------------------


def test_access_token_header_is_at_jwt_es256_with_a_published_kid(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    token = _password_token(app, session, client)

    header = jwt.get_unverified_header(token)

    assert header["typ"] == "at+jwt"
    assert header["alg"] == "ES256"
    assert header["kid"] in {key["kid"] for key in _jwks(client)["keys"]}


def test_password_grant_token_carries_exactly_the_rfc9068_claims_and_the_family_sid(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    token = _password_token(app, session, client)

    claims = _verified_claims(client, token)

    assert set(claims) == RFC9068_CLAIMS | AUTHENTICATION_CLAIMS | {"sid"}
    assert claims["acr"] == "urn:authserver:acr:password"
    assert claims["auth_time"] == claims["iat"]
    assert claims["iss"] == ISSUER
    assert claims["aud"] == DEFAULT_AUDIENCE
    assert claims["scope"] == "read write"
    assert claims["sid"] == str(session.scalars(select(RefreshFamily.id)).one())


def test_access_token_lives_600_seconds(app: Flask, session: Session, client: FlaskClient) -> None:
    token = _password_token(app, session, client)

    claims = _verified_claims(client, token)

    assert claims["exp"] - claims["iat"] == 600


def test_password_grant_subject_is_the_user_id(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    user = make_user(app, session)
    registered = make_client(session)

    token = password_login(client, registered).json["access_token"]

    claims = _verified_claims(client, token)
    assert claims["sub"] == str(user.id)
    assert claims["client_id"] == registered.client.client_id


def test_client_credentials_subject_is_the_client_id_and_there_is_no_sid(
    session: Session, client: FlaskClient
) -> None:
    registered = make_client(session)

    claims = _verified_claims(client, _client_token(client, registered))

    assert claims["sub"] == registered.client.client_id
    assert claims["client_id"] == registered.client.client_id
    assert "sid" not in claims


def test_access_token_carries_no_personal_data(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session, email="ann.personal@example.com")
    registered = make_client(session)
    token = password_login(client, registered, email="ann.personal@example.com").json[
        "access_token"
    ]

    header, payload, _ = token.split(".")

    decoded = json.dumps([_unb64url_json(header), _unb64url_json(payload)])
    assert "ann.personal" not in decoded
    assert "example.com" not in decoded
    assert set(_unb64url_json(payload)) <= RFC9068_CLAIMS | AUTHENTICATION_CLAIMS | {"sid"}


def test_every_access_token_has_its_own_jti(session: Session, client: FlaskClient) -> None:
    registered = make_client(session)

    first = _verified_claims(client, _client_token(client, registered))
    second = _verified_claims(client, _client_token(client, registered))

    assert first["jti"] != second["jti"]
    assert len(first["jti"]) >= 16


# -- verification by a resource server over HTTP ---------------------------------------------


@pytest.fixture
def live_client(live_server: LiveServer) -> RegisteredClient:
    """A confidential client committed to the live server's database."""
    with db.transaction(live_server.app) as session:
        return make_client(session)


def _live_token(live_server: LiveServer, registered: RegisteredClient) -> str:
    assert registered.client_secret is not None
    with requests.Session() as http:
        response = http.post(
            live_server.url + TOKEN_PATH,
            data={"grant_type": "client_credentials"},
            auth=(registered.client.client_id, registered.client_secret),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
    return token


def _verify_live(live_server: LiveServer, token: str) -> dict[str, Any]:
    """What a resource server does: fetch the JWKS, pin the algorithm, check iss and aud."""
    jwks = jwt.PyJWKClient(live_server.url + JWKS_PATH)
    signing_key = jwks.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token,
        signing_key.key,
        algorithms=["ES256"],
        audience=DEFAULT_AUDIENCE,
        issuer=live_server.url,
    )
    return claims


def test_access_token_verifies_against_the_published_jwks(
    live_server: LiveServer, live_client: RegisteredClient
) -> None:
    token = _live_token(live_server, live_client)

    claims = _verify_live(live_server, token)

    assert claims["client_id"] == live_client.client.client_id
    assert claims["iss"] == live_server.url


def test_discovery_leads_to_a_jwks_that_verifies_the_token(
    live_server: LiveServer, live_client: RegisteredClient
) -> None:
    token = _live_token(live_server, live_client)
    with requests.Session() as http:
        response = http.get(live_server.url + METADATA_PATHS[0], timeout=10)
        metadata = response.json()

    jwks = jwt.PyJWKClient(metadata["jwks_uri"])
    claims = jwt.decode(
        token,
        jwks.get_signing_key_from_jwt(token).key,
        algorithms=["ES256"],
        audience=DEFAULT_AUDIENCE,
        issuer=metadata["issuer"],
    )
    assert claims["iss"] == live_server.url


def test_token_with_a_tampered_payload_fails_verification(
    live_server: LiveServer, live_client: RegisteredClient
) -> None:
    header, payload, signature = _live_token(live_server, live_client).split(".")
    claims = _unb64url_json(payload)
    claims["scope"] = claims["scope"] + " admin"
    forged = ".".join([header, _b64url_json(claims), signature])

    with pytest.raises(jwt.InvalidSignatureError):
        _verify_live(live_server, forged)


def test_token_resigned_with_alg_none_fails_verification(
    live_server: LiveServer, live_client: RegisteredClient
) -> None:
    header, payload, _ = _live_token(live_server, live_client).split(".")
    unsigned_header = {**_unb64url_json(header), "alg": "none"}
    forged = ".".join([_b64url_json(unsigned_header), payload, ""])

    with pytest.raises(jwt.InvalidAlgorithmError):
        _verify_live(live_server, forged)


def test_token_hs256_signed_with_the_public_key_as_secret_fails_verification(
    live_server: LiveServer, live_client: RegisteredClient
) -> None:
    """The algorithm-confusion attack: HMAC keyed with the published public key's PEM."""
    token = _live_token(live_server, live_client)
    header, payload, _ = token.split(".")
    public_key = jwt.PyJWKClient(live_server.url + JWKS_PATH).get_signing_key_from_jwt(token).key
    pem = public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    hs_header = _b64url_json({**_unb64url_json(header), "alg": "HS256"})
    signing_input = f"{hs_header}.{payload}".encode()
    forged = f"{hs_header}.{payload}." + _b64url(
        hmac.new(pem, signing_input, hashlib.sha256).digest()
    )

    with pytest.raises(jwt.InvalidAlgorithmError):
        _verify_live(live_server, forged)


def test_token_signed_by_another_key_under_the_same_kid_fails_verification(
    live_server: LiveServer, live_client: RegisteredClient
) -> None:
    token = _live_token(live_server, live_client)
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    attacker_key = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(
        claims, attacker_key, algorithm="ES256", headers={"kid": header["kid"], "typ": "at+jwt"}
    )

    with pytest.raises(jwt.InvalidSignatureError):
        _verify_live(live_server, forged)


# -- key rotation ----------------------------------------------------------------------------


def _rotate_live(live_server: LiveServer) -> None:
    rt = runtime(live_server.app)
    with db.transaction(live_server.app) as session:
        create_signing_key(session, rt.key_cipher, rt.config.signing_alg, utcnow())
    rt.keys.refresh()


def _live_jwks_kids(live_server: LiveServer) -> set[str]:
    with requests.Session() as http:
        response = http.get(live_server.url + JWKS_PATH, timeout=10)
        return {key["kid"] for key in response.json()["keys"]}


def test_after_rotation_new_tokens_carry_the_new_kid(
    live_server: LiveServer, live_client: RegisteredClient
) -> None:
    before = jwt.get_unverified_header(_live_token(live_server, live_client))["kid"]

    _rotate_live(live_server)

    after = _live_token(live_server, live_client)
    assert jwt.get_unverified_header(after)["kid"] != before
    assert _verify_live(live_server, after)["client_id"] == live_client.client.client_id


def test_after_rotation_the_old_kid_stays_published(
    live_server: LiveServer, live_client: RegisteredClient
) -> None:
    old_kid = jwt.get_unverified_header(_live_token(live_server, live_client))["kid"]

    _rotate_live(live_server)

    new_kid = jwt.get_unverified_header(_live_token(live_server, live_client))["kid"]
    assert _live_jwks_kids(live_server) == {old_kid, new_kid}


def test_token_signed_before_rotation_still_verifies(
    live_server: LiveServer, live_client: RegisteredClient
) -> None:
    old_token = _live_token(live_server, live_client)

    _rotate_live(live_server)

    assert (
        _verify_live(live_server, old_token)["jti"]
        == jwt.decode(old_token, options={"verify_signature": False})["jti"]
    )


# -- the JWKS (RFC 7517 §5) ------------------------------------------------------------------


def test_jwks_publishes_no_private_key_members(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    _rotate_signing_key(app, session)  # a current and a retired key

    keys = _jwks(client)["keys"]

    assert len(keys) == 2
    for key in keys:
        assert not PRIVATE_JWK_MEMBERS & set(key), key


def test_jwks_keys_name_their_kid_alg_and_signature_use(client: FlaskClient) -> None:
    keys = _jwks(client)["keys"]

    assert keys
    for key in keys:
        assert key["kid"]
        assert key["alg"] == "ES256"
        assert key["use"] == "sig"


def test_jwks_is_publicly_cacheable(client: FlaskClient) -> None:
    response = client.get(JWKS_PATH)

    cache_control = response.headers["Cache-Control"]
    assert cache_control.startswith("public, max-age=")
    assert int(cache_control.removeprefix("public, max-age=")) > 0
    assert response.headers["ETag"]


def test_jwks_answers_304_to_if_none_match_with_its_etag(client: FlaskClient) -> None:
    etag = client.get(JWKS_PATH).headers["ETag"]

    response = client.get(JWKS_PATH, headers={"If-None-Match": etag})

    assert response.status_code == 304
    assert response.get_data() == b""


def test_jwks_answers_200_to_if_none_match_with_another_etag(client: FlaskClient) -> None:
    response = client.get(JWKS_PATH, headers={"If-None-Match": '"not-the-current-jwks"'})

    assert response.status_code == 200
    assert json.loads(response.get_data())["keys"]


def test_jwks_etag_changes_when_a_key_is_added(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    before = client.get(JWKS_PATH).headers["ETag"]

    _rotate_signing_key(app, session)

    assert client.get(JWKS_PATH).headers["ETag"] != before


def test_jwks_says_what_it_is_and_how_long(client: FlaskClient) -> None:
    response = client.get(JWKS_PATH)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/jwk-set+json"
    assert int(response.headers["Content-Length"]) == len(response.get_data())
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_jwks_head_answers_the_headers_without_the_document(client: FlaskClient) -> None:
    full = client.get(JWKS_PATH)

    head = client.head(JWKS_PATH)

    assert head.status_code == 200
    assert head.get_data() == b""
    assert head.headers["ETag"] == full.headers["ETag"]


def test_jwks_post_is_not_answered_from_memory(client: FlaskClient) -> None:
    assert client.post(JWKS_PATH).status_code == 405


def test_jwks_without_keys_ever_loaded_is_503_not_500(config: Config) -> None:
    """Keys are read on first use; with the database unreachable from the start there is
    nothing in memory, and Flask's error handling answers."""
    unreachable = replace(config, database_url="postgresql+psycopg://postgres@127.0.0.1:1/none")
    application = create_app(unreachable)

    response = application.test_client().get(JWKS_PATH)

    assert response.status_code == 503
    assert response.json["error"] == "temporarily_unavailable"


# -- server metadata (RFC 8414, OpenID Connect Discovery) ------------------------------------


@pytest.fixture(params=METADATA_PATHS)
def metadata(request: pytest.FixtureRequest, client: FlaskClient) -> dict[str, Any]:
    response = client.get(request.param)
    assert response.status_code == 200
    document: dict[str, Any] = response.json
    return document


def test_metadata_issuer_is_the_configured_issuer(metadata: dict[str, Any]) -> None:
    assert metadata["issuer"] == ISSUER


def test_metadata_endpoints_are_absolute_urls_under_the_issuer(metadata: dict[str, Any]) -> None:
    assert metadata["token_endpoint"] == ISSUER + TOKEN_PATH
    assert metadata["jwks_uri"] == ISSUER + JWKS_PATH


def test_metadata_lists_exactly_the_implemented_grant_types(metadata: dict[str, Any]) -> None:
    assert metadata["grant_types_supported"] == [
        "authorization_code",
        "client_credentials",
        "password",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:device_code",
    ]


def test_metadata_lists_the_token_endpoint_auth_methods(metadata: dict[str, Any]) -> None:
    assert set(metadata["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "none",
    }


def test_metadata_advertises_no_endpoint_that_does_not_exist(
    app: Flask, metadata: dict[str, Any]
) -> None:
    """Every ``*_endpoint`` the document names is a route this server answers with the
    method its RFC uses; dynamic registration, off by default, is not named at all."""
    routed = {rule.rule: rule.methods or set() for rule in app.url_map.iter_rules()}
    endpoints = {k: v for k, v in metadata.items() if k.endswith("_endpoint")}
    assert "registration_endpoint" not in endpoints
    assert {"device_authorization_endpoint", "pushed_authorization_request_endpoint"} <= set(
        endpoints
    )
    for member, url in endpoints.items():
        assert url.startswith(ISSUER), member
        path = url.removeprefix(ISSUER)
        assert path in routed, f"{member} names {path}, which nothing answers"


def test_metadata_offers_the_code_flow_only_with_s256_pkce(metadata: dict[str, Any]) -> None:
    assert metadata["response_types_supported"] == ["code"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["authorization_response_iss_parameter_supported"] is True


def test_metadata_has_what_openid_connect_discovery_requires(metadata: dict[str, Any]) -> None:
    # OpenID Connect Discovery 1.0 §3: the REQUIRED members.
    for member in (
        "issuer",
        "authorization_endpoint",
        "jwks_uri",
        "response_types_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
    ):
        assert metadata[member], member
    assert {"openid", "profile", "email"} <= set(metadata["scopes_supported"])


def test_every_url_the_metadata_advertises_answers(
    metadata: dict[str, Any], client: FlaskClient
) -> None:
    urls = [value for value in metadata.values() if isinstance(value, str) and "://" in value]
    advertised = [url for url in urls if url != metadata["issuer"]]

    assert advertised
    for url in advertised:
        assert url.startswith(ISSUER + "/"), url
        assert client.get(url.removeprefix(ISSUER)).status_code != 404, url


@pytest.mark.parametrize("path", METADATA_PATHS)
def test_metadata_from_memory_is_what_flask_answered_first(
    path: str, app: Flask, client: FlaskClient
) -> None:
    """The first GET goes through Flask; the ones after it come from memory
    (http/metadata_document.py), never reaching Flask, with the same status, headers and
    document."""
    reached_flask: list[str] = []
    app.before_request(lambda: reached_flask.append(request.path) and None)
    first = client.get(path)
    again = client.get(path)

    assert reached_flask == [path]

    assert (again.status_code, again.get_data()) == (first.status_code, first.get_data())
    assert sorted(again.headers.items()) == sorted(first.headers.items())
    assert first.headers["Cache-Control"] == "public, max-age=3600"
    assert first.headers["X-Content-Type-Options"] == "nosniff"
    head = client.head(path)
    assert head.status_code == 200
    assert head.get_data() == b""
    assert head.headers["Content-Length"] == first.headers["Content-Length"]


@pytest.mark.parametrize("path", METADATA_PATHS)
def test_metadata_answers_from_memory_are_counted_and_other_methods_go_to_flask(
    path: str, client: FlaskClient
) -> None:
    counted = REQUESTS.labels("wellknown.metadata", "GET", "200")
    client.get(path)
    before = counted._value.get()

    client.get(path)

    assert counted._value.get() == before + 1
    assert client.post(path).status_code == 405


@pytest.mark.parametrize("path", METADATA_PATHS)
def test_metadata_kept_from_a_request_without_origin_still_answers_any_origin(
    path: str, client: FlaskClient
) -> None:
    """The answer kept in memory came from a server-side fetch (no Origin); a browser app's
    later request must still be allowed to read it."""
    assert client.get(path).status_code == 200

    from_a_browser = client.get(path, headers={"Origin": "https://spa.example.test"})

    assert from_a_browser.headers["Access-Control-Allow-Origin"] == "*"


def test_both_metadata_documents_agree(client: FlaskClient) -> None:
    documents = [client.get(path).json for path in METADATA_PATHS]

    assert documents[0] == documents[1]
