"""The suite's own promise about databases: it drops only the ones it created.

``create_suite_database`` (tests/conftest.py) makes each worker's database and every scratch
database. A database of the same name that it did not make must survive, and so must one that
another run is using; a leftover of an interrupted run (its mark, nobody connected) is
replaced.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, make_url, pool, text

from tests.conftest import SUITE_DATABASE_COMMENT, create_suite_database, drop_suite_database

pytestmark = pytest.mark.postgres_only


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


def test_a_database_without_the_suites_mark_is_never_dropped(database_url: str, name: str) -> None:
    _create_unmarked(database_url, name)

    with pytest.raises(pytest.UsageError, match="was not made by this test suite"):
        create_suite_database(database_url, name)

    assert _exists(database_url, name)


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
