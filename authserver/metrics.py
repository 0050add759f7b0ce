"""Prometheus metrics (prometheus-client).

With several worker processes (deploy/serve.sh, or gunicorn), set ``PROMETHEUS_MULTIPROC_DIR``
to an empty directory shared by the workers (prometheus-client's multiprocess mode);
``/metrics`` then adds up every worker's numbers. Without it, each process reports its own.

Every process that imports this module while the variable is set writes its numbers there,
the CLI's commands too (a janitor or mailer container, `authserver users create` run in a
server's container): the folder is made here when it is missing, before the first metric
opens its file in it, so no command depends on the server's start-up having made it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

from authserver.process_exit import at_process_exit


def ensure_multiprocess_dir() -> None:
    """Make ``PROMETHEUS_MULTIPROC_DIR`` when it is set and missing; one line if it cannot
    be made (prometheus-client would otherwise fail with a bare FileNotFoundError at the
    first metric)."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        return
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise SystemExit(
            f"Error: PROMETHEUS_MULTIPROC_DIR={folder} is not a folder that can be made "
            f"({exc.strerror}); point it at a writable folder or unset it"
        ) from None


ensure_multiprocess_dir()

_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w*_(\d+)\.db")


def forget_dead_workers() -> None:
    """Multiprocess mode: drop the live gauges of worker processes that are gone, and of this
    one when it exits, so ``/metrics`` sums only the living. Done by the app, under any
    server (granian has no hook for a worker's death): each worker does it for the others when
    it starts (a respawned worker clears the one it replaces, even one that was killed) and
    for itself on a normal exit."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        return
    from prometheus_client import multiprocess

    for name in os.listdir(folder):
        match = _LIVE_GAUGE_FILE.fullmatch(name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            multiprocess.mark_process_dead(int(match.group(1)), folder)  # type: ignore[no-untyped-call]
    pid = os.getpid()

    def forget_this_worker() -> None:
        if os.getpid() == pid:
            multiprocess.mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]

    at_process_exit(forget_this_worker)


REQUESTS = Counter(
    "authserver_http_requests_total",
    "HTTP requests answered, by endpoint, method and status.",
    ["endpoint", "method", "status"],
)
LATENCY = Histogram(
    "authserver_http_request_duration_seconds",
    "Time to answer a request, by endpoint.",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
SECURITY_EVENTS = Counter(
    "authserver_security_events_total",
    "Audit events recorded, by type (sign-ins, failures, revocations, reuse, rate limits...).",
    ["event_type"],
)
TOKENS_ISSUED = Counter(
    "authserver_tokens_issued_total", "Access tokens issued, by grant type.", ["grant_type"]
)
REFRESH_ROTATIONS = Counter(
    "authserver_refresh_rotations_total", "Refresh tokens exchanged for their successor."
)
REUSE_DETECTED = Counter(
    "authserver_refresh_reuse_detected_total", "Refresh-token reuse detections (family revoked)."
)
REVOCATIONS = Counter(
    "authserver_families_revoked_total", "Refresh families revoked, by reason.", ["reason"]
)
FAILED_SIGNINS = Counter("authserver_signin_failures_total", "Failed sign-ins.")
RATE_LIMITED = Counter(
    "authserver_rate_limit_hits_total", "Requests refused by a rate limit.", ["endpoint"]
)
POOL_IN_USE = Gauge(
    "authserver_db_pool_connections_in_use",
    "Database connections checked out of this process's pool.",
    multiprocess_mode="livesum",
)
AUDIT_ROWS_DROPPED = Counter(
    "authserver_audit_rows_dropped_total",
    "token_issued audit rows dropped because the database stayed unreachable (their JSON log "
    "lines were written).",
)


def count_security_event(event_type: str, details: dict[str, object]) -> None:
    """Turn an audit event into the counters operators alert on."""
    SECURITY_EVENTS.labels(event_type).inc()
    if event_type == "token_issued":
        grant = str(details.get("grant_type", "unknown"))
        TOKENS_ISSUED.labels(grant).inc()
        if grant == "refresh_token":
            REFRESH_ROTATIONS.inc()
    elif event_type == "refresh_reuse_detected":
        REUSE_DETECTED.inc()
    elif event_type == "family_revoked":
        REVOCATIONS.labels(str(details.get("reason", "unknown"))).inc()
    elif event_type == "signin_failed":
        FAILED_SIGNINS.inc()
    elif event_type == "rate_limit_hit":
        RATE_LIMITED.labels(str(details.get("endpoint", "unknown"))).inc()
