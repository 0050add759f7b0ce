"""The revocation feed's cursor never passes an entry a poller has not had.

Revocations are committed here for real (``committed_app``, real servers), since what is
tested is what one transaction sees of another's. On PostgreSQL the cursor counts
transactions (``authserver/services/revocations.py``, ``_feed_position``): an entry whose
transaction commits after a later one's still reaches the poller, perhaps twice, never not at
all. The tests that need the cursor to pass an entry wait for it: a transaction anywhere in the
cluster (another test worker, another suite on the same server) holds it back while it runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select
from werkzeug.test import TestResponse

from authserver.app import create_app
from authserver.config import Config
from authserver.db import db, utcnow
from authserver.models import Revocation
from authserver.resource.revocation_feed import RevocationFeed
from authserver.resource.transport import HttpCall, HttpResponse, make_urllib_http
from authserver.runtime import runtime
from authserver.services.clients import RegisteredClient
from authserver.services.refresh_tokens import start_family
from authserver.services.revocations import TXID_CURSOR_BASE, denylist_access_token
from tests.conftest import listening_socket, serving, truncate_all, url_of
from tests.helpers import basic_auth, make_client, make_resource_server, make_user, wait_until

FEED = "/oauth/revocations"
HOUR = timedelta(hours=1)


def _feed(
    http: FlaskClient, rs: RegisteredClient, since: int | None = None, etag: str | None = None
) -> TestResponse:
    query = {} if since is None else {"since": str(since)}
    headers = basic_auth(rs)
    if etag is not None:
        headers["If-None-Match"] = etag
    return http.get(FEED, query_string=query, headers=headers)


def _jtis(answer: TestResponse) -> list[str]:
    return [e["value"] for e in answer.json["entries"] if e["type"] == "jti"]


def _denylist(app: Flask, jti: str) -> None:
    """One revocation, committed in a transaction of its own."""
    with db.transaction(app) as session:
        denylist_access_token(session, jti, utcnow() + HOUR, utcnow())


@pytest.fixture
def resource_server(committed_app: Flask) -> RegisteredClient:
    with db.transaction(committed_app) as session:
        return make_resource_server(session)


def _settled_cursor(http: FlaskClient, rs: RegisteredClient) -> int:
    """A cursor whose page is empty: every entry so far is behind it."""
    cursor: int = _feed(http, rs).json["cursor"]

    def passed_everything() -> bool:
        nonlocal cursor
        answer = _feed(http, rs, since=cursor).json
        if answer["entries"]:
            cursor = answer["cursor"]
            return False
        return True

    wait_until(passed_everything, "a feed cursor past every entry")
    return cursor


# -- entries committed out of order ------------------------------------------------------------


@pytest.mark.postgres_only
def test_an_entry_committed_after_a_later_one_reaches_a_poller_past_the_later_one(
    committed_app: Flask, resource_server: RegisteredClient
) -> None:
    """Transaction A writes first and commits last. A cursor that counted ids was past A's
    id when A became visible, so every later poll skipped it."""
    http = committed_app.test_client()
    factory = db.state(committed_app).session_factory
    first_cursor = _feed(http, resource_server).json["cursor"]
    with factory() as a, factory() as b:
        denylist_access_token(a, "written-first", utcnow() + HOUR, utcnow())
        denylist_access_token(b, "written-second", utcnow() + HOUR, utcnow())
        b.commit()
        assert b.scalars(select(Revocation.value)).all() == ["written-second"]  # not A's yet
        while_a_runs = _feed(http, resource_server, since=first_cursor).json
        a.commit()
        ids = dict(a.execute(select(Revocation.value, Revocation.id)).all())
    assert ids["written-first"] < ids["written-second"]  # A took its id first

    after_a = _feed(http, resource_server, since=while_a_runs["cursor"])

    assert [e["value"] for e in while_a_runs["entries"]] == ["written-second"]
    assert "written-first" in _jtis(after_a)


def test_nothing_new_for_since_answers_304_naming_since(
    committed_app: Flask, resource_server: RegisteredClient
) -> None:
    http = committed_app.test_client()
    _denylist(committed_app, "token-1")
    since = _settled_cursor(http, resource_server)

    again = _feed(http, resource_server, since=since, etag=f'"{since}"')

    assert again.status_code == 304
    assert again.data == b""
    assert again.headers["ETag"] == f'"{since}"'
    assert again.headers["Cache-Control"] == "no-cache"


def test_an_entry_for_since_answers_200_though_if_none_match_names_since(
    committed_app: Flask, resource_server: RegisteredClient
) -> None:
    http = committed_app.test_client()
    _denylist(committed_app, "token-1")
    since = _settled_cursor(http, resource_server)
    _denylist(committed_app, "token-2")

    answer = _feed(http, resource_server, since=since, etag=f'"{since}"')

    assert answer.status_code == 200
    assert _jtis(answer) == ["token-2"]
    assert answer.headers["ETag"] == f'"{answer.json["cursor"]}"'


def test_if_none_match_naming_another_etag_gets_the_page(
    committed_app: Flask, resource_server: RegisteredClient
) -> None:
    http = committed_app.test_client()
    _denylist(committed_app, "token-1")
    since = _settled_cursor(http, resource_server)

    answer = _feed(http, resource_server, since=since, etag=f'"{since + 1}"')

    assert answer.status_code == 200
    assert answer.json["entries"] == []


def test_entries_behind_the_cursor_are_not_sent_again(
    committed_app: Flask, resource_server: RegisteredClient
) -> None:
    http = committed_app.test_client()
    _denylist(committed_app, "token-1")
    since = _settled_cursor(http, resource_server)
    _denylist(committed_app, "token-2")

    answer = _feed(http, resource_server, since=since)

    assert "token-1" not in _jtis(answer)


def test_a_cursor_past_the_databases_own_gets_the_full_listing(
    committed_app: Flask, resource_server: RegisteredClient
) -> None:
    """A cursor this database cannot have handed out yet (a restore, a replica further
    ahead): the full listing, with the database's own, lower, cursor, from which a poller
    starts over. Never a 304, and never an empty page that would let the poller keep it."""
    http = committed_app.test_client()
    _denylist(committed_app, "token-1")
    own = _settled_cursor(http, resource_server)
    # Far ahead: on PostgreSQL the cursor is the whole server's xmin, which other databases'
    # transactions (parallel test workers) move on; one step ahead could be passed meanwhile.
    since = own + 10**6

    answer = _feed(http, resource_server, since=since, etag=f'"{since}"')

    assert answer.status_code == 200
    assert _jtis(answer) == ["token-1"]
    assert answer.json["cursor"] < since


@pytest.mark.postgres_only
@pytest.mark.parametrize("old_cursor", [0, 1, 5, TXID_CURSOR_BASE - 1])
def test_a_cursor_from_before_the_transaction_cursor_gets_the_full_listing(
    committed_app: Flask, resource_server: RegisteredClient, old_cursor: int
) -> None:
    """Before migration 0014 the cursor was a revocations.id. Read as a transaction id it
    could stand past entries written after the upgrade; it is answered in full instead."""
    http = committed_app.test_client()
    _denylist(committed_app, "token-1")
    _settled_cursor(http, resource_server)

    answer = _feed(http, resource_server, since=old_cursor, etag=f'"{old_cursor}"')

    assert answer.status_code == 200
    assert _jtis(answer) == ["token-1"]
    assert answer.json["cursor"] > TXID_CURSOR_BASE


# -- the race the issue asks for -----------------------------------------------------------------

FAMILIES = 120
REVOKERS = 8
HTTP_TIMEOUT = 30


@dataclass(frozen=True)
class TwoServers:
    urls: tuple[str, str]
    app: Flask
    app_client: RegisteredClient
    resource_server: RegisteredClient
    refresh_tokens: list[str]


@pytest.fixture
def two_servers(engine: Engine, config: Config) -> Iterator[TwoServers]:
    """Two apps, each with its own engine and pool, on one database, behind real sockets."""
    listeners = (listening_socket(), listening_socket())
    urls = (url_of(listeners[0]), url_of(listeners[1]))
    # Rate limits are not what this is about; 120 revocations from one address would meet them.
    apps = [create_app(replace(config, issuer=urls[0], ratelimit_enabled=0)) for _ in urls]
    with db.transaction(apps[0]) as session:
        user = make_user(apps[0], session)
        app_client = make_client(session)
        resource_server = make_resource_server(session)
        policy = runtime(apps[0]).refresh_policy(app_client.client)
        tokens = [
            start_family(
                session,
                user=user,
                client=app_client.client,
                scope="read write",
                audience="https://api.example.test",
                policy=policy,
                now=utcnow(),
            ).token
            for _ in range(FAMILIES)
        ]
    try:
        with serving(apps[0], listeners[0]), serving(apps[1], listeners[1]):
            yield TwoServers(urls, apps[0], app_client, resource_server, tokens)
    finally:
        for app in apps:
            db.state(app).engine.dispose()
        truncate_all(engine)


class RecordingTransport:
    """The kit's HTTP, sent to the two servers in turn, recording every entry it brings and
    which polls have answered."""

    def __init__(self, urls: tuple[str, str]) -> None:
        self._urls = urls
        self._http: HttpCall = make_urllib_http(timeout=HTTP_TIMEOUT)
        self._lock = threading.Lock()
        self.started = 0  # polls sent so far; the next one has this sequence number
        self.received: Counter[str] = Counter()
        self.answered: list[int] = []  # sequence numbers of the polls answered 200 or 304

    def __call__(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> HttpResponse:
        with self._lock:
            seq = self.started
            self.started += 1
        server = self._urls[seq % 2]
        status, response_headers, content = self._http(
            method, url.replace(self._urls[0], server, 1), headers, body
        )
        with self._lock:
            if status == 200:
                for entry in json.loads(content)["entries"]:
                    if entry["type"] == "sid":
                        self.received[entry["value"]] += 1
            if status in (200, 304):
                self.answered.append(seq)
        return status, response_headers, content


def _revoke_all(cluster: TwoServers, tokens: list[str], server: int) -> list[int]:
    statuses = []
    with requests.Session() as http:
        for n, token in enumerate(tokens):
            response = http.post(
                cluster.urls[(server + n) % 2] + "/oauth/revoke",
                data={"token": token, "token_type_hint": "refresh_token"},
                headers=basic_auth(cluster.app_client),
                timeout=HTTP_TIMEOUT,
            )
            statuses.append(response.status_code)
    return statuses


@pytest.mark.postgres_only
def test_concurrent_revokers_on_two_servers_never_lose_an_entry_to_a_poller(
    two_servers: TwoServers,
) -> None:
    """Many revokers on two servers race a poller: every committed entry reaches the poller;
    an entry may arrive twice, never not at all."""
    transport = RecordingTransport(two_servers.urls)
    feed = RevocationFeed(
        two_servers.urls[0],
        two_servers.resource_server.client.client_id,
        two_servers.resource_server.client_secret or "",
        poll_interval=3600,  # the test's thread polls, back to back
        http=transport,
        clock=time.time,
    )
    stop = threading.Event()

    def poll_until_stopped() -> None:
        while not stop.is_set():
            feed.poll()

    poller = threading.Thread(target=poll_until_stopped, name="test-feed-poller")
    poller.start()
    try:
        shares = [two_servers.refresh_tokens[n::REVOKERS] for n in range(REVOKERS)]
        results: list[list[int]] = [[] for _ in shares]

        def revoke(n: int) -> None:
            results[n] = _revoke_all(two_servers, shares[n], n)

        revokers = [threading.Thread(target=revoke, args=(n,)) for n in range(REVOKERS)]
        for thread in revokers:
            thread.start()
        for thread in revokers:
            thread.join()
        # Every revocation has committed (the answer leaves after the commit). A poll that
        # starts from here on sees all of them; its answer is all the poller still needs.
        caught_up_from = transport.started
        wait_until(
            lambda: any(seq >= caught_up_from for seq in transport.answered[:]),
            "a feed poll started after the last revocation to be answered",
        )
    finally:
        stop.set()
        poller.join()
        feed.close()

    assert [status for statuses in results for status in statuses] == [200] * FAMILIES
    with db.transaction(two_servers.app) as session:
        committed = set(session.scalars(select(Revocation.value).where(Revocation.kind == "sid")))
    assert len(committed) == FAMILIES
    assert committed - set(transport.received) == set()
    assert committed - set(feed.state.revoked_sids) == set()
    repeated = sum(1 for count in transport.received.values() if count > 1)
    print(f"{len(transport.answered)} polls answered, {repeated} entries came more than once")
