"""The suite's own promises about databases: it drops only the ones it created, and it
empties only a database that is plainly for tests.

``create_suite_database`` (tests/conftest.py) makes each worker's database and every scratch
database. A database of the same name that it did not make must survive, and so must one that
another run is using; a leftover of an interrupted run (its mark, nobody connected) is
replaced. ``check_test_database`` decides whether a run may start on the database
``TEST_DATABASE_URL`` names, which a serial run empties: the suite's mark, a name plainly for
tests, or nothing in it; else the run stops before touching it, unless told otherwise.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, make_url, pool, text

from authserver.cli import alembic_config
from tests.conftest import (
    ALLOW_ANY_DATABASE,
    SUITE_DATABASE_COMMENT,
    SUITE_SCHEMA_COMMENT,
    check_test_database,
    create_suite_database,
    drop_suite_database,
    mark_test_database,
)

REPOSITORY = Path(__file__).resolve().parent.parent
SERIAL_PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
# The test a pytest run in a subprocess runs: one that needs the schema built.
BUILDS_THE_SCHEMA = (
    "tests/test_suite_isolation.py::test_a_run_builds_the_schema_of_the_database_it_runs_on"
)


def _admin(database_url: str) -> Engine:
    return create_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)


def _exists(database_url: str, name: str) -> bool:
    engine = _admin(database_url)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).scalar()
    finally:
        engine.dispose()
    return found == 1


@pytest.fixture
def name(database_url: str) -> Iterator[str]:
    """A database name beside the test database; whatever the test leaves there is dropped
    (every database under it was made by this test)."""
    chosen = f"{make_url(database_url).database}_isolation"
    yield chosen
    drop_suite_database(database_url, chosen)


def _create_unmarked(database_url: str, name: str) -> None:
    engine = _admin(database_url)
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()


@pytest.mark.postgres_only
def test_a_database_without_the_suites_mark_is_never_dropped(database_url: str, name: str) -> None:
    _create_unmarked(database_url, name)

    with pytest.raises(pytest.UsageError, match="was not made by this test suite"):
        create_suite_database(database_url, name)

    assert _exists(database_url, name)


@pytest.mark.postgres_only
def test_a_marked_database_another_run_is_using_is_left_alone(database_url: str, name: str) -> None:
    url = create_suite_database(database_url, name)
    other_run = create_engine(url, poolclass=pool.NullPool)
    try:
        with other_run.connect() as conn:
            conn.execute(text("CREATE TABLE still_here (n integer)"))
            conn.commit()

            with pytest.raises(pytest.UsageError, match="in use by another test run"):
                create_suite_database(database_url, name)

            assert conn.execute(text("SELECT count(*) FROM still_here")).scalar() == 0
    finally:
        other_run.dispose()


@pytest.mark.postgres_only
def test_a_leftover_of_an_interrupted_run_is_replaced_by_an_empty_database(
    database_url: str, name: str
) -> None:
    url = create_suite_database(database_url, name)
    leftover = create_engine(url, poolclass=pool.NullPool)
    with leftover.begin() as conn:
        conn.execute(text("CREATE TABLE from_the_last_run (n integer)"))
    leftover.dispose()

    fresh = create_engine(create_suite_database(database_url, name), poolclass=pool.NullPool)
    try:
        with fresh.connect() as conn:
            tables = conn.execute(
                text("SELECT count(*) FROM pg_tables WHERE tablename = 'from_the_last_run'")
            ).scalar()
            mark = conn.execute(
                text(
                    "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                    "WHERE datname = current_database()"
                )
            ).scalar()
    finally:
        fresh.dispose()

    assert tables == 0
    assert mark == SUITE_DATABASE_COMMENT


# -- the database TEST_DATABASE_URL names ----------------------------------------------------


def test_a_run_builds_the_schema_of_the_database_it_runs_on(
    engine: Engine, database_url: str
) -> None:
    with engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()

    assert version == ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()


@pytest.fixture
def own_database(database_url: str) -> Iterator[str]:
    """The URL of a database beside the test database whose name is not a test database's
    (so not derived from the test database's, which may be): made empty and unmarked, as a
    developer's would be, and dropped afterwards."""
    name = f"authserver_keep_{uuid.uuid4().hex[:12]}"
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    _create_unmarked(database_url, name)
    yield url
    engine = _admin(database_url)
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def _put_a_ledger_in(url: str) -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE ledger (entry text)"))
            conn.execute(text("INSERT INTO ledger VALUES ('worth keeping')"))
    finally:
        engine.dispose()


def _ledger_of(url: str) -> list[str] | None:
    """The ledger's entries, or None when the table is gone."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            if not conn.execute(text("SELECT to_regclass('public.ledger')")).scalar():
                return None
            return list(conn.execute(text("SELECT entry FROM ledger")).scalars())
    finally:
        engine.dispose()


def _comment_of(url: str) -> str | None:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            comment: str | None = conn.execute(
                text(
                    "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                    "WHERE datname = current_database()"
                )
            ).scalar()
            return comment
    finally:
        engine.dispose()


def _pytest_run(url: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """A whole pytest run, serial, on ``url``, as a developer starts one."""
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "AUTHSERVER_TEST_")) and k != "TEST_DATABASE_URL"
    }
    environment.update(TEST_DATABASE_URL=url, **settings)
    return subprocess.run(
        [*SERIAL_PYTEST, BUILDS_THE_SCHEMA],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.postgres_only
def test_a_run_on_a_database_with_tables_not_made_for_tests_refuses_and_leaves_it_intact(
    own_database: str,
) -> None:
    _put_a_ledger_in(own_database)

    result = _pytest_run(own_database)

    assert result.returncode != 0, result.stdout
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    refusals = [line for line in output.splitlines() if "TEST_DATABASE_URL names" in line]
    assert len(refusals) == 1, output
    assert "was not made by this test suite" in refusals[0]
    assert f"{ALLOW_ANY_DATABASE}=1" in refusals[0]
    assert "passed" not in output
    assert _ledger_of(own_database) == ["worth keeping"]
    assert _comment_of(own_database) is None


@pytest.mark.postgres_only
def test_a_database_with_tables_is_emptied_only_when_the_run_is_told_to(
    own_database: str,
) -> None:
    _put_a_ledger_in(own_database)

    result = _pytest_run(own_database, **{ALLOW_ANY_DATABASE: "1"})

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert _ledger_of(own_database) is None
    # Told once is not told for ever: the database is not taken for the suite's.
    assert _comment_of(own_database) is None


@pytest.mark.postgres_only
def test_an_empty_database_is_built_marked_and_accepted_by_the_next_run(
    own_database: str,
) -> None:
    first = _pytest_run(own_database)
    assert first.returncode == 0, first.stdout + first.stderr
    assert _comment_of(own_database) == SUITE_SCHEMA_COMMENT

    again = _pytest_run(own_database)

    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 passed" in again.stdout


@pytest.mark.postgres_only
def test_a_database_named_for_tests_or_marked_by_the_suite_is_accepted_with_tables(
    database_url: str, own_database: str
) -> None:
    _put_a_ledger_in(own_database)
    with pytest.raises(pytest.UsageError):
        check_test_database(own_database)
    engine = _admin(database_url)
    name = make_url(own_database).database
    try:
        with engine.connect() as conn:
            conn.execute(text(f"COMMENT ON DATABASE \"{name}\" IS '{SUITE_DATABASE_COMMENT}'"))
    finally:
        engine.dispose()

    assert check_test_database(own_database) == "mark"
    # Named for tests: the name decides, whatever is in it.
    test_named = make_url(own_database).set(database=f"authserver_test_{uuid.uuid4().hex[:8]}")
    _create_unmarked(database_url, str(test_named.database))
    try:
        url = test_named.render_as_string(hide_password=False)
        _put_a_ledger_in(url)
        assert check_test_database(url) == "name"
    finally:
        drop_suite_database(database_url, str(test_named.database))


@pytest.mark.parametrize(
    ("name", "plainly_for_tests"),
    [
        ("authserver_test", True),
        ("test", True),
        ("authserver-tests", True),
        ("test_authserver", True),
        ("authserver", False),
        ("authserver_latest", False),
        ("contest", False),
        ("authserver_ci_1234", False),
    ],
)
def test_an_sqlite_file_with_tables_is_accepted_only_when_named_for_tests(
    tmp_path: Path, name: str, plainly_for_tests: bool
) -> None:
    path = tmp_path / f"{name}.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE ledger (entry text)")
    conn.close()

    if plainly_for_tests:
        assert check_test_database(f"sqlite:///{path}") == "name"
    else:
        with pytest.raises(pytest.UsageError, match="was not made by this test suite"):
            check_test_database(f"sqlite:///{path}")


def test_an_empty_sqlite_file_once_marked_is_accepted_with_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'authserver.db'}"
    assert check_test_database(url) == "empty"

    mark_test_database(url)
    with sqlite3.connect(tmp_path / "authserver.db") as conn:
        conn.execute("CREATE TABLE users (id integer)")
    conn.close()

    assert check_test_database(url) == "mark"
