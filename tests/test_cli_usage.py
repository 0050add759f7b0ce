"""The ``authserver`` command as someone meets it first: its help, its version, a password
typed on a terminal, and the errors that say what to do (a database never migrated, a missing
DATABASE_URL, a database URL authserver cannot use).

Each runs the command as a real process; the password prompt runs on a pseudo-terminal of the
test's own (``os.openpty``), in a session of its own, so that it is the only terminal the
command can find.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import make_url

from authserver.cli import alembic_config
from authserver.config import Config
from authserver.db import db
from authserver.runtime import runtime
from authserver.services.users import check_password, find_user_by_email
from tests.conftest import free_port, scratch_database
from tests.helpers import HANG_SECONDS
from tests.test_cli import (
    AUTHSERVER,
    PASSWORD,
    _base_environment,
    arranging_app,
    assert_fails_with_one_line,
    message_lines,
    migrated_scratch_database,
    run_cli,
    said,
    unique_email,
)

FLASK_COMMANDS = ("run", "routes", "shell")


@pytest.fixture(scope="module")
def migrated_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with migrated_scratch_database(database_url, "cli_usage", tmp_path_factory) as url:
        yield url


@pytest.fixture
def cli_env(migrated_url: str, tmp_path: Path) -> dict[str, str]:
    return {**_base_environment(tmp_path / "instance"), "DATABASE_URL": migrated_url}


@pytest.fixture
def unmigrated_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database: on PostgreSQL beside the test database, else an SQLite file."""
    with scratch_database(database_url, "cli_empty", tmp_path) as url:
        yield url


# -- help and version ------------------------------------------------------------------------


def test_help_shows_authservers_commands_and_none_of_flasks(tmp_path: Path) -> None:
    result = run_cli("--help", env=_base_environment(tmp_path / "instance"))

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: authserver ")
    commands = result.stdout.split("Commands:", 1)[1].split()
    for command in ("db", "serve", "users", "clients", "keys", "audit", "purge"):
        assert command in commands
    for flask_command in (*FLASK_COMMANDS, "limiter"):
        assert flask_command not in commands
    for flask_option in ("--app", "--debug", "--env-file", "Flask"):
        assert flask_option not in result.stdout


@pytest.mark.parametrize("command", FLASK_COMMANDS)
def test_flasks_commands_are_not_offered(command: str, tmp_path: Path) -> None:
    result = run_cli(command, env=_base_environment(tmp_path / "instance"))

    assert result.returncode == 2
    assert f"No such command '{command}'" in result.stderr
    assert "Traceback" not in said(result)


def test_version_is_authservers_from_the_package_metadata(tmp_path: Path) -> None:
    from importlib.metadata import version

    result = run_cli("--version", env=_base_environment(tmp_path / "instance"))

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"authserver {version('authserver')}"


def test_python_dash_m_authserver_is_the_same_command(tmp_path: Path) -> None:
    environment = _base_environment(tmp_path / "instance")

    result = subprocess.run(
        [sys.executable, "-m", "authserver", "--help"],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == run_cli("--help", env=environment).stdout


def test_every_option_that_takes_a_number_says_its_unit_or_range(tmp_path: Path) -> None:
    """A number without a unit is a guess: each numeric option names what it counts."""
    environment = _base_environment(tmp_path / "instance")
    checked = {
        ("clients", "create"): ["--access-token-ttl SECONDS", "--refresh-idle-ttl SECONDS"],
        ("clients", "update"): ["--access-token-ttl SECONDS", "--refresh-absolute-ttl SECONDS"],
        ("registration-tokens", "create"): ["--expires-in SECONDS", "--uses N"],
        ("users", "list"): ["--limit N"],
        ("audit", "tail"): ["-n, --lines N"],
        ("purge",): ["--batch-size ROWS", "--every DURATION"],
        ("serve",): ["--port PORT"],
    }
    for command, options in checked.items():
        result = run_cli(*command, "--help", env=environment)
        assert result.returncode == 0, result.stderr
        text = " ".join(result.stdout.split())
        for option in options:
            assert option in text, (command, option)
    create = " ".join(run_cli("clients", "create", "--help", env=environment).stdout.split())
    assert "in seconds; without it, the server-wide AUTHSERVER_ACCESS_TOKEN_TTL" in create
    assert f"(default {Config().access_token_ttl} s, 10 minutes)" in create


# -- a password typed on a terminal ----------------------------------------------------------


class Terminal:
    """A command running on a pseudo-terminal: what it wrote so far, and a keyboard."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        # A session of its own: the pseudo-terminal is the only terminal the command has, so
        # it can never read from the terminal of whoever runs the tests.
        self.process = subprocess.Popen(
            args,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=env["AUTHSERVER_INSTANCE_DIR"],
            start_new_session=True,
        )
        os.close(slave)
        self.output = ""

    def _read(self, timeout: float) -> bool:
        """Read what is there within ``timeout``; False once the command has closed it."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 4096)
        except OSError:  # EIO: every copy of the other side is closed
            return False
        if not chunk:
            return False
        self.output += chunk.decode(errors="replace")
        return True

    def expect(self, text: str, *, count: int = 1) -> None:
        """Wait until ``text`` has appeared ``count`` times."""
        deadline = time.monotonic() + HANG_SECONDS
        while self.output.count(text) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(remaining):
                raise AssertionError(
                    f"never saw {text!r} (x{count}); the terminal shows:\n{self.output}"
                )

    def type_line(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def finish(self) -> int:
        while self._read(HANG_SECONDS):
            pass
        os.close(self.master)
        return self.process.wait(timeout=HANG_SECONDS)


def test_users_create_on_a_terminal_asks_twice_hides_the_password_and_asks_again_on_a_typo(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    email = unique_email()
    terminal = Terminal([str(AUTHSERVER), "users", "create", email], cli_env)

    terminal.expect("Password:")
    terminal.type_line(PASSWORD)
    terminal.expect("Repeat for confirmation:")
    terminal.type_line(PASSWORD + " with a typo")
    terminal.expect("do not match")
    terminal.expect("Password:", count=2)
    terminal.type_line(PASSWORD)
    terminal.expect("Repeat for confirmation:", count=2)
    terminal.type_line(PASSWORD)
    terminal.expect(f"created user {email}")
    assert terminal.finish() == 0, terminal.output

    assert PASSWORD not in terminal.output
    with (
        arranging_app(cli_env["DATABASE_URL"], tmp_path / "check") as app,
        db.transaction(app) as session,
    ):
        assert check_password(session, runtime(app).hasher, email, PASSWORD).user is not None


def test_users_create_off_a_terminal_without_password_stdin_asks_nothing_and_fails(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    email = unique_email()

    result = subprocess.run(
        [str(AUTHSERVER), "users", "create", email],
        env=cli_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    line = assert_fails_with_one_line(result)
    assert "--password-stdin" in line
    assert "Password:" not in said(result)
    with (
        arranging_app(cli_env["DATABASE_URL"], tmp_path / "check") as app,
        db.transaction(app) as session,
    ):
        assert find_user_by_email(session, email) is None


# -- errors that name the fix ----------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["users", "list"], id="users-list"),
        pytest.param(["clients", "list"], id="clients-list"),
        pytest.param(["keys", "list"], id="keys-list"),
        pytest.param(["audit", "tail"], id="audit-tail"),
    ],
)
def test_a_database_never_migrated_is_one_line_saying_run_db_upgrade(
    command: list[str], unmigrated_url: str, tmp_path: Path
) -> None:
    environment = {**_base_environment(tmp_path / "instance"), "DATABASE_URL": unmigrated_url}

    result = run_cli(*command, env=environment)

    line = assert_fails_with_one_line(result)
    assert line.endswith("run `authserver db upgrade`"), line
    assert "no authserver schema" in line


def test_serve_refuses_a_database_never_migrated_in_one_line(
    unmigrated_url: str, tmp_path: Path
) -> None:
    environment = {**_base_environment(tmp_path / "instance"), "DATABASE_URL": unmigrated_url}

    result = run_cli("serve", "--port", str(free_port()), env=environment)

    line = assert_fails_with_one_line(result)
    assert line == "Error: the database has no authserver schema: run `authserver db upgrade`"


def test_serve_refuses_a_database_an_older_authserver_migrated(
    unmigrated_url: str, tmp_path: Path
) -> None:
    environment = {**_base_environment(tmp_path / "instance"), "DATABASE_URL": unmigrated_url}
    scripts = ScriptDirectory.from_config(alembic_config(unmigrated_url))
    head = scripts.get_revision(scripts.get_current_head())
    assert head is not None
    assert isinstance(head.down_revision, str)
    older = run_cli("db", "upgrade", head.down_revision, env=environment)
    assert older.returncode == 0, older.stderr

    result = run_cli("serve", "--port", str(free_port()), env=environment)

    line = assert_fails_with_one_line(result)
    assert "this authserver needs" in line
    assert line.endswith("run `authserver db upgrade`")


def test_db_upgrade_to_an_unknown_revision_is_one_line(unmigrated_url: str, tmp_path: Path) -> None:
    environment = {**_base_environment(tmp_path / "instance"), "DATABASE_URL": unmigrated_url}

    result = run_cli("db", "upgrade", "no_such_revision", env=environment)

    line = assert_fails_with_one_line(result)
    assert "no_such_revision" in line


def test_without_database_url_a_command_names_the_sqlite_file_it_looked_for_and_creates_none(
    tmp_path: Path,
) -> None:
    instance = tmp_path / "instance"
    environment = _base_environment(instance)
    expected = (instance / "authserver.db").resolve()

    result = run_cli("users", "list", env=environment)

    line = assert_fails_with_one_line(result)
    assert "DATABASE_URL is not set" in line
    assert str(expected) in line
    assert "authserver db upgrade" in line
    assert not expected.exists()


def test_without_database_url_db_upgrade_says_which_sqlite_file_it_built(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    environment = _base_environment(instance)
    expected = (instance / "authserver.db").resolve()

    upgrade = run_cli("db", "upgrade", env=environment)

    assert upgrade.returncode == 0, upgrade.stderr
    assert upgrade.stdout.strip() == "database upgraded to head"
    # The migrations log what they do (some records run over several lines): the note is the
    # command's own line, before them.
    assert message_lines(upgrade)[0] == f"note: DATABASE_URL is not set: the SQLite file {expected}"
    assert expected.exists()
    listed = run_cli("users", "list", env=environment)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "no users"


@pytest.mark.postgres_only
@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_a_postgres_url_without_the_driver_is_taken_as_psycopg(
    scheme: str, cli_env: dict[str, str]
) -> None:
    url = make_url(cli_env["DATABASE_URL"]).render_as_string(hide_password=False)
    plain = f"{scheme}://" + url.split("://", 1)[1]
    email = unique_email()

    created = run_cli(
        "users",
        "create",
        email,
        "--password-stdin",
        env={**cli_env, "DATABASE_URL": plain},
        stdin=PASSWORD,
    )

    assert created.returncode == 0, created.stderr
    listed = run_cli("users", "list", "--search", email, env=cli_env)
    assert email in listed.stdout


@pytest.mark.parametrize(
    ("url", "says"),
    [
        pytest.param(
            "mysql://ann:s3cret-pw@db.example.com/auth",
            "authserver runs on PostgreSQL (postgresql+psycopg://USER@HOST/NAME) and SQLite "
            "(sqlite:///PATH) only",
            id="mysql",
        ),
        pytest.param(
            "mysql+pymysql://ann:s3cret-pw@db.example.com/auth",
            "authserver runs on PostgreSQL",
            id="mysql-pymysql",
        ),
        pytest.param(
            "postgresql+asyncpg://ann:s3cret-pw@db.example.com/auth",
            "authserver ships with psycopg 3: postgresql+psycopg://",
            id="another-driver",
        ),
        pytest.param("s3cret-pw", "must be a URL like", id="not-a-url"),
    ],
)
def test_a_database_authserver_cannot_use_is_one_configuration_line_without_the_password(
    url: str, says: str, tmp_path: Path
) -> None:
    environment = {**_base_environment(tmp_path / "instance"), "DATABASE_URL": url}

    result = run_cli("users", "list", env=environment)

    line = assert_fails_with_one_line(result, starting="authserver: configuration error: ")
    assert says in line
    assert "s3cret-pw" not in said(result)
    assert not (tmp_path / "instance" / "authserver.db").exists()


# -- audit tail ------------------------------------------------------------------------------


def test_audit_tail_shows_the_address_beside_each_user_id(cli_env: dict[str, str]) -> None:
    kept, deleted = unique_email(), unique_email()
    ids = {}
    for email in (kept, deleted):
        created = run_cli("users", "create", email, "--password-stdin", env=cli_env, stdin=PASSWORD)
        assert created.returncode == 0, created.stderr
        # "created user ann@example.com (<id>)"
        ids[email] = created.stdout.strip().rsplit("(", 1)[1].rstrip(")")
    assert run_cli("users", "delete", deleted, env=cli_env).returncode == 0

    result = run_cli("audit", "tail", "--type", "user_created", "-n", "2", env=cli_env)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2, result.stdout
    kept_line = next(line for line in lines if ids[kept] in line)
    assert f" user={ids[kept]} <{kept}> client=" in kept_line
    deleted_line = next(line for line in lines if ids[deleted] in line)
    assert f" user={ids[deleted]} (deleted account) client=" in deleted_line
    assert deleted not in deleted_line


def test_audit_tail_of_events_without_a_user_shows_a_dash(cli_env: dict[str, str]) -> None:
    created = run_cli(
        "clients",
        "create",
        "--name",
        f"tail {uuid.uuid4().hex[:6]}",
        "--grant",
        "client_credentials",
        env=cli_env,
    )
    assert created.returncode == 0, created.stderr

    result = run_cli("audit", "tail", "--type", "client_created", "-n", "1", env=cli_env)

    assert result.returncode == 0, result.stderr
    assert " user=- client=" in result.stdout
