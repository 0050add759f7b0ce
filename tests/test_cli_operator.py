"""The operator's commands for accounts and clients, run as an operator runs them: `users
list/show/enable/set-password/verify-email/send-reset/invite/delete/grant-admin/revoke-admin`
and `clients list/show/update/enable/rotate-secret/delete`. Every refusal is one line and
changes nothing.

The database is this module's own (``<test database>_cli_operator`` on PostgreSQL, a file on
the SQLite fallback), built with ``authserver db upgrade``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select as select_fds
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from authserver import create_app
from authserver.db import db, utcnow
from authserver.models import (
    AuditEvent,
    Client,
    InitialAccessToken,
    OutboundMessage,
    Passkey,
    RecoveryCode,
    RefreshFamily,
    Revocation,
    TotpCredential,
    User,
)
from authserver.runtime import runtime
from authserver.services import recovery_codes, totp
from authserver.services.clients import RegisteredClient, disable_client
from authserver.services.users import check_password, find_user_by_email
from tests.helpers import HANG_SECONDS, PASSWORD, make_client, make_user, password_login
from tests.test_cli import (
    AUTHSERVER,
    _base_environment,
    arranging_app,
    assert_fails_with_one_line,
    message_lines,
    migrated_scratch_database,
    run_cli,
    said,
    unique_email,
)

NEW_PASSWORD = "an entirely different passphrase"


@pytest.fixture(scope="module")
def operator_database_url(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with migrated_scratch_database(database_url, "cli_operator", tmp_path_factory) as url:
        yield url


@pytest.fixture
def cli_env(operator_database_url: str, tmp_path: Path) -> dict[str, str]:
    return {**_base_environment(tmp_path / "instance"), "DATABASE_URL": operator_database_url}


@pytest.fixture
def cli_app(operator_database_url: str, tmp_path: Path) -> Iterator[Flask]:
    with arranging_app(operator_database_url, tmp_path / "app-instance") as app:
        yield app


def _user(cli_app: Flask, email: str | None = None) -> User:
    with db.transaction(cli_app) as session:
        return make_user(cli_app, session, email or unique_email())


def _find(cli_app: Flask, email: str) -> User | None:
    with db.transaction(cli_app) as session:
        user = find_user_by_email(session, email)
        if user is not None:
            session.expunge(user)
        return user


def _signed_in_client(cli_app: Flask, email: str, **options: object) -> RegisteredClient:
    """A first-party client, through which ``email`` has signed in (one refresh family)."""
    with db.transaction(cli_app) as session:
        registered = make_client(session, **options)
    assert password_login(cli_app.test_client(), registered, email).status_code == 200
    return registered


def _families(cli_app: Flask, user_id: uuid.UUID) -> list[RefreshFamily]:
    with db.transaction(cli_app) as session:
        rows = session.scalars(select(RefreshFamily).where(RefreshFamily.user_id == user_id))
        return [family for family in rows if session.expunge(family) is None]


def _client_row(cli_app: Flask, client_id: str) -> Client | None:
    with db.transaction(cli_app) as session:
        found = session.scalars(select(Client).where(Client.client_id == client_id)).first()
        if found is not None:
            session.expunge(found)
        return found


def _token_status(cli_app: Flask, client_id: str, secret: str) -> int:
    """client_credentials with these credentials, from a server that reads the row afresh."""
    fresh = create_app(replace(runtime(cli_app).config, client_cache_seconds=0))
    try:
        return (
            fresh.test_client()
            .post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(client_id, secret),
            )
            .status_code
        )
    finally:
        db.state(fresh).engine.dispose()


# -- users list, show ------------------------------------------------------------------------


def test_users_list_finds_by_part_of_the_address_and_pages_with_after(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    tag = uuid.uuid4().hex[:10]
    emails = [f"{name}-{tag}@example.com" for name in ("a", "b", "c")]
    for email in emails:
        _user(cli_app, email)

    first = run_cli("users", "list", "--search", tag, "--limit", "2", env=cli_env)
    second = run_cli(
        "users", "list", "--search", tag, "--limit", "2", "--after", emails[1], env=cli_env
    )
    as_json = run_cli("users", "list", "--search", tag, "--json", env=cli_env)

    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].split() == ["EMAIL", "ID", "STATE", "VERIFIED", "CREATED", "LAST", "SIGN-IN"]
    assert [line.split()[0] for line in lines[1:3]] == emails[:2]
    assert lines[1].split()[2:4] == ["enabled", "no"]
    assert lines[1].endswith("  -")  # never signed in
    assert lines[0].index("ID") == lines[1].index(lines[1].split()[1])  # aligned columns
    assert lines[3] == f"next page: --after {emails[1]}"
    assert [line.split()[0] for line in second.stdout.splitlines()[1:]] == emails[2:]
    listed = json.loads(as_json.stdout)
    assert [row["email"] for row in listed["users"]] == emails
    assert listed["next_after"] is None


def test_users_show_prints_the_account_and_where_it_is_signed_in(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    user = _user(cli_app)
    _signed_in_client(cli_app, user.email, name="Photos app")

    result = run_cli("users", "show", user.email, env=cli_env)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"id:              {user.id}" in out
    assert "state:           enabled" in out
    assert "email verified:  no" in out
    assert "last sign-in:    never" not in out
    assert "browser sessions: 0" in out
    assert "refresh families: 1" in out
    assert "Photos app" in out
    assert "passkeys:        0" in out


def test_users_show_lists_the_passkeys_and_reset_factors_removes_them(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    user = _user(cli_app)
    with db.transaction(cli_app) as session:
        passkey = Passkey(
            user_id=user.id,
            credential_id=b"credential",
            public_key=b"cose key",
            sign_count=7,
            aaguid="00000000-0000-0000-0000-000000000000",
            backup_eligible=True,
            backed_up=True,
            name="Work laptop",
            clone_suspected_at=utcnow(),
        )
        session.add(passkey)
        session.flush()
        passkey_id = passkey.id

    shown = run_cli("users", "show", user.email, env=cli_env)
    reset = run_cli("users", "reset-factors", user.email, env=cli_env)

    assert shown.returncode == 0, shown.stderr
    assert "passkeys:        1" in shown.stdout
    (line,) = [row for row in shown.stdout.splitlines() if str(passkey_id) in row]
    assert "Work laptop" in line
    assert "last used never" in line
    assert line.endswith("synced  clone suspected")
    assert reset.returncode == 0, reset.stderr
    with db.transaction(cli_app) as session:
        assert session.get(Passkey, passkey_id) is None
    assert _mail_templates_to(cli_app, user.email) == ["second_factor"]


@pytest.mark.parametrize(
    "command",
    [
        ("users", "show"),
        ("users", "enable"),
        ("users", "verify-email"),
        ("users", "delete"),
        ("users", "set-password", "--password-stdin"),
    ],
)
def test_users_commands_on_an_unknown_address_fail_with_one_line(
    cli_env: dict[str, str], command: tuple[str, ...]
) -> None:
    email = unique_email()

    result = run_cli(*command[:2], email, *command[2:], env=cli_env, stdin=NEW_PASSWORD + "\n")

    line = assert_fails_with_one_line(result)
    assert email in line


# -- users enable, verify-email ----------------------------------------------------------------


def test_users_enable_undoes_disable(cli_env: dict[str, str], cli_app: Flask) -> None:
    user = _user(cli_app)
    assert run_cli("users", "disable", user.email, env=cli_env).returncode == 0

    result = run_cli("users", "enable", user.email, env=cli_env)
    again = run_cli("users", "enable", user.email, env=cli_env)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"enabled user {user.email}; they can sign in again\n"
    with db.transaction(cli_app) as session:
        assert check_password(session, runtime(cli_app).hasher, user.email, PASSWORD).user
    assert "not disabled" in assert_fails_with_one_line(again)


def test_users_verify_email_sets_the_flag_once(cli_env: dict[str, str], cli_app: Flask) -> None:
    user = _user(cli_app)

    result = run_cli("users", "verify-email", user.email, env=cli_env)
    again = run_cli("users", "verify-email", user.email, env=cli_env)

    assert result.stdout == f"the address {user.email} is verified\n"
    assert again.stdout == f"the address {user.email} was verified already\n"
    found = _find(cli_app, user.email)
    assert found is not None
    assert found.email_verified


# -- users set-password ------------------------------------------------------------------------


def test_users_set_password_from_stdin_signs_out_everywhere_and_prints_no_password(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    user = _user(cli_app)
    _signed_in_client(cli_app, user.email)

    result = run_cli(
        "users", "set-password", user.email, "--password-stdin", env=cli_env, stdin=NEW_PASSWORD
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"password set for {user.email}; signed out everywhere: 0 browser sessions ended, "
        "1 refresh-token families revoked\n"
    )
    assert NEW_PASSWORD not in result.stdout + result.stderr
    assert [f.revoked_reason for f in _families(cli_app, user.id)] == ["password_set"]
    with db.transaction(cli_app) as session:
        hasher = runtime(cli_app).hasher
        assert check_password(session, hasher, user.email, PASSWORD).user is None
        assert check_password(session, hasher, user.email, NEW_PASSWORD).user is not None
    assert _mail_templates_to(cli_app, user.email) == ["password_changed"]


@pytest.mark.parametrize(
    ("stdin", "refusal"),
    [("short\n", "at least"), ("\n", "no password on standard input")],
)
def test_users_set_password_refuses_a_bad_password_in_one_line_and_changes_nothing(
    cli_env: dict[str, str], cli_app: Flask, stdin: str, refusal: str
) -> None:
    user = _user(cli_app)
    _signed_in_client(cli_app, user.email)

    result = run_cli(
        "users", "set-password", user.email, "--password-stdin", env=cli_env, stdin=stdin
    )

    assert refusal in assert_fails_with_one_line(result)
    assert [f.revoked_at for f in _families(cli_app, user.id)] == [None]
    with db.transaction(cli_app) as session:
        assert check_password(session, runtime(cli_app).hasher, user.email, PASSWORD).user


def test_users_set_password_without_a_terminal_or_password_stdin_fails_with_one_line(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    user = _user(cli_app)

    result = run_cli("users", "set-password", user.email, env=cli_env, stdin=NEW_PASSWORD)

    assert "--password-stdin" in assert_fails_with_one_line(result)
    with db.transaction(cli_app) as session:
        assert check_password(session, runtime(cli_app).hasher, user.email, PASSWORD).user


def _read_until(fd: int, wanted: bytes, seen: bytearray) -> None:
    while wanted not in seen:
        ready, _, _ = select_fds.select([fd], [], [], HANG_SECONDS)
        assert ready, f"no {wanted!r} on the terminal; saw {bytes(seen)!r}"
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # the other end closed
            chunk = b""
        assert chunk, f"the terminal closed before {wanted!r}; saw {bytes(seen)!r}"
        seen.extend(chunk)


def test_users_set_password_on_a_terminal_asks_twice_and_shows_nothing_typed(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    user = _user(cli_app)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [str(AUTHSERVER), "users", "set-password", user.email],
        env=cli_env,
        cwd=cli_env["AUTHSERVER_INSTANCE_DIR"],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    seen = bytearray()
    try:
        _read_until(controller, b"New password: ", seen)
        os.write(controller, NEW_PASSWORD.encode() + b"\n")
        _read_until(controller, b"Repeat for confirmation: ", seen)
        os.write(controller, NEW_PASSWORD.encode() + b"\n")
        _read_until(controller, b"password set for", seen)
        assert process.wait(timeout=HANG_SECONDS) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(controller)

    assert NEW_PASSWORD.encode() not in seen
    with db.transaction(cli_app) as session:
        assert check_password(session, runtime(cli_app).hasher, user.email, NEW_PASSWORD).user


# -- users delete ------------------------------------------------------------------------------


def test_users_delete_revokes_then_removes_the_account_and_keeps_its_audit_events(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    user = _user(cli_app)
    _signed_in_client(cli_app, user.email)
    family = _families(cli_app, user.id)[0]

    result = run_cli("users", "delete", user.email, env=cli_env)

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"deleted user {user.email} ({user.id}); 0 browser sessions ended, 1 refresh-token "
        "families revoked; its audit events are kept\n"
    )
    assert _find(cli_app, user.email) is None
    with db.transaction(cli_app) as session:
        values = set(session.scalars(select(Revocation.value)))
        assert {str(family.id), str(user.id)} <= values
        kept = set(
            session.scalars(select(AuditEvent.event_type).where(AuditEvent.user_id == user.id))
        )
    assert {"user_created", "signin_succeeded", "user_deleted"} <= kept
    assert _mail_templates_to(cli_app, user.email) == ["account_deleted"]


def test_users_delete_also_removes_the_accounts_authenticator_app_and_recovery_codes(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    user = _user(cli_app)
    _enrol_an_app(cli_app, user)

    result = run_cli("users", "delete", user.email, env=cli_env)

    assert result.returncode == 0, result.stderr
    with db.transaction(cli_app) as session:
        assert session.get(User, user.id) is None
        left = session.scalars(select(TotpCredential).where(TotpCredential.user_id == user.id))
        assert left.all() == []
        codes = session.scalars(select(RecoveryCode).where(RecoveryCode.user_id == user.id))
        assert codes.all() == []


def _enrol_an_app(cli_app: Flask, user: User) -> None:
    now = utcnow()
    with db.transaction(cli_app) as session:
        owner = session.get(User, user.id)
        assert owner is not None
        cipher = runtime(cli_app).key_cipher
        enrolment = totp.begin_enrolment(session, cipher, owner, now, issuer="authserver")
        assert totp.confirm_enrolment(
            session, cipher, owner, pyotp.TOTP(enrolment.secret).at(now), now
        )
        recovery_codes.generate(session, owner, now)


def test_users_reset_factors_turns_two_step_sign_in_off_and_tells_the_user(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    user = _user(cli_app)
    _enrol_an_app(cli_app, user)

    result = run_cli("users", "reset-factors", user.email, env=cli_env)
    again = run_cli("users", "reset-factors", user.email, env=cli_env)
    unknown = run_cli("users", "reset-factors", "nobody@example.com", env=cli_env)

    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"two-step sign-in is off for {user.email}; they were told by mail\n")
    with db.transaction(cli_app) as session:
        owner = session.get(User, user.id)
        assert owner is not None
        assert not totp.has_confirmed_totp(session, owner)
        assert recovery_codes.remaining_count(session, owner) == 0
        removed = session.scalars(
            select(AuditEvent).where(
                AuditEvent.user_id == user.id, AuditEvent.event_type == "totp_removed"
            )
        ).one()
        assert removed.details["method"] == "operator"
    assert _mail_templates_to(cli_app, user.email) == ["second_factor"]
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1] == f"Error: {user.email} has no second factor"
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines()[-1].startswith("Error: no user with the email")


def _mail_templates_to(cli_app: Flask, address: str) -> list[str]:
    """The templates of the mail waiting for ``address`` (the bodies are sealed)."""
    with db.transaction(cli_app) as session:
        rows = session.scalars(
            select(OutboundMessage)
            .where(OutboundMessage.destination == address)
            .order_by(OutboundMessage.id)
        )
        return [row.payload["template"] for row in rows]


# -- clients list, show, update --------------------------------------------------------------


def test_clients_list_and_show_print_everything_but_the_secret(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    user = _user(cli_app)
    registered = _signed_in_client(
        cli_app, user.email, name="Ledger", served_audiences=["https://ledger.example.test"]
    )
    client_id = registered.client.client_id

    listed = run_cli("clients", "list", env=cli_env)
    listed_json = run_cli("clients", "list", "--json", env=cli_env)
    shown = run_cli("clients", "show", client_id, env=cli_env)
    shown_json = run_cli("clients", "show", client_id, "--json", env=cli_env)

    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith(client_id))
    assert line.split()[1:4] == ["Ledger", "confidential", "enabled"]
    assert client_id in [row["client_id"] for row in json.loads(listed_json.stdout)]
    fields = json.loads(shown_json.stdout)
    assert fields["served_audiences"] == ["https://ledger.example.test"]
    assert fields["live_refresh_families"] == 1
    assert fields["disabled"] is False
    assert not any("digest" in name or name.endswith("secret") for name in fields)
    assert "live_refresh_families:" in shown.stdout
    assert "https://ledger.example.test" in shown.stdout
    everything = shown.stdout + shown_json.stdout
    assert registered.client_secret not in everything
    assert registered.client.secret_digest.hex() not in everything  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "command",
    [
        ("clients", "show"),
        ("clients", "enable"),
        ("clients", "rotate-secret"),
        ("clients", "delete"),
        ("clients", "update", "--scope", "read"),
    ],
)
def test_clients_commands_on_an_unknown_client_fail_with_one_line(
    cli_env: dict[str, str], command: tuple[str, ...]
) -> None:
    result = run_cli(*command[:2], "no-such-client", *command[2:], env=cli_env)

    assert "no-such-client" in assert_fails_with_one_line(result)


def test_clients_update_replaces_redirect_uris_and_lifetimes(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    with db.transaction(cli_app) as session:
        registered = make_client(
            session,
            first_party=False,
            grant_types=["authorization_code"],
            redirect_uris=["https://photos.example.test/old"],
            access_token_ttl=60,
        )
    client_id = registered.client.client_id

    result = run_cli(
        "clients",
        "update",
        client_id,
        "--redirect-uri",
        "https://photos.example.test/new",
        "--access-token-ttl",
        "0",
        env=cli_env,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        f"client {client_id}: changed redirect_uris, access_token_ttl; running servers"
    )
    client = _client_row(cli_app, client_id)
    assert client is not None
    assert client.redirect_uris == ["https://photos.example.test/new"]
    assert client.access_token_ttl is None


def test_clients_update_turns_the_two_factor_requirement_on_and_off(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    with db.transaction(cli_app) as session:
        client_id = make_client(session).client.client_id

    on = run_cli("clients", "update", client_id, "--require-second-factor", env=cli_env)
    shown = run_cli("clients", "show", client_id, "--json", env=cli_env)
    off = run_cli("clients", "update", client_id, "--no-require-second-factor", env=cli_env)

    assert on.returncode == 0, on.stderr
    assert on.stdout.startswith(f"client {client_id}: changed require_second_factor;")
    assert json.loads(shown.stdout)["require_second_factor"] is True
    assert off.returncode == 0, off.stderr
    client = _client_row(cli_app, client_id)
    assert client is not None
    assert client.require_second_factor is False


def test_clients_create_and_update_admin_scopes(cli_env: dict[str, str], cli_app: Flask) -> None:
    created = run_cli(
        "clients",
        "create",
        "--name",
        "Provisioning",
        "--grant",
        "client_credentials",
        "--admin-scope",
        "admin:users:read",
        "--admin-scope",
        "admin:audit:read",
        "--json",
        env=cli_env,
    )
    assert created.returncode == 0, created.stderr
    client_id = json.loads(created.stdout)["client_id"]
    shown = json.loads(run_cli("clients", "show", client_id, "--json", env=cli_env).stdout)
    assert shown["admin_scopes"] == ["admin:users:read", "admin:audit:read"]

    narrowed = run_cli(
        "clients", "update", client_id, "--admin-scope", "admin:audit:read", env=cli_env
    )
    assert narrowed.returncode == 0, narrowed.stderr
    assert narrowed.stdout.startswith(f"client {client_id}: changed admin_scopes;")
    removed = run_cli("clients", "update", client_id, "--no-admin-scopes", env=cli_env)
    assert removed.returncode == 0, removed.stderr
    client = _client_row(cli_app, client_id)
    assert client is not None
    assert client.admin_scopes == []


def test_clients_create_and_update_dpop_bound_access_tokens(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    created = run_cli(
        "clients",
        "create",
        "--name",
        "Billing job",
        "--grant",
        "client_credentials",
        "--dpop-bound-access-tokens",
        "--json",
        env=cli_env,
    )
    assert created.returncode == 0, created.stderr
    client_id = json.loads(created.stdout)["client_id"]
    shown = json.loads(run_cli("clients", "show", client_id, "--json", env=cli_env).stdout)
    assert shown["dpop_bound_access_tokens"] is True

    off = run_cli("clients", "update", client_id, "--no-dpop-bound-access-tokens", env=cli_env)

    assert off.returncode == 0, off.stderr
    assert off.stdout.startswith(f"client {client_id}: changed dpop_bound_access_tokens;")
    client = _client_row(cli_app, client_id)
    assert client is not None
    assert client.dpop_bound_access_tokens is False


@pytest.mark.parametrize(
    ("options", "refusal"),
    [
        (
            (
                "--grant",
                "authorization_code",
                "--redirect-uri",
                "https://a.example.test/cb",
                "--admin-scope",
                "admin:users:read",
            ),
            "client_credentials",
        ),
        (("--grant", "client_credentials", "--scope", "admin:users:read"), "admin scope"),
        (
            (
                "--public",
                "--grant",
                "authorization_code",
                "--redirect-uri",
                "https://a.example.test/cb",
                "--admin-scope",
                "admin:users:read",
            ),
            "confidential",
        ),
    ],
)
def test_clients_create_refuses_admin_scopes_where_they_do_not_belong(
    cli_env: dict[str, str], cli_app: Flask, options: tuple[str, ...], refusal: str
) -> None:
    result = run_cli("clients", "create", "--name", "Refused", *options, env=cli_env)

    assert refusal in assert_fails_with_one_line(result)
    with db.transaction(cli_app) as session:
        assert session.scalars(select(Client).where(Client.name == "Refused")).all() == []


@pytest.mark.parametrize(
    ("options", "refusal"),
    [
        (("--redirect-uri", "http://photos.example.test/cb"), "https"),
        (("--no-redirect-uris",), "needs at least one redirect URI"),
        (("--scope", 'bad"scope'), "scope token"),
        (("--redirect-uri", "https://a.example.test/", "--no-redirect-uris"), "not both"),
        ((), "nothing to change"),
    ],
)
def test_clients_update_with_bad_input_fails_with_one_line_and_changes_nothing(
    cli_env: dict[str, str], cli_app: Flask, options: tuple[str, ...], refusal: str
) -> None:
    with db.transaction(cli_app) as session:
        registered = make_client(
            session,
            first_party=False,
            grant_types=["authorization_code"],
            redirect_uris=["https://photos.example.test/cb"],
        )
    client_id = registered.client.client_id

    result = run_cli("clients", "update", client_id, *options, env=cli_env)

    assert refusal in assert_fails_with_one_line(result)
    client = _client_row(cli_app, client_id)
    assert client is not None
    assert (client.redirect_uris, client.scopes) == (
        ["https://photos.example.test/cb"],
        ["read", "write"],
    )


# -- clients enable, rotate-secret, delete -------------------------------------------------------


def test_clients_enable_undoes_disable(cli_env: dict[str, str], cli_app: Flask) -> None:
    with db.transaction(cli_app) as session:
        registered = make_client(session)
        # Disabled a minute ago: the tokens a server could still have issued are all older.
        disable_client(
            session,
            registered.client.client_id,
            utcnow() - timedelta(minutes=1),
            stale_for=timedelta(seconds=5),
            token_ttl=timedelta(minutes=10),
        )
    client_id = registered.client.client_id
    assert _token_status(cli_app, client_id, registered.client_secret or "") == 401

    result = run_cli("clients", "enable", client_id, env=cli_env)
    again = run_cli("clients", "enable", client_id, env=cli_env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"enabled client {client_id}; running servers accept it")
    assert _token_status(cli_app, client_id, registered.client_secret or "") == 200
    assert "not disabled" in assert_fails_with_one_line(again)


def test_clients_enable_right_after_disable_says_when_in_one_line(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    with db.transaction(cli_app) as session:
        registered = make_client(session)
    client_id = registered.client.client_id
    env = {**cli_env, "AUTHSERVER_CLIENT_CACHE_SECONDS": "3600"}
    assert run_cli("clients", "disable", client_id, env=env).returncode == 0

    result = run_cli("clients", "enable", client_id, env=env)

    assert "disabled moments ago" in assert_fails_with_one_line(result)
    client = _client_row(cli_app, client_id)
    assert client is not None
    assert client.disabled


def test_clients_rotate_secret_keeps_the_old_secret_working_for_the_overlap(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    with db.transaction(cli_app) as session:
        registered = make_client(session)
    client_id, old = registered.client.client_id, registered.client_secret or ""

    result = run_cli("clients", "rotate-secret", client_id, "--json", env=cli_env)

    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["client_id"] == client_id
    assert "the old secret works until" in result.stderr
    assert _token_status(cli_app, client_id, printed["client_secret"]) == 200
    assert _token_status(cli_app, client_id, old) == 200


def test_clients_rotate_secret_immediately_refuses_the_old_secret(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    with db.transaction(cli_app) as session:
        registered = make_client(session)
    client_id, old = registered.client.client_id, registered.client_secret or ""

    result = run_cli("clients", "rotate-secret", client_id, "--immediately", env=cli_env)

    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first.endswith("(shown once; store it now)")
    assert "refuse the old secret within" in second
    assert _token_status(cli_app, client_id, first.split()[1]) == 200
    assert _token_status(cli_app, client_id, old) == 401


def test_clients_rotate_secret_with_no_overlap_configured_refuses_the_old_secret(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    with db.transaction(cli_app) as session:
        registered = make_client(session)
    client_id, old = registered.client.client_id, registered.client_secret or ""
    env = {**cli_env, "AUTHSERVER_CLIENT_SECRET_OVERLAP_SECONDS": "0"}

    assert run_cli("clients", "rotate-secret", client_id, env=env).returncode == 0

    assert _token_status(cli_app, client_id, old) == 401


def test_clients_rotate_secret_of_a_public_client_fails_with_one_line(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    with db.transaction(cli_app) as session:
        registered = make_client(session, public=True, grant_types=["password"])

    result = run_cli("clients", "rotate-secret", registered.client.client_id, env=cli_env)

    assert "public" in assert_fails_with_one_line(result)


def test_clients_delete_revokes_and_recalls_then_removes_the_client(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    user = _user(cli_app)
    registered = _signed_in_client(cli_app, user.email)
    client_id = registered.client.client_id
    family = _families(cli_app, user.id)[0]

    result = run_cli("clients", "delete", client_id, env=cli_env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"deleted client {client_id}; 1 refresh-token families")
    assert _client_row(cli_app, client_id) is None
    assert _families(cli_app, user.id) == []
    with db.transaction(cli_app) as session:
        entries = {tuple(row) for row in session.execute(select(Revocation.kind, Revocation.value))}
        assert {("sid", str(family.id)), ("client", client_id)} <= entries
        kept = session.scalars(
            select(AuditEvent.event_type).where(AuditEvent.client_id == client_id)
        )
        assert "client_deleted" in set(kept)
    assert _token_status(cli_app, client_id, registered.client_secret or "") == 401


# -- users send-reset -------------------------------------------------------------------------


def test_users_send_reset_mails_a_link_that_opens_the_reset_page(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    user = _user(cli_app)

    sent = run_cli("users", "send-reset", user.email, env=cli_env)
    # Development without SMTP: delivering prints the message, link and all, to the console.
    delivered = run_cli("mail", "deliver", env=cli_env)

    assert sent.returncode == 0, sent.stderr
    assert f"a reset link for {user.email} is on its way" in sent.stdout
    assert delivered.returncode == 0, delivered.stderr
    links = [
        word
        for word in (delivered.stdout + delivered.stderr).split()
        if "/password/reset?token=" in word
    ]
    assert links, "no reset link in the delivered message"
    path = links[0][links[0].index("/password/reset") :].rstrip(".,>\"'")
    page = cli_app.test_client().get(path)
    assert page.status_code == 200
    assert b"Choose a new password" in page.data
    with db.transaction(cli_app) as session:
        requested = session.scalars(
            select(AuditEvent).where(
                AuditEvent.event_type == "password_reset_requested",
                AuditEvent.user_id == user.id,
            )
        ).one()
    assert requested.details == {"method": "operator"}


@pytest.mark.parametrize("disabled", [False, True], ids=["unknown", "disabled"])
def test_users_send_reset_refuses_an_unknown_or_disabled_account_in_one_line(
    cli_env: dict[str, str], cli_app: Flask, disabled: bool
) -> None:
    email = unique_email()
    if disabled:
        _user(cli_app, email)
        run_cli("users", "disable", email, env=cli_env)

    result = run_cli("users", "send-reset", email, env=cli_env)

    line = assert_fails_with_one_line(result)
    assert ("is disabled; enable it first" if disabled else "no user with the email") in line


# -- users invite ---------------------------------------------------------------------------


def test_users_invite_mails_a_link_that_opens_the_choose_password_page(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    email = unique_email()
    runtime(cli_app).config = replace(runtime(cli_app).config, signup="invite")

    sent = run_cli("users", "invite", email.upper(), env={**cli_env, "AUTHSERVER_SIGNUP": "invite"})
    # Development without SMTP: delivering prints the message, link and all, to the console.
    delivered = run_cli("mail", "deliver", env=cli_env)

    assert sent.returncode == 0, sent.stderr
    (line,) = sent.stdout.splitlines()
    assert line.startswith(f"an invitation for {email} is on its way; it works once, until ")
    assert line.endswith(" UTC")
    assert delivered.returncode == 0, delivered.stderr
    links = [
        word
        for word in (delivered.stdout + delivered.stderr).split()
        if "/invitation?token=" in word
    ]
    assert links, "no invitation link in the delivered message"
    path = links[0][links[0].index("/invitation") :].rstrip(".,>\"'")
    page = cli_app.test_client().get(path)
    assert page.status_code == 200
    assert b"Choose your password" in page.data
    assert email.encode() in page.data
    assert _find(cli_app, email) is None  # nothing is made until the password is chosen
    with db.transaction(cli_app) as session:
        sent_event = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "invitation_sent")
        ).one()
    assert sent_event.details == {"email": email, "method": "operator"}


def test_users_invite_refuses_in_one_line_when_sign_up_is_off(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    result = run_cli("users", "invite", unique_email(), env=cli_env)

    line = assert_fails_with_one_line(result)
    assert "set AUTHSERVER_SIGNUP=invite (or open)" in line


@pytest.mark.parametrize("case", ["existing", "lookalike", "malformed"])
def test_users_invite_refuses_an_address_with_an_account_or_not_an_address(
    cli_env: dict[str, str], cli_app: Flask, case: str
) -> None:
    user = _user(cli_app)
    address = {
        "existing": user.email.upper(),
        "lookalike": user.email.replace("example", "examp1e"),
        "malformed": "not-an-address",
    }[case]

    result = run_cli("users", "invite", address, env={**cli_env, "AUTHSERVER_SIGNUP": "open"})

    line = assert_fails_with_one_line(result)
    assert {
        "existing": f"Error: {user.email} already has an account",
        "lookalike": "Error: an account with an address that looks the same already exists",
        "malformed": "Error: not a valid email address: 'not-an-address'",
    }[case] == line
    with db.transaction(cli_app) as session:
        assert session.scalars(select(AuditEvent.event_type)).all().count("invitation_sent") == 0


def test_an_unknown_signup_mode_stops_every_command_with_one_line(
    cli_env: dict[str, str],
) -> None:
    result = run_cli("users", "invite", unique_email(), env={**cli_env, "AUTHSERVER_SIGNUP": "on"})

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert message_lines(result) == [
        "authserver: configuration error: AUTHSERVER_SIGNUP must be one of off, open, invite, "
        "got 'on'"
    ]


# -- registration-tokens (dynamic client registration) ---------------------------------------


def _registration_on(cli_app: Flask) -> FlaskClient:
    """A server on the commands' database with dynamic registration on."""
    runtime(cli_app).config = replace(runtime(cli_app).config, dynamic_registration=1)
    return cli_app.test_client()


def _register_with(http: FlaskClient, token: str) -> int:
    body = {
        "redirect_uris": ["https://rp.example.test/callback"],
        "token_endpoint_auth_method": "none",
    }
    return http.post(
        "/register", json=body, headers={"Authorization": f"Bearer {token}"}
    ).status_code


def test_registration_tokens_create_prints_the_token_once_and_stores_its_digest(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    result = run_cli("registration-tokens", "create", "--uses", "2", "--json", env=cli_env)

    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    token = printed["token"]
    assert "AUTHSERVER_DYNAMIC_REGISTRATION is 0" in result.stderr
    with db.transaction(cli_app) as session:
        row = session.get(InitialAccessToken, uuid.UUID(printed["id"]))
        assert row is not None
        assert row.token_digest == hashlib.sha256(token.encode()).digest()
        assert row.uses_allowed == 2
        assert row.expires_at - row.created_at == timedelta(seconds=86400)
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "registration_token_created")
        ).all()
        assert [e.details["registration_token_id"] for e in events] == [printed["id"]]
    assert token not in said(run_cli("registration-tokens", "list", "--json", env=cli_env))
    http = _registration_on(cli_app)
    assert [_register_with(http, token) for _ in range(3)] == [201, 201, 401]


def test_registration_tokens_list_says_what_each_can_still_do(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    used_up = json.loads(run_cli("registration-tokens", "create", "--json", env=cli_env).stdout)
    revoked = json.loads(run_cli("registration-tokens", "create", "--json", env=cli_env).stdout)
    usable = json.loads(
        run_cli("registration-tokens", "create", "--expires-in", "60", "--json", env=cli_env).stdout
    )
    assert _register_with(_registration_on(cli_app), used_up["token"]) == 201
    assert run_cli("registration-tokens", "revoke", revoked["id"], env=cli_env).returncode == 0

    listed = run_cli("registration-tokens", "list", "--json", env=cli_env)
    table = run_cli("registration-tokens", "list", env=cli_env)

    assert listed.returncode == 0, listed.stderr
    states = {row["id"]: (row["state"], row["uses"]) for row in json.loads(listed.stdout)}
    assert states == {
        used_up["id"]: ("used up", 1),
        revoked["id"]: ("revoked", 0),
        usable["id"]: ("usable", 0),
    }
    assert table.stdout.splitlines()[0].split() == ["ID", "STATE", "USES", "CREATED", "EXPIRES"]
    for printed in (used_up, revoked, usable):
        assert printed["token"] not in said(table)


def test_registration_tokens_revoke_stops_the_token_and_is_audited(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    printed = json.loads(run_cli("registration-tokens", "create", "--json", env=cli_env).stdout)

    result = run_cli("registration-tokens", "revoke", printed["id"], env=cli_env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"revoked registration token {printed['id']}"
    assert _register_with(_registration_on(cli_app), printed["token"]) == 401
    with db.transaction(cli_app) as session:
        revoked = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "registration_token_revoked")
        ).one()
        assert revoked.details["registration_token_id"] == printed["id"]
    again = run_cli("registration-tokens", "revoke", printed["id"], env=cli_env)
    assert "already revoked" in assert_fails_with_one_line(again)


@pytest.mark.parametrize(
    "token_id", ["00000000-0000-4000-8000-000000000000", "not-an-id", "-", "x" * 500]
)
def test_registration_tokens_revoke_of_an_unknown_id_fails_with_one_line(
    cli_env: dict[str, str], token_id: str
) -> None:
    result = run_cli("registration-tokens", "revoke", "--", token_id, env=cli_env)

    assert "no registration token" in assert_fails_with_one_line(result)


@pytest.mark.parametrize("option", [("--uses", "0"), ("--expires-in", "0"), ("--uses", "x")])
def test_registration_tokens_create_refuses_a_token_that_could_do_nothing(
    cli_env: dict[str, str], cli_app: Flask, option: tuple[str, str]
) -> None:
    result = run_cli("registration-tokens", "create", *option, env=cli_env)

    assert result.returncode != 0
    assert "Traceback" not in said(result)
    with db.transaction(cli_app) as session:
        assert session.scalars(select(InitialAccessToken)).all() == []


def test_clients_create_refuses_a_wildcard_redirect_uri(cli_env: dict[str, str]) -> None:
    result = run_cli(
        "clients",
        "create",
        "--name",
        "Wild",
        "--grant",
        "authorization_code",
        "--redirect-uri",
        "https://*.example.com/callback",
        env=cli_env,
    )

    assert "wildcard" in assert_fails_with_one_line(result)


# -- the admin role ---------------------------------------------------------------------------


def _role_events(cli_app: Flask, user: User) -> list[tuple[str, dict[str, object]]]:
    with db.transaction(cli_app) as session:
        rows = session.scalars(
            select(AuditEvent)
            .where(
                AuditEvent.user_id == user.id,
                AuditEvent.event_type.in_(["admin_role_granted", "admin_role_revoked"]),
            )
            .order_by(AuditEvent.id)
        )
        return [(row.event_type, dict(row.details)) for row in rows]


def _is_admin(cli_app: Flask, user: User) -> bool:
    with db.transaction(cli_app) as session:
        found = session.get(User, user.id)
        assert found is not None
        return found.is_admin


def test_grant_admin_gives_the_role_shows_it_and_audits_it(
    cli_env: dict[str, str], cli_app: Flask
) -> None:
    user = _user(cli_app)
    assert "admin role:      no" in run_cli("users", "show", user.email, env=cli_env).stdout

    result = run_cli("users", "grant-admin", user.email.upper(), env=cli_env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{user.email} holds the admin role;")
    assert _is_admin(cli_app, user)
    assert "admin role:      yes" in run_cli("users", "show", user.email, env=cli_env).stdout
    assert _role_events(cli_app, user) == [("admin_role_granted", {"method": "operator"})]


def test_revoke_admin_takes_the_role_and_audits_it(cli_env: dict[str, str], cli_app: Flask) -> None:
    user = _user(cli_app)
    assert run_cli("users", "grant-admin", user.email, env=cli_env).returncode == 0

    result = run_cli("users", "revoke-admin", user.email, env=cli_env)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{user.email} no longer holds the admin role\n"
    assert not _is_admin(cli_app, user)
    assert [kind for kind, _ in _role_events(cli_app, user)] == [
        "admin_role_granted",
        "admin_role_revoked",
    ]


@pytest.mark.parametrize("case", ["unknown", "already", "disabled", "malformed"])
def test_grant_admin_refuses_in_one_line_and_changes_nothing(
    cli_env: dict[str, str], cli_app: Flask, case: str
) -> None:
    user = _user(cli_app)
    if case == "already":
        assert run_cli("users", "grant-admin", user.email, env=cli_env).returncode == 0
    if case == "disabled":
        assert run_cli("users", "disable", user.email, env=cli_env).returncode == 0
    address = {"unknown": unique_email(), "malformed": "not-an-address"}.get(case, user.email)

    line = assert_fails_with_one_line(run_cli("users", "grant-admin", address, env=cli_env))

    assert {
        "unknown": f"Error: no user with the email {address!r}",
        "already": f"Error: {user.email} holds the admin role already",
        "disabled": f"Error: {user.email} is disabled; enable the account first",
        "malformed": "Error: no user with the email 'not-an-address'",
    }[case] == line
    assert _is_admin(cli_app, user) is (case == "already")
    assert len(_role_events(cli_app, user)) == (1 if case == "already" else 0)


@pytest.mark.parametrize("case", ["unknown", "not_admin"])
def test_revoke_admin_refuses_in_one_line_and_changes_nothing(
    cli_env: dict[str, str], cli_app: Flask, case: str
) -> None:
    user = _user(cli_app)
    address = unique_email() if case == "unknown" else user.email

    line = assert_fails_with_one_line(run_cli("users", "revoke-admin", address, env=cli_env))

    assert line == (
        f"Error: no user with the email {address!r}"
        if case == "unknown"
        else f"Error: {user.email} does not hold the admin role"
    )
    assert _role_events(cli_app, user) == []
