"""The server survives the database vanishing and coming back, without a restart.

A small TCP proxy sits between a gunicorn server and PostgreSQL. ``cut()`` closes its
listener and resets every open connection, so the server sees the database disappear in the
middle of whatever it was doing; ``restore()`` listens again on the same port. While it is
cut, endpoints that need the database answer 503 ``temporarily_unavailable`` with
``Retry-After`` while it is still gone (nothing waits for it to come back), the JWKS and
discovery answer from memory, and once it is back the same server process serves again.
Through cuts in the middle of a stream of refreshes, no client is handed a refresh token that
was not committed, no family forks, and a rotation whose answer was lost is served again by the
grace window.

How long the 503s and the recovery took is printed at the end of the module (``pytest -s``),
never judged: on a busy machine any answer may be slow, and a test waits for what must happen.

gunicorn rather than werkzeug's server in the test process: the server then has its own
process, its own engine and pool, and the worker model it runs with in production, and
nothing in the test process can share a connection or a lock with it.
"""

from __future__ import annotations

import os
import re
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url

from authserver.app import create_app
from authserver.config import Config
from authserver.db import PING_AFTER_IDLE_SECONDS, db, make_engine
from authserver.models import RefreshFamily, RefreshToken
from authserver.services.refresh_tokens import digest_token
from tests.conftest import gunicorn_files, listening_socket, truncate_all, url_of
from tests.helpers import HANG_SECONDS, PASSWORD, make_client, make_user, wait_until

pytestmark = pytest.mark.postgres_only

AUDIENCE = "https://api.example.test"
BIN = Path(sys.executable).parent
EMAIL = "ann@example.com"


class DatabaseProxy:
    """A TCP forwarder to PostgreSQL that the test can cut and restore.

    One thread runs a selector loop over the listener and every forwarded pair, so cutting is
    done by the thread that owns the sockets: the listener is closed (new connections are
    refused) and every open connection is closed with SO_LINGER 0, which sends a reset to both
    the server and PostgreSQL (PostgreSQL then rolls back whatever was open), or, for a
    graceful cut, closed normally, as a restarting PostgreSQL closes its connections.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        # The port stays the proxy's while it is cut: this socket, bound to it and never
        # listening, holds it (SO_REUSEPORT lets the listener share it), so nothing else can
        # take it between cut() and restore().
        self._holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._holder.bind(("127.0.0.1", 0))
        self.port: int = self._holder.getsockname()[1]
        self.cut_at_commit = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._commands: list[tuple[Callable[[], None], threading.Event]] = []
        self._commands_lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._peers: dict[socket.socket, socket.socket] = {}
        self._from_server: set[socket.socket] = set()
        # None, or whether the trapped COMMIT reaches PostgreSQL, and what arms the trap.
        self._commit_trap: bool | None = None
        self._trap_after = b""
        # Server-side sockets that sent ``_trap_after``, so their next COMMIT is trapped;
        # then the PostgreSQL-side sockets whose next answer (to that COMMIT) is dropped.
        self._armed: set[socket.socket] = set()
        # Server-side sockets between a BEGIN and its COMMIT or ROLLBACK.
        self._in_transaction: set[socket.socket] = set()
        self._doomed: set[socket.socket] = set()
        self._graceful = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="database-proxy", daemon=True)

    def start(self) -> None:
        self._selector.register(self._wake_reader, selectors.EVENT_READ)
        self._listen()
        self._thread.start()

    def cut(self, *, graceful: bool = False) -> None:
        """The database vanishes: refuse new connections and reset every open one (or, with
        ``graceful``, close them as a restarting server does)."""
        self._graceful = graceful
        self._command(self._cut)

    def restore(self) -> None:
        """The database is back on the same address."""
        self._command(self._restore)

    def cut_at_next_commit(
        self, *, delivered: bool, after: bytes = b"INSERT INTO refresh_tokens"
    ) -> None:
        """Cut when the next transaction that sent ``after`` commits: just before its COMMIT
        reaches PostgreSQL (nothing is durable), or, if ``delivered``, just after PostgreSQL
        answered it (durable, and the server never learns so). A statement sent outside a
        transaction commits itself: it is trapped the same way."""
        self.cut_at_commit.clear()
        self._graceful = False
        self._trap_after = after

        def arm() -> None:
            self._commit_trap = delivered

        self._command(arm)

    def close(self) -> None:
        self._command(self._stop)
        self._thread.join(timeout=5)
        self._selector.close()
        self._wake_reader.close()
        self._wake_writer.close()
        self._holder.close()

    def _command(self, action: Callable[[], None]) -> None:
        done = threading.Event()
        with self._commands_lock:
            self._commands.append((action, done))
        self._wake_writer.send(b"!")
        if not done.wait(timeout=HANG_SECONDS):
            raise RuntimeError("the database proxy did not answer")

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ)
        self._listener = listener

    def _restore(self) -> None:
        if self._listener is None:
            self._listen()

    def _cut(self) -> None:
        if self._listener is not None:
            self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None
        while self._peers:
            self._drop(next(iter(self._peers)), reset=not self._graceful)
        self._commit_trap = None

    def _stop(self) -> None:
        self._cut()
        self._stopped = True

    def _run(self) -> None:
        while not self._stopped:
            for key, _mask in self._selector.select(timeout=1):
                sock = key.fileobj
                if sock is self._wake_reader:
                    self._run_commands()
                elif sock is self._listener:
                    self._accept()
                elif sock in self._peers:
                    assert isinstance(sock, socket.socket)
                    self._forward(sock)
                if self._stopped:
                    break

    def _run_commands(self) -> None:
        self._wake_reader.recv(1024)
        with self._commands_lock:
            commands, self._commands = self._commands, []
        for action, done in commands:
            action()
            done.set()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            server_side, _ = self._listener.accept()
        except BlockingIOError:
            return
        server_side.setblocking(True)
        try:
            database_side = socket.create_connection(self.upstream, timeout=2)
        except OSError:
            server_side.close()
            return
        database_side.settimeout(None)
        self._peers[server_side] = database_side
        self._peers[database_side] = server_side
        self._from_server.add(server_side)
        self._selector.register(server_side, selectors.EVENT_READ)
        self._selector.register(database_side, selectors.EVENT_READ)

    def _forward(self, sock: socket.socket) -> None:
        peer = self._peers[sock]
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop(sock, reset=False)
            return
        if sock in self._from_server:
            if data.startswith(b"Q") and b"BEGIN" in data:
                self._in_transaction.add(sock)
            if self._commit_trap is not None and self._commits(sock, data):
                if not self._commit_trap:
                    self._cut()
                    self.cut_at_commit.set()
                    return
                self._doomed.add(peer)
                self._commit_trap = None
            if b"COMMIT" in data or b"ROLLBACK" in data:
                self._in_transaction.discard(sock)
        if sock in self._doomed:
            # PostgreSQL has answered the COMMIT: it is durable. The server never hears it.
            self._cut()
            self.cut_at_commit.set()
            return
        try:
            peer.sendall(data)
        except OSError:
            self._drop(sock, reset=True)

    def _commits(self, sock: socket.socket, data: bytes) -> bool:
        """Whether ``data`` makes the trapped work durable: the COMMIT of a transaction that
        sent ``_trap_after``, or a statement with it sent outside a transaction (autocommit:
        the statement is its own transaction, db.execute_alone)."""
        if self._trap_after in data:
            if sock not in self._in_transaction:
                return True
            self._armed.add(sock)
            return False
        return sock in self._armed and b"COMMIT" in data

    def _drop(self, sock: socket.socket, *, reset: bool) -> None:
        if sock not in self._peers:
            return
        for each in (sock, self._peers[sock]):
            del self._peers[each]
            self._from_server.discard(each)
            self._armed.discard(each)
            self._in_transaction.discard(each)
            self._doomed.discard(each)
            self._selector.unregister(each)
            if reset:
                each.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            each.close()


@dataclass(frozen=True)
class Credentials:
    app_id: str
    app_secret: str
    rs_id: str
    rs_secret: str


@dataclass
class Outage:
    """A gunicorn server whose only way to PostgreSQL is the proxy."""

    url: str
    proxy: DatabaseProxy
    engine: Engine  # straight to PostgreSQL, for checking what is durable
    credentials: Credentials
    log: Path
    # (endpoint, seconds) of every answer measured during an outage, and of every recovery,
    # for the report.
    timings: list[tuple[str, float]] = field(default_factory=list)


def _wait_until_serving(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + HANG_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server at {url} exited with {process.returncode}")
        try:
            if requests.get(url + "/.well-known/jwks.json", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not start")


def _register(database_url: str, issuer: str, folder: Path) -> Credentials:
    """A user, a first-party app and a resource server, committed straight to PostgreSQL."""
    setup_app = create_app(
        Config(
            database_url=database_url,
            issuer=issuer,
            instance_dir=str(folder / "instance"),
            default_audience=AUDIENCE,
            log_level="WARNING",
        )
    )
    with db.transaction(setup_app) as session:
        make_user(setup_app, session)
        app = make_client(session)
        rs = make_client(
            session,
            name="Orders API",
            grant_types=["client_credentials"],
            first_party=False,
            served_audiences=[AUDIENCE],
        )
    db.state(setup_app).engine.dispose()
    assert app.client_secret is not None
    assert rs.client_secret is not None
    return Credentials(
        app.client.client_id, app.client_secret, rs.client.client_id, rs.client_secret
    )


def _start_gunicorn(
    listener: socket.socket, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """gunicorn serving on ``listener`` (fd://), which it takes over."""
    with log.open("wb") as log_file, listener:
        return subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "authserver:create_app()",
                "-b",
                f"fd://{listener.fileno()}",
                "-w",
                "1",
                "--threads",
                "8",
                "--graceful-timeout",
                "3",
            ],
            env=env,
            stdout=log_file,
            stderr=log_file,
            pass_fds=(listener.fileno(),),
        )


@pytest.fixture(scope="module")
def outage_server(
    engine: Engine, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outage]:
    """One server for the module (it takes a few seconds to start on a two-core machine)."""
    real = make_url(database_url)
    listener = listening_socket()
    url = url_of(listener)
    folder = tmp_path_factory.mktemp("outage")
    log = folder / "gunicorn.log"
    proxy = DatabaseProxy(real.host or "127.0.0.1", real.port or 5432)
    proxy.start()
    try:
        credentials = _register(database_url, url, folder)
        env = {
            **os.environ,
            "DATABASE_URL": real.set(host="127.0.0.1", port=proxy.port).render_as_string(
                hide_password=False
            ),
            "AUTHSERVER_ISSUER": url,
            "AUTHSERVER_DEFAULT_AUDIENCE": AUDIENCE,
            # The key ring re-reads the database every second, so it meets the outage too.
            "AUTHSERVER_KEY_REFRESH_INTERVAL": "1",
            "AUTHSERVER_INSTANCE_DIR": str(folder / "instance"),
            "AUTHSERVER_LOG_LEVEL": "WARNING",
            # client_credentials' audit rows commit with their request, so that grant meets the
            # outage too (with the default queue it answers from memory); it is also how the
            # tests see the server recover.
            "AUTHSERVER_TOKEN_AUDIT_FLUSH_MS": "0",
            **gunicorn_files(folder),
            # The proxy recognises a rotation's COMMIT by the SQL text before it; a prepared
            # statement sends its text only once per connection, so prepare none.
            "AUTHSERVER_DB_PREPARE_THRESHOLD": "0",
            # The stream sends hundreds of refreshes a second from one address, one client
            # and a few families; the limiter stays on (its hooks run during the outage too),
            # its limits and the families' budgets out of reach.
            **{
                f"AUTHSERVER_RATELIMIT_{name}": "100000/minute"
                for name in (
                    "TOKEN",
                    "TOKEN_PER_CLIENT",
                    "SIGNIN",
                    "SIGNIN_PER_ACCOUNT",
                    "PER_FAMILY",
                )
            },
        }
        process = _start_gunicorn(listener, env, log)
        try:
            # The first request loads the signing keys into the worker's memory.
            _wait_until_serving(url, process)
            outage = Outage(url, proxy, engine, credentials, log)
            yield outage
            print("\nanswers during outages, and recoveries (seconds):")
            for endpoint in sorted({name for name, _ in outage.timings}):
                seconds = [s for name, s in outage.timings if name == endpoint]
                print(
                    f"  {endpoint}: n={len(seconds)} min={min(seconds):.3f} max={max(seconds):.3f}"
                )
        finally:
            process.terminate()
            process.wait(timeout=HANG_SECONDS)
    finally:
        proxy.close()
        truncate_all(engine)


@pytest.fixture
def outage(outage_server: Outage) -> Iterator[Outage]:
    """The server, healthy at the start of the test and left healthy after it."""
    log_offset = outage_server.log.stat().st_size
    yield outage_server
    outage_server.proxy.restore()
    _wait_until_recovered(outage_server)
    # A 500 logs "unhandled error" with its traceback; none may have happened.
    with outage_server.log.open("rb") as log:
        log.seek(log_offset)
        assert b"unhandled error" not in log.read()


def _login(outage: Outage, http: requests.Session) -> dict[str, Any]:
    response = http.post(
        outage.url + "/oauth/token",
        data={"grant_type": "password", "username": EMAIL, "password": PASSWORD},
        auth=(outage.credentials.app_id, outage.credentials.app_secret),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def _refresh(outage: Outage, http: requests.Session, token: str) -> requests.Response:
    return http.post(
        outage.url + "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": token},
        auth=(outage.credentials.app_id, outage.credentials.app_secret),
        timeout=10,
    )


def _client_credentials(outage: Outage, http: requests.Session) -> requests.Response:
    return http.post(
        outage.url + "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(outage.credentials.rs_id, outage.credentials.rs_secret),
        timeout=10,
    )


def _wait_until_recovered(outage: Outage) -> float:
    """Seconds until a token request succeeds again (reported, not judged)."""
    started = time.monotonic()
    with requests.Session() as http:
        while True:
            response = _client_credentials(outage, http)
            assert response.status_code in (200, 503), response.text
            if response.status_code == 200:
                recovered_after = time.monotonic() - started
                outage.timings.append(("recovery", recovered_after))
                return recovered_after
            assert time.monotonic() - started < HANG_SECONDS, "no recovery"
            time.sleep(0.05)


def _assert_unavailable(outage: Outage, endpoint: str, send: Callable[[], Any]) -> None:
    """A 503 that tells the client to come back, answered while the database is still cut (the
    proxy stays cut until the test restores it: a server that waited for the database would
    still be waiting)."""
    started = time.monotonic()
    response = send()
    outage.timings.append((endpoint, time.monotonic() - started))
    assert response.status_code == 503, (endpoint, response.status_code, response.text)
    assert response.json()["error"] == "temporarily_unavailable"
    assert int(response.headers["Retry-After"]) > 0


# Each request is sent three times during the outage: the first meets the pool's dead
# connections (its pre-ping fails, the reconnect is refused), the others only the refusal.
ATTEMPTS = 3


def test_a_refresh_during_the_outage_is_refused_and_the_token_still_works_after(
    outage: Outage,
) -> None:
    with requests.Session() as http:
        token = _login(outage, http)["refresh_token"]
        outage.proxy.cut()
        for _ in range(ATTEMPTS):
            _assert_unavailable(outage, "token (refresh)", lambda: _refresh(outage, http, token))
        outage.proxy.restore()
        _wait_until_recovered(outage)

        assert _refresh(outage, http, token).status_code == 200


def test_client_credentials_during_the_outage_is_refused(outage: Outage) -> None:
    with requests.Session() as http:
        outage.proxy.cut()
        for _ in range(ATTEMPTS):
            _assert_unavailable(
                outage, "token (client_credentials)", lambda: _client_credentials(outage, http)
            )


def test_a_password_grant_during_the_outage_is_refused(outage: Outage) -> None:
    with requests.Session() as http:
        outage.proxy.cut()
        for _ in range(ATTEMPTS):
            _assert_unavailable(
                outage,
                "token (password)",
                lambda: http.post(
                    outage.url + "/oauth/token",
                    data={"grant_type": "password", "username": EMAIL, "password": PASSWORD},
                    auth=(outage.credentials.app_id, outage.credentials.app_secret),
                    timeout=10,
                ),
            )


def test_introspection_during_the_outage_is_refused(outage: Outage) -> None:
    with requests.Session() as http:
        access_token = _login(outage, http)["access_token"]
        outage.proxy.cut()
        for _ in range(ATTEMPTS):
            _assert_unavailable(
                outage,
                "introspect",
                lambda: http.post(
                    outage.url + "/oauth/introspect",
                    data={"token": access_token},
                    auth=(outage.credentials.rs_id, outage.credentials.rs_secret),
                    timeout=10,
                ),
            )


def test_revocation_during_the_outage_is_refused_and_revokes_nothing(
    outage: Outage,
) -> None:
    with requests.Session() as http:
        token = _login(outage, http)["refresh_token"]
        outage.proxy.cut()
        for _ in range(ATTEMPTS):
            _assert_unavailable(
                outage,
                "revoke",
                lambda: http.post(
                    outage.url + "/oauth/revoke",
                    data={"token": token},
                    auth=(outage.credentials.app_id, outage.credentials.app_secret),
                    timeout=10,
                ),
            )
        outage.proxy.restore()
        _wait_until_recovered(outage)

        assert _refresh(outage, http, token).status_code == 200


def _csrf_token(outage: Outage, browser: requests.Session) -> str:
    form = browser.get(outage.url + "/login", timeout=10)
    match = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert match is not None
    return match.group(1)


def test_sign_in_during_the_outage_is_refused(outage: Outage) -> None:
    with requests.Session() as browser:
        csrf_token = _csrf_token(outage, browser)
        outage.proxy.cut()
        for _ in range(ATTEMPTS):
            _assert_unavailable(
                outage,
                "sign-in",
                lambda: browser.post(
                    outage.url + "/login",
                    data={
                        "csrf_token": csrf_token,
                        "email": EMAIL,
                        "password": PASSWORD,
                        "next": "/account",
                    },
                    allow_redirects=False,
                    timeout=10,
                ),
            )


def test_a_sign_in_whose_commit_failed_sets_no_session_cookie(outage: Outage) -> None:
    form = {"email": EMAIL, "password": PASSWORD, "next": "/account"}
    for _ in range(TRAP_ATTEMPTS):
        with requests.Session() as browser:
            form["csrf_token"] = _csrf_token(outage, browser)
            outage.proxy.cut_at_next_commit(delivered=False, after=b"INSERT INTO browser_sessions")
            failed = browser.post(
                outage.url + "/login", data=form, allow_redirects=False, timeout=10
            )
            if not _cut_noted(outage, failed):
                continue  # the trap missed this commit (see TRAP_ATTEMPTS); a fresh browser
            outage.proxy.restore()
            _wait_until_recovered(outage)
            retried = browser.post(
                outage.url + "/login", data=form, allow_redirects=False, timeout=10
            )
            break
    else:
        pytest.fail(f"the proxy never caught a sign-in's COMMIT in {TRAP_ATTEMPTS} tries")

    assert failed.status_code == 503
    assert "authserver_session" not in failed.headers.get("Set-Cookie", "")
    assert retried.status_code == 303
    assert "authserver_session" in retried.headers["Set-Cookie"]


def test_jwks_and_discovery_answer_from_memory_during_the_outage(outage: Outage) -> None:
    paths = (
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    )
    with requests.Session() as http:
        before = {path: http.get(outage.url + path, timeout=10).content for path in paths}
        outage.proxy.cut()
        # At least 2.5 s of the outage, longer than the key ring's refresh interval (1 s): it
        # tries the database and fails. A busy machine only makes the loop cover more.
        until = time.monotonic() + 2.5
        while time.monotonic() < until:
            for path in paths:
                started = time.monotonic()
                response = http.get(outage.url + path, timeout=10)
                outage.timings.append((path, time.monotonic() - started))

                assert response.status_code == 200, (path, response.text)
                assert response.content == before[path]
            time.sleep(0.1)


def test_requests_succeed_again_once_the_database_is_back_without_a_restart(
    outage: Outage,
) -> None:
    booted = outage.log.read_bytes().count(b"Booting worker")
    with requests.Session() as http:
        token = _login(outage, http)["refresh_token"]
        outage.proxy.cut()
        # Every pooled connection of the server is now dead.
        assert _refresh(outage, http, token).status_code == 503
        outage.proxy.restore()

        recovered_after = _wait_until_recovered(outage)
        print(f"\nrecovered {recovered_after:.3f} s after the database came back")
        refreshed = _refresh(outage, http, token)
        introspected = http.post(
            outage.url + "/oauth/introspect",
            data={"token": refreshed.json()["access_token"]},
            auth=(outage.credentials.rs_id, outage.credentials.rs_secret),
            timeout=10,
        )

    assert refreshed.status_code == 200
    assert introspected.json()["active"] is True
    assert outage.log.read_bytes().count(b"Booting worker") == booted  # the same worker


def test_a_connection_left_idle_across_a_restart_is_replaced_before_it_is_used(
    database_url: str,
) -> None:
    """Connections idle for PING_AFTER_IDLE_SECONDS are pinged at checkout (db.py): the
    first transaction after a quiet restart gets a fresh connection, not an error."""
    real = make_url(database_url)
    proxy = DatabaseProxy(real.host or "127.0.0.1", real.port or 5432)
    proxy.start()
    engine = make_engine(real.set(host="127.0.0.1", port=proxy.port).render_as_string(False))
    try:
        with engine.begin() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)
        proxy.cut()  # the pooled connection dies while idle ...
        proxy.restore()  # ... and the database is back before the next transaction

        with engine.begin() as conn:
            answer = conn.execute(text("SELECT 2")).scalar()
    finally:
        engine.dispose()
        proxy.close()

    assert answer == 2


def _rotation_state(outage: Outage, token: str) -> tuple[datetime | None, bytes | None]:
    """(used_at of ``token``, digest of its successor), as PostgreSQL holds them."""
    with outage.engine.connect() as conn:
        parent = conn.execute(
            select(RefreshToken.id, RefreshToken.used_at).where(
                RefreshToken.token_digest == digest_token(token)
            )
        ).one()
        child = conn.scalar(
            select(RefreshToken.token_digest).where(RefreshToken.parent_id == parent.id)
        )
    return parent.used_at, child


# The proxy recognises the commit to cut by the SQL text sent before it. Should it miss a
# commit, the request simply succeeds; such a try is repeated with a fresh token, and the
# server is judged only on a commit the proxy did cut.
TRAP_ATTEMPTS = 5


def _cut_noted(outage: Outage, answer: requests.Response) -> bool:
    """Whether the proxy cut the commit of the request that got ``answer``.

    A request whose commit was cut is answered 503, and any other answer means the trap
    missed: the answer decides, not how long the note takes. The proxy notes the cut just
    after making it, so the answer can arrive first; after a 503 the note is awaited.
    """
    if answer.status_code != 503:
        return False
    assert outage.proxy.cut_at_commit.wait(timeout=HANG_SECONDS), "a 503, but no cut"
    return True


def _refresh_caught_at_commit(
    outage: Outage, http: requests.Session, token: str, *, delivered: bool
) -> tuple[str, requests.Response]:
    """(the token presented, the answer) of a refresh whose COMMIT the proxy cut."""
    for _ in range(TRAP_ATTEMPTS):
        outage.proxy.cut_at_next_commit(delivered=delivered)
        answer = _refresh(outage, http, token)
        if _cut_noted(outage, answer):
            return token, answer
        assert answer.status_code == 200, answer.text[:200]
        token = answer.json()["refresh_token"]
    pytest.fail(f"the proxy never caught a rotation's COMMIT in {TRAP_ATTEMPTS} tries")


def test_a_rotation_whose_commit_failed_hands_out_no_token_and_leaves_the_old_one_usable(
    outage: Outage,
) -> None:
    with requests.Session() as http:
        token = _login(outage, http)["refresh_token"]
        outage.proxy.cut_at_next_commit(delivered=False)
        failed = _refresh(outage, http, token)
        assert _cut_noted(outage, failed), failed.text[:200]
        state_after_failure = _rotation_state(outage, token)
        outage.proxy.restore()
        _wait_until_recovered(outage)
        retried = _refresh(outage, http, token)

    assert failed.status_code == 503
    assert "refresh_token" not in failed.text
    assert state_after_failure == (None, None)  # PostgreSQL rolled the rotation back
    assert retried.status_code == 200
    assert _rotation_state(outage, token)[1] == digest_token(retried.json()["refresh_token"])


def test_a_rotation_whose_answer_was_lost_is_served_again_by_the_grace_window(
    outage: Outage,
) -> None:
    with requests.Session() as http:
        token = _login(outage, http)["refresh_token"]
        token, lost = _refresh_caught_at_commit(outage, http, token, delivered=True)
        used_at, child_digest = _rotation_state(outage, token)
        outage.proxy.restore()
        _wait_until_recovered(outage)
        # The client never got the successor, so it retries with the token it holds.
        retried = _refresh(outage, http, token)
        onward = _refresh(outage, http, retried.json()["refresh_token"])

    assert lost.status_code == 503
    # The rotation was durable although its answer was lost.
    assert used_at is not None
    assert child_digest is not None
    assert retried.status_code == 200
    assert digest_token(retried.json()["refresh_token"]) == child_digest
    assert onward.status_code == 200


@dataclass
class RefreshClient:
    """One client refreshing its own family in a loop; across a 503 it keeps its token and
    retries, as a real client does."""

    outage: Outage
    token: str
    # (when the request was sent, the refresh token it answered with), for every 200.
    received: list[tuple[datetime, str]] = field(default_factory=list)
    # (status, seconds) of every answer.
    answers: list[tuple[int, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def run(self, stop: threading.Event) -> None:
        with requests.Session() as http:
            while not stop.is_set():
                sent_at, started = datetime.now(UTC), time.monotonic()
                try:
                    response = _refresh(self.outage, http, self.token)
                except requests.RequestException as exc:
                    self.failures.append(repr(exc))
                    continue
                self.answers.append((response.status_code, time.monotonic() - started))
                if response.status_code == 200:
                    self.token = response.json()["refresh_token"]
                    self.received.append((sent_at, self.token))
                elif response.status_code == 503:
                    if response.json()["error"] != "temporarily_unavailable" or not (
                        response.headers.get("Retry-After")
                    ):
                        self.failures.append(f"503 {response.headers} {response.text}")
                    time.sleep(0.05)  # a real client waits Retry-After; a short wait here
                else:
                    self.failures.append(f"{response.status_code} {response.text}")
                    return


def _refused(client: RefreshClient) -> int:
    return sum(1 for status, _ in client.answers[:] if status == 503)


def _wait_until_each_client(
    clients: list[RefreshClient], what: str, progress: Callable[[RefreshClient], int]
) -> None:
    """Until ``progress`` has moved on for every client (a client whose loop ended stops
    the wait: its failure is what the test then reports)."""
    before = [progress(c) for c in clients]
    wait_until(
        lambda: all(progress(c) > n or c.failures for c, n in zip(clients, before, strict=True)),
        f"every client to have {what}",
    )


def test_cuts_during_a_stream_of_refreshes_lose_no_token_and_fork_no_family(
    outage: Outage,
) -> None:
    with requests.Session() as http:
        clients = [RefreshClient(outage, _login(outage, http)["refresh_token"]) for _ in range(4)]
    stop = threading.Event()
    threads = [threading.Thread(target=c.run, args=(stop,)) for c in clients]
    for thread in threads:
        thread.start()
    try:
        # A crash (connections reset), then a restart (connections closed). Each phase lasts
        # until it has shown what it is for, however slowly a busy machine gets there.
        for graceful in (False, True):
            _wait_until_each_client(clients, "refreshed", lambda c: len(c.received))
            outage.proxy.cut(graceful=graceful)
            _wait_until_each_client(clients, "met the cut", _refused)
            outage.proxy.restore()
        _wait_until_each_client(clients, "refreshed after the cuts", lambda c: len(c.received))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=HANG_SECONDS)

    statuses = [status for c in clients for status, _ in c.answers]
    slowest_503 = max(
        (seconds for c in clients for status, seconds in c.answers if status == 503), default=0.0
    )
    received = {token: sent_at for c in clients for sent_at, token in c.received}
    with outage.engine.connect() as conn:
        issued_at = dict(
            conn.execute(
                select(RefreshToken.token_digest, RefreshToken.issued_at).where(
                    RefreshToken.token_digest.in_([digest_token(t) for t in received])
                )
            ).all()
        )
        forked = conn.execute(
            select(RefreshToken.family_id)
            .where(RefreshToken.used_at.is_(None))
            .group_by(RefreshToken.family_id)
            .having(func.count() > 1)
        ).all()
        revoked = conn.scalar(
            select(func.count())
            .select_from(RefreshFamily)
            .where(RefreshFamily.revoked_at.is_not(None))
        )
    with requests.Session() as http:
        final = [_refresh(outage, http, c.token).status_code for c in clients]
    # A successor issued before the request that received it: a lost answer, served again.
    replays = sum(
        1
        for token, sent_at in received.items()
        if (issued := issued_at.get(digest_token(token))) is not None and issued < sent_at
    )
    print(
        f"\nstream: {len(statuses)} refreshes, {statuses.count(200)} answered 200, "
        f"{statuses.count(503)} answered 503 (slowest {slowest_503:.3f} s), "
        f"{replays} served again by the grace window"
    )

    assert [f for c in clients for f in c.failures] == []
    assert set(statuses) == {200, 503}  # never a 500, and the cuts did land mid-stream
    assert all(c.received for c in clients)
    # Never a token PostgreSQL does not hold.
    assert [t for t in received if digest_token(t) not in issued_at] == []
    assert forked == []
    assert revoked == 0
    assert final == [200] * len(clients)
