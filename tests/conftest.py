"""Test database and app fixtures.

Which database: ``TEST_DATABASE_URL`` if set; else a throwaway PostgreSQL from testcontainers
when a Docker engine answers; else SQLite, with the PostgreSQL-only tests skipped (and a line
saying so). ``AUTHSERVER_TEST_REQUIRE_POSTGRES=1`` turns that fallback into an error.

Under pytest-xdist (``make test`` runs ``-n``) each worker gets a database of its own on the
same server: ``<database>_<worker id>`` (``authserver_test_gw0``), created through an admin
connection, built by the migrations like the serial run's, and dropped when the worker ends.
The controller finds the server once (it starts the one testcontainers PostgreSQL, if any) and
hands it to the workers. On SQLite each worker has its own file in a temporary folder. The suite
drops only databases it created: each carries a comment saying so, and one that exists without
it is left alone and reported.

A serial run empties the database ``TEST_DATABASE_URL`` names and builds it anew, so the run
starts only on a database that is plainly for tests (``check_test_database``): one the suite
marked, one a word of whose name starts with "test", or one with nothing in it. Anything else
(someone's development or production database) stops the run before it touches a table,
unless ``AUTHSERVER_TEST_ALLOW_ANY_DATABASE=1`` says to go on.

The schema is built by the alembic migrations, never by ``create_all()``. Each test runs in an
outer transaction that is rolled back (``join_transaction_mode="create_savepoint"``, as
warehouse does); tests about concurrency or real HTTP use committed data and clean up after.
docs/testing.md says how everything else tests could share is kept apart.
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings
from sqlalchemy import Connection, Engine, create_engine, event, make_url, pool, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import make_server

from authserver import create_app
from authserver.config import Config
from authserver.db import Base, db, make_engine, session_runner, utcnow
from authserver.runtime import runtime
from tests.helpers import Clock, wait_until

REQUIRE_POSTGRES = os.environ.get("AUTHSERVER_TEST_REQUIRE_POSTGRES") == "1"

# Property-based tests are judged on what they find, never on how long an example took: no
# deadline per example and no "too slow" health check, for every test, including ones that
# build their own settings (they start from this profile).
settings.register_profile("authserver", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("authserver")
SQLITE_SKIP_REASON = "needs PostgreSQL (running on the SQLite fallback)"
# Every database the suite creates says so; the suite drops no database without this comment.
SUITE_DATABASE_COMMENT = "authserver test suite: made by a test run and dropped at its end"
# The mark of a database TEST_DATABASE_URL names that a serial run found empty and built: the
# schema in it is the suite's, and later runs may empty it again.
SUITE_SCHEMA_COMMENT = "authserver test suite: its schema is rebuilt by every test run"
SUITE_MARKS = (SUITE_DATABASE_COMMENT, SUITE_SCHEMA_COMMENT)
# The same two marks on an SQLite file, which has no comments: its header's application id.
SQLITE_SUITE_APPLICATION_ID = 0x41535453
# A name plainly for tests: a word of it starts with "test" (authserver_test, test-db,
# authserver_tests), where "latest" or "contest" do not.
TEST_DATABASE_NAME = re.compile(r"(?:^|[^a-z])test", re.IGNORECASE)
ALLOW_ANY_DATABASE = "AUTHSERVER_TEST_ALLOW_ANY_DATABASE"
# What the xdist controller hands each worker: (server URL or "" for SQLite, where it came from).
HANDED_DATABASE = "authserver_test_database"
# PostgreSQL truncates longer identifiers, and two names could then meet.
MAX_DATABASE_NAME_BYTES = 63


def worker_id(config: pytest.Config) -> str | None:
    """``gw0``, ``gw1``... in a pytest-xdist worker; None in a serial run or the controller."""
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    return None if workerinput is None else str(workerinput["workerid"])


def is_xdist_controller(config: pytest.Config) -> bool:
    """Whether this process hands tests to xdist workers and runs none itself."""
    distributes = getattr(config.option, "dist", "no") != "no"
    return distributes and worker_id(config) is None and not config.option.collectonly


class TestDatabase:
    def __init__(self) -> None:
        # The database the tests of this process use ("" in an xdist controller, which runs
        # none).
        self.url = ""
        # The PostgreSQL server's database named by TEST_DATABASE_URL or testcontainers; ""
        # on the SQLite fallback.
        self.server_url = ""
        self.source = ""
        self.per_worker = False
        self._created: list[str] = []
        # A connection to the worker's database held for the whole run: another run on the same
        # TEST_DATABASE_URL then sees it in use and leaves it alone, even before the first test
        # connects.
        self._keeper: Connection | None = None
        self._container: Any = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        # PostgreSQL-only tests skipped on SQLite, counted from the reports (so an xdist
        # controller counts its workers' skips too).
        self.skipped_for_sqlite = 0

    @property
    def is_postgres(self) -> bool:
        return (self.url or self.server_url).startswith("postgresql")

    def start(self, config: pytest.Config) -> None:
        workerinput: dict[str, Any] = getattr(config, "workerinput", {})
        handed = workerinput.get(HANDED_DATABASE)
        if handed is not None:
            self.server_url, self.source = handed
        else:
            self.server_url, self.source = self._find_server()
        worker = worker_id(config)
        self.per_worker = worker is not None or is_xdist_controller(config)
        if handed is None and self.source == "TEST_DATABASE_URL":
            # Once, where a refusal is one line (a worker's would be a node's traceback).
            accepted = check_test_database(self.server_url)
            if accepted == "empty" and not self.per_worker:
                # A serial run builds the schema in it: from now on it is the suite's.
                mark_test_database(self.server_url)
        if worker is not None and self.server_url.startswith("postgresql"):
            name = f"{make_url(self.server_url).database}_{worker}"
            self.url = create_suite_database(self.server_url, name)
            self._created.append(name)
            keeper = create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
            self._keeper = keeper.connect()
        elif self.server_url and not self.per_worker:
            self.url = self.server_url
        elif worker is not None or not self.per_worker:
            # The fallback, or an SQLite TEST_DATABASE_URL under xdist: a file per process.
            self._tmpdir = tempfile.TemporaryDirectory(prefix="authserver-test-")
            self.url = f"sqlite:///{Path(self._tmpdir.name) / 'test.db'}"

    def _find_server(self) -> tuple[str, str]:
        url = os.environ.get("TEST_DATABASE_URL")
        if url:
            return url, "TEST_DATABASE_URL"
        container_url = self._try_testcontainers()
        if container_url:
            return container_url, "testcontainers"
        if REQUIRE_POSTGRES:
            raise pytest.UsageError(
                "AUTHSERVER_TEST_REQUIRE_POSTGRES=1 but no PostgreSQL: set TEST_DATABASE_URL "
                "or run a Docker engine for testcontainers"
            )
        return "", "SQLite fallback"

    def _try_testcontainers(self) -> str | None:
        if not _docker_engine_answers():
            return None
        from testcontainers.postgres import PostgresContainer

        # One container for the whole run: under xdist the controller starts it and each
        # worker creates its database in it, as on any other server.
        self._container = PostgresContainer("postgres:16-alpine", driver="psycopg")
        self._container.start()
        url: str = self._container.get_connection_url()
        return url

    def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.close()
            self._keeper.engine.dispose()
        for name in self._created:
            drop_suite_database(self.server_url, name)
        if self._container is not None:
            self._container.stop()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()

    def describe(self) -> str:
        if not self.server_url.startswith("postgresql"):
            where = "SQLite, a file per worker" if self.per_worker else self.url
            return f"{where} ({self.source})"
        server = make_url(self.server_url)
        name = f"{server.database}_<worker>, one per worker" if self.per_worker else server.database
        return f"{server.host}:{server.port}/{name} ({self.source})"


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


@contextmanager
def _admin_connection(server_url: str) -> Iterator[Connection]:
    """A connection to the server's own database that may create and drop others."""
    admin = create_engine(
        make_url(server_url), isolation_level="AUTOCOMMIT", poolclass=pool.NullPool
    )
    try:
        try:
            conn = admin.connect()
        except OperationalError as exc:
            # One line for the person running the suite, not a traceback of the pool.
            first = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            raise pytest.UsageError(
                f"cannot connect to TEST_DATABASE_URL's database ({first}); create it first, "
                "for example with createdb"
            ) from None
        with conn:
            yield conn
    finally:
        admin.dispose()


def check_test_database(url: str) -> str:
    """Why the suite may run on the database ``url`` names, which a serial run empties: "mark"
    (the suite's), "name" (plainly for tests), "empty", or "allowed" (by
    AUTHSERVER_TEST_ALLOW_ANY_DATABASE=1). Any other database stops the run, untouched."""
    if os.environ.get(ALLOW_ANY_DATABASE) == "1":
        return "allowed"
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        name = Path(parsed.database or "").name
        marked, objects = _sqlite_mark_and_objects(parsed.database or "")
    else:
        name = parsed.database or ""
        with _admin_connection(url) as conn:
            comment = conn.execute(
                text(
                    "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database "
                    "WHERE datname = current_database()"
                )
            ).scalar()
            marked = comment in SUITE_MARKS
            # Tables, views, materialized views, sequences and foreign tables of any schema
            # but the system's.
            objects = conn.execute(
                text(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') "
                    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
                )
            ).scalar_one()
    if marked:
        return "mark"
    if TEST_DATABASE_NAME.search(name):
        return "name"
    if objects == 0:
        return "empty"
    raise pytest.UsageError(
        f"TEST_DATABASE_URL names the database {name!r}, which is not empty ({objects} "
        "tables, views or sequences) and was not made by this test suite: a test run empties "
        "the database it is given, so it starts only on one plainly for tests. Name a database "
        'a word of whose name starts with "test" (authserver_test), or an empty one; or set '
        f"{ALLOW_ANY_DATABASE}=1 to empty this one"
    )


def _sqlite_mark_and_objects(path: str) -> tuple[bool, int]:
    if not path or path == ":memory:" or not Path(path).exists():
        return False, 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        objects = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        ).fetchone()[0]
    finally:
        conn.close()
    return application_id == SQLITE_SUITE_APPLICATION_ID, int(objects)


def mark_test_database(url: str) -> None:
    """Mark the database ``url`` names as the suite's (``check_test_database`` accepts it from
    now on), unless it carries a comment of someone else's."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        conn = sqlite3.connect(parsed.database or "")
        try:
            conn.execute(f"PRAGMA application_id = {SQLITE_SUITE_APPLICATION_ID}")
            conn.commit()
        finally:
            conn.close()
        return
    with _admin_connection(url) as conn:
        comment = conn.execute(
            text(
                "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database "
                "WHERE datname = current_database()"
            )
        ).scalar()
        if not comment:
            name = (parsed.database or "").replace('"', '""')
            conn.execute(text(f"COMMENT ON DATABASE \"{name}\" IS '{SUITE_SCHEMA_COMMENT}'"))


def create_suite_database(server_url: str, name: str) -> str:
    """Create the empty database ``name`` on ``server_url``'s server, marked as the suite's;
    return its URL.

    A database of that name left by an interrupted run (it carries the mark, and nobody is
    connected to it) is dropped first. One without the mark, or one in use by another run, is
    left alone: the run stops and says so.
    """
    if len(name.encode()) > MAX_DATABASE_NAME_BYTES:
        raise pytest.UsageError(
            f"test database name {name!r} is longer than PostgreSQL's {MAX_DATABASE_NAME_BYTES} "
            "bytes: name a shorter database in TEST_DATABASE_URL"
        )
    with _admin_connection(server_url) as conn:
        comment = conn.execute(
            text(
                "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database "
                "WHERE datname = :name"
            ),
            {"name": name},
        ).scalar()
        if comment is not None:
            if comment != SUITE_DATABASE_COMMENT:
                raise pytest.UsageError(
                    f"database {name!r} exists and was not made by this test suite, which "
                    "drops only its own: drop it yourself or name another TEST_DATABASE_URL"
                )
            try:
                # Without FORCE: a run still connected to it keeps it.
                conn.execute(text(f'DROP DATABASE "{name}"'))
            except DBAPIError as exc:
                raise pytest.UsageError(
                    f"database {name!r} is in use by another test run on the same "
                    f"TEST_DATABASE_URL ({str(exc.orig).strip()})"
                ) from None
        conn.execute(text(f'CREATE DATABASE "{name}"'))
        conn.execute(text(f"COMMENT ON DATABASE \"{name}\" IS '{SUITE_DATABASE_COMMENT}'"))
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_suite_database(server_url: str, name: str) -> None:
    """Drop a database this run created with ``create_suite_database``."""
    with _admin_connection(server_url) as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


TEST_DB = TestDatabase()


def pytest_configure(config: pytest.Config) -> None:
    TEST_DB.start(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    TEST_DB.stop()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: hand the server it found (or started) to each worker."""
    node.workerinput[HANDED_DATABASE] = (TEST_DB.server_url, TEST_DB.source)


def pytest_report_header(config: pytest.Config) -> str:
    return f"authserver test database: {TEST_DB.describe().split('@')[-1]}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if TEST_DB.is_postgres:
        return
    skip = pytest.mark.skip(reason=SQLITE_SKIP_REASON)
    for item in items:
        if "postgres_only" in item.keywords:
            item.add_marker(skip)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Runs where the reports are gathered: in a serial run, and in an xdist controller for
    # every worker's tests (collection, and so the marking above, happens in the workers).
    skipped = report.when == "setup" and report.skipped and isinstance(report.longrepr, tuple)
    if skipped and report.longrepr[2] == f"Skipped: {SQLITE_SKIP_REASON}":
        TEST_DB.skipped_for_sqlite += 1


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    # A line, not a warning: filterwarnings=error would turn a warning into a failure.
    skipped = TEST_DB.skipped_for_sqlite
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

    On PostgreSQL ``<test database>_<suffix>`` on the same server (so one per xdist worker, as
    the test database is), made and dropped like the workers' databases; on SQLite a file in
    ``folder``.
    """
    test_url = make_url(database_url)
    if test_url.get_backend_name() != "postgresql":
        yield f"sqlite:///{folder / f'{suffix}.db'}"
        return
    name = f"{test_url.database}_{suffix}"
    url = create_suite_database(database_url, name)
    try:
        yield url
    finally:
        drop_suite_database(database_url, name)


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
    return suite_config(database_url, tmp_path)


def suite_config(database_url: str, folder: Path) -> Config:
    """The tests' settings, with the instance folder in ``folder``: the ``config`` fixture's,
    for a fixture of a wider scope."""
    return Config(
        database_url=database_url,
        issuer="http://127.0.0.1:8000",
        instance_dir=str(folder / "instance"),
        default_audience="https://api.example.test",
        log_level="WARNING",
        # No sender thread: tests deliver the outbox themselves (runtime.deliver_outbox), and
        # one that wants the thread turns it on for its own committed server.
        outbox_in_process=0,
        # No key-change listener either: it re-reads keys from a thread of its own, and the
        # rolled-back `app` shares one connection with the test. Tests of it turn it on.
        key_change_notifications=0,
        # client_credentials' audit rows commit with their request: a queue thread would write
        # them on a connection of its own, outside the rolled-back test transaction. The queue's
        # own tests (tests/test_audit_queue.py) turn it on.
        token_audit_flush_ms=0,
    )


def stop_outbox_sender(app: Flask) -> None:
    """Stop ``app``'s sender thread, if it has one, so it delivers nothing of a later test;
    and its key-change listener, which holds a connection of its own."""
    sender = runtime(app).outbox_sender
    if sender is not None:
        sender.close()
    listener = runtime(app).key_listener
    if listener is not None:
        listener.close()


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


def listening_socket() -> socket.socket:
    """A socket listening on 127.0.0.1 on a port the kernel picked.

    Hand it to the server (``make_server(..., fd=sock.fileno())``, gunicorn's
    ``-b fd://N`` with ``pass_fds``): the port is the server's from the first moment, where a
    port found free and bound later may have been taken in between by another test, worker or
    program.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()
    return f"http://{host}:{port}"


def gunicorn_files(folder: Path) -> dict[str, str]:
    """Environment for a gunicorn the tests start, so that its files are its own: gunicorn
    (25.1 and later) opens a control socket at ``$XDG_RUNTIME_DIR/gunicorn.ctl``, else
    ``~/.gunicorn/gunicorn.ctl``, one path that every gunicorn on the machine would take
    from the one started before it, and remove on its way out."""
    return {"XDG_RUNTIME_DIR": str(folder)}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago: only for a port nothing will
    listen on (a server that must listen gets ``listening_socket()``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(app: Flask, listener: socket.socket) -> Iterator[None]:
    """``app`` served on ``listener`` by a threaded werkzeug server, for the block's duration."""
    server = make_server("127.0.0.1", 0, app, threaded=True, fd=listener.fileno())
    listener.close()  # the server holds its own descriptor of the same socket
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        # shutdown() stops accepting, not the requests being answered (a client that went
        # away mid-request, an example's poller stopped mid-poll): wait until they have given
        # their database connections back. A connection handed back to a pool the caller has
        # disposed of meanwhile is never closed, and its ResourceWarning fails whichever test
        # of this worker happens to be running when the garbage collector finds it.
        if db.EXTENSION_KEY in app.extensions:  # an authserver, not an example app
            checked_out = getattr(db.state(app).engine.pool, "checkedout", None)
            if checked_out is not None:
                wait_until(lambda: checked_out() == 0, "requests in flight to finish")


class LiveServer:
    def __init__(self, app: Flask, url: str) -> None:
        self.app = app
        self.url = url


@pytest.fixture
def committed_app(engine: Engine, config: Config) -> Iterator[Flask]:
    """An app on the real engine: its commits are real (for concurrency tests)."""
    application = create_app(config)
    yield application
    stop_outbox_sender(application)
    db.state(application).engine.dispose()
    truncate_all(engine)


@pytest.fixture
def live_server(engine: Engine, config: Config) -> Iterator[LiveServer]:
    """The app behind a real threaded HTTP server on 127.0.0.1, with committed data."""
    listener = listening_socket()
    url = url_of(listener)
    application = create_app(replace(config, issuer=url))
    with serving(application, listener):
        yield LiveServer(application, url)
    stop_outbox_sender(application)
    db.state(application).engine.dispose()
    truncate_all(engine)


# Rate-limit counts of the tests that share them through Redis; each test counts under a
# prefix of its own (AUTHSERVER_RATELIMIT_KEY_PREFIX) and deletes only its own keys, so
# workers, and other people's runs on the same Redis, never see or wipe each other's.
REDIS_URL = "redis://127.0.0.1:6379/14"


def redis_answers() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=5).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def rate_limit_key_prefix() -> Iterator[str]:
    prefix = f"authserver-test-{uuid.uuid4().hex}"
    yield prefix
    store = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        for key in store.scan_iter(match=f"*{prefix}*", count=1000):
            store.delete(key)
    finally:
        store.close()


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
