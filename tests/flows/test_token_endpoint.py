"""The token endpoint (RFC 6749 §3.2, §4.3, §4.4, §5) with resource indicators (RFC 8707)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import argon2
import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.services.clients import RegisteredClient
from tests.helpers import (
    PASSWORD,
    basic_auth,
    make_client,
    make_user,
    password_login,
    refresh,
    token_request,
)

TOKEN_PATH = "/oauth/token"
DEFAULT_AUDIENCE = "https://api.example.test"  # the `config` fixture's default_audience
# RFC 6749 §5.2, plus RFC 8707 §2's invalid_target.
TOKEN_ERROR_CODES = {
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_target",
}


def _claims(response: TestResponse) -> dict[str, Any]:
    """The access token's claims; its signature is the subject of test_access_tokens.py."""
    claims: dict[str, Any] = jwt.decode(
        response.json["access_token"], options={"verify_signature": False}
    )
    return claims


def _client_credentials(
    http: FlaskClient, registered: RegisteredClient, **form: str
) -> TestResponse:
    return token_request(http, registered, grant_type="client_credentials", **form)


def _post_secret(registered: RegisteredClient) -> dict[str, str]:
    """client_secret_post credentials (RFC 6749 §2.3.1)."""
    assert registered.client_secret is not None
    return {"client_id": registered.client.client_id, "client_secret": registered.client_secret}


def _basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def _public_client(session: Session, **overrides: Any) -> RegisteredClient:
    options: dict[str, Any] = {"public": True, "grant_types": ["password", "refresh_token"]}
    options.update(overrides)
    return make_client(session, **options)


def _assert_error(response: TestResponse, status: int, error: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    assert response.json["error"] == error
    assert "access_token" not in response.json


# -- client_credentials (RFC 6749 §4.4) ----------------------------------------------------


def test_client_credentials_issues_a_bearer_jwt_and_no_refresh_token(
    session: Session, client: FlaskClient
) -> None:
    registered = make_client(session)

    response = _client_credentials(client, registered)

    assert response.status_code == 200
    assert response.json["token_type"] == "Bearer"
    assert "refresh_token" not in response.json
    assert jwt.get_unverified_header(response.json["access_token"])["typ"] == "at+jwt"


def test_token_response_is_not_cacheable(session: Session, client: FlaskClient) -> None:
    registered = make_client(session)

    response = _client_credentials(client, registered)

    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"


def test_access_token_expires_in_600_seconds_by_default(
    session: Session, client: FlaskClient
) -> None:
    registered = make_client(session)

    response = _client_credentials(client, registered)

    assert response.json["expires_in"] == 600


def test_client_secret_basic_authenticates(session: Session, client: FlaskClient) -> None:
    registered = make_client(session)

    response = client.post(
        TOKEN_PATH, data={"grant_type": "client_credentials"}, headers=basic_auth(registered)
    )

    assert response.status_code == 200
    assert _claims(response)["client_id"] == registered.client.client_id


def test_client_secret_post_authenticates(session: Session, client: FlaskClient) -> None:
    registered = make_client(session)

    response = client.post(
        TOKEN_PATH, data={"grant_type": "client_credentials", **_post_secret(registered)}
    )

    assert response.status_code == 200
    assert _claims(response)["client_id"] == registered.client.client_id


def test_public_client_cannot_use_client_credentials(session: Session, client: FlaskClient) -> None:
    public = _public_client(session)

    response = client.post(
        TOKEN_PATH,
        data={"grant_type": "client_credentials", "client_id": public.client.client_id},
    )

    _assert_error(response, 401, "invalid_client")


def test_public_client_cannot_use_client_credentials_even_if_its_row_lists_the_grant(
    session: Session, client: FlaskClient
) -> None:
    public = _public_client(session)
    # Registration refuses this combination; a row edited by hand must still be refused.
    public.client.grant_types = [*public.client.grant_types, "client_credentials"]
    session.commit()

    response = client.post(
        TOKEN_PATH,
        data={"grant_type": "client_credentials", "client_id": public.client.client_id},
    )

    _assert_error(response, 401, "invalid_client")


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_wrong_client_secret_is_401_invalid_client_with_www_authenticate(
    session: Session, client: FlaskClient, method: str
) -> None:
    registered = make_client(session)
    client_id = registered.client.client_id
    form = {"grant_type": "client_credentials"}
    headers: dict[str, str] = {}
    if method == "client_secret_basic":
        headers = _basic(client_id, "wrong-secret")
    else:
        form.update(client_id=client_id, client_secret="wrong-secret")

    response = client.post(TOKEN_PATH, data=form, headers=headers)

    _assert_error(response, 401, "invalid_client")
    # RFC 6749 §5.2: a 401 names the scheme to authenticate with.
    assert response.headers["WWW-Authenticate"].startswith("Basic ")


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_unknown_client_id_fails_exactly_like_a_wrong_secret(
    session: Session, client: FlaskClient, method: str
) -> None:
    registered = make_client(session)

    def attempt(client_id: str) -> TestResponse:
        if method == "client_secret_basic":
            return client.post(
                TOKEN_PATH,
                data={"grant_type": "client_credentials"},
                headers=_basic(client_id, "wrong-secret"),
            )
        return client.post(
            TOKEN_PATH,
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": "wrong-secret",
            },
        )

    wrong_secret = attempt(registered.client.client_id)
    unknown_client = attempt("no-such-client")

    _assert_error(unknown_client, 401, "invalid_client")
    assert unknown_client.get_data() == wrong_secret.get_data()
    assert unknown_client.headers["WWW-Authenticate"] == wrong_secret.headers["WWW-Authenticate"]


def test_client_not_allowed_client_credentials_is_unauthorized_client(
    session: Session, client: FlaskClient
) -> None:
    registered = make_client(session, grant_types=["password", "refresh_token"])

    response = _client_credentials(client, registered)

    _assert_error(response, 400, "unauthorized_client")


def test_unknown_grant_type_is_unsupported_grant_type(
    session: Session, client: FlaskClient
) -> None:
    registered = make_client(session)

    response = token_request(client, registered, grant_type="urn:example:no-such-grant")

    _assert_error(response, 400, "unsupported_grant_type")


def test_missing_grant_type_is_invalid_request(session: Session, client: FlaskClient) -> None:
    registered = make_client(session)

    response = token_request(client, registered, scope="read")

    _assert_error(response, 400, "invalid_request")


def test_disabled_confidential_client_cannot_authenticate(
    session: Session, client: FlaskClient
) -> None:
    registered = make_client(session)
    registered.client.disabled = True
    session.commit()

    response = _client_credentials(client, registered)

    _assert_error(response, 401, "invalid_client")


def test_disabled_public_client_cannot_authenticate(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    public = _public_client(session)
    public.client.disabled = True
    session.commit()

    response = password_login(client, public)

    _assert_error(response, 401, "invalid_client")


# -- password (RFC 6749 §4.3) ----------------------------------------------------------------


def test_password_grant_returns_access_and_refresh_token(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    user = make_user(app, session)
    registered = make_client(session)

    response = password_login(client, registered)

    assert response.status_code == 200
    assert response.json["token_type"] == "Bearer"
    assert response.json["refresh_token"]
    assert _claims(response)["sub"] == str(user.id)
    assert response.headers["Cache-Control"] == "no-store"


def test_wrong_password_and_unknown_email_get_identical_responses(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    registered = make_client(session)

    wrong_password = password_login(client, registered, password="not the password")
    unknown_email = password_login(client, registered, email="nobody@example.com")

    _assert_error(wrong_password, 400, "invalid_grant")
    assert unknown_email.status_code == wrong_password.status_code
    assert unknown_email.get_data() == wrong_password.get_data()


def test_email_is_matched_case_insensitively(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session, email="ann@example.com")
    registered = make_client(session)

    response = password_login(client, registered, email="  Ann@Example.COM ")

    assert response.status_code == 200


def test_client_not_allowed_password_grant_is_unauthorized_client(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    registered = make_client(session, grant_types=["client_credentials"])

    response = password_login(client, registered)

    _assert_error(response, 400, "unauthorized_client")


def test_third_party_client_is_refused_password_grant_even_if_its_row_lists_it(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    registered = make_client(session)
    # Registration refuses the password grant to third parties; a hand-edited row must not help.
    registered.client.is_first_party = False
    session.commit()

    response = password_login(client, registered)

    _assert_error(response, 400, "unauthorized_client")


@pytest.mark.parametrize(
    "form",
    [
        {"password": PASSWORD},
        {"username": "ann@example.com"},
        {"username": "", "password": PASSWORD},
    ],
    ids=["no-username", "no-password", "empty-username"],
)
def test_missing_username_or_password_is_invalid_request(
    app: Flask, session: Session, client: FlaskClient, form: dict[str, str]
) -> None:
    make_user(app, session)
    registered = make_client(session)

    response = token_request(client, registered, grant_type="password", **form)

    _assert_error(response, 400, "invalid_request")


@pytest.fixture
def argon2_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every argon2 hash or verification the server runs, by name (the library, not our code)."""
    calls: list[str] = []
    for name in ("hash", "verify"):
        original: Callable[..., Any] = getattr(argon2.PasswordHasher, name)

        def spy(self: Any, *args: Any, _name: str = name, _original: Any = original) -> Any:
            calls.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(argon2.PasswordHasher, name, spy)
    return calls


@pytest.mark.parametrize(
    ("email", "too_long"),
    [
        ("ann@example.com", "a" * 1025),
        ("nobody@example.com", "a" * 1025),
        # 513 characters, 1026 bytes: the limit is on bytes.
        ("ann@example.com", "é" * 513),
    ],
    ids=["known-email", "unknown-email", "multibyte"],
)
def test_password_over_byte_limit_is_invalid_grant_and_never_hashed(
    app: Flask,
    session: Session,
    client: FlaskClient,
    argon2_calls: list[str],
    email: str,
    too_long: str,
) -> None:
    make_user(app, session)
    registered = make_client(session)
    argon2_calls.clear()
    wrong_password = password_login(client, registered, password="not the password")
    assert argon2_calls == ["verify"]  # the spy does see an ordinary attempt
    argon2_calls.clear()

    response = password_login(client, registered, email=email, password=too_long)

    _assert_error(response, 400, "invalid_grant")
    assert response.get_data() == wrong_password.get_data()
    assert argon2_calls == []


def test_disabled_user_gets_invalid_grant(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    user = make_user(app, session)
    registered = make_client(session)
    user.disabled = True
    session.commit()

    response = password_login(client, registered)

    _assert_error(response, 400, "invalid_grant")
    # The same answer as a wrong password: nothing says the account exists.
    assert response.get_data() == password_login(client, registered, password="x" * 12).get_data()


def test_first_party_client_without_refresh_grant_gets_no_refresh_token(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    registered = make_client(session, grant_types=["password"])

    response = password_login(client, registered)

    assert response.status_code == 200
    assert response.json["access_token"]
    assert "refresh_token" not in response.json


def test_public_first_party_client_signs_in_with_client_id_alone(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    public = _public_client(session)

    response = client.post(
        TOKEN_PATH,
        data={
            "grant_type": "password",
            "client_id": public.client.client_id,
            "username": "ann@example.com",
            "password": PASSWORD,
        },
    )

    assert response.status_code == 200
    assert response.json["refresh_token"]
    assert _claims(response)["client_id"] == public.client.client_id


def test_public_client_presenting_a_secret_is_refused(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    public = _public_client(session)

    response = client.post(
        TOKEN_PATH,
        data={
            "grant_type": "password",
            "client_id": public.client.client_id,
            "client_secret": "made-up",
            "username": "ann@example.com",
            "password": PASSWORD,
        },
    )

    _assert_error(response, 401, "invalid_client")


# -- scope (RFC 6749 §3.3) -------------------------------------------------------------------


@pytest.fixture
def scoped_login(app: Flask, session: Session, client: FlaskClient) -> Callable[..., TestResponse]:
    """A token request of either grant by a client registered for 'read write'."""
    make_user(app, session)
    registered = make_client(session, scopes=["read", "write"])

    def request_token(grant_type: str, **form: str) -> TestResponse:
        if grant_type == "password":
            return password_login(client, registered, **form)
        return _client_credentials(client, registered, **form)

    return request_token


@pytest.mark.parametrize("grant_type", ["client_credentials", "password"])
def test_omitted_scope_grants_every_scope_of_the_client(
    scoped_login: Callable[..., TestResponse], grant_type: str
) -> None:
    response = scoped_login(grant_type)

    assert response.status_code == 200
    assert response.json["scope"] == "read write"
    assert _claims(response)["scope"] == "read write"


@pytest.mark.parametrize("grant_type", ["client_credentials", "password"])
def test_requested_subset_of_scopes_is_granted(
    scoped_login: Callable[..., TestResponse], grant_type: str
) -> None:
    response = scoped_login(grant_type, scope="write")

    assert response.status_code == 200
    assert response.json["scope"] == "write"
    assert _claims(response)["scope"] == "write"


@pytest.mark.parametrize("grant_type", ["client_credentials", "password"])
@pytest.mark.parametrize("scope", ["admin", "read admin"])
def test_scope_the_client_is_not_registered_for_is_invalid_scope(
    scoped_login: Callable[..., TestResponse], grant_type: str, scope: str
) -> None:
    response = scoped_login(grant_type, scope=scope)

    _assert_error(response, 400, "invalid_scope")


# -- resource indicators (RFC 8707) ----------------------------------------------------------

ORDERS = "https://orders.example.test"
BILLING = "https://billing.example.test"


@pytest.mark.parametrize("resource", [ORDERS, BILLING])
def test_allowed_resource_becomes_the_audience(
    session: Session, client: FlaskClient, resource: str
) -> None:
    registered = make_client(session, audiences=[ORDERS, BILLING])

    response = _client_credentials(client, registered, resource=resource)

    assert response.status_code == 200
    assert _claims(response)["aud"] == resource


def test_allowed_resource_becomes_the_audience_for_the_password_grant(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    registered = make_client(session, audiences=[ORDERS, BILLING])

    response = password_login(client, registered, resource=BILLING)

    assert response.status_code == 200
    assert _claims(response)["aud"] == BILLING


@pytest.mark.parametrize("resource", ["https://evil.example.test", DEFAULT_AUDIENCE])
def test_resource_the_client_is_not_registered_for_is_invalid_target(
    session: Session, client: FlaskClient, resource: str
) -> None:
    registered = make_client(session, audiences=[ORDERS])

    response = _client_credentials(client, registered, resource=resource)

    _assert_error(response, 400, "invalid_target")


def test_without_resource_the_audience_is_the_first_registered_one(
    session: Session, client: FlaskClient
) -> None:
    registered = make_client(session, audiences=[BILLING, ORDERS])

    response = _client_credentials(client, registered)

    assert _claims(response)["aud"] == BILLING


def test_without_resource_or_registered_audience_the_audience_is_the_server_default(
    session: Session, client: FlaskClient
) -> None:
    registered = make_client(session)

    response = _client_credentials(client, registered)

    assert _claims(response)["aud"] == DEFAULT_AUDIENCE


# -- request shape (RFC 6749 §3.2, §2.3) -----------------------------------------------------


@pytest.mark.parametrize(
    ("query", "form"),
    [
        ({"grant_type": "client_credentials"}, {}),
        ({"scope": "read"}, {"grant_type": "client_credentials"}),
    ],
    ids=["everything-in-query", "one-parameter-in-query"],
)
def test_parameters_in_the_query_string_are_invalid_request(
    session: Session, client: FlaskClient, query: dict[str, str], form: dict[str, str]
) -> None:
    registered = make_client(session)

    response = client.post(
        TOKEN_PATH, query_string=query, data=form, headers=basic_auth(registered)
    )

    _assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("name", ["grant_type", "scope"])
def test_repeated_parameter_is_invalid_request(
    session: Session, client: FlaskClient, name: str
) -> None:
    registered = make_client(session)
    values = {"grant_type": "client_credentials", "scope": "read"}
    form: dict[str, Any] = {**values, name: [values[name], values[name]]}

    response = client.post(TOKEN_PATH, data=form, headers=basic_auth(registered))

    _assert_error(response, 400, "invalid_request")


def test_basic_auth_plus_client_secret_in_body_is_invalid_request(
    session: Session, client: FlaskClient
) -> None:
    registered = make_client(session)

    response = client.post(
        TOKEN_PATH,
        data={"grant_type": "client_credentials", **_post_secret(registered)},
        headers=basic_auth(registered),
    )

    _assert_error(response, 400, "invalid_request")


def test_get_on_the_token_endpoint_is_405_with_a_json_error(client: FlaskClient) -> None:
    response = client.get(TOKEN_PATH, query_string={"grant_type": "client_credentials"})

    assert response.status_code == 405
    assert response.is_json
    assert isinstance(response.json["error"], str)


def test_405_from_the_token_endpoint_names_post_as_allowed(client: FlaskClient) -> None:
    response = client.get(TOKEN_PATH)

    assert response.status_code == 405
    assert "POST" in response.headers.get("Allow", "")


def test_request_body_over_64_kib_is_413(session: Session, client: FlaskClient) -> None:
    registered = make_client(session)

    response = client.post(
        TOKEN_PATH,
        data={"grant_type": "client_credentials", "padding": "x" * (64 * 1024)},
        headers=basic_auth(registered),
    )

    assert response.status_code == 413
    assert response.is_json
    assert isinstance(response.json["error"], str)


def _non_utf8_basic() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:secret").decode()}


MALFORMED_REQUESTS: list[Any] = [
    pytest.param({}, id="empty-body"),
    pytest.param({"json": {"grant_type": "client_credentials"}}, id="json-body"),
    pytest.param({"data": {"grant_type": "client_credentials"}}, id="no-credentials"),
    pytest.param(
        {"data": {"grant_type": "client_credentials"}, "headers": {"Authorization": "Basic %%%"}},
        id="basic-not-base64",
    ),
    pytest.param(
        {
            "data": {"grant_type": "client_credentials"},
            "headers": {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        },
        id="basic-without-colon",
    ),
    pytest.param(
        {
            "data": {"grant_type": "client_credentials"},
            "headers": {"Authorization": "Bearer something"},
        },
        id="bearer-instead-of-basic",
    ),
    pytest.param(
        {
            "data": b"grant_type=client_credentials&client_id=%ff%fe&client_secret=x",
            "content_type": "application/x-www-form-urlencoded",
        },
        id="form-not-utf8",
    ),
    pytest.param(
        {
            "data": {
                "grant_type": "client_credentials",
                "client_id": "c" * 500,
                "client_secret": "x",
            }
        },
        id="over-long-client-id",
    ),
    pytest.param(
        {"data": {"grant_type": "password", "username": "a\x00@example.com", "password": "x"}},
        id="nul-in-username",
    ),
    pytest.param(
        {"data": {"grant_type": "refresh_token", "refresh_token": "é\x00"}},
        id="odd-refresh-token",
    ),
    pytest.param(
        {"data": {"grant_type": "client_credentials"}, "headers": _non_utf8_basic()},
        id="basic-credentials-not-utf8",
    ),
    pytest.param(
        {"data": {"grant_type": "client_credentials", "client_id": "a\x00b", "client_secret": "x"}},
        id="nul-in-client-id",
    ),
    pytest.param(
        {"data": {"grant_type": "client_credentials"}, "headers": _basic("a\x00b", "x")},
        id="nul-in-basic-client-id",
    ),
]


@pytest.mark.parametrize("request_options", MALFORMED_REQUESTS)
def test_malformed_request_gets_an_rfc6749_json_error_not_a_crash(
    session: Session,
    client: FlaskClient,
    request_options: dict[str, Any],
) -> None:
    make_client(session)

    response = client.post(TOKEN_PATH, **request_options)

    assert response.status_code in (400, 401), response.get_data(as_text=True)
    assert response.is_json
    assert response.json["error"] in TOKEN_ERROR_CODES
    assert "Traceback" not in response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"


# -- no secret echoed (RFC 6749 §10.3, §10.4) ------------------------------------------------


@dataclass(frozen=True)
class SignedIn:
    registered: RegisteredClient
    other: RegisteredClient
    refresh_token: str

    @property
    def secret(self) -> str:
        assert self.registered.client_secret is not None
        return self.registered.client_secret


@pytest.fixture
def signed_in(app: Flask, session: Session, client: FlaskClient) -> SignedIn:
    make_user(app, session)
    registered = make_client(session)
    other = make_client(session, name="Other app")
    login = password_login(client, registered)
    assert login.status_code == 200
    return SignedIn(registered, other, login.json["refresh_token"])


LONG_PASSWORD = "s3cret-" * 200
WRONG_PASSWORD = "Wr0ng-Passw0rd!"
WRONG_SECRET = "Wr0ng-Cl1ent-Secret"

# name -> (the secret the request carries, the failing request)
LEAKY_REQUESTS: dict[str, Callable[[FlaskClient, SignedIn], tuple[str, TestResponse]]] = {
    "wrong-password": lambda http, s: (
        WRONG_PASSWORD,
        password_login(http, s.registered, password=WRONG_PASSWORD),
    ),
    "password-over-limit": lambda http, s: (
        LONG_PASSWORD,
        password_login(http, s.registered, password=LONG_PASSWORD),
    ),
    "password-repeated": lambda http, s: (
        PASSWORD,
        http.post(
            TOKEN_PATH,
            data={
                "grant_type": "password",
                "username": "ann@example.com",
                "password": [PASSWORD, PASSWORD],
            },
            headers=basic_auth(s.registered),
        ),
    ),
    "password-with-bad-scope": lambda http, s: (
        PASSWORD,
        password_login(http, s.registered, scope="admin"),
    ),
    "password-in-query": lambda http, s: (
        PASSWORD,
        http.post(
            TOKEN_PATH,
            query_string={"password": PASSWORD},
            data={"grant_type": "password", "username": "ann@example.com"},
            headers=basic_auth(s.registered),
        ),
    ),
    "wrong-client-secret": lambda http, s: (
        WRONG_SECRET,
        http.post(
            TOKEN_PATH,
            data={"grant_type": "client_credentials"},
            headers=_basic(s.registered.client.client_id, WRONG_SECRET),
        ),
    ),
    "client-secret-twice": lambda http, s: (
        s.secret,
        http.post(
            TOKEN_PATH,
            data={"grant_type": "client_credentials", "client_secret": s.secret},
            headers=basic_auth(s.registered),
        ),
    ),
    "client-secret-in-query": lambda http, s: (
        s.secret,
        http.post(
            TOKEN_PATH,
            query_string=_post_secret(s.registered),
            data={"grant_type": "client_credentials"},
        ),
    ),
    "client-secret-with-unknown-grant": lambda http, s: (
        s.secret,
        http.post(TOKEN_PATH, data={"grant_type": "urn:x", **_post_secret(s.registered)}),
    ),
    "refresh-token-with-wider-scope": lambda http, s: (
        s.refresh_token,
        refresh(http, s.registered, s.refresh_token, scope="read admin"),
    ),
    "refresh-token-of-another-client": lambda http, s: (
        s.refresh_token,
        refresh(http, s.other, s.refresh_token),
    ),
    "refresh-token-in-query": lambda http, s: (
        s.refresh_token,
        http.post(
            TOKEN_PATH,
            query_string={"refresh_token": s.refresh_token},
            data={"grant_type": "refresh_token"},
            headers=basic_auth(s.registered),
        ),
    ),
}


@pytest.mark.parametrize("case", list(LEAKY_REQUESTS))
def test_submitted_secret_never_appears_in_the_error_response(
    signed_in: SignedIn, client: FlaskClient, case: str
) -> None:
    secret, response = LEAKY_REQUESTS[case](client, signed_in)

    assert 400 <= response.status_code < 500
    assert response.is_json
    assert secret not in response.get_data(as_text=True)
    assert all(secret not in value for _, value in response.headers.items())
