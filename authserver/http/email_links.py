"""Pages the address links open: verifying the address, and confirming an address change.

Like the password reset page (``http/recovery.py``), each link's token rides in the query
string, so these are pages (``web.PAGE_PREFIXES``: ``Referrer-Policy: no-referrer``,
``Cache-Control: no-store``). A GET only shows a button; the POST, with the token in its
form and the page's CSRF token, does the work: mail scanners follow links with GET. The link
may be opened in a browser that is not signed in; the CSRF token is then bound to "no browser
session" (``web.bind_csrf_to_browser_session``), as on the sign-in page."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, render_template, request, url_for
from flask_babel import gettext

from authserver.db import db
from authserver.request_context import request_context
from authserver.runtime import runtime
from authserver.services.email_change import AddressTaken, change_of_link, complete_email_change
from authserver.services.email_verification import (
    EmailLinkSettings,
    complete_email_verification,
    user_of_verification_link,
)
from authserver.services.password_reset import InvalidLink

bp = Blueprint("email_links", __name__)


def invalid_link_page() -> tuple[str, int]:
    page = render_template(
        "error.html",
        title=gettext("This link does not work"),
        message=gettext(
            "Address links work once, for a limited time, only the newest one you were "
            "sent, and only while the account's address is the one they were sent for. Ask "
            "for a new one on your account page."
        ),
        link_url=url_for("pages.account"),
        link_text=gettext("Go to your account"),
    )
    return page, 400


@bp.get("/email/verify")
def verify_form() -> str | tuple[str, int]:
    token = request.args.get("token", "")
    try:
        user = user_of_verification_link(db.session, token, runtime().now())
    except InvalidLink:
        return invalid_link_page()
    return render_template("email_verify.html", token=token, email=user.email)


@bp.post("/email/verify")
def verify() -> str | tuple[str, int]:
    try:
        user = complete_email_verification(
            db.session, token=request.form.get("token", ""), context=request_context()
        )
    except InvalidLink:
        return invalid_link_page()
    return render_template("email_verified.html", email=user.email, changed=False)


@bp.get("/email/change")
def change_form() -> str | tuple[str, int]:
    token = request.args.get("token", "")
    try:
        _, new_email = change_of_link(db.session, token, runtime().now())
    except InvalidLink:
        return invalid_link_page()
    return render_template("email_change_confirm.html", token=token, new_email=new_email)


@bp.post("/email/change")
def change() -> str | tuple[str, int]:
    try:
        user = complete_email_change(
            db.session, token=request.form.get("token", ""), context=request_context()
        )
    except InvalidLink:
        return invalid_link_page()
    except AddressTaken:
        page = render_template(
            "error.html",
            title=gettext("The address was not changed"),
            message=gettext(
                "Another account has this address now (or one that looks the same), so "
                "your account keeps its address."
            ),
            link_url=url_for("pages.account"),
            link_text=gettext("Go to your account"),
        )
        return page, 409
    return render_template("email_verified.html", email=user.email, changed=True)


def email_link_settings() -> EmailLinkSettings:
    config = runtime().config
    return EmailLinkSettings(
        ttl=timedelta(seconds=config.email_verification_ttl),
        mails_per_hour=config.email_link_mails_per_hour,
        verify_url=config.issuer + url_for("email_links.verify_form"),
        change_url=config.issuer + url_for("email_links.change_form"),
        account_url=config.issuer + url_for("pages.account"),
        forgot_url=config.issuer + url_for("recovery.forgot_form"),
    )
