"""Hostile input at the client-authenticated form endpoints (token, revocation, introspection):
malformed HTTP Basic credentials, NUL and control characters in every field, values up to and
past the 64 KiB body limit, JSON where a form belongs, repeated parameters. Then malformed JOSE
wherever a token is read (every bearer endpoint, ``id_token_hint`` at logout, ``token`` at
revocation and introspection; strategies in ``tests/hostile_input.py``) and junk cursors at the
revocation feed.

Whatever arrives, the answer is a 200 or an RFC 6749 §5.2 JSON error with a code the RFCs
define and the status that code calls for; never a 5xx, never a stack trace, never a log line
at ERROR, and never a secret read back to the caller.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from typing import Any
from urllib.parse import quote_plus, urlencode

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import DataObject
from schemathesis.specs.openapi.schemas import OpenApiSchema
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.app import MAX_REQUEST_BYTES
from authserver.services.clients import RegisteredClient
from authserver.services.revocations import FEED_CURSOR_REFUSED, MAX_FEED_CURSOR
from tests.browser_helpers import csrf_token_of
from tests.helpers import (
    PASSWORD,
    basic_auth,
    make_client,
    make_resource_server,
    make_user,
    password_login,
)
from tests.hostile_input import (
    TokenMaterial,
    b64url,
    compact_json,
    junk_feed_cursors,
    malformed_tokens,
)

TOKEN = "/oauth/token"
REVOKE = "/oauth/revoke"
INTROSPECT = "/oauth/introspect"
FORM_ENDPOINTS = (TOKEN, REVOKE, INTROSPECT)

# RFC 6749 §5.2, RFC 8707 §2 and RFC 7009 §2.2.1 codes, each with the status it calls for
# (§5.2: 400, except invalid_client, which may be 401 and must be when the client tried HTTP
# Basic); then the HTTP-level refusals the server renders in the same JSON shape.
OAUTH_ERROR_STATUS = {
    "invalid_request": 400,
    "invalid_client": 401,
    "invalid_grant": 400,
    "unauthorized_client": 400,
    "unsupported_grant_type": 400,
    "invalid_scope": 400,
    "invalid_target": 400,
    "unsupported_token_type": 400,
    "method_not_allowed": 405,
    "request_entity_too_large": 413,
    # Rate limits and the sign-in throttle (RFC 6585 §4), which wrong guesses here trip.
    "temporarily_unavailable": 429,
}
# RFC 6749 §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E.
DESCRIPTION_CHARS = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]*")
LEAK_MARKERS = ("Traceback", 'File "', "sqlalchemy", "psycopg", "authserver/")

FUZZ = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    # One app and its rolled-back transaction serve every example of a test, on purpose: the
    # data is arranged once, and what the examples leave behind (throttle counts) is fair game.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class World:
    http: FlaskClient
    first_party: RegisteredClient  # password, refresh_token, client_credentials
    resource_server: RegisteredClient  # client_credentials; introspects
    access_token: str
    refresh_token: str

    @property
    def secrets(self) -> list[str]:
        """What must never come back in an answer."""
        assert self.first_party.client_secret
        assert self.resource_server.client_secret
        return [
            self.first_party.client_secret,
            self.resource_server.client_secret,
            PASSWORD,
            self.refresh_token,
        ]

    def owner(self, endpoint: str) -> RegisteredClient:
        """The client each endpoint is called as: introspection is for resource servers."""
        return self.resource_server if endpoint == INTROSPECT else self.first_party

    def valid_form(self, endpoint: str) -> dict[str, str]:
        if endpoint == TOKEN:
            return {"grant_type": "refresh_token", "refresh_token": self.refresh_token}
        return {"token": self.access_token, "token_type_hint": "access_token"}


@pytest.fixture
def world(app: Flask, session: Session, client: FlaskClient) -> World:
    make_user(app, session)
    first_party = make_client(session, name="First-party app")
    resource_server = make_resource_server(session)
    tokens = password_login(client, first_party)
    assert tokens.status_code == 200
    return World(
        client,
        first_party,
        resource_server,
        tokens.json["access_token"],
        tokens.json["refresh_token"],
    )


def _strings_in(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _strings_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings_in(value)


def assert_safe_answer(response: TestResponse, secrets: list[str]) -> dict[str, Any]:
    """The properties every answer of these endpoints has; returns the JSON body."""
    text = response.get_data(as_text=True)
    for marker in LEAK_MARKERS:
        assert marker not in text, f"{response.status_code} leaked {marker!r}: {text[:300]}"
    assert response.status_code < 500, text[:300]
    assert response.mimetype == "application/json", f"{response.status_code} {response.mimetype}"
    body: dict[str, Any] = json.loads(text)
    for value in _strings_in(body):
        for secret in secrets:
            assert secret not in value, "a secret came back in the answer"
    for secret in secrets:
        assert secret not in str(response.headers), "a secret came back in a header"
    if response.status_code == 200:
        return body
    code = body.get("error")
    assert code in OAUTH_ERROR_STATUS, f"{response.status_code} {body}"
    assert set(body) <= {"error", "error_description"}, body
    expected_status = OAUTH_ERROR_STATUS[code]
    assert response.status_code == expected_status, f"{response.status_code} {body}"
    if code == "invalid_client":
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
    description = body.get("error_description", "")
    assert DESCRIPTION_CHARS.fullmatch(description), f"not RFC 6749 §5.2 text: {description!r}"
    assert response.headers["Cache-Control"] == "no-store"
    return body


def post_form(
    http: FlaskClient, endpoint: str, pairs: list[tuple[str, str]], headers: dict[str, str]
) -> TestResponse:
    """POST exactly these pairs (repeats included), encoded as a browser would."""
    return http.post(
        endpoint,
        data=urlencode(pairs),
        content_type="application/x-www-form-urlencoded",
        headers=headers,
    )


# -- malformed HTTP Basic credentials --------------------------------------------------------

RAW_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=80)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


basic_credentials = st.one_of(
    st.binary(max_size=200).map(_b64),  # random bytes
    RAW_TEXT.filter(lambda s: ":" not in s).map(lambda s: _b64(s.encode())),  # no colon
    st.binary(min_size=1, max_size=40).map(  # not UTF-8
        lambda raw: _b64(b"\xff\xfe" + raw + b":" + b"\xc3\x28")
    ),
    st.integers(min_value=1024, max_value=16 * 1024).map(  # very long
        lambda n: _b64(b"x" * n + b":" + b"y" * n)
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80),  # not base64
    st.sampled_from(["", "=", "====", "Og==", "OjpfOg==", " ", "\t"]),
)
authorization_headers = st.one_of(
    st.builds(
        lambda scheme, cred: f"{scheme} {cred}",
        st.sampled_from(["Basic", "basic", "BASIC"]),
        basic_credentials,
    ),
    st.sampled_from(["Basic", "Basic  ", "Bearer abc", "Digest x", "basic:", ":"]),
)


@FUZZ
@given(endpoint=st.sampled_from(FORM_ENDPOINTS), authorization=authorization_headers)
def test_malformed_basic_credentials_are_invalid_client(
    world: World, endpoint: str, authorization: str
) -> None:
    response = world.http.post(
        endpoint, data=world.valid_form(endpoint), headers={"Authorization": authorization}
    )

    body = assert_safe_answer(response, world.secrets)
    assert body["error"] == "invalid_client"


@FUZZ
@given(endpoint=st.sampled_from(FORM_ENDPOINTS), guess=RAW_TEXT)
def test_a_wrong_secret_for_a_real_client_is_refused_and_not_echoed(
    world: World, endpoint: str, guess: str
) -> None:
    secret = "wrong-secret-" + guess  # recognisable wherever it might be echoed
    client_id = world.owner(endpoint).client.client_id
    credentials = _b64(f"{client_id}:{secret}".encode())

    response = world.http.post(
        endpoint, data=world.valid_form(endpoint), headers={"Authorization": f"Basic {credentials}"}
    )

    body = assert_safe_answer(response, [*world.secrets, secret])
    # After five wrong guesses the throttle answers before any check (429).
    assert body["error"] in {"invalid_client", "temporarily_unavailable"}


# -- NUL and control characters in every field ----------------------------------------------
# Every hostile value holds a control character, so none can match innocent text: a value
# found in an answer was echoed.

CONTROL_CHARACTERS = st.characters(max_codepoint=0x1F) | st.sampled_from(["\x7f", "\x85", "\u2028"])
hostile_values = st.one_of(
    st.text(CONTROL_CHARACTERS, min_size=1, max_size=20),
    st.builds(
        lambda head, ctrl, tail: head + ctrl + tail,
        RAW_TEXT,
        st.text(CONTROL_CHARACTERS, min_size=1, max_size=3),
        RAW_TEXT,
    ),
    st.sampled_from(["\x00", "ann@example.com\x00", "\x00" * 100, "%00", "\r\nX-Injected: 1"]),
)
TOKEN_FIELDS = [
    "grant_type",
    "code",
    "redirect_uri",
    "code_verifier",
    "username",
    "password",
    "refresh_token",
    "scope",
    "resource",
    "client_id",
]
TOKEN_GRANTS = ["authorization_code", "client_credentials", "password", "refresh_token"]
TOKEN_MANAGEMENT_FIELDS = ["token", "token_type_hint", "client_id"]


@FUZZ
@given(
    grant_type=st.sampled_from(TOKEN_GRANTS),
    field=st.sampled_from(TOKEN_FIELDS),
    value=hostile_values,
)
def test_control_characters_in_any_token_request_field_get_a_clean_answer(
    world: World, grant_type: str, field: str, value: str
) -> None:
    form = {
        "grant_type": grant_type,
        "username": "ann@example.com",
        "password": PASSWORD,
        "refresh_token": world.refresh_token,
        "code": "some-code",
        "code_verifier": "v" * 43,
        field: value,
    }

    response = world.http.post(TOKEN, data=form, headers=basic_auth(world.first_party))

    assert_safe_answer(response, [*world.secrets, value])


@FUZZ
@given(
    endpoint=st.sampled_from([REVOKE, INTROSPECT]),
    field=st.sampled_from(TOKEN_MANAGEMENT_FIELDS),
    value=hostile_values,
)
def test_control_characters_in_any_revocation_or_introspection_field_get_a_clean_answer(
    world: World, endpoint: str, field: str, value: str
) -> None:
    form = {**world.valid_form(endpoint), field: value}

    response = world.http.post(endpoint, data=form, headers=basic_auth(world.owner(endpoint)))

    body = assert_safe_answer(response, [*world.secrets, value])
    if response.status_code == 200 and endpoint == INTROSPECT and field == "token":
        assert body == {"active": False}


@FUZZ
@given(endpoint=st.sampled_from(FORM_ENDPOINTS), secret=hostile_values)
def test_control_characters_in_a_client_secret_post_are_refused_cleanly(
    world: World, endpoint: str, secret: str
) -> None:
    form = {
        **world.valid_form(endpoint),
        "client_id": world.owner(endpoint).client.client_id,
        "client_secret": secret,
    }

    response = world.http.post(endpoint, data=form)

    body = assert_safe_answer(response, [*world.secrets, secret])
    assert body["error"] in {"invalid_client", "temporarily_unavailable"}


# -- long values, and the body limit ---------------------------------------------------------


@FUZZ
@given(
    endpoint=st.sampled_from(FORM_ENDPOINTS),
    field=st.sampled_from(["scope", "username", "password", "token", "refresh_token", "resource"]),
    length=st.integers(min_value=1024, max_value=MAX_REQUEST_BYTES),
    char=st.sampled_from(["a", "%", "\x00", "é", " "]),
)
def test_values_up_to_the_body_limit_get_a_clean_answer(
    world: World, endpoint: str, field: str, length: int, char: str
) -> None:
    form = [(k, v) for k, v in world.valid_form(endpoint).items() if k != field]
    room = MAX_REQUEST_BYTES - len(urlencode([*form, (field, "")]))
    # Percent-encoding makes some characters three or six bytes on the wire.
    pairs = [*form, (field, char * (min(length, room) // len(quote_plus(char))))]
    assert len(urlencode(pairs)) <= MAX_REQUEST_BYTES

    response = post_form(world.http, endpoint, pairs, basic_auth(world.owner(endpoint)))

    assert response.status_code != 413
    assert_safe_answer(response, world.secrets)


@settings(FUZZ, max_examples=10)
@given(
    endpoint=st.sampled_from(FORM_ENDPOINTS),
    excess=st.integers(min_value=1, max_value=MAX_REQUEST_BYTES),
)
def test_bodies_over_64_kib_are_413(world: World, endpoint: str, excess: int) -> None:
    pairs = [*world.valid_form(endpoint).items(), ("scope", "a" * (MAX_REQUEST_BYTES + excess))]

    response = post_form(world.http, endpoint, pairs, basic_auth(world.owner(endpoint)))

    assert response.status_code == 413
    assert assert_safe_answer(response, world.secrets)["error"] == "request_entity_too_large"


# -- JSON where a form belongs ----------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | RAW_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(RAW_TEXT, inner, max_size=3),
    max_leaves=10,
)


@FUZZ
@given(endpoint=st.sampled_from(FORM_ENDPOINTS), extra=st.dictionaries(RAW_TEXT, json_values))
def test_a_json_body_is_never_read_as_the_form(
    world: World, endpoint: str, extra: dict[str, Any]
) -> None:
    document = {**extra, **world.valid_form(endpoint)}

    response = world.http.post(
        endpoint,
        data=json.dumps(document),
        content_type="application/json",
        headers=basic_auth(world.owner(endpoint)),
    )

    # Not a token, not a revocation, not an introspection: the form is empty.
    assert response.status_code == 400
    assert assert_safe_answer(response, world.secrets)["error"] == "invalid_request"


@FUZZ
@given(endpoint=st.sampled_from(FORM_ENDPOINTS), raw=st.binary(max_size=2048))
def test_an_unparseable_body_of_any_declared_type_is_refused_cleanly(
    world: World, endpoint: str, raw: bytes
) -> None:
    for content_type in (
        "application/x-www-form-urlencoded",
        "application/json",
        "multipart/form-data; boundary=xyz",
        "text/plain",
    ):
        response = world.http.post(
            endpoint, data=raw, content_type=content_type, headers=basic_auth(world.owner(endpoint))
        )

        assert_safe_answer(response, world.secrets)


# -- repeated parameters -----------------------------------------------------------------------


@FUZZ
@given(
    endpoint=st.sampled_from(FORM_ENDPOINTS),
    name=st.sampled_from(["grant_type", "refresh_token", "scope", "token", "token_type_hint"]),
    values=st.lists(
        st.sampled_from(["", "a", "refresh_token", "access_token"]), min_size=2, max_size=4
    ),
)
def test_a_repeated_parameter_is_invalid_request(
    world: World, endpoint: str, name: str, values: list[str]
) -> None:
    pairs = [(k, v) for k, v in world.valid_form(endpoint).items() if k != name]
    pairs += [(name, value) for value in values]

    response = post_form(world.http, endpoint, pairs, basic_auth(world.owner(endpoint)))

    assert response.status_code == 400
    assert assert_safe_answer(response, world.secrets)["error"] == "invalid_request"


# -- what the fuzzing once found, pinned


@pytest.mark.parametrize("endpoint", [REVOKE, INTROSPECT])
def test_an_unknown_token_type_hint_is_never_a_401(world: World, endpoint: str) -> None:
    form = {"token": world.access_token, "token_type_hint": "id_token"}

    response = world.http.post(endpoint, data=form, headers=basic_auth(world.owner(endpoint)))

    # The client authenticated: 400 unsupported_token_type, or the hint ignored (RFC 7009
    # §2.1 and RFC 7662 §2.1 only ask the server to look further when the hint is wrong).
    assert response.status_code in (200, 400)
    assert_safe_answer(response, world.secrets)


@pytest.mark.parametrize("endpoint", FORM_ENDPOINTS)
def test_a_repeated_parameter_name_is_not_echoed_into_error_description(
    world: World, endpoint: str
) -> None:
    pairs = [*world.valid_form(endpoint).items(), ('\u00e9\x00"', "1"), ('\u00e9\x00"', "2")]

    response = post_form(world.http, endpoint, pairs, basic_auth(world.owner(endpoint)))

    assert response.status_code == 400
    assert assert_safe_answer(response, world.secrets)["error"] == ("invalid_request")


@pytest.mark.postgres_only  # SQLite stores NUL in text; PostgreSQL refuses it
def test_nul_in_a_password_grant_username_is_invalid_grant_not_a_5xx(world: World) -> None:
    form = {"grant_type": "password", "username": "ann@example.com\x00", "password": PASSWORD}

    response = world.http.post(TOKEN, data=form, headers=basic_auth(world.first_party))

    assert response.status_code == 400
    assert assert_safe_answer(response, world.secrets)["error"] in {
        "invalid_grant",
        "invalid_request",
    }


@pytest.mark.postgres_only
def test_nul_in_the_sign_in_email_is_refused_not_a_5xx(app: Flask, world: World) -> None:
    browser = app.test_client()
    page = browser.get("/login")

    response = browser.post(
        "/login",
        data={
            "email": "ann@example.com\x00",
            "password": PASSWORD,
            "csrf_token": csrf_token_of(page),
            "next": "/account",
        },
    )

    assert response.status_code in (400, 401)


# -- malformed JOSE wherever a token is read ---------------------------------------------------
# The bearer endpoints' exact codes belong to the bearer boundary; here every answer must be
# one the OpenAPI document lists for that operation, a 4xx, in the RFC 6750 §3.1 shape.

BEARER_ENDPOINTS = [
    ("GET", "/oauth/userinfo"),
    ("POST", "/oauth/userinfo"),
    ("GET", "/account/sessions"),
    ("DELETE", "/account/sessions/{id}"),
    ("POST", "/account/sessions/revoke-others"),
    ("POST", "/account/logout-all"),
]
BEARER_ERRORS = {"invalid_request", "invalid_token", "insufficient_scope"}
LOGOUT = "/oauth/logout"
FEED = "/oauth/revocations"
HINT_REFUSED = "The id_token_hint was not issued by this server."
# Shorter values could turn up in an answer by coincidence ("A", "."), not by echo.
ECHO_CHECK_MIN_LENGTH = 16

JOSE_FUZZ = settings(FUZZ, max_examples=150)


@pytest.fixture(scope="module")
def api() -> OpenApiSchema:
    document = json.loads(files("authserver").joinpath("openapi.json").read_text("utf-8"))
    return schemathesis.openapi.from_dict(document)


@pytest.fixture
def material(world: World) -> TokenMaterial:
    """What any caller can learn: the published kids, and a real access token of its own."""
    jwks = world.http.get("/.well-known/jwks.json").json
    assert jwks["keys"]
    return TokenMaterial.of([key["kid"] for key in jwks["keys"]], world.access_token)


def error_log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{record.name}: {record.getMessage()}"
        for record in caplog.records
        if record.levelno >= logging.ERROR
    ]


def assert_not_echoed(response: TestResponse, value: str) -> None:
    if len(value) >= ECHO_CHECK_MIN_LENGTH:
        assert value not in response.get_data(as_text=True), "the input came back in the body"
        assert value not in str(response.headers), "the input came back in a header"


def call_bearer_endpoint(
    http: FlaskClient, method: str, path: str, authorization: str
) -> TestResponse:
    url = path.replace("{id}", str(uuid.uuid4()))
    return http.open(url, method=method, headers={"Authorization": authorization})


def assert_documented_bearer_refusal(
    api: OpenApiSchema, method: str, path: str, response: TestResponse
) -> None:
    text = response.get_data(as_text=True)
    for marker in LEAK_MARKERS:
        assert marker not in text, f"{response.status_code} leaked {marker!r}: {text[:300]}"
    operation = api[path][method]
    assert 400 <= response.status_code < 500, f"{method} {path}: {response.status_code} {text}"
    assert str(response.status_code) in operation.definition.raw["responses"], (
        f"{method} {path} answered an undocumented {response.status_code}"
    )
    operation.validate_response(response)
    body = response.json
    assert body["error"] in BEARER_ERRORS, body
    assert DESCRIPTION_CHARS.fullmatch(body.get("error_description", "")), body
    if response.status_code == 401:
        # RFC 6750 §3: a 401 says which scheme to use.
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@JOSE_FUZZ
@given(
    endpoint=st.sampled_from(BEARER_ENDPOINTS),
    scheme=st.sampled_from(["Bearer", "bearer"]),
    data=st.data(),
)
def test_malformed_jose_in_a_bearer_header_gets_a_documented_4xx(
    world: World,
    material: TokenMaterial,
    api: OpenApiSchema,
    caplog: pytest.LogCaptureFixture,
    data: DataObject,
    endpoint: tuple[str, str],
    scheme: str,
) -> None:
    token = data.draw(malformed_tokens(material), label="token")
    method, path = endpoint
    caplog.clear()

    response = call_bearer_endpoint(world.http, method, path, f"{scheme} {token}")

    assert error_log_lines(caplog) == []
    assert_documented_bearer_refusal(api, method, path, response)
    assert_not_echoed(response, token)


def form_too_large(form: dict[str, str]) -> bool:
    """Whether this form is past the body limit, which every POST answers with 413."""
    return len(urlencode(form)) > MAX_REQUEST_BYTES


@JOSE_FUZZ
@given(method=st.sampled_from(["GET", "POST"]), data=st.data())
def test_a_malformed_id_token_hint_gets_the_logout_error_page(
    world: World,
    material: TokenMaterial,
    caplog: pytest.LogCaptureFixture,
    data: DataObject,
    method: str,
) -> None:
    hint = data.draw(malformed_tokens(material), label="id_token_hint")
    form = {"id_token_hint": hint}
    caplog.clear()

    if method == "GET":
        response = world.http.get(LOGOUT, query_string=form)
    else:
        response = world.http.post(LOGOUT, data=form)

    assert error_log_lines(caplog) == []
    text = response.get_data(as_text=True)
    for marker in LEAK_MARKERS:
        assert marker not in text
    assert_not_echoed(response, hint)
    if method == "POST" and form_too_large(form):
        assert response.status_code == 413, text[:300]
    elif hint:
        assert response.status_code == 400, text[:300]
        assert HINT_REFUSED in text
    else:
        # No hint is a fine request: the confirmation page (RP-Initiated Logout 1.0 §2).
        assert response.status_code == 200, text[:300]


def expected_token_endpoint_answer(form: dict[str, str]) -> tuple[int, str | None]:
    """(status, error) of revocation and introspection for this form from a client that
    authenticated: a missing token is invalid_request (RFC 7009 §2.1, RFC 7662 §2.1); a
    token that is not one of ours is no error at all."""
    if form_too_large(form):
        return 413, "request_entity_too_large"
    if not form["token"]:
        return 400, "invalid_request"
    return 200, None


@JOSE_FUZZ
@given(hint=st.sampled_from([None, "access_token", "refresh_token"]), data=st.data())
def test_a_malformed_token_at_revocation_answers_200_and_revokes_nothing(
    world: World,
    material: TokenMaterial,
    caplog: pytest.LogCaptureFixture,
    data: DataObject,
    hint: str | None,
) -> None:
    token = data.draw(malformed_tokens(material), label="token")
    form = {"token": token, **({"token_type_hint": hint} if hint else {})}
    caplog.clear()

    response = world.http.post(REVOKE, data=form, headers=basic_auth(world.first_party))

    assert error_log_lines(caplog) == []
    body = assert_safe_answer(response, world.secrets)
    # RFC 7009 §2.2: an invalid token is no error; the client learns nothing.
    assert (response.status_code, body.get("error")) == expected_token_endpoint_answer(form)
    assert_not_echoed(response, token)
    still_live = world.http.post(
        INTROSPECT, data={"token": world.refresh_token}, headers=basic_auth(world.first_party)
    )
    assert still_live.json["active"] is True


@JOSE_FUZZ
@given(hint=st.sampled_from([None, "access_token", "refresh_token"]), data=st.data())
def test_a_malformed_token_at_introspection_is_inactive(
    world: World,
    material: TokenMaterial,
    caplog: pytest.LogCaptureFixture,
    data: DataObject,
    hint: str | None,
) -> None:
    token = data.draw(malformed_tokens(material), label="token")
    form = {"token": token, **({"token_type_hint": hint} if hint else {})}
    caplog.clear()

    response = world.http.post(INTROSPECT, data=form, headers=basic_auth(world.resource_server))

    assert error_log_lines(caplog) == []
    body = assert_safe_answer(response, world.secrets)
    status, error = expected_token_endpoint_answer(form)
    assert (response.status_code, body.get("error")) == (status, error)
    if status == 200:
        assert body == {"active": False}  # RFC 7662 §2.2: and nothing more
    assert_not_echoed(response, token)


# -- the feed's cursor ---------------------------------------------------------------------------


@FUZZ
@given(since=junk_feed_cursors)
def test_a_junk_feed_cursor_is_invalid_request_in_fixed_words(
    world: World, caplog: pytest.LogCaptureFixture, since: str
) -> None:
    caplog.clear()

    response = world.http.get(
        FEED, query_string={"since": since}, headers=basic_auth(world.resource_server)
    )

    assert error_log_lines(caplog) == []
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert response.json == {"error": "invalid_request", "error_description": FEED_CURSOR_REFUSED}


@FUZZ
@given(since=st.integers(min_value=0, max_value=MAX_FEED_CURSOR))
def test_every_cursor_in_the_bigint_range_is_read(world: World, since: int) -> None:
    response = world.http.get(
        FEED, query_string={"since": str(since)}, headers=basic_auth(world.resource_server)
    )

    assert response.status_code == 200
    # A cursor the database did not hand out gets the full listing and the database's own.
    assert 0 <= response.json["cursor"] <= MAX_FEED_CURSOR


# -- what the JOSE fuzzing found, pinned ---------------------------------------------------------


def _forged(header_text: str) -> str:
    return f"{b64url(header_text.encode())}.e30.AA"


def pinned_tokens(kid: str) -> dict[str, str]:
    """Each once answered 500 with a traceback in the log, at every place a token is read."""
    return {
        # RecursionError in json.loads, while looking for the kid.
        "kid nested 3000 deep": _forged('{"kid":' + "[" * 3000 + "]" * 3000 + "}"),
        # TypeErrors inside joserfc's crit check, once the kid named a real key.
        "crit a number": _forged(compact_json({"alg": "ES256", "kid": kid, "crit": 5})),
        "crit holding a list": _forged(compact_json({"alg": "ES256", "kid": kid, "crit": [[1]]})),
        "crit holding an object": _forged(compact_json({"alg": "ES256", "kid": kid, "crit": [{}]})),
    }


PINNED = list(pinned_tokens("any-kid"))


@pytest.mark.parametrize("name", PINNED)
def test_pinned_tokens_are_refused_everywhere_without_an_error_log(
    world: World,
    material: TokenMaterial,
    api: OpenApiSchema,
    caplog: pytest.LogCaptureFixture,
    name: str,
) -> None:
    token = pinned_tokens(material.kids[0])[name]

    bearer = [
        (method, path, call_bearer_endpoint(world.http, method, path, f"Bearer {token}"))
        for method, path in BEARER_ENDPOINTS
    ]
    logout = world.http.get(LOGOUT, query_string={"id_token_hint": token})
    revoke = world.http.post(REVOKE, data={"token": token}, headers=basic_auth(world.first_party))
    introspect = world.http.post(
        INTROSPECT, data={"token": token}, headers=basic_auth(world.resource_server)
    )

    assert error_log_lines(caplog) == []
    for method, path, response in bearer:
        assert response.status_code == 401
        assert_documented_bearer_refusal(api, method, path, response)
    assert logout.status_code == 400
    assert revoke.status_code == 200
    assert introspect.json == {"active": False}


@pytest.mark.parametrize("since", ["\u00b2", "\u0661", "99999999999999999999", "0" * 5000])
def test_pinned_cursors_are_invalid_request(world: World, since: str) -> None:
    """str.isdigit() took the first two (int() then failed on one and read the other as 1);
    PostgreSQL's bigint refused the third; int() refuses more than 4300 digits."""
    response = world.http.get(
        FEED, query_string={"since": since}, headers=basic_auth(world.resource_server)
    )

    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"


def test_the_error_log_check_sees_an_unhandled_error(
    world: World, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fuzz tests' "no ERROR line" can fail: a crash in token parsing is logged."""

    def crash(token: str) -> None:
        raise RuntimeError("parser bug")

    monkeypatch.setattr("authserver.services.token_verification.parse_compact_jws", crash)

    response = world.http.get("/oauth/userinfo", headers={"Authorization": "Bearer a.b.c"})

    assert response.status_code == 500
    assert error_log_lines(caplog) == ["authserver.errors: unhandled error"]
