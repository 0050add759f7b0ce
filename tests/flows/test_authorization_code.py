"""Authorization code flow with PKCE and OpenID Connect (RFC 6749 §4.1, RFC 7636, Core §3.1).

What a browser and a client see at ``/oauth/authorize`` and at the token endpoint: PKCE with
S256 only, exact redirect URIs and never an open redirect, single-use short-lived codes bound to
their client and redirect URI, ``iss`` on every response (RFC 9207), consent, ``prompt`` and the
rules for issuing a refresh token. What a replay or a refused redemption does to a code and
to the tokens it issued is in ``test_authorization_code_single_use.py``; concurrent
redemptions of one code are in ``test_authorization_code_concurrency.py``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import datetime, timedelta
from urllib.parse import urlencode, urlsplit

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.db import utcnow
from authserver.http.web import session_cookie_name
from authserver.models import AuthorizationCode, BrowserSession, RefreshFamily
from authserver.runtime import runtime
from authserver.services.authorization_codes import issue_code
from authserver.services.clients import RegisteredClient
from authserver.services.refresh_tokens import digest_token
from tests.browser_helpers import (
    REDIRECT_URI,
    authorize_url,
    code_through_browser,
    csrf_token_of,
    pkce_pair,
    query_of,
    redeem_code,
    sign_in,
    sign_in_new_user,
    web_client,
)
from tests.helpers import PASSWORD, basic_auth, make_user, refresh, token_request

OTHER_REDIRECT_URI = "https://rp.example.test/other-callback"
ERROR_PAGE_TITLE = "This sign-in link is not valid"
CODE_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")


def _first_party_client(session: Session, **overrides: object) -> RegisteredClient:
    return web_client(session, name="Operator app", first_party=True, **overrides)


def _authorize(
    http: FlaskClient, rp: RegisteredClient, challenge: str, **extra: str
) -> TestResponse:
    return http.get(authorize_url(rp.client.client_id, challenge, **extra))


def _raw_authorize(http: FlaskClient, **params: str) -> TestResponse:
    """GET /oauth/authorize with exactly these parameters (nothing filled in)."""
    return http.get("/oauth/authorize?" + urlencode(params))


def _allow(http: FlaskClient, consent_page: TestResponse, url: str) -> TestResponse:
    return http.post(url, data={"csrf_token": csrf_token_of(consent_page), "decision": "allow"})


def _authorize_and_consent(
    http: FlaskClient, rp: RegisteredClient, challenge: str, **extra: str
) -> TestResponse:
    """Authorize as the signed-in user, allowing the consent page if one is shown."""
    url = authorize_url(rp.client.client_id, challenge, **extra)
    response = http.get(url)
    if response.status_code == 200:
        response = _allow(http, response, url)
    return response


def _redirect_params(response: TestResponse, redirect_uri: str = REDIRECT_URI) -> dict[str, str]:
    """The parameters of a redirect to the client; fails unless it is one."""
    assert response.status_code == 302, response.get_data(as_text=True)
    location = response.headers["Location"]
    assert location.startswith(redirect_uri + "?"), location
    return query_of(location)


def _assert_error_page(response: TestResponse) -> None:
    """The browser stays on our error page: nothing is sent to any redirect URI."""
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert ERROR_PAGE_TITLE in response.get_data(as_text=True)


def _code_rows(session: Session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(AuthorizationCode)) or 0


def _issuer(app: Flask) -> str:
    issuer: str = app.config["AUTHSERVER"].issuer
    return issuer


def _freeze_clock(app: Flask) -> datetime:
    start = utcnow()
    runtime(app).clock = lambda: start
    return start


def _browser_session(session: Session, http: FlaskClient, app: Flask) -> BrowserSession:
    cookie = http.get_cookie(session_cookie_name(app.config["AUTHSERVER"]))
    assert cookie is not None
    session.expire_all()
    return session.scalars(
        select(BrowserSession).where(BrowserSession.token_digest == digest_token(cookie.value))
    ).one()


def _introspect(http: FlaskClient, rp: RegisteredClient, token: str) -> dict[str, object]:
    response = http.post("/oauth/introspect", data={"token": token}, headers=basic_auth(rp))
    assert response.status_code == 200, response.json
    body: dict[str, object] = response.json
    return body


def _is_same_origin_path(location: str) -> bool:
    parts = urlsplit(location)
    # Browsers read a backslash as a slash, so "/\host" is "//host".
    return (
        location.startswith("/")
        and not location.startswith("//")
        and "\\" not in location
        and not parts.scheme
        and not parts.netloc
    )


# -- the full flow -----------------------------------------------------------------------


def test_full_code_flow_with_pkce_and_consent_returns_tokens(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    rp = web_client(session)
    verifier, challenge = pkce_pair()
    url = authorize_url(rp.client.client_id, challenge)

    first = client.get(url)
    assert first.status_code == 303
    assert first.headers["Location"].startswith("/login?next=")
    signed_in = sign_in(client, next_path=url)
    assert signed_in.status_code == 303
    consent = client.get(signed_in.headers["Location"])
    assert consent.status_code == 200
    assert "Photo app" in consent.get_data(as_text=True)
    approved = client.post(url, data={"csrf_token": csrf_token_of(consent), "decision": "allow"})
    assert approved.status_code == 302
    location = approved.headers["Location"]
    assert location.startswith(REDIRECT_URI)
    params = query_of(location)
    assert params["state"] == "xyz"
    assert params["iss"] == app.config["AUTHSERVER"].issuer

    tokens = token_request(
        client,
        rp,
        grant_type="authorization_code",
        code=params["code"],
        redirect_uri=REDIRECT_URI,
        code_verifier=verifier,
    )
    assert tokens.status_code == 200, tokens.json
    assert {"access_token", "refresh_token", "id_token"} <= set(tokens.json)


# -- PKCE (RFC 7636, S256 only, required of every client) --------------------------------


def test_authorization_request_without_code_challenge_is_refused_at_the_redirect_uri(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = _first_party_client(session)

    response = _raw_authorize(
        client,
        response_type="code",
        client_id=rp.client.client_id,
        redirect_uri=REDIRECT_URI,
        scope="openid",
        state="xyz",
    )

    params = _redirect_params(response)
    assert params["error"] == "invalid_request"
    assert params["state"] == "xyz"
    assert params["iss"] == _issuer(app)
    assert "code" not in params
    assert _code_rows(session) == 0


def test_code_challenge_method_plain_is_refused(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = _first_party_client(session)
    verifier, _ = pkce_pair()

    # With plain, the challenge is the verifier itself.
    response = _authorize(client, rp, verifier, code_challenge_method="plain")

    params = _redirect_params(response)
    assert params["error"] == "invalid_request"
    assert params["state"] == "xyz"
    assert "code" not in params
    assert _code_rows(session) == 0


def test_code_challenge_without_method_is_refused(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = _first_party_client(session)
    _, challenge = pkce_pair()

    response = _raw_authorize(
        client,
        response_type="code",
        client_id=rp.client.client_id,
        redirect_uri=REDIRECT_URI,
        scope="openid",
        state="xyz",
        code_challenge=challenge,
    )

    params = _redirect_params(response)
    assert params["error"] == "invalid_request"
    assert params["iss"] == _issuer(app)
    assert "code" not in params
    assert _code_rows(session) == 0


def test_verifier_for_a_code_issued_without_challenge_is_refused(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    # RFC 9700 §4.8 (PKCE downgrade): the authorization endpoint never issues such a code,
    # so one is made directly, as an attacker who stripped the challenge would need it.
    user = make_user(app, session)
    rp = web_client(session)
    code = issue_code(
        session,
        client=rp.client,
        user=user,
        browser_session=None,
        redirect_uri=REDIRECT_URI,
        scope="openid email",
        audience="https://api.example.test",
        nonce=None,
        code_challenge=None,
        code_challenge_method=None,
        ttl=timedelta(seconds=60),
        now=utcnow(),
    )
    session.commit()
    verifier, _ = pkce_pair()

    response = redeem_code(client, rp, code, verifier)

    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert "access_token" not in response.json


def test_wrong_code_verifier_is_invalid_grant(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    code, _ = code_through_browser(client, rp)
    someone_elses_verifier, _ = pkce_pair()

    response = redeem_code(client, rp, code, someone_elses_verifier)

    assert response.status_code == 400
    assert response.json["error"] == "invalid_grant"
    assert "access_token" not in response.json


def test_missing_code_verifier_is_invalid_request(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    code, _ = code_through_browser(client, rp)

    response = redeem_code(client, rp, code, None)

    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert "access_token" not in response.json


def test_public_client_without_code_verifier_is_invalid_request(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session, public=True)
    code, _ = code_through_browser(client, rp)

    response = redeem_code(client, rp, code, None)

    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert "access_token" not in response.json


# -- redirect URIs: exact match, and never an open redirect (RFC 9700 §4.1.3) ------------


@pytest.mark.parametrize(
    "redirect_uri",
    [
        # Not exactly what was registered (RFC 9700 §4.1.3: exact string match).
        pytest.param("https://attacker.example/callback", id="other-host"),
        pytest.param(REDIRECT_URI + "/", id="trailing-slash"),
        pytest.param("https://RP.example.test/callback", id="host-case"),
        pytest.param("https://rp.example.test/Callback", id="path-case"),
        pytest.param(REDIRECT_URI + "?next=https://attacker.example/", id="extra-query"),
        pytest.param("https://rp.example.test:443/callback", id="explicit-default-port"),
        pytest.param("https://rp.example.test/callback/../callback", id="dot-segments"),
        pytest.param("https://rp.example.test.attacker.example/callback", id="host-suffix"),
        # Malformed.
        pytest.param("not a uri", id="not-a-uri"),
        pytest.param("/callback", id="relative"),
        pytest.param("javascript:alert(1)", id="javascript"),
        pytest.param("https://rp.example.test/callback#fragment", id="fragment"),
        # Characters an error description may not carry (it must not echo them, nor crash).
        pytest.param("https://rp.example.test/call\r\nback", id="crlf"),
        pytest.param("https://rp.example.test\\@attacker.example/callback", id="backslash"),
        pytest.param('https://rp.example.test/"callback', id="quote"),
        pytest.param("https://rp.example.test/caf\u00e9", id="non-ascii"),
    ],
)
def test_redirect_uri_not_exactly_registered_gets_an_error_page(
    app: Flask, session: Session, client: FlaskClient, redirect_uri: str
) -> None:
    sign_in_new_user(app, session, client)
    rp = _first_party_client(session)
    _, challenge = pkce_pair()

    response = _authorize(client, rp, challenge, redirect_uri=redirect_uri)

    _assert_error_page(response)
    assert _code_rows(session) == 0


@pytest.mark.parametrize(
    "error_trigger",
    [
        pytest.param({"code_challenge": ""}, id="missing-pkce"),
        pytest.param({"response_type": "token"}, id="response-type-token"),
        pytest.param({"scope": "admin"}, id="unknown-scope"),
        pytest.param({"prompt": "none"}, id="prompt-none-signed-out"),
    ],
)
def test_errors_are_never_sent_to_an_unregistered_redirect_uri(
    session: Session, client: FlaskClient, error_trigger: dict[str, str]
) -> None:
    rp = web_client(session)
    _, challenge = pkce_pair()

    response = _authorize(
        client, rp, challenge, redirect_uri="https://attacker.example/callback", **error_trigger
    )

    _assert_error_page(response)


def test_unknown_client_id_gets_an_error_page(session: Session, client: FlaskClient) -> None:
    _, challenge = pkce_pair()

    response = client.get(authorize_url("no-such-client", challenge))

    _assert_error_page(response)


def test_missing_client_id_gets_an_error_page(session: Session, client: FlaskClient) -> None:
    _, challenge = pkce_pair()

    response = _raw_authorize(
        client,
        response_type="code",
        redirect_uri=REDIRECT_URI,
        code_challenge=challenge,
        code_challenge_method="S256",
    )

    _assert_error_page(response)


def test_missing_redirect_uri_with_several_registered_gets_an_error_page(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = _first_party_client(session, redirect_uris=[REDIRECT_URI, OTHER_REDIRECT_URI])
    _, challenge = pkce_pair()

    response = _raw_authorize(
        client,
        response_type="code",
        client_id=rp.client.client_id,
        scope="openid",
        state="xyz",
        code_challenge=challenge,
        code_challenge_method="S256",
    )

    _assert_error_page(response)


def test_token_request_with_a_different_redirect_uri_is_invalid_grant(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session, redirect_uris=[REDIRECT_URI, OTHER_REDIRECT_URI])
    code, verifier = code_through_browser(client, rp)

    # Also registered, but not the one the code was sent to (RFC 6749 §4.1.3).
    response = redeem_code(client, rp, code, verifier, redirect_uri=OTHER_REDIRECT_URI)

    assert response.status_code == 400
    assert response.json["error"] == "invalid_grant"


def test_token_request_without_the_redirect_uri_of_the_authorization_is_invalid_grant(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    code, verifier = code_through_browser(client, rp)

    response = token_request(
        client, rp, grant_type="authorization_code", code=code, code_verifier=verifier
    )

    assert response.status_code == 400
    assert response.json["error"] == "invalid_grant"


# -- codes: bound, short-lived, single use, stored as a digest ---------------------------


def test_code_of_one_client_redeemed_by_another_is_invalid_grant(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    other = web_client(session, name="Other app")
    code, verifier = code_through_browser(client, rp)

    response = redeem_code(client, other, code, verifier)

    assert response.status_code == 400
    assert response.json["error"] == "invalid_grant"
    assert "access_token" not in response.json


def test_code_is_redeemable_until_just_before_sixty_seconds(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    start = _freeze_clock(app)
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    code, verifier = code_through_browser(client, rp)
    runtime(app).clock = lambda: start + timedelta(seconds=59)

    response = redeem_code(client, rp, code, verifier)

    assert response.status_code == 200, response.json


def test_code_redeemed_sixty_seconds_after_issue_is_invalid_grant(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    start = _freeze_clock(app)
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    code, verifier = code_through_browser(client, rp)
    runtime(app).clock = lambda: start + timedelta(seconds=60)

    response = redeem_code(client, rp, code, verifier)

    assert response.status_code == 400
    assert response.json["error"] == "invalid_grant"
    assert "access_token" not in response.json


def test_second_redemption_of_a_code_is_invalid_grant(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    code, verifier = code_through_browser(client, rp)
    assert redeem_code(client, rp, code, verifier).status_code == 200

    replay = redeem_code(client, rp, code, verifier)

    assert replay.status_code == 400
    assert replay.json["error"] == "invalid_grant"
    assert "access_token" not in replay.json


def test_second_redemption_of_a_code_revokes_the_refresh_tokens_issued_from_it(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    code, verifier = code_through_browser(client, rp)
    first = redeem_code(client, rp, code, verifier)
    refresh_token = first.json["refresh_token"]

    redeem_code(client, rp, code, verifier)

    # RFC 6749 §4.1.2: the tokens of the first redemption die with the replay.
    after = refresh(client, rp, refresh_token)
    assert after.status_code == 400
    assert after.json["error"] == "invalid_grant"
    session.expire_all()
    assert session.scalars(select(RefreshFamily.revoked_reason)).one() == "code_replayed"


def test_second_redemption_of_a_code_makes_the_first_access_token_inactive(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    code, verifier = code_through_browser(client, rp)
    access_token = redeem_code(client, rp, code, verifier).json["access_token"]
    assert _introspect(client, rp, access_token)["active"] is True

    redeem_code(client, rp, code, verifier)

    assert _introspect(client, rp, access_token) == {"active": False}


def test_only_the_sha256_of_the_code_is_stored(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)

    code, _ = code_through_browser(client, rp)

    session.expire_all()
    row = session.scalars(select(AuthorizationCode)).one()
    assert row.code_digest == hashlib.sha256(code.encode()).digest()
    for column in AuthorizationCode.__table__.columns:
        value = getattr(row, column.key)
        stored = value if isinstance(value, bytes) else str(value).encode()
        assert code.encode() not in stored, column.key


def test_code_is_256_bits_of_base64url(app: Flask, session: Session, client: FlaskClient) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)

    code, _ = code_through_browser(client, rp)

    assert CODE_SHAPE.fullmatch(code), code
    assert len(base64.urlsafe_b64decode(code + "=")) == 32


def test_each_authorization_gets_a_different_code(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = _first_party_client(session)

    codes = {code_through_browser(client, rp)[0] for _ in range(3)}

    assert len(codes) == 3


# -- the authorization response (RFC 6749 §4.1.2, RFC 9207) ------------------------------


def test_successful_authorization_response_carries_code_state_and_iss(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = _first_party_client(session)
    _, challenge = pkce_pair()

    response = _authorize(client, rp, challenge, state="a state/with?odd=chars&x")

    params = _redirect_params(response)
    assert set(params) == {"code", "state", "iss"}
    assert params["state"] == "a state/with?odd=chars&x"
    assert params["iss"] == _issuer(app)


def test_authorization_response_without_state_in_the_request_has_none(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = _first_party_client(session)
    _, challenge = pkce_pair()

    response = _raw_authorize(
        client,
        response_type="code",
        client_id=rp.client.client_id,
        redirect_uri=REDIRECT_URI,
        scope="openid",
        code_challenge=challenge,
        code_challenge_method="S256",
    )

    params = _redirect_params(response)
    assert set(params) == {"code", "iss"}


def test_redirect_uri_with_its_own_query_keeps_it(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered_uri = "https://rp.example.test/callback?tenant=blue"
    sign_in_new_user(app, session, client)
    rp = _first_party_client(session, redirect_uris=[registered_uri])
    _, challenge = pkce_pair()

    response = _authorize(client, rp, challenge, redirect_uri=registered_uri)

    location = response.headers["Location"]
    assert location.startswith("https://rp.example.test/callback?")
    params = query_of(location)
    assert params["tenant"] == "blue"
    assert {"code", "state", "iss"} <= set(params)


def test_response_type_token_is_refused_with_unsupported_response_type(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = _first_party_client(session)
    _, challenge = pkce_pair()

    response = _authorize(client, rp, challenge, response_type="token")

    assert response.status_code == 302
    location = response.headers["Location"]
    params = _redirect_params(response)
    assert params["error"] == "unsupported_response_type"
    assert params["state"] == "xyz"
    assert params["iss"] == _issuer(app)
    # RFC 9700 §2.1.2: no implicit grant, so no token anywhere in the redirect.
    assert "access_token" not in location
    assert urlsplit(location).fragment == ""
    assert _code_rows(session) == 0


@pytest.mark.parametrize("response_type", ['token"', "token\\"])
def test_response_type_with_characters_unfit_for_an_error_description_is_refused(
    app: Flask, session: Session, client: FlaskClient, response_type: str
) -> None:
    sign_in_new_user(app, session, client)
    rp = _first_party_client(session)
    _, challenge = pkce_pair()

    response = _authorize(client, rp, challenge, response_type=response_type)

    params = _redirect_params(response)
    assert params["error"] == "unsupported_response_type"
    assert params["iss"] == _issuer(app)
    assert "code" not in params


def test_response_type_code_id_token_is_refused(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = _first_party_client(session)
    _, challenge = pkce_pair()

    response = _authorize(client, rp, challenge, response_type="code id_token")

    params = _redirect_params(response)
    assert params["error"] == "unsupported_response_type"
    assert "id_token" not in params
    assert "code" not in params


# -- consent -----------------------------------------------------------------------------


def test_first_party_client_gets_a_code_without_a_consent_page(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = _first_party_client(session)
    _, challenge = pkce_pair()

    response = _authorize(client, rp, challenge)

    assert "code" in _redirect_params(response)


def test_third_party_client_shows_a_consent_page_naming_client_and_scopes(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    _, challenge = pkce_pair()

    response = _authorize(client, rp, challenge, scope="openid email")

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Allow Photo app" in page
    assert "See your email address" in page
    assert _code_rows(session) == 0


@pytest.mark.parametrize("scope", ["openid email", "openid"], ids=["same", "fewer"])
def test_remembered_consent_skips_the_page_for_the_same_or_fewer_scopes(
    app: Flask, session: Session, client: FlaskClient, scope: str
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    code_through_browser(client, rp, scope="openid email")
    _, challenge = pkce_pair()

    again = _authorize(client, rp, challenge, scope=scope)

    assert "code" in _redirect_params(again)


def test_consent_is_asked_again_for_a_wider_scope(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    code_through_browser(client, rp, scope="openid email")
    _, challenge = pkce_pair()

    wider = _authorize(client, rp, challenge, scope="openid email offline_access")

    assert wider.status_code == 200
    assert "<strong>Stay signed in</strong>" in wider.get_data(as_text=True)


def test_consent_for_one_client_is_not_reused_for_another(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    other = web_client(session, name="Other app")
    code_through_browser(client, rp, scope="openid email")
    _, challenge = pkce_pair()

    response = _authorize(client, other, challenge, scope="openid email")

    assert response.status_code == 200
    assert "Allow Other app" in response.get_data(as_text=True)


def test_consent_of_one_user_is_not_reused_for_another(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    code_through_browser(client, rp, scope="openid email")
    make_user(app, session, email="bob@example.com")
    bobs_browser = app.test_client()
    sign_in(bobs_browser, email="bob@example.com", password=PASSWORD)
    _, challenge = pkce_pair()

    response = _authorize(bobs_browser, rp, challenge, scope="openid email")

    assert response.status_code == 200
    assert "bob@example.com" in response.get_data(as_text=True)


def test_denied_consent_redirects_with_access_denied(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    _, challenge = pkce_pair()
    url = authorize_url(rp.client.client_id, challenge)
    consent = client.get(url)

    denied = client.post(url, data={"csrf_token": csrf_token_of(consent), "decision": "deny"})

    params = _redirect_params(denied)
    assert params["error"] == "access_denied"
    assert params["state"] == "xyz"
    assert params["iss"] == _issuer(app)
    assert "code" not in params
    assert _code_rows(session) == 0


def test_denied_consent_is_not_remembered(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    _, challenge = pkce_pair()
    url = authorize_url(rp.client.client_id, challenge)
    consent = client.get(url)
    client.post(url, data={"csrf_token": csrf_token_of(consent), "decision": "deny"})

    again = client.get(url)

    assert again.status_code == 200
    assert "Allow Photo app" in again.get_data(as_text=True)


def test_consent_post_without_csrf_token_is_refused_and_issues_no_code(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    _, challenge = pkce_pair()
    url = authorize_url(rp.client.client_id, challenge)
    client.get(url)

    forged = client.post(url, data={"decision": "allow"})

    assert forged.status_code == 400
    assert "Location" not in forged.headers
    assert "Please try again" in forged.get_data(as_text=True)
    assert _code_rows(session) == 0
    # Nor was consent recorded: the next visit asks again.
    assert client.get(url).status_code == 200


def test_consent_post_from_another_site_is_refused_and_issues_no_code(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    _, challenge = pkce_pair()
    url = authorize_url(rp.client.client_id, challenge)
    consent = client.get(url)

    forged = client.post(
        url,
        data={"csrf_token": csrf_token_of(consent), "decision": "allow"},
        headers={"Origin": "https://attacker.example"},
    )

    assert forged.status_code == 403
    assert "Location" not in forged.headers
    assert _code_rows(session) == 0


def test_consent_post_signed_out_issues_no_code(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    rp = web_client(session)
    _, challenge = pkce_pair()
    url = authorize_url(rp.client.client_id, challenge)
    login_page = client.get("/login")

    response = client.post(url, data={"csrf_token": csrf_token_of(login_page), "decision": "allow"})

    assert response.status_code == 303
    assert response.headers["Location"].startswith("/login?")
    assert _code_rows(session) == 0


# -- refresh tokens: offline_access or first-party, and tied to the browser session -----


def test_offline_access_gets_a_refresh_token(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    code, verifier = code_through_browser(client, rp, scope="openid offline_access")

    tokens = redeem_code(client, rp, code, verifier)

    assert tokens.status_code == 200, tokens.json
    assert tokens.json["refresh_token"]
    assert refresh(client, rp, tokens.json["refresh_token"]).status_code == 200


def test_third_party_without_offline_access_gets_no_refresh_token(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    code, verifier = code_through_browser(client, rp, scope="openid email")

    tokens = redeem_code(client, rp, code, verifier)

    assert tokens.status_code == 200, tokens.json
    assert "refresh_token" not in tokens.json
    assert tokens.json["access_token"]


def test_first_party_without_offline_access_gets_a_refresh_token(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = _first_party_client(session)
    code, verifier = code_through_browser(client, rp, scope="openid email")

    tokens = redeem_code(client, rp, code, verifier)

    assert tokens.status_code == 200, tokens.json
    assert tokens.json["refresh_token"]


def test_client_not_allowed_refresh_token_gets_none_even_with_offline_access(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = _first_party_client(session, grant_types=["authorization_code"])
    code, verifier = code_through_browser(client, rp, scope="openid offline_access")

    tokens = redeem_code(client, rp, code, verifier)

    assert tokens.status_code == 200, tokens.json
    assert "refresh_token" not in tokens.json


def test_refresh_family_belongs_to_the_signed_in_browser_session(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    code, verifier = code_through_browser(client, rp)

    tokens = redeem_code(client, rp, code, verifier)

    assert tokens.status_code == 200, tokens.json
    browser_session = _browser_session(session, client, app)
    family = session.scalars(select(RefreshFamily)).one()
    assert family.browser_session_id == browser_session.id
    id_token = jwt.decode(tokens.json["id_token"], options={"verify_signature": False})
    assert id_token["sid"] == str(browser_session.id)


def test_signing_out_of_the_browser_revokes_refresh_tokens_issued_through_it(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    code, verifier = code_through_browser(client, rp)
    refresh_token = redeem_code(client, rp, code, verifier).json["refresh_token"]
    logout_page = client.get("/logout")

    signed_out = client.post("/logout", data={"csrf_token": csrf_token_of(logout_page)})

    assert signed_out.status_code == 303
    after = refresh(client, rp, refresh_token)
    assert after.status_code == 400
    assert after.json["error"] == "invalid_grant"


def test_id_token_carries_the_nonce_of_the_authorization_request(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    code, verifier = code_through_browser(client, rp, nonce="n-abc123")

    tokens = redeem_code(client, rp, code, verifier)

    id_token = jwt.decode(tokens.json["id_token"], options={"verify_signature": False})
    assert id_token["nonce"] == "n-abc123"
    assert id_token["aud"] == rp.client.client_id
    assert id_token["iss"] == _issuer(app)


# -- prompt (OpenID Connect Core §3.1.2.1) -----------------------------------------------


def test_prompt_none_while_signed_out_redirects_with_login_required(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    rp = _first_party_client(session)
    _, challenge = pkce_pair()

    response = _authorize(client, rp, challenge, prompt="none")

    params = _redirect_params(response)
    assert params["error"] == "login_required"
    assert params["state"] == "xyz"
    assert params["iss"] == _issuer(app)
    assert "code" not in params


def test_prompt_none_needing_consent_redirects_with_consent_required(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    _, challenge = pkce_pair()

    response = _authorize(client, rp, challenge, prompt="none")

    params = _redirect_params(response)
    assert params["error"] == "consent_required"
    assert params["state"] == "xyz"
    assert params["iss"] == _issuer(app)
    assert "code" not in params
    assert _code_rows(session) == 0


def test_prompt_none_with_remembered_consent_returns_a_code(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    code_through_browser(client, rp)
    _, challenge = pkce_pair()

    response = _authorize(client, rp, challenge, prompt="none")

    assert "code" in _redirect_params(response)


def test_prompt_login_while_signed_in_shows_the_sign_in_page(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = _first_party_client(session)
    _, challenge = pkce_pair()

    to_login = _authorize(client, rp, challenge, prompt="login")
    assert to_login.status_code == 303
    page = client.get(to_login.headers["Location"])

    assert page.status_code == 200
    assert 'name="password"' in page.get_data(as_text=True)
    assert _code_rows(session) == 0


def test_signing_in_after_prompt_login_starts_a_new_session_and_returns_a_code(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    before = _browser_session(session, client, app)
    rp = _first_party_client(session)
    _, challenge = pkce_pair()
    to_login = _authorize(client, rp, challenge, prompt="login")
    next_path = query_of(to_login.headers["Location"])["next"]
    # Any page of this browser carries its CSRF token; /login may not render for it.
    form_page = client.get("/logout")

    signed_in = client.post(
        "/login",
        data={
            "email": "ann@example.com",
            "password": PASSWORD,
            "csrf_token": csrf_token_of(form_page),
            "next": next_path,
        },
    )

    assert signed_in.status_code == 303
    assert signed_in.headers["Location"] == next_path
    # The way back does not ask for sign-in again (no loop).
    assert "prompt=login" not in next_path
    assert "code" in _redirect_params(client.get(next_path))
    assert _browser_session(session, client, app).id != before.id


# -- sign-in: next is never an open redirect --------------------------------------------

OFF_SITE_TARGETS = [
    pytest.param("https://evil.example/", id="absolute"),
    pytest.param("//evil.example", id="scheme-relative"),
    pytest.param("/\\evil.example", id="slash-backslash"),
    pytest.param("\\\\evil.example", id="backslashes"),
    pytest.param("///evil.example", id="triple-slash"),
    pytest.param("/\t/evil.example", id="slash-tab-slash"),
    pytest.param("https:evil.example", id="scheme-no-slashes"),
    pytest.param("javascript:alert(1)", id="javascript"),
]


@pytest.mark.parametrize("target", OFF_SITE_TARGETS)
def test_sign_in_redirects_only_to_a_same_origin_path(
    app: Flask, session: Session, client: FlaskClient, target: str
) -> None:
    make_user(app, session)

    response = sign_in(client, next_path=target)

    assert response.status_code == 303
    assert _is_same_origin_path(response.headers["Location"]), response.headers["Location"]


@pytest.mark.parametrize("target", OFF_SITE_TARGETS)
def test_login_page_of_a_signed_in_browser_redirects_only_to_a_same_origin_path(
    app: Flask, session: Session, client: FlaskClient, target: str
) -> None:
    sign_in_new_user(app, session, client)

    response = client.get("/login", query_string={"next": target})

    assert response.status_code == 303
    assert _is_same_origin_path(response.headers["Location"]), response.headers["Location"]


def test_sign_in_follows_a_same_origin_next(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    rp = _first_party_client(session)
    _, challenge = pkce_pair()
    url = authorize_url(rp.client.client_id, challenge)

    response = sign_in(client, next_path=url)

    assert response.headers["Location"] == url


# -- client authentication at the token endpoint (RFC 6749 §3.2.1) ----------------------


def test_public_client_redeems_with_client_id_only(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session, public=True)
    assert rp.client_secret is None
    code, verifier = code_through_browser(client, rp)

    response = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "client_id": rp.client.client_id,
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
    )

    assert response.status_code == 200, response.json
    assert response.json["access_token"]


def test_confidential_client_without_its_secret_is_invalid_client(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    code, verifier = code_through_browser(client, rp)

    response = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "client_id": rp.client.client_id,
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
    )

    assert response.status_code == 401
    assert response.json["error"] == "invalid_client"
    assert "access_token" not in response.json


def test_confidential_client_with_a_wrong_secret_is_invalid_client_and_leaves_the_code(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    """Client authentication comes first: whoever cannot authenticate as the code's
    confidential client cannot spend its code either."""
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    code, verifier = code_through_browser(client, rp)
    wrong = base64.b64encode(f"{rp.client.client_id}:not-the-secret".encode()).decode()

    response = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        headers={"Authorization": f"Basic {wrong}"},
    )

    assert response.status_code == 401
    assert response.json["error"] == "invalid_client"
    assert "access_token" not in response.json
    assert redeem_code(client, rp, code, verifier).status_code == 200


def test_confidential_client_authenticating_with_client_secret_post_redeems(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = web_client(session)
    assert rp.client_secret is not None
    code, verifier = code_through_browser(client, rp)

    response = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "client_id": rp.client.client_id,
            "client_secret": rp.client_secret,
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
    )

    assert response.status_code == 200, response.json


def test_a_disabled_client_gets_an_error_page_and_no_code(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    sign_in_new_user(app, session, client)
    rp = _first_party_client(session)
    rp.client.disabled = True
    session.commit()
    _, challenge = pkce_pair()

    response = _authorize(client, rp, challenge)

    assert response.status_code == 400
    assert "Location" not in response.headers
    assert _code_rows(session) == 0
