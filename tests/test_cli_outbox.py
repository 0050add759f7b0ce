"""Back-channel logout from the command line, run as an operator runs it: registering a
client's back-channel logout URI (`clients create --backchannel-logout-uri`, `clients
backchannel-logout`), and delivering the outbox without a server (`outbox deliver`, once or
`--every`), to a real HTTP receiver on 127.0.0.1.

The database is this module's own (``<test database>_cli_outbox`` on PostgreSQL, a file on the
SQLite fallback), built with ``authserver db upgrade``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from flask import Flask
from sqlalchemy import select

from authserver.db import db, utcnow
from authserver.models import AuditEvent, Client, OutboundMessage
from authserver.runtime import runtime
from authserver.services.backchannel_logout import record_signed_in_client
from authserver.services.browser_sessions import SessionPolicy, start_session
from authserver.services.outbox import enqueue
from tests.helpers import make_client, make_user
from tests.receivers import receiving
from tests.test_cli import (
    _base_environment,
    arranging_app,
    assert_fails_with_one_line,
    migrated_scratch_database,
    run_cli,
)
from tests.test_cli_purge import Janitor


@pytest.fixture(scope="module")
def outbox_database_url(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with migrated_scratch_database(database_url, "cli_outbox", tmp_path_factory) as url:
        yield url


@pytest.fixture
def cli_env(outbox_database_url: str, tmp_path: Path) -> dict[str, str]:
    return {**_base_environment(tmp_path / "instance"), "DATABASE_URL": outbox_database_url}


@pytest.fixture
def cli_app(outbox_database_url: str, tmp_path: Path) -> Iterator[Flask]:
    with arranging_app(outbox_database_url, tmp_path / "app-instance") as app:
        yield app


def _client(cli_app: Flask, client_id: str) -> Client:
    with db.transaction(cli_app) as session:
        found = session.scalars(select(Client).where(Client.client_id == client_id)).one()
        session.expunge(found)
        return found


def _create(cli_env: dict[str, str], *options: str) -> tuple[int, str, str]:
    result = run_cli(
        "clients",
        "create",
        "--name",
        f"Photos {uuid.uuid4().hex[:8]}",
        "--grant",
        "authorization_code",
        "--redirect-uri",
        "https://photos.example.test/callback",
        "--json",
        *options,
        env=cli_env,
    )
    client_id = json.loads(result.stdout)["client_id"] if result.returncode == 0 else ""
    return result.returncode, client_id, result.stderr


# -- registering -----------------------------------------------------------------------------


def test_clients_create_registers_a_backchannel_logout_uri_and_session_required(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    status, client_id, stderr = _create(
        cli_env,
        "--backchannel-logout-uri",
        "https://photos.example.test/backchannel-logout",
        "--backchannel-logout-session-required",
    )

    assert status == 0, stderr
    client = _client(cli_app, client_id)
    assert client.backchannel_logout_uri == "https://photos.example.test/backchannel-logout"
    assert client.backchannel_logout_session_required is True


def test_clients_create_without_the_option_registers_no_uri(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    status, client_id, stderr = _create(cli_env)

    assert status == 0, stderr
    client = _client(cli_app, client_id)
    assert client.backchannel_logout_uri is None
    assert client.backchannel_logout_session_required is False


BAD_URIS = [
    ("http://photos.example.test/bcl", "must use https"),
    ("ftp://photos.example.test/bcl", "absolute https URL"),
    ("https://photos.example.test/bcl#here", "without fragment"),
    ("/backchannel-logout", "absolute https URL"),
    ("https://user@photos.example.test/bcl", "user information"),
    ("https://photos.example.test:99999/bcl", "invalid port"),
    ("https:///bcl", "no host"),
    ("https://photos.example.test/a b", "without spaces"),
    ("https://photos.example.test/" + "a" * 2000, "1 to 2000 characters"),
]


@pytest.mark.parametrize(("uri", "reason"), BAD_URIS, ids=[r for _, r in BAD_URIS])
def test_clients_create_refuses_a_bad_backchannel_logout_uri_with_one_line(
    cli_env: dict[str, str], cli_app: Flask, uri: str, reason: str
) -> None:
    name = f"Refused {uuid.uuid4().hex[:8]}"
    result = run_cli(
        "clients",
        "create",
        "--name",
        name,
        "--grant",
        "client_credentials",
        "--backchannel-logout-uri",
        uri,
        env=cli_env,
    )

    line = assert_fails_with_one_line(result)
    assert reason in line
    with db.transaction(cli_app) as session:
        assert session.scalars(select(Client).where(Client.name == name)).first() is None


def test_http_on_loopback_is_accepted_for_development(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    status, client_id, stderr = _create(
        cli_env, "--backchannel-logout-uri", "http://127.0.0.1:8765/backchannel-logout"
    )

    assert status == 0, stderr
    uri = _client(cli_app, client_id).backchannel_logout_uri
    assert uri == "http://127.0.0.1:8765/backchannel-logout"


def test_session_required_without_a_uri_is_refused_with_one_line(
    cli_env: dict[str, str],
) -> None:
    result = run_cli(
        "clients",
        "create",
        "--name",
        "Photos",
        "--grant",
        "client_credentials",
        "--backchannel-logout-session-required",
        env=cli_env,
    )

    assert "needs a back-channel logout URI" in assert_fails_with_one_line(result)


def test_clients_backchannel_logout_sets_and_removes_the_uri_of_an_existing_client(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    _, client_id, _ = _create(cli_env)

    set_it = run_cli(
        "clients",
        "backchannel-logout",
        client_id,
        "https://photos.example.test/bcl",
        "--session-required",
        env=cli_env,
    )
    assert set_it.returncode == 0, set_it.stderr
    assert "https://photos.example.test/bcl (sid required)" in set_it.stdout
    client = _client(cli_app, client_id)
    assert client.backchannel_logout_uri == "https://photos.example.test/bcl"
    assert client.backchannel_logout_session_required is True

    removed = run_cli("clients", "backchannel-logout", client_id, env=cli_env)
    assert removed.returncode == 0, removed.stderr
    assert "is sent no logout tokens from now on" in removed.stdout
    client = _client(cli_app, client_id)
    assert client.backchannel_logout_uri is None
    assert client.backchannel_logout_session_required is False
    with db.transaction(cli_app) as session:
        updates = session.scalars(
            select(AuditEvent).where(
                AuditEvent.event_type == "client_updated", AuditEvent.client_id == client_id
            )
        ).all()
    assert [e.details["backchannel_logout_uri"] for e in updates] == [
        "https://photos.example.test/bcl",
        None,
    ]


def test_clients_backchannel_logout_refuses_a_bad_uri_and_keeps_the_old_one(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    _, client_id, _ = _create(cli_env, "--backchannel-logout-uri", "https://photos.example.test/a")

    result = run_cli(
        "clients", "backchannel-logout", client_id, "http://photos.example.test/b", env=cli_env
    )

    assert "must use https" in assert_fails_with_one_line(result)
    assert _client(cli_app, client_id).backchannel_logout_uri == "https://photos.example.test/a"


def test_clients_backchannel_logout_of_an_unknown_client_fails_with_one_line(
    cli_env: dict[str, str],
) -> None:
    result = run_cli("clients", "backchannel-logout", "no-such-client", env=cli_env)

    assert "no-such-client" in assert_fails_with_one_line(result)


# -- delivering ------------------------------------------------------------------------------


def _signed_in_session(cli_app: Flask, backchannel_logout_uri: str) -> tuple[str, str, str]:
    """A user signed in in a browser, and an app that signed in through it: (email, sid,
    the app's client_id)."""
    now = utcnow()
    email = f"user-{uuid.uuid4().hex[:12]}@example.com"
    with db.transaction(cli_app) as session:
        user = make_user(cli_app, session, email)
        photos = make_client(
            session,
            grant_types=["authorization_code"],
            redirect_uris=["https://photos.example.test/callback"],
            first_party=False,
            backchannel_logout_uri=backchannel_logout_uri,
        )
        started = start_session(
            session,
            user=user,
            policy=SessionPolicy(idle_ttl=timedelta(hours=1), absolute_ttl=timedelta(hours=12)),
            now=now,
            ip_address=None,
            user_agent=None,
        )
        record_signed_in_client(session, started.session, photos.client, now)
        return email, str(started.session.id), photos.client.client_id


def test_users_disable_then_outbox_deliver_tells_the_app_with_a_valid_logout_token(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    with receiving() as (receiver, base):
        email, sid, client_id = _signed_in_session(cli_app, base + "/bcl")

        disabled = run_cli("users", "disable", email, env=cli_env)
        assert disabled.returncode == 0, disabled.stderr
        assert receiver.count() == 0  # the command only wrote the message

        delivered = run_cli("outbox", "deliver", env=cli_env)

        assert delivered.returncode == 0, delivered.stderr
        assert delivered.stdout.strip() == "delivered 1, retrying 0, given up 0"
        (received,) = receiver.received
    issuer = runtime(cli_app).config.issuer
    jwks = cli_app.test_client().get("/.well-known/jwks.json").json
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(received.logout_token)["kid"]]
    claims = jwt.decode(
        received.logout_token, key.key, algorithms=["ES256"], audience=client_id, issuer=issuer
    )
    assert claims["sid"] == sid
    assert run_cli("outbox", "deliver", env=cli_env).stdout.strip() == (
        "delivered 0, retrying 0, given up 0"
    )


def test_outbox_status_counts_each_state_per_channel(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    now = utcnow()
    with db.transaction(cli_app) as session:
        for delivered in (True, False, False):
            message = enqueue(session, "backchannel_logout", "https://rp.example.test/b", {}, now)
            message.delivered_at = now if delivered else None

    result = run_cli("outbox", "status", env=cli_env)

    assert result.returncode == 0, result.stderr
    header, line = result.stdout.strip().splitlines()
    assert header.split()[:4] == ["CHANNEL", "PENDING", "DELIVERED", "GIVEN"]
    assert line.split()[:4] == ["backchannel_logout", "2", "1", "0"]
    assert f"{now:%Y-%m-%d %H:%M:%S} UTC" in line


def test_outbox_status_of_an_empty_outbox(cli_env: dict[str, str], cli_app: Flask) -> None:
    result = run_cli("outbox", "status", env=cli_env)

    assert result.stdout.strip() == "the outbox is empty"


def test_outbox_deliver_every_delivers_what_comes_later_and_stops_on_sigterm(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    with (
        receiving() as (receiver, base),
        Janitor("1s", cli_env, command=("outbox", "deliver")) as sender,
    ):
        with db.transaction(cli_app) as session:
            payload = {"aud": "photos", "sub": str(uuid.uuid4()), "sid": "s", "jti": "j"}
            enqueue(session, "backchannel_logout", base + "/bcl", payload, utcnow())

        sender.wait_for(sender.stdout, "delivered 1", times=1)
        status = sender.terminate()

        assert receiver.count() == 1
    assert status == 0, sender.stderr
    assert "Traceback" not in "\n".join(sender.stderr)
    with db.transaction(cli_app) as session:
        (message,) = session.scalars(select(OutboundMessage)).all()
        assert message.delivered_at is not None


def test_outbox_deliver_every_refuses_a_bad_duration_with_one_line(
    cli_env: dict[str, str],
) -> None:
    result = run_cli("outbox", "deliver", "--every", "soon", env=cli_env)

    assert "--every takes a whole number" in assert_fails_with_one_line(result)
