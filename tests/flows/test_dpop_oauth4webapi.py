"""DPoP (RFC 9449) against a client nobody on the project wrote: oauth4webapi, a maintained
JavaScript implementation, run by Node (tests/node_clients/dpop_code_flow.mjs).

A public, third-party client with offline access runs the authorization code flow with PKCE
against authserver on 127.0.0.1: the Node script makes the authorization URL, this test signs
the user in and consents over HTTP like a browser and hands the script the URL it was sent
back to; the script redeems the code with a DPoP proof, refreshes, calls userinfo and tries
what must be refused, all through the library, and reports what it saw. It runs with an EC
and an RSA key, with the code bound to the key (``dpop_jkt``, or a pushed request sent with a
proof) or not, and with server nonces (``AUTHSERVER_DPOP_NONCE``), where the library must
meet ``use_dpop_nonce`` and retry with the nonce (``SETTINGS``).

The library and its lock file are in tests/node_clients; ``make test`` installs them
(``npm ci``). Without node or that install the module is skipped, unless
``AUTHSERVER_TEST_REQUIRE_NODE=1`` (set by ``.ci/run``) makes that an error.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import pytest
import requests
from sqlalchemy import Engine, select

from authserver import create_app
from authserver.db import db
from authserver.models import AuthorizationCode, RefreshFamily
from tests.browser_helpers import REDIRECT_URI
from tests.conftest import (
    LiveServer,
    listening_socket,
    serving,
    stop_outbox_sender,
    suite_config,
    truncate_all,
    url_of,
)
from tests.helpers import HANG_SECONDS, PASSWORD, make_client, make_user

NODE_CLIENTS = Path(__file__).resolve().parents[1] / "node_clients"
SCRIPT = NODE_CLIENTS / "dpop_code_flow.mjs"
REQUIRE_NODE = os.environ.get("AUTHSERVER_TEST_REQUIRE_NODE") == "1"
NODE = shutil.which("node")
MIN_NODE = 20


def _node_major(node: str) -> int:
    answer = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    match = re.fullmatch(r"v(\d+)\..*", answer.stdout.strip())
    return int(match.group(1)) if match else 0


def _why_not_runnable() -> str | None:
    if NODE is None:
        return "no node on PATH (Node.js 20 or later)"
    if _node_major(NODE) < MIN_NODE:
        return f"{NODE} is older than Node.js {MIN_NODE}, which oauth4webapi needs"
    if not (NODE_CLIENTS / "node_modules" / "oauth4webapi").is_dir():
        return (
            "tests/node_clients/node_modules is missing "
            "(make test, or npm ci --prefix tests/node_clients)"
        )
    return None


_reason = _why_not_runnable()
if _reason is not None:
    if REQUIRE_NODE:
        pytest.fail(f"AUTHSERVER_TEST_REQUIRE_NODE=1 but {_reason}", pytrace=False)
    pytest.skip(_reason, allow_module_level=True)

EMAIL = "ann@example.com"
TIMEOUT = 30


@dataclass(frozen=True)
class Setting:
    """One run: the algorithm of the client's DPoP key, whether the server asks for nonces,
    and how the code is bound to the key: not at all, by ``dpop_jkt`` in the authorization
    request (``bind-code``), or by the proof sent with a pushed authorization request
    (``push``)."""

    algorithm: str
    nonces: bool = False
    binding: str | None = None

    @property
    def script_args(self) -> list[str]:
        return [self.algorithm, *([self.binding] if self.binding else [])]


SETTINGS = {
    "ES256": Setting("ES256"),
    "ES256-with-nonces-and-dpop_jkt": Setting("ES256", nonces=True, binding="bind-code"),
    # An RSA key in the proof's header (a JWK of some 400 characters) and its thumbprint.
    "RS256-with-dpop_jkt": Setting("RS256", binding="bind-code"),
    "ES256-pushed-with-nonces": Setting("ES256", nonces=True, binding="push"),
}


# One run of the script per setting, shared by the module's tests (each run is a Node
# process, a sign-in and about ten requests); its data is committed, and removed after the run.
@pytest.fixture(scope="module", params=list(SETTINGS.values()), ids=list(SETTINGS))
def setting(request: pytest.FixtureRequest) -> Setting:
    value: Setting = request.param
    return value


@pytest.fixture(scope="module")
def server(
    setting: Setting,
    engine: Engine,
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    """authserver on 127.0.0.1 with committed data, asking for DPoP nonces or not."""
    config = suite_config(database_url, tmp_path_factory.mktemp("dpop-interop"))
    listener = listening_socket()
    url = url_of(listener)
    application = create_app(replace(config, issuer=url, dpop_nonce=int(setting.nonces)))
    try:
        with serving(application, listener):
            yield LiveServer(application, url)
    finally:
        stop_outbox_sender(application)
        db.state(application).engine.dispose()
        truncate_all(engine)


def _public_client(server: LiveServer) -> str:
    with db.transaction(server.app) as session:
        make_user(server.app, session, EMAIL)
        return make_client(
            session,
            name="Node app",
            grant_types=["authorization_code", "refresh_token"],
            public=True,
            first_party=False,
            redirect_uris=[REDIRECT_URI],
            scopes=["openid", "email", "offline_access"],
        ).client.client_id


class NodeClient:
    """The script as a child process that speaks in JSON lines on stdout; what it says on
    stderr goes to a file, shown when it fails."""

    def __init__(self, args: list[str], stderr: IO[bytes]) -> None:
        assert NODE is not None
        self._stderr = stderr
        self.process = subprocess.Popen(
            [NODE, str(SCRIPT), *args],
            cwd=NODE_CLIENTS,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _what_it_said(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def receive(self) -> dict[str, Any]:
        """The script's next line, waited for until it comes or the script ends."""
        try:
            line = self._lines.get(timeout=HANG_SECONDS)
        except queue.Empty:
            pytest.fail(f"the Node client said nothing for {HANG_SECONDS:.0f} s")
        if line is None:
            self.process.wait(timeout=HANG_SECONDS)
            pytest.fail(
                f"the Node client ended (exit {self.process.returncode}):\n{self._what_it_said()}"
            )
        message: dict[str, Any] = json.loads(line)
        return message

    def send_last(self, line: str) -> None:
        """Write the one line the script reads, and close its input."""
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.close()

    def finish(self) -> None:
        exit_code = self.process.wait(timeout=HANG_SECONDS)
        assert exit_code == 0, self._what_it_said()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=HANG_SECONDS)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


def _field(page: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match, f"no {name} field"
    return match.group(1).replace("&amp;", "&")


def _sent_back_after_consent(issuer: str, authorization_url: str) -> str:
    """The URL authserver sends the browser back to: the user signs in and allows the app,
    over plain HTTP with cookies, as a browser would."""
    browser = requests.Session()
    login = browser.get(authorization_url, timeout=TIMEOUT)
    assert login.url.startswith(issuer + "/login"), login.url
    answer = browser.post(
        issuer + "/login",
        data={
            "email": EMAIL,
            "password": PASSWORD,
            "csrf_token": _field(login.text, "csrf_token"),
            "next": _field(login.text, "next"),
        },
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    while answer.is_redirect:  # back to the authorization endpoint, which asks for consent
        answer = browser.get(
            urljoin(answer.url, answer.headers["Location"]), allow_redirects=False, timeout=TIMEOUT
        )
    assert answer.status_code == 200, answer.text
    assert 'name="decision"' in answer.text, answer.text
    granted = browser.post(
        answer.url,
        data={"csrf_token": _field(answer.text, "csrf_token"), "decision": "allow"},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    assert granted.is_redirect, granted.text
    location: str = granted.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?"), location
    return location


KEY_TYPES = {"ES256": "EC", "RS256": "RSA"}
# RFC 7638 §3.2: the members of the thumbprint's input, by key type (in lexicographic order).
THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}


def _thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 §3, computed here: not by the library, not by authserver."""
    members = THUMBPRINT_MEMBERS[jwk["kty"]]
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def node_run(
    server: LiveServer, setting: Setting, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The script's whole run against ``server``: its report."""
    client_id = _public_client(server)
    folder = tmp_path_factory.mktemp("node-client")
    with (folder / "stderr.txt").open("w+b") as stderr:
        node = NodeClient([server.url, client_id, REDIRECT_URI, *setting.script_args], stderr)
        try:
            authorization_url = node.receive()["authorization_url"]
            assert authorization_url.startswith(server.url + "/oauth/authorize?")
            node.send_last(_sent_back_after_consent(server.url, authorization_url))
            report = node.receive()
            node.finish()
        finally:
            node.stop()
    report["authorization_request"] = dict(parse_qsl(urlsplit(authorization_url).query))
    return report


def test_oauth4webapi_gets_dpop_bound_tokens_bound_to_its_own_key(
    setting: Setting, node_run: dict[str, Any]
) -> None:
    assert node_run["public_jwk"]["kty"] == KEY_TYPES[setting.algorithm]
    key = _thumbprint(node_run["public_jwk"])
    assert node_run["thumbprint"] == key  # the library's thumbprint is RFC 7638's
    for step in ("code_exchange", "refresh", "refresh_after_refusals"):
        tokens = node_run[step]
        assert "refused" not in tokens, (step, tokens)
        # RFC 6749 §5.1: token_type is case-insensitive (the library lower-cases it).
        assert tokens["token_type"].lower() == "dpop", step
        assert tokens["cnf_jkt"] == key, step
        assert tokens["has_refresh_token"], step


def test_the_code_is_bound_to_the_key_when_the_library_asks(
    server: LiveServer, setting: Setting, node_run: dict[str, Any]
) -> None:
    key = _thumbprint(node_run["public_jwk"])
    sent = node_run["authorization_request"]
    if setting.binding == "push":
        assert set(sent) == {"client_id", "request_uri"}
    else:
        assert sent.get("dpop_jkt") == (key if setting.binding == "bind-code" else None)
    # The code it redeemed (with its own key's proof) was bound to that key, or to none.
    with db.transaction(server.app) as session:
        (code,) = session.scalars(select(AuthorizationCode)).all()
        assert code.dpop_jkt == (key if setting.binding else None)
        assert code.used_at is not None


def test_oauth4webapi_reads_userinfo_with_a_proof(node_run: dict[str, Any]) -> None:
    assert node_run["userinfo"]["sub"] == node_run["subject"]
    assert node_run["userinfo"]["email"] == EMAIL


def test_oauth4webapi_meets_server_nonces_with_one_retry(
    setting: Setting, node_run: dict[str, Any]
) -> None:
    retry = 1 if setting.nonces else 0
    # The first request with a proof (the push, or else the code's redemption) and the first
    # userinfo request (its own handle, with no nonce cached) are told use_dpop_nonce; each
    # is made once more with the nonce and succeeds.
    if setting.binding == "push":
        assert node_run["push"]["nonce_retries"] == retry
        assert node_run["code_exchange"]["nonce_retries"] == 0
    else:
        assert node_run["push"] is None
        assert node_run["code_exchange"]["nonce_retries"] == retry
    assert node_run["userinfo"]["nonce_retries"] == retry
    # The handle kept the nonce from the server's answers for the refresh.
    assert node_run["refresh"]["nonce_retries"] == 0


def test_the_bound_access_token_is_refused_as_a_bearer_token(node_run: dict[str, Any]) -> None:
    refused = node_run["bearer_userinfo"]
    assert refused["status"] == 401
    assert refused["www_authenticate"].startswith("DPoP ")
    assert 'error="invalid_token"' in refused["www_authenticate"]


def test_the_refresh_token_is_refused_without_the_key_and_stays_usable_with_it(
    server: LiveServer, node_run: dict[str, Any]
) -> None:
    assert node_run["refresh_without_proof"] == {"status": 400, "error": "invalid_grant"}
    assert node_run["refresh_with_other_key"] == {
        "refused": {"status": 400, "error": "invalid_grant"}
    }
    assert "refused" not in node_run["refresh_after_refusals"]
    # After both refusals the family was refreshed again with the key: it was not revoked.
    with db.transaction(server.app) as session:
        (family,) = session.scalars(select(RefreshFamily)).all()
        assert family.dpop_jkt == _thumbprint(node_run["public_jwk"])
        assert family.revoked_at is None
