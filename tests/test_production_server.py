"""The production server as shipped (deploy/serve.sh: granian, two worker processes), started
as the Dockerfile and the compose file start it: what the stack relies on besides answering.

- a graceful stop (SIGTERM) writes out the queued client_credentials audit rows;
- a rolling restart (SIGHUP) replaces every worker without refusing a request;
- ``/metrics`` adds up every worker's numbers, and forgets the live gauges of workers that
  are gone, whether they stopped or were killed;
- the access log, when turned on, never shows a query string.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from authserver.config import Config
from authserver.models import AuditEvent
from tests.conftest import free_port, truncate_all
from tests.helpers import HANG_SECONDS, make_client, wait_until

ROOT = Path(__file__).resolve().parent.parent
SERVE = ROOT / "deploy" / "serve.sh"
METRICS_TOKEN = "scraper-token-for-the-production-server-test"

pytestmark = pytest.mark.postgres_only


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    metrics_dir: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def workers(self) -> set[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return {int(pid) for pid in children.read_text().split()} if children.exists() else set()


def _start(config: Config, folder: Path, extra: dict[str, str]) -> Served:
    """deploy/serve.sh on a port that was free a moment ago; granian binds by address only,
    so a port taken in between is tried again with another."""
    metrics_dir = folder / "prometheus"
    metrics_dir.mkdir(exist_ok=True)
    for attempt in range(3):
        served = _try_start(config, folder, extra, metrics_dir, folder / f"server-{attempt}.log")
        if served is not None:
            return served
    raise AssertionError("no free port in three attempts")


def _try_start(
    config: Config, folder: Path, extra: dict[str, str], metrics_dir: Path, log: Path
) -> Served | None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DATABASE_URL": config.database_url,
        "AUTHSERVER_ISSUER": url,
        "AUTHSERVER_INSTANCE_DIR": str(folder / "instance"),
        "AUTHSERVER_LOG_LEVEL": "WARNING",
        "AUTHSERVER_METRICS_TOKEN": METRICS_TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "GRANIAN_HOST": "127.0.0.1",
        "GRANIAN_PORT": str(port),
        "GRANIAN_WORKERS": "2",
        # Respawning a worker waits this long before it stops the old one (serve.sh: 10 s);
        # the test waits on the outcome, not on this.
        "GRANIAN_RESPAWN_INTERVAL": "1",
        **extra,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(SERVE)], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    served = Served(url, process, log, metrics_dir)

    def up_or_gone() -> bool:
        if process.poll() is not None:
            return True
        try:
            return requests.get(url + "/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    wait_until(up_or_gone, "the server to answer or exit")
    if process.poll() is not None:
        assert "in use" in served.log_text(), served.log_text()[-3000:]
        return None
    # Both workers have built their app: a stop that came earlier would wait for the one
    # still starting until the kill timeout.
    wait_until(
        lambda: all(f"Started worker-{n}" in served.log_text() for n in (1, 2)),
        "both workers to start",
    )
    return served


def _stop(served: Served, sig: int = signal.SIGTERM) -> int:
    if served.process.poll() is None:
        served.process.send_signal(sig)
    return served.process.wait(timeout=HANG_SECONDS)


@pytest.fixture
def server_with(engine: Engine, config: Config, tmp_path: Path) -> Iterator[Any]:
    started: list[Served] = []

    def start(**extra: str) -> Served:
        served = _start(config, tmp_path, extra)
        started.append(served)
        return served

    yield start
    for served in started:
        if served.process.poll() is None:
            served.process.kill()
            served.process.wait(timeout=HANG_SECONDS)
    truncate_all(engine)


def _client(engine: Engine) -> tuple[str, str]:
    with Session(engine, expire_on_commit=False) as session:
        registered = make_client(session)
    return registered.client.client_id, registered.client_secret


def _client_credentials(url: str, client: tuple[str, str]) -> requests.Response:
    return requests.post(
        url + "/oauth/token", data={"grant_type": "client_credentials"}, auth=client, timeout=30
    )


def _token_rows(engine: Engine, client_id: str) -> int:
    with Session(engine) as session:
        count = session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.event_type == "token_issued", AuditEvent.client_id == client_id)
        )
    return int(count or 0)


def test_a_graceful_stop_writes_the_queued_audit_rows(engine: Engine, server_with: Any) -> None:
    client = _client(engine)
    # Far longer than the test lives: only the stop can write them.
    served = server_with(AUTHSERVER_TOKEN_AUDIT_FLUSH_MS="3600000")
    for _ in range(6):
        assert _client_credentials(served.url, client).status_code == 200
    assert _token_rows(engine, client[0]) == 0

    assert _stop(served) == 0, served.log_text()[-3000:]

    assert _token_rows(engine, client[0]) == 6
    assert list(served.metrics_dir.glob("gauge_live*")) == []


def test_a_rolling_restart_replaces_every_worker_and_the_server_goes_on(
    engine: Engine, server_with: Any
) -> None:
    """SIGHUP replaces both workers one after the other (deploy/serve.sh leaves each new one
    GRANIAN_RESPAWN_INTERVAL to start before the old one stops; this test shortens it, and
    asserts only the outcome: the new workers, and answers from them)."""
    client = _client(engine)
    served = server_with()
    before = served.workers()
    assert _client_credentials(served.url, client).status_code == 200

    served.process.send_signal(signal.SIGHUP)

    def replaced() -> bool:
        now = served.workers()
        return len(now) == 2 and not now & before and "Stopped old worker-2" in served.log_text()

    wait_until(replaced, "both workers to be replaced")
    wait_until(lambda: served.log_text().count("Started worker-") >= 4, "the new workers to start")
    for _ in range(5):
        assert _client_credentials(served.url, client).status_code == 200
    assert _stop(served) == 0


def test_metrics_add_up_the_workers_and_forget_a_killed_one(
    engine: Engine, server_with: Any
) -> None:
    served = server_with()
    auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    sent = 0

    def both_workers_served() -> bool:
        nonlocal sent
        with requests.Session() as one_off:  # a connection of its own each time
            assert one_off.get(served.url + "/.well-known/jwks.json", timeout=30).ok
        sent += 1
        return sent >= 10 and len(list(served.metrics_dir.glob("gauge_livesum_*.db"))) == 2

    wait_until(both_workers_served, "both workers to serve a request")
    metrics = requests.get(served.url + "/metrics", headers=auth, timeout=30).text
    line = next(
        x
        for x in metrics.splitlines()
        if x.startswith("authserver_http_requests_total{") and 'endpoint="wellknown.jwks"' in x
    )
    assert float(line.rsplit(" ", 1)[1]) == sent

    victim = min(served.workers())
    assert (served.metrics_dir / f"gauge_livesum_{victim}.db").exists()
    os.kill(victim, signal.SIGKILL)

    def respawned() -> bool:
        workers = served.workers()
        return len(workers) == 2 and victim not in workers

    wait_until(respawned, "the killed worker to be replaced")

    def forgotten() -> bool:
        requests.get(served.url + "/healthz", timeout=30)
        return not (served.metrics_dir / f"gauge_livesum_{victim}.db").exists()

    wait_until(forgotten, "the killed worker's live gauge to be forgotten")


def test_the_access_log_never_shows_a_query_string(engine: Engine, server_with: Any) -> None:
    """serve.sh writes no access log unless asked (GRANIAN_LOG_ACCESS_ENABLED=true); asked,
    its lines name the path alone."""
    served = server_with(GRANIAN_LOG_ACCESS_ENABLED="true")
    secret = "reset-token-that-must-not-be-logged"
    assert requests.get(served.url + f"/healthz?token={secret}", timeout=30).ok

    wait_until(lambda: '"GET /healthz"' in served.log_text(), "the access log line")
    assert secret not in served.log_text()
    assert _stop(served) == 0
