"""Issue 18's "done when": a fresh clone, following only the README, reaches a signed-in
account page through the example app.

The clone is what a commit of the checkout under test would hold (``git ls-files``: the
tracked files as they are in the working tree, and the new files git does not ignore), copied
into an empty folder: no ``.venv``, no ``instance/``, nothing git ignores. Copied rather than
``git clone``d, so that the edits under test are what is tested, committed or not.

In it, the README's "Try it" steps are followed as written, in a real Chromium (Debian's,
launched and skipped as in ``test_browser_flow.py``): ``make run`` on a free port through the
``PORT=`` knob step 1 shows (it makes its own ``.venv`` and installs from the package index,
a minute or two), the demo user's email and password copied from the line step 1 names, the
example relying party started with the command step 2 gives for another port, its sign-in,
and the account page of step 4. Nothing from the suite's environment reaches the two
processes (no ``AUTHSERVER_*``, no database URL, no virtualenv): they see a newcomer's shell.

The example's port, 8765, is fixed (the demo client's redirect URI names it): concurrent runs
on one machine take turns through a lock file, and anything else listening there fails the
test, saying so.
"""

from __future__ import annotations

import fcntl
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import requests
from playwright.sync_api import Browser, expect

from tests.compose_stack import ROOT
from tests.e2e import screenshots
from tests.e2e.test_browser_flow import TIMEOUT_MS, browser  # noqa: F401 (a fixture)
from tests.helpers import HANG_SECONDS, wait_until

SHOTS = "fresh-clone"  # the folder of its screenshots in the test artefacts
# `make run` in a fresh clone creates a virtualenv and installs everything first.
FIRST_RUN_SECONDS = 900.0
# What the suite, make or a virtualenv put in the environment, which a newcomer's shell lacks.
NOT_IN_A_NEW_SHELL = {
    "DATABASE_URL",
    "TEST_DATABASE_URL",
    "VIRTUAL_ENV",
    "MAKEFLAGS",
    "MAKELEVEL",
    "MFLAGS",
    # The Makefile's knobs and the example's (the README's commands set what they need).
    "HOST",
    "PORT",
    "RP_CLIENT_ID",
    # What the `export ...` line of `make run` sets.
    "ISSUER",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "EMAIL",
    "PASSWORD",
}
NOT_IN_A_NEW_SHELL_PREFIXES = ("AUTHSERVER_", "PYTHON", "PYTEST_")


@dataclass(frozen=True)
class TryIt:
    """The README's "Try it" steps, as written there."""

    make_run: str  # step 1's `make run PORT=...`
    example_port: str  # the port that command names
    credentials_line: str  # the label of the line of `make run`'s output to copy from
    default_origin: str  # where step 2 says `make run` serves by default
    relying_party: str  # step 2's command for a `make run` on another port
    app_url: str  # step 3: the example app
    sign_in: str  # the button step 3 presses
    account_url: str  # step 4, on the default port
    this_device: str  # how step 4 says this browser is listed
    the_app: str  # how step 4 says the example app's sign-in is listed


def _one(pattern: str, text: str, what: str) -> str:
    found = re.search(pattern, text)
    assert found, f"the README's Try it steps no longer show {what}: {text!r}"
    return found.group(1)


def readme_try_it() -> TryIt:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\nTry it: ")
    steps_start = readme.index("\n1. ", start) + 1
    end = readme.index("\n\n", steps_start)
    # One string per numbered step, its lines joined as a reader reads them.
    steps = [" ".join(step.split()) for step in re.split(r"\n(?=\d\. )", readme[steps_start:end])]
    assert len(steps) == 4, steps
    first, second, third, fourth = steps
    make_run = _one(r"`(make run PORT=\d+)`", first, "make run on another port")
    return TryIt(
        make_run=make_run,
        example_port=make_run.rsplit("=", 1)[1],
        credentials_line=_one(r"`([^`]+:)` line", first, "the line with the credentials"),
        default_origin=_one(r"`Running on (http://[^`/]+)`", second, "where make run serves"),
        relying_party=_one(
            r"`(AUTHSERVER_ISSUER=\S+ [^`]*examples/relying_party\.py)`",
            second,
            "the example's command for another port",
        ),
        app_url=_one(r"Open (http://[\w.:]+)", third, "the example app's address"),
        sign_in=_one(r'press "([^"]+)"', third, "the sign-in button"),
        account_url=_one(r"Open (http://[\w.:]+/account)", fourth, "the account page"),
        this_device=_one(r'listed as "([^"]+)"', fourth, "how this browser is listed"),
        the_app=_one(r'sign-in as "([^"]+)"', fourth, "how the example app is listed"),
    )


def copy_a_fresh_clone(into: Path) -> None:
    """The files a commit of this checkout would hold, as they are now, into ``into``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.split(b"\0")):
        source = ROOT / os.fsdecode(name)
        if not source.exists() and not source.is_symlink():
            continue  # tracked, but deleted in the working tree: the commit would delete it
        target = into / os.fsdecode(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    assert (into / "Makefile").is_file()
    assert not (into / ".venv").exists()
    assert not (into / "instance").exists()


def a_new_shells_environment() -> dict[str, str]:
    """This process's environment less what the suite, make or a virtualenv put in it."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in NOT_IN_A_NEW_SHELL and not name.startswith(NOT_IN_A_NEW_SHELL_PREFIXES)
    }
    # The suite's own virtualenv, should its bin folder be on the PATH.
    suites_bin = str(Path(sys.prefix) / "bin")
    environment["PATH"] = os.pathsep.join(
        entry for entry in environment.get("PATH", "").split(os.pathsep) if entry != suites_bin
    )
    return environment


@contextmanager
def running(command: str, folder: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` run by bash in ``folder`` as in a terminal of its own, its output into
    ``log``; stopped at the end with everything it started (its process group)."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=folder,
            env=a_new_shells_environment(),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as in a terminal; then a kill for whatever is left of the group."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=HANG_SECONDS / 4)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def said(log: Path) -> str:
    """The end of what a process printed, for a failure's message."""
    return log.read_text(errors="replace")[-4000:]


def answers(url: str, process: subprocess.Popen[bytes], log: Path) -> bool:
    """Whether ``url`` answers 200; fails at once if ``process`` has ended."""
    assert process.poll() is None, f"it ended ({process.returncode}):\n{said(log)}"
    try:
        return requests.get(url, timeout=10, allow_redirects=False).status_code == 200
    except requests.RequestException:
        return False


def _locked(lock: IO[str]) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def the_examples_port(app_url: str) -> Iterator[None]:
    """The example's fixed port for this test alone: another run on this machine waits its
    turn; anything else listening there is a failure that says so."""
    port = urllib.parse.urlsplit(app_url).port
    path = Path(tempfile.gettempdir()) / f"authserver-tests-example-port-{port}.lock"
    with path.open("a") as lock:
        wait_until(lambda: _locked(lock), f"another test run to free port {port}", timeout=1800)
        assert port is not None
        assert _bindable(port), (
            f"port {port}, the example app's, is in use: stop what listens there"
        )
        yield


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def a_port_nothing_else_takes_meanwhile() -> int:
    """A free port for `make run`, which binds it only once it has installed, a minute or more
    later: from below the kernel's ephemeral range, where neither the suite's servers
    (``listening_socket``) nor outgoing connections are given a port in the meantime."""
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range")
    lowest = int(ephemeral.read_text().split()[0]) if ephemeral.exists() else 32768
    for port in random.sample(range(lowest // 2, lowest), 200):
        if _bindable(port):
            return port
    raise AssertionError(f"no free port between {lowest // 2} and {lowest}")


def test_a_fresh_clone_following_the_readme_reaches_a_signed_in_account_page(
    browser: Browser,  # noqa: F811 (the fixture imported above)
) -> None:
    steps = readme_try_it()
    port = a_port_nothing_else_takes_meanwhile()
    # The documented knob: step 1's command with this test's port in place of the example's.
    make_run = steps.make_run.replace(f"PORT={steps.example_port}", f"PORT={port}")
    default = urllib.parse.urlsplit(steps.default_origin)
    issuer = f"{default.scheme}://{default.hostname}:{port}"
    example_issuer = f"{default.scheme}://{default.hostname}:{steps.example_port}"
    assert example_issuer in steps.relying_party
    relying_party = steps.relying_party.replace(example_issuer, issuer)
    assert steps.account_url.startswith(steps.default_origin + "/")
    account_url = issuer + steps.account_url.removeprefix(steps.default_origin)

    with tempfile.TemporaryDirectory(prefix="authserver-fresh-clone-") as folder:
        clone = Path(folder) / "authserver"
        copy_a_fresh_clone(clone)
        server_log, app_log = Path(folder) / "make-run.log", Path(folder) / "example.log"
        with running(make_run, clone, server_log) as server:
            wait_until(
                lambda: answers(issuer + "/healthz", server, server_log),
                f"`{make_run}` to serve",
                timeout=FIRST_RUN_SECONDS,
            )
            printed = server_log.read_text()
            credentials = re.search(
                rf"^{re.escape(steps.credentials_line)} +(\S+) / (\S+)$", printed, re.MULTILINE
            )
            assert credentials, printed
            email, password = credentials.groups()

            with the_examples_port(steps.app_url), running(relying_party, clone, app_log) as app:
                wait_until(lambda: answers(steps.app_url + "/", app, app_log), f"`{relying_party}`")
                context = browser.new_context()
                context.set_default_timeout(TIMEOUT_MS)
                try:
                    tab = context.new_page()
                    tab.goto(steps.app_url)
                    tab.get_by_role("link", name=steps.sign_in, exact=True).click()

                    tab.wait_for_url(issuer + "/login?**")
                    tab.get_by_label("Email").fill(email)
                    tab.get_by_label("Password", exact=True).fill(password)
                    tab.get_by_role("button", name="Sign in", exact=True).click()
                    # The demo web app is a third-party client: a new user is always asked.
                    expect(tab.locator("h1")).to_have_text(
                        f"Allow {steps.the_app} to access your account?"
                    )
                    tab.get_by_role("button", name="Allow", exact=True).click()

                    tab.wait_for_url(steps.app_url + "/")
                    expect(tab.locator("header")).to_contain_text(email)
                    expect(tab.locator("#who")).to_have_text(f"Signed in as {email}")

                    tab.goto(account_url)
                    expect(tab.locator("h1")).to_have_text("Where you are signed in")
                    expect(tab.locator("main")).to_contain_text(f"Signed in as {email}.")
                    expect(tab.locator("li.current-device")).to_contain_text(steps.this_device)
                    expect(tab.locator("ul.devices")).to_contain_text(steps.the_app)
                    screenshots.shoot(tab, SHOTS, "account")
                finally:
                    context.close()
                    print("make run said:\n" + said(server_log))
                    print("the example app said:\n" + said(app_log))
