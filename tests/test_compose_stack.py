"""docker-compose.yml started as processes: every authserver service's own command, with the
environment the compose file and ``.env.example`` give its container (tests/compose_stack.py),
on a PostgreSQL database of the test's own and the local Redis.

The migration runs first, as compose orders it; then both servers (gunicorn with
gunicorn.conf.py, answering their compose healthcheck), the janitor and the mailer (to a real
SMTP server on 127.0.0.1). Every CLI command runs in a fresh container of every authserver
service (``docker compose run --rm``) and in a running one (``docker compose exec``), and the
README's commands for a first admin user and a first client run as written, through a
``docker`` that starts containers of this stack.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
import redis
import requests
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from authserver.cli import alembic_config
from tests.compose_stack import (
    ROOT,
    SECRETS,
    Container,
    Machine,
    Stack,
    env_example,
    install_fake_docker,
)
from tests.conftest import REDIS_URL, listening_socket, redis_answers, scratch_database
from tests.helpers import HANG_SECONDS, wait_until
from tests.smtp_servers import Mailbox, smtp_server

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.skipif(not redis_answers(), reason="needs Redis on 127.0.0.1:6379"),
]

METRICS_TOKEN = secrets.token_urlsafe(32)
# The port the image's servers listen on (gunicorn.conf.py, the healthchecks, nginx.conf).
SERVER_PORT = "8000"


@dataclass
class Service:
    container: Container
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def said(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class RunningStack:
    stack: Stack
    migrate: subprocess.CompletedProcess[str]
    services: dict[str, Service] = field(default_factory=dict)
    mailbox: Mailbox = field(default_factory=Mailbox)

    def servers(self) -> list[Service]:
        return [service for service in self.services.values() if service.url]


def _start(container: Container, command: list[str], pass_fds: tuple[int, ...] = ()) -> Service:
    log = container.root / "log"
    out: IO[bytes] = log.open("wb")
    with out:
        process = subprocess.Popen(
            container.command(command),
            env=container.env,
            cwd=container.cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=pass_fds,
        )
    return Service(container, process, log)


def _is_server(spec: dict[str, object]) -> bool:
    return "gunicorn" in " ".join(map(str, spec.get("command", [])))


def _healthcheck(stack: Stack, service: Service) -> subprocess.CompletedProcess[str]:
    """The service's compose healthcheck, run in its container against its port here."""
    test = stack.services[service.container.service]["healthcheck"]["test"]
    assert test[0] == "CMD", test
    port = service.url.rsplit(":", 1)[1]
    words = [word.replace(f"127.0.0.1:{SERVER_PORT}", f"127.0.0.1:{port}") for word in test[1:]]
    return subprocess.run(
        service.container.command(words),
        env=service.container.env,
        cwd=service.container.cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _stop(service: Service) -> None:
    if service.process.poll() is None:
        service.process.send_signal(signal.SIGTERM)
    service.process.wait(timeout=HANG_SECONDS)


def stack_variables(**overrides: str) -> dict[str, str]:
    """``.env``: ``.env.example`` with its secrets filled in, as the README says."""
    variables = env_example()
    variables.update({name: secrets.token_urlsafe(48) for name in SECRETS})
    variables.update(overrides)
    return variables


@pytest.fixture(scope="module")
def running(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    folder = tmp_path_factory.mktemp("compose")
    prefix = f"authserver-test-{uuid.uuid4().hex}"
    mailbox = Mailbox()
    with (
        scratch_database(database_url, "compose", folder) as stack_database,
        smtp_server(mailbox) as smtp_port,
    ):
        stack = Stack(
            stack_variables(
                AUTHSERVER_METRICS_TOKEN=METRICS_TOKEN,
                AUTHSERVER_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
            ),
            Machine(stack_database, REDIS_URL, prefix, folder / "containers"),
        )
        migrate = stack.container("migrate")
        migrated = subprocess.run(
            migrate.command(stack.services["migrate"]["command"]),
            env=migrate.env,
            cwd=migrate.cwd,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert migrated.returncode == 0, migrated.stderr
        result = RunningStack(stack, migrated, mailbox=mailbox)
        try:
            for name in stack.authserver_services():
                spec = stack.services[name]
                if name == "migrate":
                    continue
                container = stack.container(name)
                if _is_server(spec):
                    listener = listening_socket()
                    # Only the address differs from the container: two replicas cannot both
                    # have port 8000 on one machine. gunicorn serves on the socket bound here.
                    container.env["GUNICORN_BIND"] = f"fd://{listener.fileno()}"
                    host, port = listener.getsockname()
                    with listener:
                        service = _start(container, spec["command"], (listener.fileno(),))
                    service.url = f"http://{host}:{port}"
                else:
                    service = _start(container, spec["command"])
                result.services[name] = service
            for server in result.servers():

                def healthy(server: Service = server) -> bool:
                    assert server.process.poll() is None, server.said()[-3000:]
                    return _healthcheck(stack, server).returncode == 0

                wait_until(healthy, f"{server.container.service} to pass its healthcheck")
            yield result
        finally:
            for service in result.services.values():
                _stop(service)
            store = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
            for key in store.scan_iter(match=f"*{prefix}*", count=1000):
                store.delete(key)
            store.close()


def run_in(container: Container, *words: str, stdin: str | None = None) -> str:
    """``words`` in ``container``; its output, after checking it succeeded in one piece."""
    result = subprocess.run(
        container.command(list(words)),
        env=container.env,
        cwd=container.cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    said = result.stdout + result.stderr
    assert result.returncode == 0, f"{container.service}: {' '.join(words)}\n{said}"
    assert "Traceback" not in said, said
    return result.stdout


def test_the_stack_starts_every_authserver_service_of_the_compose_file(
    running: RunningStack,
) -> None:
    assert set(running.services) | {"migrate"} == set(running.stack.authserver_services())
    assert len(running.servers()) >= 2
    for name, service in running.services.items():
        assert service.process.poll() is None, f"{name} exited:\n{service.said()[-3000:]}"


def test_the_migrate_service_brings_the_database_to_the_newest_revision(
    running: RunningStack,
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
    running: RunningStack,
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


def test_the_janitor_purges_at_start_and_keeps_running(running: RunningStack) -> None:
    janitor = running.services["janitor"]
    wait_until(
        lambda: re.search(r"^total\s+\d+$", janitor.said(), re.MULTILINE) is not None,
        "the janitor's first purge report",
    )
    assert janitor.process.poll() is None
    assert "Error" not in janitor.said()


def test_mail_written_in_a_server_container_is_sent_by_the_mailer(running: RunningStack) -> None:
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
    running: RunningStack, service: str
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


def test_commands_run_beside_the_server_in_its_container(running: RunningStack) -> None:
    """`docker compose exec authserver-1 authserver ...`: the server's own metrics folder."""
    server = running.services["authserver-1"]
    container = running.stack.running("authserver-1")
    for command in COMMANDS:
        run_in(container, *command)
    assert requests.get(server.url + "/readyz", timeout=30).status_code == 200


def readme_section(title: str) -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(f"\n## {title}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else None]


def sh_blocks(section: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", section, re.DOTALL)


def test_the_readmes_first_admin_and_first_client_commands_run_in_the_stack(
    running: RunningStack, tmp_path: Path
) -> None:
    blocks = [
        block
        for block in sh_blocks(readme_section("Running with docker compose"))
        if "docker compose run" in block
    ]
    assert blocks, "the README shows no `docker compose run` command"
    shell_env = install_fake_docker(running.stack, tmp_path / "docker")
    script = "set -euo pipefail\n" + "\n".join(blocks)
    result = subprocess.run(
        ["bash", "-c", script],
        env=shell_env,
        # `read -rs ADMIN_PASSWORD` reads the first line.
        input="a long passphrase of the first admin\n",
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    client = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    container = running.stack.running("authserver-1")
    shown = run_in(container, "authserver", "users", "show", "admin@example.com")
    assert "admin" in shown
    clients = run_in(container, "authserver", "clients", "list")
    assert client["client_id"] in clients
