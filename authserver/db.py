"""Engine, the per-request session, and the declarative base.

One transaction per request: services flush, and the request boundary commits before the
response leaves (see ``commit_request_session``), so a token is never handed out unless the
rows behind it are durable. A failed request rolls back. A hot path whose whole database work
is one statement may send it on its own instead (``execute_alone``: autocommit on
PostgreSQL), durable when it returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, current_app, g
from sqlalchemy import (
    JSON,
    ColumnElement,
    DateTime,
    Engine,
    Executable,
    MetaData,
    Row,
    create_engine,
    event,
    update,
)
from sqlalchemy.engine import CursorResult, Dialect, Result
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite's busy timeout in milliseconds: how long a writer waits for the lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 10_000


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL keeps ``timestamptz``; SQLite has no time zones, so values are stored as naive
    UTC and given their zone back on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 (SQLAlchemy reads this class attribute)
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[str]: JSON(),
    }


def _configure_sqlite(engine: Engine) -> None:
    """Make the development database safe for the threaded dev server.

    WAL lets readers and the writer proceed together; the busy timeout makes a second writer
    wait instead of failing; and BEGIN IMMEDIATE takes the write lock at the start of every
    transaction, so a read-then-write transaction never fails half way with "database is
    locked" when another writer got in between.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, *, prepare_threshold: int = 5, **overrides: Any) -> Engine:
    """The engine for ``url``, tuned for an authorization server's short transactions."""
    # hide_parameters: an error message or SQL log never carries a digest, hash or token.
    options: dict[str, Any] = {"future": True, "hide_parameters": True}
    if url.startswith("sqlite"):
        options["connect_args"] = {"check_same_thread": False, "timeout": 10}
    else:
        options.update(
            pool_size=10,
            max_overflow=10,
            pool_timeout=5,
            connect_args={
                "connect_timeout": 3,
                # psycopg prepares a statement server-side after this many runs on one
                # connection; 0 never does (PgBouncer before 1.21 in transaction mode).
                "prepare_threshold": prepare_threshold or None,
            },
        )
    options.update(overrides)
    engine = create_engine(url, **options)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    else:
        _ping_idle_connections(engine)
    return engine


# A pooled connection unused for this long is pinged before a request gets it.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    """SQLAlchemy's pool_pre_ping, but only for connections that sat idle.

    A ping is a round trip; on every checkout it was one of the seven of a refresh. A busy
    server hands out connections that were used milliseconds ago, and if the database goes
    away under load the failing statement invalidates the whole pool anyway (the request
    answers 503). What the ping is for is the connection left idle across a database
    restart: that one is checked, and replaced before a request sees it.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # One dead idle connection means a restart: the pool replaces all of them.
            raise InvalidatePoolError() from exc


# Runs one statement as a transaction of its own and returns its rows (none for a write
# without RETURNING); ``params`` may be a list of rows (executemany).
RunAlone = Callable[[Executable, Any], Sequence[Row[Any]]]
RUN_ALONE = "authserver.run_alone"


def _rows_of(result: Result[Any]) -> Sequence[Row[Any]]:
    # A write without RETURNING has no rows, and asking it for them raises.
    if isinstance(result, CursorResult) and not result.returns_rows:
        return []
    return result.all()


def autocommit_runner(engine: Engine) -> RunAlone:
    """PostgreSQL: the statement in autocommit mode, one round trip where BEGIN, the statement
    and COMMIT are three. A single statement is atomic on its own."""
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    def run_alone(statement: Executable, params: Any) -> Sequence[Row[Any]]:
        with autocommit.connect() as connection:
            result = connection.execute(statement, params)
            return _rows_of(result)

    return run_alone


def session_runner(factory: Callable[[], Session]) -> RunAlone:
    """The statement in a short session of its own (SQLite, and tests whose sessions share one
    rolled-back connection)."""

    def run_alone(statement: Executable, params: Any) -> Sequence[Row[Any]]:
        with factory() as session, session.begin():
            result = session.execute(statement, params)
            return _rows_of(result)

    return run_alone


def update_loaded_row(
    session: Session, row: Any, where: Sequence[ColumnElement[bool]], values: dict[str, Any]
) -> None:
    """UPDATE ``row`` WHERE ``where`` SET ``values``, and show the loaded object the new values
    as committed ones. ``where`` names the row by its distribution key as well as its id
    (docs/PERFORMANCE.md, "Distribution keys"), which the ORM's own flush, by primary key
    alone, would not."""
    session.execute(
        update(type(row))
        .where(*where)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    for name, value in values.items():
        set_committed_value(row, name, value)


def execute_alone(session: Session, statement: Executable, params: Any) -> Sequence[Row[Any]]:
    """Run ``statement`` committed on its own, before and apart from ``session``'s work.

    For the hot paths whose whole database work is one statement (a refresh rotation, an
    introspection's check): outside the request's transaction they need no BEGIN and COMMIT.
    If the session has already talked to the database, or was made without a runner (a test
    transaction), the statement joins the session instead: a statement on a second connection
    could wait on a row lock the session itself holds.
    """
    runner: RunAlone | None = session.info.get(RUN_ALONE)
    transaction = session.get_transaction()
    # A session begins its transaction without a connection (merging a cached client does);
    # SQLAlchemy has no public way to ask whether it holds one, so this reads the
    # transaction's own map of connections. tests/test_audit_queue.py pins both outcomes.
    if runner is None or (transaction is not None and transaction._connections):
        result = session.execute(statement, params)
        return _rows_of(result)
    return runner(statement, params)


@dataclass
class DatabaseState:
    engine: Engine
    session_factory: sessionmaker[Session]
    run_alone: RunAlone


class Database:
    """The database extension: created unbound, attached in ``create_app``."""

    EXTENSION_KEY = "authserver.db"

    def init_app(self, app: Flask, url: str, *, prepare_threshold: int = 5) -> None:
        engine = make_engine(url, prepare_threshold=prepare_threshold)
        # SQLite takes its write lock at BEGIN: a second writer beside the request's own
        # transaction would only wait for it, so statements there always join the session.
        runner = autocommit_runner(engine) if engine.dialect.name == "postgresql" else None
        factory = sessionmaker(
            bind=engine, expire_on_commit=False, info={RUN_ALONE: runner} if runner else {}
        )
        app.extensions[self.EXTENSION_KEY] = DatabaseState(
            engine, factory, runner or session_runner(factory)
        )
        # The commit hook is registered by create_app, last, so that it runs first.
        app.teardown_request(close_request_session)

    @staticmethod
    def state(app: Flask | None = None) -> DatabaseState:
        target = app if app is not None else current_app
        state: DatabaseState = target.extensions[Database.EXTENSION_KEY]
        return state

    @property
    def session(self) -> Session:
        """The session of the current request, opened on first use."""
        if "db_session" not in g:
            g.db_session = self.state().session_factory()
        session: Session = g.db_session
        return session

    @contextmanager
    def transaction(self, app: Flask) -> Iterator[Session]:
        """One unit of work outside a request (a CLI command): commit on success."""
        session = self.state(app).session_factory()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


def commit_request_session(response: Response) -> Response:
    """Commit the request's work before the response is sent.

    Runs for error responses too: an ``invalid_grant`` caused by refresh-token reuse must
    still commit the family's revocation. Unexpected errors have rolled back before this
    point (``errors.py``), so there is nothing left to commit for them.
    """
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        try:
            session.commit()
        finally:
            session.close()
    return response


def close_request_session(_exc: BaseException | None) -> None:
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        session.rollback()
        session.close()


db = Database()


def discard_request_session() -> None:
    """Roll back the current request's work (an unexpected error happened)."""
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        session.rollback()
        session.close()
