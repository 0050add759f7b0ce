"""Concurrent redemptions of one authorization code on a real threaded server.

RFC 6749 §4.1.2: a code is used once. When several token requests present the same code at
the same moment (a client retrying over a flaky network, or an attacker racing the client with
a stolen code), exactly one gets tokens; every other one gets ``invalid_grant``, never a 5xx.
The others are replays, so they revoke what the one winner got: its refresh family and its
access token. A request with a wrong verifier is a presentation too, so it spends the code or
replays it, whichever comes first. On SQLite this relies on BEGIN IMMEDIATE
(``authserver.db._configure_sqlite``); on PostgreSQL on the conditional UPDATE in
``services/authorization_codes.py``.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests
from sqlalchemy import func, select

from authserver.db import db
from authserver.models import AuthorizationCode, RefreshFamily
from authserver.oauth.metadata import JWKS_PATH, TOKEN_PATH
from authserver.services.clients import RegisteredClient
from tests.browser_helpers import REDIRECT_URI, authorize_url, pkce_pair, query_of
from tests.conftest import LiveServer
from tests.helpers import PASSWORD, basic_auth, make_client, make_user

BURST = 10
# Generous: on SQLite the requests take the write lock one after another.
HTTP_TIMEOUT = 30
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class IssuedCode:
    registered: RegisteredClient
    code: str
    verifier: str


def _issue_code_through_the_browser(
    live_server: LiveServer, grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
) -> IssuedCode:
    """A committed user and first-party client, and a code from a real sign-in and authorize."""
    app = live_server.app
    with db.transaction(app) as session:
        make_user(app, session)
        registered = make_client(
            session,
            name="Operator app",
            grant_types=list(grant_types),
            first_party=True,
            redirect_uris=[REDIRECT_URI],
            scopes=["openid", "email", "offline_access"],
        )
    verifier, challenge = pkce_pair()
    with requests.Session() as browser:
        with browser.get(live_server.url + "/login", timeout=HTTP_TIMEOUT) as page:
            match = CSRF_FIELD.search(page.text)
            assert match, "sign-in page has no CSRF field"
        with browser.post(
            live_server.url + "/login",
            data={
                "email": "ann@example.com",
                "password": PASSWORD,
                "csrf_token": match.group(1),
                "next": "/account",
            },
            allow_redirects=False,
            timeout=HTTP_TIMEOUT,
        ) as signed_in:
            assert signed_in.status_code == 303, signed_in.text
        with browser.get(
            live_server.url + authorize_url(registered.client.client_id, challenge),
            allow_redirects=False,
            timeout=HTTP_TIMEOUT,
        ) as authorized:
            assert authorized.status_code == 302, authorized.text
            code = query_of(authorized.headers["Location"])["code"]
    return IssuedCode(registered, code, verifier)


def _post_token(
    http: requests.Session, live_server: LiveServer, registered: RegisteredClient, **form: str
) -> Outcome:
    with http.post(
        live_server.url + TOKEN_PATH,
        data=form,
        headers=basic_auth(registered),
        timeout=HTTP_TIMEOUT,
    ) as response:
        is_json = response.headers.get("Content-Type", "").startswith("application/json")
        return Outcome(response.status_code, response.json() if is_json else {})


def _redeem_all_at_once(
    live_server: LiveServer, issued: IssuedCode, verifiers: list[str] | None = None
) -> list[Outcome]:
    """Redeem the code BURST times, each from its own thread, released together by a barrier;
    the i-th request sends ``verifiers[i]`` (the right verifier by default)."""
    barrier = threading.Barrier(BURST)

    def one(verifier: str) -> Outcome:
        with requests.Session() as http:
            # Open the keep-alive connection first, so the barrier releases requests rather
            # than TCP handshakes.
            with http.get(live_server.url + JWKS_PATH, timeout=HTTP_TIMEOUT) as warm_up:
                assert warm_up.status_code == 200
            barrier.wait(timeout=HTTP_TIMEOUT)
            return _post_token(
                http,
                live_server,
                issued.registered,
                grant_type="authorization_code",
                code=issued.code,
                redirect_uri=REDIRECT_URI,
                code_verifier=verifier,
            )

    with ThreadPoolExecutor(max_workers=BURST) as pool:
        futures = [pool.submit(one, v) for v in verifiers or [issued.verifier] * BURST]
        return [future.result() for future in futures]


def _userinfo_status(live_server: LiveServer, access_token: str) -> int:
    with requests.get(
        live_server.url + "/oauth/userinfo",
        headers={"Authorization": f"Bearer {access_token}"},
        timeout=HTTP_TIMEOUT,
    ) as response:
        return response.status_code


def _the_one_winner(outcomes: list[Outcome]) -> Outcome:
    """The one 200 of a burst; fails unless there is exactly one and the rest are refused."""
    assert [o.status for o in outcomes if o.status >= 500] == [], [o.body for o in outcomes]
    winners = [o for o in outcomes if o.status == 200]
    assert len(winners) == 1, f"{len(winners)} redemptions of one code got tokens"
    losers = [o for o in outcomes if o.status != 200]
    assert [(o.status, o.body.get("error")) for o in losers] == [(400, "invalid_grant")] * (
        BURST - 1
    )
    return winners[0]


def test_simultaneous_redemptions_of_one_code_have_exactly_one_winner(
    live_server: LiveServer,
) -> None:
    issued = _issue_code_through_the_browser(live_server)

    outcomes = _redeem_all_at_once(live_server, issued)

    winner = _the_one_winner(outcomes)
    assert winner.body["access_token"]
    assert winner.body["refresh_token"]


def test_simultaneous_redemptions_of_one_code_start_one_refresh_family(
    live_server: LiveServer,
) -> None:
    issued = _issue_code_through_the_browser(live_server)

    _the_one_winner(_redeem_all_at_once(live_server, issued))

    with db.transaction(live_server.app) as session:
        assert session.scalar(select(func.count()).select_from(RefreshFamily)) == 1
        family_id = session.scalars(select(RefreshFamily.id)).one()
        code = session.scalars(select(AuthorizationCode)).one()
        assert code.used_at is not None
        assert code.family_id == family_id


def test_losing_redemptions_revoke_the_winners_refresh_family(
    live_server: LiveServer,
) -> None:
    issued = _issue_code_through_the_browser(live_server)

    winner = _the_one_winner(_redeem_all_at_once(live_server, issued))

    # Every loser is a replay of a redeemed code (RFC 6749 §4.1.2).
    with requests.Session() as http:
        after = _post_token(
            http,
            live_server,
            issued.registered,
            grant_type="refresh_token",
            refresh_token=winner.body["refresh_token"],
        )
    assert after.status == 400
    assert after.body["error"] == "invalid_grant"
    with db.transaction(live_server.app) as session:
        assert session.scalars(select(RefreshFamily.revoked_reason)).one() == "code_replayed"


def test_losing_redemptions_deny_the_winners_access_token_when_no_family_was_started(
    live_server: LiveServer,
) -> None:
    issued = _issue_code_through_the_browser(live_server, grant_types=("authorization_code",))

    winner = _the_one_winner(_redeem_all_at_once(live_server, issued))

    assert "refresh_token" not in winner.body
    assert _userinfo_status(live_server, winner.body["access_token"]) == 401


def test_wrong_verifiers_racing_the_right_one_leave_no_token_alive(
    live_server: LiveServer,
) -> None:
    """Whichever comes first, every other request is a second presentation of the code: a
    wrong verifier first uses the code up, after a redemption it takes back the tokens."""
    issued = _issue_code_through_the_browser(live_server)
    someone_elses = "x" * 43
    verifiers = [issued.verifier if i % 2 else someone_elses for i in range(BURST)]

    outcomes = _redeem_all_at_once(live_server, issued, verifiers)

    assert [o.status for o in outcomes if o.status >= 500] == [], [o.body for o in outcomes]
    winners = [o for o in outcomes if o.status == 200]
    assert len(winners) <= 1
    assert {o.body.get("error") for o in outcomes if o.status != 200} == {"invalid_grant"}
    for winner in winners:
        assert _userinfo_status(live_server, winner.body["access_token"]) == 401
    with db.transaction(live_server.app) as session:
        assert (
            session.scalars(select(RefreshFamily).where(RefreshFamily.revoked_at.is_(None))).all()
            == []
        )
