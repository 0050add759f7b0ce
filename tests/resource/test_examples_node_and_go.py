"""The Node and Go resource servers in examples/ do what docs/INTEGRATION.md says, against a
real authserver: tokens from its token endpoint, its JWKS, its revocation feed, its keys
rotated and withdrawn.

Each example runs as its own process (``node server.mjs``, a ``go build`` binary) on a socket
the test already listens on, with authserver served on another (committed data, PostgreSQL
or SQLite as the suite runs). Without the toolchain the tests of that example are skipped,
saying what to install: Node needs ``npm ci`` in examples/node-resource-server (``make
examples``), Go needs a ``go`` command (Debian's golang-go; the example uses the standard
library only, so no module is downloaded). ``AUTHSERVER_TEST_REQUIRE_EXAMPLES=1`` (set by
.ci/run, which installs both) turns those skips into failures.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from joserfc import jwt

from authserver.db import db, utcnow
from authserver.runtime import runtime
from authserver.services import keys as key_service
from authserver.services.clients import RegisteredClient
from authserver.services.revocations import longest_access_token_ttl
from tests.conftest import LiveServer, listening_socket, url_of
from tests.dpop_keys import DPoPKey
from tests.helpers import (
    DEFAULT_AUDIENCE,
    HANG_SECONDS,
    PASSWORD,
    make_client,
    make_resource_server,
    make_user,
    wait_until,
)
from tests.resource.support import AUDIENCE as SUPPORT_AUDIENCE
from tests.resource.support import FakeClock, FakeIssuer, ec_key, mint

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NODE_EXAMPLE = EXAMPLES / "node-resource-server"
GO_EXAMPLE = EXAMPLES / "go-resource-server"
REQUIRE_EXAMPLES = os.environ.get("AUTHSERVER_TEST_REQUIRE_EXAMPLES") == "1"
OTHER_AUDIENCE = "https://another-api.example.test"


def _unavailable(reason: str) -> None:
    if REQUIRE_EXAMPLES:
        pytest.fail(f"AUTHSERVER_TEST_REQUIRE_EXAMPLES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def go_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go example, built once per test process, offline: it imports only the standard
    library, and GOPROXY=off makes any module download an error rather than a network call."""
    go = shutil.which("go")
    if go is None:
        _unavailable("no `go` command: apt-get install golang-go to test the Go example")
    assert go is not None
    binary = tmp_path_factory.mktemp("go-resource-server") / "resource-server"
    env = {**os.environ, "GOPROXY": "off", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    built = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=GO_EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return binary


def _command(example: str, request: pytest.FixtureRequest) -> tuple[list[str], Path]:
    if example == "go":
        return [str(request.getfixturevalue("go_binary"))], GO_EXAMPLE
    node = shutil.which("node")
    if node is None:
        _unavailable("no `node` command: install Node 20 to test the Node example")
    if not (NODE_EXAMPLE / "node_modules" / "jose" / "package.json").is_file():
        _unavailable("examples/node-resource-server has no node_modules: run `make examples`")
    assert node is not None
    return [node, "server.mjs"], NODE_EXAMPLE


@dataclass(frozen=True)
class Setup:
    server: LiveServer
    app: RegisteredClient  # signs the user in with the password grant
    elsewhere: RegisteredClient  # its tokens are for OTHER_AUDIENCE
    resource_server: RegisteredClient  # the API's own client: reads the revocation feed
    api: str  # the example's URL


def _secret(registered: RegisteredClient) -> str:
    assert registered.client_secret is not None
    return registered.client_secret


@contextmanager
def _running(
    command: list[str], folder: Path, settings: dict[str, str], log: Path
) -> Iterator[str]:
    """The example as its own process on a socket already listening; yields its URL and
    returns the text it printed."""
    listener = listening_socket()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(log.parent)),
        "RS_LISTEN_FD": str(listener.fileno()),
        **settings,
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=folder,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            pass_fds=(listener.fileno(),),
        )
    url = url_of(listener)
    # The child holds the socket now; once it exits, connections are refused, not queued.
    listener.close()
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=HANG_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(params=["node", "go"])
def example(request: pytest.FixtureRequest) -> tuple[list[str], Path]:
    return _command(request.param, request)


@pytest.fixture
def setup(
    example: tuple[list[str], Path], live_server: LiveServer, tmp_path: Path
) -> Iterator[Setup]:
    with db.transaction(live_server.app) as session:
        make_user(live_server.app, session)
        app = make_client(session)
        elsewhere = make_client(session, name="Elsewhere", audiences=[OTHER_AUDIENCE])
        resource_server = make_resource_server(session)
    settings = {
        "RS_ISSUER": live_server.url,
        "RS_AUDIENCE": DEFAULT_AUDIENCE,
        "RS_FEED_CLIENT_ID": resource_server.client.client_id,
        "RS_FEED_CLIENT_SECRET": _secret(resource_server),
        "RS_POLL_INTERVAL": "0.05",
        # A rotation in the test comes seconds after the first fetch, not 30 s later.
        "RS_JWKS_COOLDOWN": "0",
    }
    log = tmp_path / "resource-server.log"
    with _running(*example, settings, log) as api:
        yield Setup(live_server, app, elsewhere, resource_server, api)
    # The examples log failures, never a credential.
    assert _secret(resource_server) not in log.read_text(errors="replace")


def _tokens(setup: Setup, registered: RegisteredClient, scope: str) -> dict[str, Any]:
    response = requests.post(
        setup.server.url + "/oauth/token",
        data={
            "grant_type": "password",
            "username": "ann@example.com",
            "password": PASSWORD,
            "scope": scope,
        },
        auth=(registered.client.client_id, _secret(registered)),
        timeout=HANG_SECONDS,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _access_token(setup: Setup, scope: str = "read") -> str:
    return str(_tokens(setup, setup.app, scope)["access_token"])


def _call(setup: Setup, token: str | None, method: str = "GET", path: str = "/api/hello") -> Any:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return requests.request(method, setup.api + path, headers=headers, timeout=HANG_SECONDS)


def _segment(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    decode = lambda s: json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))  # noqa: E731
    return decode(header), decode(payload)


def _refused(response: requests.Response) -> bool:
    return response.status_code == 401 and response.headers["WWW-Authenticate"].startswith(
        'Bearer error="invalid_token"'
    )


# -- what it accepts ---------------------------------------------------------------------------


def test_a_request_without_a_token_gets_a_bare_bearer_challenge(setup: Setup) -> None:
    response = _call(setup, None)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_token_from_the_token_endpoint_is_accepted_with_its_subject_and_scope(
    setup: Setup,
) -> None:
    token = _access_token(setup, "read")

    response = _call(setup, token)

    assert response.status_code == 200, response.text
    _, claims = _parts(token)
    assert response.json() == {
        "hello": claims["sub"],
        "client_id": setup.app.client.client_id,
        "scope": ["read"],
    }


def test_a_missing_scope_is_403_insufficient_scope_and_the_scope_is_named(setup: Setup) -> None:
    read_only = _call(setup, _access_token(setup, "read"), "POST", "/api/write")
    writer = _call(setup, _access_token(setup, "read write"), "POST", "/api/write")

    assert read_only.status_code == 403
    assert read_only.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="write"'
    )
    assert writer.status_code == 200, writer.text


# -- what it refuses ---------------------------------------------------------------------------


def test_a_token_for_another_audience_is_refused(setup: Setup) -> None:
    other = str(_tokens(setup, setup.elsewhere, "read")["access_token"])
    assert _parts(other)[1]["aud"] == OTHER_AUDIENCE

    assert _refused(_call(setup, other))


def test_a_dpop_bound_token_is_refused_as_a_bearer_token(setup: Setup) -> None:
    # RFC 9449 §7.1: the examples take bearer tokens only, so a token bound to a key (cnf.jkt)
    # is refused: as a bearer token it would work for whoever stole it.
    key = DPoPKey()
    response = requests.post(
        setup.server.url + "/oauth/token",
        data={
            "grant_type": "password",
            "username": "ann@example.com",
            "password": PASSWORD,
            "scope": "read",
        },
        headers={"DPoP": key.proof("POST", setup.server.url + "/oauth/token")},
        auth=(setup.app.client.client_id, _secret(setup.app)),
        timeout=HANG_SECONDS,
    )
    assert response.status_code == 200, response.text
    bound = str(response.json()["access_token"])
    assert _parts(bound)[1]["cnf"] == {"jkt": key.jkt}

    assert _refused(_call(setup, bound))


def test_a_jwt_signed_by_the_issuer_that_is_not_an_access_token_is_refused(setup: Setup) -> None:
    """RFC 9068 §4: typ. The same claims, the issuer's own current key, typ "JWT" as an ID
    token has: only the type is wrong."""
    genuine = _access_token(setup)
    _, claims = _parts(genuine)
    signing = runtime(setup.server.app).keys.snapshot().signing
    assert signing is not None
    as_id_token = jwt.encode(
        {"typ": "JWT", "alg": signing.algorithm, "kid": signing.kid},
        claims,
        signing.private_key,
        algorithms=[signing.algorithm],
    )

    assert _call(setup, genuine).status_code == 200
    assert _refused(_call(setup, as_id_token))


def test_forged_tokens_are_refused(setup: Setup) -> None:
    genuine = _access_token(setup)
    header, claims = _parts(genuine)
    _, payload, signature = genuine.split(".")
    unsigned = f"{_segment({**header, 'alg': 'none'})}.{payload}."
    wider = f"{genuine.split('.')[0]}.{_segment({**claims, 'scope': 'read write'})}.{signature}"
    other_alg = f"{_segment({**header, 'alg': 'RS256'})}.{payload}.{signature}"
    unknown_kid = f"{_segment({**header, 'kid': 'not-a-key'})}.{payload}.{signature}"

    for forged in (unsigned, wider, other_alg, unknown_kid, "not-a-token"):
        assert _refused(_call(setup, forged)), forged[:40]
    assert _call(setup, genuine).status_code == 200


def test_a_token_that_cannot_be_checked_is_503_not_401(
    example: tuple[list[str], Path], tmp_path: Path
) -> None:
    """The issuer answers its metadata but not its JWKS: the token may be good, so the
    answer is "try again", not "your token is bad"."""
    issuer = FakeIssuer(FakeClock(time.time()))
    issuer.jwks_status = 503
    key = ec_key()
    issuer.publish(key)
    token = mint(key, issuer.url, time.time())
    settings = {"RS_ISSUER": issuer.url, "RS_AUDIENCE": SUPPORT_AUDIENCE, "RS_JWKS_COOLDOWN": "0"}
    try:
        with _running(*example, settings, tmp_path / "resource-server.log") as api:
            response = requests.get(
                api + "/api/hello", headers={"Authorization": f"Bearer {token}"}, timeout=30
            )
            assert response.status_code == 503, response.text
            assert response.json() == {"error": "temporarily_unavailable"}
            issuer.jwks_status = 200  # the issuer is back: the same token is accepted
            wait_until(
                lambda: (
                    requests.get(
                        api + "/api/hello", headers={"Authorization": f"Bearer {token}"}, timeout=30
                    ).status_code
                    == 200
                ),
                "the example to fetch the JWKS again",
            )
    finally:
        issuer.stop()


# -- revocation and keys -----------------------------------------------------------------------


def test_a_revoked_refresh_family_is_refused_once_the_feed_is_polled(setup: Setup) -> None:
    tokens = _tokens(setup, setup.app, "read")
    assert _call(setup, tokens["access_token"]).status_code == 200

    revoked = requests.post(
        setup.server.url + "/oauth/revoke",
        data={"token": tokens["refresh_token"]},
        auth=(setup.app.client.client_id, _secret(setup.app)),
        timeout=HANG_SECONDS,
    )
    assert revoked.status_code == 200

    wait_until(
        lambda: _refused(_call(setup, tokens["access_token"])), "the feed's sid entry to arrive"
    )
    assert _call(setup, _access_token(setup)).status_code == 200  # a new sign-in still works


def test_a_token_signed_by_a_new_key_is_accepted_and_the_old_keys_tokens_still_are(
    setup: Setup,
) -> None:
    before = _access_token(setup)
    assert _call(setup, before).status_code == 200  # the example has fetched the JWKS
    rt = runtime(setup.server.app)
    with db.transaction(setup.server.app) as session:
        key_service.create_signing_key(session, rt.key_cipher, rt.config.signing_alg, utcnow())
    rt.keys.refresh()

    after = _access_token(setup)
    assert _parts(after)[0]["kid"] != _parts(before)[0]["kid"]
    assert _call(setup, after).status_code == 200  # an unknown kid: the JWKS is fetched again
    assert _call(setup, before).status_code == 200


def test_a_withdrawn_keys_tokens_are_refused_while_the_key_is_still_cached(setup: Setup) -> None:
    token = _access_token(setup)
    assert _call(setup, token).status_code == 200  # the key is in the example's JWKS cache
    kid = _parts(token)[0]["kid"]
    rt = runtime(setup.server.app)
    with db.transaction(setup.server.app) as session:
        key_service.withdraw_signing_key(
            session,
            rt.key_cipher,
            rt.config.signing_alg,
            kid,
            utcnow(),
            stale_for=timedelta(seconds=rt.config.key_refresh_interval),
            token_ttl=longest_access_token_ttl(session, rt.config.access_token_ttl),
        )
    rt.keys.refresh()

    wait_until(lambda: _refused(_call(setup, token)), "the feed's kid entry to arrive")
    fresh = _access_token(setup)
    assert _parts(fresh)[0]["kid"] != kid
    assert _call(setup, fresh).status_code == 200
