"""Two-step sign-in pages: the code's page after the password (``/login/second-factor``), and
the account page's setup of an authenticator app, its recovery codes and turning it off
(``/account/two-step``). The rules are in services/second_factors.py and
services/second_factor_enrolment.py; these parse, call one of them and answer.

Between the two steps the browser holds a cookie naming the half-done sign-in (256 bits; the
database keeps its digest, ``account_links`` purpose ``second_factor``): HttpOnly, SameSite
Lax, ``__Host-`` in production, alive SECOND_STEP_TTL (five minutes), and worth nothing
without the code.
"""

from __future__ import annotations

import segno
from flask import Blueprint, Response, render_template, request, url_for
from flask_babel import gettext
from markupsafe import Markup

from authserver.config import Config
from authserver.db import db
from authserver.http.rate_limits import is_trusted_device, remember_device
from authserver.http.web import (
    current_browser_session,
    safe_next,
    see_other,
    session_policy,
    set_session_cookie,
)
from authserver.models import BrowserSession, User
from authserver.request_context import request_context
from authserver.runtime import runtime
from authserver.services import totp
from authserver.services.factor_status import has_passkey
from authserver.services.second_factor_enrolment import (
    SecondFactorNeeded,
    SignInTooOld,
    begin_totp,
    confirm_totp,
    regenerate_recovery_codes,
    turn_off,
)
from authserver.services.second_factors import (
    SecondFactorThrottled,
    SecondStepExpired,
    WrongCode,
    complete_second_factor,
    user_of_second_step,
)
from authserver.services.sign_in import SECOND_STEP_TTL, begin_second_step
from authserver.services.sign_in_throttle import throttle_account

bp = Blueprint("two_step", __name__)

SECOND_STEP_PATH = "/login/second-factor"
SETUP_PATH = "/account/two-step"
ACCOUNT = "/account"


def second_step_cookie_name(config: Config) -> str:
    return "__Host-authserver-second-step" if config.secure_cookies else "authserver_second_step"


def set_second_step_cookie(response: Response, token: str, config: Config) -> None:
    response.set_cookie(
        second_step_cookie_name(config),
        token,
        max_age=int(SECOND_STEP_TTL.total_seconds()),
        path="/",
        secure=config.secure_cookies,
        httponly=True,
        samesite="Lax",
    )


def clear_second_step_cookie(response: Response, config: Config) -> None:
    response.delete_cookie(
        second_step_cookie_name(config),
        path="/",
        secure=config.secure_cookies,
        httponly=True,
        samesite="Lax",
    )


def _start_again(target: str) -> Response:
    """The half-done sign-in is gone (expired, used, never there): back to the password."""
    response = see_other(url_for("pages.login_form", next=target, expired=1))
    clear_second_step_cookie(response, runtime().config)
    return response


def _code_page(target: str, user: User, recovery: bool, error: str | None = None) -> str:
    # An account may have an app, passkeys or both: the page offers what it has.
    return render_template(
        "second_factor.html",
        next=target,
        email=user.email,
        recovery=recovery,
        error=error,
        has_app=totp.has_confirmed_totp(db.session, user),
        has_passkey=has_passkey(db.session, user),
    )


@bp.get(SECOND_STEP_PATH)
def second_step_form() -> str | Response:
    target = safe_next(request.args.get("next"))
    token = request.cookies.get(second_step_cookie_name(runtime().config), "")
    try:
        user = user_of_second_step(db.session, token, runtime().now())
    except SecondStepExpired:
        return _start_again(target)
    return _code_page(target, user, recovery=request.args.get("recovery") == "1")


@bp.post(SECOND_STEP_PATH)
def second_step() -> str | tuple[str, int] | tuple[str, int, dict[str, str]] | Response:
    rt = runtime()
    target = safe_next(request.form.get("next"))
    recovery = request.form.get("recovery") == "1"
    token = request.cookies.get(second_step_cookie_name(rt.config), "")
    try:
        user = user_of_second_step(db.session, token, rt.now())
        account = throttle_account(user.email)
        started = complete_second_factor(
            db.session,
            rt.key_cipher,
            rt.throttle_policy,
            session_policy(rt.config),
            rt.notices,
            token=token,
            code=request.form.get("code", "")[:200],
            context=request_context(),
            trusted_device=is_trusted_device(account),
            previous=current_browser_session(),
        )
    except SecondStepExpired:
        return _start_again(target)
    except SecondFactorThrottled as throttled:
        error = gettext(
            "Too many wrong codes. Try again in %(seconds)s seconds.",
            seconds=throttled.retry_after,
        )
        page = _code_page(target, user, recovery, error)
        return page, 429, {"Retry-After": str(throttled.retry_after)}
    except WrongCode:
        error = (
            gettext("That recovery code is not right, or it was used before.")
            if recovery
            else gettext("That code is not right. Type the newest code from your app.")
        )
        return _code_page(target, user, recovery, error), 400
    response = see_other(target)
    clear_second_step_cookie(response, rt.config)
    set_session_cookie(response, started.token, rt.config)
    remember_device(response, account)
    return response


# -- the account page's setup -------------------------------------------------------------


def _sign_in_again(target: str) -> Response:
    return see_other(url_for("pages.login_form", next=target, prompt="login"))


def give_the_second_factor(browser_session: BrowserSession, target: str) -> Response:
    """A session without the account's second factor: the code's page, for the code only
    (a new session follows, with both factors and a fresh auth_time), then back here."""
    rt = runtime()
    pending = begin_second_step(db.session, browser_session.user, rt.now())
    response = see_other(url_for("two_step.second_step_form", next=target))
    set_second_step_cookie(response, pending.token, rt.config)
    return response


def _qr_svg(uri: str) -> Markup:
    # The SVG holds segno's own path data only (the URI is encoded in it, not written as
    # text): safe to inline.
    svg = segno.make(uri, error="m").svg_inline(scale=4, border=2, dark="#000", light="#fff")
    return Markup(svg)  # noqa: S704


def _setup_page(enrolment: totp.TotpEnrolment, target: str, error: str | None = None) -> str:
    grouped = " ".join(enrolment.secret[i : i + 4] for i in range(0, len(enrolment.secret), 4))
    return render_template(
        "two_step_setup.html",
        qr=_qr_svg(enrolment.uri),
        manual_key=grouped,
        error=error,
        next=target,
    )


def _setup_path(target: str) -> str:
    """This page again, keeping where to go once it is done (an authorization request that
    needs two factors sends the user here first)."""
    return url_for("two_step.setup_form", next=target) if target != ACCOUNT else SETUP_PATH


@bp.get(SETUP_PATH)
def setup_form() -> str | tuple[str, int] | Response:
    target = safe_next(request.args.get("next"), ACCOUNT)
    browser_session = current_browser_session()
    if browser_session is None:
        return see_other(url_for("pages.login_form", next=_setup_path(target)))
    rt = runtime()
    try:
        enrolment = begin_totp(
            db.session, rt.key_cipher, browser_session, rt.now(), issuer=rt.config.product_name
        )
    except SecondFactorNeeded:
        return give_the_second_factor(browser_session, _setup_path(target))
    except SignInTooOld:
        return _sign_in_again(_setup_path(target))
    except totp.TotpAlreadyEnrolled:
        return see_other(target if target != ACCOUNT else ACCOUNT + "#two-step")
    return _setup_page(enrolment, target)


@bp.post(SETUP_PATH)
def setup() -> str | tuple[str, int] | Response:
    target = safe_next(request.form.get("next"), ACCOUNT)
    browser_session = current_browser_session()
    if browser_session is None:
        return see_other(url_for("pages.login_form", next=_setup_path(target)))
    rt = runtime()
    try:
        codes = confirm_totp(
            db.session,
            rt.key_cipher,
            rt.notices,
            browser_session,
            request.form.get("code", "")[:200],
            request_context(),
        )
    except SecondFactorNeeded:
        return give_the_second_factor(browser_session, _setup_path(target))
    except SignInTooOld:
        return _sign_in_again(_setup_path(target))
    except totp.NoTotpEnrolment:
        return see_other(_setup_path(target))
    if codes is None:
        pending = totp.pending_enrolment(
            db.session, rt.key_cipher, browser_session.user, issuer=rt.config.product_name
        )
        if pending is None:
            return see_other(_setup_path(target))
        error = gettext("That code is not right. Type the code your app shows now.")
        return _setup_page(pending, target, error), 400
    return render_template("recovery_codes.html", codes=codes, first=True, next=target)


@bp.post(SETUP_PATH + "/recovery-codes")
def new_recovery_codes() -> str | tuple[str, int] | Response:
    browser_session = current_browser_session()
    if browser_session is None:
        return see_other(url_for("pages.login_form", next="/account"))
    try:
        codes = regenerate_recovery_codes(
            db.session, runtime().notices, browser_session, request_context()
        )
    except SecondFactorNeeded:
        return give_the_second_factor(browser_session, "/account#two-step")
    except SignInTooOld:
        return _sign_in_again("/account#two-step")
    except totp.NoTotpEnrolment:
        return see_other(url_for("pages.account") + "#two-step")
    return render_template("recovery_codes.html", codes=codes, first=False, next=ACCOUNT)


@bp.post(SETUP_PATH + "/off")
def turn_off_page() -> Response:
    browser_session = current_browser_session()
    if browser_session is None:
        return see_other(url_for("pages.login_form", next="/account"))
    try:
        turn_off(db.session, runtime().notices, browser_session, request_context())
    except SecondFactorNeeded:
        return give_the_second_factor(browser_session, "/account#two-step")
    except SignInTooOld:
        return _sign_in_again("/account#two-step")
    return see_other(url_for("pages.account") + "#two-step")


def ask_for_second_factor(
    browser_session: BrowserSession, next_url: str, *, has_factor: bool
) -> Response:
    """Where a request that needs two factors sends a session that gave one: the second
    step's page (no password again), with ``next_url`` to come back to; for a user with no
    second factor, setting one up first."""
    if not has_factor:
        return see_other(url_for("two_step.setup_form", next=next_url))
    return give_the_second_factor(browser_session, next_url)
