"""OpenID Connect: the ID token (Core §2, §3.1.3.6), userinfo (Core §5.3), discovery, and
RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).

ID tokens are verified the way a relying party does: PyJWT with the keys of the published
JWKS, the algorithm pinned, issuer and audience checked.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.db import utcnow
from authserver.models import BrowserSession, RefreshFamily, User
from authserver.runtime import runtime
from authserver.services.clients import RegisteredClient
from authserver.services.refresh_tokens import RevocationReason, revoke_family
from authserver.services.users import mark_email_verified
from tests.browser_helpers import (
    REDIRECT_URI,
    authorize_url,
    csrf_token_of,
    pkce_pair,
    query_of,
    redeem_code,
    sign_in,
    tokens_through_browser,
    web_client,
)
from tests.helpers import PASSWORD, account_api_request, make_user

ISSUER = "http://127.0.0.1:8000"  # the `config` fixture's issuer
JWKS_PATH = "/.well-known/jwks.json"
USERINFO = "/oauth/userinfo"
END_SESSION = "/oauth/logout"
POST_LOGOUT_URI = "https://rp.example.test/signed-out"
DEFAULT_NONCE = "n-0S6_WzA2Mj"  # what authorize_url sends unless told otherwise
ID_TOKEN_CLAIMS = {
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "amr",
    "nonce",
    "at_hash",
    "sid",
}


class Clock:
    """Stands in for the app's clock, so sign-in and token issue happen at known seconds."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(app: Flask) -> Clock:
    # A few minutes in the past: PyJWT checks exp and iat against the real time.
    fake = Clock(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5))
    runtime(app).clock = fake
    return fake


@pytest.fixture
def user(app: Flask, session: Session) -> User:
    return make_user(app, session)


@pytest.fixture
def rp(session: Session, user: User) -> RegisteredClient:
    return _web_client(session)


def _web_client(session: Session, **overrides: object) -> RegisteredClient:
    """The Photo app as a public client that may ask to be sent back after sign-out."""
    options: dict[str, object] = {
        "public": True,
        "post_logout_redirect_uris": [POST_LOGOUT_URI],
        **overrides,
    }
    return web_client(session, **options)


def _signed_in_tokens(
    http: FlaskClient, registered: RegisteredClient, **extra: str
) -> dict[str, Any]:
    assert sign_in(http).status_code == 303
    return tokens_through_browser(http, registered, **extra)


def _verified_id_token(http: FlaskClient, id_token: str, client_id: str) -> dict[str, Any]:
    keys = jwt.PyJWKSet.from_dict(http.get(JWKS_PATH).json)
    kid = jwt.get_unverified_header(id_token)["kid"]
    claims: dict[str, Any] = jwt.decode(
        id_token,
        keys[kid].key,
        algorithms=["ES256"],
        audience=client_id,
        issuer=ISSUER,
        options={"require": ["iss", "sub", "aud", "exp", "iat"]},
    )
    return claims


def _left_half_sha256(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def _browser_sessions(session: Session) -> list[BrowserSession]:
    session.expire_all()
    return list(session.scalars(select(BrowserSession).order_by(BrowserSession.created_at)))


def _only_browser_session(session: Session) -> BrowserSession:
    (browser_session,) = _browser_sessions(session)
    return browser_session


def _is_signed_in(http: FlaskClient) -> bool:
    """What the user sees: the account page, or a redirect to sign in."""
    return http.get("/account").status_code == 200


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + token}


def _form_action(page: TestResponse) -> str:
    match = re.search(r'<form method="post" action="([^"]+)"', page.get_data(as_text=True))
    assert match, "page has no POST form"
    return html.unescape(match.group(1))


# -- the ID token ---------------------------------------------------------------------------


def test_id_token_verifies_against_the_jwks_and_names_issuer_subject_and_client(
    client: FlaskClient, user: User, rp: RegisteredClient
) -> None:
    tokens = _signed_in_tokens(client, rp)

    claims = _verified_id_token(client, tokens["id_token"], rp.client.client_id)

    assert set(claims) >= ID_TOKEN_CLAIMS
    assert claims["iss"] == ISSUER
    assert claims["sub"] == str(user.id)
    # aud is the client alone, not the API audience of the access token.
    assert claims["aud"] == rp.client.client_id


def test_id_token_header_says_jwt_not_at_jwt(client: FlaskClient, rp: RegisteredClient) -> None:
    tokens = _signed_in_tokens(client, rp)

    header = jwt.get_unverified_header(tokens["id_token"])

    assert header["typ"] == "JWT"
    assert header["alg"] == "ES256"


def test_id_token_echoes_the_nonce_of_the_authorization_request(
    client: FlaskClient, rp: RegisteredClient
) -> None:
    tokens = _signed_in_tokens(client, rp, nonce="a-nonce-only-this-request-knows")

    claims = _verified_id_token(client, tokens["id_token"], rp.client.client_id)

    assert claims["nonce"] == "a-nonce-only-this-request-knows"
    assert claims["nonce"] != DEFAULT_NONCE


def test_id_token_at_hash_is_left_half_of_sha256_of_the_access_token(
    client: FlaskClient, rp: RegisteredClient
) -> None:
    tokens = _signed_in_tokens(client, rp)

    claims = _verified_id_token(client, tokens["id_token"], rp.client.client_id)

    assert claims["at_hash"] == _left_half_sha256(tokens["access_token"])


def test_id_token_auth_time_is_the_sign_in_time_and_iat_exp_the_issue_time(
    app: Flask, client: FlaskClient, rp: RegisteredClient, clock: Clock
) -> None:
    signed_in_at = clock.now
    assert sign_in(client).status_code == 303
    clock.advance(90)  # the user comes back to the client later, still signed in

    tokens = tokens_through_browser(client, rp)

    claims = _verified_id_token(client, tokens["id_token"], rp.client.client_id)
    assert claims["auth_time"] == int(signed_in_at.timestamp())
    assert claims["iat"] == int(clock.now.timestamp())
    assert claims["exp"] == claims["iat"] + app.config["AUTHSERVER"].access_token_ttl


def test_id_token_amr_says_how_the_user_signed_in(
    client: FlaskClient, session: Session, rp: RegisteredClient
) -> None:
    tokens = _signed_in_tokens(client, rp)

    claims = _verified_id_token(client, tokens["id_token"], rp.client.client_id)

    # RFC 8176 §2: a password; a JSON array, whatever the number of methods.
    assert claims["amr"] == ["pwd"]
    assert _only_browser_session(session).amr == "pwd"


def test_id_token_sid_is_the_browser_session_id(
    client: FlaskClient, session: Session, rp: RegisteredClient
) -> None:
    tokens = _signed_in_tokens(client, rp)

    claims = _verified_id_token(client, tokens["id_token"], rp.client.client_id)

    assert claims["sid"] == str(_only_browser_session(session).id)


def test_no_id_token_without_the_openid_scope(client: FlaskClient, rp: RegisteredClient) -> None:
    tokens = _signed_in_tokens(client, rp, scope="email offline_access")

    assert "access_token" in tokens
    assert "id_token" not in tokens


def test_id_token_is_refused_as_an_access_token_at_userinfo(
    client: FlaskClient, rp: RegisteredClient
) -> None:
    tokens = _signed_in_tokens(client, rp)

    response = client.get(USERINFO, headers=_bearer(tokens["id_token"]))

    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    # Refused for what it is (typ JWT), not by the accident that its sid names no family.
    assert response.json["error_description"] == "The access token is invalid."


def test_id_token_is_refused_as_an_access_token_at_the_account_api(
    app: Flask, client: FlaskClient, session: Session, user: User
) -> None:
    account = account_api_request(app)
    rp = _web_client(
        session,
        audiences=[account["resource"]],
        scopes=["openid", "email", "offline_access", "account"],
    )
    tokens = _signed_in_tokens(
        client, rp, resource=account["resource"], scope="openid offline_access account"
    )
    assert (
        client.get("/account/sessions", headers=_bearer(tokens["access_token"])).status_code == 200
    )

    response = client.get("/account/sessions", headers=_bearer(tokens["id_token"]))

    assert response.status_code == 401
    assert response.json["error"] == "invalid_token"
    assert response.json["error_description"] == "The access token is invalid."


# -- max_age (Core §3.1.2.1) -----------------------------------------------------------------


def _authorize(http: FlaskClient, rp: RegisteredClient, **params: str) -> TestResponse:
    _, challenge = pkce_pair()
    return http.get(authorize_url(rp.client.client_id, challenge, **params))


def _sign_in_again(http: FlaskClient, to_login: TestResponse) -> TestResponse:
    """Follow a redirect to the sign-in page and sign in there; the answer sends back."""
    assert to_login.status_code == 303, to_login.get_data(as_text=True)
    login_path = to_login.headers["Location"]
    assert login_path.startswith("/login?")
    page = http.get(login_path)
    assert page.status_code == 200
    assert 'name="password"' in page.get_data(as_text=True)
    return http.post(
        "/login",
        data={
            "email": "ann@example.com",
            "password": PASSWORD,
            "csrf_token": csrf_token_of(page),
            "next": query_of(login_path)["next"],
        },
    )


def test_a_sign_in_within_max_age_is_not_asked_again(
    client: FlaskClient, rp: RegisteredClient, clock: Clock
) -> None:
    signed_in_at = clock.now
    assert sign_in(client).status_code == 303
    clock.advance(120)

    tokens = tokens_through_browser(client, rp, max_age="120")

    claims = _verified_id_token(client, tokens["id_token"], rp.client.client_id)
    assert claims["auth_time"] == int(signed_in_at.timestamp())


def test_a_sign_in_older_than_max_age_is_asked_again_then_the_code_carries_the_new_time(
    app: Flask, client: FlaskClient, session: Session, rp: RegisteredClient, clock: Clock
) -> None:
    assert sign_in(client).status_code == 303
    first_session = _only_browser_session(session).id
    clock.advance(121)
    verifier, challenge = pkce_pair()
    url = authorize_url(rp.client.client_id, challenge, max_age="120")

    back = _sign_in_again(client, client.get(url))

    assert back.status_code == 303
    next_path = back.headers["Location"]
    assert "max_age" not in next_path  # coming back does not ask again
    answer = client.get(next_path)
    if answer.status_code == 200:  # the consent page of a third-party client
        answer = client.post(
            next_path, data={"csrf_token": csrf_token_of(answer), "decision": "allow"}
        )
    code = query_of(answer.headers["Location"])["code"]
    tokens = redeem_code(client, rp, code, verifier).json
    assert tokens is not None
    claims = _verified_id_token(client, tokens["id_token"], rp.client.client_id)
    assert claims["auth_time"] == int(clock.now.timestamp())
    live = [s.id for s in _browser_sessions(session) if s.revoked_at is None]
    assert len(live) == 1
    assert live != [first_session]  # a new session, with the new sign-in's auth_time


def test_max_age_zero_always_asks_for_the_password(
    client: FlaskClient, rp: RegisteredClient
) -> None:
    assert sign_in(client).status_code == 303

    to_login = _authorize(client, rp, max_age="0")

    assert to_login.status_code == 303
    assert "prompt=login" in to_login.headers["Location"]
    assert _sign_in_again(client, to_login).status_code == 303


def test_max_age_exceeded_with_prompt_none_is_login_required(
    client: FlaskClient, rp: RegisteredClient, clock: Clock
) -> None:
    assert sign_in(client).status_code == 303
    clock.advance(61)

    answer = _authorize(client, rp, max_age="60", prompt="none")

    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    params = query_of(location)
    assert params["error"] == "login_required"
    assert "code" not in params


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "+5", " 5", "1_000", "\u0665", "9" * 11, ""])
def test_a_max_age_that_is_not_whole_seconds_is_invalid_request(
    client: FlaskClient, rp: RegisteredClient, value: str
) -> None:
    assert sign_in(client).status_code == 303

    answer = _authorize(client, rp, max_age=value)

    assert answer.status_code == 302
    params = query_of(answer.headers["Location"])
    assert params["error"] == "invalid_request"
    assert params["error_description"] == "max_age must be a whole number of seconds."
    assert params["state"] == "xyz"
    assert "code" not in params


# -- userinfo -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_userinfo_answers_a_bearer_access_token_by_get_and_post(
    client: FlaskClient, user: User, rp: RegisteredClient, method: str
) -> None:
    tokens = _signed_in_tokens(client, rp, scope="openid")

    response = client.open(USERINFO, method=method, headers=_bearer(tokens["access_token"]))

    assert response.status_code == 200
    assert response.json == {"sub": str(user.id)}
    assert response.headers["Cache-Control"] == "no-store"


def test_userinfo_gives_the_email_for_the_email_scope_and_says_it_is_not_verified(
    client: FlaskClient, user: User, rp: RegisteredClient
) -> None:
    tokens = _signed_in_tokens(client, rp, scope="openid email")

    response = client.get(USERINFO, headers=_bearer(tokens["access_token"]))

    assert response.json == {"sub": str(user.id), "email": user.email, "email_verified": False}


def test_userinfo_says_email_verified_once_the_operator_verified_the_address(
    client: FlaskClient, session: Session, user: User, rp: RegisteredClient
) -> None:
    assert mark_email_verified(session, user, utcnow(), method="operator")
    session.commit()
    tokens = _signed_in_tokens(client, rp, scope="openid email")

    response = client.get(USERINFO, headers=_bearer(tokens["access_token"]))

    assert response.json == {"sub": str(user.id), "email": user.email, "email_verified": True}


def test_userinfo_gives_updated_at_for_the_profile_scope(
    client: FlaskClient, user: User, rp: RegisteredClient
) -> None:
    tokens = _signed_in_tokens(client, rp, scope="openid profile")

    response = client.get(USERINFO, headers=_bearer(tokens["access_token"]))

    assert response.json == {"sub": str(user.id), "updated_at": int(user.updated_at.timestamp())}


def test_userinfo_refuses_a_token_without_the_openid_scope_as_insufficient_scope(
    client: FlaskClient, rp: RegisteredClient
) -> None:
    tokens = _signed_in_tokens(client, rp, scope="email offline_access")

    response = client.get(USERINFO, headers=_bearer(tokens["access_token"]))

    assert response.status_code == 403
    assert response.json["error"] == "insufficient_scope"
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="insufficient_scope"')
    assert "email" not in response.json


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Bearer a.b.c"},
    ],
    ids=["no-header", "empty-bearer", "basic", "garbage", "three-segments"],
)
def test_userinfo_without_a_valid_token_is_401_invalid_token(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    response = client.get(USERINFO, headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert response.json["error"] == "invalid_token"


def test_userinfo_refuses_an_access_token_with_a_forged_signature(
    client: FlaskClient, rp: RegisteredClient
) -> None:
    access = _signed_in_tokens(client, rp)["access_token"]
    header, payload, signature = access.split(".")
    forged = f"{header}.{payload}.{signature[::-1]}"

    response = client.get(USERINFO, headers=_bearer(forged))

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


def test_userinfo_refuses_an_access_token_of_a_revoked_family(
    client: FlaskClient, session: Session, rp: RegisteredClient
) -> None:
    access = _signed_in_tokens(client, rp)["access_token"]
    assert client.get(USERINFO, headers=_bearer(access)).status_code == 200
    family = session.scalars(select(RefreshFamily)).one()
    revoke_family(session, family, RevocationReason.REVOKED_BY_CLIENT, utcnow())
    session.commit()

    response = client.get(USERINFO, headers=_bearer(access))

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


# -- discovery ------------------------------------------------------------------------------


def test_discovery_lists_userinfo_end_session_scopes_and_id_token_claims(
    client: FlaskClient,
) -> None:
    metadata = client.get("/.well-known/openid-configuration").json

    assert metadata["userinfo_endpoint"] == ISSUER + USERINFO
    assert metadata["end_session_endpoint"] == ISSUER + END_SESSION
    assert {"openid", "profile", "email"} <= set(metadata["scopes_supported"])
    assert metadata["id_token_signing_alg_values_supported"] == ["ES256"]
    assert ID_TOKEN_CLAIMS | {"email", "email_verified", "updated_at"} <= set(
        metadata["claims_supported"]
    )
    assert metadata["subject_types_supported"] == ["public"]


# -- RP-initiated logout --------------------------------------------------------------------


def test_logout_with_the_sessions_id_token_hint_signs_out_and_returns_with_state(
    client: FlaskClient, session: Session, rp: RegisteredClient
) -> None:
    tokens = _signed_in_tokens(client, rp)

    response = client.get(
        END_SESSION,
        query_string={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": POST_LOGOUT_URI,
            "state": "bye-42",
        },
    )

    assert response.status_code == 303
    assert response.headers["Location"] == POST_LOGOUT_URI + "?state=bye-42"
    assert _only_browser_session(session).revoked_at is not None
    assert session.scalars(select(RefreshFamily)).one().revoked_at is not None
    assert not _is_signed_in(client)
    # The access token issued through that session is dead too.
    assert client.get(USERINFO, headers=_bearer(tokens["access_token"])).status_code == 401


@pytest.mark.parametrize(
    "uri",
    [
        POST_LOGOUT_URI + "/",
        POST_LOGOUT_URI + "?next=https://evil.example.test",
        POST_LOGOUT_URI.upper(),
        "https://evil.example.test/signed-out",
        REDIRECT_URI,  # registered, but as a redirect URI, not for logout
    ],
    ids=["trailing-slash", "extra-query", "other-case", "other-host", "redirect-uri"],
)
def test_logout_to_an_unregistered_post_logout_uri_is_refused_and_signs_nobody_out(
    client: FlaskClient, session: Session, rp: RegisteredClient, uri: str
) -> None:
    tokens = _signed_in_tokens(client, rp)

    response = client.get(
        END_SESSION,
        query_string={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": uri},
    )

    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "not registered" in response.get_data(as_text=True)
    assert _only_browser_session(session).revoked_at is None
    assert _is_signed_in(client)


def test_logout_hint_signed_by_a_foreign_key_is_refused(
    client: FlaskClient, session: Session, rp: RegisteredClient
) -> None:
    genuine = _signed_in_tokens(client, rp)["id_token"]
    # Same claims, same kid, but signed with a key this server never had.
    forged = jwt.encode(
        jwt.decode(genuine, options={"verify_signature": False}),
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": jwt.get_unverified_header(genuine)["kid"], "typ": "JWT"},
    )

    response = client.get(
        END_SESSION,
        query_string={"id_token_hint": forged, "post_logout_redirect_uri": POST_LOGOUT_URI},
    )

    assert response.status_code == 400
    assert "Location" not in response.headers
    assert _only_browser_session(session).revoked_at is None
    assert _is_signed_in(client)


def test_logout_by_get_without_a_hint_only_asks_for_confirmation(
    client: FlaskClient, session: Session, user: User
) -> None:
    assert sign_in(client).status_code == 303

    response = client.get(END_SESSION)

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Sign out?" in page
    assert user.email in page
    assert 'name="csrf_token"' in page
    assert _only_browser_session(session).revoked_at is None
    assert _is_signed_in(client)


def test_logout_confirmation_without_csrf_token_signs_nobody_out(
    client: FlaskClient, session: Session, user: User
) -> None:
    assert sign_in(client).status_code == 303
    client.get(END_SESSION)

    response = client.post(END_SESSION, data={"confirm": "yes"})

    assert response.status_code == 400
    assert _only_browser_session(session).revoked_at is None
    assert _is_signed_in(client)


def test_logout_confirmation_with_csrf_token_signs_out(
    client: FlaskClient, session: Session, user: User
) -> None:
    assert sign_in(client).status_code == 303
    page = client.get(END_SESSION)

    response = client.post(
        _form_action(page), data={"confirm": "yes", "csrf_token": csrf_token_of(page)}
    )

    assert response.status_code == 303
    assert response.headers["Location"] == "/logged-out"
    assert _only_browser_session(session).revoked_at is not None
    assert not _is_signed_in(client)


def test_confirmed_logout_without_hint_returns_to_the_registered_uri_with_state(
    client: FlaskClient, session: Session, rp: RegisteredClient
) -> None:
    assert sign_in(client).status_code == 303
    page = client.get(
        END_SESSION,
        query_string={
            "client_id": rp.client.client_id,
            "post_logout_redirect_uri": POST_LOGOUT_URI,
            "state": "s-7",
        },
    )
    assert page.status_code == 200

    response = client.post(
        _form_action(page), data={"confirm": "yes", "csrf_token": csrf_token_of(page)}
    )

    assert response.status_code == 303
    assert response.headers["Location"] == POST_LOGOUT_URI + "?state=s-7"
    assert _only_browser_session(session).revoked_at is not None


def test_logout_hint_naming_another_session_asks_and_signs_nobody_out(
    app: Flask, client: FlaskClient, session: Session, rp: RegisteredClient
) -> None:
    other_browser = app.test_client()
    other_hint = _signed_in_tokens(other_browser, rp)["id_token"]
    assert sign_in(client).status_code == 303

    response = client.get(
        END_SESSION,
        query_string={"id_token_hint": other_hint, "post_logout_redirect_uri": POST_LOGOUT_URI},
    )

    assert response.status_code == 200
    assert "Sign out?" in response.get_data(as_text=True)
    assert [s.revoked_at for s in _browser_sessions(session)] == [None, None]
    assert _is_signed_in(client)
    assert _is_signed_in(other_browser)


def test_logout_hint_naming_another_session_is_signed_out_once_confirmed(
    app: Flask, client: FlaskClient, session: Session, rp: RegisteredClient
) -> None:
    other_browser = app.test_client()
    other_hint = _signed_in_tokens(other_browser, rp)["id_token"]
    assert sign_in(client).status_code == 303
    page = client.get(
        END_SESSION,
        query_string={"id_token_hint": other_hint, "post_logout_redirect_uri": POST_LOGOUT_URI},
    )

    response = client.post(
        _form_action(page), data={"confirm": "yes", "csrf_token": csrf_token_of(page)}
    )

    assert response.status_code == 303
    older, current = _browser_sessions(session)
    assert current.revoked_at is not None
    # The session the hint named belongs to another browser: it stays signed in.
    assert older.revoked_at is None
    assert _is_signed_in(other_browser)


def test_logout_with_a_client_id_other_than_the_hints_audience_is_refused(
    client: FlaskClient, session: Session, rp: RegisteredClient
) -> None:
    other = _web_client(session, name="Other app")
    tokens = _signed_in_tokens(client, rp)

    response = client.get(
        END_SESSION,
        query_string={
            "id_token_hint": tokens["id_token"],
            "client_id": other.client.client_id,
            "post_logout_redirect_uri": POST_LOGOUT_URI,
        },
    )

    assert response.status_code == 400
    assert "Location" not in response.headers
    assert _only_browser_session(session).revoked_at is None
    assert _is_signed_in(client)


def test_logout_hint_for_a_session_already_ended_just_returns_to_the_client(
    client: FlaskClient, session: Session, rp: RegisteredClient
) -> None:
    tokens = _signed_in_tokens(client, rp)
    client.post("/logout", data={"csrf_token": csrf_token_of(client.get("/logout"))})
    assert not _is_signed_in(client)

    response = client.get(
        END_SESSION,
        query_string={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": POST_LOGOUT_URI,
        },
    )

    assert response.status_code == 303
    assert response.headers["Location"] == POST_LOGOUT_URI
    assert _only_browser_session(session).revoked_reason == "logout"


def test_signing_in_leaves_the_profiles_updated_at_alone(
    app: Flask, session: Session, client: FlaskClient, user: User, rp: RegisteredClient
) -> None:
    before = utcnow() - timedelta(days=3)
    session.execute(update(User).where(User.id == user.id).values(updated_at=before))
    session.commit()

    tokens = _signed_in_tokens(client, rp, scope="openid profile")
    answer = client.get(USERINFO, headers=_bearer(tokens["access_token"]))

    session.expire_all()
    signed_in = session.get(User, user.id)
    assert signed_in is not None
    assert signed_in.last_sign_in_at is not None
    assert signed_in.updated_at == before
    assert answer.json is not None
    assert answer.json["updated_at"] == int(before.timestamp())
