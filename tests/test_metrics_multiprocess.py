"""/metrics adds up every gunicorn worker's numbers (prometheus-client multiprocess mode)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import Engine

from authserver.config import Config
from tests.conftest import free_port, truncate_all

BIN = Path(sys.executable).parent
METRICS_TOKEN = "scraper-token-for-the-multiprocess-test-0123"


def _jwks_requests(metrics: str) -> float:
    pattern = re.compile(
        r'^authserver_http_requests_total\{[^}]*endpoint="wellknown\.jwks"[^}]*status="200"[^}]*\}'
        r" ([0-9.e+]+)$",
        re.MULTILINE,
    )
    return sum(float(value) for value in pattern.findall(metrics))


@pytest.mark.postgres_only
def test_metrics_count_the_requests_of_every_worker(
    engine: Engine, config: Config, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
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
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "2",
        "GUNICORN_THREADS": "1",
    }
    log = (tmp_path / "gunicorn.log").open("wb")
    server = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "authserver:create_app()"],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 30
        with requests.Session() as http:
            while time.monotonic() < deadline:
                try:
                    if http.get(url + "/healthz", timeout=5).status_code == 200:
                        break
                except requests.RequestException:
                    time.sleep(0.2)
            # Separate connections, so both workers serve some of them.
            for _ in range(20):
                with requests.Session() as one_off:
                    answer = one_off.get(url + "/.well-known/jwks.json", timeout=5)
                    assert answer.ok, (tmp_path / "gunicorn.log").read_text()[-3000:]
            metrics = http.get(
                url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=5
            ).text
        workers_with_samples = len(list(metrics_dir.glob("counter_*.db")))
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
        truncate_all(engine)

    assert _jwks_requests(metrics) == 20
    assert workers_with_samples == 2
