"""The OpenAPI document at /openapi.json: valid OpenAPI 3.1, true to the routes the app
registers, and true to what the endpoints answer."""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Iterator
from importlib.resources import files
from typing import Any

import jsonschema_rs  # schemathesis' JSON Schema engine
import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.schemas import OpenApiSchema
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from tests.flows.test_admin_api import Admin, admin_token, make_admin
from tests.helpers import basic_auth, make_client, make_user, password_login

# Server-rendered pages for browsers, not an API: left out of the document on purpose, and
# named in its description instead. Any other route must be documented.
# The operator console (http/admin_console/): pages for people, not an API.
ADMIN_CONSOLE_PAGES = {
    ("GET", "/admin"),
    ("GET", "/admin/users/{}"),
    ("POST", "/admin/users/{}/sessions/{}/sign-out"),
    ("POST", "/admin/users/{}/sign-out-everywhere"),
    ("POST", "/admin/users/{}/disable"),
    ("POST", "/admin/users/{}/enable"),
    ("POST", "/admin/users/{}/reset-link"),
    ("GET", "/admin/clients"),
    ("GET", "/admin/clients/{}"),
    ("POST", "/admin/clients/{}"),
    ("POST", "/admin/clients/{}/disable"),
    ("POST", "/admin/clients/{}/enable"),
}
HTML_PAGES = {
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/logout"),
    ("POST", "/logout"),
    ("GET", "/logged-out"),
    ("GET", "/password/forgot"),
    ("POST", "/password/forgot"),
    ("GET", "/password/reset"),
    ("POST", "/password/reset"),
    ("GET", "/email/verify"),
    ("POST", "/email/verify"),
    ("POST", "/account/email/verification"),
    ("GET", "/email/change"),
    ("POST", "/email/change"),
    ("POST", "/account/email"),
    ("GET", "/signup"),
    ("POST", "/signup"),
    ("GET", "/signup/password"),
    ("POST", "/signup/password"),
    ("GET", "/invitation"),
    ("POST", "/invitation"),
    ("GET", "/account"),
    ("POST", "/account/password"),
    ("POST", "/account/delete"),
    ("GET", "/device"),
    ("POST", "/device"),
    ("POST", "/device/decision"),
    ("GET", "/login/second-factor"),
    ("POST", "/login/second-factor"),
    ("GET", "/account/two-step"),
    ("POST", "/account/two-step"),
    ("POST", "/account/two-step/recovery-codes"),
    ("POST", "/account/two-step/off"),
    ("POST", "/account/devices/{}/sign-out"),
    ("POST", "/account/devices/sign-out-others"),
    ("GET", "/oauth/authorize"),
    ("POST", "/oauth/authorize"),
    ("GET", "/oauth/logout"),
    ("POST", "/oauth/logout"),
    ("GET", "/dev/mail"),
    ("GET", "/dev/mail/{}/html"),
    ("POST", "/account/passkeys/{}/rename"),
    ("POST", "/account/passkeys/{}/remove"),
    # The passkey ceremonies' JSON endpoints: called by the pages' own script
    # (static/passkeys.js) with the page's CSRF token, same origin only; part of the pages,
    # not an API a client could call.
    ("POST", "/login/passkey/options"),
    ("POST", "/login/passkey"),
    ("POST", "/login/second-factor/passkey/options"),
    ("POST", "/login/second-factor/passkey"),
    ("POST", "/account/passkeys/options"),
    ("POST", "/account/passkeys"),
    *ADMIN_CONSOLE_PAGES,
}
# Neither a page nor an API: the pages' stylesheet in the operator's colour (http/branding.py),
# named in the description beside the pages.
PAGE_ASSETS = {("GET", "/branding.css")}
NOT_ROUTED_BY_US = {"HEAD", "OPTIONS"}  # Flask answers these for every route
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        files("authserver").joinpath("openapi.json").read_text(encoding="utf-8")
    )
    return document


def _template(path: str) -> str:
    """A path with its variables blanked: Flask's ``<uuid:device_id>`` and OpenAPI's ``{id}``
    both become ``{}``."""
    return re.sub(r"<[^>]+>|\{[^}]+\}", "{}", path)


def _documented_operations() -> set[tuple[str, str]]:
    return {
        (method.upper(), _template(path))
        for path, item in _document()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def _routed_operations(app: Flask) -> set[tuple[str, str]]:
    return {
        (method, _template(rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in (rule.methods or set()) - NOT_ROUTED_BY_US
    }


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def _resolve(document: dict[str, Any], reference: str) -> Any:
    assert reference.startswith("#/"), f"not a local reference: {reference}"
    node: Any = document
    for part in reference[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


# -- the document itself -------------------------------------------------------------------


def test_document_is_valid_openapi_3_1() -> None:
    document = _document()

    assert document["openapi"].startswith("3.1.")
    # Raises jsonschema_rs.ValidationError with the offending location if it is not.
    schemathesis.openapi.from_dict(document).validate()


def test_validation_refuses_a_document_that_breaks_the_specification() -> None:
    broken = _document()
    del broken["info"]["version"]
    broken["paths"]["/oauth/token"]["post"]["responses"]["200"].pop("description")

    with pytest.raises(jsonschema_rs.ValidationError):
        schemathesis.openapi.from_dict(broken).validate()


def test_every_schema_in_the_document_is_valid_json_schema_2020_12() -> None:
    for name, schema in _document()["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name


def test_every_reference_in_the_document_resolves() -> None:
    document = _document()

    references = set(_references(document))

    assert references
    for reference in references:
        assert _resolve(document, reference) is not None, reference


def test_every_operation_has_a_unique_id_a_summary_and_says_how_to_authenticate() -> None:
    operation_ids = []
    for path, item in _document()["paths"].items():
        for method, operation in item.items():
            operation_ids.append(operation["operationId"])
            assert operation.get("summary"), f"{method.upper()} {path}"
            assert "security" in operation, f"{method.upper()} {path} says nothing of auth"
    assert len(operation_ids) == len(set(operation_ids))


# -- true to the routes --------------------------------------------------------------------


def test_every_documented_operation_is_a_route(app: Flask) -> None:
    missing = _documented_operations() - _routed_operations(app)

    assert not missing, f"documented but not routed: {sorted(missing)}"


def test_every_route_but_the_html_pages_is_documented(app: Flask) -> None:
    undocumented = _routed_operations(app) - _documented_operations() - HTML_PAGES - PAGE_ASSETS

    assert not undocumented, f"routed but not in authserver/openapi.json: {sorted(undocumented)}"


def test_html_pages_are_routes_and_named_in_the_description(app: Flask) -> None:
    description = _document()["info"]["description"]

    assert _routed_operations(app) >= HTML_PAGES, "HTML_PAGES names a route that is gone"
    for _, path in HTML_PAGES:
        assert f"`{path.replace('{}', '{id}')}`" in description, path


def test_get_openapi_json_serves_exactly_the_file(client: FlaskClient) -> None:
    response = client.get("/openapi.json")

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.json == _document()


# -- true to the answers -------------------------------------------------------------------


@pytest.fixture
def api() -> OpenApiSchema:
    return schemathesis.openapi.from_dict(copy.deepcopy(_document()))


def _conforms(api: OpenApiSchema, method: str, path: str, response: TestResponse) -> None:
    """Raises (an AssertionError or schemathesis' FailureGroup, naming the violation) if the
    answer does not match the documented status, content type and body schema."""
    operation = api[path][method]
    assert str(response.status_code) in operation.definition.raw["responses"], (
        f"{method} {path} answered an undocumented {response.status_code}"
    )
    operation.validate_response(response)


def test_token_response_matches_the_document(
    app: Flask, session: Session, client: FlaskClient, api: OpenApiSchema
) -> None:
    make_user(app, session)
    registered = make_client(session)

    response = password_login(client, registered)

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    _conforms(api, "POST", "/oauth/token", response)


def test_schema_check_notices_a_token_response_that_breaks_the_document(
    app: Flask, session: Session, client: FlaskClient, api: OpenApiSchema
) -> None:
    make_user(app, session)
    response = password_login(client, make_client(session))
    response.set_data(json.dumps({**response.json, "token_type": "mac"}))

    # One violation is a schemathesis Failure (an AssertionError); several, a FailureGroup.
    with pytest.raises((AssertionError, FailureGroup), match="token_type"):
        _conforms(api, "POST", "/oauth/token", response)


def test_error_bodies_match_the_document(
    app: Flask, session: Session, client: FlaskClient, api: OpenApiSchema
) -> None:
    registered = make_client(session)
    wrong_secret = basic_auth(registered)["Authorization"][:-4] + "AAAA"

    unknown_code = client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": "no-such-token"},
        headers=basic_auth(registered),
    )
    bad_client = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": wrong_secret},
    )

    assert unknown_code.status_code == 400
    assert unknown_code.json["error"] == "invalid_grant"
    _conforms(api, "POST", "/oauth/token", unknown_code)
    assert bad_client.status_code == 401
    assert bad_client.json["error"] == "invalid_client"
    assert bad_client.headers["WWW-Authenticate"].startswith("Basic ")
    _conforms(api, "POST", "/oauth/token", bad_client)


def test_throttled_client_authentication_answers_as_documented(
    session: Session, client: FlaskClient, api: OpenApiSchema
) -> None:
    registered = make_client(session)
    wrong_secret = basic_auth(registered)["Authorization"][:-4] + "AAAA"

    answers = [
        client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": wrong_secret},
        )
        for _ in range(10)
    ]

    throttled = answers[-1]
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) >= 1
    _conforms(api, "POST", "/oauth/token", throttled)


def test_introspection_of_an_unknown_token_is_only_inactive(
    session: Session, client: FlaskClient, api: OpenApiSchema
) -> None:
    rs = make_client(session, name="Orders API", grant_types=["client_credentials"])

    response = client.post(
        "/oauth/introspect", data={"token": "not-a-token"}, headers=basic_auth(rs)
    )

    assert response.status_code == 200
    assert response.json == {"active": False}
    _conforms(api, "POST", "/oauth/introspect", response)


def test_introspection_of_live_tokens_matches_the_document(
    app: Flask, session: Session, client: FlaskClient, api: OpenApiSchema
) -> None:
    make_user(app, session)
    registered = make_client(session)
    tokens = password_login(client, registered).json

    for token in (tokens["access_token"], tokens["refresh_token"]):
        response = client.post(
            "/oauth/introspect", data={"token": token}, headers=basic_auth(registered)
        )

        assert response.json["active"] is True
        _conforms(api, "POST", "/oauth/introspect", response)


def test_bearer_endpoints_answer_as_documented(
    app: Flask, session: Session, client: FlaskClient, api: OpenApiSchema
) -> None:
    make_user(app, session)
    registered = make_client(session, scopes=["openid", "email", "profile"])
    access_token = password_login(client, registered).json["access_token"]
    bearer = {"Authorization": f"Bearer {access_token}"}
    account = {"resource": app.config["AUTHSERVER"].issuer + "/account"}
    account_token = password_login(client, registered, **account, scope="account").json
    without_scope = password_login(client, registered, **account, scope="openid").json

    userinfo = client.get("/oauth/userinfo", headers=bearer)
    devices = client.get(
        "/account/sessions", headers={"Authorization": f"Bearer {account_token['access_token']}"}
    )
    wrong_audience = client.get("/account/sessions", headers=bearer)
    no_scope = client.get(
        "/account/sessions", headers={"Authorization": f"Bearer {without_scope['access_token']}"}
    )
    no_token = client.get("/account/sessions")

    assert userinfo.json["email"] == "ann@example.com"
    _conforms(api, "GET", "/oauth/userinfo", userinfo)
    assert len(devices.json["sessions"]) == 3  # the three password sign-ins
    _conforms(api, "GET", "/account/sessions", devices)
    assert wrong_audience.status_code == 401
    _conforms(api, "GET", "/account/sessions", wrong_audience)
    assert no_scope.status_code == 403
    _conforms(api, "GET", "/account/sessions", no_scope)
    assert no_token.status_code == 401
    _conforms(api, "GET", "/account/sessions", no_token)


def test_discovery_documents_and_the_feed_answer_as_documented(
    session: Session, client: FlaskClient, api: OpenApiSchema
) -> None:
    rs = make_client(
        session,
        name="Orders API",
        grant_types=["client_credentials"],
        served_audiences=["https://api.example.test"],
    )
    not_a_resource_server = make_client(session, name="App", grant_types=["client_credentials"])

    for path in (
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/openapi.json",
        "/healthz",
        "/readyz",
    ):
        _conforms(api, "GET", path, client.get(path))
    feed = client.get("/oauth/revocations", headers=basic_auth(rs))
    refused = client.get("/oauth/revocations", headers=basic_auth(not_a_resource_server))
    assert feed.status_code == 200
    _conforms(api, "GET", "/oauth/revocations", feed)
    assert refused.status_code == 403
    _conforms(api, "GET", "/oauth/revocations", refused)
    assert client.get("/.well-known/jwks.json").json["keys"]


def test_admin_api_answers_as_documented(
    app: Flask, session: Session, client: FlaskClient, api: OpenApiSchema
) -> None:
    registered = make_admin(session)
    admin = Admin(client, admin_token(app, client, registered))
    reader = Admin(client, admin_token(app, client, registered, scope="admin:audit:read"))
    created = admin.call("POST", "/users", {"email": "bob@example.com"})
    user_path = f"/admin/v1/users/{created.get_json()['id']}"
    answers = [
        ("POST", "/admin/v1/users", created, 201),
        ("GET", "/admin/v1/users", admin.call("GET", "/users?limit=1"), 200),
        ("GET", "/admin/v1/users/{user_id}", admin.call("GET", user_path[9:]), 200),
        (
            "GET",
            "/admin/v1/users/{user_id}",
            admin.call("GET", user_path[9:], **{"If-None-Match": created.headers["ETag"]}),
            304,
        ),
        ("GET", "/admin/v1/users", Admin(client, "nope").call("GET", "/users"), 401),
        ("GET", "/admin/v1/users", reader.call("GET", "/users"), 403),
        ("GET", "/admin/v1/users/{user_id}", admin.call("GET", f"/users/{uuid.uuid4()}"), 404),
        ("POST", "/admin/v1/users", admin.call("POST", "/users", {"email": 1}), 400),
        ("PATCH", "/admin/v1/users/{user_id}", admin.call("PATCH", user_path[9:], {}), 428),
        (
            "PATCH",
            "/admin/v1/users/{user_id}",
            admin.call("PATCH", user_path[9:], {"email_verified": True}, **{"If-Match": '"0"'}),
            412,
        ),
        (
            "POST",
            "/admin/v1/users/{user_id}/enable",
            admin.call("POST", user_path[9:] + "/enable"),
            409,
        ),
        (
            "GET",
            "/admin/v1/users/{user_id}/sessions",
            admin.call("GET", user_path[9:] + "/sessions"),
            200,
        ),
        ("GET", "/admin/v1/clients", admin.call("GET", "/clients"), 200),
        ("GET", "/admin/v1/keys", admin.call("GET", "/keys"), 200),
        ("POST", "/admin/v1/keys/rotate", admin.call("POST", "/keys/rotate"), 201),
        ("GET", "/admin/v1/audit-events", admin.call("GET", "/audit-events?limit=2"), 200),
        (
            "GET",
            "/.well-known/oauth-protected-resource/admin/v1",
            client.get("/.well-known/oauth-protected-resource/admin/v1"),
            200,
        ),
    ]
    for method, path, response, status in answers:
        assert response.status_code == status, (method, path, response.get_data(as_text=True))
        _conforms(api, method, path, response)
