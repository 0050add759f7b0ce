"""Two server processes on one PostgreSQL behave as one server.

Each gunicorn process has its own memory (key ring, nothing else); everything else lives in
the database. A token issued by one is introspected, revoked and rotated through the other,
the revocation feed of either reports what the other revoked, a resource server polling the
feed rejects that family's unexpired access token from its first poll after the revocation,
and a key rotation reaches both. Rate-limit counts are shared through Redis under a key
prefix of the test's own (conftest's ``rate_limit_key_prefix``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import jwt as pyjwt
import pytest
import requests
from sqlalchemy import Engine, update

from authserver.app import create_app
from authserver.config import Config
from authserver.db import db
from authserver.models import Client
from authserver.resource import TokenRevoked, TokenVerifier
from tests.conftest import (
    REDIS_URL,
    gunicorn_files,
    listening_socket,
    redis_answers,
    truncate_all,
    url_of,
)
from tests.dpop_keys import DPoPKey
from tests.helpers import HANG_SECONDS, PASSWORD, make_client, make_user, wait_until

CLIENT_LIMIT = 40
# Short, so the test of a change made elsewhere does not wait the default 5 s.
CLIENT_CACHE_SECONDS = 2


pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.skipif(not redis_answers(), reason="needs Redis on 127.0.0.1:6379"),
]

AUDIENCE = "https://api.example.test"
BIN = Path(sys.executable).parent


def _wait_until_serving(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + HANG_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server at {url} exited with {process.returncode}")
        try:
            # The first request loads (or creates) the signing keys: give it time on a busy
            # machine.
            if requests.get(url + "/.well-known/jwks.json", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not start")


@dataclass(frozen=True)
class Cluster:
    issuer: str
    a: str
    b: str
    env: dict[str, str]
    app_id: str
    app_secret: str
    rs_id: str
    rs_secret: str


@pytest.fixture
def cluster(
    engine: Engine, config: Config, tmp_path: Path, rate_limit_key_prefix: str
) -> Iterator[Cluster]:
    listeners = (listening_socket(), listening_socket())
    url_a, url_b = (url_of(listener) for listener in listeners)
    issuer = url_a
    env = {
        **os.environ,
        "DATABASE_URL": config.database_url,
        "AUTHSERVER_ISSUER": issuer,
        "AUTHSERVER_DEFAULT_AUDIENCE": AUDIENCE,
        "AUTHSERVER_KEY_REFRESH_INTERVAL": "1",
        "AUTHSERVER_CLIENT_CACHE_SECONDS": str(CLIENT_CACHE_SECONDS),
        "AUTHSERVER_INSTANCE_DIR": str(tmp_path / "instance"),
        "AUTHSERVER_LOG_LEVEL": "WARNING",
        # Rate-limit counts shared through Redis, like the compose stack does.
        "AUTHSERVER_RATELIMIT_STORAGE_URI": REDIS_URL,
        "AUTHSERVER_RATELIMIT_KEY_PREFIX": rate_limit_key_prefix,
        "AUTHSERVER_RATELIMIT_TOKEN_PER_CLIENT": f"{CLIENT_LIMIT}/minute",
    }
    setup_app = create_app(replace(config, issuer=issuer))
    with db.transaction(setup_app) as session:
        make_user(setup_app, session)
        app = make_client(session)
        rs = make_client(
            session,
            name="Orders API",
            grant_types=["client_credentials"],
            first_party=False,
            served_audiences=[AUDIENCE],
        )
        credentials = (
            app.client.client_id,
            app.client_secret,
            rs.client.client_id,
            rs.client_secret,
        )
    db.state(setup_app).engine.dispose()
    servers = []
    for n, listener in enumerate(listeners):
        # gunicorn serves on the socket bound here (fd://): the port is never free between.
        servers.append(
            subprocess.Popen(
                [
                    str(BIN / "gunicorn"),
                    "authserver:create_app()",
                    "-b",
                    f"fd://{listener.fileno()}",
                    "-w",
                    "1",
                    "--threads",
                    "4",
                ],
                env={**env, **gunicorn_files(tmp_path / f"server-{n}")},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(listener.fileno(),),
            )
        )
        listener.close()
    try:
        for url, process in zip((url_a, url_b), servers, strict=True):
            _wait_until_serving(url, process)
        app_id, app_secret, rs_id, rs_secret = credentials
        assert app_secret is not None
        assert rs_secret is not None
        yield Cluster(
            issuer=issuer,
            a=url_a,
            b=url_b,
            env=env,
            app_id=app_id,
            app_secret=app_secret,
            rs_id=rs_id,
            rs_secret=rs_secret,
        )
    finally:
        for process in servers:
            process.terminate()
        for process in servers:
            process.wait(timeout=HANG_SECONDS)
        truncate_all(engine)


def _login(http: requests.Session, cluster: Cluster, server: str) -> dict[str, str]:
    response = http.post(
        server + "/oauth/token",
        data={"grant_type": "password", "username": "ann@example.com", "password": PASSWORD},
        auth=(cluster.app_id, cluster.app_secret),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, str] = response.json()
    return tokens


def _introspect(http: requests.Session, cluster: Cluster, server: str, token: str) -> bool:
    response = http.post(
        server + "/oauth/introspect",
        data={"token": token},
        auth=(cluster.rs_id, cluster.rs_secret),
        timeout=10,
    )
    assert response.status_code == 200
    return bool(response.json()["active"])


def test_a_token_from_one_server_is_introspected_rotated_and_revoked_through_the_other(
    cluster: Cluster,
) -> None:
    with requests.Session() as http:
        tokens = _login(http, cluster, cluster.a)
        assert _introspect(http, cluster, cluster.b, tokens["access_token"])

        rotated = http.post(
            cluster.b + "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            auth=(cluster.app_id, cluster.app_secret),
            timeout=10,
        ).json()
        assert "refresh_token" in rotated
        revoked = http.post(
            cluster.a + "/oauth/revoke",
            data={"token": rotated["refresh_token"]},
            auth=(cluster.app_id, cluster.app_secret),
            timeout=10,
        )

        assert revoked.status_code == 200
        assert not _introspect(http, cluster, cluster.b, rotated["access_token"])
        assert not _introspect(http, cluster, cluster.a, tokens["access_token"])


def test_a_dpop_proof_accepted_by_one_server_is_refused_by_the_other(cluster: Cluster) -> None:
    # RFC 9449 §11.1: the replay store is the database, shared by every process.
    key = DPoPKey()
    proof = key.proof("POST", cluster.issuer + "/oauth/token")
    answers = [
        requests.post(
            server + "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(cluster.rs_id, cluster.rs_secret),
            headers={"DPoP": proof},
            timeout=10,
        )
        for server in (cluster.a, cluster.b)
    ]

    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json()["token_type"] == "DPoP"
    assert answers[1].status_code == 400
    assert answers[1].json()["error"] == "invalid_dpop_proof"


def test_the_feed_of_either_server_reports_a_family_revoked_on_the_other(
    cluster: Cluster,
) -> None:
    with requests.Session() as http:
        tokens = _login(http, cluster, cluster.a)
        http.post(
            cluster.b + "/oauth/revoke",
            data={"token": tokens["refresh_token"]},
            auth=(cluster.app_id, cluster.app_secret),
            timeout=10,
        )
        feeds = [
            http.get(
                server + "/oauth/revocations", auth=(cluster.rs_id, cluster.rs_secret), timeout=10
            ).json()
            for server in (cluster.a, cluster.b)
        ]

    verifier = TokenVerifier(cluster.issuer, AUDIENCE)
    sid = verifier.verify(tokens["access_token"]).session_id
    for feed in feeds:
        assert {"type": "sid", "value": sid} in [
            {"type": e["type"], "value": e["value"]} for e in feed["entries"]
        ]


def test_a_verifier_polling_the_feed_rejects_a_family_revoked_on_the_other_server(
    cluster: Cluster,
) -> None:
    poll_interval = 0.5
    with (
        requests.Session() as http,
        TokenVerifier(
            cluster.issuer,
            AUDIENCE,
            revocation_feed=True,
            client_id=cluster.rs_id,
            client_secret=cluster.rs_secret,
            poll_interval=poll_interval,
        ) as verifier,
    ):
        tokens = _login(http, cluster, cluster.a)
        verifier.verify(tokens["access_token"])  # accepted, and the poller is running

        http.post(
            cluster.b + "/oauth/revoke",
            data={"token": tokens["refresh_token"]},
            auth=(cluster.app_id, cluster.app_secret),
            timeout=10,
        )
        revoked_at = time.time()  # the verifier's clock
        # The first poll that starts after the revocation must bring it. A poll notes when its
        # answer came (last_success); the second answer after revoked_at belongs to a poll
        # that started after it. How long the polls took is not the question.
        answers_since: set[float] = set()

        def second_poll_answered() -> bool:
            state = verifier.revocation_state
            if state is not None and state.last_success and state.last_success > revoked_at:
                answers_since.add(state.last_success)
            return len(answers_since) >= 2

        wait_until(second_poll_answered, "two revocation-feed polls after the revocation")
        with pytest.raises(TokenRevoked):
            verifier.verify(tokens["access_token"])


def _client_credentials(http: requests.Session, cluster: Cluster, server: str) -> int:
    response = http.post(
        server + "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(cluster.rs_id, cluster.rs_secret),
        timeout=10,
    )
    return response.status_code


def test_a_client_disabled_in_the_database_is_refused_by_both_within_the_cache_time(
    cluster: Cluster, engine: Engine
) -> None:
    """Each server keeps client rows in memory for AUTHSERVER_CLIENT_CACHE_SECONDS: a change
    made elsewhere (here, straight in the database) reaches both within that time."""
    with requests.Session() as http:
        assert [_client_credentials(http, cluster, s) for s in (cluster.a, cluster.b)] == [
            200,
            200,
        ]
        with engine.begin() as conn:
            conn.execute(
                update(Client).where(Client.client_id == cluster.rs_id).values(disabled=True)
            )
        # What the setting promises: a request that starts CLIENT_CACHE_SECONDS after the
        # change is answered from the database. Waiting that long is a lower bound that a busy
        # machine can only lengthen; the test is judged on the answers, not on their timing.
        time.sleep(CLIENT_CACHE_SECONDS)
        refused = [_client_credentials(http, cluster, s) for s in (cluster.a, cluster.b)]

    assert refused == [401, 401]


def test_a_key_rotation_reaches_both_servers_and_old_tokens_still_verify(
    cluster: Cluster,
) -> None:
    with requests.Session() as http:
        before = _login(http, cluster, cluster.a)["access_token"]
        rotation = subprocess.run(
            [str(BIN / "authserver"), "keys", "rotate", "--immediately"],
            env=cluster.env,
            capture_output=True,
            text=True,
            check=True,
        )
        new_kid = rotation.stdout.split("new current key ")[1].split()[0]
        # Each server re-reads its keys every second (AUTHSERVER_KEY_REFRESH_INTERVAL=1).
        time.sleep(2.5)
        after = {
            server: _login(http, cluster, server)["access_token"]
            for server in (cluster.a, cluster.b)
        }

    verifier = TokenVerifier(cluster.issuer, AUDIENCE, min_refetch_interval=0)
    for token in after.values():
        assert pyjwt.get_unverified_header(token)["kid"] == new_kid
        verifier.verify(token)
    verifier.verify(before)


def test_a_mixed_workload_across_both_servers_stays_consistent(cluster: Cluster) -> None:
    servers = (cluster.a, cluster.b)
    with requests.Session() as http:
        tokens = _login(http, cluster, cluster.a)
        seen = {tokens["refresh_token"]}
        for n in range(8):  # refresh alternating between the servers
            answer = http.post(
                servers[n % 2] + "/oauth/token",
                data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                auth=(cluster.app_id, cluster.app_secret),
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            tokens = answer.json()
            assert tokens["refresh_token"] not in seen
            seen.add(tokens["refresh_token"])
            assert _introspect(http, cluster, servers[(n + 1) % 2], tokens["access_token"])
        other = _login(http, cluster, cluster.b)
        http.post(
            cluster.b + "/oauth/revoke",
            data={"token": tokens["refresh_token"]},
            auth=(cluster.app_id, cluster.app_secret),
            timeout=10,
        )

        assert not _introspect(http, cluster, cluster.a, tokens["access_token"])
        assert _introspect(http, cluster, cluster.a, other["access_token"])  # another family


def test_rate_limit_counts_are_shared_through_redis(cluster: Cluster) -> None:
    statuses = []
    with requests.Session() as http:
        for n in range(CLIENT_LIMIT + 5):
            statuses.append(
                http.post(
                    (cluster.a, cluster.b)[n % 2] + "/oauth/introspect",
                    data={"token": "x"},
                    auth=(cluster.rs_id, cluster.rs_secret),
                    timeout=10,
                ).status_code
            )
        token_statuses = [
            http.post(
                (cluster.a, cluster.b)[n % 2] + "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(cluster.rs_id, cluster.rs_secret),
                timeout=10,
            ).status_code
            for n in range(CLIENT_LIMIT + 5)
        ]

    assert 500 not in statuses
    # Each server alone would allow CLIENT_LIMIT; together they allow CLIENT_LIMIT in all.
    assert token_statuses.count(200) == CLIENT_LIMIT
    assert token_statuses.count(429) == 5
