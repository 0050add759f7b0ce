"""The Flask decorator: RFC 6750 §3 answers, scopes, g.access_token, and online checks."""

from __future__ import annotations

import base64
import re
import urllib.parse

import pytest
from flask import Flask, g
from flask.testing import FlaskClient

from authserver.resource import IntrospectionClient, IntrospectionFailed, TokenVerifier
from authserver.resource.flask import current_access_token, require_token
from tests.resource.support import (
    AUDIENCE,
    FEED_CLIENT_ID,
    FEED_CLIENT_SECRET,
    FakeClock,
    FakeIssuer,
    IssuerKey,
    ec_key,
    mint,
)

INTROSPECT = "/oauth/introspect"
# Every algorithm the kit verifies DPoP proofs with, as a challenge's algs lists them.
ALGS = "ES256 ES384 ES512 RS256 RS384 RS512 PS256 PS384 PS512"
PASSWORD = "urn:authserver:acr:password"
MFA = "urn:authserver:acr:mfa"


def make_api(verifier: TokenVerifier, introspection: IntrospectionClient | None = None) -> Flask:
    app = Flask(__name__)

    @app.get("/hello")
    @require_token(verifier)
    def hello() -> dict[str, object]:
        return {"subject": g.access_token.subject, "client": current_access_token().client_id}

    @app.post("/write")
    @require_token(verifier, scope="write")
    def write() -> dict[str, object]:
        return {"written_by": g.access_token.subject}

    @app.get("/admin")
    @require_token(verifier, scope="read admin")
    def admin() -> dict[str, object]:
        return {"ok": True}

    @app.get("/online")
    @require_token(verifier, introspect=introspection)
    def online() -> dict[str, object]:
        return {"subject": g.access_token.subject}

    @app.post("/transfer")
    @require_token(verifier, scope="write", acr=MFA, max_age=300)
    def transfer() -> dict[str, object]:
        return {"ok": True}

    @app.get("/profile")
    @require_token(verifier, acr=PASSWORD)
    def profile() -> dict[str, object]:
        return {"ok": True}

    return app


@pytest.fixture
def api(verifier: TokenVerifier) -> FlaskClient:
    return make_api(verifier).test_client()


@pytest.fixture
def token(issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock) -> str:
    return mint(signing_key, issuer.url, clock(), sub="user-42", scope="read write")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def challenge_params(header: str) -> dict[str, str]:
    assert header.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def test_valid_token_reaches_the_view_as_g_access_token(api: FlaskClient, token: str) -> None:
    response = api.get("/hello", headers=bearer(token))

    assert response.status_code == 200
    assert response.json == {"subject": "user-42", "client": "client-1"}


def test_bearer_scheme_is_case_insensitive(api: FlaskClient, token: str) -> None:
    response = api.get("/hello", headers={"Authorization": f"bearer {token}"})

    assert response.status_code == 200


def test_request_without_a_token_gets_a_challenge_without_error_code(api: FlaskClient) -> None:
    response = api.get("/hello")

    assert response.status_code == 401
    # RFC 9449 §7.2: both schemes offered, DPoP with the algorithms a proof may use.
    assert response.headers["WWW-Authenticate"] == f'Bearer, DPoP algs="{ALGS}"'
    assert response.is_json
    assert "error" not in response.json


def test_other_authorization_scheme_counts_as_no_token(api: FlaskClient) -> None:
    basic = "Basic " + base64.b64encode(b"user:pass").decode()

    response = api.get("/hello", headers={"Authorization": basic})

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == f'Bearer, DPoP algs="{ALGS}"'


@pytest.mark.parametrize("value", ["Bearer", "Bearer   ", "Bearer two tokens"])
def test_malformed_bearer_header_is_invalid_request(api: FlaskClient, value: str) -> None:
    response = api.get("/hello", headers={"Authorization": value})

    assert response.status_code == 400
    assert challenge_params(response.headers["WWW-Authenticate"])["error"] == "invalid_request"


def test_invalid_token_gets_invalid_token_challenge_and_json(
    api: FlaskClient, issuer: FakeIssuer, clock: FakeClock
) -> None:
    forged = mint(ec_key(), issuer.url, clock())

    response = api.get("/hello", headers=bearer(forged))

    assert response.status_code == 401
    params = challenge_params(response.headers["WWW-Authenticate"])
    assert params["error"] == "invalid_token"
    assert params["error_description"] == "The access token is signed with an unknown key."
    assert response.json == {
        "error": "invalid_token",
        "error_description": "The access token is signed with an unknown key.",
    }
    assert response.headers["Cache-Control"] == "no-store"
    assert forged.split(".")[1] not in response.get_data(as_text=True)


def test_expired_token_says_so(
    api: FlaskClient, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    expired = mint(signing_key, issuer.url, clock(), exp=int(clock()) - 3600)

    response = api.get("/hello", headers=bearer(expired))

    assert response.status_code == 401
    params = challenge_params(response.headers["WWW-Authenticate"])
    assert params == {
        "error": "invalid_token",
        "error_description": "The access token has expired.",
    }


def test_garbage_token_is_401_not_500(api: FlaskClient) -> None:
    response = api.get("/hello", headers=bearer("<script>alert(1)</script>"))

    assert response.status_code == 401
    assert challenge_params(response.headers["WWW-Authenticate"])["error"] == "invalid_token"


def test_token_without_the_scope_gets_403_insufficient_scope(
    api: FlaskClient, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    read_only = mint(signing_key, issuer.url, clock(), scope="read")

    response = api.post("/write", headers=bearer(read_only))

    assert response.status_code == 403
    params = challenge_params(response.headers["WWW-Authenticate"])
    assert params["error"] == "insufficient_scope"
    assert params["scope"] == "write"
    assert response.json is not None
    assert response.json["error"] == "insufficient_scope"


def test_token_with_the_scope_reaches_the_scoped_view(api: FlaskClient, token: str) -> None:
    response = api.post("/write", headers=bearer(token))

    assert response.status_code == 200
    assert response.json == {"written_by": "user-42"}


def test_every_named_scope_is_required(
    api: FlaskClient, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock, token: str
) -> None:
    refused = api.get("/admin", headers=bearer(token))
    admin = mint(signing_key, issuer.url, clock(), scope="read admin")
    allowed = api.get("/admin", headers=bearer(admin))

    assert refused.status_code == 403
    assert challenge_params(refused.headers["WWW-Authenticate"])["scope"] == "read admin"
    assert allowed.status_code == 200


def test_unreachable_keys_answer_503_not_401(
    issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock, token: str
) -> None:
    api = make_api(TokenVerifier(issuer.url, AUDIENCE, clock=clock)).test_client()
    issuer.stop()

    response = api.get("/hello", headers=bearer(token))

    assert response.status_code == 503
    assert "WWW-Authenticate" not in response.headers
    assert response.json is not None
    assert response.json["error"] == "temporarily_unavailable"


def test_current_access_token_outside_a_protected_view_is_an_error() -> None:
    with Flask(__name__).test_request_context("/"), pytest.raises(RuntimeError):
        current_access_token()


# -- online checks (RFC 7662) ---------------------------------------------------------------


@pytest.fixture
def introspection(issuer: FakeIssuer) -> IntrospectionClient:
    issuer.introspection_enabled = True
    return IntrospectionClient(issuer.url, FEED_CLIENT_ID, FEED_CLIENT_SECRET)


def test_active_token_passes_the_online_check(
    verifier: TokenVerifier, introspection: IntrospectionClient, issuer: FakeIssuer, token: str
) -> None:
    issuer.active_tokens.add(token)
    api = make_api(verifier, introspection).test_client()

    response = api.get("/online", headers=bearer(token))

    assert response.status_code == 200
    [call] = issuer.requests_to(INTROSPECT)
    assert call.method == "POST"
    assert call.headers["authorization"] == "Basic " + base64.b64encode(
        f"{FEED_CLIENT_ID}:{FEED_CLIENT_SECRET}".encode()
    ).decode("ascii")
    assert dict(urllib.parse.parse_qsl(call.body.decode())) == {
        "token": token,
        "token_type_hint": "access_token",
    }


def test_inactive_token_is_refused_as_revoked(
    verifier: TokenVerifier, introspection: IntrospectionClient, token: str
) -> None:
    api = make_api(verifier, introspection).test_client()

    response = api.get("/online", headers=bearer(token))

    assert response.status_code == 401
    params = challenge_params(response.headers["WWW-Authenticate"])
    assert params == {
        "error": "invalid_token",
        "error_description": "The access token has been revoked.",
    }


def test_invalid_token_is_refused_before_any_online_check(
    verifier: TokenVerifier,
    introspection: IntrospectionClient,
    issuer: FakeIssuer,
    clock: FakeClock,
) -> None:
    api = make_api(verifier, introspection).test_client()

    response = api.get("/online", headers=bearer(mint(ec_key(), issuer.url, clock())))

    assert response.status_code == 401
    assert issuer.requests_to(INTROSPECT) == []


def test_views_without_introspection_make_no_online_call(
    verifier: TokenVerifier, introspection: IntrospectionClient, issuer: FakeIssuer, token: str
) -> None:
    api = make_api(verifier, introspection).test_client()

    assert api.get("/hello", headers=bearer(token)).status_code == 200
    assert issuer.requests_to(INTROSPECT) == []


def test_issuer_without_introspection_endpoint_fails_closed_with_503(
    verifier: TokenVerifier, issuer: FakeIssuer, token: str
) -> None:
    client = IntrospectionClient(issuer.url, FEED_CLIENT_ID, FEED_CLIENT_SECRET)
    api = make_api(verifier, client).test_client()

    response = api.get("/online", headers=bearer(token))

    assert response.status_code == 503
    with pytest.raises(IntrospectionFailed, match="introspection_endpoint"):
        client.introspect(token)


def test_introspection_returns_the_issuers_answer(
    introspection: IntrospectionClient, issuer: FakeIssuer, token: str
) -> None:
    assert introspection.introspect(token) == {"active": False}
    issuer.active_tokens.add(token)
    assert introspection.introspect(token) == {"active": True, "sub": "user-1"}
    # The endpoint was discovered once.
    assert len(issuer.requests_to("/.well-known/oauth-authorization-server")) == 1


def test_introspection_with_rejected_client_credentials_fails(
    issuer: FakeIssuer, token: str
) -> None:
    issuer.introspection_enabled = True
    client = IntrospectionClient(issuer.url, FEED_CLIENT_ID, "wrong secret")

    with pytest.raises(IntrospectionFailed, match="401"):
        client.introspect(token)


# -- RFC 9470: a stronger or more recent sign-in --------------------------------------------


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        pytest.param({"acr": PASSWORD, "auth_time": 0}, "weaker", id="one-factor"),
        pytest.param({"auth_time": 0}, "weaker", id="no-acr"),
        pytest.param({"acr": MFA, "auth_time": -301}, "older", id="signed-in-too-long-ago"),
        pytest.param({"acr": MFA}, "older", id="no-auth-time"),
        pytest.param({"acr": MFA, "auth_time": "0"}, "older", id="auth-time-not-a-number"),
        pytest.param({"acr": "urn:example:gold", "auth_time": 0}, "weaker", id="unknown-acr"),
    ],
)
def test_a_sign_in_too_weak_or_too_old_is_asked_to_step_up_the_rfc9470_way(
    api: FlaskClient,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
    clock: FakeClock,
    claims: dict[str, object],
    why: str,
) -> None:
    now = int(clock())
    dated = {
        key: now + value if key == "auth_time" and isinstance(value, int) else value
        for key, value in claims.items()
    }
    token = mint(signing_key, issuer.url, clock(), scope="write", **dated)

    response = api.post("/transfer", headers=bearer(token))

    assert response.status_code == 401
    params = challenge_params(response.headers["WWW-Authenticate"])
    assert params["error"] == "insufficient_user_authentication"
    assert params["acr_values"] == MFA
    assert params["max_age"] == "300"
    assert response.json is not None
    assert response.json["error"] == "insufficient_user_authentication"
    assert response.json["error_description"] == (
        "A stronger or more recent sign-in is required."
        if why == "weaker"
        else "A more recent sign-in is required."
    )


def test_a_recent_two_factor_sign_in_reaches_the_view(
    api: FlaskClient, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = mint(
        signing_key, issuer.url, clock(), scope="write", acr=MFA, auth_time=int(clock()) - 300
    )

    assert api.post("/transfer", headers=bearer(token)).status_code == 200


def test_a_stronger_class_satisfies_a_weaker_one(
    api: FlaskClient, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    strong = mint(signing_key, issuer.url, clock(), acr=MFA, auth_time=int(clock()))
    weak = mint(signing_key, issuer.url, clock(), acr=PASSWORD, auth_time=int(clock()))

    assert api.get("/profile", headers=bearer(strong)).status_code == 200
    assert api.get("/profile", headers=bearer(weak)).status_code == 200


def test_scope_is_judged_before_the_sign_in(
    api: FlaskClient, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    read_only = mint(signing_key, issuer.url, clock(), scope="read", acr=PASSWORD)

    response = api.post("/transfer", headers=bearer(read_only))

    # A new sign-in would not bring the scope: 403, not a step-up.
    assert response.status_code == 403
    assert challenge_params(response.headers["WWW-Authenticate"])["error"] == ("insufficient_scope")
