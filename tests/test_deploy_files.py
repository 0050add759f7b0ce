"""The production stack's files say what they must: no Docker engine runs in CI, so their
structure is what can be checked here."""

from __future__ import annotations

import os
import re
import runpy
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {"POSTGRES_PASSWORD", "AUTHSERVER_SECRET_KEY", "AUTHSERVER_KEY_ENCRYPTION_KEY"}
SERVERS = ("authserver-1", "authserver-2")


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def test_the_stack_has_every_service_it_needs() -> None:
    assert set(_compose()["services"]) == {
        "postgres",
        "redis",
        "migrate",
        *SERVERS,
        "nginx",
        "janitor",
        "mailer",
        "caddy",
    }


def test_long_running_services_have_healthchecks_and_servers_check_readyz() -> None:
    services = _compose()["services"]
    for name in ("postgres", "redis", *SERVERS, "nginx"):
        assert "healthcheck" in services[name], name
    for name in (*SERVERS, "nginx"):
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"]), name


def test_servers_wait_for_the_migration_and_run_the_shipped_server_script() -> None:
    services = _compose()["services"]
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    for name in (*SERVERS, "janitor", "mailer"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
    for name in SERVERS:
        assert " ".join(services[name]["command"]).endswith("exec ./serve.sh")
        assert services[name]["environment"]["AUTHSERVER_RATELIMIT_STORAGE_URI"].startswith(
            "redis://redis"
        )


def test_the_janitor_purges_every_hour() -> None:
    assert _compose()["services"]["janitor"]["command"] == [
        "authserver",
        "purge",
        "--every",
        "1h",
    ]


def test_only_the_mailer_holds_the_smtp_password_and_it_sends_every_five_seconds() -> None:
    services = _compose()["services"]
    assert services["mailer"]["command"] == ["authserver", "mail", "deliver", "--every", "5s"]
    # From .env; empty is allowed (a trial prints mail in the mailer's log instead).
    assert services["mailer"]["environment"]["AUTHSERVER_SMTP_URL"] == "${AUTHSERVER_SMTP_URL:-}"
    for name in (*SERVERS, "migrate", "janitor"):
        assert "AUTHSERVER_SMTP_URL" not in services[name]["environment"], name


def test_nginx_balances_over_both_replicas() -> None:
    config = (ROOT / "deploy" / "nginx.conf").read_text()
    for name in SERVERS:
        assert f"server {name}:8000" in config


def test_no_secret_has_a_default_and_the_stack_refuses_to_start_without_it() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    references = re.findall(r"\$\{([A-Z_]+)([^}]*)\}", text)
    secret_references = [(name, rest) for name, rest in references if name in SECRETS]
    assert {name for name, _ in secret_references} == SECRETS
    for name, rest in secret_references:
        assert rest.startswith(":?"), f"{name} must be required (${{{name}:?...}}), got {rest!r}"


def test_env_example_lists_every_variable_the_stack_reads_with_no_secret_filled_in() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    wanted = {name for name, _ in re.findall(r"\$\{([A-Z_]+)([^}]*)\}", text)}
    example = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            example[name.strip()] = value.strip()
    assert wanted <= set(example)
    for name in SECRETS:
        assert example[name] == "", f"{name} must not have a value in .env.example"


def test_the_image_runs_as_a_non_root_user_without_build_tools() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    final_stage = dockerfile.split("\nFROM ")[-1]
    assert re.search(r"^USER (?!root)\S+", final_stage, re.MULTILINE)
    assert "slim" in final_stage.splitlines()[0]
    for tool in ("gcc", "build-essential", "apt-get install"):
        assert tool not in final_stage


def test_gunicorn_config_uses_threads_and_one_worker_per_core() -> None:
    settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))

    assert settings["worker_class"] == "gthread"
    assert settings["workers"] >= 1
    assert "%(q)s" not in settings["access_log_format"]  # no query strings in access logs


# -- the compose file, the Dockerfile, the Caddyfile and the README agree --------------------

SERVER_PORT = 8000


def _readme_section(title: str) -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(f"\n## {title}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else None]


def test_the_image_serves_with_serve_sh_which_it_copies() -> None:
    final_stage = (ROOT / "Dockerfile").read_text().split("\nFROM ")[-1]
    assert re.search(r"^COPY .*\bdeploy/serve\.sh\b.* \./$", final_stage, re.MULTILINE)
    assert 'CMD ["./serve.sh"]' in final_stage
    assert os.access(ROOT / "deploy" / "serve.sh", os.X_OK)


def test_serve_sh_access_format_has_no_query_string_and_a_kill_timeout_is_set() -> None:
    """The format and the setting; tests/test_production_server.py runs them."""
    script = (ROOT / "deploy" / "serve.sh").read_text()
    access_format = re.search(r'GRANIAN_LOG_ACCESS_FMT:-(.*)}"$', script, re.MULTILINE)
    assert access_format is not None
    assert "%(path)s" in access_format.group(1)
    assert "query_string" not in access_format.group(1)
    assert "GRANIAN_INTERFACE=wsgi" in script
    assert re.search(r"GRANIAN_WORKERS_KILL_TIMEOUT:-\d+", script)


def test_the_servers_port_is_the_same_in_every_file() -> None:
    """serve.sh's and gunicorn's default port, the image's EXPOSE, the healthchecks, nginx
    and Caddy."""
    settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert settings["bind"].rsplit(":", 1)[1] == str(SERVER_PORT)
    script = (ROOT / "deploy" / "serve.sh").read_text()
    assert f'GRANIAN_PORT="${{GRANIAN_PORT:-{SERVER_PORT}}}"' in script
    final_stage = (ROOT / "Dockerfile").read_text().split("\nFROM ")[-1]
    assert re.findall(r"^EXPOSE (\d+)$", final_stage, re.MULTILINE) == [str(SERVER_PORT)]
    services = _compose()["services"]
    for name in SERVERS:
        assert f"127.0.0.1:{SERVER_PORT}/readyz" in " ".join(services[name]["healthcheck"]["test"])
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    assert re.findall(r"authserver-\d:(\d+)", caddyfile) == [str(SERVER_PORT)] * len(SERVERS)
    for name in SERVERS:
        assert f"{name}:{SERVER_PORT}" in caddyfile


def test_only_nginx_publishes_a_plain_http_port_and_only_on_loopback() -> None:
    services = _compose()["services"]
    published = {name: spec["ports"] for name, spec in services.items() if "ports" in spec}
    assert published == {"nginx": ["127.0.0.1:8080:8080"], "caddy": ["80:80", "443:443"]}
    assert "listen 8080;" in (ROOT / "deploy" / "nginx.conf").read_text()


def test_tls_is_a_profile_whose_caddy_serves_the_issuer_over_both_replicas() -> None:
    caddy = _compose()["services"]["caddy"]
    assert caddy["profiles"] == ["tls"]
    assert caddy["environment"]["AUTHSERVER_ISSUER"].startswith("${AUTHSERVER_ISSUER:?")
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    assert re.search(r"^\{\$AUTHSERVER_ISSUER\} \{$", caddyfile, re.MULTILINE)
    assert "health_uri /readyz" in caddyfile
    # Caddy is the one hop the servers trust.
    assert _compose()["x-authserver-env"]["AUTHSERVER_TRUSTED_PROXIES"] == "1"


def test_every_file_the_compose_file_mounts_exists() -> None:
    for name, spec in _compose()["services"].items():
        for volume in spec.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), f"{name} mounts {source}, which is missing"


def test_every_authserver_container_gets_the_same_settings() -> None:
    """So that every CLI command runs in every container (`docker compose run --rm SERVICE
    authserver ...`): the mailer's differ only by the mail settings it alone holds."""
    services = _compose()["services"]
    shared = _compose()["x-authserver-env"]
    for name in (*SERVERS, "migrate", "janitor"):
        assert services[name]["environment"] == shared, name
    mail_only = {"AUTHSERVER_SMTP_URL", "AUTHSERVER_MAIL_FROM", "AUTHSERVER_PRODUCT_NAME"}
    mailer = services["mailer"]["environment"]
    assert {k: v for k, v in mailer.items() if k not in mail_only} == shared


def test_the_readme_compose_section_says_what_the_compose_file_does() -> None:
    section = _readme_section("Running with docker compose")
    services = _compose()["services"]
    for name in services:
        if name not in ("postgres", "redis", "nginx", "caddy"):
            assert f"`{name}`" in section, f"the README does not name the {name} service"
    for name in ("PostgreSQL", "Redis", "nginx", "Caddy"):
        assert name in section
    host, port, _ = services["nginx"]["ports"][0].split(":")
    assert f"**{host}:{port}**" in section
    assert f"AUTHSERVER_ISSUER=http://localhost:{port}" in section
    assert "cp .env.example .env" in section
    for secret in SECRETS:
        assert secret in section
    assert "docker compose --profile tls up -d" in section
    assert "deploy/Caddyfile" in section
    assert services["janitor"]["command"][-2:] == ["--every", "1h"]
    assert "authserver purge --every 1h" in section
    assert "authserver mail deliver --every 5s" in section


def test_the_trial_settings_of_the_readme_are_what_the_server_calls_a_trial() -> None:
    """development on a loopback http issuer: plain cookies a browser keeps over http, and a
    configuration the server accepts; production refuses the same issuer."""
    from authserver.config import Config, ConfigError

    section = _readme_section("Running with docker compose")
    issuer = re.search(r"^AUTHSERVER_ISSUER=(http://\S+)$", section, re.MULTILINE)
    env = re.search(r"^AUTHSERVER_ENV=(\S+)$", section, re.MULTILINE)
    assert issuer
    assert env
    settings = {
        "AUTHSERVER_ISSUER": issuer.group(1),
        "AUTHSERVER_SECRET_KEY": "s" * 48,
        "AUTHSERVER_KEY_ENCRYPTION_KEY": "k" * 48,
        "DATABASE_URL": "postgresql+psycopg://authserver:pw@postgres:5432/authserver",
    }
    trial = Config.from_env({**settings, "AUTHSERVER_ENV": env.group(1)})
    assert not trial.secure_cookies
    with pytest.raises(ConfigError) as refused:
        Config.from_env({**settings, "AUTHSERVER_ENV": "production"})
    assert "AUTHSERVER_ISSUER must be an https URL in production" in refused.value.problems
    example_issuer = _env_example()["AUTHSERVER_ISSUER"]
    assert Config.from_env(
        {**settings, "AUTHSERVER_ENV": "production", "AUTHSERVER_ISSUER": example_issuer}
    ).secure_cookies


def _env_example() -> dict[str, str]:
    example = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            example[name.strip()] = value.strip()
    return example


def test_the_docs_describe_what_exists_and_promise_nothing() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text().lower()
        for phrase in ("coming next", "coming soon", "not yet implemented"):
            assert phrase not in text, f"{path.name} says {phrase!r}"


def test_every_command_the_deployment_guide_names_exists() -> None:
    from authserver.cli import main

    guide = (ROOT / "docs" / "DEPLOYMENT.md").read_text()
    named = set(re.findall(r"`authserver ([a-z-]+(?: [a-z-]+)?)", guide))
    assert named
    for words in named:
        group_or_command = main.commands.get(words.split()[0])
        assert group_or_command is not None, f"no `authserver {words}`"
        if len(words.split()) == 2 and hasattr(group_or_command, "commands"):
            assert words.split()[1] in group_or_command.commands, f"no `authserver {words}`"


def test_the_deployment_guide_names_the_stacks_services_and_database() -> None:
    guide = (ROOT / "docs" / "DEPLOYMENT.md").read_text()
    services = _compose()["services"]
    for name in services:
        assert f"`{name}`" in guide, f"docs/DEPLOYMENT.md does not name {name}"
    postgres = services["postgres"]["environment"]
    dump = f"pg_dump -U {postgres['POSTGRES_USER']} -Fc {postgres['POSTGRES_DB']}"
    assert dump in guide
    assert f"pg_restore -U {postgres['POSTGRES_USER']} -d {postgres['POSTGRES_DB']}" in guide
    assert "../README.md#scaling" in guide
    assert "## Scaling" in (ROOT / "README.md").read_text()


def test_every_file_the_package_reads_at_run_time_is_in_its_package_data() -> None:
    """A pip install (the image's) has only the modules and the package-data globs: a
    template, script or catalog outside them would be missing in production alone."""
    import tomllib
    from pathlib import PurePosixPath

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["authserver"]

    def packaged(relative: PurePosixPath) -> bool:
        # setuptools' globs: "*" stays within one folder.
        return any(
            len(PurePosixPath(g).parts) == len(relative.parts) and relative.match(g) for g in globs
        )

    package = ROOT / "authserver"
    left_out = [
        str(path.relative_to(package))
        for path in package.rglob("*")
        if path.is_file()
        # Sources and the translators' template (make translations), not read at run time.
        and path.suffix not in (".py", ".pyc", ".pot")
        and "__pycache__" not in path.parts
        and not packaged(PurePosixPath(path.relative_to(package).as_posix()))
    ]
    assert left_out == []
