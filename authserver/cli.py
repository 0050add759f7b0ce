"""The ``authserver`` command: a click group whose commands run in the app's context.

Every command is one transaction. Bad input ends in one ``Error: ...`` line on stderr and a
non-zero exit, never a traceback. The group is authserver's own, not Flask's: Flask's
``run``, ``routes`` and ``shell``, its ``--app``/``--debug``/``--env-file`` options and the
commands extensions register on ``app.cli`` are not offered (``serve`` is the server).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import click
from flask import Flask, current_app
from flask.cli import ScriptInfo, with_appcontext
from sqlalchemy import inspect, make_url, text
from sqlalchemy.exc import SQLAlchemyError

from authserver.app import create_app, load_config_or_exit
from authserver.config import Config, ConfigError
from authserver.db import db, utcnow
from authserver.errors import AuthServerError, KeyDecryptionError
from authserver.own_apis import ADMIN_SCOPES
from authserver.runtime import runtime
from authserver.services import client_registration as registration_service
from authserver.services import clients as client_service
from authserver.services import keys as key_service
from authserver.services import users as user_service
from authserver.services.passwords import PasswordRejected
from authserver.services.purge import DEFAULT_BATCH_SIZE, PurgePolicy, PurgeReport, purge

UPGRADE_HINT = "run `authserver db upgrade`"


def migrations_dir() -> Path:
    """The alembic scripts: beside the package in a checkout, else in the working directory
    (the container image keeps them in /app)."""
    beside_package = Path(__file__).resolve().parent.parent / "migrations"
    return beside_package if beside_package.is_dir() else Path.cwd() / "migrations"


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _database_url_unset() -> bool:
    return not os.environ.get("DATABASE_URL", "").strip()


def _sqlite_file(database_url: str) -> str | None:
    """The file an SQLite URL names (None for another database or SQLite in memory)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return str(url.database)


def _schema_missing(exc: SQLAlchemyError) -> bool:
    """Whether a statement failed because a table or column of authserver's schema is not
    there: a database never migrated, or migrated by an older authserver."""
    orig = getattr(exc, "orig", None)
    # PostgreSQL: undefined_table, undefined_column (SQLSTATE class 42).
    if getattr(orig, "sqlstate", None) in ("42P01", "42703"):
        return True
    message = str(orig or "")
    return message.startswith(("no such table", "no such column"))


def _database_error_line(exc: SQLAlchemyError) -> str:
    first_line = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return first_line[0] if first_line else type(exc).__name__


def _unset_database_url_note() -> str:
    """Which database the command used when DATABASE_URL is not set, for messages about it."""
    if not _database_url_unset():
        return ""
    try:
        sqlite_file = _sqlite_file(Config.from_env().database_url)
    except ConfigError:
        return ""
    return f" (DATABASE_URL is not set: the SQLite file {sqlite_file})" if sqlite_file else ""


def _create_app_for_command() -> Flask:
    """The app of one command, from the environment.

    Without DATABASE_URL the server uses an SQLite file under the instance folder, which
    connecting would create: a command run from the wrong folder, or with a forgotten
    DATABASE_URL, would then work on a new empty database. Only `db upgrade` may create it;
    every other command says which file it looked for and how to name the right database.
    """
    config = load_config_or_exit()
    sqlite_file = _sqlite_file(config.database_url)
    creates_database = click.get_current_context().command is db_upgrade
    missing = sqlite_file is not None and not Path(sqlite_file).exists()
    if _database_url_unset() and missing and not creates_database:
        _fail(
            f"DATABASE_URL is not set and there is no database at {sqlite_file} (the "
            "SQLite file authserver uses without it): set DATABASE_URL to your database "
            "(postgresql+psycopg://USER@HOST/NAME), or create that file with "
            "`authserver db upgrade`"
        )
    return create_app(config)


class AuthserverGroup(click.Group):
    """The command group: each command gets the app on first use (``with_appcontext``), and
    expected failures become one line instead of a traceback."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # Flask's with_appcontext loads the app through the ScriptInfo it finds in the
        # context's obj; a caller (a test) may hand its own.
        extra.setdefault(
            "obj",
            ScriptInfo(
                create_app=_create_app_for_command,
                set_debug_flag=False,
                load_dotenv_defaults=False,
            ),
        )
        return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AuthServerError as exc:
            _fail(exc.description or exc.error)
        except KeyDecryptionError as exc:
            _fail(str(exc))
        except SQLAlchemyError as exc:
            # The driver's message can carry host names but no parameters (hide_parameters).
            detail = _database_error_line(exc)
            if _schema_missing(exc):
                _fail(
                    f"the database has no authserver schema, or an older one ({detail})"
                    f"{_unset_database_url_note()}: {UPGRADE_HINT}"
                )
            _fail(f"database error: {detail}")


def _app() -> Flask:
    return current_app._get_current_object()  # type: ignore[attr-defined,no-any-return]


@click.group(cls=AuthserverGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    package_name="authserver", prog_name="authserver", message="%(prog)s %(version)s"
)
def main() -> None:
    """authserver: OAuth 2.1 / OpenID Connect authorization server.

    Settings come from the environment (DATABASE_URL, AUTHSERVER_*; see the README's
    Configuration). Start with `authserver db upgrade`; `authserver COMMAND --help` says
    more about each command.
    """


# -- db --------------------------------------------------------------------------------------


@main.group("db")
def db_group() -> None:
    """Database schema (alembic migrations)."""


def alembic_config(database_url: str) -> Any:
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


@db_group.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: head)."""
    from alembic import command
    from alembic.util import CommandError

    database_url = runtime().config.database_url
    note = _unset_database_url_note()
    if note:
        click.echo(f"note: {note.strip(' ()')}", err=True)
    try:
        command.upgrade(alembic_config(database_url), revision)
    except CommandError as exc:
        _fail(f"{exc}; `authserver db upgrade` with no revision goes to the newest")
    click.echo(f"database upgraded to {revision}")


def _require_current_schema(app: Flask) -> None:
    """Refuse to serve a database that `db upgrade` has not brought to this authserver's
    schema: every request would end in an error. A revision this authserver does not know
    is a newer one (a rolling upgrade), which it serves."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config(runtime(app).config.database_url))
    head = scripts.get_current_head()
    with db.state(app).engine.connect() as conn:
        current = (
            conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            if inspect(conn).has_table("alembic_version")
            else None
        )
    if current is None:
        _fail(f"the database has no authserver schema{_unset_database_url_note()}: {UPGRADE_HINT}")
    known = {script.revision for script in scripts.walk_revisions()}
    if current != head and current in known:
        _fail(
            f"the database is at revision {current}, this authserver needs {head}: " + UPGRADE_HINT
        )


# -- serve -----------------------------------------------------------------------------------


@main.command("serve")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    metavar="ADDRESS",
    help="Address to listen on (0.0.0.0: all).",
)
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="TCP port to listen on.",
)
@with_appcontext
def serve(host: str, port: int) -> None:
    """Run the development server (production: gunicorn 'authserver:create_app()')."""
    from werkzeug.serving import WSGIRequestHandler, run_simple

    _require_current_schema(_app())

    class QuietQueryRequestHandler(WSGIRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            # The request line without its query string, as gunicorn's access log: a
            # reset or verification link carries its token there.
            method, _, rest = self.requestline.partition(" ")
            target, _, version = rest.partition(" ")
            self.requestline = f"{method} {target.split('?', 1)[0]} {version}"
            super().log_request(code, size)

    run_simple(
        host,
        port,
        _app(),
        threaded=True,
        use_reloader=False,
        request_handler=QuietQueryRequestHandler,
    )


# -- users -----------------------------------------------------------------------------------


@main.group("users")
def users_group() -> None:
    """Manage users."""


def _read_password_from_stdin() -> str:
    line = sys.stdin.readline()
    password = line[:-1] if line.endswith("\n") else line
    if password.endswith("\r"):
        password = password[:-1]
    if not password:
        _fail("no password on standard input")
    return password


def _new_password(password_stdin: bool, prompt: str) -> str:
    """A password from standard input (--password-stdin), or typed twice on a terminal
    without being shown: a typo in a password nobody sees would lock the account out."""
    if password_stdin:
        return _read_password_from_stdin()
    if sys.stdin.isatty():
        password: str = click.prompt(prompt, hide_input=True, confirmation_prompt=True, err=True)
        return password
    _fail("standard input is not a terminal: pass the password on it with --password-stdin")


@users_group.command("create")
@click.argument("email")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input (without it, it is "
    "typed twice on a terminal).",
)
@with_appcontext
def users_create(email: str, password_stdin: bool) -> None:
    """Create a user. The password is typed twice on a terminal without being shown, or
    comes on standard input with --password-stdin; never on the command line."""
    password = _new_password(password_stdin, "Password")
    rt = runtime()
    with db.transaction(_app()) as session:
        try:
            user = user_service.create_user(
                session, rt.hasher, email, password, password_policy=rt.password_policy
            )
        except PasswordRejected as exc:
            _fail(exc.description)
        click.echo(f"created user {user.email} ({user.id})")


@users_group.command("disable")
@click.argument("email")
@with_appcontext
def users_disable(email: str) -> None:
    """Disable a user and revoke all their refresh tokens."""
    with db.transaction(_app()) as session:
        user = user_service.disable_user(session, email, utcnow())
        click.echo(f"disabled user {user.email}; their refresh tokens are revoked")


@users_group.command("lookalikes")
@with_appcontext
def users_lookalikes() -> None:
    """List the accounts whose addresses look alike (UTS #39), one group at a time.

    Each account is one line: id, created date, address, and the address with every
    character beyond ASCII spelt out as <U+XXXX>, since two lines that look alike are the
    point. The groups are computed from the addresses, so accounts that collided before the
    rule existed show too.
    """
    from authserver.services.lookalikes import lookalike_groups

    with db.transaction(_app()) as session:
        groups = lookalike_groups(session)
    if not groups:
        click.echo("no look-alike accounts")
        return
    for number, group in enumerate(groups, start=1):
        click.echo(f"group {number}: {len(group)} accounts whose addresses look alike")
        for account in group:
            spelt = _spelt_out(account.email)
            click.echo(
                f"  {account.id}  {account.created_at:%Y-%m-%d %H:%M:%S}  {account.email}"
                + (f"  ({spelt})" if spelt != account.email else "")
            )
    accounts = sum(len(group) for group in groups)
    click.echo(f"look-alike groups: {len(groups)}; accounts in them: {accounts}")


def _spelt_out(text: str) -> str:
    return "".join(
        char if char.isascii() and char.isprintable() else f"<U+{ord(char):04X}>" for char in text
    )


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}" if moment else "-"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


@users_group.command("list")
@click.option("--search", default=None, help="Only addresses containing this text.")
@click.option(
    "--after", default=None, metavar="EMAIL", help="Start after this address (the next page)."
)
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(1, 1000),
    metavar="N",
    help="Accounts per page, 1 to 1000.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object: users and next_after.")
@with_appcontext
def users_list(search: str | None, after: str | None, limit: int, as_json: bool) -> None:
    """List accounts in address order, a page at a time: a full page ends with the
    --after that gives the next one, which accounts created meanwhile do not shift."""
    with db.transaction(_app()) as session:
        users = user_service.list_users(session, search=search, after=after, limit=limit)
        rows: list[dict[str, Any]] = [
            {
                "id": str(user.id),
                "email": user.email,
                "disabled": user.disabled,
                "email_verified": user.email_verified,
                "created_at": user.created_at,
                "last_sign_in_at": user.last_sign_in_at,
            }
            for user in users
        ]
    next_after = rows[-1]["email"] if len(rows) == limit else None
    if as_json:
        for row in rows:
            row["created_at"] = _iso(row["created_at"])
            row["last_sign_in_at"] = _iso(row["last_sign_in_at"])
        click.echo(json.dumps({"users": rows, "next_after": next_after}))
        return
    if not rows:
        click.echo("no users")
        return
    width = max(len("EMAIL"), *(len(row["email"]) for row in rows))
    click.echo(
        f"{'EMAIL':<{width}}  {'ID':<36}  {'STATE':<8}  {'VERIFIED':<8}  "
        f"{'CREATED':<19}  LAST SIGN-IN"
    )
    for row in rows:
        state = "disabled" if row["disabled"] else "enabled"
        verified = "yes" if row["email_verified"] else "no"
        click.echo(
            f"{row['email']:<{width}}  {row['id']:<36}  {state:<8}  {verified:<8}  "
            f"{_when(row['created_at']):<19}  {_when(row['last_sign_in_at'])}"
        )
    if next_after is not None:
        click.echo(f"next page: --after {next_after}")


@users_group.command("show")
@click.argument("email")
@with_appcontext
def users_show(email: str) -> None:
    """Show an account and where it is signed in: browser sessions and apps' refresh
    families (with the client's name), and its passkeys."""
    from authserver.services.passkeys import list_passkeys

    with db.transaction(_app()) as session:
        overview = user_service.user_overview(session, email, utcnow())
        user = overview.user
        click.echo(f"email:           {user.email}")
        click.echo(f"id:              {user.id}")
        click.echo(f"state:           {'disabled' if user.disabled else 'enabled'}")
        click.echo(f"email verified:  {'yes' if user.email_verified else 'no'}")
        click.echo(f"admin role:      {'yes' if user.is_admin else 'no'}")
        click.echo(f"created:         {_when(user.created_at)} UTC")
        last = f"{_when(user.last_sign_in_at)} UTC" if user.last_sign_in_at else "never"
        click.echo(f"last sign-in:    {last}")
        browsers, apps = overview.browser_sessions, overview.refresh_families
        click.echo(f"browser sessions: {len(browsers)}")
        for device in browsers:
            click.echo(
                f"  {device.id}  since {_when(device.created_at)}  "
                f"last seen {_when(device.last_used_at)}  {device.ip_address or '-'}"
            )
        click.echo(f"refresh families: {len(apps)}")
        for device in apps:
            click.echo(
                f"  {device.id}  {device.client_name}  since {_when(device.created_at)}  "
                f"last used {_when(device.last_used_at)}  {device.ip_address or '-'}"
            )
        passkeys = list_passkeys(session, user)
        click.echo(f"passkeys:        {len(passkeys)}")
        for passkey in passkeys:
            used = _when(passkey.last_used_at) if passkey.last_used_at else "never"
            kind = "synced" if passkey.backup_eligible else "device-bound"
            flag = "  clone suspected" if passkey.clone_suspected_at else ""
            click.echo(
                f"  {passkey.id}  {passkey.name}  added {_when(passkey.created_at)}  "
                f"last used {used}  {kind}{flag}"
            )


@users_group.command("enable")
@click.argument("email")
@with_appcontext
def users_enable(email: str) -> None:
    """Let a disabled user sign in again (what disabling ended stays ended)."""
    with db.transaction(_app()) as session:
        user = user_service.enable_user(session, email, utcnow())
        click.echo(f"enabled user {user.email}; they can sign in again")


@users_group.command("grant-admin")
@click.argument("email")
@with_appcontext
def users_grant_admin(email: str) -> None:
    """Give a user the admin role: the operator console (/admin), once they sign in with a
    second factor."""
    from authserver.services.admin_role import grant_admin_role

    with db.transaction(_app()) as session:
        user = grant_admin_role(session, email, utcnow())
        click.echo(
            f"{user.email} holds the admin role; the console at /admin asks for their second factor"
        )


@users_group.command("revoke-admin")
@click.argument("email")
@with_appcontext
def users_revoke_admin(email: str) -> None:
    """Take the admin role from a user: the console refuses their next request."""
    from authserver.services.admin_role import revoke_admin_role

    with db.transaction(_app()) as session:
        user = revoke_admin_role(session, email, utcnow())
        click.echo(f"{user.email} no longer holds the admin role")


@users_group.command("set-password")
@click.argument("email")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input (without it, it is "
    "typed twice on a terminal).",
)
@with_appcontext
def users_set_password(email: str, password_stdin: bool) -> None:
    """Set a user's password and sign them out everywhere. The password comes on standard
    input (--password-stdin) or, on a terminal, is typed twice without being shown."""
    password = _new_password(password_stdin, "New password")
    rt = runtime()
    with db.transaction(_app()) as session:
        user = user_service.get_user_by_email(session, email)
        sessions, families = user_service.set_password(
            session,
            rt.hasher,
            user,
            password,
            now=utcnow(),
            password_policy=rt.password_policy,
            notices=rt.notices,
        )
        click.echo(
            f"password set for {user.email}; signed out everywhere: {sessions} browser "
            f"sessions ended, {families} refresh-token families revoked"
        )


@users_group.command("verify-email")
@click.argument("email")
@with_appcontext
def users_verify_email(email: str) -> None:
    """Mark a user's address as verified (userinfo's email_verified)."""
    with db.transaction(_app()) as session:
        user = user_service.get_user_by_email(session, email)
        if user_service.mark_email_verified(session, user, utcnow(), method="operator"):
            click.echo(f"the address {user.email} is verified")
        else:
            click.echo(f"the address {user.email} was verified already")


@users_group.command("send-reset")
@click.argument("email")
@with_appcontext
def users_send_reset(email: str) -> None:
    """Mail the user a password-reset link, the one "Forgot password?" sends."""
    from authserver.services.password_reset import reset_settings, send_reset_link

    app = _app()
    rt = runtime(app)
    settings = reset_settings(rt.config)
    with db.transaction(app) as session:
        user = send_reset_link(session, rt.composer, settings, email, utcnow())
        address = user.email
    minutes = int(settings.ttl.total_seconds() // 60)
    click.echo(f"a reset link for {address} is on its way; it works once, for {minutes} minutes")


@users_group.command("invite")
@click.argument("email")
@with_appcontext
def users_invite(email: str) -> None:
    """Mail EMAIL an invitation: a link to choose a password, which makes the account (with
    its address verified). Needs AUTHSERVER_SIGNUP=invite or open."""
    from authserver.services.signup import send_invitation, signup_settings

    app = _app()
    rt = runtime(app)
    with db.transaction(app) as session:
        invitation = send_invitation(
            session, rt.composer, signup_settings(rt.config), email, utcnow()
        )
    click.echo(
        f"an invitation for {invitation.email} is on its way; it works once, until "
        f"{invitation.expires_at:%Y-%m-%d %H:%M} UTC"
    )


@users_group.command("reset-factors")
@click.argument("email")
@with_appcontext
def users_reset_factors(email: str) -> None:
    """Turn a user's two-step sign-in off (the authenticator app, the recovery codes and the
    passkeys), for a user who lost them; they are told by mail and can set it up again."""
    from authserver.services.second_factor_enrolment import reset_second_factors

    app = _app()
    with db.transaction(app) as session:
        user = user_service.get_user_by_email(session, email)
        if not reset_second_factors(session, runtime(app).notices, user, utcnow()):
            _fail(f"{user.email} has no second factor")
        click.echo(f"two-step sign-in is off for {user.email}; they were told by mail")


@users_group.command("delete")
@click.argument("email")
@with_appcontext
def users_delete(email: str) -> None:
    """Delete an account: everything it holds is revoked first (apps and resource servers
    are told, the address is mailed a notice), then the account and its sessions go. Its
    audit events stay."""
    app = _app()
    with db.transaction(app) as session:
        user, sessions, families = user_service.delete_user(
            session, email, utcnow(), runtime(app).notices
        )
        click.echo(
            f"deleted user {user.email} ({user.id}); {sessions} browser sessions ended, "
            f"{families} refresh-token families revoked; its audit events are kept"
        )


# -- clients ---------------------------------------------------------------------------------

_SERVER_DEFAULTS = Config()
# A client's own token lifetimes: (option, what it bounds, the server-wide setting, its default).
_LIFETIMES = {
    "access-token-ttl": (
        "How long its access tokens live",
        "AUTHSERVER_ACCESS_TOKEN_TTL",
        _SERVER_DEFAULTS.access_token_ttl,
    ),
    "refresh-idle-ttl": (
        "How long its refresh tokens may go unused before the family ends",
        "AUTHSERVER_REFRESH_IDLE_TTL",
        _SERVER_DEFAULTS.refresh_idle_ttl,
    ),
    "refresh-absolute-ttl": (
        "How long a refresh-token family lives at most, however often it is used",
        "AUTHSERVER_REFRESH_ABSOLUTE_TTL",
        _SERVER_DEFAULTS.refresh_absolute_ttl,
    ),
}


def _seconds_in_words(seconds: int) -> str:
    """``1209600 s, 14 days``: a lifetime in the unit it was chosen in."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{seconds} s, {count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} s"


def _lifetime_option(name: str, *, update: bool) -> Callable[[Any], Any]:
    what, setting, default = _LIFETIMES[name]
    unset = "0 puts back" if update else "without it,"
    return click.option(
        f"--{name}",
        type=click.IntRange(min=0 if update else 1),
        default=None,
        metavar="SECONDS",
        help=f"{what}, in seconds; {unset} the server-wide {setting} "
        f"(default {_seconds_in_words(default)}).",
    )


@main.group("clients")
def clients_group() -> None:
    """Manage OAuth clients."""


@clients_group.command("create")
@click.option("--name", required=True, help="Shown to users and operators.")
@click.option("--public", is_flag=True, help="No secret (mobile and single-page apps).")
@click.option("--first-party", is_flag=True, help="One of the operator's own apps.")
@click.option(
    "--grant",
    "grants",
    multiple=True,
    required=True,
    type=click.Choice(client_service.SUPPORTED_GRANT_TYPES),
    help="Allowed grant type; repeat for several.",
)
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="Exact redirect URI.")
@click.option(
    "--post-logout-redirect-uri",
    "post_logout_redirect_uris",
    multiple=True,
    help="Exact URI to return to after sign-out (OpenID Connect RP-initiated logout).",
)
@click.option("--scope", default="", help='Allowed scopes, space separated: "read write".')
@click.option(
    "--audience", "audiences", multiple=True, help="Allowed resource (first is the default)."
)
@click.option(
    "--serves",
    "served_audiences",
    multiple=True,
    metavar="AUDIENCE",
    help="Register as the resource server of this audience: it may introspect tokens issued "
    "for it and read the revocation feed. Repeat for several.",
)
@click.option(
    "--backchannel-logout-uri",
    default=None,
    metavar="URI",
    help="Where to POST a logout token when a browser session the client signed in through "
    "ends (OpenID Connect Back-Channel Logout).",
)
@click.option(
    "--backchannel-logout-session-required",
    is_flag=True,
    help="The client needs the sid in every logout token (authserver always sends it).",
)
@click.option(
    "--require-second-factor",
    is_flag=True,
    help="Its users must sign in with two factors (the password grant is then refused).",
)
@click.option(
    "--admin-scope",
    "admin_scopes",
    multiple=True,
    type=click.Choice(ADMIN_SCOPES),
    help="Make it an admin client: it may get admin API tokens with this scope through "
    "client_credentials. Repeat for several.",
)
@click.option(
    "--require-par",
    is_flag=True,
    help="Its authorization requests must be pushed to /oauth/par first (RFC 9126).",
)
@click.option("--logo-uri", default=None, help="Its logo on the consent page (https).")
@click.option("--policy-uri", default=None, help="Its privacy policy, linked on the consent page.")
@click.option("--tos-uri", default=None, help="Its terms of service, linked on the consent page.")
@click.option(
    "--dpop-bound-access-tokens",
    "dpop_bound",
    is_flag=True,
    help="Its token requests must carry a DPoP proof, so every token it gets is bound to a "
    "key it holds (RFC 9449).",
)
@_lifetime_option("access-token-ttl", update=False)
@_lifetime_option("refresh-idle-ttl", update=False)
@_lifetime_option("refresh-absolute-ttl", update=False)
@click.option("--json", "as_json", is_flag=True, help="Print {client_id, client_secret} as JSON.")
@with_appcontext
def clients_create(
    name: str,
    public: bool,
    first_party: bool,
    grants: tuple[str, ...],
    redirect_uris: tuple[str, ...],
    post_logout_redirect_uris: tuple[str, ...],
    scope: str,
    audiences: tuple[str, ...],
    served_audiences: tuple[str, ...],
    backchannel_logout_uri: str | None,
    backchannel_logout_session_required: bool,
    require_second_factor: bool,
    admin_scopes: tuple[str, ...],
    require_par: bool,
    dpop_bound: bool,
    access_token_ttl: int | None,
    refresh_idle_ttl: int | None,
    refresh_absolute_ttl: int | None,
    logo_uri: str | None,
    policy_uri: str | None,
    tos_uri: str | None,
    as_json: bool,
) -> None:
    """Register a client. The secret is shown once; only its digest is stored."""
    with db.transaction(_app()) as session:
        registered = client_service.create_client(
            session,
            name=name,
            grant_types=list(grants),
            public=public,
            first_party=first_party,
            redirect_uris=list(redirect_uris),
            post_logout_redirect_uris=list(post_logout_redirect_uris),
            scopes=scope.split(),
            audiences=list(audiences),
            served_audiences=list(served_audiences),
            access_token_ttl=access_token_ttl,
            refresh_idle_ttl=refresh_idle_ttl,
            refresh_absolute_ttl=refresh_absolute_ttl,
            backchannel_logout_uri=backchannel_logout_uri,
            backchannel_logout_session_required=backchannel_logout_session_required,
            require_second_factor=require_second_factor,
            admin_scopes=list(admin_scopes),
            require_pushed_authorization_requests=require_par,
            logo_uri=logo_uri,
            policy_uri=policy_uri,
            tos_uri=tos_uri,
            dpop_bound_access_tokens=dpop_bound,
        )
    result = {
        "client_id": registered.client.client_id,
        "client_secret": registered.client_secret,
    }
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"client_id:     {result['client_id']}")
        if registered.client_secret:
            click.echo(f"client_secret: {result['client_secret']}  (shown once; store it now)")


@clients_group.command("serve")
@click.argument("client_id")
@click.argument("audiences", nargs=-1, metavar="[AUDIENCE]...")
@with_appcontext
def clients_serve(client_id: str, audiences: tuple[str, ...]) -> None:
    """Set the audiences CLIENT_ID serves as a resource server (replacing its list; none: it
    serves none). It may introspect tokens issued for them and read the revocation feed."""
    app = _app()
    with db.transaction(app) as session:
        client = client_service.set_served_audiences(session, client_id, list(audiences), utcnow())
        served = list(client.served_audiences)
    seconds = runtime(app).config.client_cache_seconds
    what = ", ".join(served) if served else "no audience"
    click.echo(
        f"client {client_id} serves {what}; running servers see it within {seconds} s "
        "(AUTHSERVER_CLIENT_CACHE_SECONDS)"
    )


@clients_group.command("backchannel-logout")
@click.argument("client_id")
@click.argument("uri", required=False, metavar="[URI]")
@click.option(
    "--session-required",
    is_flag=True,
    help="The client needs the sid in every logout token (authserver always sends it).",
)
@with_appcontext
def clients_backchannel_logout(client_id: str, uri: str | None, session_required: bool) -> None:
    """Set where CLIENT_ID is sent logout tokens when a browser session it signed in through
    ends (OpenID Connect Back-Channel Logout); without URI, it is sent none from now on."""
    with db.transaction(_app()) as session:
        client_service.set_backchannel_logout(
            session, client_id, uri, utcnow(), session_required=session_required
        )
    if uri is None:
        click.echo(f"client {client_id} is sent no logout tokens from now on")
    else:
        required = " (sid required)" if session_required else ""
        click.echo(f"client {client_id} is sent logout tokens at {uri}{required}")


@clients_group.command("events")
@click.argument("client_id")
@click.option("--push", "push_url", metavar="URL", help="POST each SET to URL (RFC 8935).")
@click.option("--poll", is_flag=True, help="The client polls for SETs (RFC 8936).")
@click.option("--off", is_flag=True, help="Stop sending it security events.")
@with_appcontext
def clients_events(client_id: str, push_url: str | None, poll: bool, off: bool) -> None:
    """How a resource server receives revocations as Security Event Tokens: pushed to its
    URL or polled at /oauth/security-events. Exactly one of --push, --poll, --off."""
    from authserver.services.security_events import POLL, PUSH

    if [push_url is not None, poll, off].count(True) != 1:
        _fail("give exactly one of --push URL, --poll, --off")
    delivery = PUSH if push_url is not None else POLL if poll else None
    app = _app()
    with db.transaction(app) as session:
        client_service.set_security_event_delivery(session, client_id, delivery, push_url, utcnow())
    issuer = runtime(app).config.issuer
    if delivery == PUSH:
        click.echo(f"client {client_id} receives security events at {push_url} (RFC 8935 push)")
    elif delivery == POLL:
        click.echo(
            f"client {client_id} polls for security events at {issuer}/oauth/security-events "
            "(RFC 8936)"
        )
    else:
        click.echo(f"client {client_id} receives no security events")


@clients_group.command("disable")
@click.argument("client_id")
@with_appcontext
def clients_disable(client_id: str) -> None:
    """Refuse a client from now on and revoke its refresh tokens."""
    _recall_client(client_id, client_service.disable_client, "disabled")


def _recall_client(client_id: str, end: Callable[..., int], done: str) -> None:
    """Disable or delete a client: both revoke its families and recall its access tokens
    (services/clients.py), then say so."""
    from authserver.services.revocations import longest_access_token_ttl

    app = _app()
    config = runtime(app).config
    seconds = config.client_cache_seconds
    with db.transaction(app) as session:
        families = end(
            session,
            client_id,
            utcnow(),
            stale_for=timedelta(seconds=seconds),
            token_ttl=longest_access_token_ttl(session, config.access_token_ttl),
        )
    click.echo(
        f"{done} client {client_id}; {families} refresh-token families revoked; its access "
        "tokens are recalled (revocation feed, introspection); running servers refuse it "
        f"within {seconds} s (AUTHSERVER_CLIENT_CACHE_SECONDS)"
    )


@clients_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of the clients.")
@with_appcontext
def clients_list(as_json: bool) -> None:
    """List every client, oldest first."""
    with db.transaction(_app()) as session:
        rows: list[dict[str, Any]] = [
            {
                "client_id": client.client_id,
                "name": client.name,
                "type": "public" if client.is_public else "confidential",
                "disabled": client.disabled,
                "grant_types": list(client.grant_types),
                "created_at": client.created_at,
            }
            for client in client_service.list_clients(session)
        ]
    if as_json:
        for row in rows:
            row["created_at"] = _iso(row["created_at"])
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("no clients")
        return
    id_width = max(len("CLIENT_ID"), *(len(row["client_id"]) for row in rows))
    name_width = max(len("NAME"), *(len(row["name"]) for row in rows))
    click.echo(
        f"{'CLIENT_ID':<{id_width}}  {'NAME':<{name_width}}  {'TYPE':<12}  {'STATE':<8}  "
        f"{'CREATED':<19}  GRANTS"
    )
    for row in rows:
        state = "disabled" if row["disabled"] else "enabled"
        click.echo(
            f"{row['client_id']:<{id_width}}  {row['name']:<{name_width}}  {row['type']:<12}  "
            f"{state:<8}  {_when(row['created_at']):<19}  {' '.join(row['grant_types'])}"
        )


@clients_group.command("show")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@with_appcontext
def clients_show(client_id: str, as_json: bool) -> None:
    """Show a client's registration (never its secret) and how many refresh families
    issued to it are live."""
    with db.transaction(_app()) as session:
        fields = client_service.registration_fields(
            client_service.client_overview(session, client_id, utcnow())
        )
    if as_json:
        click.echo(json.dumps(fields))
        return
    for name, value in fields.items():
        shown = " ".join(value) if isinstance(value, list) else value
        if value is None or value == []:
            shown = "-"
        elif isinstance(value, bool):
            shown = "yes" if value else "no"
        click.echo(f"{name + ':':<37} {shown}")


@clients_group.command("update")
@click.argument("client_id")
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="Replaces the list.")
@click.option("--no-redirect-uris", is_flag=True, help="Removes every redirect URI.")
@click.option(
    "--post-logout-redirect-uri",
    "post_logout_redirect_uris",
    multiple=True,
    help="Replaces the list.",
)
@click.option(
    "--no-post-logout-redirect-uris", is_flag=True, help="Removes every post-logout redirect URI."
)
@click.option("--scope", default=None, help='Replaces the scopes, space separated ("" none).')
@click.option("--audience", "audiences", multiple=True, help="Replaces the list.")
@click.option("--no-audiences", is_flag=True, help="Removes every audience.")
@_lifetime_option("access-token-ttl", update=True)
@_lifetime_option("refresh-idle-ttl", update=True)
@_lifetime_option("refresh-absolute-ttl", update=True)
@click.option(
    "--admin-scope",
    "admin_scopes",
    multiple=True,
    type=click.Choice(ADMIN_SCOPES),
    help="Replaces its admin scopes.",
)
@click.option("--no-admin-scopes", is_flag=True, help="It is no longer an admin client.")
@click.option(
    "--require-par/--no-require-par",
    default=None,
    help="Whether its authorization requests must be pushed first (RFC 9126).",
)
@click.option(
    "--dpop-bound-access-tokens/--no-dpop-bound-access-tokens",
    "dpop_bound",
    default=None,
    help="Whether its token requests must carry a DPoP proof (RFC 9449).",
)
@click.option(
    "--require-second-factor/--no-require-second-factor",
    default=None,
    help="Whether its users must sign in with two factors.",
)
@click.option("--logo-uri", default=None, help='Its logo on the consent page ("" none).')
@click.option("--policy-uri", default=None, help='Its privacy policy link ("" none).')
@click.option("--tos-uri", default=None, help='Its terms of service link ("" none).')
@with_appcontext
def clients_update(
    client_id: str,
    redirect_uris: tuple[str, ...],
    no_redirect_uris: bool,
    post_logout_redirect_uris: tuple[str, ...],
    no_post_logout_redirect_uris: bool,
    scope: str | None,
    audiences: tuple[str, ...],
    no_audiences: bool,
    access_token_ttl: int | None,
    refresh_idle_ttl: int | None,
    refresh_absolute_ttl: int | None,
    admin_scopes: tuple[str, ...],
    no_admin_scopes: bool,
    require_par: bool | None,
    dpop_bound: bool | None,
    require_second_factor: bool | None,
    logo_uri: str | None,
    policy_uri: str | None,
    tos_uri: str | None,
) -> None:
    """Change a client's redirect URIs, post-logout redirect URIs, scopes, admin scopes,
    audiences, lifetimes, whether its users need two factors, or the consent page's logo and
    links, under the rules of `clients create`. Tokens already issued keep theirs."""

    def replacing(values: tuple[str, ...], clear: bool, option: str) -> Any:
        if values and clear:
            _fail(f"give --{option} or --no-{option}s, not both")
        return [] if clear else list(values) if values else client_service.UNCHANGED

    def lifetime(seconds: int | None) -> Any:
        return client_service.UNCHANGED if seconds is None else seconds or None

    changes: dict[str, Any] = {
        "redirect_uris": replacing(redirect_uris, no_redirect_uris, "redirect-uri"),
        "post_logout_redirect_uris": replacing(
            post_logout_redirect_uris, no_post_logout_redirect_uris, "post-logout-redirect-uri"
        ),
        "scopes": client_service.UNCHANGED if scope is None else scope.split(),
        "audiences": replacing(audiences, no_audiences, "audience"),
        "access_token_ttl": lifetime(access_token_ttl),
        "refresh_idle_ttl": lifetime(refresh_idle_ttl),
        "refresh_absolute_ttl": lifetime(refresh_absolute_ttl),
        "require_second_factor": (
            client_service.UNCHANGED if require_second_factor is None else require_second_factor
        ),
        "admin_scopes": replacing(admin_scopes, no_admin_scopes, "admin-scope"),
        "require_pushed_authorization_requests": (
            client_service.UNCHANGED if require_par is None else require_par
        ),
        "logo_uri": client_service.UNCHANGED if logo_uri is None else logo_uri,
        "policy_uri": client_service.UNCHANGED if policy_uri is None else policy_uri,
        "tos_uri": client_service.UNCHANGED if tos_uri is None else tos_uri,
        "dpop_bound_access_tokens": client_service.UNCHANGED if dpop_bound is None else dpop_bound,
    }
    if all(value is client_service.UNCHANGED for value in changes.values()):
        _fail("nothing to change; see `authserver clients update --help`")
    app = _app()
    with db.transaction(app) as session:
        changed = client_service.update_client(session, client_id, utcnow(), **changes)
    if not changed:
        click.echo(f"client {client_id} already had that; nothing changed")
        return
    seconds = runtime(app).config.client_cache_seconds
    click.echo(
        f"client {client_id}: changed {', '.join(changed)}; running servers see it within "
        f"{seconds} s (AUTHSERVER_CLIENT_CACHE_SECONDS)"
    )


@clients_group.command("enable")
@click.argument("client_id")
@with_appcontext
def clients_enable(client_id: str) -> None:
    """Let a disabled client authenticate again (its revoked tokens stay revoked)."""
    app = _app()
    with db.transaction(app) as session:
        client_service.enable_client(session, client_id, utcnow())
    seconds = runtime(app).config.client_cache_seconds
    click.echo(
        f"enabled client {client_id}; running servers accept it within {seconds} s "
        "(AUTHSERVER_CLIENT_CACHE_SECONDS)"
    )


@clients_group.command("rotate-secret")
@click.argument("client_id")
@click.option(
    "--immediately",
    is_flag=True,
    help="The old secret stops working now (a leaked secret), instead of after "
    "AUTHSERVER_CLIENT_SECRET_OVERLAP_SECONDS.",
)
@click.option("--json", "as_json", is_flag=True, help="Print {client_id, client_secret} as JSON.")
@with_appcontext
def clients_rotate_secret(client_id: str, immediately: bool, as_json: bool) -> None:
    """Give a confidential client a new secret, shown once. The old one keeps working for
    AUTHSERVER_CLIENT_SECRET_OVERLAP_SECONDS, so its deployments can switch over."""
    app = _app()
    config = runtime(app).config
    overlap = timedelta(seconds=0 if immediately else config.client_secret_overlap_seconds)
    with db.transaction(app) as session:
        rotated = client_service.rotate_client_secret(session, client_id, utcnow(), overlap=overlap)
        until = rotated.previous_valid_until
    if as_json:
        click.echo(json.dumps({"client_id": client_id, "client_secret": rotated.client_secret}))
    else:
        click.echo(f"client_secret: {rotated.client_secret}  (shown once; store it now)")
    seconds = config.client_cache_seconds
    old = (
        f"the old secret works until {until:%Y-%m-%d %H:%M:%S} UTC"
        if until is not None
        else f"running servers refuse the old secret within {seconds} s "
        "(AUTHSERVER_CLIENT_CACHE_SECONDS)"
    )
    click.echo(f"rotated the secret of client {client_id}; {old}", err=as_json)


@clients_group.command("delete")
@click.argument("client_id")
@with_appcontext
def clients_delete(client_id: str) -> None:
    """Delete a client: its refresh tokens are revoked and its access tokens recalled first,
    as `clients disable` does, then the registration goes. Its audit events stay."""
    _recall_client(client_id, client_service.delete_client, "deleted")


# -- registration tokens (dynamic client registration) --------------------------------------


@main.group("registration-tokens")
def registration_tokens_group() -> None:
    """Initial access tokens for dynamic client registration (POST /register, RFC 7591)."""


@registration_tokens_group.command("create")
@click.option(
    "--expires-in",
    type=click.IntRange(min=1),
    default=86400,
    show_default=True,
    metavar="SECONDS",
    help="How long the token works, in seconds (86400: a day).",
)
@click.option(
    "--uses",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="How many clients it may register, 1 or more.",
)
@click.option("--json", "as_json", is_flag=True, help="Print {id, token, expires_at} as JSON.")
@with_appcontext
def registration_tokens_create(expires_in: int, uses: int, as_json: bool) -> None:
    """Make an initial access token, shown once (only its digest is stored). Whoever holds
    it may register clients at POST /register while AUTHSERVER_DYNAMIC_REGISTRATION=1."""
    app = _app()
    with db.transaction(app) as session:
        issued = registration_service.create_initial_access_token(
            session, utcnow(), expires_in=timedelta(seconds=expires_in), uses=uses
        )
        token_id, expires_at = str(issued.row.id), issued.row.expires_at
    if as_json:
        click.echo(
            json.dumps({"id": token_id, "token": issued.token, "expires_at": _iso(expires_at)})
        )
    else:
        click.echo(f"id:    {token_id}")
        click.echo(f"token: {issued.token}  (shown once; store it now)")
        click.echo(f"registers up to {uses} client(s) until {_when(expires_at)} UTC", err=as_json)
    if not runtime(app).config.dynamic_registration:
        click.echo(
            "note: AUTHSERVER_DYNAMIC_REGISTRATION is 0: POST /register is off until it is 1",
            err=True,
        )


@registration_tokens_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of the tokens.")
@with_appcontext
def registration_tokens_list(as_json: bool) -> None:
    """List the initial access tokens (never the tokens themselves), oldest first."""
    now = utcnow()
    with db.transaction(_app()) as session:
        rows: list[dict[str, Any]] = [
            {
                "id": str(row.id),
                "state": registration_service.initial_access_token_state(row, now),
                "uses": row.uses,
                "uses_allowed": row.uses_allowed,
                "created_at": row.created_at,
                "expires_at": row.expires_at,
            }
            for row in registration_service.list_initial_access_tokens(session)
        ]
    if as_json:
        for row in rows:
            row["created_at"], row["expires_at"] = _iso(row["created_at"]), _iso(row["expires_at"])
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("no registration tokens")
        return
    click.echo(f"{'ID':<36}  {'STATE':<8}  {'USES':<9}  {'CREATED':<19}  EXPIRES")
    for row in rows:
        uses = f"{row['uses']}/{row['uses_allowed']}"
        click.echo(
            f"{row['id']:<36}  {row['state']:<8}  {uses:<9}  {_when(row['created_at']):<19}  "
            f"{_when(row['expires_at'])}"
        )


@registration_tokens_group.command("revoke")
@click.argument("token_id", metavar="ID")
@with_appcontext
def registration_tokens_revoke(token_id: str) -> None:
    """Stop an initial access token from registering clients; those it registered stay."""
    with db.transaction(_app()) as session:
        registration_service.revoke_initial_access_token(session, token_id, utcnow())
    click.echo(f"revoked registration token {token_id}")


# -- keys ------------------------------------------------------------------------------------


@main.group("keys")
def keys_group() -> None:
    """Manage signing keys."""


@keys_group.command("rotate")
@click.option(
    "--immediately",
    is_flag=True,
    help="Sign with the new key at once (a compromised key); caches may reject new tokens "
    "until they refetch the JWKS.",
)
@with_appcontext
def keys_rotate(immediately: bool) -> None:
    """Publish a new signing key; it starts signing once every JWKS cache has seen it."""
    from authserver.runtime import key_schedule
    from authserver.services.revocations import longest_access_token_ttl

    rt = runtime()
    now = utcnow()
    with db.transaction(_app()) as session:
        schedule = key_schedule(
            rt.config, longest_access_token_ttl(session, rt.config.access_token_ttl)
        )
        try:
            rotation = key_service.rotate_signing_key(
                session,
                rt.key_cipher,
                rt.config.signing_alg,
                now,
                immediately=immediately,
                publish_delay=schedule.publish_delay,
            )
        except key_service.NextKeyPending as pending:
            _fail(f"key {pending} is already waiting to become current; see `keys list`")
    key = rotation.key
    if rotation.outcome == "first":
        click.echo(f"no key yet: created current key {key.kid} ({key.algorithm})")
    elif rotation.outcome == "immediate":
        click.echo(f"new current key {key.kid} ({key.algorithm}); the old one is retired")
        for kid in rotation.discarded:
            click.echo(f"discarded next key {kid}: it would have taken over signing later")
    else:
        click.echo(
            f"published next key {key.kid} ({key.algorithm}); "
            f"it starts signing at {rotation.starts_at:%Y-%m-%d %H:%M:%S} UTC"
        )


# A kid is a base64url thumbprint and may begin with "-": taken as the argument, not an option.
@keys_group.command("withdraw", context_settings={"ignore_unknown_options": True})
@click.argument("kid")
@with_appcontext
def keys_withdraw(kid: str) -> None:
    """Withdraw a compromised key: it never signs again, leaves the JWKS, and every token it
    signed is refused (introspection at once, resource servers at their next feed poll)."""
    from authserver.services.revocations import longest_access_token_ttl

    rt = runtime()
    now = utcnow()
    stale_for = rt.config.key_refresh_interval
    try:
        with db.transaction(_app()) as session:
            withdrawal = key_service.withdraw_signing_key(
                session,
                rt.key_cipher,
                rt.config.signing_alg,
                kid.strip(),
                now,
                stale_for=timedelta(seconds=stale_for),
                token_ttl=longest_access_token_ttl(session, rt.config.access_token_ttl),
            )
            replacement = withdrawal.replacement
            replacement_line = (
                f"new current key {replacement.kid} ({replacement.algorithm}) signs from now on"
                if replacement is not None
                else None
            )
    except key_service.UnknownSigningKey:
        _fail(f"no signing key has the kid {kid.strip()[:64]!r}; see `authserver keys list`")
    except key_service.KeyAlreadyGone as gone:
        _fail(f"key {kid.strip()[:64]} is {gone} already; nothing to withdraw")
    told_at_once = rt.config.key_change_notifications and not rt.config.is_sqlite
    when = (
        "now (told by PostgreSQL)"
        if told_at_once
        else f"within {stale_for} s (AUTHSERVER_KEY_REFRESH_INTERVAL)"
    )
    click.echo(
        f"withdrew key {kid.strip()}: in the revocation feed, every token it signed is refused; "
        f"server processes drop it from the JWKS and stop signing with it {when}"
    )
    if replacement_line:
        click.echo(replacement_line)


@keys_group.command("list")
@with_appcontext
def keys_list() -> None:
    """Show every signing key: kid, algorithm, state and dates."""

    def when(moment: datetime | None) -> str:
        return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"

    with db.transaction(_app()) as session:
        rows = key_service.list_signing_keys(session)
        click.echo(f"{'KID':<45} {'ALG':<6} {'STATE':<8} {'CREATED':<20} {'ACTIVATED':<20} RETIRED")
        for row in rows:
            click.echo(
                f"{row.kid:<45} {row.algorithm:<6} {row.state.value:<8} "
                f"{when(row.created_at):<20} {when(row.activated_at):<20} {when(row.retired_at)}"
            )


# -- audit ---------------------------------------------------------------------------------


@main.group("audit")
def audit_group() -> None:
    """Read the security audit trail."""


@audit_group.command("tail")
@click.option(
    "--user", "email", default=None, metavar="EMAIL", help="Only the events of this account."
)
@click.option(
    "--type",
    "event_type",
    default=None,
    metavar="TYPE",
    help="Only events of this type (user_created, signin_failed...).",
)
@click.option(
    "-n",
    "--lines",
    default=50,
    show_default=True,
    type=click.IntRange(1, 10_000),
    metavar="N",
    help="How many events, 1 to 10000.",
)
@with_appcontext
def audit_tail(email: str | None, event_type: str | None, lines: int) -> None:
    """Show the newest events, oldest first, one line each."""
    from authserver.services.audit import AuditEventType, recent_events

    if event_type is not None and event_type not in set(AuditEventType):
        _fail(f"unknown event type {event_type!r}; one of: {', '.join(AuditEventType)}")
    with db.transaction(_app()) as session:
        user_id = None
        if email is not None:
            user = user_service.find_user_by_email(session, email)
            if user is None:
                _fail(f"no user with the email {email.strip()[:100]!r}")
            user_id = user.id
        events = recent_events(session, limit=lines, user_id=user_id, event_type=event_type)
        emails = user_service.emails_of(
            session, {event.user_id for event in events if event.user_id is not None}
        )
        for event in events:
            details = " ".join(f"{k}={v}" for k, v in sorted(event.details.items()))
            click.echo(
                f"{event.occurred_at:%Y-%m-%d %H:%M:%S} {event.event_type:<22} "
                f"user={_user_of(event.user_id, emails)} client={event.client_id or '-'} "
                f"ip={event.ip_address or '-'} {details}".rstrip()
            )


def _user_of(user_id: uuid.UUID | None, emails: dict[uuid.UUID, str]) -> str:
    """``<id> <address>``: the id the trail keeps, and the address the account has now (an
    account deleted since keeps only its id; its `user_deleted` event names the address)."""
    if user_id is None:
        return "-"
    email = emails.get(user_id)
    return f"{user_id} <{email}>" if email else f"{user_id} (deleted account)"


# -- purge ---------------------------------------------------------------------------------

_DURATION = re.compile(r"([0-9]+)([smhd])")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str) -> timedelta:
    """``30s``, ``15m``, ``1h``, ``1d``: a positive whole number and one unit."""
    match = _DURATION.fullmatch(value.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"--every takes a whole number and s, m, h or d (like 1h); got {value!r}")
    return timedelta(seconds=int(match.group(1)) * _DURATION_SECONDS[match.group(2)])


def _print_purge_report(report: PurgeReport) -> None:
    if report.another_purge_running:
        click.echo("another purge is running; nothing purged")
        return
    counts = {kind.replace("_", " "): count for kind, count in report.counts().items()}
    width = max(len(kind) for kind in counts)
    for kind, count in counts.items():
        click.echo(f"{kind:<{width}} {count:>9}")
    click.echo(f"{'total':<{width}} {report.total:>9}")
    if report.stopped:
        click.echo("stopped before the end; the next run goes on from there")


@main.command("purge")
@click.option(
    "--every",
    metavar="DURATION",
    default=None,
    help="Keep running, purging again this long after each run: 30s, 15m, 1h, 1d.",
)
@click.option(
    "--batch-size",
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    type=click.IntRange(min=1),
    metavar="ROWS",
    help="Rows deleted per transaction; smaller holds locks for less time.",
)
@with_appcontext
def purge_command(every: str | None, batch_size: int) -> None:
    """Delete dead refresh tokens, codes, sessions, revocations, removed keys, finished outbox
    messages and security events, and old audit events, in short transactions; safe while the
    server runs."""
    interval = _interval_of(every)
    rt = runtime()
    session_factory = db.state(_app()).session_factory
    policy = PurgePolicy(
        access_token_ttl=rt.config.access_token_ttl,
        audit_retention_days=rt.config.audit_retention_days,
        batch_size=batch_size,
        unacknowledged_events_kept=timedelta(seconds=rt.config.outbox_give_up_seconds),
    )

    def purge_once(stop: threading.Event) -> None:
        _print_purge_report(
            purge(session_factory, now=utcnow(), policy=policy, should_stop=stop.is_set)
        )

    _run_until_stopped("purge", every, interval, purge_once)


def _interval_of(every: str | None) -> timedelta | None:
    """``--every``'s duration, None without it; a bad one is one line."""
    if every is None:
        return None
    try:
        return parse_duration(every)
    except ValueError as exc:
        _fail(str(exc))


def _run_until_stopped(
    what: str,
    every: str | None,
    interval: timedelta | None,
    run_once: Callable[[threading.Event], None],
) -> None:
    """``run_once``, once, or every ``interval`` until SIGTERM or SIGINT: a janitor container
    is stopped with SIGTERM, and the run at hand finishes first (``run_once`` gets the stop
    event to end between two steps of its own). On a schedule, a database that is down or
    restarting is one line, and the next run tries again."""
    stop = threading.Event()

    def request_stop(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.is_set():
            try:
                run_once(stop)
            except SQLAlchemyError as exc:
                if interval is None:
                    raise
                click.echo(
                    f"{what} failed: database error: {_database_error_line(exc)}; "
                    f"trying again in {every}",
                    err=True,
                )
            if interval is None or stop.wait(interval.total_seconds()):
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- outbox --------------------------------------------------------------------------------


@main.group("outbox")
def outbox_group() -> None:
    """Messages for other systems (back-channel logout tokens, pushed Security Event Tokens,
    e-mail), delivered at least once."""


@outbox_group.command("deliver")
@click.option(
    "--every",
    metavar="DURATION",
    default=None,
    help="Keep running, delivering what is due this often: 5s, 1m. For deployments with "
    "AUTHSERVER_OUTBOX_IN_PROCESS=0.",
)
@with_appcontext
def outbox_deliver(every: str | None) -> None:
    """Deliver every message that is due now (retries included), once or on a schedule."""
    interval = _interval_of(every)
    app = _app()
    rt = runtime(app)
    session_factory = db.state(app).session_factory

    # SIGTERM ends it between two rounds (a round is bounded by the HTTP deadline).
    def deliver_once(_stop: threading.Event) -> None:
        report = rt.deliver_outbox(session_factory)
        if interval is None or report.attempted:
            click.echo(
                f"delivered {report.delivered}, retrying {report.retrying}, "
                f"given up {report.given_up}"
            )

    _run_until_stopped("outbox delivery", every, interval, deliver_once)


@outbox_group.command("status")
@with_appcontext
def outbox_status_command() -> None:
    """Messages per channel: pending (and since when), delivered, given up (until purged)."""
    from authserver.services.outbox import outbox_status

    with db.transaction(_app()) as session:
        channels = outbox_status(session)
    if not channels:
        click.echo("the outbox is empty")
        return
    click.echo(f"{'CHANNEL':<22} {'PENDING':>8} {'DELIVERED':>10} {'GIVEN UP':>9}  OLDEST PENDING")
    for status in channels:
        oldest = (
            f"{status.oldest_pending_at:%Y-%m-%d %H:%M:%S} UTC" if status.oldest_pending_at else "-"
        )
        click.echo(
            f"{status.channel:<22} {status.pending:>8} {status.delivered:>10} "
            f"{status.given_up:>9}  {oldest}"
        )


# -- mail ----------------------------------------------------------------------------------


@main.group("mail")
def mail_group() -> None:
    """E-mail: the outbox's "mail" channel, sent over AUTHSERVER_SMTP_URL."""


def _mail_channel_or_exit() -> None:
    from authserver.services.mail import CHANNEL

    if CHANNEL not in runtime().outbox_channels:
        _fail("AUTHSERVER_SMTP_URL is not set: this process cannot send mail")


@mail_group.command("deliver")
@click.option(
    "--every",
    metavar="DURATION",
    default=None,
    help="Keep running, sending what is due this often: 5s, 1m.",
)
@with_appcontext
def mail_deliver(every: str | None) -> None:
    """Send the e-mail that is due now (retries included), once or on a schedule: `outbox
    deliver` limited to the mail channel."""
    from authserver.services.mail import CHANNEL

    interval = _interval_of(every)
    _mail_channel_or_exit()
    app = _app()
    rt = runtime(app)
    session_factory = db.state(app).session_factory

    def deliver_once(_stop: threading.Event) -> None:
        report = rt.deliver_outbox(session_factory, only=CHANNEL)
        if interval is None or report.attempted:
            click.echo(
                f"sent {report.delivered}, retrying {report.retrying}, given up {report.given_up}"
            )

    _run_until_stopped("mail delivery", every, interval, deliver_once)


@mail_group.command("send-test")
@click.argument("email")
@with_appcontext
def mail_send_test(email: str) -> None:
    """Send a test message to EMAIL now and say what the SMTP server answered."""
    from authserver.models import OutboundMessage
    from authserver.services.mail import CHANNEL, enqueue_mail

    _mail_channel_or_exit()
    app = _app()
    rt = runtime(app)
    with db.transaction(app) as session:
        message_id = enqueue_mail(
            session, rt.composer, to=email, template="test", context={}, now=rt.now()
        ).id
    rt.deliver_outbox(db.state(app).session_factory, only=CHANNEL)
    with db.transaction(app) as session:
        message = session.get(OutboundMessage, message_id)
        assert message is not None
        if message.delivered_at is not None:
            click.echo(f"sent to {message.destination} ({message.payload['message_id']})")
        elif message.gave_up_at is not None:
            _fail(f"refused: {message.last_error}")
        else:
            click.echo(
                f"not sent yet ({message.last_error or 'another sender has it'}); "
                "the outbox keeps trying "
                f"(`authserver outbox status`)"
            )
            sys.exit(1)


# -- development -----------------------------------------------------------------------------


@main.group("dev")
def dev_group() -> None:
    """Development helpers (refused in production)."""


@dev_group.command("seed")
@with_appcontext
def dev_seed() -> None:
    """Create a signing key and the demo user and clients if missing; show how to use them.

    The demo credentials are kept in instance/demo-credentials.json (mode 0600) because only
    digests are stored in the database and they could not be shown again otherwise.
    """
    from urllib.parse import urlencode

    from authserver.services.demo import (
        DEMO_EMAIL,
        DEMO_RP_BASE,
        DEMO_RP_REDIRECT_URI,
        s256,
        seed_demo,
    )

    rt = runtime()
    if rt.config.is_production:
        _fail("dev seed is for development only")
    credentials_file = Path(rt.config.instance_dir) / "demo-credentials.json"
    known = json.loads(credentials_file.read_text()) if credentials_file.exists() else {}
    with db.transaction(_app()) as session:
        key_service.ensure_signing_key(session, rt.key_cipher, rt.config.signing_alg, utcnow())
        if "password" not in known and user_service.find_user_by_email(session, DEMO_EMAIL):
            _fail(f"the demo user exists but {credentials_file} is gone; delete the database")
        creds = seed_demo(
            session,
            rt.hasher,
            rt.password_policy,
            known,
            utcnow(),
            api_audience=rt.config.default_audience or rt.config.issuer,
        )
        if creds != known:
            credentials_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(creds, out, indent=2)
    issuer = rt.config.issuer
    authorize = (
        issuer
        + "/oauth/authorize?"
        + urlencode(
            {
                "response_type": "code",
                "client_id": creds["web_client_id"],
                "redirect_uri": DEMO_RP_REDIRECT_URI,
                "scope": "openid email offline_access",
                "state": "demo",
                "code_challenge": s256(creds["pkce_verifier"]),
                "code_challenge_method": "S256",
            }
        )
    )
    exports = " ".join(
        f"{name}={shlex.quote(value)}"
        for name, value in (
            ("ISSUER", issuer),
            ("CLIENT_ID", creds["client_id"]),
            ("CLIENT_SECRET", creds["client_secret"]),
            ("EMAIL", creds["email"]),
            ("PASSWORD", creds["password"]),
        )
    )
    click.echo(
        f"""
For the README's curl examples, paste into your shell:

export {exports}

Demo user:    {creds["email"]} / {creds["password"]}
Demo client:  {creds["client_id"]} / {creds["client_secret"]}
              (kept in {credentials_file})

Demo API:     {creds["api_client_id"]} / {creds["api_client_secret"]}
              (a resource server: introspection and the revocation feed)

Sign in with the password grant and get an access + refresh token:

  curl -s -u '{creds["client_id"]}:{creds["client_secret"]}' \\
       -d grant_type=password -d username='{creds["email"]}' -d password='{creds["password"]}' \\
       {issuer}/oauth/token

The same with -d resource={issuer}/account -d scope=account gives a token for the account API
(GET {issuer}/account/sessions with it lists where the demo user is signed in).

Sign in through the browser (authorization code + PKCE) as the "Demo web app": open

  {authorize}

then exchange the code from the address bar (http://127.0.0.1:8765/callback?code=...):

  curl -s -d grant_type=authorization_code -d client_id={creds["web_client_id"]} \\
       -d redirect_uri={DEMO_RP_REDIRECT_URI} -d code_verifier={creds["pkce_verifier"]} \\
       -d code=CODE {issuer}/oauth/token

or run the example relying party, which does all of it, in a second terminal:

  AUTHSERVER_ISSUER={shlex.quote(issuer)} .venv/bin/python examples/relying_party.py

and open {DEMO_RP_BASE}.
Your sessions: {issuer}/account      Public keys: {issuer}/.well-known/jwks.json
"""
    )


if __name__ == "__main__":  # pragma: no cover
    main()
