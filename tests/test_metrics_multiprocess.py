"""/metrics adds up every gunicorn worker's numbers (prometheus-client multiprocess mode)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Engine

from authserver.config import Config
from tests.conftest import gunicorn_files, listening_socket, truncate_all, url_of
from tests.helpers import HANG_SECONDS, wait_until

BIN = Path(sys.executable).parent
METRICS_TOKEN = "scraper-token-for-the-multiprocess-test-0123"


def _jwks_requests(metrics: str) -> float:
    pattern = re.compile(
        r'^authserver_http_requests_total\{[^}]*endpoint="wellknown\.jwks"[^}]*status="200"[^}]*\}'
        r" ([0-9.e+]+)$",
        re.MULTILINE,
    )
    return sum(float(value) for value in pattern.findall(metrics))


def _jwks_requests_per_worker(metrics_dir: Path, scratch: Path) -> list[float]:
    """What each worker counted, read from its own file of the multiprocess folder alone."""
    counts = []
    for file in sorted(metrics_dir.glob("counter_*.db")):
        alone = scratch / file.stem
        alone.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, alone / file.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        counts.append(_jwks_requests(generate_latest(registry).decode()))
    return counts


@pytest.mark.postgres_only
def test_metrics_count_the_requests_of_every_worker(
    engine: Engine, config: Config, tmp_path: Path
) -> None:
    listener = listening_socket()
    url = url_of(listener)
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": config.database_url,
        "AUTHSERVER_ISSUER": url,
        "AUTHSERVER_INSTANCE_DIR": str(tmp_path / "instance"),
        "AUTHSERVER_LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "AUTHSERVER_METRICS_TOKEN": METRICS_TOKEN,
        # gunicorn serves on the socket bound here: the port is never free between.
        "GUNICORN_BIND": f"fd://{listener.fileno()}",
        "GUNICORN_WORKERS": "2",
        "GUNICORN_THREADS": "1",
        **gunicorn_files(tmp_path),
    }
    log = (tmp_path / "gunicorn.log").open("wb")
    with listener:
        server = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "authserver:create_app()"],
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
            stdout=subprocess.DEVNULL,
            stderr=log,
            pass_fds=(listener.fileno(),),
        )
    sent = 0

    def served_by_both_workers() -> bool:
        """One more JWKS request on a connection of its own; whether both workers have served
        some (which worker takes a connection is the kernel's choice, and on a busy machine
        one may take many in a row)."""
        nonlocal sent
        with requests.Session() as one_off:
            answer = one_off.get(url + "/.well-known/jwks.json", timeout=30)
            assert answer.ok, (tmp_path / "gunicorn.log").read_text()[-3000:]
        sent += 1
        per_worker = _jwks_requests_per_worker(metrics_dir, tmp_path / "alone")
        return sent >= 20 and len([n for n in per_worker if n > 0]) == 2

    try:
        with requests.Session() as http:

            def serving() -> bool:
                assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()[-3000:]
                try:
                    return http.get(url + "/healthz", timeout=30).status_code == 200
                except requests.RequestException:
                    return False

            wait_until(serving, "gunicorn to answer")
            wait_until(served_by_both_workers, "both workers to serve JWKS requests")
            metrics = http.get(
                url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30
            ).text
    finally:
        server.terminate()
        server.wait(timeout=HANG_SECONDS)
        log.close()
        truncate_all(engine)

    assert _jwks_requests(metrics) == sent
