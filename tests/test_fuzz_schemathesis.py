"""Schemathesis against /openapi.json, in process: every documented operation gets generated
requests, schema-valid and schema-breaking, and every answer must be documented (status, headers,
content type, body schema), never a 5xx, never a stack trace, and every error an RFC 6749
§5.2-shaped JSON body with a code the RFCs define (under the admin API, an RFC 9457 problem
carrying such a code).

schemathesis' own pytest integration (``schemathesis.pytest.from_fixture``) does not run on the
pytest this project installs (it writes ``Node._nodeid``, which pytest 9.2 no longer has), so
each operation is a plain parametrized test that drives ``APIOperation.as_strategy`` with
Hypothesis, bounded and derandomized so CI sees the same requests every run.

Generated values reach only what the document describes. Two inputs the server parses are
more hostile than their schemas say, so each example may swap them for a draw from
``tests/hostile_input.py``: the bearer endpoints' ``Authorization`` header (which OpenAPI cannot
describe as a parameter) for malformed JOSE, and the feed's ``since`` for junk cursors.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from importlib.resources import files
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import DataObject
from schemathesis import Case, GenerationMode
from schemathesis.specs.openapi.schemas import OpenApiSchema
from sqlalchemy.orm import Session

from authserver.config import Config
from authserver.db import utcnow
from authserver.models import User
from authserver.own_apis import ADMIN_API_PATH, ADMIN_SCOPES, admin_audience
from authserver.runtime import runtime
from authserver.services import client_registration
from authserver.services.clients import RegisteredClient
from authserver.services.refresh_tokens import start_family
from tests.helpers import basic_auth, make_client, make_user
from tests.hostile_input import TokenMaterial, junk_feed_cursors, malformed_tokens

DOCUMENT = files("authserver").joinpath("openapi.json")
EXAMPLES_PER_OPERATION = 25
USER_SCOPE = "openid email profile read account"
METRICS_TOKEN = "metrics-scraper-token-for-the-fuzzer-0123456789"

# RFC 6749 §5.2, RFC 8707 §2 (invalid_target), RFC 7009 §2.2.1 (unsupported_token_type),
# RFC 6750 §3.1 for the bearer endpoints, and the refusals the server renders in that shape:
# HTTP-level ones, and rate limits (429) as temporarily_unavailable.
OAUTH_ERRORS = {
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_target",
    "unsupported_token_type",
    # RFC 6749 §4.1.2.1, from the pushed authorization request endpoint (RFC 9126 §2.3).
    "unsupported_response_type",
    # RFC 8628 §3.5, the device grant's polls.
    "authorization_pending",
    "slow_down",
    "expired_token",
    "access_denied",
    # RFC 9449 §5, §8: a DPoP proof at the token endpoint.
    "invalid_dpop_proof",
    "use_dpop_nonce",
}
BEARER_ERRORS = {"invalid_request", "invalid_token", "insufficient_scope", "invalid_dpop_proof"}
BEARER_SCHEMES = {"bearerAccessToken", "adminAccessToken"}
# The admin API's refusals of a request that is well formed: RFC 9110 §15.5.10, §15.5.13,
# RFC 6585 §3 (answered as RFC 9457 problem details).
ADMIN_ERRORS = {"conflict", "precondition_failed", "precondition_required"}
# RFC 7591 §3.2.2, dynamic client registration.
REGISTRATION_ERRORS = {"invalid_redirect_uri", "invalid_client_metadata"}
HTTP_ERRORS = {"method_not_allowed", "request_entity_too_large", "not_found"}
ALLOWED_ERRORS = OAUTH_ERRORS | BEARER_ERRORS | REGISTRATION_ERRORS | HTTP_ERRORS
RATE_LIMITED = "temporarily_unavailable"
LEAK_MARKERS = ("Traceback", 'File "', "sqlalchemy", "psycopg", "authserver/")


def _operations(*, with_inputs_only: bool) -> list[tuple[str, str]]:
    """(METHOD, path) of every documented operation; with_inputs_only: those that take a
    parameter or a body, the only ones for which schema-breaking requests exist."""
    paths = json.loads(DOCUMENT.read_text(encoding="utf-8"))["paths"]
    return [
        (method.upper(), path)
        for path, item in paths.items()
        for method, operation in item.items()
        if not with_inputs_only
        or operation.get("requestBody")
        # A header is a string whatever is sent: only other parameters can break the schema.
        or any(p["in"] != "header" for p in operation.get("parameters", []))
    ]


CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    for method, path in _operations(with_inputs_only=mode is GenerationMode.NEGATIVE)
]


# -- the data the generated requests meet -----------------------------------------------------


class SteppedClock:
    """The server's clock, moved on a second for every token minted: a token issued in the
    very second of a sign-out-everywhere counts as issued before it (``iat`` has whole
    seconds), and the fuzzer signs out everywhere often."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def step(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@dataclass
class Seeded:
    app: Flask
    session: Session
    clock: SteppedClock
    user: User
    user_client: RegisteredClient
    resource_server: RegisteredClient
    admin_client: RegisteredClient
    # An initial access token for POST /register (RFC 7591), good for every example.
    initial_access_token: str
    # The client registered for the registration access token of the example at hand.
    registered_client_id: str = ""

    def fresh_access_token(self) -> str:
        """A new access token (with its own refresh family) for the user, minted by the
        services: the fuzzer signs the user out as it goes (logout-all, DELETE), so no one
        token would last, and sign-ins through the token endpoint are rate limited."""
        rt = runtime(self.app)
        client = self.user_client.client
        now = self.clock.step()
        # Meant for the account API (its audience and scope); userinfo takes any audience.
        audience = rt.config.issuer + "/account"
        family = start_family(
            self.session,
            user=self.user,
            client=client,
            scope=USER_SCOPE,
            audience=audience,
            policy=rt.refresh_policy(client),
            now=now,
        )
        access = rt.access_tokens.issue(
            subject=str(self.user.id),
            client_id=client.client_id,
            audience=audience,
            scope=USER_SCOPE,
            ttl=rt.access_token_ttl(client),
            now=now,
            family_id=family.family.id,
        )
        self.session.commit()
        return access.token

    def admin_access_token(self) -> str:
        """A token of the admin client for the admin API, with every admin scope."""
        rt = runtime(self.app)
        client = self.admin_client.client
        return rt.access_tokens.issue(
            subject=client.client_id,
            client_id=client.client_id,
            audience=admin_audience(rt.config.issuer),
            scope=" ".join(client.admin_scopes),
            ttl=rt.access_token_ttl(client),
            now=self.clock.step(),
        ).token

    def fresh_registration(self) -> tuple[str, str]:
        """(client_id, registration access token) of a client just registered (RFC 7591):
        the fuzzer replaces (rotating the token) and deletes registrations as it goes."""
        rt = runtime(self.app)
        now = self.clock.step()
        token = client_registration.authenticate_initial_access_token(
            self.session, self.initial_access_token, now
        )
        registered = client_registration.register_client(
            self.session,
            token,
            {"redirect_uris": ["https://rp.example.test/callback"], "client_name": "Fuzzed"},
            now,
            issuer=rt.config.issuer,
        )
        self.session.commit()
        return registered.client.client_id, registered.registration_access_token

    def token_material(self) -> TokenMaterial:
        kids = list(runtime(self.app).keys.snapshot().by_kid)
        return TokenMaterial.of(kids, self.fresh_access_token())


@pytest.fixture
def config(config: Config) -> Config:
    """The test configuration with /metrics turned on for the scraper's token, and dynamic
    client registration on, its rate limit out of the fuzzer's way."""
    return replace(
        config,
        metrics_token=METRICS_TOKEN,
        dynamic_registration=1,
        ratelimit_registration="100000/minute",
    )


@pytest.fixture
def seeded(app: Flask, session: Session) -> Seeded:
    clock = SteppedClock()
    runtime(app).clock = clock
    user = make_user(app, session)
    user_client = make_client(
        session,
        name="First-party app",
        scopes=USER_SCOPE.split(),
        grant_types=["password", "refresh_token", "client_credentials"],
    )
    resource_server = make_client(
        session,
        name="Orders API",
        grant_types=["client_credentials"],
        first_party=False,
        served_audiences=[runtime(app).config.default_audience],
    )
    admin_client = make_client(
        session,
        name="Provisioning",
        grant_types=["client_credentials"],
        first_party=False,
        scopes=[],
        admin_scopes=list(ADMIN_SCOPES),
    )
    initial = client_registration.create_initial_access_token(
        session, clock(), expires_in=timedelta(days=1), uses=100_000
    )
    session.commit()
    return Seeded(
        app, session, clock, user, user_client, resource_server, admin_client, initial.token
    )


def _load_schema(seeded: Seeded) -> OpenApiSchema:
    config = schemathesis.Config.from_dict(
        {
            "checks": {
                # A well-formed request naming an unknown code, token or user is refused with
                # 400 (RFC 6749 §5.2): schema-valid does not mean acceptable here. The other
                # checks still judge those answers.
                "positive_data_acceptance": {"enabled": False},
            },
        }
    )
    schema = schemathesis.openapi.from_wsgi("/openapi.json", seeded.app, config=config)

    class SeededCredentials:
        """Where an operation takes them: HTTP Basic of the first-party client at the token
        endpoint (so grants get past client authentication) and of the resource server
        elsewhere; a fresh bearer token of the user at the bearer endpoints."""

        def get(self, case: Case, context: Any) -> dict[str, str] | None:
            security = case.operation.definition.raw.get("security", [])
            schemes = {name for requirement in security for name in requirement}
            if "bearerAccessToken" in schemes:
                return {"Authorization": f"Bearer {seeded.fresh_access_token()}"}
            if "adminAccessToken" in schemes:
                return {"Authorization": f"Bearer {seeded.admin_access_token()}"}
            if "initialAccessToken" in schemes:
                return {"Authorization": f"Bearer {seeded.initial_access_token}"}
            if "registrationAccessToken" in schemes:
                # A registration's own token: the path's client_id is another's unless
                # _with_hostile_input puts this one's there.
                client_id, token = seeded.fresh_registration()
                seeded.registered_client_id = client_id
                return {"Authorization": f"Bearer {token}"}
            if "metricsToken" in schemes:
                return {"Authorization": f"Bearer {METRICS_TOKEN}"}
            if "clientSecretBasic" in schemes:
                owner = (
                    seeded.user_client if case.path == "/oauth/token" else seeded.resource_server
                )
                return basic_auth(owner)
            return None

        def set(self, case: Case, data: dict[str, str], context: Any) -> None:
            case.headers = {**(case.headers or {}), **data}

    # No caching: asked once per generated request.
    schema.auth(refresh_interval=None)(SeededCredentials)
    return schema


def _sendable_in_a_header(value: str) -> bool:
    """HTTP carries header values as bytes; the client refuses what Latin-1 cannot encode."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def malformed_bearer_authorizations(material: TokenMaterial) -> st.SearchStrategy[str]:
    tokens = malformed_tokens(material).filter(_sendable_in_a_header)
    return st.one_of(
        tokens.map("Bearer {}".format),
        st.sampled_from(["Bearer", "Bearer ", "Bearer  ", "Basic Og==", "Digest x", "x"]),
    )


def _with_hostile_input(case: Case, data: DataObject, material: TokenMaterial) -> Case:
    """Half the time, the one input of this operation the schema cannot make hostile enough
    swapped for a draw from tests/hostile_input.py."""
    if not data.draw(st.booleans(), label="swap"):
        return case
    security = case.operation.definition.raw.get("security", [])
    if any(BEARER_SCHEMES & set(requirement) for requirement in security):
        authorization = data.draw(malformed_bearer_authorizations(material), label="bearer")
        case.headers = {**(case.headers or {}), "Authorization": authorization}
    elif case.path == "/oauth/revocations":
        since = data.draw(junk_feed_cursors, label="since")
        case.query = {**(case.query or {}), "since": since}
    return case


def _with_own_registration(
    case: Case, data: DataObject, seeded: Seeded, mode: GenerationMode
) -> Case:
    """Half the time, the registration management endpoints (RFC 7592) asked about the very
    client whose registration access token the example carries, so they get past
    authentication: to the replacement's rules (PUT) or to reading and deleting. Only where
    a schema-breaking request stays schema-breaking (a PUT's body)."""
    if case.path != "/register/{client_id}" or not data.draw(st.booleans(), label="own"):
        return case
    if mode is GenerationMode.NEGATIVE and case.method != "PUT":
        return case
    case.path_parameters = {"client_id": seeded.registered_client_id}
    if mode is GenerationMode.POSITIVE and isinstance(case.body, dict):
        case.body = {**case.body, "client_id": seeded.registered_client_id}
    return case


def _assert_answer_is_safe(case: Case, status: int, content_type: str, body: bytes) -> None:
    text = body.decode("utf-8", "replace")
    for marker in LEAK_MARKERS:
        assert marker not in text, f"{case.operation.label} answered with {marker!r}: {text[:300]}"
    assert status < 500, f"{case.operation.label} answered {status}: {text[:300]}"
    if status < 400:
        return
    admin_api = case.path.startswith(ADMIN_API_PATH + "/")
    expected_type = "application/problem+json" if admin_api else "application/json"
    assert content_type.startswith(expected_type), f"{status} came as {content_type!r}"
    error = json.loads(body)
    assert isinstance(error, dict), text[:300]
    if admin_api:
        assert error.get("status") == status, text[:300]
    allowed = (
        ALLOWED_ERRORS
        | ({RATE_LIMITED} if status == 429 else set())
        | (ADMIN_ERRORS if admin_api else set())
    )
    assert error.get("error") in allowed, f"{case.operation.label} answered {status} {error}"


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_generated_requests_get_documented_answers_and_never_a_5xx(
    seeded: Seeded,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    operation = _load_schema(seeded)[path][method]
    cases = operation.as_strategy(generation_mode=mode)
    material = seeded.token_material()

    @given(case=cases, data=st.data())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        # One app and its rolled-back transaction serve every example, on purpose.
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    def exchange(case: Case, data: DataObject) -> None:
        case = _with_hostile_input(case, data, material)
        case = _with_own_registration(case, data, seeded, mode)
        caplog.clear()
        response = case.call()
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == [], f"{case.operation.label} logged {errors}"
        case.validate_response(response)
        content_type = response.headers.get("content-type", [""])[0]
        _assert_answer_is_safe(case, response.status_code, content_type, response.content)

    exchange()
