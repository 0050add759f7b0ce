"""`authserver purge`, run as a janitor container runs it: a real process on a real database.

The database is this module's own (``<test database>_purge`` on PostgreSQL, a file on the
SQLite fallback), built with ``authserver db upgrade``. Rows are placed relative to the wall
clock, since the command purges as of now.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import IO

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from authserver.db import db, make_engine, utcnow
from authserver.models import AuditEvent, Revocation
from authserver.services.audit import AuditEventType, record
from authserver.services.purge import PURGE_LOCK
from authserver.services.refresh_tokens import (
    RefreshPolicy,
    RevocationReason,
    revoke_family,
    rotate_refresh_token,
    start_family,
)
from authserver.services.revocations import denylist_access_token
from tests.helpers import HANG_SECONDS, make_client, make_user
from tests.test_cli import (
    AUTHSERVER,
    UNREACHABLE_DATABASE,
    _base_environment,
    arranging_app,
    assert_fails_with_one_line,
    migrated_scratch_database,
    run_cli,
)


@pytest.fixture(scope="module")
def purge_database_url(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with migrated_scratch_database(database_url, "purge", tmp_path_factory) as url:
        yield url


@pytest.fixture
def purge_env(purge_database_url: str, tmp_path: Path) -> dict[str, str]:
    return {**_base_environment(tmp_path / "instance"), "DATABASE_URL": purge_database_url}


@pytest.fixture
def purge_app(purge_database_url: str, tmp_path: Path) -> Iterator[Flask]:
    with arranging_app(purge_database_url, tmp_path / "app-instance") as app:
        yield app


def printed_counts(stdout: str) -> dict[str, int]:
    """The `purge` report: one "<kind> <count>" line per kind, then the total."""
    counts = {}
    for line in stdout.strip().splitlines():
        kind, _, number = line.rpartition(" ")
        counts[kind.strip()] = int(number)
    return counts


def test_purge_prints_how_many_rows_of_each_kind_it_deleted(
    purge_env: dict[str, str], purge_app: Flask
) -> None:
    now = utcnow()
    policy = RefreshPolicy(
        idle_ttl=timedelta(days=14), absolute_ttl=timedelta(days=30), reuse_grace=timedelta(0)
    )
    with db.transaction(purge_app) as session:
        user = make_user(purge_app, session)
        client = make_client(session).client
        # Signed out three days ago, after one rotation: the family and its two tokens go.
        signed_in = now - timedelta(days=4)
        issued = start_family(
            session,
            user=user,
            client=client,
            scope="read",
            audience="https://api.example.test",
            policy=policy,
            now=signed_in,
        )
        rotate_refresh_token(
            session,
            presented=issued.token,
            client=client,
            requested_scope=None,
            policy=policy,
            now=signed_in + timedelta(hours=1),
        )
        revoke_family(session, issued.family, RevocationReason.LOGOUT, now - timedelta(days=3))
        # Two denylisted access tokens that have expired, then one that has not.
        for expired in (timedelta(hours=2), timedelta(hours=1), timedelta(hours=-1)):
            denylist_access_token(
                session, uuid.uuid4().hex, now - expired, now - expired - timedelta(minutes=10)
            )
        record(session, AuditEventType.SIGNIN_FAILED, now - timedelta(days=400), reason="test")

    result = run_cli("purge", env=purge_env)

    assert result.returncode == 0, result.stderr
    assert printed_counts(result.stdout) == {
        "authorization codes": 0,
        "refresh families": 1,
        "refresh tokens": 2,
        "browser sessions": 0,
        "revocations": 3,  # the family's sid entry and two jti entries
        "signing keys": 0,
        "outbound messages": 0,
        "security events": 0,
        "account links": 0,
        "passkey challenges": 0,
        "pushed authorization requests": 0,
        "device authorizations": 0,
        "dpop proofs seen": 0,
        "audit events": 1,
        "sign in throttles": 0,
        "total": 7,
    }
    with db.transaction(purge_app) as session:
        assert session.scalar(select(func.count()).select_from(Revocation)) == 1
        old = select(func.count()).where(AuditEvent.occurred_at < now - timedelta(days=365))
        assert session.scalar(old) == 0


def test_purge_batch_size_is_a_whole_number_of_rows(purge_env: dict[str, str]) -> None:
    result = run_cli("purge", "--batch-size", "0", env=purge_env)

    assert result.returncode == 2  # click's exit code for a usage error
    assert "Invalid value for '--batch-size'" in result.stderr


@pytest.mark.parametrize("every", ["1x", "0s", "1h30m"])
def test_purge_every_with_a_bad_duration_fails_with_one_line(
    purge_env: dict[str, str], every: str
) -> None:
    result = run_cli("purge", "--every", every, env=purge_env)

    line = assert_fails_with_one_line(result)
    assert repr(every) in line
    assert result.stdout == ""


def test_purge_of_an_unreachable_database_is_one_database_error_line(tmp_path: Path) -> None:
    environment = {**_base_environment(tmp_path / "instance"), "DATABASE_URL": UNREACHABLE_DATABASE}

    result = run_cli("purge", env=environment)

    line = assert_fails_with_one_line(result, starting="Error: database error: ")
    assert "127.0.0.1" in line


@pytest.mark.postgres_only
def test_purge_while_another_purge_runs_says_so_and_succeeds(
    purge_env: dict[str, str], purge_database_url: str
) -> None:
    engine = make_engine(purge_database_url)
    try:
        with engine.connect() as other:
            other.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PURGE_LOCK})
            result = run_cli("purge", env=purge_env)
            other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PURGE_LOCK})
    finally:
        engine.dispose()

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "another purge is running; nothing purged"


# -- the janitor: --every ----------------------------------------------------------------------


class Janitor:
    """`authserver purge --every ...` in the background (or another command that takes
    ``--every``); its output lines as they come."""

    def __init__(
        self, every: str, env: dict[str, str], command: tuple[str, ...] = ("purge",)
    ) -> None:
        self.process = subprocess.Popen(
            [str(AUTHSERVER), *command, "--every", every],
            env=env,
            cwd=env["AUTHSERVER_INSTANCE_DIR"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.stdout)),
            threading.Thread(target=self._read, args=(self.process.stderr, self.stderr)),
        ]
        for reader in self._readers:
            reader.start()

    def __enter__(self) -> Janitor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.process.kill()
        self.process.wait(timeout=HANG_SECONDS)
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    @staticmethod
    def _read(stream: IO[str], into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_for(
        self, lines: list[str], prefix: str, times: int, timeout: float = HANG_SECONDS
    ) -> None:
        deadline = time.monotonic() + timeout
        while sum(line.startswith(prefix) for line in lines) < times:
            assert self.process.poll() is None, f"exited early: {self.stderr}"
            assert time.monotonic() < deadline, f"not {times} x {prefix!r}: {lines}"
            time.sleep(0.05)

    def terminate(self) -> int:
        """SIGTERM, then the exit status. The wait is bounded only against a hang: a janitor
        that waited out "--every 1h" before exiting would fail it, a slow machine would not."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=HANG_SECONDS)


def test_purge_every_runs_again_and_again_and_stops_cleanly_on_sigterm(
    purge_env: dict[str, str],
) -> None:
    with Janitor("1s", purge_env) as janitor:
        janitor.wait_for(janitor.stdout, "total", times=2)

        status = janitor.terminate()

    assert status == 0, janitor.stderr
    assert sum(line.startswith("total") for line in janitor.stdout) >= 2
    assert "Traceback" not in "\n".join(janitor.stderr)


def test_purge_every_stops_on_sigterm_without_waiting_for_the_next_run(
    purge_env: dict[str, str],
) -> None:
    with Janitor("1h", purge_env) as janitor:
        janitor.wait_for(janitor.stdout, "total", times=1)

        status = janitor.terminate()

    assert status == 0, janitor.stderr


def test_purge_every_survives_a_database_that_is_down(tmp_path: Path) -> None:
    environment = {**_base_environment(tmp_path / "instance"), "DATABASE_URL": UNREACHABLE_DATABASE}
    with Janitor("1s", environment) as janitor:
        janitor.wait_for(janitor.stderr, "purge failed: database error: ", times=2)

        status = janitor.terminate()

    assert status == 0
    failures = [line for line in janitor.stderr if line.startswith("purge failed:")]
    assert len(failures) >= 2
    assert failures[0].endswith("; trying again in 1s")
    assert "127.0.0.1" in failures[0]
    assert "Traceback" not in "\n".join(janitor.stderr)
