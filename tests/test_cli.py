"""The ``authserver`` command, run as an operator runs it: a real process, a real database.

Contract (``authserver/cli.py``): every command is one transaction; bad input ends in one
``Error: ...`` line on stderr and a non-zero exit, never a traceback; a password comes on
standard input and is never echoed. The commands run against a database of this module's own:
on PostgreSQL ``<test database>_cli`` on the same server, built with ``authserver db upgrade``;
on the SQLite fallback a file in a temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import delete, inspect, select, text

from authserver import create_app
from authserver.cli import alembic_config
from authserver.config import Config
from authserver.db import db, make_engine, utcnow
from authserver.models import Client, RefreshFamily, SigningKey, User
from authserver.runtime import runtime
from authserver.services.audit import recent_events
from authserver.services.users import check_password, create_user, find_user_by_email
from tests.browser_helpers import sign_in
from tests.conftest import free_port, scratch_database, truncate_all
from tests.helpers import make_client, password_login, refresh, token_request

AUTHSERVER = Path(sys.executable).parent / "authserver"
UNREACHABLE_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/nope"
PASSWORD = "a long and unguessable passphrase"
TABLES = {"users", "clients", "signing_keys", "refresh_families", "refresh_tokens"}
# A record from the logging configured in create_app: "2026-11-27 08:16:50,275 INFO name: ...".
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def run_cli(
    *args: str, env: Mapping[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AUTHSERVER), *args],
        env=dict(env),
        input=stdin,
        cwd=env["AUTHSERVER_INSTANCE_DIR"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _base_environment(instance_dir: Path) -> dict[str, str]:
    """The caller's environment without any authserver or Flask settings of its own."""
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AUTHSERVER_", "FLASK_")) and k != "DATABASE_URL"
    }
    instance_dir.mkdir(parents=True, exist_ok=True)
    environment["AUTHSERVER_INSTANCE_DIR"] = str(instance_dir)
    return environment


def said(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def message_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """What the command itself wrote to stderr: every line that is not a log record."""
    return [line for line in result.stderr.splitlines() if not LOG_RECORD.match(line)]


def assert_fails_with_one_line(
    result: subprocess.CompletedProcess[str], starting: str = "Error: "
) -> str:
    assert result.returncode != 0
    assert "Traceback" not in said(result)
    lines = message_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(starting), lines[0]
    return lines[0]


@contextmanager
def migrated_scratch_database(
    database_url: str, name: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database of the module's own, brought to head by ``authserver db upgrade`` as an
    operator would, and dropped afterwards."""
    folder = tmp_path_factory.mktemp(f"{name}-database")
    with scratch_database(database_url, name, folder) as url:
        upgrade = run_cli(
            "db", "upgrade", env={**_base_environment(folder / "instance"), "DATABASE_URL": url}
        )
        assert upgrade.returncode == 0, upgrade.stderr
        yield url


@contextmanager
def arranging_app(database_url: str, instance_dir: Path) -> Iterator[Flask]:
    """The server in the test's process, on the commands' database: to arrange rows and
    check them. No outbox sender thread; everything it wrote is truncated afterwards."""
    app = create_app(
        Config(
            database_url=database_url,
            instance_dir=str(instance_dir),
            log_level="WARNING",
            outbox_in_process=0,
            key_change_notifications=0,
        )
    )
    try:
        yield app
    finally:
        engine = db.state(app).engine
        truncate_all(engine)
        engine.dispose()


def unique_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


@dataclass(frozen=True)
class CliDatabase:
    url: str
    # The `authserver db upgrade` that built the schema.
    upgrade: subprocess.CompletedProcess[str]

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith("postgresql")


@pytest.fixture(scope="module")
def cli_database(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CliDatabase]:
    folder = tmp_path_factory.mktemp("cli-database")
    with scratch_database(database_url, "cli", folder) as url:
        environment = {**_base_environment(folder / "instance"), "DATABASE_URL": url}
        yield CliDatabase(url, run_cli("db", "upgrade", env=environment))


@pytest.fixture
def cli_env(cli_database: CliDatabase, tmp_path: Path) -> dict[str, str]:
    return {**_base_environment(tmp_path / "instance"), "DATABASE_URL": cli_database.url}


@pytest.fixture
def production_env(cli_database: CliDatabase, tmp_path: Path) -> dict[str, str]:
    """A production configuration that passes every check."""
    return {
        **_base_environment(tmp_path / "instance"),
        "AUTHSERVER_ENV": "production",
        "AUTHSERVER_SECRET_KEY": secrets.token_urlsafe(32),
        "AUTHSERVER_KEY_ENCRYPTION_KEY": secrets.token_urlsafe(32),
        "AUTHSERVER_ISSUER": "https://auth.example.test",
        # Production refuses SQLite; on the fallback there is no PostgreSQL to point at, and
        # what is tested here must be refused before any connection is tried.
        "DATABASE_URL": cli_database.url if cli_database.is_postgres else UNREACHABLE_DATABASE,
    }


@pytest.fixture
def cli_app(cli_database: CliDatabase, tmp_path: Path) -> Iterator[Flask]:
    """The server in this process, on the CLI's database: to check what the commands did."""
    app = create_app(
        Config(
            database_url=cli_database.url,
            instance_dir=str(tmp_path / "app-instance"),
            log_level="WARNING",
            # Only to arrange and check rows: no outbox sender thread in the test process.
            outbox_in_process=0,
            key_change_notifications=0,
        )
    )
    yield app
    db.state(app).engine.dispose()


# -- db ------------------------------------------------------------------------------------


def test_db_upgrade_brings_an_empty_database_to_head(cli_database: CliDatabase) -> None:
    result = cli_database.upgrade

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "database upgraded to head"
    engine = make_engine(cli_database.url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
    head = ScriptDirectory.from_config(alembic_config(cli_database.url)).get_current_head()
    assert version == head


# -- users ---------------------------------------------------------------------------------


def test_users_create_takes_the_password_from_stdin_and_the_user_can_sign_in(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    email = unique_email()

    result = run_cli("users", "create", email, "--password-stdin", env=cli_env, stdin=PASSWORD)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"created user {email} (")
    with db.transaction(cli_app) as session:
        assert check_password(session, runtime(cli_app).hasher, email, PASSWORD).user is not None


def test_users_create_never_prints_the_password(cli_env: dict[str, str]) -> None:
    result = run_cli(
        "users", "create", unique_email(), "--password-stdin", env=cli_env, stdin=PASSWORD + "\n"
    )

    assert result.returncode == 0, result.stderr
    assert PASSWORD not in said(result)


def test_users_create_without_password_stdin_fails_with_one_line(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    email = unique_email()

    result = run_cli("users", "create", email, env=cli_env, stdin=PASSWORD)

    assert_fails_with_one_line(result)
    assert PASSWORD not in said(result)
    with db.transaction(cli_app) as session:
        assert find_user_by_email(session, email) is None


def test_users_create_of_an_existing_email_fails_with_one_line(cli_env: dict[str, str]) -> None:
    email = unique_email()
    first = run_cli("users", "create", email, "--password-stdin", env=cli_env, stdin=PASSWORD)
    assert first.returncode == 0, first.stderr

    # Another spelling of the same address is the same user.
    again = run_cli(
        "users", "create", email.upper(), "--password-stdin", env=cli_env, stdin=PASSWORD
    )

    line = assert_fails_with_one_line(again)
    assert "already exists" in line


def test_users_create_with_an_invalid_email_fails_with_one_line(cli_env: dict[str, str]) -> None:
    result = run_cli(
        "users", "create", "not-an-email", "--password-stdin", env=cli_env, stdin=PASSWORD
    )

    line = assert_fails_with_one_line(result)
    assert "not a valid email address" in line


def test_users_create_with_a_too_short_password_fails_with_one_line(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    email = unique_email()

    result = run_cli("users", "create", email, "--password-stdin", env=cli_env, stdin="Sh0rt!\n")

    line = assert_fails_with_one_line(result)
    assert "at least 8 characters" in line
    assert "Sh0rt!" not in said(result)
    with db.transaction(cli_app) as session:
        assert find_user_by_email(session, email) is None


def test_users_create_with_a_common_password_fails_with_one_line_saying_why(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    # One example through the CLI; tests/unit/test_password_policy.py has the many.
    weak = "summer2024!"
    email = unique_email()

    result = run_cli("users", "create", email, "--password-stdin", env=cli_env, stdin=weak + "\n")

    line = assert_fails_with_one_line(result)
    assert line.startswith("Error: This password is too easy to guess. ")
    assert weak not in said(result)
    with db.transaction(cli_app) as session:
        assert find_user_by_email(session, email) is None


def test_users_create_with_a_password_built_from_the_address_fails_with_one_line(
    cli_env: dict[str, str],
) -> None:
    local = f"zorbulon{uuid.uuid4().hex[:6]}"
    email = f"{local}@example.com"

    result = run_cli(
        "users", "create", email, "--password-stdin", env=cli_env, stdin=f"{local}2024!\n"
    )

    line = assert_fails_with_one_line(result)
    assert "It contains your address or the name of this service." in line


def test_users_create_accepts_a_common_password_when_the_check_is_turned_off(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    email = unique_email()
    environment = {**cli_env, "AUTHSERVER_PASSWORD_MIN_SCORE": "0"}

    result = run_cli(
        "users", "create", email, "--password-stdin", env=environment, stdin="password123\n"
    )

    assert result.returncode == 0, result.stderr
    with db.transaction(cli_app) as session:
        assert find_user_by_email(session, email) is not None


def _lookalike_of(email: str) -> str:
    """The same address with a Cyrillic a (U+0430) for the Latin one in "example"."""
    return email.replace("example", "ex\u0430mple")


def test_users_create_of_a_lookalike_address_fails_with_one_line_naming_no_account(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    email = unique_email()
    first = run_cli("users", "create", email, "--password-stdin", env=cli_env, stdin=PASSWORD)
    assert first.returncode == 0, first.stderr

    again = run_cli(
        "users", "create", _lookalike_of(email), "--password-stdin", env=cli_env, stdin=PASSWORD
    )

    line = assert_fails_with_one_line(again)
    assert line == "Error: an account with an address that looks the same already exists"
    with db.transaction(cli_app) as session:
        assert find_user_by_email(session, _lookalike_of(email)) is None


def test_users_create_of_an_address_with_a_zero_width_space_fails_with_one_line(
    cli_env: dict[str, str],
) -> None:
    email = unique_email().replace("@", "\u200b@")

    result = run_cli("users", "create", email, "--password-stdin", env=cli_env, stdin=PASSWORD)

    line = assert_fails_with_one_line(result)
    assert "U+200B" in line
    assert "does not show" in line


def test_users_lookalikes_says_so_when_no_addresses_look_alike(cli_env: dict[str, str]) -> None:
    # The tests of this module give every account a random address of hex digits; the one
    # that stores look-alikes removes them again.
    result = run_cli("users", "lookalikes", env=cli_env)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "no look-alike accounts\n"


def test_users_lookalikes_lists_accounts_that_collided_before_the_rule(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    email = f"lookalike-{uuid.uuid4().hex[:8]}@example.com"
    # As an older authserver stored them: no skeleton digest, nothing refused.
    legacy = [email, _lookalike_of(email), email.replace("@", "\u200b@")]
    with db.transaction(cli_app) as session:
        first = utcnow()
        users = [
            User(email=address, password_hash="x", created_at=first + timedelta(seconds=n))
            for n, address in enumerate(legacy)
        ]
        session.add_all(users)
        session.flush()
        ids = [user.id for user in users]
    try:
        result = run_cli("users", "lookalikes", env=cli_env)
    finally:
        with db.transaction(cli_app) as session:
            session.execute(delete(User).where(User.id.in_(ids)))

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "group 1: 3 accounts whose addresses look alike"
    assert lines[-1] == "look-alike groups: 1; accounts in them: 3"
    accounts = lines[1:-1]
    assert len(accounts) == 3
    for account_line, user_id, address in zip(accounts, ids, legacy, strict=True):
        fields = account_line.split()
        assert fields[0] == str(user_id)
        assert TIMESTAMP.match(f"{fields[1]} {fields[2]}")
        assert fields[3] == address
    assert accounts[1].endswith(f"({_lookalike_of(email).replace(chr(0x430), '<U+0430>')})")
    assert "<U+200B>" in accounts[2]


def test_users_disable_stops_the_user_from_signing_in(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    email = unique_email()
    with db.transaction(cli_app) as session:
        create_user(
            session,
            runtime(cli_app).hasher,
            email,
            PASSWORD,
            password_policy=runtime(cli_app).password_policy,
        )

    result = run_cli("users", "disable", email, env=cli_env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"disabled user {email}")
    with db.transaction(cli_app) as session:
        user = find_user_by_email(session, email)
        assert user is not None
        assert user.disabled
        assert check_password(session, runtime(cli_app).hasher, email, PASSWORD).user is None


def test_users_disable_of_an_unknown_user_fails_with_one_line(cli_env: dict[str, str]) -> None:
    email = unique_email()

    result = run_cli("users", "disable", email, env=cli_env)

    line = assert_fails_with_one_line(result)
    assert email in line


# -- clients -------------------------------------------------------------------------------


def test_clients_create_json_prints_a_client_id_and_a_secret_that_authenticates(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    result = run_cli(
        "clients",
        "create",
        "--name",
        "Reporting job",
        "--grant",
        "client_credentials",
        "--scope",
        "read write",
        "--json",
        env=cli_env,
    )

    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert set(printed) == {"client_id", "client_secret"}
    response = cli_app.test_client().post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(printed["client_id"], printed["client_secret"]),
    )
    assert response.status_code == 200, response.json
    assert response.json is not None
    assert response.json["scope"] == "read write"


def test_clients_create_keeps_the_consent_pages_links_and_refuses_what_is_not_https(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    name = f"Photos {uuid.uuid4().hex[:8]}"
    common = ["clients", "create", "--name", name, "--grant", "authorization_code"]
    common += ["--redirect-uri", "https://photos.example/callback"]

    refused = run_cli(*common, "--logo-uri", "javascript:alert(1)", env=cli_env)
    created = run_cli(
        *common,
        "--logo-uri",
        "https://photos.example/logo.png",
        "--policy-uri",
        "https://photos.example/privacy",
        "--tos-uri",
        "https://photos.example/terms",
        env=cli_env,
    )

    assert "logo_uri must be an https URL" in assert_fails_with_one_line(refused)
    assert created.returncode == 0, created.stderr
    with db.transaction(cli_app) as session:
        (client,) = session.scalars(select(Client).where(Client.name == name))
        assert (client.logo_uri, client.policy_uri, client.tos_uri) == (
            "https://photos.example/logo.png",
            "https://photos.example/privacy",
            "https://photos.example/terms",
        )
        client_id = client.client_id

    updated = run_cli(
        "clients",
        "update",
        client_id,
        "--logo-uri",
        "",
        "--tos-uri",
        "https://p.example/t",
        env=cli_env,
    )
    refused_update = run_cli(
        "clients", "update", client_id, "--policy-uri", "http://p.example/", env=cli_env
    )

    assert updated.returncode == 0, updated.stderr
    assert "policy_uri must be an https URL" in assert_fails_with_one_line(refused_update)
    with db.transaction(cli_app) as session:
        (client,) = session.scalars(select(Client).where(Client.name == name))
        assert (client.logo_uri, client.policy_uri, client.tos_uri) == (
            None,
            "https://photos.example/privacy",
            "https://p.example/t",
        )


def test_clients_create_refuses_a_public_client_credentials_client_with_one_line(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    name = f"Public worker {uuid.uuid4().hex[:8]}"

    result = run_cli(
        "clients",
        "create",
        "--name",
        name,
        "--public",
        "--grant",
        "client_credentials",
        env=cli_env,
    )

    line = assert_fails_with_one_line(result)
    assert "public client cannot use client_credentials" in line
    with db.transaction(cli_app) as session:
        assert session.scalars(select(Client).where(Client.name == name)).first() is None


def test_clients_disable_refuses_the_client_and_revokes_its_refresh_tokens(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    email = unique_email()
    with db.transaction(cli_app) as session:
        create_user(
            session,
            runtime(cli_app).hasher,
            email,
            PASSWORD,
            password_policy=runtime(cli_app).password_policy,
        )
        registered = make_client(session)
        other = make_client(session)
    client_id = registered.client.client_id
    signed_in = password_login(cli_app.test_client(), registered, email, PASSWORD)
    assert signed_in.status_code == 200, signed_in.json
    assert signed_in.json is not None

    result = run_cli("clients", "disable", client_id, env=cli_env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"disabled client {client_id}; 1 refresh-token families")
    assert "its access tokens are recalled" in result.stdout
    with db.transaction(cli_app) as session:
        client = session.scalars(select(Client).where(Client.client_id == client_id)).one()
        assert client.disabled
        family = session.scalars(
            select(RefreshFamily).where(RefreshFamily.client_pk == client.id)
        ).one()
        assert family.revoked_reason == "client_disabled"
        assert [e.event_type for e in recent_events(session, event_type="client_disabled")] == [
            "client_disabled"
        ]
        untouched = session.get(Client, other.client.id)
        assert untouched is not None
        assert not untouched.disabled
    # This process remembered the client row; a fresh server reads the disabled one.
    fresh = create_app(replace(runtime(cli_app).config, client_cache_seconds=0))
    try:
        refused = token_request(fresh.test_client(), registered, grant_type="client_credentials")
        refreshed = refresh(fresh.test_client(), registered, signed_in.json["refresh_token"])
    finally:
        db.state(fresh).engine.dispose()
    assert refused.status_code == 401
    assert refused.json is not None
    assert refused.json["error"] == "invalid_client"
    assert refreshed.status_code == 401


def test_clients_disable_of_an_unknown_client_fails_with_one_line(
    cli_env: dict[str, str],
) -> None:
    result = run_cli("clients", "disable", "no-such-client", env=cli_env)

    line = assert_fails_with_one_line(result)
    assert "no-such-client" in line


def _feed_status(cli_app: Flask, client_id: str, secret: str) -> int:
    # A fresh server: this process may remember the client row for a few seconds.
    fresh = create_app(replace(runtime(cli_app).config, client_cache_seconds=0))
    try:
        return fresh.test_client().get("/oauth/revocations", auth=(client_id, secret)).status_code
    finally:
        db.state(fresh).engine.dispose()


def test_clients_create_serves_registers_a_resource_server_that_reads_the_feed(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    result = run_cli(
        "clients",
        "create",
        "--name",
        "Orders API",
        "--grant",
        "client_credentials",
        "--serves",
        "https://orders.example.test",
        "--json",
        env=cli_env,
    )

    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert _feed_status(cli_app, printed["client_id"], printed["client_secret"]) == 200


def test_clients_serve_registers_and_unregisters_an_existing_client_as_a_resource_server(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    with db.transaction(cli_app) as session:
        registered = make_client(session, grant_types=["client_credentials"])
    client_id = registered.client.client_id
    assert registered.client_secret is not None
    assert _feed_status(cli_app, client_id, registered.client_secret) == 403

    served = run_cli("clients", "serve", client_id, "https://orders.example.test", env=cli_env)

    assert served.returncode == 0, served.stderr
    assert "serves https://orders.example.test" in served.stdout
    assert _feed_status(cli_app, client_id, registered.client_secret) == 200

    unserved = run_cli("clients", "serve", client_id, env=cli_env)

    assert unserved.returncode == 0, unserved.stderr
    assert "serves no audience" in unserved.stdout
    assert _feed_status(cli_app, client_id, registered.client_secret) == 403


@pytest.mark.parametrize(
    ("client_id", "audience", "expected"),
    [
        pytest.param(
            "no-such-client", "https://orders.example.test", "no-such-client", id="unknown"
        ),
        pytest.param(None, "orders", "absolute URI", id="relative-audience"),
    ],
)
def test_clients_serve_with_bad_input_fails_with_one_line_and_changes_nothing(
    cli_env: dict[str, str], cli_app: Flask, client_id: str | None, audience: str, expected: str
) -> None:
    with db.transaction(cli_app) as session:
        registered = make_client(
            session, grant_types=["client_credentials"], served_audiences=["https://a.example.test"]
        )
    target = client_id or registered.client.client_id

    result = run_cli("clients", "serve", target, audience, env=cli_env)

    line = assert_fails_with_one_line(result)
    assert expected in line
    with db.transaction(cli_app) as session:
        client = session.get(Client, registered.client.id)
        assert client is not None
        assert client.served_audiences == ["https://a.example.test"]


def _event_delivery(cli_app: Flask, client_pk: uuid.UUID) -> tuple[str | None, str | None]:
    with db.transaction(cli_app) as session:
        client = session.get(Client, client_pk, populate_existing=True)
        assert client is not None
        return client.security_event_delivery, client.security_event_push_url


def test_clients_events_registers_push_poll_and_off(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    with db.transaction(cli_app) as session:
        registered = make_client(
            session, grant_types=["client_credentials"], served_audiences=["https://a.example.test"]
        )
    client_id, pk = registered.client.client_id, registered.client.id

    pushed = run_cli(
        "clients", "events", client_id, "--push", "https://a.example.test/events", env=cli_env
    )
    assert pushed.returncode == 0, pushed.stderr
    assert "receives security events at https://a.example.test/events" in pushed.stdout
    assert _event_delivery(cli_app, pk) == ("push", "https://a.example.test/events")

    polled = run_cli("clients", "events", client_id, "--poll", env=cli_env)
    assert polled.returncode == 0, polled.stderr
    assert "/oauth/security-events (RFC 8936)" in polled.stdout
    assert _event_delivery(cli_app, pk) == ("poll", None)

    off = run_cli("clients", "events", client_id, "--off", env=cli_env)
    assert off.returncode == 0, off.stderr
    assert _event_delivery(cli_app, pk) == (None, None)


@pytest.mark.parametrize(
    ("arguments", "serves", "expected"),
    [
        pytest.param(["--poll"], False, "only a resource server", id="not-a-resource-server"),
        pytest.param(["--push", "http://a.example.test/e"], True, "https", id="plain-http"),
        pytest.param(
            ["--push", "https://u:p@a.example.test/e"], True, "user information", id="userinfo"
        ),
        pytest.param(["--push", "ftp://a.example.test/e"], True, "https URL", id="scheme"),
        pytest.param([], True, "exactly one of", id="no-mode"),
        pytest.param(["--poll", "--off"], True, "exactly one of", id="two-modes"),
    ],
)
def test_clients_events_with_bad_input_fails_with_one_line_and_changes_nothing(
    cli_env: dict[str, str], cli_app: Flask, arguments: list[str], serves: bool, expected: str
) -> None:
    with db.transaction(cli_app) as session:
        registered = make_client(
            session,
            grant_types=["client_credentials"],
            served_audiences=["https://a.example.test"] if serves else [],
        )

    result = run_cli("clients", "events", registered.client.client_id, *arguments, env=cli_env)

    assert expected in assert_fails_with_one_line(result)
    assert _event_delivery(cli_app, registered.client.id) == (None, None)


def test_clients_create_refuses_an_unknown_grant_as_a_usage_error(
    cli_env: dict[str, str],
) -> None:
    result = run_cli("clients", "create", "--name", "Bogus", "--grant", "bogus", env=cli_env)

    assert result.returncode == 2  # click's exit code for a usage error
    assert "Invalid value for '--grant'" in result.stderr
    assert "Traceback" not in said(result)


# -- keys ----------------------------------------------------------------------------------


def _parse_keys_list(stdout: str) -> dict[str, dict[str, str]]:
    """The `keys list` table, by kid."""
    header, *rows = stdout.strip().splitlines()
    assert header.split() == ["KID", "ALG", "STATE", "CREATED", "ACTIVATED", "RETIRED"]
    parsed = {}
    for row in rows:
        kid, alg, state, *stamps = row.split()
        # Dates are "YYYY-MM-DD HH:MM:SS" or "-".
        values: list[str] = []
        while stamps:
            if stamps[0] == "-":
                values.append(stamps.pop(0))
            else:
                values.append(f"{stamps.pop(0)} {stamps.pop(0)}")
        created, activated, retired = values
        parsed[kid] = {
            "alg": alg,
            "state": state,
            "created": created,
            "activated": activated,
            "retired": retired,
        }
    return parsed


def _no_keys(cli_database: CliDatabase) -> None:
    engine = make_engine(cli_database.url)
    try:
        with engine.begin() as conn:
            conn.execute(delete(SigningKey))
    finally:
        engine.dispose()


def test_keys_rotate_publishes_a_next_key_that_does_not_sign_yet(
    cli_env: dict[str, str], cli_database: CliDatabase
) -> None:
    _no_keys(cli_database)
    first = run_cli("keys", "rotate", env=cli_env)
    assert first.returncode == 0, first.stderr
    first_kid = re.fullmatch(
        r"no key yet: created current key (\S+) \(ES256\)", first.stdout.strip()
    )

    second = run_cli("keys", "rotate", env=cli_env)
    listing = run_cli("keys", "list", env=cli_env)

    assert second.returncode == 0, second.stderr
    second_kid = re.match(
        r"published next key (\S+) \(ES256\); it starts signing at ", second.stdout
    )
    assert first_kid is not None
    assert second_kid is not None
    keys = _parse_keys_list(listing.stdout)
    assert keys[first_kid.group(1)]["state"] == "current"
    assert TIMESTAMP.match(keys[first_kid.group(1)]["activated"])
    assert keys[second_kid.group(1)]["state"] == "next"
    assert keys[second_kid.group(1)]["activated"] == "-"


def test_keys_rotate_refuses_while_a_next_key_is_waiting(
    cli_env: dict[str, str], cli_database: CliDatabase
) -> None:
    _no_keys(cli_database)
    run_cli("keys", "rotate", env=cli_env)
    run_cli("keys", "rotate", env=cli_env)

    third = run_cli("keys", "rotate", env=cli_env)

    line = assert_fails_with_one_line(third)
    assert "is already waiting to become current" in line


def test_keys_rotate_immediately_retires_the_current_key(
    cli_env: dict[str, str], cli_database: CliDatabase
) -> None:
    _no_keys(cli_database)
    first = run_cli("keys", "rotate", env=cli_env)
    old_kid = first.stdout.split("current key ")[1].split()[0]

    result = run_cli("keys", "rotate", "--immediately", env=cli_env)
    listing = run_cli("keys", "list", env=cli_env)

    assert result.returncode == 0, result.stderr
    new_kid = re.fullmatch(
        r"new current key (\S+) \(ES256\); the old one is retired", result.stdout.strip()
    )
    assert new_kid is not None
    keys = _parse_keys_list(listing.stdout)
    assert keys[new_kid.group(1)]["state"] == "current"
    assert keys[old_kid]["state"] == "retired"
    assert TIMESTAMP.match(keys[old_kid]["retired"])


def test_keys_rotate_immediately_discards_a_waiting_next_key(
    cli_env: dict[str, str], cli_database: CliDatabase
) -> None:
    _no_keys(cli_database)
    run_cli("keys", "rotate", env=cli_env)
    waiting = run_cli("keys", "rotate", env=cli_env).stdout.split("published next key ")[1]
    next_kid = waiting.split()[0]

    result = run_cli("keys", "rotate", "--immediately", env=cli_env)
    listing = run_cli("keys", "list", env=cli_env)

    assert result.returncode == 0, result.stderr
    assert f"discarded next key {next_kid}: it would have taken over signing later" in (
        result.stdout
    )
    assert _parse_keys_list(listing.stdout)[next_kid]["state"] == "removed"


def test_keys_withdraw_replaces_the_current_key(
    cli_env: dict[str, str], cli_database: CliDatabase
) -> None:
    _no_keys(cli_database)
    first = run_cli("keys", "rotate", env=cli_env)
    old_kid = first.stdout.split("current key ")[1].split()[0]

    result = run_cli("keys", "withdraw", old_kid, env=cli_env)
    listing = _parse_keys_list(run_cli("keys", "list", env=cli_env).stdout)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(f"withdrew key {old_kid}: in the revocation feed, every token")
    new_kid = re.fullmatch(r"new current key (\S+) \(ES256\) signs from now on", lines[1])
    assert new_kid is not None
    assert listing[old_kid]["state"] == "withdrawn"
    assert listing[new_kid.group(1)]["state"] == "current"


def test_keys_withdraw_refuses_an_unknown_or_withdrawn_key_in_one_line(
    cli_env: dict[str, str], cli_database: CliDatabase
) -> None:
    _no_keys(cli_database)
    first = run_cli("keys", "rotate", env=cli_env)
    kid = first.stdout.split("current key ")[1].split()[0]
    run_cli("keys", "withdraw", kid, env=cli_env)

    again = run_cli("keys", "withdraw", kid, env=cli_env)
    unknown = run_cli("keys", "withdraw", "not-a-kid", env=cli_env)
    # A base64url thumbprint may begin with "-": still the kid, not an option.
    dashed = run_cli("keys", "withdraw", "-C1k9xTP9sHy5NWMvCKWBf8IWtouLwXpLs", env=cli_env)

    assert "is withdrawn already; nothing to withdraw" in assert_fails_with_one_line(again)
    assert "no signing key has the kid 'not-a-kid'" in assert_fails_with_one_line(unknown)
    assert "no signing key has the kid '-C1k9x" in assert_fails_with_one_line(dashed)


# -- dev -----------------------------------------------------------------------------------


def test_dev_seed_prints_demo_credentials_and_a_curl_line_that_works(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    result = run_cli("dev", "seed", env=cli_env)

    assert result.returncode == 0, result.stderr
    user = re.search(r"^Demo user: +(\S+) / (\S+)$", result.stdout, re.MULTILINE)
    client = re.search(r"^Demo client: +(\S+) / (\S+)$", result.stdout, re.MULTILINE)
    assert user is not None
    assert client is not None
    email, password = user.groups()
    client_id, client_secret = client.groups()
    assert f"curl -s -u '{client_id}:{client_secret}'" in result.stdout
    assert "http://127.0.0.1:8000/oauth/token" in result.stdout
    # The example app's command, pointed at this issuer (the README's "Try it", step 2).
    command = "AUTHSERVER_ISSUER=http://127.0.0.1:8000 .venv/bin/python examples/relying_party.py"
    assert command in result.stdout
    # Do what the curl line says, against the same database.
    response = cli_app.test_client().post(
        "/oauth/token",
        data={"grant_type": "password", "username": email, "password": password},
        auth=(client_id, client_secret),
    )
    assert response.status_code == 200, response.json
    assert response.json is not None
    assert response.json["refresh_token"]
    # The account-API line: the same sign-in naming the account API lists the devices.
    assert "-d resource=http://127.0.0.1:8000/account -d scope=account" in result.stdout
    http = cli_app.test_client()
    account = http.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "username": email,
            "password": password,
            "resource": "http://127.0.0.1:8000/account",
            "scope": "account",
        },
        auth=(client_id, client_secret),
    ).json
    assert account is not None
    devices = http.get(
        "/account/sessions", headers={"Authorization": f"Bearer {account['access_token']}"}
    )
    assert devices.status_code == 200
    # The demo API serves the audience of the demo apps' ordinary tokens.
    api = re.search(r"^Demo API: +(\S+) / (\S+)$", result.stdout, re.MULTILINE)
    assert api is not None
    introspected = http.post(
        "/oauth/introspect", data={"token": response.json["access_token"]}, auth=api.groups()
    ).json
    assert introspected is not None
    assert introspected["active"] is True
    assert http.get("/oauth/revocations", auth=api.groups()).status_code == 200


def test_dev_seed_is_refused_in_production(production_env: dict[str, str]) -> None:
    result = run_cli("dev", "seed", env=production_env)

    line = assert_fails_with_one_line(result)
    assert line == "Error: dev seed is for development only"
    assert "Demo user" not in result.stdout


# -- failures an operator meets before anything runs ----------------------------------------


COMMANDS = [
    pytest.param(["db", "upgrade"], id="db-upgrade"),
    pytest.param(["users", "create", "ann@example.com", "--password-stdin"], id="users-create"),
    pytest.param(["users", "disable", "ann@example.com"], id="users-disable"),
    pytest.param(
        ["clients", "create", "--name", "N", "--grant", "client_credentials"], id="clients"
    ),
    pytest.param(["clients", "disable", "some-client"], id="clients-disable"),
    pytest.param(["keys", "list"], id="keys-list"),
    pytest.param(["keys", "rotate"], id="keys-rotate"),
    pytest.param(["dev", "seed"], id="dev-seed"),
]


@pytest.mark.parametrize("command", [*COMMANDS, pytest.param(["serve"], id="serve")])
def test_production_without_secrets_refuses_with_one_line_per_problem(
    command: list[str], tmp_path: Path
) -> None:
    database = tmp_path / "production.db"
    environment = {
        **_base_environment(tmp_path / "instance"),
        "AUTHSERVER_ENV": "production",
        "DATABASE_URL": f"sqlite:///{database}",
    }
    if command == ["serve"]:
        command = ["serve", "--port", str(free_port())]

    result = run_cli(*command, env=environment, stdin=PASSWORD)

    assert result.returncode != 0
    assert "Traceback" not in said(result)
    problems = [line for line in message_lines(result) if "configuration error:" in line]
    assert len(problems) == 4, result.stderr
    for setting in (
        "AUTHSERVER_SECRET_KEY",
        "AUTHSERVER_KEY_ENCRYPTION_KEY",
        "AUTHSERVER_ISSUER must be an https URL",
        "DATABASE_URL must name PostgreSQL",
    ):
        assert len([line for line in problems if setting in line]) == 1, setting
    assert message_lines(result) == problems
    assert not database.exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_unreachable_database_is_one_database_error_line(
    command: list[str], tmp_path: Path
) -> None:
    environment = {
        **_base_environment(tmp_path / "instance"),
        "DATABASE_URL": UNREACHABLE_DATABASE,
    }

    result = run_cli(*command, env=environment, stdin=PASSWORD)

    line = assert_fails_with_one_line(result, starting="Error: database error: ")
    assert "127.0.0.1" in line
    assert PASSWORD not in said(result)


# -- audit ---------------------------------------------------------------------------------


def test_audit_tail_shows_a_users_events_with_no_secret(cli_env: dict[str, str]) -> None:
    email = unique_email()
    password = "a long enough password for the trail"
    run_cli("users", "create", email, "--password-stdin", env=cli_env, stdin=password + "\n")
    run_cli("users", "disable", email, env=cli_env)

    result = run_cli("audit", "tail", "--user", email, env=cli_env)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split()[2] for line in lines] == ["user_created", "user_disabled"]
    assert password not in said(result)


def test_audit_tail_shows_the_failed_and_throttled_sign_ins_of_an_account(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    email = unique_email()
    wrong = "not the password of this account"
    with db.transaction(cli_app) as session:
        rt = runtime(cli_app)
        create_user(session, rt.hasher, email, PASSWORD, password_policy=rt.password_policy)
        registered = make_client(session)
    # The server's clock stands still: the throttle's delays count from the last failure.
    frozen = utcnow()
    runtime(cli_app).clock = lambda: frozen
    http = cli_app.test_client()
    assert sign_in(http, email=email, password=wrong).status_code == 401
    free = runtime(cli_app).config.signin_free_failures
    for _ in range(free):
        assert password_login(http, registered, email, wrong).status_code == 400
    throttled = password_login(http, registered, email, wrong)
    assert throttled.status_code == 429

    result = run_cli("audit", "tail", "--user", email, env=cli_env)

    assert result.returncode == 0, result.stderr
    events = [line.split()[2] for line in result.stdout.strip().splitlines()]
    assert events == ["user_created"] + ["signin_failed"] * (free + 1) + ["rate_limit_hit"]
    assert result.stdout.count("reason=wrong_password") == free + 1
    assert "method=password_form" in result.stdout
    assert wrong not in said(result)


def test_audit_tail_filters_by_type(cli_env: dict[str, str]) -> None:
    email = unique_email()
    run_cli("users", "create", email, "--password-stdin", env=cli_env, stdin="long password 1\n")

    result = run_cli("audit", "tail", "--type", "user_created", "-n", "5", env=cli_env)

    assert result.returncode == 0, result.stderr
    assert {line.split()[2] for line in result.stdout.strip().splitlines()} == {"user_created"}


def test_audit_tail_of_an_unknown_type_fails_with_one_line(cli_env: dict[str, str]) -> None:
    result = run_cli("audit", "tail", "--type", "nonsense", env=cli_env)

    line = assert_fails_with_one_line(result)
    assert "unknown event type" in line
