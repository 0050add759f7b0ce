"""`authserver mail` run as an operator runs it: `send-test` to a real SMTP server on
127.0.0.1 and to the development console, `deliver` (once and `--every`), and the one line a
process without an SMTP server says.

The database is this module's own (``<test database>_cli_mail``), built with ``authserver db
upgrade``.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from authserver.db import db
from authserver.runtime import runtime
from authserver.services.mail import enqueue_mail
from tests.helpers import HANG_SECONDS, wait_until
from tests.smtp_servers import PASSWORD, USER, Mailbox, make_authority, smtp_server
from tests.test_cli import (
    AUTHSERVER,
    _base_environment,
    arranging_app,
    assert_fails_with_one_line,
    migrated_scratch_database,
    run_cli,
)

PRODUCTION = {
    "AUTHSERVER_ENV": "production",
    "AUTHSERVER_ISSUER": "https://login.example.test",
    "AUTHSERVER_SECRET_KEY": "s" * 40,
    "AUTHSERVER_KEY_ENCRYPTION_KEY": "k" * 40,
}


@pytest.fixture(scope="module")
def mail_database_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with migrated_scratch_database(database_url, "cli_mail", tmp_path_factory) as url:
        yield url


@pytest.fixture
def cli_env(mail_database_url: str, tmp_path: Path) -> dict[str, str]:
    return {**_base_environment(tmp_path / "instance"), "DATABASE_URL": mail_database_url}


@pytest.fixture
def cli_app(mail_database_url: str, tmp_path: Path) -> Iterator[Flask]:
    with arranging_app(mail_database_url, tmp_path / "app-instance") as app:
        yield app


def test_send_test_reaches_the_smtp_server_over_starttls_with_the_urls_login(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    authority = make_authority(tmp_path / "tls")
    mailbox = Mailbox()
    with smtp_server(mailbox, starttls=authority.server_context, auth=True) as port:
        result = run_cli(
            "mail",
            "send-test",
            "ops@example.test",
            env={
                **cli_env,
                "AUTHSERVER_SMTP_URL": f"smtp+starttls://{USER}:{PASSWORD}@127.0.0.1:{port}",
                "AUTHSERVER_SMTP_CA_FILE": str(authority.ca_file),
                "AUTHSERVER_MAIL_FROM": "id@example.test",
                "AUTHSERVER_PRODUCT_NAME": "Example ID",
            },
        )
    assert result.returncode == 0, result.stderr
    (received,) = mailbox.received
    assert result.stdout.strip() == f"sent to ops@example.test ({received['Message-ID']})"
    assert received["Subject"] == "Example ID: test message"
    assert received["From"] == "Example ID <id@example.test>"
    assert PASSWORD not in result.stdout + result.stderr


def test_send_test_says_why_a_server_refused_it(cli_env: dict[str, str]) -> None:
    mailbox = Mailbox(rcpt_replies=["550 5.1.1 No such user"])
    with smtp_server(mailbox) as port:
        result = run_cli(
            "mail",
            "send-test",
            "nobody@example.test",
            env={**cli_env, "AUTHSERVER_SMTP_URL": f"smtp://127.0.0.1:{port}"},
        )
    assert result.returncode == 1
    # The audit trail's JSON line comes first (stderr is also the audit log's), then ours.
    assert result.stderr.splitlines()[-1] == "Error: refused: SMTP 550 recipient refused"
    assert "Traceback" not in result.stderr


def test_send_test_in_development_prints_the_message_to_the_console(
    cli_env: dict[str, str],
) -> None:
    result = run_cli("mail", "send-test", "dev@example.test", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("sent to dev@example.test (<")
    assert "To: dev@example.test" in result.stderr
    assert "Subject: authserver: test message" in result.stderr
    assert "If you can read it, authserver can send you mail." in result.stderr


def test_a_bad_address_is_one_line(cli_env: dict[str, str]) -> None:
    result = run_cli("mail", "send-test", "not an address", env=cli_env)
    assert assert_fails_with_one_line(result) == (
        "Error: The recipient must be one e-mail address."
    )


@pytest.mark.postgres_only  # production refuses SQLite before it gets to the mail settings
def test_production_without_an_smtp_server_cannot_send_and_says_so(
    cli_env: dict[str, str],
) -> None:
    for command in (("mail", "deliver"), ("mail", "send-test", "ops@example.test")):
        result = run_cli(*command, env={**cli_env, **PRODUCTION})
        line = assert_fails_with_one_line(result)
        assert line == "Error: AUTHSERVER_SMTP_URL is not set: this process cannot send mail"


def test_a_bad_smtp_url_is_one_line_without_the_password(cli_env: dict[str, str]) -> None:
    result = run_cli(
        "mail",
        "deliver",
        env={**cli_env, "AUTHSERVER_SMTP_URL": "smtp://user:hunter2-pass@mail.example.test"},
    )
    line = assert_fails_with_one_line(result, starting="authserver: configuration error: ")
    assert "hunter2" not in result.stdout + result.stderr
    assert "smtp+starttls:// or smtps://" in line


def test_deliver_sends_what_the_server_wrote_and_every_keeps_sending(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    def written(to: str) -> None:
        mail = runtime(cli_app).mail
        assert mail is not None
        with db.transaction(cli_app) as session:
            enqueue_mail(
                session, mail, to=to, template="test", context={}, now=runtime(cli_app).now()
            )

    mailbox = Mailbox()
    with smtp_server(mailbox) as port:
        env = {**cli_env, "AUTHSERVER_SMTP_URL": f"smtp://127.0.0.1:{port}"}
        written("first@example.test")
        once = run_cli("mail", "deliver", env=env)
        assert once.returncode == 0, once.stderr
        assert once.stdout.strip() == "sent 1, retrying 0, given up 0"

        every = subprocess.Popen(
            [str(AUTHSERVER), "mail", "deliver", "--every", "1s"],
            env=env,
            cwd=env["AUTHSERVER_INSTANCE_DIR"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            written("second@example.test")
            wait_until(lambda: len(mailbox.received) == 2, "the second message to arrive")
        finally:
            every.send_signal(signal.SIGTERM)
            out, err = every.communicate(timeout=HANG_SECONDS)
        assert every.returncode == 0, err
        assert "sent 1, retrying 0, given up 0" in out
    assert [m["To"] for m in mailbox.received] == ["first@example.test", "second@example.test"]
