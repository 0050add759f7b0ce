"""Liveness, readiness and metrics for the platform that runs authserver."""

from __future__ import annotations

import hmac
import os
import time

from flask import Blueprint, Flask, Response, abort, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from sqlalchemy import Engine, text
from sqlalchemy.pool import QueuePool

from authserver.db import Database, db, discard_request_session
from authserver.errors import error_response
from authserver.metrics import LATENCY, POOL_IN_USE, REQUESTS, forget_dead_workers
from authserver.runtime import runtime

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is alive and answering; says nothing about its dependencies."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready for traffic: the database answers and the signing keys are loaded."""
    checks: dict[str, str] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:
        # Any failure means not ready; the reason is for the logs, not for callers.
        discard_request_session()
        checks["database"] = "unavailable"
    try:
        checks["signing_key"] = "ok" if runtime().keys.snapshot().signing else "missing"
    except Exception:
        checks["signing_key"] = "unavailable"
    ready = all(state == "ok" for state in checks.values())
    response = jsonify(status="ready" if ready else "not_ready", checks=checks)
    response.headers["Cache-Control"] = "no-store"
    return response, 200 if ready else 503


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text for a scraper that presents AUTHSERVER_METRICS_TOKEN as a bearer token
    (Prometheus ``authorization: {credentials_file: ...}``). Without the setting there are no
    metrics here (404): counts of failed sign-ins and reuse detections tell an attacker how
    their attempt is going, so they are never public."""
    expected = runtime().config.metrics_token
    if not expected:
        abort(404)
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), expected.encode()
    ):
        return error_response(
            "invalid_token",
            "The scraper's bearer token is required.",
            401,
            {"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return metrics_response(Database.state().engine)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    # The endpoint name, never the raw path: paths carry ids and would explode the labels.
    endpoint = request.endpoint or "unknown"
    if started is not None:
        LATENCY.labels(endpoint).observe(time.perf_counter() - started)
    REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
    return response


def metrics_response(engine: Engine) -> Response:
    pool = engine.pool
    if isinstance(pool, QueuePool):
        POOL_IN_USE.set(pool.checkedout())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest()
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


def init_metrics(app: Flask) -> None:
    forget_dead_workers()
    app.before_request(_start_timer)
    app.after_request(_observe)
