"""Dynamic client registration (RFC 7591) and its management (RFC 7592): off by default;
behind the operator's initial access tokens; held to the rules of ``authserver clients
create``; each registration managed only with its own registration access token; and no
token or secret kept or logged in clear."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.errors import BearerError
from authserver.models import AuditEvent, Client, InitialAccessToken, Revocation
from authserver.runtime import runtime
from authserver.services import client_registration as registration
from authserver.services.clients import RegisteredClient, find_client
from tests.browser_helpers import (
    REDIRECT_URI,
    code_through_browser,
    query_of,
    redeem_code,
    sign_in_new_user,
    tokens_through_browser,
)
from tests.helpers import Clock, basic_auth, make_client, refresh, token_request

DAY = timedelta(days=1)


@pytest.fixture
def registration_on(app: Flask) -> None:
    runtime(app).config = replace(runtime(app).config, dynamic_registration=1)


def _initial_token(
    session: Session, app: Flask, *, uses: int = 5, expires_in: timedelta = DAY
) -> str:
    issued = registration.create_initial_access_token(
        session, runtime(app).now(), expires_in=expires_in, uses=uses
    )
    session.commit()
    return issued.token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _register(http: FlaskClient, token: str | None, body: Any, **headers: str) -> TestResponse:
    sent = {**(_bearer(token) if token is not None else {}), **headers}
    return http.post("/register", json=body, headers=sent)


PUBLIC_APP = {
    "client_name": "Notes app",
    "redirect_uris": [REDIRECT_URI],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "none",
    "scope": "openid email offline_access",
}
SERVICE = {
    "client_name": "Nightly export",
    "grant_types": ["client_credentials"],
    "token_endpoint_auth_method": "client_secret_basic",
    "scope": "read",
}


def _registered(http: FlaskClient, token: str, body: dict[str, Any]) -> dict[str, Any]:
    response = _register(http, token, body)
    assert response.status_code == 201, response.json
    return dict(response.json)


def _as_client(session: Session, answer: dict[str, Any]) -> RegisteredClient:
    client = find_client(session, answer["client_id"], fresh=True)
    assert client is not None
    return RegisteredClient(client=client, client_secret=answer.get("client_secret"))


def _client_count(session: Session) -> int:
    return len(list(session.scalars(select(Client.id))))


def _management_path(answer: dict[str, Any]) -> str:
    return "/register/" + answer["client_id"]


def _assert_invalid_token(response: TestResponse) -> None:
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.json["error"] == "invalid_token"
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


# -- off by default ---------------------------------------------------------------------------


def test_registration_is_off_by_default_even_with_a_valid_token(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    token = _initial_token(session, app)
    before = _client_count(session)

    registered = _register(client, token, PUBLIC_APP)
    managed = client.get("/register/some-client", headers=_bearer(token))
    metadata = client.get("/.well-known/oauth-authorization-server").json
    oidc = client.get("/.well-known/openid-configuration").json

    assert runtime(app).config.dynamic_registration == 0
    assert registered.status_code == 404
    assert registered.json["error"] == "not_found"
    assert managed.status_code == 404
    assert "registration_endpoint" not in metadata
    assert "registration_endpoint" not in oidc
    assert _client_count(session) == before


def test_metadata_advertises_the_registration_endpoint_when_on(
    app: Flask, client: FlaskClient, registration_on: None
) -> None:
    issuer = runtime(app).config.issuer

    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        assert client.get(path).json["registration_endpoint"] == issuer + "/register"


# -- initial access tokens --------------------------------------------------------------------


def test_registration_without_a_token_is_401_with_a_bearer_challenge(
    session: Session, client: FlaskClient, registration_on: None
) -> None:
    before = _client_count(session)

    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Basic Zm9vOmJhcg=="}):
        _assert_invalid_token(client.post("/register", json=PUBLIC_APP, headers=headers))

    assert _client_count(session) == before


def test_an_unknown_token_is_refused(
    app: Flask, session: Session, client: FlaskClient, registration_on: None
) -> None:
    real = _initial_token(session, app)

    _assert_invalid_token(_register(client, real[:-2] + "xx", PUBLIC_APP))
    # The digest itself is not a token either.
    digest = hashlib.sha256(real.encode()).hexdigest()
    _assert_invalid_token(_register(client, digest, PUBLIC_APP))


def test_an_expired_token_is_refused(
    app: Flask, session: Session, client: FlaskClient, clock: Clock, registration_on: None
) -> None:
    token = _initial_token(session, app, expires_in=timedelta(minutes=10))
    clock.advance(minutes=10)

    _assert_invalid_token(_register(client, token, PUBLIC_APP))


def test_a_used_up_token_is_refused(
    app: Flask, session: Session, client: FlaskClient, registration_on: None
) -> None:
    token = _initial_token(session, app, uses=1)
    _registered(client, token, PUBLIC_APP)
    before = _client_count(session)

    _assert_invalid_token(_register(client, token, PUBLIC_APP))

    assert _client_count(session) == before


def test_a_revoked_token_is_refused(
    app: Flask, session: Session, client: FlaskClient, registration_on: None
) -> None:
    token = _initial_token(session, app)
    row = session.scalars(select(InitialAccessToken)).one()
    registration.revoke_initial_access_token(session, str(row.id), runtime(app).now())
    session.commit()

    _assert_invalid_token(_register(client, token, PUBLIC_APP))


def test_a_refused_registration_does_not_spend_a_use(
    app: Flask, session: Session, client: FlaskClient, registration_on: None
) -> None:
    token = _initial_token(session, app, uses=1)

    refused = _register(client, token, {**PUBLIC_APP, "redirect_uris": ["https://*.rp.test/cb"]})

    assert refused.status_code == 400
    assert _register(client, token, PUBLIC_APP).status_code == 201


def test_the_last_use_taken_meanwhile_leaves_no_client_behind(
    app: Flask, session: Session, registration_on: None
) -> None:
    """Two registrations at once with a one-use token: the one that counts second is
    refused in the statement that takes the use, and its client is not kept."""
    issuer = runtime(app).config.issuer
    now = runtime(app).now()
    token = _initial_token(session, app, uses=1)
    first = registration.authenticate_initial_access_token(session, token, now)
    second = registration.authenticate_initial_access_token(session, token, now)
    registration.register_client(session, first, PUBLIC_APP, now, issuer=issuer)
    before = _client_count(session)

    with pytest.raises(BearerError) as refused:
        registration.register_client(session, second, SERVICE, now, issuer=issuer)

    assert refused.value.status == 401
    assert _client_count(session) == before
    assert session.scalars(select(InitialAccessToken.uses)).one() == 1


# -- registering, and what the client can then do ----------------------------------------------


def test_a_registered_public_client_signs_a_user_in_with_the_code_flow_and_pkce(
    app: Flask, session: Session, client: FlaskClient, registration_on: None
) -> None:
    token = _initial_token(session, app)

    answer = _registered(client, token, PUBLIC_APP)
    rp = _as_client(session, answer)
    sign_in_new_user(app, session, client)
    tokens = tokens_through_browser(client, rp)

    assert "client_secret" not in answer
    assert "client_secret_expires_at" not in answer
    assert answer["token_endpoint_auth_method"] == "none"
    assert answer["client_name"] == "Notes app"
    assert answer["redirect_uris"] == [REDIRECT_URI]
    assert answer["grant_types"] == ["authorization_code", "refresh_token"]
    assert answer["response_types"] == ["code"]
    assert answer["scope"] == "openid email offline_access"
    assert isinstance(answer["client_id_issued_at"], int)
    assert answer["registration_client_uri"] == (
        runtime(app).config.issuer + "/register/" + answer["client_id"]
    )
    assert tokens["id_token"]
    assert refresh(client, rp, tokens["refresh_token"]).status_code == 200
    assert rp.client.is_first_party is False


def test_a_registered_client_still_needs_pkce(
    app: Flask, session: Session, client: FlaskClient, registration_on: None
) -> None:
    rp = _as_client(session, _registered(client, _initial_token(session, app), PUBLIC_APP))
    sign_in_new_user(app, session, client)
    query = {
        "response_type": "code",
        "client_id": rp.client.client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid",
        "state": "xyz",
    }

    answer = client.get("/oauth/authorize?" + urlencode(query))

    assert answer.status_code == 302
    assert query_of(answer.headers["Location"])["error"] == "invalid_request"
    code, _verifier = code_through_browser(client, rp)
    assert redeem_code(client, rp, code, None).status_code == 400


def test_a_registered_confidential_client_uses_client_credentials(
    app: Flask, session: Session, client: FlaskClient, registration_on: None
) -> None:
    answer = _registered(client, _initial_token(session, app), SERVICE)
    service = _as_client(session, answer)

    issued = token_request(client, service, grant_type="client_credentials")
    own_api = token_request(
        client,
        service,
        grant_type="client_credentials",
        resource=runtime(app).config.issuer + "/account",
    )

    assert answer["client_secret"]
    assert answer["client_secret_expires_at"] == 0
    assert answer["token_endpoint_auth_method"] == "client_secret_basic"
    assert answer["response_types"] == []
    assert issued.status_code == 200, issued.json
    assert issued.json["scope"] == "read"
    assert own_api.status_code == 400
    assert own_api.json["error"] == "invalid_target"


def test_registration_defaults_follow_rfc_7591(
    app: Flask, session: Session, client: FlaskClient, registration_on: None
) -> None:
    answer = _registered(client, _initial_token(session, app), {"redirect_uris": [REDIRECT_URI]})

    assert answer["grant_types"] == ["authorization_code"]
    assert answer["response_types"] == ["code"]
    assert answer["token_endpoint_auth_method"] == "client_secret_basic"
    assert answer["client_secret"]
    assert answer["client_name"] == registration.DEFAULT_CLIENT_NAME
    assert answer["scope"] == "openid profile email"


def test_unknown_metadata_is_ignored_and_not_echoed(
    app: Flask, session: Session, client: FlaskClient, registration_on: None
) -> None:
    body = {**PUBLIC_APP, "software_id": "4NRB1-0XZABZI9E6-5SM3R", "first_party": True}

    answer = _registered(client, _initial_token(session, app), body)

    assert "software_id" not in answer
    assert "first_party" not in answer
    assert _as_client(session, answer).client.is_first_party is False


def test_a_loopback_http_redirect_uri_is_registrable(
    app: Flask, session: Session, client: FlaskClient, registration_on: None
) -> None:
    uri = "http://127.0.0.1:49152/callback"

    answer = _registered(
        client, _initial_token(session, app), {**PUBLIC_APP, "redirect_uris": [uri]}
    )

    assert answer["redirect_uris"] == [uri]


# -- refusals of metadata ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "https://*.rp.example.test/callback",
        "https://rp.example.test/*",
        "https://rp.example.test/callback#fragment",
        "http://rp.example.test/callback",
        "javascript:alert(1)",
        "https://user@rp.example.test/callback",
        "/callback",
        "https://[",
        "https:///callback",
    ],
)
def test_a_redirect_uri_the_cli_refuses_is_invalid_redirect_uri(
    app: Flask, session: Session, client: FlaskClient, registration_on: None, uri: str
) -> None:
    before = _client_count(session)

    response = _register(
        client, _initial_token(session, app), {**PUBLIC_APP, "redirect_uris": [REDIRECT_URI, uri]}
    )

    assert response.status_code == 400
    assert response.json["error"] == "invalid_redirect_uri"
    assert response.headers["Cache-Control"] == "no-store"
    assert _client_count(session) == before


def test_the_code_flow_without_a_redirect_uri_is_refused(
    app: Flask, session: Session, client: FlaskClient, registration_on: None
) -> None:
    response = _register(client, _initial_token(session, app), {**PUBLIC_APP, "redirect_uris": []})

    assert response.status_code == 400
    assert response.json["error"] == "invalid_redirect_uri"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"grant_types": ["password"]}, "grant type"),
        ({"grant_types": ["authorization_code", "password"]}, "grant type"),
        ({"grant_types": ["implicit"]}, "grant type"),
        ({"grant_types": ["client_credentials"]}, "public client"),
        ({"response_types": ["token"]}, "response_types"),
        ({"response_types": ["code", "id_token"]}, "response_types"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "token_endpoint_auth_method"),
        ({"scope": "openid account"}, "account"),
        ({"scope": 'openid "quoted"'}, "scope"),
        ({"audiences": ["http://127.0.0.1:8000/account"]}, "audiences"),
        ({"audiences": ["http://127.0.0.1:8000/account/"]}, "audiences"),
        ({"audiences": ["not-a-uri"]}, "audience"),
        ({"served_audiences": ["https://api.example.test"]}, "served_audiences"),
        ({"client_name": "   "}, "name"),
        ({"post_logout_redirect_uris": ["https://rp.example.test/*"]}, "wildcard"),
        ({"backchannel_logout_uri": "http://rp.example.test/logout"}, "https"),
        ({"backchannel_logout_uri": "https://127.0.0.1/logout"}, "loopback"),
        ({"backchannel_logout_uri": "https://10.0.0.7/logout"}, "private"),
        ({"backchannel_logout_uri": "https://[fe80::1]/logout"}, "link-local"),
        ({"backchannel_logout_uri": "https://localhost/logout"}, "loopback"),
        ({"backchannel_logout_uri": "https://2130706433/logout"}, "loopback"),
        ({"backchannel_logout_uri": "https://127.1/logout"}, "loopback"),
        ({"backchannel_logout_uri": "https://0x7f.0.0.1/logout"}, "loopback"),
        ({"backchannel_logout_uri": "https://[::ffff:10.0.0.1]/logout"}, "private"),
        ({"backchannel_logout_uri": "https://169.254.169.254/latest"}, "link-local"),
        ({"backchannel_logout_session_required": True}, "back-channel logout URI"),
    ],
)
def test_metadata_only_the_operator_may_grant_or_that_breaks_a_rule_is_refused(
    app: Flask,
    session: Session,
    client: FlaskClient,
    registration_on: None,
    change: dict[str, Any],
    says: str,
) -> None:
    before = _client_count(session)

    response = _register(client, _initial_token(session, app), {**PUBLIC_APP, **change})

    assert response.status_code == 400, response.json
    assert response.json["error"] == "invalid_client_metadata"
    assert says in response.json["error_description"]
    assert _client_count(session) == before


def test_the_password_grant_is_refused_to_a_confidential_client_too(
    app: Flask, session: Session, client: FlaskClient, registration_on: None
) -> None:
    response = _register(
        client, _initial_token(session, app), {**SERVICE, "grant_types": ["password"]}
    )

    assert response.status_code == 400
    assert response.json["error"] == "invalid_client_metadata"


BAD_BODIES: list[tuple[str, bytes | str]] = [
    ("not json", b"{redirect_uris: nope"),
    ("an array", b"[]"),
    ("null", b"null"),
    ("a string", b'"register me"'),
    ("deep nesting", b"[" * 30000 + b"]" * 30000),
    ("a huge number", b'{"client_name": ' + b"9" * 20000 + b"}"),
    ("invalid utf-8", b'{"client_name": "\xff\xfe"}'),
]
WRONG_TYPES: list[dict[str, Any]] = [
    {"redirect_uris": REDIRECT_URI},
    {"redirect_uris": [1, 2]},
    {"redirect_uris": [None]},
    {"grant_types": {"authorization_code": True}},
    {"grant_types": "authorization_code"},
    {"response_types": "code"},
    {"client_name": 5},
    {"client_name": ["a"]},
    {"client_name": "x" * 5000},
    {"client_name": "nul\x00byte"},
    {"scope": ["openid"]},
    {"token_endpoint_auth_method": None, "grant_types": None, "redirect_uris": None},
    {"token_endpoint_auth_method": 1},
    {"backchannel_logout_session_required": "yes"},
    {"backchannel_logout_uri": 1},
    {"audiences": "https://api.example.test"},
    {"redirect_uris": [f"https://rp.example.test/{n}" for n in range(500)]},
    {"redirect_uris": ["https://rp.example.test/" + "a" * 5000]},
    {"redirect_uris": ["https://rp.example.test/\x00"]},
    {"redirect_uris": ["https://rp.example.test/\u202e"]},
    {"client_name": "\ud800"},
    {"redirect_uris": ["https://rp.example.test/\udfff"]},
    {"scope": "openid \ud800"},
    {"client_name": "\U0001f600" * 100, "redirect_uris": ["https://ünïcode.test/cb"]},
]


@pytest.mark.parametrize(("what", "raw"), BAD_BODIES, ids=[what for what, _ in BAD_BODIES])
def test_a_body_that_is_not_json_or_not_an_object_is_a_400(
    app: Flask,
    session: Session,
    client: FlaskClient,
    registration_on: None,
    what: str,
    raw: bytes,
) -> None:
    response = client.post(
        "/register",
        data=raw,
        content_type="application/json",
        headers=_bearer(_initial_token(session, app)),
    )

    assert response.status_code == 400, what
    assert response.json["error"] == "invalid_client_metadata"


@pytest.mark.parametrize("body", WRONG_TYPES)
def test_metadata_of_the_wrong_type_or_size_is_a_400_never_a_500(
    app: Flask, session: Session, client: FlaskClient, registration_on: None, body: dict[str, Any]
) -> None:
    before = _client_count(session)

    response = _register(client, _initial_token(session, app), {**PUBLIC_APP, **body})

    assert response.status_code in (201, 400), response.get_data(as_text=True)
    if response.status_code == 400:
        assert response.json["error"] in ("invalid_client_metadata", "invalid_redirect_uri")
        description = response.json["error_description"]
        assert description.isascii()
        assert '"' not in description
        assert "\\" not in description
        assert _client_count(session) == before


def test_a_form_body_is_refused(
    app: Flask, session: Session, client: FlaskClient, registration_on: None
) -> None:
    response = client.post(
        "/register",
        data={"redirect_uris": REDIRECT_URI},
        headers=_bearer(_initial_token(session, app)),
    )

    assert response.status_code == 400
    assert response.json["error"] == "invalid_client_metadata"


def test_a_body_over_64_kib_is_413(
    app: Flask, session: Session, client: FlaskClient, registration_on: None
) -> None:
    response = _register(client, _initial_token(session, app), {"client_name": "x" * 70_000})

    assert response.status_code == 413


# -- RFC 7592: read, replace, delete ---------------------------------------------------------


@pytest.fixture
def two_registrations(
    app: Flask, session: Session, client: FlaskClient, registration_on: None
) -> tuple[dict[str, Any], dict[str, Any], str]:
    token = _initial_token(session, app)
    return _registered(client, token, SERVICE), _registered(client, token, PUBLIC_APP), token


def test_read_returns_the_registration_but_never_the_secret(
    client: FlaskClient, two_registrations: tuple[dict[str, Any], dict[str, Any], str]
) -> None:
    service, _, _ = two_registrations

    response = client.get(
        _management_path(service), headers=_bearer(service["registration_access_token"])
    )

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert "client_secret" not in response.json
    expected = {k: v for k, v in service.items() if k != "client_secret"}
    assert response.json == expected


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_management_with_any_other_credential_is_401(
    app: Flask,
    session: Session,
    client: FlaskClient,
    two_registrations: tuple[dict[str, Any], dict[str, Any], str],
    method: str,
) -> None:
    service, public_app, initial = two_registrations
    path = _management_path(service)
    wrong: list[dict[str, str]] = [
        {},
        _bearer(public_app["registration_access_token"]),  # another client's
        _bearer(initial),  # the initial access token
        _bearer(service["client_secret"]),  # the client's secret, as a bearer
        basic_auth(_as_client(session, service)),  # the client's secret, as Basic
        _bearer(service["registration_access_token"] + "x"),
    ]

    for headers in wrong:
        response = client.open(path, method=method, json={**SERVICE, **service}, headers=headers)
        _assert_invalid_token(response)

    assert find_client(session, service["client_id"], fresh=True) is not None


def test_the_operators_clients_and_unknown_ids_are_not_manageable(
    session: Session,
    client: FlaskClient,
    two_registrations: tuple[dict[str, Any], dict[str, Any], str],
) -> None:
    service, _, _ = two_registrations
    token = _bearer(service["registration_access_token"])
    operators = make_client(session)

    for client_id in (operators.client.client_id, "no-such-client", "x" * 500, "%00", "-"):
        _assert_invalid_token(client.get(f"/register/{client_id}", headers=token))
        _assert_invalid_token(client.delete(f"/register/{client_id}", headers=token))
    assert find_client(session, operators.client.client_id, fresh=True) is not None


def test_a_disabled_client_cannot_manage_its_registration(
    app: Flask,
    session: Session,
    client: FlaskClient,
    two_registrations: tuple[dict[str, Any], dict[str, Any], str],
) -> None:
    from authserver.services.clients import disable_client

    service, _, _ = two_registrations
    disable_client(
        session,
        service["client_id"],
        runtime(app).now(),
        stale_for=timedelta(seconds=5),
        token_ttl=timedelta(minutes=10),
    )
    session.commit()

    _assert_invalid_token(
        client.delete(
            _management_path(service), headers=_bearer(service["registration_access_token"])
        )
    )


def _replacement(answer: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {"client_id": answer["client_id"], **changes}


def test_replace_sets_what_is_sent_defaults_what_is_not_and_rotates_the_token(
    app: Flask,
    session: Session,
    client: FlaskClient,
    two_registrations: tuple[dict[str, Any], dict[str, Any], str],
) -> None:
    _, public_app, _ = two_registrations
    old_token = public_app["registration_access_token"]
    path = _management_path(public_app)
    new_uri = "https://rp.example.test/other-callback"

    response = client.put(
        path,
        json=_replacement(
            public_app,
            redirect_uris=[new_uri],
            token_endpoint_auth_method="none",
            client_name="Notes app 2",
            # What the client may not send (RFC 7592 §2.2) is ignored.
            registration_access_token="chosen-by-the-client",
            client_id_issued_at=1,
        ),
        headers=_bearer(old_token),
    )

    assert response.status_code == 200, response.json
    answer = response.json
    assert answer["redirect_uris"] == [new_uri]
    assert answer["client_name"] == "Notes app 2"
    assert answer["grant_types"] == ["authorization_code"]  # left out: the default
    assert answer["scope"] == "openid profile email"
    assert answer["client_id_issued_at"] == public_app["client_id_issued_at"]
    assert answer["registration_access_token"] not in (old_token, "chosen-by-the-client")
    _assert_invalid_token(client.get(path, headers=_bearer(old_token)))
    assert client.get(path, headers=_bearer(answer["registration_access_token"])).json == answer
    row = find_client(session, public_app["client_id"], fresh=True)
    assert row is not None
    assert row.redirect_uris == [new_uri]
    assert row.grant_types == ["authorization_code"]


def test_replace_keeps_the_client_secret_and_checks_one_that_is_sent(
    session: Session,
    client: FlaskClient,
    two_registrations: tuple[dict[str, Any], dict[str, Any], str],
) -> None:
    service, _, _ = two_registrations
    path = _management_path(service)
    wrong_secret = _replacement(service, **SERVICE, client_secret="not-the-secret")

    refused = client.put(
        path, json=wrong_secret, headers=_bearer(service["registration_access_token"])
    )
    accepted = client.put(
        path,
        json=_replacement(
            service, **{**SERVICE, "scope": "read write"}, client_secret=service["client_secret"]
        ),
        headers=_bearer(service["registration_access_token"]),
    )

    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_client_metadata"
    assert accepted.status_code == 200, accepted.json
    assert accepted.json["scope"] == "read write"
    assert "client_secret" not in accepted.json
    issued = token_request(client, _as_client(session, service), grant_type="client_credentials")
    assert issued.status_code == 200


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"client_id": "someone-else"}, "invalid_client_metadata"),
        ({"client_id": None}, "invalid_client_metadata"),
        ({"token_endpoint_auth_method": "client_secret_basic"}, "invalid_client_metadata"),
        ({"grant_types": ["password"]}, "invalid_client_metadata"),
        ({"redirect_uris": ["https://*.rp.example.test/cb"]}, "invalid_redirect_uri"),
        ({"audiences": ["http://127.0.0.1:8000/account"]}, "invalid_client_metadata"),
        ({"scope": "account"}, "invalid_client_metadata"),
        ({"served_audiences": ["https://api.example.test"]}, "invalid_client_metadata"),
    ],
)
def test_replace_is_held_to_the_rules_of_registration(
    session: Session,
    client: FlaskClient,
    two_registrations: tuple[dict[str, Any], dict[str, Any], str],
    change: dict[str, Any],
    error: str,
) -> None:
    _, public_app, _ = two_registrations
    token = public_app["registration_access_token"]
    body = {**PUBLIC_APP, "client_id": public_app["client_id"], **change}

    response = client.put(_management_path(public_app), json=body, headers=_bearer(token))

    assert response.status_code == 400, response.json
    assert response.json["error"] == error
    row = find_client(session, public_app["client_id"], fresh=True)
    assert row is not None
    assert row.grant_types == ["authorization_code", "refresh_token"]
    assert row.redirect_uris == [REDIRECT_URI]
    assert row.audiences == []
    assert row.served_audiences == []
    # A refused replacement does not rotate the token.
    assert client.get(_management_path(public_app), headers=_bearer(token)).status_code == 200


def test_delete_revokes_what_the_client_holds_and_removes_it(
    app: Flask,
    session: Session,
    client: FlaskClient,
    two_registrations: tuple[dict[str, Any], dict[str, Any], str],
) -> None:
    _, public_app, _ = two_registrations
    rp = _as_client(session, public_app)
    sign_in_new_user(app, session, client)
    tokens = tokens_through_browser(client, rp)
    path = _management_path(public_app)
    token = _bearer(public_app["registration_access_token"])

    response = client.delete(path, headers=token)

    assert response.status_code == 204
    assert find_client(session, public_app["client_id"], fresh=True) is None
    assert refresh(client, rp, tokens["refresh_token"]).status_code in (400, 401)
    entries = session.scalars(select(Revocation.value).where(Revocation.kind == "client")).all()
    assert public_app["client_id"] in entries
    _assert_invalid_token(client.get(path, headers=token))
    _assert_invalid_token(client.delete(path, headers=token))


# -- nothing in clear ----------------------------------------------------------------------------


@pytest.fixture
def audit_lines() -> Iterator[list[str]]:
    """Every JSON line the audit log writes (it does not propagate to the root logger)."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep()
    audit_log = logging.getLogger("authserver.audit")
    audit_log.addHandler(handler)
    yield lines
    audit_log.removeHandler(handler)


@pytest.mark.postgres_only
def test_only_digests_are_stored_and_no_token_is_audited_or_logged(
    app: Flask,
    session: Session,
    client: FlaskClient,
    registration_on: None,
    audit_lines: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    initial = _initial_token(session, app)
    answer = _registered(client, initial, SERVICE)
    replaced = client.put(
        _management_path(answer),
        json=_replacement(answer, **SERVICE),
        headers=_bearer(answer["registration_access_token"]),
    ).json
    secrets_seen = [
        initial,
        answer["client_secret"],
        answer["registration_access_token"],
        replaced["registration_access_token"],
    ]

    iat_row = session.scalars(select(InitialAccessToken)).one()
    client_row = find_client(session, answer["client_id"], fresh=True)
    assert client_row is not None
    assert iat_row.token_digest == hashlib.sha256(initial.encode()).digest()
    assert client_row.registration_access_token_digest == (
        hashlib.sha256(replaced["registration_access_token"].encode()).digest()
    )
    # Every row of every table, as text: no token appears in any of them.
    tables = session.execute(
        text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    ).scalars()
    everything = " ".join(
        str(row) for table in tables for row in session.execute(text(f'SELECT * FROM "{table}"'))
    )
    logged = " ".join(audit_lines) + " " + caplog.text
    for secret in secrets_seen:
        assert secret not in everything
        assert secret not in logged
    registered = session.scalars(
        select(AuditEvent).where(AuditEvent.event_type == "client_registered")
    ).one()
    assert registered.client_id == answer["client_id"]
    assert registered.details["registration_token_id"] == str(iat_row.id)
    assert any('"client_registered"' in line for line in audit_lines)


# -- rate limit ------------------------------------------------------------------------------


def test_registration_is_rate_limited_per_address(
    app: Flask, session: Session, client: FlaskClient, registration_on: None
) -> None:
    runtime(app).config = replace(runtime(app).config, ratelimit_registration="2/minute")
    headers = {"REMOTE_ADDR": "192.0.2.77"}

    answers = [
        client.post("/register", json=PUBLIC_APP, environ_base=headers).status_code
        for _ in range(3)
    ]

    assert answers == [401, 401, 429]


def test_the_service_refuses_a_token_that_is_not_usable(app: Flask, session: Session) -> None:
    now = runtime(app).now()
    token = _initial_token(session, app, uses=1)

    for presented in (None, "", token + "x"):
        with pytest.raises(BearerError):
            registration.authenticate_initial_access_token(session, presented, now)
    with pytest.raises(BearerError):
        registration.authenticate_initial_access_token(session, token, now + 2 * DAY)
    assert registration.authenticate_initial_access_token(session, token, now) is not None


def test_a_public_back_channel_logout_uri_is_registered(
    app: Flask, session: Session, client: FlaskClient, registration_on: None
) -> None:
    uri = "https://rp.example.test/backchannel-logout"
    body = {
        **PUBLIC_APP,
        "backchannel_logout_uri": uri,
        "backchannel_logout_session_required": True,
    }

    answer = _registered(client, _initial_token(session, app), body)

    assert answer["backchannel_logout_uri"] == uri
    assert answer["backchannel_logout_session_required"] is True
    assert _as_client(session, answer).client.backchannel_logout_uri == uri


def test_a_refusal_that_echoes_the_request_keeps_to_rfc_6749_description_characters(
    app: Flask, session: Session, client: FlaskClient, registration_on: None
) -> None:
    uri = 'https://*.rp.example.test/"\\\u00e9\u202e'

    response = _register(
        client, _initial_token(session, app), {**PUBLIC_APP, "redirect_uris": [uri]}
    )

    description = response.json["error_description"]
    assert response.json["error"] == "invalid_redirect_uri"
    assert description.startswith("redirect URI must")
    assert description.isascii()
    assert '"' not in description
    assert "\\" not in description


def test_a_registered_device_client_gets_codes_without_a_redirect_uri(
    app: Flask, session: Session, client: FlaskClient, registration_on: None
) -> None:
    answer = _registered(
        client,
        _initial_token(session, app),
        {
            "grant_types": ["urn:ietf:params:oauth:grant-type:device_code"],
            "token_endpoint_auth_method": "none",
            "client_name": "Living-room TV",
            "scope": "openid",
        },
    )
    assert answer["response_types"] == []
    codes = client.post(
        "/oauth/device_authorization", data={"client_id": answer["client_id"], "scope": "openid"}
    )
    assert codes.status_code == 200, codes.get_data(as_text=True)
    assert codes.get_json()["user_code"]


def test_a_registered_client_may_require_pushed_requests_of_itself(
    app: Flask, session: Session, client: FlaskClient, registration_on: None
) -> None:
    answer = _registered(
        client,
        _initial_token(session, app),
        {
            "redirect_uris": ["https://app.example.test/cb"],
            "token_endpoint_auth_method": "none",
            "require_pushed_authorization_requests": True,
        },
    )
    assert answer["require_pushed_authorization_requests"] is True
    assert _as_client(session, answer).client.require_pushed_authorization_requests is True
    refused = _register(
        client,
        _initial_token(session, app),
        {
            "redirect_uris": ["https://app.example.test/cb"],
            "require_pushed_authorization_requests": "yes",
        },
    )
    assert refused.status_code == 400
    assert refused.get_json()["error"] == "invalid_client_metadata"
