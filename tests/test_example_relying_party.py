"""examples/relying_party.py receives back-channel logout tokens: signing out at authserver
signs the user out of the example app (authserver's own sender thread delivers the token),
and a token that fails any check of Back-Channel Logout §2.6 is answered 400 and changes
nothing.

Both run for real on 127.0.0.1: authserver (committed data, the in-process sender on) and the
relying party, driven by an HTTP client that keeps cookies like a browser. (The browser test
in tests/e2e drives the rest of the example in Chromium.)
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
import requests
from flask import Flask
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import Engine, select

from authserver import create_app
from authserver.config import Config
from authserver.db import db
from authserver.models import BrowserSession
from authserver.runtime import runtime
from authserver.services.backchannel_logout import LOGOUT_EVENT
from examples.relying_party import create_rp_app
from tests.conftest import listening_socket, serving, stop_outbox_sender, truncate_all, url_of
from tests.helpers import PASSWORD, make_client, make_user, wait_until

EMAIL = "ann@example.com"
TIMEOUT = 30


@dataclass
class Deployment:
    authserver: Flask
    issuer: str
    rp: str
    client_id: str


@pytest.fixture
def deployment(engine: Engine, config: Config) -> Iterator[Deployment]:
    """authserver with its sender thread, and the example relying party registered with a
    back-channel logout URI."""
    server_listener, rp_listener = listening_socket(), listening_socket()
    issuer, rp = url_of(server_listener), url_of(rp_listener)
    authserver = create_app(
        replace(config, issuer=issuer, outbox_in_process=1, outbox_retry_max_seconds=1)
    )
    with db.transaction(authserver) as session:
        make_user(authserver, session, EMAIL)
        client_id = make_client(
            session,
            name="Example relying party",
            grant_types=["authorization_code", "refresh_token"],
            public=True,
            first_party=False,
            redirect_uris=[rp + "/callback"],
            post_logout_redirect_uris=[rp + "/"],
            scopes=["openid", "email", "offline_access"],
            backchannel_logout_uri=rp + "/backchannel-logout",
        ).client.client_id
    try:
        with (
            serving(authserver, server_listener),
            serving(create_rp_app(issuer, client_id, rp), rp_listener),
        ):
            yield Deployment(authserver, issuer, rp, client_id)
    finally:
        stop_outbox_sender(authserver)
        db.state(authserver).engine.dispose()
        truncate_all(engine)


def _field(page: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match, f"no {name} field"
    return match.group(1).replace("&amp;", "&")


def _signed_in_at_the_rp(deployment: Deployment) -> requests.Session:
    """A browser that signed in to the relying party through authserver (and consented)."""
    browser = requests.Session()
    login = browser.get(deployment.rp + "/login", timeout=TIMEOUT)
    assert login.url.startswith(deployment.issuer + "/login"), login.url
    consent = browser.post(
        deployment.issuer + "/login",
        data={
            "email": EMAIL,
            "password": PASSWORD,
            "csrf_token": _field(login.text, "csrf_token"),
            "next": _field(login.text, "next"),
        },
        timeout=TIMEOUT,
    )
    home = consent
    if consent.url.startswith(deployment.issuer):  # asked once per client, then remembered
        home = browser.post(
            consent.url,
            data={"csrf_token": _field(consent.text, "csrf_token"), "decision": "allow"},
            timeout=TIMEOUT,
        )
    assert f"Signed in as {EMAIL}" in home.text, home.text
    return browser


def _signed_in(browser: requests.Session, deployment: Deployment) -> bool:
    return 'id="who"' in browser.get(deployment.rp + "/", timeout=TIMEOUT).text


def _session_ids(deployment: Deployment) -> list[str]:
    with db.transaction(deployment.authserver) as session:
        query = select(BrowserSession.id).order_by(BrowserSession.created_at)
        return [str(i) for i in session.scalars(query)]


def test_signing_out_at_authserver_signs_the_user_out_of_the_app(deployment: Deployment) -> None:
    browser = _signed_in_at_the_rp(deployment)

    page = browser.get(deployment.issuer + "/logout", timeout=TIMEOUT)
    signed_out = browser.post(
        deployment.issuer + "/logout",
        data={"csrf_token": _field(page.text, "csrf_token")},
        timeout=TIMEOUT,
    )
    assert signed_out.status_code == 200  # the "signed out" page, after the redirect

    wait_until(lambda: not _signed_in(browser, deployment), "the app to sign the user out")


def test_signing_another_browser_out_leaves_this_one_signed_in_to_the_app(
    deployment: Deployment,
) -> None:
    browser = _signed_in_at_the_rp(deployment)
    other = _signed_in_at_the_rp(deployment)
    this_session, other_session = _session_ids(deployment)

    # The user signs the other browser out from this one's account page.
    page = browser.get(deployment.issuer + "/account", timeout=TIMEOUT)
    browser.post(
        f"{deployment.issuer}/account/devices/{other_session}/sign-out",
        data={"csrf_token": _field(page.text, "csrf_token")},
        timeout=TIMEOUT,
    )

    wait_until(lambda: not _signed_in(other, deployment), "the app to sign the other out")
    assert _signed_in(browser, deployment)
    assert this_session != other_session


# -- tokens the relying party refuses --------------------------------------------------------


@dataclass(frozen=True)
class FromNow:
    """A time claim this many seconds from when the token is made: not from when the module
    was read, which on a busy machine can be longer before the test than the offset."""

    seconds: int


def _logout_token(
    deployment: Deployment,
    *,
    header: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    key: Any = None,
    **claims: Any,
) -> str:
    signing = runtime(deployment.authserver).keys.snapshot().signing
    assert signing is not None
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": deployment.issuer,
        "aud": deployment.client_id,
        "iat": now,
        "exp": now + 120,
        "jti": uuid.uuid4().hex,
        "events": {LOGOUT_EVENT: {}},
        "sid": _session_ids(deployment)[-1],
        "sub": str(uuid.uuid4()),
        **{k: now + v.seconds if isinstance(v, FromNow) else v for k, v in claims.items()},
    }
    for name in drop:
        body.pop(name)
    protected = {"typ": "logout+jwt", "alg": signing.algorithm, "kid": signing.kid}
    for name, value in (header or {}).items():
        if value is None:
            protected.pop(name)
        else:
            protected[name] = value
    return jwt.encode(protected, body, key or signing.private_key, algorithms=[signing.algorithm])


def _post(deployment: Deployment, token: str) -> requests.Response:
    return requests.post(
        deployment.rp + "/backchannel-logout", data={"logout_token": token}, timeout=TIMEOUT
    )


REFUSED = {
    "typed as an ID token": {"header": {"typ": "JWT"}},
    "typed as an access token": {"header": {"typ": "at+jwt"}},
    "untyped": {"header": {"typ": None}},  # None: the member is left out
    "with a nonce": {"nonce": "n-0S6_WzA2Mj"},
    "without events": {"drop": ("events",)},
    "with another event": {"events": {"https://example.test/other": {}}},
    "with an event that is no object": {"events": {LOGOUT_EVENT: "yes"}},
    "for another client": {"aud": "someone-else"},
    "from another issuer": {"iss": "https://evil.example.test"},
    "issued ten minutes ago": {"iat": FromNow(-600)},
    "issued in the future": {"iat": FromNow(600)},
    "expired": {"exp": FromNow(-120)},
    "without exp": {"drop": ("exp",)},
    "naming neither session nor user": {"drop": ("sid", "sub")},
    "without jti": {"drop": ("jti",)},
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_a_logout_token_failing_a_check_is_refused_and_signs_nobody_out(
    deployment: Deployment, case: str
) -> None:
    browser = _signed_in_at_the_rp(deployment)
    token = _logout_token(deployment, **REFUSED[case])

    answer = _post(deployment, token)

    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"
    assert answer.headers["Cache-Control"] == "no-store"
    assert _signed_in(browser, deployment)


@pytest.mark.parametrize(
    "token",
    ["", "not-a-jwt", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzaWQiOiJ4In0."],
    ids=["empty", "garbage", "three-dots", "alg-none"],
)
def test_what_is_not_a_signed_token_is_refused(deployment: Deployment, token: str) -> None:
    browser = _signed_in_at_the_rp(deployment)

    assert _post(deployment, token).status_code == 400
    assert _signed_in(browser, deployment)


def test_a_token_signed_by_another_key_under_the_issuers_kid_is_refused(
    deployment: Deployment,
) -> None:
    browser = _signed_in_at_the_rp(deployment)

    forged = _logout_token(deployment, key=ECKey.generate_key("P-256"))

    assert _post(deployment, forged).status_code == 400
    assert _signed_in(browser, deployment)


def test_a_valid_token_signs_that_session_out_and_its_repeat_does_nothing_more(
    deployment: Deployment,
) -> None:
    browser = _signed_in_at_the_rp(deployment)
    jti = uuid.uuid4().hex
    first = _post(deployment, _logout_token(deployment, jti=jti))
    assert first.status_code == 200
    assert first.headers["Cache-Control"] == "no-store"
    assert not _signed_in(browser, deployment)

    # Signed in again (a new sid); the same jti, now naming the new session, is the same
    # logout again: acknowledged, not acted on.
    again = _signed_in_at_the_rp(deployment)
    repeat = _post(deployment, _logout_token(deployment, jti=jti))

    assert repeat.status_code == 200
    assert _signed_in(again, deployment)


def test_a_token_with_only_a_subject_signs_out_every_session_of_that_user(
    deployment: Deployment,
) -> None:
    browser = _signed_in_at_the_rp(deployment)
    with db.transaction(deployment.authserver) as session:
        (user_id,) = session.scalars(select(BrowserSession.user_id)).all()

    answer = _post(deployment, _logout_token(deployment, drop=("sid",), sub=str(user_id)))

    assert answer.status_code == 200
    assert not _signed_in(browser, deployment)


# -- the app's own pages ----------------------------------------------------------------------


def test_a_callback_this_browser_did_not_start_is_a_page_with_a_way_to_start_again(
    deployment: Deployment,
) -> None:
    browser = requests.Session()
    browser.get(deployment.rp + "/login", timeout=TIMEOUT)  # a sign-in begun, state kept

    forged = browser.get(
        deployment.rp + "/callback",
        params={"state": "not-the-one", "code": "stolen", "iss": deployment.issuer},
        timeout=TIMEOUT,
    )

    assert forged.status_code == 400
    assert forged.headers["Content-Type"].startswith("text/html")
    assert "<h1>This sign-in has expired</h1>" in forged.text
    assert '<a id="start-again" class="button" href="/login">Start again</a>' in forged.text
    assert "mismatch" not in forged.text
    assert not _signed_in(browser, deployment)


def test_a_finished_sign_in_replayed_from_history_is_refused_with_a_way_forward(
    deployment: Deployment,
) -> None:
    browser = _signed_in_at_the_rp(deployment)
    fresh = requests.Session()

    # Another browser (no state of its own) follows a callback URL with a real-looking state.
    replayed = fresh.get(
        deployment.rp + "/callback",
        params={"state": "x", "code": "y", "iss": deployment.issuer},
        timeout=TIMEOUT,
    )

    assert replayed.status_code == 400
    assert 'id="start-again"' in replayed.text
    assert _signed_in(browser, deployment)
    assert not _signed_in(fresh, deployment)


def test_the_signed_in_home_page_names_the_user_and_offers_sign_out(
    deployment: Deployment,
) -> None:
    home = _signed_in_at_the_rp(deployment).get(deployment.rp + "/", timeout=TIMEOUT)

    assert "<h1>Hello, ann</h1>" in home.text
    assert f'<p id="who">Signed in as {EMAIL}</p>' in home.text
    assert '<a id="sign-out" class="button quiet" href="/logout">Sign out</a>' in home.text


def test_the_app_is_used_under_one_host_name_so_the_sign_in_cookie_comes_back(
    deployment: Deployment,
) -> None:
    port = deployment.rp.rsplit(":", 1)[1]

    answer = requests.get(
        deployment.rp + "/login",
        headers={"Host": f"localhost:{port}"},
        allow_redirects=False,
        timeout=TIMEOUT,
    )

    assert answer.status_code == 302
    assert answer.headers["Location"] == deployment.rp + "/login"
