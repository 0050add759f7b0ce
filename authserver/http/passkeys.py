"""Passkey pages and their ceremony endpoints (``services/passkeys.py`` has the rules).

The browser's side of WebAuthn runs in ``static/passkeys.js``: it asks one of the
``.../options`` endpoints for the options, hands them to ``navigator.credentials``, and posts
the answer back as JSON. These are browser endpoints of the pages, not an API: same origin
(the cross-site check of ``http/web.py`` applies, as to every page under /login and
/account), CSRF-protected by the page's token in the ``X-CSRFToken`` header, and every
refusal is JSON ``{"error", "error_description"}`` (with ``redirect`` when the page must
send the user to sign in again), never a 500.

- ``POST /login/passkey/options``, ``POST /login/passkey``: sign in without a password;
- ``POST /login/second-factor/passkey/options``, ``POST /login/second-factor/passkey``: the
  second step after the password, with the half-done sign-in's cookie;
- ``POST /account/passkeys/options``, ``POST /account/passkeys``: add one (recent sign-in);
- ``POST /account/passkeys/<id>/rename``, ``POST /account/passkeys/<id>/remove``: forms of
  the account page (recent sign-in).
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from flask_babel import gettext

from authserver.db import db
from authserver.errors import NotFound
from authserver.http.rate_limits import is_trusted_device, per_ip, remember_device
from authserver.http.two_step import (
    clear_second_step_cookie,
    give_the_second_factor,
    second_step_cookie_name,
)
from authserver.http.web import (
    current_browser_session,
    safe_next,
    see_other,
    session_policy,
    set_session_cookie,
)
from authserver.models import BrowserSession
from authserver.request_context import request_context
from authserver.runtime import runtime
from authserver.services import passkeys
from authserver.services.browser_sessions import StartedSession
from authserver.services.second_factor_enrolment import SecondFactorNeeded, SignInTooOld
from authserver.services.second_factors import SecondStepExpired, user_of_second_step
from authserver.services.sign_in_throttle import throttle_account

bp = Blueprint("passkeys", __name__)

ACCOUNT_SECTION = "/account#passkeys"


def _json(body: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _options(options_json: str) -> Response:
    response = Response(options_json, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def _refused(exc: passkeys.PasskeyRefused) -> Response:
    return _json({"error": "passkey_refused", "error_description": exc.description}, 400)


def _throttled(exc: passkeys.PasskeyThrottled) -> Response:
    response = _json(
        {
            "error": "too_many_attempts",
            "error_description": gettext(
                "Too many refused passkeys. Try again in %(seconds)s seconds.",
                seconds=exc.retry_after,
            ),
        },
        429,
    )
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _sign_in_first(target: str, description: str) -> Response:
    return _json(
        {
            "error": "login_required",
            "error_description": description,
            "redirect": url_for("pages.login_form", next=target, prompt="login"),
        },
        401,
    )


def _second_factor_first(browser_session: BrowserSession) -> Response:
    """A session that signed in without the account's second factor: the page is sent to
    the code's page (the half-done sign-in's cookie set here), then back to the passkeys."""
    redirect_to = give_the_second_factor(browser_session, ACCOUNT_SECTION)
    response = _json(
        {
            "error": "second_factor_required",
            "error_description": gettext("Give your second factor to change your passkeys."),
            "redirect": redirect_to.headers["Location"],
        },
        401,
    )
    for cookie in redirect_to.headers.getlist("Set-Cookie"):
        response.headers.add("Set-Cookie", cookie)
    return response


def _body() -> dict[str, Any]:
    body = passkeys.parse_body(request.get_data(cache=False))
    if not isinstance(body, dict):
        raise passkeys.PasskeyRefused()
    return body


def _signed_in(started: StartedSession, target: str) -> Response:
    rt = runtime()
    response = _json({"redirect": target})
    set_session_cookie(response, started.token, rt.config)
    remember_device(response, throttle_account(started.session.user.email))
    return response


# -- signing in ----------------------------------------------------------------------------


@bp.post("/login/passkey/options")
@per_ip["signin"]
def sign_in_options() -> Response:
    rt = runtime()
    return _options(
        passkeys.sign_in_options(db.session, passkeys.relying_party(rt.config), rt.now())
    )


@bp.post("/login/passkey")
@per_ip["signin"]
def sign_in() -> Response:
    rt = runtime()
    try:
        body = _body()
        target = safe_next(body.get("next") if isinstance(body.get("next"), str) else None)
        started = passkeys.sign_in_with_passkey(
            db.session,
            passkeys.relying_party(rt.config),
            rt.throttle_policy,
            session_policy(rt.config),
            rt.notices,
            body.get("credential"),
            context=request_context(),
            is_trusted_device=lambda email: is_trusted_device(throttle_account(email)),
            previous=current_browser_session(),
        )
    except passkeys.PasskeyThrottled as throttled:
        return _throttled(throttled)
    except passkeys.PasskeyRefused as refused:
        return _refused(refused)
    return _signed_in(started, target)


def _second_step_token() -> str:
    return request.cookies.get(second_step_cookie_name(runtime().config), "")


def _second_step_gone(target: str) -> Response:
    response = _json(
        {
            "error": "login_required",
            "error_description": gettext("That sign-in took too long. Sign in again."),
            "redirect": url_for("pages.login_form", next=target, expired=1),
        },
        401,
    )
    clear_second_step_cookie(response, runtime().config)
    return response


@bp.post("/login/second-factor/passkey/options")
@per_ip["signin"]
def second_step_options() -> Response:
    rt = runtime()
    try:
        options = passkeys.second_step_options(
            db.session, passkeys.relying_party(rt.config), _second_step_token(), rt.now()
        )
    except SecondStepExpired:
        return _second_step_gone("/account")
    return _options(options)


@bp.post("/login/second-factor/passkey")
@per_ip["signin"]
def second_step() -> Response:
    rt = runtime()
    target = "/account"
    try:
        body = _body()
        target = safe_next(body.get("next") if isinstance(body.get("next"), str) else None)
        token = _second_step_token()
        user = user_of_second_step(db.session, token, rt.now())
        started = passkeys.complete_second_step_with_passkey(
            db.session,
            passkeys.relying_party(rt.config),
            rt.throttle_policy,
            session_policy(rt.config),
            rt.notices,
            body.get("credential"),
            token=token,
            context=request_context(),
            trusted_device=is_trusted_device(throttle_account(user.email)),
            previous=current_browser_session(),
        )
    except SecondStepExpired:
        return _second_step_gone(target)
    except passkeys.PasskeyThrottled as throttled:
        return _throttled(throttled)
    except passkeys.PasskeyRefused as refused:
        return _refused(refused)
    response = _signed_in(started, target)
    clear_second_step_cookie(response, rt.config)
    return response


# -- the account page ----------------------------------------------------------------------


def _not_signed_in() -> Response:
    return _json(
        {
            "error": "login_required",
            "error_description": gettext("Sign in first."),
            "redirect": url_for("pages.login_form", next="/account"),
        },
        401,
    )


@bp.post("/account/passkeys/options")
def registration_options() -> Response:
    browser_session = current_browser_session()
    if browser_session is None:
        return _not_signed_in()
    rt = runtime()
    try:
        options = passkeys.registration_options(
            db.session, passkeys.relying_party(rt.config), browser_session, rt.now()
        )
    except SecondFactorNeeded:
        return _second_factor_first(browser_session)
    except SignInTooOld:
        return _sign_in_first(ACCOUNT_SECTION, gettext("Sign in again to add a passkey."))
    return _options(options)


@bp.post("/account/passkeys")
def register() -> Response:
    browser_session = current_browser_session()
    if browser_session is None:
        return _not_signed_in()
    rt = runtime()
    try:
        body = _body()
        name = body.get("name")
        passkey = passkeys.register_passkey(
            db.session,
            passkeys.relying_party(rt.config),
            rt.notices,
            browser_session,
            body.get("credential"),
            name if isinstance(name, str) else None,
            request_context(),
        )
    except SecondFactorNeeded:
        return _second_factor_first(browser_session)
    except SignInTooOld:
        return _sign_in_first(ACCOUNT_SECTION, gettext("Sign in again to add a passkey."))
    except passkeys.PasskeyRefused as refused:
        return _refused(refused)
    return _json({"id": str(passkey.id), "name": passkey.name, "redirect": ACCOUNT_SECTION})


def _sign_in_again() -> Response:
    return see_other(url_for("pages.login_form", next=ACCOUNT_SECTION, prompt="login"))


@bp.post("/account/passkeys/<uuid:passkey_id>/rename")
def rename(passkey_id: uuid.UUID) -> Response:
    browser_session = current_browser_session()
    if browser_session is None:
        return see_other(url_for("pages.login_form", next="/account"))
    try:
        passkeys.rename_passkey(
            db.session,
            browser_session,
            passkey_id,
            request.form.get("name", "")[:1000],
            request_context(),
        )
    except SecondFactorNeeded:
        return give_the_second_factor(browser_session, ACCOUNT_SECTION)
    except SignInTooOld:
        return _sign_in_again()
    except NotFound:
        pass  # gone already, or never this account's: the list shows what there is
    return see_other(ACCOUNT_SECTION)


@bp.post("/account/passkeys/<uuid:passkey_id>/remove")
def remove(passkey_id: uuid.UUID) -> Response:
    browser_session = current_browser_session()
    if browser_session is None:
        return see_other(url_for("pages.login_form", next="/account"))
    try:
        passkeys.remove_passkey(
            db.session, runtime().notices, browser_session, passkey_id, request_context()
        )
    except SecondFactorNeeded:
        return give_the_second_factor(browser_session, ACCOUNT_SECTION)
    except SignInTooOld:
        return _sign_in_again()
    except NotFound:
        pass
    return see_other(ACCOUNT_SECTION)
