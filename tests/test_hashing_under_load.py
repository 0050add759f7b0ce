"""A burst of sign-ins: hashing is bounded, the excess waits briefly or gets 503."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import requests

from authserver.config import Config
from authserver.db import db
from authserver.runtime import runtime
from authserver.services.passwords import HashingBusy, PasswordHasher
from tests.conftest import LiveServer
from tests.helpers import PASSWORD, make_client, make_user

SIGN_INS = 50


@pytest.fixture
def config(config: Config) -> Config:
    return replace(
        config,
        ratelimit_token="10000/minute",
        ratelimit_token_per_client="10000/minute",
        ratelimit_signin_per_account="10000/minute",
        hash_concurrency=2,
    )


def test_fifty_concurrent_sign_ins_never_hash_more_than_the_bound_at_once(
    live_server: LiveServer,
) -> None:
    app = live_server.app
    with db.transaction(app) as session:
        registered = make_client(session)
        for n in range(SIGN_INS):
            make_user(app, session, email=f"user{n}@example.com")
    auth = (registered.client.client_id, registered.client_secret or "")
    hasher = runtime(app).hasher
    hasher.peak_in_flight = 0
    barrier = threading.Barrier(SIGN_INS)
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def sign_in(n: int) -> None:
        with requests.Session() as http:
            barrier.wait()
            answer = http.post(
                live_server.url + "/oauth/token",
                data={
                    "grant_type": "password",
                    "username": f"user{n}@example.com",
                    "password": PASSWORD,
                },
                auth=auth,
                timeout=60,
            )
            with lock:
                answers.append(answer)

    threads = [threading.Thread(target=sign_in, args=(n,)) for n in range(SIGN_INS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    statuses = [a.status_code for a in answers]
    assert len(statuses) == SIGN_INS
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) > 0
    for answer in answers:
        if answer.status_code == 503:
            assert answer.json()["error"] == "temporarily_unavailable"
            assert int(answer.headers["Retry-After"]) > 0
    assert 1 <= hasher.peak_in_flight <= 2


def test_a_hash_that_cannot_get_a_slot_in_time_is_refused_not_queued_forever() -> None:
    hasher = PasswordHasher(
        time_cost=2,
        memory_cost_kib=19 * 1024,
        parallelism=1,
        max_bytes=1024,
        concurrency=1,
        queue_timeout=0.1,
    )
    digest = hasher.hash(PASSWORD)
    hasher._slots.acquire()  # another sign-in holds the only slot
    try:
        with pytest.raises(HashingBusy):
            hasher.verify(digest, PASSWORD)
    finally:
        hasher._slots.release()

    assert hasher.verify(digest, PASSWORD) is True
