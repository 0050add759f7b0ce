"""The production stack's files say what they must: no Docker engine runs in CI, so their
structure is what can be checked here."""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

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
    }


def test_long_running_services_have_healthchecks_and_servers_check_readyz() -> None:
    services = _compose()["services"]
    for name in ("postgres", "redis", *SERVERS, "nginx"):
        assert "healthcheck" in services[name], name
    for name in (*SERVERS, "nginx"):
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"]), name


def test_servers_wait_for_the_migration_and_run_gunicorn_with_the_repo_config() -> None:
    services = _compose()["services"]
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    for name in (*SERVERS, "janitor", "mailer"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
    for name in SERVERS:
        assert "gunicorn -c gunicorn.conf.py" in " ".join(services[name]["command"])
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
    assert services["mailer"]["environment"]["AUTHSERVER_SMTP_URL"].startswith(
        "${AUTHSERVER_SMTP_URL:?"
    )
    for name in (*SERVERS, "janitor"):
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
