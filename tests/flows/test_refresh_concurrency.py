"""Refresh-token rotation under concurrent requests to a real threaded server.

RFC 9700 §4.14.2: each refresh token is exchanged once. When several requests present the same
token at the same moment (two tabs, a client retrying over a flaky network), exactly one
rotation happens and every request inside the grace window gets that one successor back: the
lineage never forks and nobody is logged out. On SQLite this relies on WAL and BEGIN IMMEDIATE
(``authserver.db._configure_sqlite``); on PostgreSQL on the conditional UPDATE.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import func, select, update

from authserver.config import Config
from authserver.db import db, utcnow
from authserver.models import RefreshFamily, RefreshToken
from authserver.oauth.metadata import JWKS_PATH, TOKEN_PATH
from authserver.runtime import runtime
from authserver.services.clients import RegisteredClient
from authserver.services.refresh_tokens import digest_token, start_family
from tests.conftest import LiveServer
from tests.helpers import PASSWORD, basic_auth, make_client, make_user

BURST = 20
# Generous: on SQLite the 20 requests take the write lock one after another.
HTTP_TIMEOUT = 30


@pytest.fixture
def config(config: Config) -> Config:
    """A grace window no burst outlasts: on a busy machine the 20 requests may be served over
    many seconds, and the ones past the default 15 s would count as replays."""
    return replace(config, refresh_reuse_grace=3600)


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]


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


def _refresh(live_server: LiveServer, registered: RegisteredClient, token: str) -> Outcome:
    with requests.Session() as http:
        return _post_token(
            http,
            live_server,
            registered,
            grant_type="refresh_token",
            refresh_token=token,
        )


def _sign_in(live_server: LiveServer) -> tuple[RegisteredClient, str]:
    """A user and a first-party client, committed, and a refresh token from a real sign-in."""
    with db.transaction(live_server.app) as session:
        make_user(live_server.app, session)
        registered = make_client(session)
    with requests.Session() as http:
        outcome = _post_token(
            http,
            live_server,
            registered,
            grant_type="password",
            username="ann@example.com",
            password=PASSWORD,
        )
    assert outcome.status == 200, outcome.body
    return registered, outcome.body["refresh_token"]


def _refresh_all_at_once(
    live_server: LiveServer,
    presented: list[tuple[RegisteredClient, str]],
    extra_forms: list[dict[str, str]] | None = None,
) -> list[Outcome]:
    """POST every (client, token) pair from its own thread, released together by a barrier;
    ``extra_forms[i]`` adds fields to the i-th request."""
    barrier = threading.Barrier(len(presented))
    extras = extra_forms or [{}] * len(presented)

    def one(registered: RegisteredClient, token: str, extra: dict[str, str]) -> Outcome:
        with requests.Session() as http:
            # Open the keep-alive connection first, so the barrier releases requests rather
            # than TCP handshakes.
            with http.get(live_server.url + JWKS_PATH, timeout=HTTP_TIMEOUT) as warm_up:
                assert warm_up.status_code == 200
            barrier.wait(timeout=HTTP_TIMEOUT)
            return _post_token(
                http,
                live_server,
                registered,
                grant_type="refresh_token",
                refresh_token=token,
                **extra,
            )

    with ThreadPoolExecutor(max_workers=len(presented)) as pool:
        futures = [
            pool.submit(one, registered, token, extra)
            for (registered, token), extra in zip(presented, extras, strict=True)
        ]
        return [future.result() for future in futures]


def _the_one_successor(outcomes: list[Outcome]) -> str:
    """The refresh token every response of a burst carries; fails unless all carry the same."""
    assert [o.status for o in outcomes] == [200] * len(outcomes), [o.body for o in outcomes]
    successors = {o.body["refresh_token"] for o in outcomes}
    assert len(successors) == 1, f"the lineage forked into {len(successors)} successors"
    successor: str = successors.pop()
    return successor


def _family_of(live_server: LiveServer, token: str) -> uuid.UUID:
    with db.transaction(live_server.app) as session:
        return session.scalars(
            select(RefreshToken.family_id).where(RefreshToken.token_digest == digest_token(token))
        ).one()


def test_simultaneous_refreshes_of_one_token_all_get_the_same_successor(
    live_server: LiveServer,
) -> None:
    registered, first = _sign_in(live_server)

    outcomes = _refresh_all_at_once(live_server, [(registered, first)] * BURST)

    assert [o.status for o in outcomes if o.status >= 500] == []
    assert _the_one_successor(outcomes) != first


def test_simultaneous_refreshes_of_one_token_leave_one_unrevoked_lineage(
    live_server: LiveServer,
) -> None:
    registered, first = _sign_in(live_server)
    family_id = _family_of(live_server, first)

    outcomes = _refresh_all_at_once(live_server, [(registered, first)] * BURST)

    successor = _the_one_successor(outcomes)
    with db.transaction(live_server.app) as session:
        family = session.get(RefreshFamily, family_id)
        assert family is not None
        assert family.revoked_at is None
        tokens = session.scalars(
            select(RefreshToken).where(RefreshToken.family_id == family_id)
        ).all()
        # The original and exactly one successor: no request wrote a second child.
        assert len(tokens) == 2
        unused = [t for t in tokens if t.used_at is None]
        assert [t.token_digest for t in unused] == [digest_token(successor)]


def test_successor_from_a_simultaneous_burst_refreshes_normally(
    live_server: LiveServer,
) -> None:
    registered, first = _sign_in(live_server)
    outcomes = _refresh_all_at_once(live_server, [(registered, first)] * BURST)
    successor = _the_one_successor(outcomes)

    following = _refresh(live_server, registered, successor)

    assert following.status == 200, following.body
    assert following.body["refresh_token"] not in (first, successor)


def test_original_token_after_the_grace_window_revokes_the_family_despite_the_burst(
    live_server: LiveServer,
) -> None:
    registered, first = _sign_in(live_server)
    outcomes = _refresh_all_at_once(live_server, [(registered, first)] * BURST)
    successor = _the_one_successor(outcomes)
    grace = live_server.app.config["AUTHSERVER"].refresh_reuse_grace
    with db.transaction(live_server.app) as session:
        session.execute(
            update(RefreshToken)
            .where(RefreshToken.token_digest == digest_token(first))
            .values(used_at=utcnow() - timedelta(seconds=grace + 1))
        )

    replay = _refresh(live_server, registered, first)

    assert replay.status == 400
    assert replay.body["error"] == "invalid_grant"
    with db.transaction(live_server.app) as session:
        family = session.scalars(select(RefreshFamily)).one()
        assert family.revoked_reason == "reuse_detected"
    # The successor the burst handed out dies with its family.
    assert _refresh(live_server, registered, successor).body["error"] == "invalid_grant"


def test_wider_scopes_inside_a_burst_are_refused_without_revoking_the_family(
    live_server: LiveServer,
) -> None:
    """Whichever request claims the token, the others are retries inside the grace window:
    the plain ones get the one successor, those asking a wider scope get invalid_scope, as
    they would have before the claim, and nobody is logged out."""
    registered, first = _sign_in(live_server)
    family_id = _family_of(live_server, first)
    wider = {"scope": "read write admin"}
    extras = [wider if i % 2 else {} for i in range(BURST)]

    outcomes = _refresh_all_at_once(live_server, [(registered, first)] * BURST, extras)

    plain = [o for o, extra in zip(outcomes, extras, strict=True) if not extra]
    asking_more = [o for o, extra in zip(outcomes, extras, strict=True) if extra]
    _the_one_successor(plain)
    assert [(o.status, o.body.get("error")) for o in asking_more] == [(400, "invalid_scope")] * len(
        asking_more
    )
    with db.transaction(live_server.app) as session:
        family = session.get(RefreshFamily, family_id)
        assert family is not None
        assert family.revoked_at is None


def test_simultaneous_refreshes_of_different_families_all_rotate(
    live_server: LiveServer,
) -> None:
    app = live_server.app
    with db.transaction(app) as session:
        user = make_user(app, session)
        registered = make_client(session)
        policy = runtime(app).refresh_policy(registered.client)
        firsts = [
            start_family(
                session,
                user=user,
                client=registered.client,
                scope="read write",
                audience="https://api.example.test",
                policy=policy,
                now=utcnow(),
            ).token
            for _ in range(BURST)
        ]

    outcomes = _refresh_all_at_once(live_server, [(registered, token) for token in firsts])

    assert [o.status for o in outcomes] == [200] * BURST, [o.body for o in outcomes]
    successors = [o.body["refresh_token"] for o in outcomes]
    assert len(set(successors)) == BURST
    assert not set(successors) & set(firsts)
    with db.transaction(app) as session:
        assert session.scalar(select(func.count()).select_from(RefreshToken)) == 2 * BURST
        assert session.scalars(select(RefreshFamily.revoked_at)).all() == [None] * BURST
        for first, successor in zip(firsts, successors, strict=True):
            family_id = session.scalars(
                select(RefreshToken.family_id).where(
                    RefreshToken.token_digest == digest_token(first)
                )
            ).one()
            unused = session.scalars(
                select(RefreshToken.token_digest).where(
                    RefreshToken.family_id == family_id, RefreshToken.used_at.is_(None)
                )
            ).all()
            assert unused == [digest_token(successor)]
