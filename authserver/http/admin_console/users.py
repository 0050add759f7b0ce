"""The console's account pages: find an account by its address, and one account's page
(its details, where it is signed in, its audit trail) with what support staff do to it:
sign out one session or everywhere, disable or enable, mail a reset link."""

from __future__ import annotations

import unicodedata
import uuid

from flask import Response, flash, render_template, request, url_for

from authserver.db import db
from authserver.errors import AuthServerError
from authserver.http.admin_console import bp, signed_in_admin
from authserver.http.audit import audit
from authserver.http.web import see_other
from authserver.runtime import runtime
from authserver.services import account_administration as accounts
from authserver.services import users as user_service
from authserver.services.audit import AuditEventType, find_events
from authserver.services.browser_sessions import end_user_sessions, list_devices, revoke_device
from authserver.services.factor_status import has_second_factor
from authserver.services.password_reset import reset_settings, send_reset_link
from authserver.services.refresh_tokens import RevocationReason

USERS_PER_PAGE = 25
EVENTS_PER_PAGE = 25
# What the search box and the cursors take: an address is at most 254 characters.
MAX_QUERY_LENGTH = 254
# Event ids are PostgreSQL bigints: 18 digits always fit.
MAX_EVENT_ID_DIGITS = 18


def _could_be_in_an_address(text: str) -> bool:
    # A control character (NUL above all, which PostgreSQL text cannot hold) is in no
    # stored address, and no address is longer than 254 characters.
    return len(text) <= MAX_QUERY_LENGTH and not any(
        unicodedata.category(char) == "Cc" for char in text
    )


def _bad_request(message: str) -> tuple[str, int]:
    page = render_template("error.html", title="Bad request", message=message)
    return page, 400


@bp.get("")
def index() -> str | tuple[str, int]:
    """Accounts in address order, those whose address contains ``q``, a page at a time:
    ``after`` is the last address of the previous page (a keyset, so accounts created
    meanwhile neither shift nor repeat a page)."""
    search = request.args.get("q", "").strip()
    after = request.args.get("after") or None
    if not _could_be_in_an_address(search) or not _could_be_in_an_address(after or ""):
        return _bad_request("No address is that long or holds control characters.")
    found = user_service.list_users(
        db.session, search=search or None, after=after, limit=USERS_PER_PAGE + 1
    )
    users = found[:USERS_PER_PAGE]
    next_url = (
        url_for(".index", q=search or None, after=users[-1].email)
        if len(found) > USERS_PER_PAGE
        else None
    )
    return render_template(
        "admin/index.html",
        search=search,
        users=users,
        next_url=next_url,
        first_url=url_for(".index", q=search or None) if after else None,
    )


@bp.get("/users/<uuid:user_id>")
def user_page(user_id: uuid.UUID) -> str | tuple[str, int]:
    """The account, where it is signed in, and its audit trail newest first; ``before`` is
    the id of the last event of the previous page of the trail."""
    raw_before = request.args.get("before")
    if raw_before is not None and not (
        raw_before.isascii() and raw_before.isdigit() and len(raw_before) <= MAX_EVENT_ID_DIGITS
    ):
        return _bad_request("The page of the trail asked for is not one this page links to.")
    before = int(raw_before) if raw_before is not None else None
    user = accounts.get_user(db.session, user_id)
    events = find_events(db.session, limit=EVENTS_PER_PAGE + 1, before_id=before, user_id=user.id)
    shown = events[:EVENTS_PER_PAGE]
    older_url = (
        url_for(".user_page", user_id=user.id, before=shown[-1].id, _anchor="trail")
        if len(events) > EVENTS_PER_PAGE
        else None
    )
    actor_ids = {event.details.get("actor_user_id") for event in shown} - {None}
    addresses = accounts.addresses_of(db.session, {uuid.UUID(str(id_)) for id_ in actor_ids})
    return render_template(
        "admin/user.html",
        actors={str(user_id): email for user_id, email in addresses.items()},
        user=user,
        is_self=user.id == signed_in_admin().id,
        second_factor=has_second_factor(db.session, user),
        devices=list_devices(db.session, user.id, runtime().now()),
        events=shown,
        older_url=older_url,
        newest_url=url_for(".user_page", user_id=user.id, _anchor="trail") if before else None,
    )


def _back_to(user_id: uuid.UUID, anchor: str | None = None) -> Response:
    return see_other(url_for(".user_page", user_id=user_id, _anchor=anchor))


@bp.post("/users/<uuid:user_id>/sessions/<uuid:device_id>/sign-out")
def sign_out_session(user_id: uuid.UUID, device_id: uuid.UUID) -> Response:
    """End one browser session or revoke one app's refresh family of this account."""
    user = accounts.get_user(db.session, user_id)
    if revoke_device(db.session, user.id, device_id, runtime().now()):
        audit(AuditEventType.LOGOUT, user_id=user.id, reason="signed_out_by_admin")
        flash("Signed out of that session.", "status")
    else:
        flash("That session had ended already.", "error")
    return _back_to(user.id, "sessions")


@bp.post("/users/<uuid:user_id>/sign-out-everywhere")
def sign_out_everywhere(user_id: uuid.UUID) -> Response:
    """Every browser session and app of the account, and the access tokens issued before
    now (through the revocation feed), as the account page's own "everywhere" does."""
    user = accounts.get_user(db.session, user_id)
    sessions, families = end_user_sessions(
        db.session, user.id, RevocationReason.LOGOUT_EVERYWHERE, runtime().now()
    )
    audit(
        AuditEventType.LOGOUT_EVERYWHERE,
        user_id=user.id,
        reason="signed_out_by_admin",
        sessions_ended=sessions,
        families_revoked=families,
    )
    flash(
        f"Signed {user.email} out everywhere: {sessions} browser "
        f"session{'' if sessions == 1 else 's'} ended, {families} "
        f"app{'' if families == 1 else 's'} signed out.",
        "status",
    )
    return _back_to(user.id, "sessions")


@bp.post("/users/<uuid:user_id>/disable")
def disable_user(user_id: uuid.UUID) -> Response:
    """Disable the account: it cannot sign in, and everything it is signed in to ends."""
    user = accounts.get_user(db.session, user_id)
    if user.id == signed_in_admin().id:
        # It would lock this admin out of the console in mid-task; another admin or the
        # command line can.
        flash("You cannot disable your own account from the console.", "error")
    elif user.disabled:
        flash("The account is disabled already.", "error")
    else:
        user_service.disable_user(db.session, user.email, runtime().now())
        flash(f"{user.email} is disabled and signed out everywhere.", "status")
    return _back_to(user.id)


@bp.post("/users/<uuid:user_id>/enable")
def enable_user(user_id: uuid.UUID) -> Response:
    user = accounts.get_user(db.session, user_id)
    if not user.disabled:
        flash("The account is not disabled.", "error")
    else:
        user_service.enable_user(db.session, user.email, runtime().now())
        flash(f"{user.email} can sign in again.", "status")
    return _back_to(user.id)


@bp.post("/users/<uuid:user_id>/reset-link")
def send_reset(user_id: uuid.UUID) -> Response:
    """Mail the account the link "Forgot password?" sends (``users send-reset``)."""
    rt = runtime()
    user = accounts.get_user(db.session, user_id)
    settings = reset_settings(rt.config)
    try:
        send_reset_link(db.session, rt.composer, settings, user.email, rt.now())
    except AuthServerError as refused:
        flash(f"No link was sent: {refused.description}.", "error")
        return _back_to(user.id)
    minutes = int(settings.ttl.total_seconds() // 60)
    flash(
        f"A reset link is on its way to {user.email}. It works once, for {minutes} minutes.",
        "status",
    )
    return _back_to(user.id)
