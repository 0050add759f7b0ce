"""docker-compose.yml's services as processes on this machine, as their containers would run
them (no Docker engine runs here or in CI).

A service's container is a folder of its own (``<root>``): the image's working directory is
``<root>/app``, laid out by the Dockerfile's final stage (its ``WORKDIR`` and ``COPY`` lines),
and the container's ``/tmp`` is ``<root>/tmp``. Its environment is the Dockerfile's ``ENV``,
then the service's ``environment`` from the compose file, interpolated from the ``.env``
made of ``.env.example`` as compose does it; the other services it names are this machine's:
the ``postgres`` service's database is a test database, ``redis`` the local Redis (under a
key prefix of the test's own). Nothing else is changed, so a setting the compose file gets
wrong reaches the process as it would reach the container.

``docker`` (``fake_docker``) is a stand-in for the ``docker compose run/exec`` lines of the
README: it runs the command in the named service's container, a fresh one for ``run``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.engine import make_url

from tests.helpers import HANG_SECONDS, wait_until

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.executable).parent.parent
# Where the image keeps its virtualenv (Dockerfile: python -m venv /opt/venv).
IMAGE_VENV = "/opt/venv"
AUTHSERVER_IMAGE = "authserver:local"
# The one folder of a container the image's user may write to.
CONTAINER_TMP = "/tmp/"  # noqa: S108 (a path inside a container, mapped to a test folder)
SECRETS = ("POSTGRES_PASSWORD", "AUTHSERVER_SECRET_KEY", "AUTHSERVER_KEY_ENCRYPTION_KEY")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}; $$ is a dollar.
INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def compose_file() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def env_example() -> dict[str, str]:
    """``.env.example``'s settings, as compose reads a ``.env`` file."""
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


class MissingVariable(Exception):
    """A ``${NAME:?...}`` whose variable is unset or empty: compose refuses to start."""


def interpolate(text: str, variables: dict[str, str]) -> str:
    """Compose's variable interpolation of one value."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        value = variables.get(name)
        empty_counts = operator is not None and operator.startswith(":")
        missing = value is None or (empty_counts and value == "")
        if operator in (":-", "-"):
            return argument if missing else str(value)
        if operator in (":?", "?"):
            if missing:
                raise MissingVariable(f"{name}: {argument}")
            return str(value)
        return value or ""

    return INTERPOLATION.sub(substitute, text)


def interpolated(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, str):
        return interpolate(value, variables)
    if isinstance(value, list):
        return [interpolated(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: interpolated(item, variables) for key, item in value.items()}
    return value


@dataclass(frozen=True)
class Image:
    """The Dockerfile's final stage: what a container of the image starts with."""

    env: dict[str, str]
    workdir: str
    copied: list[str]
    exposed: list[str]
    user: str

    @classmethod
    def read(cls) -> Image:
        final_stage = (ROOT / "Dockerfile").read_text().split("\nFROM ")[-1]
        env: dict[str, str] = {}
        workdir = "/"
        copied: list[str] = []
        exposed: list[str] = []
        user = "root"
        for line in final_stage.splitlines():
            words = shlex.split(line, comments=True)
            if not words:
                continue
            instruction, arguments = words[0], words[1:]
            if instruction == "ENV":
                env.update(argument.split("=", 1) for argument in arguments)  # type: ignore[misc]
            elif instruction == "WORKDIR":
                workdir = arguments[0]
            elif instruction == "COPY" and not arguments[0].startswith("--from"):
                copied.extend(arguments[:-1])
            elif instruction == "EXPOSE":
                exposed.extend(arguments)
            elif instruction == "USER":
                user = arguments[0]
        return cls(env=env, workdir=workdir, copied=copied, exposed=exposed, user=user)


@dataclass(frozen=True)
class Machine:
    """What this machine stands in for: the database, Redis and the test's own folders."""

    database_url: str
    redis_url: str
    rate_limit_key_prefix: str
    containers: Path


@dataclass(frozen=True)
class Container:
    service: str
    root: Path
    env: dict[str, str]

    @property
    def cwd(self) -> Path:
        return self.root / Image.read().workdir.lstrip("/")

    def command(self, words: list[str]) -> list[str]:
        """``words`` with the program found on the container's PATH."""
        program = shutil.which(words[0], path=self.env["PATH"])
        assert program, f"{words[0]} is not on the PATH of {self.service}"
        return [program, *words[1:]]


class Stack:
    """docker-compose.yml, with its ``.env``, on this machine."""

    def __init__(self, variables: dict[str, str], machine: Machine) -> None:
        self.variables = variables
        self.machine = machine
        self.services: dict[str, Any] = interpolated(compose_file()["services"], variables)
        self.image = Image.read()

    def authserver_services(self) -> list[str]:
        return [
            name for name, spec in self.services.items() if spec.get("image") == AUTHSERVER_IMAGE
        ]

    def container(self, service: str, name: str | None = None) -> Container:
        """A new container of ``service``: a fresh folder laid out as the image is."""
        root = self.machine.containers / (name or service)
        assert not root.exists(), f"container {root.name} exists already"
        workdir = root / self.image.workdir.lstrip("/")
        workdir.mkdir(parents=True)
        (root / "tmp").mkdir()
        for source in self.image.copied:
            for path in ROOT.glob(source):
                if path.is_dir():
                    shutil.copytree(path, workdir / path.name)
                else:
                    shutil.copy(path, workdir / path.name)
        return Container(service, root, self._environment(service, root))

    def running(self, service: str) -> Container:
        """The container ``service`` runs in (``docker compose exec``)."""
        root = self.machine.containers / service
        assert root.is_dir(), f"{service} is not running"
        return Container(service, root, self._environment(service, root))

    def _environment(self, service: str, root: Path) -> dict[str, str]:
        spec = self.services[service]
        declared = spec.get("environment", {})
        assert isinstance(declared, dict), f"{service}: environment must be a mapping"
        env = {
            # What the base image gives every process, and the host's PATH after the image's.
            "PATH": os.environ["PATH"],
            # The image's user's home is its working directory (Dockerfile: useradd --home-dir);
            # gunicorn's control socket would go there, so each container has its own.
            "HOME": str(root / self.image.workdir.lstrip("/")),
            "LANG": "C.UTF-8",
        }
        if "PYTHONPATH" in os.environ:
            # The code under test, where the image has it installed in its virtualenv.
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        for name, value in {**self.image.env, **declared}.items():
            env[name] = self._on_this_machine(service, name, str(value), env, root)
        return env

    def _on_this_machine(
        self, service: str, name: str, value: str, env: dict[str, str], root: Path
    ) -> str:
        if name == "PATH":
            assert value.startswith(f"{IMAGE_VENV}/bin:"), value
            return value.replace(IMAGE_VENV, str(VENV)).replace("$PATH", env["PATH"])
        if name == "DATABASE_URL":
            return self._database(service, value)
        if name == "AUTHSERVER_RATELIMIT_STORAGE_URI":
            assert value.startswith("redis://redis:6379/"), value
            assert "redis" in self.services, "the stack counts in Redis but has no redis service"
            env["AUTHSERVER_RATELIMIT_KEY_PREFIX"] = self.machine.rate_limit_key_prefix
            return self.machine.redis_url
        if value.startswith("/"):
            # A path inside the container: only its /tmp is writable by the image's user.
            assert value.startswith(CONTAINER_TMP), f"{service}: {name}={value} is outside /tmp"
            return str(root / value.lstrip("/"))
        return value

    def _database(self, service: str, value: str) -> str:
        url = make_url(value)
        postgres = self.services["postgres"]["environment"]
        assert url.drivername == "postgresql+psycopg", f"{service}: {value}"
        assert (url.host, url.port) == ("postgres", 5432), f"{service}: {value}"
        assert url.username == postgres["POSTGRES_USER"], service
        assert url.password == postgres["POSTGRES_PASSWORD"], service
        assert url.database == postgres["POSTGRES_DB"], service
        return self.machine.database_url

    def save(self, path: Path) -> None:
        """What ``fake_docker`` needs to make containers of this stack."""
        path.write_text(
            json.dumps(
                {
                    "variables": self.variables,
                    "database_url": self.machine.database_url,
                    "redis_url": self.machine.redis_url,
                    "rate_limit_key_prefix": self.machine.rate_limit_key_prefix,
                    "containers": str(self.machine.containers),
                }
            )
        )

    @classmethod
    def load(cls, path: Path) -> Stack:
        saved = json.loads(path.read_text())
        machine = Machine(
            database_url=saved["database_url"],
            redis_url=saved["redis_url"],
            rate_limit_key_prefix=saved["rate_limit_key_prefix"],
            containers=Path(saved["containers"]),
        )
        return cls(saved["variables"], machine)


FAKE_DOCKER = '''#!{python}
"""docker, as far as the README's `docker compose run/exec` lines need it.

tests/compose_stack.py wrote it."""
import os, sys, uuid
sys.path.insert(0, {root!r})
from pathlib import Path
from tests.compose_stack import Stack

args = sys.argv[1:]
if args[:1] != ["compose"] or len(args) < 2 or args[1] not in ("run", "exec"):
    sys.exit("fake docker: only `docker compose run` and `exec`, got " + " ".join(args))
verb, rest = args[1], args[2:]
while rest and rest[0].startswith("-"):
    if rest[0] not in ("--rm", "-T"):
        sys.exit("fake docker: unknown option " + rest[0])
    rest = rest[1:]
service, command = rest[0], rest[1:]
stack = Stack.load(Path(os.environ["FAKE_DOCKER_STACK"]))
if verb == "run":
    container = stack.container(service, f"run-{{service}}-{{uuid.uuid4().hex[:8]}}")
else:
    container = stack.running(service)
os.chdir(container.cwd)
words = container.command(command)
os.execve(words[0], words, container.env)
'''


def install_fake_docker(stack: Stack, folder: Path) -> dict[str, str]:
    """A ``docker`` on a PATH of its own; returns the environment a shell running the
    README's lines needs."""
    folder.mkdir(parents=True, exist_ok=True)
    saved = folder / "stack.json"
    stack.save(saved)
    docker = folder / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable, root=str(ROOT)))
    docker.chmod(0o755)
    return {
        "PATH": f"{folder}:{os.environ['PATH']}",
        "FAKE_DOCKER_STACK": str(saved),
        "HOME": str(folder),
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
    }


# -- the stack's services as running processes -------------------------------------------------

# The port the image's servers listen on (serve.sh, the healthchecks, nginx.conf).
SERVER_PORT = "8000"


def stack_variables(**overrides: str) -> dict[str, str]:
    """``.env``: ``.env.example`` with its secrets filled in, as the README says."""
    variables = env_example()
    variables.update({name: secrets.token_urlsafe(48) for name in SECRETS})
    variables.update(overrides)
    return variables


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

    def servers(self) -> list[Service]:
        return [service for service in self.services.values() if service.url]


def is_server(spec: dict[str, Any]) -> bool:
    return "serve.sh" in " ".join(map(str, spec.get("command", [])))


def _start(container: Container, command: list[str], pass_fds: tuple[int, ...] = ()) -> Service:
    log = container.root / "log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            container.command(command),
            env=container.env,
            cwd=container.cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=pass_fds,
        )
    return Service(container, process, log)


def healthcheck(stack: Stack, service: Service) -> subprocess.CompletedProcess[str]:
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


@contextmanager
def started(
    stack: Stack, listeners: dict[str, socket.socket], others: Iterable[str]
) -> Iterator[RunningStack]:
    """The stack as compose orders it: ``migrate`` to its end, then the servers named in
    ``listeners`` (each serving on its socket, whose address alone differs from the
    container's: two replicas cannot both have port 8000 on one machine) until their
    healthchecks pass, and the services named in ``others``. All stopped with SIGTERM."""
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
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    result = RunningStack(stack, migrated)
    try:
        for name, listener in listeners.items():
            spec = stack.services[name]
            assert is_server(spec), name
            container = stack.container(name)
            # granian binds by address, never to a socket it is handed: the listener only
            # picked the port, and is closed before the server binds it.
            host, port = listener.getsockname()
            listener.close()
            container.env["GRANIAN_HOST"] = host
            container.env["GRANIAN_PORT"] = str(port)
            # Two workers, whatever the machine's cores: the stack's servers, not a benchmark.
            container.env["GRANIAN_WORKERS"] = "2"
            service = _start(container, spec["command"])
            service.url = f"http://{host}:{port}"
            result.services[name] = service
        for name in others:
            result.services[name] = _start(stack.container(name), stack.services[name]["command"])
        for server in result.servers():

            def healthy(server: Service = server) -> bool:
                assert server.process.poll() is None, server.said()[-3000:]
                return healthcheck(stack, server).returncode == 0

            wait_until(healthy, f"{server.container.service} to pass its healthcheck")
        yield result
    finally:
        for service in result.services.values():
            _stop(service)


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


# -- the README's commands ----------------------------------------------------------------------


def readme_section(title: str) -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(f"\n## {title}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else None]


def sh_blocks(section: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", section, re.DOTALL)


FIRST_ADMIN_PASSWORD = "a long passphrase of the first admin"


def run_readmes_first_commands(stack: Stack, folder: Path) -> str:
    """The README's ``docker compose run`` blocks (the first admin, the first client), run by
    bash as written, in containers of ``stack``; their standard output."""
    blocks = [
        block
        for block in sh_blocks(readme_section("Running with docker compose"))
        if "docker compose run" in block
    ]
    assert blocks, "the README shows no `docker compose run` command"
    result = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + "\n".join(blocks)],
        env=install_fake_docker(stack, folder),
        # `read -rs ADMIN_PASSWORD` reads the first line.
        input=FIRST_ADMIN_PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    said = result.stdout + result.stderr
    assert result.returncode == 0, said
    assert "Traceback" not in said, said
    return result.stdout
