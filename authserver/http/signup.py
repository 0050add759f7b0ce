"""Pages of sign-up and invitations (``services/signup.py``): the sign-up page, and the page a
sign-up or invitation link opens to choose the password.

``/signup`` and everything under it exists only when AUTHSERVER_SIGNUP is ``open``: in the
other modes it is 404, like a path that never existed. ``/invitation`` exists in every mode;
its links work in ``open`` and ``invite``. Link pages carry their token in the query string,
and are served as the reset page is (``http/recovery.py``): ``Referrer-Policy: no-referrer``,
``Cache-Control: no-store``, no query string in the access logs. The forms carry the page's
CSRF token (Flask-WTF), bound to "no browser session" when the browser is not signed in."""

from __future__ import annotations

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for
from flask_babel import gettext
from werkzeug.exceptions import TooManyRequests

from authserver.db import db
from authserver.errors import ValidationError
from authserver.http.rate_limits import (
    per_email_signup,
    per_ip_signup,
    remember_device,
    too_many_requests_page,
)
from authserver.http.web import current_browser_session, session_policy, set_session_cookie
from authserver.request_context import request_context
from authserver.runtime import runtime
from authserver.services.account_links import LinkPurpose
from authserver.services.password_reset import InvalidLink
from authserver.services.sign_in_throttle import throttle_account
from authserver.services.signup import (
    INVITATION_PATH,
    SIGNUP_LINK_PATH,
    SIGNUP_PATH,
    AddressTaken,
    SignupSettings,
    address_of_link,
    complete_signup,
    request_signup,
    signup_settings,
)

bp = Blueprint("signup", __name__)


def settings() -> SignupSettings:
    return signup_settings(runtime().config)


# The sign-up page and its link's page: they exist only in open mode.
SIGNUP_PAGES = frozenset(
    {"signup.signup_form", "signup.signup", "signup.signup_link_form", "signup.accept_signup"}
)


def hide_closed_signup_pages() -> None:
    """404 for the sign-up pages outside open mode, for any request, like a path that does
    not exist. An app-wide hook, registered before the cross-site form and CSRF checks: after
    them, a form POST without a token would be refused as such (400), not as unknown."""
    if request.endpoint in SIGNUP_PAGES and not settings().page_open:
        abort(404)


def _signup_form(email: str = "", error: str | None = None) -> str:
    return render_template("signup.html", email=email, error=error)


@bp.get(SIGNUP_PATH)
def signup_form() -> str:
    return _signup_form()


@bp.post(SIGNUP_PATH)
@per_ip_signup
@per_email_signup
def signup() -> str | tuple[str, int]:
    """The same page for every address, whether or not it has an account."""
    typed = request.form.get("email", "")
    try:
        request_signup(
            db.session,
            runtime().composer,
            settings(),
            email=typed[:1000],
            context=request_context(),
        )
    except ValidationError as exc:
        # Only about what was typed (not an address): it tells nothing of any account.
        return _signup_form(typed[:254], exc.description), 400
    return render_template("signup_sent.html")


def _invalid_link(purpose: LinkPurpose) -> tuple[str, int]:
    if purpose is LinkPurpose.SIGNUP:
        message = gettext(
            "Sign-up links work once, for a limited time, and only the newest one you were "
            "sent. Ask for a new one."
        )
        link_url, link_text = url_for("signup.signup_form"), gettext("Ask for a new link")
    else:
        message = gettext(
            "Invitations work once, for a limited time, and only the newest one you were "
            "sent. Ask whoever invited you for a new one."
        )
        link_url, link_text = url_for("pages.login_form"), gettext("Go to sign in")
    page = render_template(
        "error.html",
        title=gettext("This link does not work"),
        message=message,
        link_url=link_url,
        link_text=link_text,
    )
    return page, 400


def _address_taken() -> tuple[str, int]:
    # Whoever sees this page holds a link mailed to the address: it tells them nothing new.
    page = render_template(
        "error.html",
        title=gettext("This address has an account"),
        message=gettext(
            "An account with this address (or one that looks the same) was made after this "
            "link was sent, so the link makes no other. Sign in to it; if you do not know its "
            "password, use \u201cForgot password?\u201d on the sign-in page."
        ),
        link_url=url_for("pages.login_form"),
        link_text=gettext("Go to sign in"),
    )
    return page, 409


def _password_page(purpose: LinkPurpose, token: str, email: str, error: str | None = None) -> str:
    endpoint = (
        "signup.accept_signup" if purpose is LinkPurpose.SIGNUP else "signup.accept_invitation"
    )
    return render_template(
        "signup_password.html",
        action=url_for(endpoint),
        invitation=purpose is LinkPurpose.INVITATION,
        token=token,
        email=email,
        error=error,
        password_policy=runtime().password_policy,
    )


def _show_link(purpose: LinkPurpose) -> str | tuple[str, int]:
    token = request.args.get("token", "")
    try:
        email = address_of_link(db.session, settings(), token, purpose, runtime().now())
    except AddressTaken:
        return _address_taken()
    except InvalidLink:
        return _invalid_link(purpose)
    return _password_page(purpose, token, email)


def _accept_link(purpose: LinkPurpose) -> str | tuple[str, int] | Response:
    rt = runtime()
    token = request.form.get("token", "")
    password = request.form.get("new_password", "")
    try:
        if password != request.form.get("confirm_password", ""):
            email = address_of_link(db.session, settings(), token, purpose, rt.now())
            error = gettext("The two passwords are not the same.")
            return _password_page(purpose, token, email, error), 400
        started = complete_signup(
            db.session,
            rt.hasher,
            settings(),
            session_policy(rt.config),
            token=token,
            purpose=purpose,
            password=password,
            password_policy=rt.password_policy,
            context=request_context(),
            previous=current_browser_session(),
        )
    except AddressTaken:
        return _address_taken()
    except InvalidLink:
        return _invalid_link(purpose)
    except ValidationError as exc:
        # The policy refused the password: the link is still unused, the form comes again.
        try:
            email = address_of_link(db.session, settings(), token, purpose, rt.now())
        except InvalidLink:
            return _invalid_link(purpose)
        return _password_page(purpose, token, email, exc.description), 400
    response: Response = redirect(url_for("pages.account"), code=303)  # type: ignore[assignment]
    set_session_cookie(response, started.token, rt.config)
    # As after a sign-in: this browser is the account's device (the sign-in throttle's and
    # the new-device notice's), so signing in here again later is not "a new device".
    remember_device(response, throttle_account(started.session.user.email))
    return response


@bp.get(SIGNUP_LINK_PATH)
def signup_link_form() -> str | tuple[str, int]:
    return _show_link(LinkPurpose.SIGNUP)


@bp.post(SIGNUP_LINK_PATH)
def accept_signup() -> str | tuple[str, int] | Response:
    return _accept_link(LinkPurpose.SIGNUP)


@bp.get(INVITATION_PATH)
def invitation_form() -> str | tuple[str, int]:
    return _show_link(LinkPurpose.INVITATION)


@bp.post(INVITATION_PATH)
def accept_invitation() -> str | tuple[str, int] | Response:
    return _accept_link(LinkPurpose.INVITATION)


@bp.errorhandler(TooManyRequests)
def too_many_requests(exc: TooManyRequests) -> tuple[str, int, dict[str, str]]:
    return too_many_requests_page(
        gettext(
            "Too many sign-ups were asked for from here or for this address. Wait a while "
            "and try again."
        )
    )
