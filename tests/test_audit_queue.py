"""token_issued audit rows written in batches off the request path (services/audit_queue.py),
and statements committed on their own (db.execute_alone)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from authserver.app import create_app
from authserver.config import Config, ConfigError
from authserver.db import db, execute_alone, make_engine
from authserver.metrics import AUDIT_ROWS_DROPPED
from authserver.models import AuditEvent
from authserver.runtime import runtime
from authserver.services.audit import row_writer
from authserver.services.audit_queue import AuditQueue
from tests.conftest import truncate_all
from tests.helpers import HANG_SECONDS, PASSWORD, make_client, make_user, token_request


def _wait_for(condition: Callable[[], bool], seconds: float = HANG_SECONDS) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


class Recorder:
    """A write function that keeps what it is given, and can be told to fail."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.failing = False

    def __call__(self, rows: list[dict[str, Any]]) -> None:
        if self.failing:
            raise ConnectionError("database unreachable")
        self.batches.append(list(rows))

    @property
    def rows(self) -> list[int]:
        return [row["n"] for batch in self.batches for row in batch]


def test_queued_rows_are_written_together_in_order() -> None:
    written = Recorder()
    queue = AuditQueue(written, interval=3600)
    for n in range(5):
        queue.put({"n": n})

    assert queue.flush() == 5
    assert written.batches == [[{"n": n} for n in range(5)]]
    assert queue.pending() == 0
    assert queue.flush() == 0  # nothing left: no empty write
    assert len(written.batches) == 1


def test_rows_that_could_not_be_written_wait_for_the_next_flush() -> None:
    written = Recorder()
    queue = AuditQueue(written, interval=3600)
    queue.put({"n": 1})
    written.failing = True

    assert queue.flush() == 0
    assert queue.pending() == 1

    queue.put({"n": 2})
    written.failing = False
    assert queue.flush() == 2
    assert written.rows == [1, 2]  # the older row first


def test_a_full_queue_drops_its_oldest_rows_and_counts_them() -> None:
    written = Recorder()
    queue = AuditQueue(written, interval=3600, max_rows=3)
    dropped_before = AUDIT_ROWS_DROPPED._value.get()
    written.failing = True
    for n in range(5):
        queue.put({"n": n})

    queue.flush()

    assert queue.pending() == 3
    assert AUDIT_ROWS_DROPPED._value.get() - dropped_before == 2
    written.failing = False
    queue.flush()
    assert written.rows == [2, 3, 4]


def test_the_background_thread_writes_without_being_asked() -> None:
    written = Recorder()
    queue = AuditQueue(written, interval=0.05)
    queue.put({"n": 7})

    assert _wait_for(lambda: written.rows == [7])
    queue.close()


def test_closing_writes_what_is_left() -> None:
    written = Recorder()
    queue = AuditQueue(written, interval=3600)
    queue.put({"n": 1})
    queue.close()
    assert written.rows == [1]


def test_rows_put_from_many_threads_are_all_written_once() -> None:
    written = Recorder()
    queue = AuditQueue(written, interval=0.01)

    def put_many(start: int) -> None:
        for n in range(start, start + 200):
            queue.put({"n": n})

    threads = [threading.Thread(target=put_many, args=(i * 1000,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.close()

    assert sorted(written.rows) == sorted(i * 1000 + n for i in range(4) for n in range(200))


# -- against the database -------------------------------------------------------------------


@pytest.fixture
def queued_app(engine: Engine, config: Config) -> Iterator[Flask]:
    """An app on the real engine whose token_issued rows go through the queue."""
    application = create_app(replace(config, token_audit_flush_ms=50))
    yield application
    queue = runtime(application).audit_queue
    if queue is not None:
        queue.close()
    db.state(application).engine.dispose()
    truncate_all(engine)


def _events(engine: Engine, event_type: str) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.event_type == event_type)))


def test_a_token_issued_row_reaches_the_table_shortly_after_the_response(
    queued_app: Flask, engine: Engine
) -> None:
    with db.transaction(queued_app) as session:
        registered = make_client(session)
    client_id = registered.client.client_id

    response = token_request(queued_app.test_client(), registered, grant_type="client_credentials")
    assert response.status_code == 200

    assert _wait_for(lambda: len(_events(engine, "token_issued")) == 1)
    [event] = _events(engine, "token_issued")
    assert event.client_id == client_id
    assert event.details["grant_type"] == "client_credentials"


def test_other_events_are_written_with_their_request(queued_app: Flask, engine: Engine) -> None:
    with db.transaction(queued_app) as session:
        make_user(queued_app, session)
        registered = make_client(session)
    queue = runtime(queued_app).audit_queue
    assert queue is not None

    token_request(
        queued_app.test_client(),
        registered,
        grant_type="password",
        username="ann@example.com",
        password="not the password",
    )

    # No waiting: the failure was committed by the request that saw it.
    assert len(_events(engine, "signin_failed")) == 1
    assert queue.pending() == 0


def test_user_tokens_rows_commit_with_their_request_while_the_queue_is_on(
    queued_app: Flask, engine: Engine
) -> None:
    """Only client_credentials' rows wait: a password grant's and a refresh's token_issued rows
    are in the table when the response arrives, and nothing is queued."""
    with db.transaction(queued_app) as session:
        make_user(queued_app, session)
        registered = make_client(session)
    queue = runtime(queued_app).audit_queue
    assert queue is not None
    http = queued_app.test_client()

    signed_in = token_request(
        http, registered, grant_type="password", username="ann@example.com", password=PASSWORD
    )
    assert signed_in.status_code == 200, signed_in.json
    assert len(_events(engine, "token_issued")) == 1
    refreshed = token_request(
        http, registered, grant_type="refresh_token", refresh_token=signed_in.json["refresh_token"]
    )
    assert refreshed.status_code == 200, refreshed.json

    grants = sorted(e.details["grant_type"] for e in _events(engine, "token_issued"))
    assert grants == ["password", "refresh_token"]
    assert queue.pending() == 0


def test_the_queue_is_on_by_default_and_zero_turns_it_off(config: Config) -> None:
    assert Config.from_env({}).token_audit_flush_ms == 200
    assert Config.from_env({"AUTHSERVER_TOKEN_AUDIT_FLUSH_MS": "0"}).token_audit_flush_ms == 0
    default = create_app(replace(config, token_audit_flush_ms=200))
    off = create_app(replace(config, token_audit_flush_ms=0))
    try:
        assert runtime(default).audit_queue is not None
        assert runtime(off).audit_queue is None
    finally:
        for application in (default, off):
            db.state(application).engine.dispose()


def test_queued_rows_are_written_when_the_process_exits(
    database_url: str, engine: Engine, tmp_path: Any
) -> None:
    """A normal exit (gunicorn's graceful stop) writes the queue out before the process ends,
    even with a flush interval far longer than the process lives."""
    with Session(engine, expire_on_commit=False) as session:
        registered = make_client(session)
    script = textwrap.dedent(
        f"""
        from authserver.app import create_app
        from authserver.config import Config
        app = create_app(Config(
            database_url={database_url!r}, instance_dir={str(tmp_path)!r},
            log_level="WARNING", token_audit_flush_ms=3_600_000,
        ))
        response = app.test_client().post(
            "/oauth/token", data={{"grant_type": "client_credentials"}},
            auth=({registered.client.client_id!r}, {registered.client_secret!r}),
        )
        assert response.status_code == 200, response.data
        """
    )
    try:
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
        assert len(_events(engine, "token_issued")) == 1
    finally:
        truncate_all(engine)


def test_rows_wait_while_the_database_is_unreachable_and_are_written_once_it_is_back(
    engine: Engine,
) -> None:
    unreachable = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    target = {"engine": unreachable}
    queue = AuditQueue(
        row_writer(lambda statement, params: _run(target["engine"], statement, params)), 3600
    )
    queue.put(
        {
            "occurred_at": datetime.now(UTC),
            "event_type": "token_issued",
            "user_id": None,
            "client_id": "queued-client",
            "ip_address": "127.0.0.1",
            "user_agent": None,
            "details": {"grant_type": "client_credentials"},
        }
    )
    try:
        assert queue.flush() == 0
        assert queue.pending() == 1
        target["engine"] = engine  # the database is back
        assert queue.flush() == 1
        assert [e.client_id for e in _events(engine, "token_issued")] == ["queued-client"]
    finally:
        unreachable.dispose()
        truncate_all(engine)


def _run(engine: Engine, statement: Any, params: Any) -> list[Any]:
    with engine.begin() as connection:
        connection.execute(statement, params)
    return []


# -- execute_alone ---------------------------------------------------------------------------


@pytest.fixture
def probe_session(engine: Engine, config: Config) -> Iterator[Session]:
    """A session of a server on the real engine, and an empty table ``alone_probe``."""
    application = create_app(config)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS alone_probe"))
        connection.execute(text("CREATE TABLE alone_probe (n integer)"))
    session = db.state(application).session_factory()
    yield session
    session.close()
    db.state(application).engine.dispose()
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS alone_probe"))


def _probe_count(engine: Engine) -> int:
    with engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(text("alone_probe")))
        return int(count.scalar_one())


@pytest.mark.postgres_only  # SQLite runs such statements in the session's transaction
def test_a_statement_run_alone_is_committed_whatever_the_session_does_next(
    probe_session: Session, engine: Engine
) -> None:
    execute_alone(probe_session, text("INSERT INTO alone_probe VALUES (1)"), {})
    assert _probe_count(engine) == 1  # visible before the session commits
    probe_session.rollback()
    assert _probe_count(engine) == 1  # and the session's rollback does not undo it


def test_a_statement_joins_a_session_that_already_used_the_database(
    probe_session: Session, engine: Engine
) -> None:
    """A second connection could wait on a row lock the session holds: join it instead."""
    probe_session.execute(text("INSERT INTO alone_probe VALUES (1)"))
    execute_alone(probe_session, text("INSERT INTO alone_probe VALUES (2)"), {})
    probe_session.rollback()
    assert _probe_count(engine) == 0


def test_a_negative_flush_interval_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"AUTHSERVER_TOKEN_AUDIT_FLUSH_MS": "-1"})
    assert caught.value.problems == ["AUTHSERVER_TOKEN_AUDIT_FLUSH_MS must be 0 (off) or positive"]
    assert Config.from_env({"AUTHSERVER_TOKEN_AUDIT_FLUSH_MS": "250"}).token_audit_flush_ms == 250
