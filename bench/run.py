"""`make bench`: authserver under its production server (deploy/serve.sh: granian) on
PostgreSQL, driven by wrk, against floors measured in the same run. Reports; never fails on a
missed target.

Each operation runs for BENCH_DURATION seconds (default 10) at BENCH_CONNECTIONS connections
(default 4). The database BENCH_DATABASE_URL (default authserver_bench on the local
PostgreSQL) is dropped and created again. BENCH_SERVER=gunicorn serves every app with
gunicorn.conf.py instead, and BENCH_GUNICORN_ARGS then adds gunicorn arguments (e.g.
"--worker-class sync"); deploy/serve.sh's GRANIAN_* variables tune granian. BENCH_LARGE_ROWS
(default 0, off) bulk-inserts that many expired refresh tokens, measures refresh p99 with
them in the table, then runs `authserver purge` while refreshing and reports the longest refresh.
BENCH_ROUNDS (default 1) runs the whole sequence of operations and floors that many times,
one round after another, and reports each operation's median round (by requests per second)
and each floor's and ceiling's best round: on a shared machine one 10 s run can be a third
off, and noise only ever lowers a floor.

Prints a table and writes it as JSON to bench/results/latest.json. Traffic goes to
127.0.0.1 only; every process started here is stopped before exit.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
BIN = Path(sys.executable).parent
PASSWORD = "bench horse battery staple"  # noqa: S105 (a throwaway benchmark account)
AUDIENCE = "https://api.bench.test"
WRK_TIMEOUT = "10s"
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Settings:
    duration: int
    connections: int
    database_url: str
    gunicorn_args: list[str]
    large_rows: int
    rounds: int = 1
    server: str = "granian"

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            duration=int(os.environ.get("BENCH_DURATION", "10")),
            connections=int(os.environ.get("BENCH_CONNECTIONS", "4")),
            database_url=os.environ.get(
                "BENCH_DATABASE_URL",
                "postgresql+psycopg://postgres@127.0.0.1:5432/authserver_bench",
            ),
            gunicorn_args=shlex.split(os.environ.get("BENCH_GUNICORN_ARGS", "")),
            large_rows=int(os.environ.get("BENCH_LARGE_ROWS", "0")),
            rounds=max(1, int(os.environ.get("BENCH_ROUNDS", "1"))),
            server=os.environ.get("BENCH_SERVER", "granian"),
        )

    @property
    def libpq_url(self) -> str:
        """The same database as a plain libpq URL, for psycopg without SQLAlchemy."""
        return self.database_url.replace("postgresql+psycopg://", "postgresql://", 1)


@dataclass
class Measurement:
    """One operation's throughput and latency. Latencies in milliseconds."""

    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    max_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    measurement: Measurement
    floor: Measurement | None
    target: str
    met: bool | None
    # bench/ceiling_app.py's hand-written endpoint for the same operation, if it has one.
    ceiling: Measurement | None = None

    @property
    def ratio(self) -> float | None:
        if self.floor is None or not self.floor.rps:
            return None
        return self.measurement.rps / self.floor.rps

    @property
    def of_ceiling(self) -> float | None:
        if self.ceiling is None or not self.ceiling.rps:
            return None
        return self.measurement.rps / self.ceiling.rps


# -- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Processes:
    """Everything started here, stopped in reverse order on the way out."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603 (our own executables)
                args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def stop_all(self) -> None:
        for process in reversed(self.started):
            self.stop(process)


def wait_until_serving(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url, timeout=5) as response,  # noqa: S310 (loopback)
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {START_TIMEOUT:.0f} s")


def serve(
    processes: Processes,
    settings: Settings,
    factory: str,
    env: dict[str, str],
    name: str,
    port: int | None = None,
) -> tuple[str, subprocess.Popen[bytes]]:
    """``factory`` ("module:function") served as shipped: deploy/serve.sh (granian), or
    gunicorn with gunicorn.conf.py when BENCH_SERVER=gunicorn."""
    port = port or free_port()
    if settings.server == "gunicorn":
        env = {**env, "GUNICORN_BIND": f"127.0.0.1:{port}"}
        args = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", *settings.gunicorn_args]
        args.append(f"{factory}()")
    else:
        env = {
            **env,
            "PATH": f"{BIN}:{env.get('PATH', os.environ['PATH'])}",
            "GRANIAN_HOST": "127.0.0.1",
            "GRANIAN_PORT": str(port),
        }
        args = [str(ROOT / "deploy" / "serve.sh"), factory]
    process = processes.start(args, env, RESULTS / f"{name}.log")
    return f"http://127.0.0.1:{port}", process


# -- database -------------------------------------------------------------------------------


def recreate_database(settings: Settings) -> None:
    import psycopg
    from psycopg import sql

    url = urllib.parse.urlsplit(settings.libpq_url)
    name = url.path.lstrip("/")
    admin = urllib.parse.urlunsplit(url._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    subprocess.run(  # noqa: S603
        [str(BIN / "authserver"), "db", "upgrade"],
        env={**os.environ, "DATABASE_URL": settings.database_url},
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


@dataclass(frozen=True)
class Seeded:
    app_client_id: str
    app_client_secret: str
    rs_client_id: str
    rs_client_secret: str
    user_ids: list[str]
    app_client_pk: str

    def basic(self, which: str) -> str:
        pair = (
            (self.app_client_id, self.app_client_secret)
            if which == "app"
            else (self.rs_client_id, self.rs_client_secret)
        )
        return "Basic " + base64.b64encode(":".join(pair).encode()).decode()


def seed(settings: Settings, env: dict[str, str], users: int) -> Seeded:
    """One user per connection and two clients, through the services (as tests/helpers do)."""
    from authserver.app import create_app
    from authserver.config import Config
    from authserver.db import db
    from authserver.runtime import runtime
    from authserver.services import clients as client_service
    from authserver.services import users as user_service

    app = create_app(Config.from_env(env))
    # Seeding's audit lines (user_created, client_created) are not the benchmark's output.
    logging.getLogger("authserver.audit").setLevel(logging.WARNING)
    with db.transaction(app) as session:
        user_ids = [
            str(
                user_service.create_user(
                    session,
                    runtime(app).hasher,
                    f"bench-{i}@example.test",
                    PASSWORD,
                    password_policy=runtime(app).password_policy,
                ).id
            )
            for i in range(users)
        ]
        app_client = client_service.create_client(
            session,
            name="Bench app",
            grant_types=["password", "refresh_token", "client_credentials"],
            first_party=True,
            scopes=["read", "write"],
        )
        rs_client = client_service.create_client(
            session, name="Bench API", grant_types=["client_credentials"], first_party=False
        )
        session.flush()
        seeded = Seeded(
            app_client_id=app_client.client.client_id,
            app_client_secret=app_client.client_secret or "",
            rs_client_id=rs_client.client.client_id,
            rs_client_secret=rs_client.client_secret or "",
            user_ids=user_ids,
            app_client_pk=str(app_client.client.id),
        )
    db.state(app).engine.dispose()
    return seeded


def post_form(url: str, form: dict[str, str], auth: str) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 (loopback)
        url,
        data=urllib.parse.urlencode(form).encode(),
        headers={"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        body: dict[str, Any] = json.loads(response.read())
        return body


def sign_in(base: str, seeded: Seeded, user: int) -> dict[str, Any]:
    return post_form(
        base + "/oauth/token",
        {"grant_type": "password", "username": f"bench-{user}@example.test", "password": PASSWORD},
        seeded.basic("app"),
    )


# -- wrk ------------------------------------------------------------------------------------


def run_wrk(
    name: str,
    url: str,
    script: str,
    settings: Settings,
    env: dict[str, str],
    *,
    duration: int | None = None,
    stop_when: subprocess.Popen[bytes] | None = None,
) -> Measurement:
    """wrk with one thread per connection; with ``stop_when``, wrk is interrupted (and
    reports) as soon as that process ends, ``duration`` being only the upper bound."""
    args = [
        "wrk",
        "-t",
        str(settings.connections),
        "-c",
        str(settings.connections),
        "-d",
        f"{duration or settings.duration}s",
        "--timeout",
        WRK_TIMEOUT,
        "-s",
        str(BENCH / script),
        url,
    ]
    wrk = subprocess.Popen(  # noqa: S603
        args,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(min(1.5, (duration or settings.duration) / 2))  # every connection is open
    spread = connection_spread(url)
    if stop_when is not None:
        deadline = time.monotonic() + (duration or settings.duration) + 30
        while stop_when.poll() is None and wrk.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # a second of refreshes after the purge, for the tail
        if wrk.poll() is None:
            wrk.send_signal(signal.SIGINT)
    output, _ = wrk.communicate(timeout=(duration or settings.duration) + 60)
    line = next((x for x in output.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk for {name} printed no result:\n{output}")
    raw = json.loads(line.removeprefix("BENCH_RESULT "))
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return Measurement(
        name=name,
        rps=raw["requests"] / (raw["duration_us"] / 1e6),
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        errors=errors,
        extra={
            "connections_per_worker": spread,
            "requests": raw["requests"],
            "error_kinds": {
                k: raw[k] for k in raw if k in ("connect", "read", "write", "status", "timeout")
            },
        },
    )


def connection_spread(url: str) -> list[int] | None:
    """How the open connections to ``url`` are spread over the server's processes, largest
    first (Linux ``ss``); None where that cannot be told. The kernel hands each new
    connection to whichever worker process accepts first, so 4 connections can land 2/2,
    3/1 or 4/0 on 2 workers, and a worker's threads share one GIL: all 4 on one worker
    halves the rate of a CPU-bound endpoint."""
    port = urllib.parse.urlsplit(url).port
    if port is None or shutil.which("ss") is None:
        return None
    listed = subprocess.run(  # noqa: S603
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    per_process = collections.Counter(re.findall(r"pid=(\d+)", listed.stdout))
    return sorted(per_process.values(), reverse=True) or None


def spread_text(spread: list[int] | None) -> str:
    return "" if not spread else " [" + "/".join(str(n) for n in spread) + "]"


# -- in-process floors ----------------------------------------------------------------------

_ROTATE_CLAIM = """
UPDATE refresh_tokens SET used_at = %(now)s, successor_ciphertext = %(sealed)s
WHERE family_id = %(family)s AND token_digest = %(digest)s AND used_at IS NULL
RETURNING id, family_id, generation
"""
_ROTATE_INSERT = """
INSERT INTO refresh_tokens (id, family_id, parent_id, token_digest, generation, issued_at,
                            expires_at)
VALUES (%(id)s, %(family)s, %(parent)s, %(digest)s, %(generation)s, %(now)s, %(expires)s)
"""
_ROTATE_FAMILY = """
UPDATE refresh_families SET last_used_at = %(now)s, idle_expires_at = %(expires)s
WHERE id = %(family)s
"""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _start_floor_family(conn: Any, user_id: str, client_pk: str) -> str:
    from authserver.services.refresh_tokens import new_refresh_token

    now = datetime.now(UTC)
    family = uuid.uuid4()
    token = new_refresh_token(family)
    with conn.transaction():
        conn.execute(
            "INSERT INTO refresh_families (id, user_id, client_pk, scope, audience, created_at,"
            " last_used_at, expires_at, idle_expires_at) VALUES (%s, %s, %s, 'read write', %s,"
            " %s, %s, %s, %s)",
            (
                family,
                user_id,
                client_pk,
                AUDIENCE,
                now,
                now,
                now + timedelta(days=30),
                now + timedelta(days=14),
            ),
        )
        conn.execute(
            "INSERT INTO refresh_tokens (id, family_id, token_digest, generation, issued_at,"
            " expires_at) VALUES (%s, %s, %s, 0, %s, %s)",
            (uuid.uuid4(), family, _digest(token), now, now + timedelta(days=14)),
        )
    return token


def sign_and_rotate_worker(
    libpq_url: str, user_id: str, client_pk: str, start_at: float, stop_at: float
) -> list[float]:
    """One connection of the refresh floor: per iteration, one ES256 signature and one
    rotation transaction (claim, insert successor, slide the family), as raw psycopg."""
    import psycopg
    from joserfc import jwt
    from joserfc.jwk import ECKey

    from authserver.services.refresh_tokens import new_refresh_token, read_refresh_token

    key = ECKey.generate_key("P-256", parameters={"kid": "floor"})
    latencies: list[float] = []
    with psycopg.connect(libpq_url) as conn:
        token = _start_floor_family(conn, user_id, client_pk)
        named = read_refresh_token(token)
        assert named is not None
        assert named.family_id is not None
        family = named.family_id
        while time.time() < start_at:
            time.sleep(0.001)
        while True:
            began = time.perf_counter()
            if time.time() >= stop_at:
                break
            now = datetime.now(UTC)
            issued = int(now.timestamp())
            jwt.encode(
                {"typ": "at+jwt", "alg": "ES256", "kid": "floor"},
                {
                    "iss": "http://127.0.0.1",
                    "sub": user_id,
                    "aud": AUDIENCE,
                    "iat": issued,
                    "exp": issued + 600,
                    "jti": secrets.token_urlsafe(16),
                    "client_id": "floor",
                    "scope": "read write",
                    "sid": user_id,
                },
                key,
                algorithms=["ES256"],
            )
            successor = new_refresh_token(family)
            expires = now + timedelta(days=14)
            with conn.transaction():
                claimed = conn.execute(
                    _ROTATE_CLAIM,
                    {
                        "now": now,
                        "sealed": secrets.token_bytes(60),
                        "family": family,
                        "digest": _digest(token),
                    },
                ).fetchone()
                if claimed is None:
                    raise RuntimeError("floor token already used")
                parent, _family, generation = claimed
                conn.execute(
                    _ROTATE_INSERT,
                    {
                        "id": uuid.uuid4(),
                        "family": family,
                        "parent": parent,
                        "digest": _digest(successor),
                        "generation": generation + 1,
                        "now": now,
                        "expires": expires,
                    },
                )
                conn.execute(_ROTATE_FAMILY, {"now": now, "expires": expires, "family": family})
            token = successor
            latencies.append(time.perf_counter() - began)
    return latencies


def measure_refresh_floor(settings: Settings, seeded: Seeded) -> Measurement:
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0  # every process connected and ready
    stop_at = start_at + settings.duration
    jobs = [
        (
            settings.libpq_url,
            seeded.user_ids[i % len(seeded.user_ids)],
            seeded.app_client_pk,
            start_at,
            stop_at,
        )
        for i in range(settings.connections)
    ]
    with context.Pool(settings.connections) as pool:
        per_worker = pool.starmap(sign_and_rotate_worker, jobs)
    latencies = sorted(x for worker in per_worker for x in worker)
    return Measurement(
        name="floor: ES256 sign + rotation txn (psycopg, in-process)",
        rps=len(latencies) / settings.duration,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        max_ms=latencies[-1] * 1000 if latencies else None,
        extra={"processes": settings.connections},
    )


def measure_argon2_floor() -> Measurement:
    from argon2 import PasswordHasher, Type

    from authserver.config import Config

    config = Config()
    hasher = PasswordHasher(
        time_cost=config.argon2_time_cost,
        memory_cost=config.argon2_memory_cost_kib,
        parallelism=config.argon2_parallelism,
        type=Type.ID,
    )
    hasher.hash(PASSWORD)
    times = []
    for _ in range(15):
        began = time.perf_counter()
        hasher.hash(PASSWORD)
        times.append(time.perf_counter() - began)
    one = statistics.median(times)
    cores = os.cpu_count() or 1
    return Measurement(
        name=f"floor: {cores} cores / one argon2id hash",
        rps=cores / one,
        p50_ms=one * 1000,
        p99_ms=max(times) * 1000,
        extra={"hash_ms": one * 1000, "cores": cores},
    )


def timed_loop(call: Any, seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while True:
        began = time.perf_counter()
        if began >= deadline:
            return latencies
        call()
        latencies.append(time.perf_counter() - began)


def measure_verification(
    issuer: str, access_token: str, seconds: float
) -> tuple[Measurement, Measurement]:
    """authserver.resource's TokenVerifier against a bare joserfc decode with the same key,
    one thread each: per-core verifications per second."""
    from joserfc import jwt
    from joserfc.jwk import KeySet

    from authserver.resource import TokenVerifier

    verifier = TokenVerifier(issuer, AUDIENCE)
    verifier.verify(access_token)  # fetches the JWKS once
    with urllib.request.urlopen(issuer + "/.well-known/jwks.json", timeout=10) as response:  # noqa: S310
        key_set = KeySet.import_key_set(json.loads(response.read()))
    kid = json.loads(base64.urlsafe_b64decode(access_token.split(".")[0] + "=="))["kid"]
    key = key_set.get_by_kid(kid)

    def raw() -> None:
        jwt.decode(access_token, key, algorithms=["ES256"])

    results = []
    for name, call in (
        (
            "resource verification (1 thread)",
            lambda: verifier.verify(access_token),
        ),
        ("floor: raw joserfc jwt.decode (1 thread)", raw),
    ):
        call()
        latencies = sorted(timed_loop(call, seconds))
        results.append(
            Measurement(
                name=name,
                rps=len(latencies) / seconds,
                p50_ms=percentile(latencies, 50) * 1000,
                p99_ms=percentile(latencies, 99) * 1000,
            )
        )
    return results[0], results[1]


# Floors and ceilings say what this machine can do: noise only ever lowers them, so their
# best round stands for them. authserver's own operations are reported by their median round.
# (A floor that dipped would flatter every ratio against it: one uneven spread of wrk's
# connections over the workers, below, halves the bare-Flask floor.)
BEST_ROUND_KEYS = frozenset(
    {
        "flask_floor",
        "refresh_floor",
        "argon2_floor",
        "raw_verification",
        "ceiling_refresh",
        "ceiling_client_credentials",
        "ceiling_client_credentials_no_audit",
        "ceiling_introspection",
    }
)


def summarize_rounds(key: str, measurements: list[Measurement]) -> Measurement:
    """The round that stands for ``key``: the best for a floor or ceiling, else the median
    (the lower of the two middle ones for an even count). Every round's figure is kept beside
    it, and its errors are every round's, so that an error in any round shows."""
    ordered = sorted(measurements, key=lambda m: m.rps)
    picked = ordered[-1] if key in BEST_ROUND_KEYS else ordered[(len(ordered) - 1) // 2]
    if len(measurements) > 1:
        picked.extra["rounds"] = [
            (round(m.rps, 1), m.extra.get("connections_per_worker")) for m in measurements
        ]
        picked.errors = sum(m.errors for m in measurements)
    return picked


def percentile(ordered: list[float], pct: float) -> float:
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))
    return ordered[index]


# -- large table and purge ------------------------------------------------------------------


def insert_expired_tokens(settings: Settings, seeded: Seeded, rows: int) -> float:
    """``rows`` used, expired refresh tokens in families that ended two days ago (past the
    purge's one-day grace), ten per family, with INSERT ... SELECT generate_series."""
    import psycopg

    families = max(1, rows // 10)
    began = time.perf_counter()
    with psycopg.connect(settings.libpq_url) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO refresh_families (id, user_id, client_pk, scope, audience, created_at,"
            " last_used_at, expires_at, idle_expires_at)"
            " SELECT md5('bench-family-' || i)::uuid, %s, %s, 'read', %s,"
            " now() - interval '40 days', now() - interval '3 days', now() - interval '2 days',"
            " now() - interval '2 days' FROM generate_series(1, %s) AS i",
            (seeded.user_ids[0], seeded.app_client_pk, AUDIENCE, families),
        )
        conn.execute(
            "INSERT INTO refresh_tokens (id, family_id, token_digest, generation, issued_at,"
            " used_at, expires_at)"
            " SELECT md5('bench-token-' || i)::uuid, md5('bench-family-' || (i %% %s + 1))::uuid,"
            " sha256(('bench-token-' || i)::bytea), i / %s, now() - interval '40 days',"
            " now() - interval '3 days', now() - interval '2 days'"
            " FROM generate_series(1, %s) AS i",
            (families, families, rows),
        )
    with psycopg.connect(settings.libpq_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE refresh_tokens")
        conn.execute("VACUUM ANALYZE refresh_families")
        # Write the bulk load out now: otherwise the checkpoints it triggers (a gigabyte of
        # WAL on default settings) land in the next measurement, which is about the table's
        # size, not about a load that just happened.
        conn.execute("CHECKPOINT")
    return time.perf_counter() - began


def fresh_tokens_file(base: str, seeded: Seeded, settings: Settings, path: Path) -> str:
    """Sign every bench user in once; one refresh token per line. Returns an access token."""
    sign_ins = [sign_in(base, seeded, i) for i in range(settings.connections)]
    path.write_text("".join(s["refresh_token"] + "\n" for s in sign_ins))
    access: str = sign_ins[0]["access_token"]
    return access


def ceiling_tokens_file(settings: Settings, seeded: Seeded, path: Path) -> None:
    """One refresh token per connection for the ceiling app, each in a family of its own
    started directly in the database (the ceiling has no sign-in)."""
    import psycopg

    with psycopg.connect(settings.libpq_url) as conn:
        tokens = [
            _start_floor_family(
                conn, seeded.user_ids[i % len(seeded.user_ids)], seeded.app_client_pk
            )
            for i in range(settings.connections)
        ]
    path.write_text("".join(token + "\n" for token in tokens))


# -- report ---------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def ceiling_notes(
    refresh: Measurement,
    refresh_floor: Measurement,
    client_credentials: Measurement,
    client_credentials_no_audit: Measurement,
    flask_floor: Measurement,
    introspection: Measurement,
) -> list[str]:
    """The targets applied to the hand-written ceiling: whether the work itself, with no
    framework around it, fits in them on this machine."""

    def ratio(a: Measurement, b: Measurement) -> str:
        return f"{a.rps / b.rps:.2f}" if b.rps else "-"

    return [
        "the same targets for the hand-written ceiling (bench/ceiling_app.py):",
        f"  refresh rotation   {ratio(refresh, refresh_floor)} x its floor (target >= 0.50)",
        f"  client_credentials {ratio(client_credentials, flask_floor)} x Flask floor "
        "(target >= 0.60); without the audit row "
        f"{ratio(client_credentials_no_audit, flask_floor)}",
        f"  introspection      {ratio(introspection, refresh)} x ceiling refresh (target >= 3)",
    ]


def print_table(rows: list[Row], floors: list[Measurement], notes: list[str]) -> None:
    header = (
        f"{'operation':<44} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
        f"{'floor req/s':>11} {'ratio':>6} {'target':>18} {'met?':>5} {'of ceiling':>10}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        m = row.measurement
        met = "-" if row.met is None else ("yes" if row.met else "NO")
        print(
            f"{m.name[:44]:<44} {fmt(m.rps):>9} {fmt(m.p50_ms, 2):>7} {fmt(m.p99_ms, 2):>7} "
            f"{m.errors:>6} {fmt(row.floor.rps if row.floor else None):>11} "
            f"{fmt(row.ratio, 2):>6} {row.target:>18} {met:>5} {fmt(row.of_ceiling, 2):>10}"
        )
    print()
    for f in floors:
        print(
            f"{f.name[:60]:<60} {fmt(f.rps):>9} req/s  p50 {fmt(f.p50_ms, 2)} ms  "
            f"p99 {fmt(f.p99_ms, 2)} ms  errors {f.errors}"
        )
    for note in notes:
        print(note)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = line.split(":", 1)[1].strip()
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory": memory,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def postgres_version(settings: Settings) -> str:
    import psycopg

    with psycopg.connect(settings.libpq_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def autovacuum_on(settings: Settings) -> bool:
    import psycopg

    with psycopg.connect(settings.libpq_url) as conn:
        row = conn.execute("SHOW autovacuum").fetchone()
    return bool(row) and str(row[0]) == "on"


# The tables every round writes: each rotation updates its family's row and its token's, so
# dead row versions pile up until a VACUUM.
_CHURNED_TABLES = "refresh_tokens, refresh_families, audit_events"


def vacuum_churned_tables(settings: Settings) -> None:
    """What autovacuum does on a production server, for a PostgreSQL that runs without it:
    otherwise every round measures a table with more dead row versions than the last."""
    import psycopg

    with psycopg.connect(settings.libpq_url, autocommit=True) as conn:
        conn.execute(f"VACUUM (ANALYZE) {_CHURNED_TABLES}")


# -- the run --------------------------------------------------------------------------------


@contextlib.contextmanager
def cleanup(processes: Processes) -> Iterator[None]:
    try:
        yield
    finally:
        processes.stop_all()


def server_environment(settings: Settings, issuer: str, workdir: Path) -> dict[str, str]:
    """authserver's settings for a benchmark: rate limits off, quiet logs."""
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "AUTHSERVER_ISSUER": issuer,
        "AUTHSERVER_DEFAULT_AUDIENCE": AUDIENCE,
        "AUTHSERVER_RATELIMIT_ENABLED": "0",
        "AUTHSERVER_LOG_LEVEL": "WARNING",
        "AUTHSERVER_INSTANCE_DIR": str(workdir / "instance"),
    }


def bench(settings: Settings, processes: Processes, workdir: Path) -> dict[str, Any]:
    RESULTS.mkdir(exist_ok=True)
    print(
        f"bench: {settings.connections} connections, {settings.duration} s per operation, "
        f"{settings.rounds} round(s), {os.cpu_count()} cores; "
        f"server: {settings.server} {' '.join(settings.gunicorn_args)}",
        flush=True,
    )
    recreate_database(settings)
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = server_environment(settings, issuer, workdir)
    seeded = seed(settings, env, settings.connections)

    # authserver itself, on the port its issuer names.
    _, server = serve(processes, settings, "authserver:create_app", env, "authserver", port)
    wait_until_serving(issuer + "/.well-known/jwks.json", server)
    floor_url, floor_server = serve(processes, settings, "bench.floor_app:create_app", env, "floor")
    wait_until_serving(floor_url + "/floor", floor_server)
    # The same work as authserver's by hand (bench/ceiling_app.py); it reads authserver's
    # JWKS at start, so it starts after authserver.
    ceiling_env = {
        **env,
        "CEILING_DATABASE_URL": settings.libpq_url,
        "CEILING_ISSUER": issuer,
        "CEILING_AUDIENCE": AUDIENCE,
        "CEILING_APP_CLIENT_ID": seeded.app_client_id,
        "CEILING_APP_CLIENT_SECRET": seeded.app_client_secret,
        "CEILING_APP_CLIENT_PK": seeded.app_client_pk,
        "CEILING_RS_CLIENT_ID": seeded.rs_client_id,
        "CEILING_RS_CLIENT_SECRET": seeded.rs_client_secret,
    }
    ceiling_url, ceiling_server = serve(
        processes, settings, "bench.ceiling_app:create_app", ceiling_env, "ceiling"
    )
    wait_until_serving(ceiling_url + "/ceiling/ready", ceiling_server)

    app_auth, rs_auth = seeded.basic("app"), seeded.basic("rs")

    def static(name: str, base: str, path: str, body: str = "", auth: str = "") -> Measurement:
        print(f"bench: {name} ...", flush=True)
        return run_wrk(
            name,
            base,
            "static.lua",
            settings,
            {
                "BENCH_METHOD": "POST" if body else "GET",
                "BENCH_PATH": path,
                "BENCH_BODY": body,
                "BENCH_AUTH": auth,
            },
        )

    autovacuum = autovacuum_on(settings)
    if not autovacuum:
        print(
            "bench: this PostgreSQL runs with autovacuum off; each round starts with a VACUUM "
            f"(ANALYZE) of {_CHURNED_TABLES}",
            flush=True,
        )

    def one_round(number: int) -> dict[str, Measurement]:
        if settings.rounds > 1:
            print(f"bench: round {number} of {settings.rounds}", flush=True)
        if not autovacuum:
            vacuum_churned_tables(settings)
        # Fresh refresh tokens (the last round used them up) and a fresh access token.
        tokens_file = workdir / f"refresh_tokens_{number}.txt"
        access_token = fresh_tokens_file(issuer, seeded, settings, tokens_file)
        measured = {
            "flask_floor": static("floor: bare Flask JSON (same server)", floor_url, "/floor"),
            "jwks": static("JWKS", issuer, "/.well-known/jwks.json"),
            "client_credentials": static(
                "client_credentials grant",
                issuer,
                "/oauth/token",
                "grant_type=client_credentials",
                app_auth,
            ),
            "introspection": static(
                "introspection (JWT access token)",
                issuer,
                "/oauth/introspect",
                urllib.parse.urlencode({"token": access_token}),
                rs_auth,
            ),
        }
        print("bench: refresh rotation ...", flush=True)
        refresh_env = {"BENCH_TOKENS": str(tokens_file), "BENCH_AUTH": app_auth}
        measured["refresh"] = run_wrk(
            "refresh rotation (chained)", issuer, "refresh.lua", settings, refresh_env
        )
        measured["ceiling_client_credentials"] = static(
            "ceiling: client_credentials by hand",
            ceiling_url,
            "/ceiling/client_credentials",
            "grant_type=client_credentials",
            app_auth,
        )
        measured["ceiling_client_credentials_no_audit"] = static(
            "ceiling: client_credentials by hand, no audit row",
            ceiling_url,
            "/ceiling/client_credentials?audit=0",
            "grant_type=client_credentials",
            app_auth,
        )
        measured["ceiling_introspection"] = static(
            "ceiling: introspection by hand",
            ceiling_url,
            "/ceiling/introspect",
            urllib.parse.urlencode({"token": access_token}),
            rs_auth,
        )
        print("bench: ceiling: refresh rotation by hand ...", flush=True)
        ceiling_tokens = workdir / f"ceiling_tokens_{number}.txt"
        ceiling_tokens_file(settings, seeded, ceiling_tokens)
        measured["ceiling_refresh"] = run_wrk(
            "ceiling: refresh rotation by hand",
            ceiling_url,
            "refresh.lua",
            settings,
            {
                "BENCH_TOKENS": str(ceiling_tokens),
                "BENCH_AUTH": app_auth,
                "BENCH_PATH": "/ceiling/refresh",
            },
        )
        measured["password"] = static(
            "password grant",
            issuer,
            "/oauth/token",
            urllib.parse.urlencode(
                {
                    "grant_type": "password",
                    "username": "bench-0@example.test",
                    "password": PASSWORD,
                }
            ),
            app_auth,
        )
        print("bench: floor: sign + rotate in-process ...", flush=True)
        measured["refresh_floor"] = measure_refresh_floor(settings, seeded)
        print("bench: floor: argon2 ...", flush=True)
        measured["argon2_floor"] = measure_argon2_floor()
        print("bench: verification ...", flush=True)
        measured["verification"], measured["raw_verification"] = measure_verification(
            issuer, access_token, max(2.0, settings.duration / 2)
        )
        return measured

    rounds = [one_round(number) for number in range(1, settings.rounds + 1)]
    summary = {key: summarize_rounds(key, [r[key] for r in rounds]) for key in rounds[0]}
    flask_floor, jwks = summary["flask_floor"], summary["jwks"]
    client_credentials, introspection = summary["client_credentials"], summary["introspection"]
    refresh, password = summary["refresh"], summary["password"]
    refresh_floor, argon2_floor = summary["refresh_floor"], summary["argon2_floor"]
    verification, raw_verification = summary["verification"], summary["raw_verification"]
    ceiling_refresh = summary["ceiling_refresh"]
    ceiling_client_credentials = summary["ceiling_client_credentials"]
    ceiling_introspection = summary["ceiling_introspection"]
    ceiling_no_audit = summary["ceiling_client_credentials_no_audit"]

    rows = [
        Row(
            refresh,
            refresh_floor,
            ">= 0.50 x floor",
            refresh.rps >= 0.5 * refresh_floor.rps,
            ceiling_refresh,
        ),
        Row(jwks, flask_floor, ">= 0.80 x floor", jwks.rps >= 0.8 * flask_floor.rps),
        Row(
            client_credentials,
            flask_floor,
            ">= 0.60 x floor",
            client_credentials.rps >= 0.6 * flask_floor.rps,
            # Its audit row is queued by default, so its ceiling is the one without the row.
            ceiling_no_audit,
        ),
        Row(
            introspection,
            flask_floor,
            ">= 3 x refresh",
            introspection.rps >= 3 * refresh.rps,
            ceiling_introspection,
        ),
        Row(password, argon2_floor, "(none; reported)", None),
        Row(
            verification,
            raw_verification,
            ">= 0.80 x floor",
            verification.rps >= 0.8 * raw_verification.rps,
        ),
    ]
    floors = [
        flask_floor,
        refresh_floor,
        argon2_floor,
        raw_verification,
        ceiling_refresh,
        ceiling_client_credentials,
        ceiling_no_audit,
        ceiling_introspection,
    ]
    notes = [
        f"introspection / refresh = {introspection.rps / refresh.rps:.2f}" if refresh.rps else "",
        *ceiling_notes(
            ceiling_refresh,
            refresh_floor,
            ceiling_client_credentials,
            ceiling_no_audit,
            flask_floor,
            ceiling_introspection,
        ),
    ]
    if settings.rounds > 1:
        notes.append(
            "req/s of each round, [wrk's connections per server process] (the table shows "
            "the median round, the best one for floors and ceilings; errors: all rounds'):"
        )
        notes.extend(
            f"  {m.name[:44]:<44} "
            + ", ".join(f"{rps:,.1f}{spread_text(spread)}" for rps, spread in m.extra["rounds"])
            for m in summary.values()
        )
    else:
        notes.append(
            "wrk's connections per server process: "
            + ", ".join(
                f"{m.name.split(' (')[0]}{spread_text(m.extra['connections_per_worker'])}"
                for m in summary.values()
                if m.extra.get("connections_per_worker")
            )
        )

    large: dict[str, Any] | None = None
    if settings.large_rows > 0:
        large = measure_large_table(settings, seeded, issuer, env, processes, refresh, workdir)
        rows.extend(large.pop("rows"))
        notes.extend(large.pop("notes"))

    print()
    print_table(rows, floors, [n for n in notes if n])
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            **machine(),
            "postgresql": postgres_version(settings),
            "autovacuum": autovacuum,
        },
        "settings": {
            "duration_s": settings.duration,
            "connections": settings.connections,
            "server": settings.server,
            "gunicorn_args": settings.gunicorn_args,
            "large_rows": settings.large_rows,
            "rounds": settings.rounds,
        },
        "rows": [
            {
                **row.measurement.__dict__,
                "floor": row.floor.name if row.floor else None,
                "floor_rps": row.floor.rps if row.floor else None,
                "ratio": row.ratio,
                "target": row.target,
                "met": row.met,
                "ceiling_rps": row.ceiling.rps if row.ceiling else None,
                "of_ceiling": row.of_ceiling,
            }
            for row in rows
        ],
        "floors": [f.__dict__ for f in floors],
        "large_table": large,
    }


def measure_large_table(
    settings: Settings,
    seeded: Seeded,
    issuer: str,
    env: dict[str, str],
    processes: Processes,
    empty_refresh: Measurement,
    workdir: Path,
) -> dict[str, Any]:
    print(f"bench: inserting {settings.large_rows:,} expired refresh tokens ...", flush=True)
    insert_seconds = insert_expired_tokens(settings, seeded, settings.large_rows)
    tokens_file = workdir / "refresh_tokens_large.txt"
    fresh_tokens_file(issuer, seeded, settings, tokens_file)
    refresh_env = {"BENCH_TOKENS": str(tokens_file), "BENCH_AUTH": seeded.basic("app")}
    print("bench: refresh rotation with the large table ...", flush=True)
    full = run_wrk(
        f"refresh rotation, {settings.large_rows:,} rows in table",
        issuer,
        "refresh.lua",
        settings,
        refresh_env,
    )
    limit = 1.5 * empty_refresh.p99_ms
    full_row = Row(full, None, f"p99 <= {limit:.2f} ms", full.p99_ms <= limit)

    print("bench: purge while refreshing ...", flush=True)
    tokens_file = workdir / "refresh_tokens_purge.txt"
    fresh_tokens_file(issuer, seeded, settings, tokens_file)
    refresh_env["BENCH_TOKENS"] = str(tokens_file)
    began = time.perf_counter()
    purge = processes.start([str(BIN / "authserver"), "purge"], env, RESULTS / "purge.log")
    bound = 600
    during = run_wrk(
        "refresh rotation during purge (max = pause)",
        issuer,
        "refresh.lua",
        settings,
        refresh_env,
        duration=bound,
        stop_when=purge,
    )
    purge.wait(timeout=bound)
    purge_seconds = time.perf_counter() - began
    during_row = Row(
        during, None, "max <= 100 ms", during.max_ms is not None and during.max_ms <= 100
    )
    return {
        "rows": [full_row, during_row],
        "notes": [
            f"inserted {settings.large_rows:,} expired tokens in {insert_seconds:.1f} s; "
            f"purge took {purge_seconds:.1f} s (exit {purge.returncode}); longest refresh "
            f"during purge {fmt(during.max_ms, 1)} ms",
            f"purge output: {(RESULTS / 'purge.log').read_text().strip()[-400:]}",
        ],
        "insert_seconds": insert_seconds,
        "purge_seconds": purge_seconds,
        "purge_exit": purge.returncode,
    }


def main() -> int:
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 1
    settings = Settings.from_env()
    sys.path.insert(0, str(ROOT))
    processes = Processes()
    with tempfile.TemporaryDirectory(prefix="authserver-bench-") as tmp, cleanup(processes):
        report = bench(settings, processes, Path(tmp))
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nbench: wrote {(RESULTS / 'latest.json').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
