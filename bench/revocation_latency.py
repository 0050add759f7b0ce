"""`make bench-revocation`: how long a revocation takes to reach a resource server that verifies
tokens offline, by each path: the revocation feed polled by the kit, and Security Event Tokens
pushed to the kit (RFC 8935) by the server's outbox sender. Reports; never fails.

authserver runs under gunicorn (gunicorn.conf.py) on PostgreSQL, as in `make bench`. In this
process: a resource server's push endpoint (the kit's ``SecurityEventReceiver`` behind a
threaded HTTP server) and two verifiers, one that only polls the feed (every
BENCH_POLL_INTERVAL seconds, default 5, the kit's default) and one that only hears pushes (its
feed polls once at start). BENCH_REVOCATIONS users (default 300) each sign in first; then one
refresh token is revoked (RFC 7009) every BENCH_REVOCATION_GAP_MS (default 50) and a watcher
asks both verifiers about every outstanding access token every 2 ms. A revocation's latency
on a path is the time from the revocation's HTTP answer (its transaction has committed) to
the first refusal by that path's verifier.

Writes bench/results/revocation_latency.json. Traffic goes to 127.0.0.1 only; every process
started here is stopped before exit.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from run import (
    AUDIENCE,
    BIN,
    PASSWORD,
    RESULTS,
    Processes,
    Settings,
    cleanup,
    free_port,
    percentile,
    post_form,
    recreate_database,
    seed,
    server_environment,
    wait_until_serving,
)

from authserver.resource import SecurityEventReceiver, TokenVerifier

PATHS = ("feed poll", "SET push")


@dataclass
class Outstanding:
    session_id: str
    revoked_at: float
    refused_at: dict[str, float] = field(default_factory=dict)


def serve_push_endpoint(receiver: SecurityEventReceiver, port: int) -> Any:
    from werkzeug.serving import make_server

    def application(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        answer = receiver.receive_push(body, environ.get("CONTENT_TYPE"))
        start_response(f"{answer.status} -", list(answer.headers.items()))
        return [(answer.body or "").encode()]

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per push otherwise
    server = make_server("127.0.0.1", port, application, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def register(settings: Settings, env: dict[str, str], rs_client_id: str, push_url: str) -> None:
    from authserver.app import create_app
    from authserver.config import Config
    from authserver.db import db, utcnow
    from authserver.services import clients as client_service

    app = create_app(Config.from_env(env))
    logging.getLogger("authserver.audit").setLevel(logging.WARNING)
    with db.transaction(app) as session:
        client_service.set_served_audiences(session, rs_client_id, [AUDIENCE], utcnow())
        client_service.set_security_event_delivery(
            session, rs_client_id, "push", push_url, utcnow()
        )
    db.state(app).engine.dispose()


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "count": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(percentile(ordered, 99) * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def measure(processes: Processes, workdir: Path) -> dict[str, Any]:
    settings = Settings.from_env()
    settings = Settings(
        duration=settings.duration,
        connections=settings.connections,
        database_url=os.environ.get(
            "BENCH_DATABASE_URL",
            "postgresql+psycopg://postgres@127.0.0.1:5432/authserver_bench_revocation",
        ),
        gunicorn_args=settings.gunicorn_args,
        large_rows=0,
    )
    revocations = int(os.environ.get("BENCH_REVOCATIONS", "300"))
    poll_interval = float(os.environ.get("BENCH_POLL_INTERVAL", "5"))
    gap = int(os.environ.get("BENCH_REVOCATION_GAP_MS", "50")) / 1000
    RESULTS.mkdir(exist_ok=True)
    recreate_database(settings)
    port, push_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = server_environment(settings, issuer, workdir)
    seeded = seed(settings, env, revocations)
    register(settings, env, seeded.rs_client_id, f"http://127.0.0.1:{push_port}/events")
    server = processes.start(
        [
            str(BIN / "gunicorn"),
            "-c",
            "gunicorn.conf.py",
            *settings.gunicorn_args,
            "authserver:create_app()",
        ],
        {**env, "GUNICORN_BIND": f"127.0.0.1:{port}"},
        RESULTS / "revocation_latency_server.log",
    )
    wait_until_serving(issuer + "/.well-known/jwks.json", server)

    def verifier(interval: float) -> TokenVerifier:
        return TokenVerifier(
            issuer,
            AUDIENCE,
            revocation_feed=True,
            client_id=seeded.rs_client_id,
            client_secret=seeded.rs_client_secret,
            poll_interval=interval,
        )

    kits = {"feed poll": verifier(poll_interval), "SET push": verifier(3600.0)}
    push = serve_push_endpoint(
        SecurityEventReceiver(kits["SET push"], audience=seeded.rs_client_id), push_port
    )
    print(f"bench: {revocations} sign-ins ...", flush=True)
    sessions = []
    for user in range(revocations):
        tokens = post_form(
            issuer + "/oauth/token",
            {
                "grant_type": "password",
                "username": f"bench-{user}@example.test",
                "password": PASSWORD,
            },
            seeded.basic("app"),
        )
        sessions.append(tokens)
    session_ids = []
    for kit in kits.values():
        kit.start()
        session_ids = [kit.verify(tokens["access_token"]).session_id or "" for tokens in sessions]

    outstanding: list[Outstanding] = []
    lock = threading.Lock()
    done = threading.Event()

    def watch(path: str) -> None:
        # The state verify consults, read directly: a sweep costs microseconds, so the
        # measurement's resolution is the 2 ms sleep, not the time to verify every token.
        kit = kits[path]
        while not done.is_set():
            state = kit.revocation_state
            revoked = state.revoked_sids if state is not None else {}
            now = time.monotonic()
            with lock:
                for item in outstanding:
                    if path not in item.refused_at and item.session_id in revoked:
                        item.refused_at[path] = now
            time.sleep(0.002)

    watchers = [threading.Thread(target=watch, args=(path,), daemon=True) for path in PATHS]
    for watcher in watchers:
        watcher.start()
    print(f"bench: {revocations} revocations, one every {gap * 1000:.0f} ms ...", flush=True)
    for index, tokens in enumerate(sessions):
        post_form(issuer + "/oauth/revoke", {"token": tokens["refresh_token"]}, seeded.basic("app"))
        with lock:
            outstanding.append(Outstanding(session_ids[index], time.monotonic()))
        time.sleep(gap)
    deadline = time.monotonic() + poll_interval * 3 + 30
    while time.monotonic() < deadline:
        with lock:
            if all(len(o.refused_at) == len(PATHS) for o in outstanding):
                break
        time.sleep(0.05)
    done.set()
    for watcher in watchers:
        watcher.join()
    push.shutdown()
    for kit in kits.values():
        kit.close()

    report: dict[str, Any] = {
        "revocations": revocations,
        "poll_interval_s": poll_interval,
        "gap_ms": gap * 1000,
        "cores": os.cpu_count(),
    }
    for path in PATHS:
        latencies = [o.refused_at[path] - o.revoked_at for o in outstanding if path in o.refused_at]
        report[path] = summary(latencies) if latencies else {"count": 0}
        report[path]["never_arrived"] = len(outstanding) - len(latencies)
    return report


def main() -> int:
    processes = Processes()
    with tempfile.TemporaryDirectory(prefix="authserver-bench-") as tmp, cleanup(processes):
        report = measure(processes, Path(tmp))
    print(f"\n{'path':<10} {'count':>6} {'median ms':>10} {'p99 ms':>8} {'max ms':>8} {'lost':>5}")
    for path in PATHS:
        row = report[path]
        print(
            f"{path:<10} {row['count']:>6} {row.get('median_ms', '-'):>10} "
            f"{row.get('p99_ms', '-'):>8} {row.get('max_ms', '-'):>8} {row['never_arrived']:>5}"
        )
    out = RESULTS / "revocation_latency.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nbench: wrote {out.relative_to(RESULTS.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
