"""Pages reached from the mail: "Forgot password?" and the reset link.

The reset link carries its token in the query string, so the page that opens it is served
like every page with ``Referrer-Policy: no-referrer`` (no link or resource on it hands the
token on) and ``Cache-Control: no-store``; gunicorn's access log leaves query strings out
(``gunicorn.conf.py``), and so does the development server's (``cli.serve``)."""

from __future__ import annotations

from flask import Blueprint, Response, render_template, request, url_for
from flask_babel import gettext
from werkzeug.exceptions import TooManyRequests

from authserver.db import db
from authserver.errors import ValidationError
from authserver.http.rate_limits import (
    per_email_password_reset,
    per_ip_password_reset,
    too_many_requests_page,
)
from authserver.http.web import clear_session_cookie
from authserver.request_context import request_context
from authserver.runtime import runtime
from authserver.services.password_reset import (
    FORGOT_PATH,
    RESET_PATH,
    InvalidLink,
    ResetSettings,
    complete_password_reset,
    request_password_reset,
    reset_settings,
    user_of_reset_link,
)

bp = Blueprint("recovery", __name__)


def _settings() -> ResetSettings:
    return reset_settings(runtime().config)


@bp.get(FORGOT_PATH)
def forgot_form() -> str:
    return render_template("password_forgot.html")


@bp.post(FORGOT_PATH)
@per_ip_password_reset
@per_email_password_reset
def forgot() -> str:
    """The same page for every address, registered or not (services/password_reset.py)."""
    request_password_reset(
        db.session,
        runtime().composer,
        _settings(),
        email=request.form.get("email", "")[:1000],
        context=request_context(),
    )
    return render_template("password_forgot_sent.html")


def _invalid_link() -> tuple[str, int]:
    page = render_template(
        "error.html",
        title=gettext("This link does not work"),
        message=gettext(
            "Reset links work once, for a limited time, and only the newest one you were "
            "sent. Ask for a new one."
        ),
        link_url=url_for("recovery.forgot_form"),
        link_text=gettext("Ask for a new link"),
    )
    return page, 400


def _reset_page(token: str, email: str, error: str | None = None) -> str:
    return render_template(
        "password_reset.html",
        token=token,
        email=email,
        error=error,
        password_policy=runtime().password_policy,
    )


@bp.get(RESET_PATH)
def reset_form() -> str | tuple[str, int]:
    token = request.args.get("token", "")
    try:
        user = user_of_reset_link(db.session, token, runtime().now())
    except InvalidLink:
        return _invalid_link()
    return _reset_page(token, user.email)


@bp.post(RESET_PATH)
def reset() -> str | tuple[str, int] | Response:
    rt = runtime()
    token = request.form.get("token", "")
    new_password = request.form.get("new_password", "")
    try:
        if new_password != request.form.get("confirm_password", ""):
            raise ValidationError(gettext("The two passwords are not the same."))
        complete_password_reset(
            db.session,
            rt.hasher,
            token=token,
            new_password=new_password,
            password_policy=rt.password_policy,
            notices=rt.notices,
            context=request_context(),
        )
    except InvalidLink:
        return _invalid_link()
    except ValidationError as exc:
        # The policy refused the password: the link is still unused, the form comes again.
        try:
            user = user_of_reset_link(db.session, token, rt.now())
        except InvalidLink:
            return _invalid_link()
        return _reset_page(token, user.email, exc.description), 400
    # Every session of the user ended, this browser's too (if it had one): its cookie goes.
    response = Response(render_template("password_reset_done.html"))
    clear_session_cookie(response, rt.config)
    return response


@bp.errorhandler(TooManyRequests)
def too_many_requests(exc: TooManyRequests) -> tuple[str, int, dict[str, str]]:
    return too_many_requests_page(
        gettext(
            "Too many password resets were asked for from here or for this address. "
            "Wait a while and try again."
        )
    )
