"""The README's trial of the compose stack, in a real Chromium: the settings it gives for
http://localhost (development on a loopback http issuer), the stack's services started as
processes from docker-compose.yml (tests/compose_stack.py), the first admin made by the
README's commands, who then signs in at /account over plain http; and the mail the stack
sends shows in a service's log and at /dev/mail, as the README says.

Chromium and its launch are those of ``test_browser_flow.py`` (skipped the same way without
it). Unlike the other browser tests, this one uses ``localhost``: it is the trial's host name.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser, expect

from tests.compose_stack import (
    FIRST_ADMIN_PASSWORD,
    Machine,
    RunningStack,
    Stack,
    readme_section,
    run_in,
    run_readmes_first_commands,
    stack_variables,
    started,
)
from tests.conftest import REDIS_URL, listening_socket, redis_answers, scratch_database
from tests.e2e.test_browser_flow import TIMEOUT_MS, browser  # noqa: F401 (a fixture)
from tests.helpers import wait_until

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.skipif(not redis_answers(), reason="needs Redis on 127.0.0.1:6379"),
]

ADMIN = "admin@example.com"


def readme_trial_settings(port: int) -> dict[str, str]:
    """The settings the README gives for the trial, on this test's port."""
    section = readme_section("Running with docker compose")
    settings = dict(re.findall(r"^(AUTHSERVER_[A-Z_]+)=(\S+)$", section, re.MULTILINE))
    assert settings["AUTHSERVER_ISSUER"] == "http://localhost:8080"
    settings["AUTHSERVER_ISSUER"] = f"http://localhost:{port}"
    return settings


@pytest.fixture
def trial(database_url: str, tmp_path: Path) -> Iterator[RunningStack]:
    prefix = f"authserver-test-{uuid.uuid4().hex}"
    listener = listening_socket()
    port = listener.getsockname()[1]
    with scratch_database(database_url, "compose_trial", tmp_path) as stack_database:
        stack = Stack(
            stack_variables(**readme_trial_settings(port)),
            Machine(stack_database, REDIS_URL, prefix, tmp_path / "containers"),
        )
        assert stack.services["mailer"]["environment"]["AUTHSERVER_SMTP_URL"] == ""
        try:
            with started(stack, {"authserver-1": listener}, ["mailer"]) as running:
                yield running
        finally:
            store = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
            for key in store.scan_iter(match=f"*{prefix}*", count=1000):
                store.delete(key)
            store.close()


def test_the_readmes_trial_signs_the_first_admin_in_over_http_in_a_browser(
    trial: RunningStack,
    browser: Browser,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    run_readmes_first_commands(trial.stack, tmp_path / "docker")
    issuer = trial.stack.variables["AUTHSERVER_ISSUER"]

    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(issuer + "/account")
    page.wait_for_url(issuer + "/login?**")
    page.fill("input[name=email]", ADMIN)
    page.fill("input[name=password]", FIRST_ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(issuer + "/account")
    expect(page.locator("body")).to_contain_text(ADMIN)
    session_cookies = [c for c in context.cookies() if c["name"] == "authserver_session"]
    assert len(session_cookies) == 1
    assert session_cookies[0]["secure"] is False

    # Mail: printed by whichever service sends it (the mailer, or a server's own sender), and
    # listed at /dev/mail.
    run_in(
        trial.stack.container("authserver-1", "run-reset"),
        "authserver",
        "users",
        "send-reset",
        ADMIN,
    )
    wait_until(
        lambda: any(ADMIN in service.said() for service in trial.services.values()),
        "a service of the stack to print the reset message",
    )
    page.goto(issuer + "/dev/mail")
    expect(page.locator("body")).to_contain_text(ADMIN)
    context.close()
