"""DPoP (RFC 9449) at the token endpoint and at the APIs this server protects itself.

A token request with a proof gets an access token bound to the proof's key (``cnf.jkt``,
``token_type`` DPoP); a public client's refresh family is bound to the key it began with, for
its whole life. Every refusal below is tried: a proof that is malformed, for another request,
stale, replayed or signed otherwise; a bound token used as a bearer token; a bound refresh
token used without its key, which is refused without revoking anything.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.models import DPoPProofSeen, RefreshFamily
from authserver.resource.dpop import DPOP_ALGORITHMS
from authserver.runtime import runtime
from authserver.services.clients import RegisteredClient
from authserver.services.dpop_proofs import NONCE_PERIOD_SECONDS, DPoPNonces
from tests.browser_helpers import (
    REDIRECT_URI,
    authorize_url,
    code_through_browser,
    csrf_token_of,
    pkce_pair,
    query_of,
    redeem_code,
    sign_in,
    web_client,
)
from tests.dpop_keys import DPoPKey
from tests.helpers import (
    PASSWORD,
    Clock,
    account_api_request,
    client_auth,
    make_client,
    make_resource_server,
    make_user,
    password_login,
)

ISSUER = "http://127.0.0.1:8000"
TOKEN_URL = ISSUER + "/oauth/token"
USERINFO_URL = ISSUER + "/oauth/userinfo"


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def token_request(
    http: FlaskClient,
    registered: RegisteredClient,
    proof: str | list[str] | None = None,
    **form: str,
) -> TestResponse:
    headers, extra = client_auth(registered)
    if proof is not None:
        headers = {**headers}
        proofs = proof if isinstance(proof, list) else [proof]
        return http.post(
            "/oauth/token",
            data={**extra, **form},
            headers=[*headers.items(), *(("DPoP", p) for p in proofs)],
        )
    return http.post("/oauth/token", data={**extra, **form}, headers=headers)


def client_credentials(
    http: FlaskClient, registered: RegisteredClient, proof: str | list[str] | None = None
) -> TestResponse:
    return token_request(http, registered, proof, grant_type="client_credentials")


@pytest.fixture
def machine(session: Session) -> RegisteredClient:
    return make_resource_server(session, name="Billing job")


@pytest.fixture
def key() -> DPoPKey:
    return DPoPKey()


# -- the token endpoint ---------------------------------------------------------------------


def test_discovery_lists_the_proof_algorithms(client: FlaskClient) -> None:
    metadata = client.get("/.well-known/oauth-authorization-server").json
    assert metadata["dpop_signing_alg_values_supported"] == list(DPOP_ALGORITHMS)
    assert "ES256" in metadata["dpop_signing_alg_values_supported"]
    assert "none" not in metadata["dpop_signing_alg_values_supported"]


@pytest.mark.parametrize("algorithm", ["ES256", "ES384", "PS256", "RS256"])
def test_a_proof_binds_the_access_token_to_its_key(
    client: FlaskClient, machine: RegisteredClient, algorithm: str
) -> None:
    key = DPoPKey(algorithm)

    answer = client_credentials(client, machine, key.proof("POST", TOKEN_URL))

    assert answer.status_code == 200, answer.json
    assert answer.json["token_type"] == "DPoP"
    assert claims_of(answer.json["access_token"])["cnf"] == {"jkt": key.jkt}


def test_without_a_proof_the_token_is_a_bearer_token(
    client: FlaskClient, machine: RegisteredClient
) -> None:
    answer = client_credentials(client, machine)

    assert answer.json["token_type"] == "Bearer"
    assert "cnf" not in claims_of(answer.json["access_token"])


def test_the_proof_may_name_the_token_endpoint_with_a_query_and_in_upper_case(
    client: FlaskClient, machine: RegisteredClient, key: DPoPKey
) -> None:
    # RFC 9449 §4.3 step 9: query and fragment are ignored; RFC 3986 §6.2.3: so is case in
    # the scheme and host.
    answer = client_credentials(
        client, machine, key.proof("POST", "HTTP://127.0.0.1:8000/oauth/token?x=1#f")
    )
    assert answer.status_code == 200, answer.json


def _refused_proofs(key: DPoPKey, other: DPoPKey) -> list[Any]:
    return [
        pytest.param(lambda: key.proof("GET", TOKEN_URL), id="another method"),
        pytest.param(lambda: key.proof("post", TOKEN_URL), id="method in lower case"),
        pytest.param(lambda: key.proof("POST", ISSUER + "/oauth/revoke"), id="another path"),
        pytest.param(lambda: key.proof("POST", "http://127.0.0.2:8000/oauth/token"), id="host"),
        pytest.param(lambda: key.proof("POST", "https://127.0.0.1:8000/oauth/token"), id="scheme"),
        pytest.param(lambda: key.proof("POST", "/oauth/token"), id="relative htu"),
        pytest.param(lambda: key.proof("POST", TOKEN_URL, header={"typ": "JWT"}), id="typ"),
        pytest.param(lambda: key.proof("POST", TOKEN_URL, drop=("jti",)), id="no jti"),
        pytest.param(lambda: key.proof("POST", TOKEN_URL, jti="j" * 257), id="jti too long"),
        pytest.param(lambda: key.proof("POST", TOKEN_URL, drop=("htm",)), id="no htm"),
        pytest.param(lambda: key.proof("POST", TOKEN_URL, drop=("htu",)), id="no htu"),
        pytest.param(lambda: key.proof("POST", TOKEN_URL, drop=("iat",)), id="no iat"),
        pytest.param(
            lambda: key.proof("POST", TOKEN_URL, claims={"iat": "now"}), id="iat not a number"
        ),
        pytest.param(lambda: key.proof("POST", TOKEN_URL, issued_at=_shifted(-120)), id="too old"),
        pytest.param(
            lambda: key.proof("POST", TOKEN_URL, issued_at=_shifted(120)), id="from the future"
        ),
        pytest.param(
            lambda: key.proof("POST", TOKEN_URL, header={"jwk": other.public_jwk}),
            id="signed by another key than its jwk",
        ),
        pytest.param(lambda: key.proof("POST", TOKEN_URL, header={"jwk": None}), id="jwk missing"),
        pytest.param(
            lambda: key.proof(
                "POST", TOKEN_URL, header={"jwk": dict(key.key.as_dict(private=True))}
            ),
            id="private jwk",
        ),
        pytest.param(
            lambda: key.proof("POST", TOKEN_URL, header={"crit": ["exp"]}), id="crit header"
        ),
        pytest.param(lambda: _tampered(key.proof("POST", TOKEN_URL)), id="payload changed"),
        pytest.param(lambda: _unsigned(key.proof("POST", TOKEN_URL)), id="alg none"),
        pytest.param(lambda: "not.a.proof", id="garbage"),
        pytest.param(lambda: "a" * 5000, id="too large"),
        pytest.param(lambda: [key.proof("POST", TOKEN_URL)] * 2, id="two DPoP headers"),
    ]


def _shifted(seconds: float) -> float:
    return time.time() + seconds


def _tampered(proof: str) -> str:
    header, payload, signature = proof.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["htu"] = TOKEN_URL + "/"
    changed = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{changed}.{signature}"


def _unsigned(proof: str) -> str:
    header, payload, _ = proof.split(".")
    fields = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    fields["alg"] = "none"
    changed = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    return f"{changed}.{payload}."


_KEY, _OTHER = DPoPKey(), DPoPKey()


@pytest.mark.parametrize("make_proof", _refused_proofs(_KEY, _OTHER))
def test_a_bad_proof_is_refused_and_no_token_issued(
    client: FlaskClient, machine: RegisteredClient, make_proof: Any
) -> None:
    answer = client_credentials(client, machine, make_proof())

    assert answer.status_code == 400
    assert answer.json["error"] == "invalid_dpop_proof"
    assert "access_token" not in answer.json
    assert answer.headers["Cache-Control"] == "no-store"


def test_two_proofs_in_one_request_are_refused_by_name(
    client: FlaskClient, machine: RegisteredClient, key: DPoPKey
) -> None:
    # As a WSGI server hands them over: joined with a comma into one header.
    joined = key.proof("POST", TOKEN_URL) + ", " + key.proof("POST", TOKEN_URL)

    answer = client_credentials(client, machine, joined)

    assert answer.json == {
        "error": "invalid_dpop_proof",
        "error_description": "Send one DPoP proof, not several.",
    }


def test_a_hmac_signed_proof_is_refused(client: FlaskClient, machine: RegisteredClient) -> None:
    # An "oct" key in the jwk would let anyone sign with a key they publish: never taken.
    from joserfc import jws
    from joserfc.jwk import OctKey

    secret = OctKey.generate_key(256)
    proof = jws.serialize_compact(
        {"typ": "dpop+jwt", "alg": "HS256", "jwk": dict(secret.as_dict(private=False))},
        json.dumps({"jti": "j", "htm": "POST", "htu": TOKEN_URL, "iat": int(_shifted(0))}),
        secret,
        algorithms=["HS256"],
    )

    answer = client_credentials(client, machine, proof)

    assert answer.json["error"] == "invalid_dpop_proof"


def test_a_proof_is_accepted_once(
    client: FlaskClient, session: Session, machine: RegisteredClient, key: DPoPKey
) -> None:
    proof = key.proof("POST", TOKEN_URL)
    assert client_credentials(client, machine, proof).status_code == 200

    replayed = client_credentials(client, machine, proof)

    assert replayed.status_code == 400
    assert replayed.json == {
        "error": "invalid_dpop_proof",
        "error_description": "The DPoP proof was used before.",
    }
    # Only a digest of key and jti is kept, never the proof.
    rows = session.scalars(select(DPoPProofSeen.replay_key)).all()
    assert len(rows) == 1
    assert proof not in rows[0]


def test_a_proof_refused_for_its_request_stays_spent(
    client: FlaskClient, machine: RegisteredClient, key: DPoPKey
) -> None:
    # A proof is for one request; the client makes a new one for its next (RFC 9449 §4.1).
    proof = key.proof("POST", TOKEN_URL)
    refused = token_request(client, machine, proof, grant_type="client_credentials", scope="x y")
    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_scope"

    assert client_credentials(client, machine, proof).json["error"] == "invalid_dpop_proof"


def test_a_client_registered_for_bound_tokens_must_send_a_proof(
    app: Flask, session: Session, client: FlaskClient, key: DPoPKey
) -> None:
    bound = make_resource_server(session, name="Bound job", dpop_bound_access_tokens=True)

    refused = client_credentials(client, bound)
    accepted = client_credentials(client, bound, key.proof("POST", TOKEN_URL))

    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_request"
    assert "access_token" not in refused.json
    assert accepted.json["token_type"] == "DPoP"


def test_a_code_is_not_spent_by_a_bound_clients_request_without_a_proof(
    app: Flask, session: Session, client: FlaskClient, key: DPoPKey
) -> None:
    make_user(app, session)
    app_client = web_client(session, dpop_bound_access_tokens=True)
    assert sign_in(client).status_code == 303
    code, verifier = code_through_browser(client, app_client)

    refused = redeem_code(client, app_client, code, verifier)
    headers, extra = client_auth(app_client)
    redeemed = client.post(
        "/oauth/token",
        data={
            **extra,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        headers={**headers, "DPoP": key.proof("POST", TOKEN_URL)},
    )

    assert refused.json["error"] == "invalid_request"
    assert redeemed.status_code == 200, redeemed.json
    assert redeemed.json["token_type"] == "DPoP"


# -- refresh families of public clients -----------------------------------------------------


@pytest.fixture
def phone_app(app: Flask, session: Session) -> RegisteredClient:
    """A public first-party app (a phone app) that signs its user in with a password."""
    make_user(app, session)
    return make_client(session, public=True, grant_types=["password", "refresh_token"])


def _password_tokens(
    http: FlaskClient, registered: RegisteredClient, key: DPoPKey, **form: str
) -> dict[str, Any]:
    """Ann's tokens through the password grant, with a proof of ``key``."""
    answer = token_request(
        http,
        registered,
        key.proof("POST", TOKEN_URL),
        grant_type="password",
        username="ann@example.com",
        password=PASSWORD,
        **form,
    )
    assert answer.status_code == 200, answer.json
    return dict(answer.json)


def _sign_in_with_key(http: FlaskClient, phone_app: RegisteredClient, key: DPoPKey) -> str:
    return str(_password_tokens(http, phone_app, key)["refresh_token"])


def _refresh(
    http: FlaskClient, registered: RegisteredClient, token: str, key: DPoPKey | None
) -> TestResponse:
    proof = key.proof("POST", TOKEN_URL) if key is not None else None
    return token_request(http, registered, proof, grant_type="refresh_token", refresh_token=token)


def _family(session: Session) -> RefreshFamily:
    session.expire_all()
    return session.scalars(select(RefreshFamily)).one()


def test_a_public_clients_family_is_bound_to_the_key_it_began_with(
    session: Session, client: FlaskClient, phone_app: RegisteredClient, key: DPoPKey
) -> None:
    first = _sign_in_with_key(client, phone_app, key)
    assert _family(session).dpop_jkt == key.jkt

    second = _refresh(client, phone_app, first, key)
    third = _refresh(client, phone_app, second.json["refresh_token"], key)

    assert second.status_code == 200, second.json
    assert third.status_code == 200, third.json
    assert third.json["token_type"] == "DPoP"
    assert claims_of(third.json["access_token"])["cnf"] == {"jkt": key.jkt}


@pytest.mark.parametrize("with_key", ["no proof", "another key"])
def test_a_bound_refresh_token_without_its_key_is_refused_and_nothing_revoked(
    session: Session,
    client: FlaskClient,
    phone_app: RegisteredClient,
    key: DPoPKey,
    with_key: str,
) -> None:
    first = _sign_in_with_key(client, phone_app, key)
    thief_key = DPoPKey() if with_key == "another key" else None

    refused = _refresh(client, phone_app, first, thief_key)

    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_grant"
    family = _family(session)
    assert family.revoked_at is None
    # The owner's token was not used up: it refreshes with the key.
    assert _refresh(client, phone_app, first, key).status_code == 200


def test_a_used_bound_token_shown_without_the_key_revokes_nothing(
    session: Session, client: FlaskClient, phone_app: RegisteredClient, key: DPoPKey
) -> None:
    # Decision (README "Binding tokens to keys"): a presenter without the key cannot use the
    # token, so it is no thief to stop; revoking would let anyone who saw an old token (in a
    # log) sign its owner out.
    first = _sign_in_with_key(client, phone_app, key)
    second = _refresh(client, phone_app, first, key).json["refresh_token"]

    for presenter in (None, DPoPKey()):
        assert _refresh(client, phone_app, first, presenter).json["error"] == "invalid_grant"

    assert _family(session).revoked_at is None
    assert _refresh(client, phone_app, second, key).status_code == 200


def test_a_used_bound_token_replayed_with_the_key_is_reuse(
    app: Flask, session: Session, client: FlaskClient, phone_app: RegisteredClient, key: DPoPKey
) -> None:
    first = _sign_in_with_key(client, phone_app, key)
    second = _refresh(client, phone_app, first, key).json["refresh_token"]
    assert _refresh(client, phone_app, second, key).status_code == 200
    # ``second`` is two generations back now: no retry, whoever asks.

    replayed = _refresh(client, phone_app, first, key)

    assert replayed.json["error"] == "invalid_grant"
    assert _family(session).revoked_reason == "reuse_detected"


def test_a_retry_in_the_grace_window_gets_the_same_successor_only_with_the_key(
    session: Session, client: FlaskClient, phone_app: RegisteredClient, key: DPoPKey
) -> None:
    first = _sign_in_with_key(client, phone_app, key)
    successor = _refresh(client, phone_app, first, key).json["refresh_token"]

    without_key = _refresh(client, phone_app, first, None)
    other_key = _refresh(client, phone_app, first, DPoPKey())
    retried = _refresh(client, phone_app, first, key)

    assert without_key.json["error"] == "invalid_grant"
    assert other_key.json["error"] == "invalid_grant"
    assert retried.status_code == 200
    assert retried.json["refresh_token"] == successor
    assert _family(session).revoked_at is None


def test_a_public_family_begun_without_a_proof_stays_unbound(
    session: Session, client: FlaskClient, phone_app: RegisteredClient, key: DPoPKey
) -> None:
    first = password_login(client, phone_app).json["refresh_token"]

    bound_access = _refresh(client, phone_app, first, key)

    assert _family(session).dpop_jkt is None
    # Its access tokens are bound to whatever key each refresh proves.
    assert bound_access.json["token_type"] == "DPoP"
    assert _refresh(client, phone_app, bound_access.json["refresh_token"], None).status_code == 200


def test_a_confidential_clients_family_is_not_bound_to_the_key(
    app: Flask, session: Session, client: FlaskClient, key: DPoPKey
) -> None:
    # RFC 9449 §5: a confidential client's refresh token is bound to the client by its
    # authentication; its next access token may be bound to a new key.
    make_user(app, session)
    server_app = make_client(session)
    first = _password_tokens(client, server_app, key)["refresh_token"]
    new_key = DPoPKey()

    rotated = _refresh(client, server_app, first, new_key)

    assert _family(session).dpop_jkt is None
    assert claims_of(rotated.json["access_token"])["cnf"] == {"jkt": new_key.jkt}


# -- server nonces (RFC 9449 §8) ------------------------------------------------------------


@pytest.fixture
def nonces_on(app: Flask, clock: Clock) -> DPoPNonces:
    rt = runtime(app)
    rt.config = replace(rt.config, dpop_nonce=1)
    rt.dpop_nonces = DPoPNonces(rt.config.secret_key)
    return rt.dpop_nonces


def test_with_nonces_a_proof_without_one_is_answered_with_the_nonce(
    client: FlaskClient,
    machine: RegisteredClient,
    key: DPoPKey,
    nonces_on: DPoPNonces,
    clock: Clock,
) -> None:
    first = client_credentials(client, machine, key.proof("POST", TOKEN_URL))
    nonce = first.headers["DPoP-Nonce"]
    second = client_credentials(client, machine, key.proof("POST", TOKEN_URL, nonce=nonce))

    assert first.status_code == 400
    assert first.json["error"] == "use_dpop_nonce"
    assert nonce == nonces_on.current(clock.now)
    assert second.status_code == 200, second.json
    assert second.headers["DPoP-Nonce"] == nonce


def test_a_nonce_works_for_one_more_period_then_is_refused(
    client: FlaskClient,
    machine: RegisteredClient,
    key: DPoPKey,
    nonces_on: DPoPNonces,
    clock: Clock,
) -> None:
    nonce = nonces_on.current(clock.now)
    clock.advance(seconds=NONCE_PERIOD_SECONDS)
    # The proofs' iat follows the server's clock, as a client's would.
    late = client_credentials(
        client, machine, key.proof("POST", TOKEN_URL, nonce=nonce, issued_at=_at(clock))
    )
    clock.advance(seconds=NONCE_PERIOD_SECONDS)
    too_late = client_credentials(
        client, machine, key.proof("POST", TOKEN_URL, nonce=nonce, issued_at=_at(clock))
    )

    assert late.status_code == 200, late.json
    assert late.headers["DPoP-Nonce"] != nonce
    assert too_late.json["error"] == "use_dpop_nonce"
    assert too_late.headers["DPoP-Nonce"] == nonces_on.current(clock.now)


@pytest.mark.parametrize(
    "nonce", ["forged", "1.AAAA", "99999999999999999999.x", "", "١٢٣.x"], ids=repr
)
def test_a_made_up_nonce_is_refused(
    client: FlaskClient,
    machine: RegisteredClient,
    key: DPoPKey,
    nonces_on: DPoPNonces,
    clock: Clock,
    nonce: str,
) -> None:
    answer = client_credentials(
        client, machine, key.proof("POST", TOKEN_URL, nonce=nonce, issued_at=_at(clock))
    )
    assert answer.json["error"] == "use_dpop_nonce"


def test_nonces_from_another_secret_key_are_refused(
    client: FlaskClient,
    machine: RegisteredClient,
    key: DPoPKey,
    nonces_on: DPoPNonces,
    clock: Clock,
) -> None:
    elsewhere = DPoPNonces("another server's secret key").current(clock.now)
    answer = client_credentials(
        client, machine, key.proof("POST", TOKEN_URL, nonce=elsewhere, issued_at=_at(clock))
    )
    assert answer.json["error"] == "use_dpop_nonce"


def _at(clock: Clock) -> float:
    return clock.now.timestamp()


# -- the APIs this server protects ----------------------------------------------------------


@pytest.fixture
def bound_user_token(app: Flask, session: Session, client: FlaskClient, key: DPoPKey) -> str:
    """A DPoP-bound token of Ann's for userinfo and the account API."""
    make_user(app, session)
    own_app = make_client(session, scopes=["openid", "account"])
    tokens = _password_tokens(
        client, own_app, key, scope="openid account", resource=ISSUER + "/account"
    )
    return str(tokens["access_token"])


def _call(
    http: FlaskClient,
    path: str,
    token: str,
    scheme: str = "DPoP",
    proof: str | None = None,
    method: str = "GET",
) -> TestResponse:
    headers = {"Authorization": f"{scheme} {token}"}
    if proof is not None:
        headers["DPoP"] = proof
    return http.open(path, method=method, headers=headers)


def test_userinfo_answers_a_bound_token_with_its_proof(
    client: FlaskClient, bound_user_token: str, key: DPoPKey
) -> None:
    answer = _call(
        client,
        "/oauth/userinfo",
        bound_user_token,
        proof=key.proof("GET", USERINFO_URL, access_token=bound_user_token),
    )
    assert answer.status_code == 200, answer.json
    assert "sub" in answer.json


def test_the_account_api_answers_a_bound_token_with_its_proof(
    client: FlaskClient, bound_user_token: str, key: DPoPKey
) -> None:
    url = ISSUER + "/account/sessions"
    answer = _call(
        client,
        "/account/sessions",
        bound_user_token,
        proof=key.proof("GET", url, access_token=bound_user_token),
    )
    assert answer.status_code == 200, answer.json


def _api_refusals(key: DPoPKey) -> list[Any]:
    return [
        pytest.param("Bearer", lambda token: None, "invalid_token", id="as a bearer token"),
        pytest.param(
            "Bearer",
            lambda token: key.proof("GET", USERINFO_URL, access_token=token),
            "invalid_token",
            id="as a bearer token with a proof",
        ),
        pytest.param("DPoP", lambda token: None, "invalid_dpop_proof", id="no proof"),
        pytest.param(
            "DPoP",
            lambda token: key.proof("GET", USERINFO_URL),
            "invalid_dpop_proof",
            id="proof naming no token",
        ),
        pytest.param(
            "DPoP",
            lambda token: key.proof("GET", USERINFO_URL, access_token=token + "x"),
            "invalid_dpop_proof",
            id="proof naming another token",
        ),
        pytest.param(
            "DPoP",
            lambda token: DPoPKey().proof("GET", USERINFO_URL, access_token=token),
            "invalid_dpop_proof",
            id="proof by another key",
        ),
        pytest.param(
            "DPoP",
            lambda token: key.proof("POST", USERINFO_URL, access_token=token),
            "invalid_dpop_proof",
            id="proof for another method",
        ),
        pytest.param(
            "DPoP",
            lambda token: key.proof("GET", TOKEN_URL, access_token=token),
            "invalid_dpop_proof",
            id="proof for another URL",
        ),
    ]


@pytest.mark.parametrize(("scheme", "make_proof", "error"), _api_refusals(_KEY))
def test_userinfo_refuses_a_bound_token_without_its_proof(
    app: Flask,
    session: Session,
    client: FlaskClient,
    scheme: str,
    make_proof: Any,
    error: str,
) -> None:
    token = _bound_token_for(app, session, client, _KEY)

    answer = _call(client, "/oauth/userinfo", token, scheme=scheme, proof=make_proof(token))

    assert answer.status_code == 401
    assert answer.json["error"] == error
    challenge = answer.headers["WWW-Authenticate"]
    assert challenge.startswith(f'DPoP error="{error}"')
    assert 'algs="ES256' in challenge
    assert "sub" not in answer.json


def _bound_token_for(app: Flask, session: Session, http: FlaskClient, key: DPoPKey) -> str:
    make_user(app, session)
    own_app = make_client(session, scopes=["openid"])
    return str(_password_tokens(http, own_app, key, scope="openid")["access_token"])


def test_a_revoked_bound_token_is_refused_with_a_dpop_challenge(
    client: FlaskClient, bound_user_token: str, key: DPoPKey
) -> None:
    url = ISSUER + "/account/logout-all"
    signed_out = _call(
        client,
        "/account/logout-all",
        bound_user_token,
        method="POST",
        proof=key.proof("POST", url, access_token=bound_user_token),
    )
    assert signed_out.status_code == 200, signed_out.json

    answer = _call(
        client,
        "/oauth/userinfo",
        bound_user_token,
        proof=key.proof("GET", USERINFO_URL, access_token=bound_user_token),
    )

    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith('DPoP error="invalid_token"')


def test_a_proof_for_an_api_call_is_accepted_once(
    client: FlaskClient, bound_user_token: str, key: DPoPKey
) -> None:
    proof = key.proof("GET", USERINFO_URL, access_token=bound_user_token)
    assert _call(client, "/oauth/userinfo", bound_user_token, proof=proof).status_code == 200

    replayed = _call(client, "/oauth/userinfo", bound_user_token, proof=proof)

    assert replayed.status_code == 401
    assert replayed.json["error"] == "invalid_dpop_proof"


def test_a_bearer_token_sent_with_the_dpop_scheme_is_refused(
    app: Flask, session: Session, client: FlaskClient, key: DPoPKey
) -> None:
    make_user(app, session)
    own_app = make_client(session, scopes=["openid"])
    bearer = password_login(client, own_app, scope="openid").json["access_token"]

    answer = _call(
        client,
        "/oauth/userinfo",
        bearer,
        proof=key.proof("GET", USERINFO_URL, access_token=bearer),
    )

    assert answer.status_code == 401
    assert answer.json["error"] == "invalid_token"
    # The same token as a bearer token still works: it is not bound.
    assert _call(client, "/oauth/userinfo", bearer, scheme="Bearer").status_code == 200


def test_with_nonces_an_api_call_is_answered_with_the_nonce(
    client: FlaskClient, bound_user_token: str, key: DPoPKey, nonces_on: DPoPNonces, clock: Clock
) -> None:
    first = _call(
        client,
        "/oauth/userinfo",
        bound_user_token,
        proof=key.proof("GET", USERINFO_URL, access_token=bound_user_token, issued_at=_at(clock)),
    )
    nonce = first.headers["DPoP-Nonce"]
    second = _call(
        client,
        "/oauth/userinfo",
        bound_user_token,
        proof=key.proof(
            "GET", USERINFO_URL, access_token=bound_user_token, nonce=nonce, issued_at=_at(clock)
        ),
    )

    assert first.status_code == 401
    assert first.headers["WWW-Authenticate"].startswith('DPoP error="use_dpop_nonce"')
    assert second.status_code == 200, second.json


def test_the_admin_api_takes_a_bound_admin_token_only_with_its_proof(
    app: Flask, session: Session, client: FlaskClient, key: DPoPKey
) -> None:
    admin = make_client(
        session,
        name="Provisioning",
        grant_types=["client_credentials"],
        first_party=False,
        scopes=[],
        admin_scopes=["admin:users:read"],
    )
    token = token_request(
        client,
        admin,
        key.proof("POST", TOKEN_URL),
        grant_type="client_credentials",
        resource=ISSUER + "/admin/v1",
    ).json["access_token"]
    url = ISSUER + "/admin/v1/users"

    as_bearer = _call(client, "/admin/v1/users", token, scheme="Bearer")
    with_proof = _call(
        client, "/admin/v1/users", token, proof=key.proof("GET", url, access_token=token)
    )

    assert as_bearer.status_code == 401
    assert as_bearer.headers["Content-Type"] == "application/problem+json"
    assert with_proof.status_code == 200, with_proof.json


def test_the_admin_api_metadata_says_dpop_is_taken(client: FlaskClient) -> None:
    metadata = client.get("/.well-known/oauth-protected-resource/admin/v1").json
    assert metadata["dpop_signing_alg_values_supported"] == list(DPOP_ALGORITHMS)
    assert metadata["dpop_bound_access_tokens_required"] is False


# -- introspection and registration ---------------------------------------------------------


def test_introspection_names_the_key_of_a_bound_token(
    session: Session, client: FlaskClient, machine: RegisteredClient, key: DPoPKey
) -> None:
    token = client_credentials(client, machine, key.proof("POST", TOKEN_URL)).json["access_token"]
    headers, _ = client_auth(machine)

    answer = client.post("/oauth/introspect", data={"token": token}, headers=headers)

    assert answer.json["active"] is True
    assert answer.json["token_type"] == "DPoP"
    assert answer.json["cnf"] == {"jkt": key.jkt}


def test_a_refused_proof_costs_no_row(
    session: Session, client: FlaskClient, machine: RegisteredClient, key: DPoPKey
) -> None:
    client_credentials(client, machine, key.proof("GET", TOKEN_URL))
    assert session.scalar(select(func.count()).select_from(DPoPProofSeen)) == 0


def test_an_account_api_token_can_be_bound(
    app: Flask, session: Session, client: FlaskClient, key: DPoPKey
) -> None:
    make_user(app, session)
    own_app = make_client(session, scopes=["account"])
    tokens = _password_tokens(client, own_app, key, **account_api_request(app))
    assert tokens["token_type"] == "DPoP"
    assert claims_of(tokens["access_token"])["aud"] == ISSUER + "/account"


# -- codes bound to a key (RFC 9449 §10) ----------------------------------------------------

PAR_URL = ISSUER + "/oauth/par"


@pytest.fixture
def photo_app(app: Flask, session: Session, client: FlaskClient) -> RegisteredClient:
    """A confidential web app, with Ann signed in to authserver in ``client``."""
    make_user(app, session)
    registered = web_client(session)
    assert sign_in(client).status_code == 303
    return registered


def _redeem(
    http: FlaskClient, rp: RegisteredClient, code: str, verifier: str, key: DPoPKey | None
) -> TestResponse:
    proof = key.proof("POST", TOKEN_URL) if key is not None else None
    return token_request(
        http,
        rp,
        proof,
        grant_type="authorization_code",
        code=code,
        redirect_uri=REDIRECT_URI,
        code_verifier=verifier,
    )


def test_a_code_bound_by_dpop_jkt_redeems_with_that_key(
    client: FlaskClient, photo_app: RegisteredClient, key: DPoPKey
) -> None:
    code, verifier = code_through_browser(client, photo_app, dpop_jkt=key.jkt)

    answer = _redeem(client, photo_app, code, verifier, key)

    assert answer.status_code == 200, answer.json
    assert claims_of(answer.json["access_token"])["cnf"] == {"jkt": key.jkt}


@pytest.mark.parametrize("presenter", ["no proof", "another key"])
def test_a_code_bound_by_dpop_jkt_is_refused_without_its_key_and_spent(
    client: FlaskClient, photo_app: RegisteredClient, key: DPoPKey, presenter: str
) -> None:
    code, verifier = code_through_browser(client, photo_app, dpop_jkt=key.jkt)

    refused = _redeem(
        client, photo_app, code, verifier, DPoPKey() if presenter == "another key" else None
    )
    afterwards = _redeem(client, photo_app, code, verifier, key)

    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_grant"
    # Like a wrong PKCE verifier: whoever holds a stolen code gets one try.
    assert afterwards.json["error"] == "invalid_grant"


@pytest.mark.parametrize("dpop_jkt", ["short", "x" * 44, "a" * 42 + "+/"])
def test_a_malformed_dpop_jkt_is_refused_to_the_redirect_uri(
    client: FlaskClient, photo_app: RegisteredClient, dpop_jkt: str
) -> None:
    _, challenge = pkce_pair()
    answer = client.get(authorize_url(photo_app.client.client_id, challenge, dpop_jkt=dpop_jkt))

    assert answer.status_code == 302
    assert query_of(answer.headers["Location"])["error"] == "invalid_request"


def _push(
    http: FlaskClient, rp: RegisteredClient, challenge: str, proof: str | None, **extra: str
) -> TestResponse:
    headers, _ = client_auth(rp)
    if proof is not None:
        headers = {**headers, "DPoP": proof}
    fields = {
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "scope": "openid email",
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return http.post("/oauth/par", data=fields, headers=headers)


def test_a_proof_sent_with_a_push_binds_the_code(
    client: FlaskClient, photo_app: RegisteredClient, key: DPoPKey
) -> None:
    verifier, challenge = pkce_pair()
    pushed = _push(client, photo_app, challenge, key.proof("POST", PAR_URL))
    assert pushed.status_code == 201, pushed.json
    url = "/oauth/authorize?" + urlencode(
        {"client_id": photo_app.client.client_id, "request_uri": pushed.json["request_uri"]}
    )
    page = client.get(url)
    answer = client.post(url, data={"csrf_token": csrf_token_of(page), "decision": "allow"})
    code = query_of(answer.headers["Location"])["code"]

    without_key = _redeem(client, photo_app, code, verifier, None)

    assert without_key.json["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("make_proof", "dpop_jkt"),
    [
        pytest.param(
            lambda key: key.proof("POST", PAR_URL), "A" * 43, id="dpop_jkt of another key"
        ),
        pytest.param(lambda key: key.proof("POST", TOKEN_URL), None, id="proof for the token URL"),
        pytest.param(lambda key: "garbage", None, id="garbage proof"),
    ],
)
def test_a_push_with_a_bad_or_mismatched_proof_is_refused(
    client: FlaskClient,
    photo_app: RegisteredClient,
    key: DPoPKey,
    make_proof: Any,
    dpop_jkt: str | None,
) -> None:
    extra = {"dpop_jkt": dpop_jkt} if dpop_jkt else {}

    answer = _push(client, photo_app, "c" * 43, make_proof(key), **extra)

    assert answer.status_code == 400
    assert answer.json["error"] == "invalid_dpop_proof"
    assert "request_uri" not in answer.json
