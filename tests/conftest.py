"""Test database and app fixtures.

Which database: ``TEST_DATABASE_URL`` if set; else a throwaway PostgreSQL from testcontainers
when a Docker engine answers; else SQLite, with the PostgreSQL-only tests skipped (and a line
saying so). ``AUTHSERVER_TEST_REQUIRE_POSTGRES=1`` turns that fallback into an error.

The schema is built by the alembic migrations, never by ``create_all()``. Each test runs in an
outer transaction that is rolled back (``join_transaction_mode="create_savepoint"``, as
warehouse does); tests about concurrency or real HTTP use committed data and clean up after.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, event, make_url, pool, text
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import make_server

from authserver import create_app
from authserver.config import Config
from authserver.db import Base, db, make_engine, session_runner, utcnow
from authserver.runtime import runtime
from tests.helpers import Clock

REQUIRE_POSTGRES = os.environ.get("AUTHSERVER_TEST_REQUIRE_POSTGRES") == "1"


class TestDatabase:
    def __init__(self) -> None:
        self.url = ""
        self.source = ""
        self._container: Any = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith("postgresql")

    def start(self) -> None:
        url = os.environ.get("TEST_DATABASE_URL")
        if url:
            self.url, self.source = url, "TEST_DATABASE_URL"
            return
        container_url = self._try_testcontainers()
        if container_url:
            self.url, self.source = container_url, "testcontainers"
            return
        if REQUIRE_POSTGRES:
            raise pytest.UsageError(
                "AUTHSERVER_TEST_REQUIRE_POSTGRES=1 but no PostgreSQL: set TEST_DATABASE_URL "
                "or run a Docker engine for testcontainers"
            )
        self._tmpdir = tempfile.TemporaryDirectory(prefix="authserver-test-")
        self.url = f"sqlite:///{Path(self._tmpdir.name) / 'test.db'}"
        self.source = "SQLite fallback"

    def _try_testcontainers(self) -> str | None:
        if not _docker_engine_answers():
            return None
        from testcontainers.postgres import PostgresContainer

        self._container = PostgresContainer("postgres:16-alpine", driver="psycopg")
        self._container.start()
        url: str = self._container.get_connection_url()
        return url

    def stop(self) -> None:
        if self._container is not None:
            self._container.stop()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()


def _docker_engine_answers() -> bool:
    """Whether a Docker engine answers its ping (the client alone is not enough)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True  # a remote engine: let testcontainers find out
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(host.removeprefix("unix://"))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(1024)
    except OSError:
        return False


TEST_DB = TestDatabase()


def pytest_configure(config: pytest.Config) -> None:
    TEST_DB.start()


def pytest_unconfigure(config: pytest.Config) -> None:
    TEST_DB.stop()


def pytest_report_header(config: pytest.Config) -> str:
    return f"authserver test database: {TEST_DB.url.split('@')[-1]} ({TEST_DB.source})"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if TEST_DB.is_postgres:
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (running on the SQLite fallback)")
    skipped = 0
    for item in items:
        if "postgres_only" in item.keywords:
            item.add_marker(skip)
            skipped += 1
    config.stash[SKIPPED_FOR_SQLITE] = skipped


SKIPPED_FOR_SQLITE = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    # A line, not a warning: filterwarnings=error would turn a warning into a failure.
    skipped = config.stash.get(SKIPPED_FOR_SQLITE, 0)
    if skipped:
        terminalreporter.write_line(
            f"no PostgreSQL: {skipped} PostgreSQL-only tests were skipped on the SQLite "
            "fallback (set TEST_DATABASE_URL, or run a Docker engine, to run them)",
            yellow=True,
        )


def migrate(url: str, revision: str = "head") -> None:
    from alembic import command

    from authserver.cli import alembic_config

    alembic_cfg = alembic_config(url)
    alembic_cfg.attributes["configure_logger"] = False
    command.upgrade(alembic_cfg, revision)


def reset_schema(engine: Engine) -> None:
    """Drop everything, so the migrations build the schema from nothing."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(text(f'DROP TABLE IF EXISTS "{table.name}"'))
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))


@contextmanager
def scratch_database(database_url: str, suffix: str, folder: Path) -> Iterator[str]:
    """A second, empty database beside the test database, removed afterwards.

    On PostgreSQL ``<test database>_<suffix>`` on the same server; on SQLite a file in
    ``folder``.
    """
    test_url = make_url(database_url)
    if test_url.get_backend_name() != "postgresql":
        yield f"sqlite:///{folder / f'{suffix}.db'}"
        return
    name = f"{test_url.database}_{suffix}"
    admin = create_engine(test_url, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield test_url.set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def database_url() -> str:
    return TEST_DB.url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    reset_schema(engine)
    migrate(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def config(database_url: str, tmp_path: Path) -> Config:
    return Config(
        database_url=database_url,
        issuer="http://127.0.0.1:8000",
        instance_dir=str(tmp_path / "instance"),
        default_audience="https://api.example.test",
        log_level="WARNING",
    )


@pytest.fixture
def app(engine: Engine, config: Config) -> Iterator[Flask]:
    """An app whose every request and CLI command runs inside one rolled-back transaction."""
    application = create_app(config)
    connection = engine.connect()
    outer = connection.begin()
    state = db.state(application)
    state.engine.dispose()
    state.session_factory = sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    state.run_alone = session_runner(state.session_factory)
    yield application
    outer.rollback()
    connection.close()


@pytest.fixture
def clock(app: Flask) -> Clock:
    """The app's clock, moved by hand (``clock.advance(minutes=31)``)."""
    controlled = Clock(utcnow())
    runtime(app).clock = controlled
    return controlled


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def session(app: Flask) -> Iterator[Session]:
    """A session inside the test's transaction, for arranging data and checking outcomes."""
    s = db.state(app).session_factory()
    yield s
    s.close()


def truncate_all(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    def __init__(self, app: Flask, url: str) -> None:
        self.app = app
        self.url = url


@pytest.fixture
def committed_app(engine: Engine, config: Config) -> Iterator[Flask]:
    """An app on the real engine: its commits are real (for concurrency tests)."""
    application = create_app(config)
    yield application
    db.state(application).engine.dispose()
    truncate_all(engine)


@pytest.fixture
def live_server(engine: Engine, config: Config) -> Iterator[LiveServer]:
    """The app behind a real threaded HTTP server on 127.0.0.1, with committed data."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    application = create_app(replace(config, issuer=url))
    server = make_server("127.0.0.1", port, application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield LiveServer(application, url)
    server.shutdown()
    thread.join(timeout=5)
    db.state(application).engine.dispose()
    truncate_all(engine)


class StatementLog:
    """Every statement sent to the database while it listens (``statements`` fixture)."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append(statement)

    def reading(self, table: str) -> list[str]:
        return [
            s for s in self.statements if s.lstrip().upper().startswith("SELECT") and table in s
        ]

    def of_the_request(self) -> list[str]:
        """What a request sent, without the savepoints the test transaction wraps it in."""
        return [
            s
            for s in self.statements
            if not s.lstrip().upper().startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK"))
        ]


@pytest.fixture
def statements(engine: Engine) -> Iterator[StatementLog]:
    log = StatementLog()
    event.listen(engine, "before_cursor_execute", log)
    yield log
    event.remove(engine, "before_cursor_execute", log)
