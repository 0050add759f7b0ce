"""The operator console (``/admin``): server-rendered pages for support staff to find an
account, see where it is signed in and sign it out, disable or enable it, mail it a reset
link and read its audit trail; and to list and edit clients.

It calls the services the CLI and the admin API call, so no rule exists twice. Who may use
it is decided in one place, before every view of the blueprint (``admit_admins_only``, on
the rule of ``services/admin_role.console_access``): a signed-in browser session of an
enabled account holding the admin role, signed in with a second factor. Every change made
meanwhile is audited with that account as its actor (``services/audit.acting_as``, via
``admin_console``). Forms carry the CSRF token of every page (``http/web.py``); each POST
answers with a redirect to the page it came from and a flashed message (POST-redirect-GET),
except a form refused for its input, which is shown again with the errors beside its fields.
"""

from __future__ import annotations

from contextlib import ExitStack

from flask import Blueprint, Response, g, render_template, request, url_for

from authserver.db import db
from authserver.errors import NotFound
from authserver.http.two_step import give_the_second_factor
from authserver.http.web import current_browser_session, see_other
from authserver.models import User
from authserver.services.admin_role import ConsoleAccess, console_access
from authserver.services.audit import Actor, acting_as

CONSOLE_PATH = "/admin"

bp = Blueprint("admin_console", __name__, url_prefix=CONSOLE_PATH)


def _page_to_return_to() -> str:
    """Where the browser comes back to after signing in or giving its second factor: this
    page, or for a form's POST (which cannot be replayed) the page the form is on."""
    if request.method == "GET":
        return request.full_path.rstrip("?")
    args = request.view_args or {}
    if "user_id" in args:
        return url_for("admin_console.user_page", user_id=args["user_id"])
    if "client_id" in args:
        return url_for("admin_console.client_page", client_id=args["client_id"])
    return CONSOLE_PATH


def _refused() -> tuple[str, int]:
    # Says nothing of what the page would have shown, nor whether it exists.
    page = render_template(
        "error.html",
        title="Not for this account",
        message="The operator console is for accounts that hold the admin role.",
        link_url=url_for("pages.account"),
        link_text="Go to your account",
    )
    return page, 403


@bp.before_request
def admit_admins_only() -> Response | tuple[str, int] | None:
    """The console's access rule, for every view of the blueprint, on every request."""
    browser_session = current_browser_session()
    if browser_session is None:
        return see_other(url_for("pages.login_form", next=_page_to_return_to()))
    access = console_access(db.session, browser_session)
    if access is ConsoleAccess.REFUSED:
        return _refused()
    if access is ConsoleAccess.GIVE_SECOND_FACTOR:
        # The step-up the account pages use: the code's page, then back here.
        return give_the_second_factor(browser_session, _page_to_return_to())
    if access is ConsoleAccess.SET_UP_SECOND_FACTOR:
        return see_other(url_for("two_step.setup_form", next=_page_to_return_to()))
    g.console_admin = browser_session.user
    acting = ExitStack()
    acting.enter_context(
        acting_as(
            Actor(
                via="admin_console",
                user_id=browser_session.user_id,
                ip_address=request.remote_addr,
                user_agent=request.user_agent.string,
            )
        )
    )
    g.console_acting = acting
    return None


@bp.teardown_request
def stop_acting(exc: BaseException | None) -> None:
    acting: ExitStack | None = g.pop("console_acting", None)
    if acting is not None:
        acting.close()


@bp.errorhandler(NotFound)
def not_found(exc: NotFound) -> tuple[str, int]:
    page = render_template(
        "error.html",
        title="Not found",
        message=exc.description or "There is nothing here.",
        link_url=url_for("admin_console.index"),
        link_text="Back to the console",
    )
    return page, 404


def signed_in_admin() -> User:
    """The admin this request was admitted for (``admit_admins_only``)."""
    admin: User = g.console_admin
    return admin


# The routes register themselves on ``bp``.
from authserver.http.admin_console import clients, users  # noqa: E402

__all__ = ["bp", "clients", "signed_in_admin", "users"]
