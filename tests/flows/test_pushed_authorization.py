"""Pushed authorization requests (RFC 9126, issue 17 part 2): a client pushes its request to
/oauth/par and sends the browser with the request_uri alone. What must be refused is tried:
a push without client authentication or with another client's id, a request the
authorization endpoint would refuse (pushed or not), a request_uri carried inside a push;
at the authorization endpoint an unknown, expired, used or other client's request_uri,
parameters in the URL that try to override the pushed ones, a plain request from a client
(or a server) that requires pushed requests; and two answers racing for one request_uri."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict
from werkzeug.test import TestResponse

from authserver.models import PushedAuthorizationRequest
from authserver.runtime import runtime
from authserver.services.clients import RegisteredClient
from tests.browser_helpers import (
    REDIRECT_URI,
    csrf_token_of,
    pkce_pair,
    query_of,
    redeem_code,
    sign_in,
    web_client,
)
from tests.helpers import PASSWORD, Clock, basic_auth, make_user

PAR = "/oauth/par"


def request_fields(challenge: str, **extra: str) -> dict[str, str]:
    fields = {
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "scope": "openid email offline_access",
        "state": "pushed-state",
        "nonce": "n-0S6_WzA2Mj",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    fields.update(extra)
    return fields


def push(http: FlaskClient, rp: RegisteredClient, **fields: str) -> TestResponse:
    return http.post(PAR, data=fields, headers=basic_auth(rp))


def pushed_uri(http: FlaskClient, rp: RegisteredClient, challenge: str, **extra: str) -> str:
    answer = push(http, rp, **request_fields(challenge, **extra))
    assert answer.status_code == 201, answer.get_data(as_text=True)
    assert answer.headers["Cache-Control"] == "no-store"
    body = answer.get_json()
    assert body["expires_in"] == runtime_ttl(http)
    assert body["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")
    return str(body["request_uri"])


def runtime_ttl(http: FlaskClient) -> int:
    return int(runtime(http.application).config.par_ttl)


def authorize_with(client_id: str, request_uri: str, **extra: str) -> str:
    return "/oauth/authorize?" + urlencode(
        {"client_id": client_id, "request_uri": request_uri, **extra}
    )


def consent(http: FlaskClient, url: str) -> TestResponse:
    page = http.get(url)
    if page.status_code != 200:
        return page
    return http.post(url, data={"csrf_token": csrf_token_of(page), "decision": "allow"})


def is_error_page(answer: TestResponse, text: str) -> bool:
    return (
        answer.status_code == 400
        and answer.mimetype == "text/html"
        and text in answer.get_data(as_text=True)
    )


@pytest.fixture
def rp(app: Flask, session: Session) -> RegisteredClient:
    make_user(app, session)
    return web_client(session)


# -- pushing ------------------------------------------------------------------------------


def test_a_pushed_request_signs_in_and_its_code_redeems(
    client: FlaskClient, rp: RegisteredClient, session: Session
) -> None:
    verifier, challenge = pkce_pair()
    request_uri = pushed_uri(client, rp, challenge)
    url = authorize_with(rp.client.client_id, request_uri)
    # Not signed in: the sign-in page brings the browser back to the same request_uri.
    to_login = client.get(url)
    assert to_login.status_code == 303
    assert "/login?next=" in to_login.headers["Location"]
    assert sign_in(client, next_path=url).headers["Location"] == url
    answer = consent(client, url)
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    params = query_of(location)
    assert params["state"] == "pushed-state"
    tokens = redeem_code(client, rp, params["code"], verifier)
    assert tokens.status_code == 200, tokens.get_data(as_text=True)
    # Only the digest of the request_uri is stored.
    stored = session.scalars(select(PushedAuthorizationRequest)).one()
    assert request_uri.encode() not in stored.request_uri_digest
    assert stored.used_at is not None


def test_a_request_uri_is_used_once(client: FlaskClient, rp: RegisteredClient) -> None:
    _, challenge = pkce_pair()
    url = authorize_with(rp.client.client_id, pushed_uri(client, rp, challenge))
    sign_in(client)
    assert consent(client, url).status_code == 302
    again = client.get(url)
    assert is_error_page(again, "request_uri")


def test_parameters_in_the_url_do_not_override_the_pushed_ones(
    client: FlaskClient, rp: RegisteredClient
) -> None:
    _, challenge = pkce_pair()
    request_uri = pushed_uri(client, rp, challenge)
    sign_in(client)
    url = authorize_with(
        rp.client.client_id,
        request_uri,
        redirect_uri="https://evil.example.test/cb",
        state="attacker",
        scope="openid",
    )
    answer = consent(client, url)
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith(REDIRECT_URI + "?")
    assert query_of(answer.headers["Location"])["state"] == "pushed-state"


def test_another_clients_or_an_unknown_or_expired_request_uri_is_refused(
    app: Flask, session: Session, client: FlaskClient, rp: RegisteredClient, clock: Clock
) -> None:
    other = web_client(session, name="Other app")
    _, challenge = pkce_pair()
    request_uri = pushed_uri(client, rp, challenge)
    sign_in(client)
    stolen = client.get(authorize_with(other.client.client_id, request_uri))
    assert is_error_page(stolen, "request_uri")
    unknown = client.get(
        authorize_with(rp.client.client_id, "urn:ietf:params:oauth:request_uri:nope")
    )
    assert is_error_page(unknown, "request_uri")
    not_ours = client.get(authorize_with(rp.client.client_id, "https://rp.example.test/req"))
    assert is_error_page(not_ours, "request_uri")
    clock.advance(seconds=runtime(app).config.par_ttl)
    expired = client.get(authorize_with(rp.client.client_id, request_uri))
    assert is_error_page(expired, "request_uri")


def test_a_push_needs_the_client_to_authenticate(client: FlaskClient, rp: RegisteredClient) -> None:
    _, challenge = pkce_pair()
    fields = request_fields(challenge)
    anonymous = client.post(PAR, data={**fields, "client_id": rp.client.client_id})
    assert anonymous.status_code == 401
    assert anonymous.get_json()["error"] == "invalid_client"
    wrong = client.post(
        PAR,
        data=fields,
        headers={"Authorization": basic_auth(rp)["Authorization"][:-4] + "AAAA"},
    )
    assert wrong.status_code == 401


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ({"redirect_uri": "https://evil.example.test/cb"}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"scope": "openid admin"}, "invalid_scope"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"max_age": "-1"}, "invalid_request"),
        ({"resource": "https://not-registered.example.test"}, "invalid_target"),
        ({"request_uri": "urn:ietf:params:oauth:request_uri:x"}, "invalid_request"),
        ({"client_id": "someone-else"}, "invalid_request"),
    ],
)
def test_a_request_the_authorization_endpoint_would_refuse_is_refused_when_pushed(
    client: FlaskClient,
    rp: RegisteredClient,
    session: Session,
    override: dict[str, str],
    error: str,
) -> None:
    _, challenge = pkce_pair()
    answer = push(client, rp, **request_fields(challenge, **override))
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert answer.get_json()["error"] == error
    assert set(answer.get_json()) <= {"error", "error_description"}  # no state echoed
    assert "Location" not in answer.headers
    assert session.scalars(select(PushedAuthorizationRequest)).all() == []


def test_a_public_client_pushes_with_its_client_id(client: FlaskClient, session: Session) -> None:
    public = web_client(session, name="SPA", public=True)
    _, challenge = pkce_pair()
    answer = client.post(
        PAR, data={**request_fields(challenge), "client_id": public.client.client_id}
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)


def test_query_parameters_and_repeated_ones_are_refused(
    client: FlaskClient, rp: RegisteredClient
) -> None:
    _, challenge = pkce_pair()
    in_query = client.post(PAR + "?state=x", data=request_fields(challenge), headers=basic_auth(rp))
    assert in_query.status_code == 400
    repeated = client.post(
        PAR,
        data=MultiDict([*request_fields(challenge).items(), ("state", "again")]),
        headers=basic_auth(rp),
    )
    assert repeated.status_code == 400


# -- requiring pushed requests --------------------------------------------------------------


def test_a_client_that_requires_pushed_requests_is_refused_a_plain_one(
    client: FlaskClient, session: Session, rp: RegisteredClient
) -> None:
    strict = web_client(session, require_pushed_authorization_requests=True)
    verifier, challenge = pkce_pair()
    plain = "/oauth/authorize?" + urlencode(
        {**request_fields(challenge), "client_id": strict.client.client_id}
    )
    sign_in(client)
    answer = client.get(plain)
    assert is_error_page(answer, "push")
    assert "Location" not in answer.headers
    pushed = consent(
        client, authorize_with(strict.client.client_id, pushed_uri(client, strict, challenge))
    )
    assert pushed.status_code == 302
    code = query_of(pushed.headers["Location"])["code"]
    assert redeem_code(client, strict, code, verifier).status_code == 200


def test_the_server_setting_requires_pushed_requests_of_every_client(
    app: Flask, client: FlaskClient, rp: RegisteredClient
) -> None:
    runtime(app).config = replace(runtime(app).config, require_par=1)
    _, challenge = pkce_pair()
    sign_in(client)
    plain = "/oauth/authorize?" + urlencode(
        {**request_fields(challenge), "client_id": rp.client.client_id}
    )
    assert is_error_page(client.get(plain), "push")
    metadata = client.get("/.well-known/oauth-authorization-server").get_json()
    assert metadata["require_pushed_authorization_requests"] is True
    assert metadata["pushed_authorization_request_endpoint"].endswith("/oauth/par")


# -- prompt=login with a pushed request -----------------------------------------------------


def test_prompt_login_asks_once_for_a_sign_in_after_the_push(
    client: FlaskClient, rp: RegisteredClient, clock: Clock
) -> None:
    sign_in(client)
    clock.advance(seconds=5)
    _, challenge = pkce_pair()
    url = authorize_with(rp.client.client_id, pushed_uri(client, rp, challenge, prompt="login"))
    # The session predates the push: a new sign-in is asked for.
    asked = client.get(url)
    assert asked.status_code == 303
    assert "prompt=login" in asked.headers["Location"]
    clock.advance(seconds=5)
    login_page = client.get(asked.headers["Location"])
    signed_in = client.post(
        "/login",
        data={
            "email": "ann@example.com",
            "password": PASSWORD,
            "csrf_token": csrf_token_of(login_page),
            "next": url,
        },
    )
    assert signed_in.headers["Location"] == url
    # Signed in after the push: the same URL goes on to consent, never asks again.
    answer = consent(client, url)
    assert answer.status_code == 302, answer.get_data(as_text=True)


# -- racing -----------------------------------------------------------------------------------


def test_two_consents_racing_for_one_request_uri_make_one_code(
    client: FlaskClient, rp: RegisteredClient, app: Flask
) -> None:
    _, challenge = pkce_pair()
    url = authorize_with(rp.client.client_id, pushed_uri(client, rp, challenge))
    sign_in(client)
    page = client.get(url)
    token = csrf_token_of(page)
    first = client.post(url, data={"csrf_token": token, "decision": "allow"})
    second = client.post(url, data={"csrf_token": token, "decision": "allow"})
    assert first.status_code == 302
    assert is_error_page(second, "request_uri")
