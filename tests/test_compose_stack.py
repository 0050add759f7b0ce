"""docker-compose.yml started as processes: every authserver service's own command, with the
environment the compose file and ``.env.example`` give its container (tests/compose_stack.py),
on a PostgreSQL database of the test's own and the local Redis.

The migration runs first, as compose orders it; then both servers (gunicorn with
gunicorn.conf.py, answering their compose healthcheck), the janitor and the mailer (to a real
SMTP server on 127.0.0.1). Every CLI command runs in a fresh container of every authserver
service (``docker compose run --rm``) and in a running one (``docker compose exec``), and the
README's commands for a first admin user and a first client run as written, through a
``docker`` that starts containers of this stack. The trial on http://localhost is driven in
Chromium by tests/e2e/test_compose_trial_browser.py.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from authserver.cli import alembic_config
from tests.compose_stack import (
    Machine,
    RunningStack,
    Service,
    Stack,
    is_server,
    run_in,
    run_readmes_first_commands,
    stack_variables,
    started,
)
from tests.conftest import REDIS_URL, listening_socket, redis_answers, scratch_database
from tests.helpers import wait_until
from tests.smtp_servers import Mailbox, smtp_server

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.skipif(not redis_answers(), reason="needs Redis on 127.0.0.1:6379"),
]

METRICS_TOKEN = secrets.token_urlsafe(32)


@dataclass
class Running:
    stack: Stack
    mailbox: Mailbox
    running: RunningStack

    @property
    def services(self) -> dict[str, Service]:
        return self.running.services

    def servers(self) -> list[Service]:
        return self.running.servers()


@contextmanager
def redis_prefix() -> Iterator[str]:
    """A rate-limit key prefix of the stack's own, its keys deleted afterwards."""
    prefix = f"authserver-test-{uuid.uuid4().hex}"
    try:
        yield prefix
    finally:
        store = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        for key in store.scan_iter(match=f"*{prefix}*", count=1000):
            store.delete(key)
        store.close()


@pytest.fixture(scope="module")
def running(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("compose")
    mailbox = Mailbox()
    with (
        scratch_database(database_url, "compose", folder) as stack_database,
        smtp_server(mailbox) as smtp_port,
        redis_prefix() as prefix,
    ):
        stack = Stack(
            stack_variables(
                AUTHSERVER_METRICS_TOKEN=METRICS_TOKEN,
                AUTHSERVER_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
            ),
            Machine(stack_database, REDIS_URL, prefix, folder / "containers"),
        )
        names = [name for name in stack.authserver_services() if name != "migrate"]
        servers = [name for name in names if is_server(stack.services[name])]
        listeners = {name: listening_socket() for name in servers}
        others = [name for name in names if name not in servers]
        with started(stack, listeners, others) as result:
            yield Running(stack, mailbox, result)


def test_the_stack_starts_every_authserver_service_of_the_compose_file(
    running: Running,
) -> None:
    assert set(running.services) | {"migrate"} == set(running.stack.authserver_services())
    assert len(running.servers()) >= 2
    for name, service in running.services.items():
        assert service.process.poll() is None, f"{name} exited:\n{service.said()[-3000:]}"


def test_the_migrate_service_brings_the_database_to_the_newest_revision(
    running: Running,
) -> None:
    url = running.stack.machine.database_url
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            current = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
    assert current == head


def test_each_server_answers_healthz_readyz_and_metrics_from_its_workers(
    running: Running,
) -> None:
    for server in running.servers():
        assert requests.get(server.url + "/healthz", timeout=30).status_code == 200
        assert requests.get(server.url + "/readyz", timeout=30).status_code == 200
        metrics = requests.get(
            server.url + "/metrics",
            headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
            timeout=30,
        )
        assert metrics.status_code == 200, metrics.text
        assert "authserver_http_requests_total" in metrics.text
        # The multiprocess folder of the container is where the workers' numbers are.
        folder = Path(server.container.env["PROMETHEUS_MULTIPROC_DIR"])
        assert list(folder.glob("counter_*.db"))


def test_the_janitor_purges_at_start_and_keeps_running(running: Running) -> None:
    janitor = running.services["janitor"]
    wait_until(
        lambda: re.search(r"^total\s+\d+$", janitor.said(), re.MULTILINE) is not None,
        "the janitor's first purge report",
    )
    assert janitor.process.poll() is None
    assert "Error" not in janitor.said()


def test_mail_written_in_a_server_container_is_sent_by_the_mailer(running: Running) -> None:
    """The servers send no mail in production; the mailer, alone holding the SMTP settings,
    sends what they write."""
    for name in running.stack.authserver_services():
        if name != "mailer":
            assert not running.stack.services[name]["environment"].get("AUTHSERVER_SMTP_URL")
    server = running.stack.container("authserver-1", "run-mail")
    run_in(
        server,
        "authserver",
        "users",
        "create",
        "mail@example.com",
        "--password-stdin",
        stdin="a long passphrase for the mail test\n",
    )
    run_in(server, "authserver", "users", "send-reset", "mail@example.com")
    wait_until(
        lambda: any(m["To"] == "mail@example.com" for m in running.mailbox.received),
        "the mailer to send the reset link",
    )
    assert running.services["mailer"].process.poll() is None


# A command of each kind: reads (users, outbox), writes in batches (purge). What used to stop
# them, the metrics folder, was met before any of a command's own work began.
COMMANDS = (
    ("authserver", "users", "list"),
    ("authserver", "outbox", "status"),
    ("authserver", "purge"),
)


@pytest.mark.parametrize(
    "service", ["migrate", "authserver-1", "authserver-2", "janitor", "mailer"]
)
def test_every_command_runs_in_a_fresh_container_of_every_authserver_service(
    running: Running, service: str
) -> None:
    """`docker compose run --rm SERVICE authserver ...`: a container of its own, whose
    metrics folder nobody has made."""
    assert service in running.stack.authserver_services()
    container = running.stack.container(service, f"run-{service}")
    folder = container.env.get("PROMETHEUS_MULTIPROC_DIR")
    assert folder is None or not Path(folder).exists()
    for command in COMMANDS:
        run_in(container, *command)
    if folder is not None:
        assert Path(folder).is_dir()


def test_commands_run_beside_the_server_in_its_container(running: Running) -> None:
    """`docker compose exec authserver-1 authserver ...`: the server's own metrics folder."""
    server = running.services["authserver-1"]
    container = running.stack.running("authserver-1")
    for command in COMMANDS:
        run_in(container, *command)
    assert requests.get(server.url + "/readyz", timeout=30).status_code == 200


def test_the_readmes_first_admin_and_first_client_commands_run_in_the_stack(
    running: Running, tmp_path: Path
) -> None:
    printed = run_readmes_first_commands(running.stack, tmp_path / "docker")
    client = json.loads(next(line for line in printed.splitlines() if line.startswith("{")))
    container = running.stack.running("authserver-1")
    shown = run_in(container, "authserver", "users", "show", "admin@example.com")
    assert "admin" in shown
    clients = run_in(container, "authserver", "clients", "list")
    assert client["client_id"] in clients
