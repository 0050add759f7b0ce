"""Server-rendered pages: sign in, sign out, and the account page (where you are signed in,
the password, the address, deleting the account)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, render_template, request, url_for
from flask_babel import gettext

from authserver.db import db
from authserver.errors import ValidationError
from authserver.http.audit import audit
from authserver.http.device_names import app_name, browser_name
from authserver.http.email_links import email_link_settings
from authserver.http.rate_limits import is_trusted_device, per_account, per_ip, remember_device
from authserver.http.two_step import set_second_step_cookie
from authserver.http.web import (
    clear_session_cookie,
    current_browser_session,
    safe_next,
    see_other,
    session_policy,
    set_session_cookie,
)
from authserver.request_context import request_context
from authserver.runtime import runtime
from authserver.services.audit import AuditEventType
from authserver.services.browser_sessions import (
    Device,
    end_session,
    end_user_sessions,
    list_devices,
    revoke_device,
)
from authserver.services.email_change import request_email_change
from authserver.services.email_verification import TooManyLinks, send_verification_link
from authserver.services.own_account import (
    Confirmation,
    ConfirmationThrottled,
    change_own_password,
    delete_own_account,
)
from authserver.services.passkeys import list_passkeys
from authserver.services.recovery_codes import remaining_count
from authserver.services.refresh_tokens import RevocationReason
from authserver.services.sign_in import (
    PendingSecondFactor,
    SignInFailed,
    SignInThrottled,
    sign_in_browser,
)
from authserver.services.sign_in_throttle import throttle_account
from authserver.services.signup import signup_settings
from authserver.services.totp import has_confirmed_totp

bp = Blueprint("pages", __name__)


def _login_page(
    target: str, email: str = "", error: str | None = None, *, password_error: bool = False
) -> str:
    """``password_error``: the error is about what was typed as the password; the field takes
    the focus and is tied to the message (aria-invalid, aria-describedby; WCAG 2.2 SC 3.3.1)."""
    # "Create an account" only where the sign-up page exists (AUTHSERVER_SIGNUP=open).
    return render_template(
        "login.html",
        next=target,
        email=email,
        error=error,
        password_error=password_error,
        signup_open=signup_settings(runtime().config).page_open,
    )


@bp.get("/login")
def login_form() -> str | Response:
    target = safe_next(request.args.get("next"))
    if current_browser_session() is not None and request.args.get("prompt") != "login":
        return see_other(target)
    # Back from a code's page whose half-done sign-in ended (five minutes, or used).
    expired = (
        gettext("That sign-in took too long. Sign in again.")
        if request.args.get("expired")
        else None
    )
    return _login_page(target, error=expired)


@bp.post("/login")
@per_ip["signin"]
@per_account
def login() -> tuple[str, int] | tuple[str, int, dict[str, str]] | Response:
    rt = runtime()
    target = safe_next(request.form.get("next"))
    email = request.form.get("email", "")
    try:
        started = sign_in_browser(
            db.session,
            rt.hasher,
            rt.throttle_policy,
            session_policy(rt.config),
            email=email,
            password=request.form.get("password", ""),
            context=request_context(),
            trusted_device=is_trusted_device(throttle_account(email)),
            previous=current_browser_session(),
            notices=rt.notices,
            trusted_device_skips_second_factor=bool(rt.config.trusted_device_skips_second_factor),
        )
    except SignInThrottled as throttled:
        page = _login_page(
            target,
            email[:254],
            gettext(
                "Too many failed attempts. Try again in %(seconds)s seconds.",
                seconds=throttled.retry_after,
            ),
            password_error=True,
        )
        return page, 429, {"Retry-After": str(throttled.retry_after)}
    except SignInFailed:
        page = _login_page(
            target, email[:254], gettext("Email or password is incorrect."), password_error=True
        )
        return page, 401
    if isinstance(started, PendingSecondFactor):
        # The password is right; the code's page finishes the sign-in.
        response = see_other(url_for("two_step.second_step_form", next=target))
        set_second_step_cookie(response, started.token, rt.config)
        return response
    response = see_other(target)
    set_session_cookie(response, started.token, rt.config)
    remember_device(response, throttle_account(email))
    return response


@bp.get("/logout")
def logout_form() -> str:
    """A GET never signs anyone out: it asks (a link or an image must not log users out)."""
    browser_session = current_browser_session()
    email = browser_session.user.email if browser_session else None
    return render_template("logout_confirm.html", email=email, action=url_for("pages.logout"))


@bp.post("/logout")
def logout() -> Response:
    """Sign this browser out. With ``next`` (the consent page's "Not you? Switch account"),
    the sign-in page comes next and then that same path on this server, never another site."""
    rt = runtime()
    switch_to = safe_next(request.form.get("next"), default="")
    browser_session = current_browser_session()
    if browser_session is not None:
        end_session(db.session, browser_session, RevocationReason.LOGOUT, runtime().now())
        audit(
            AuditEventType.LOGOUT,
            user_id=browser_session.user_id,
            browser_session_id=browser_session.id,
        )
    if switch_to:
        response = see_other(url_for("pages.login_form", next=switch_to))
    else:
        response = see_other(url_for("pages.logged_out"))
    clear_session_cookie(response, rt.config)
    return response


@bp.get("/logged-out")
def logged_out() -> str:
    return render_template("logged_out.html")


@dataclass(frozen=True)
class NamedDevice:
    """A line of "where you are signed in" as the account page shows it."""

    device: Device
    name: str

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.device, attribute)


def named_devices(devices: list[Device]) -> list[NamedDevice]:
    """Each device named in words (http/device_names.py): this browser first, then the apps
    signed in through it, then the others, the most recently active first."""
    named = [
        NamedDevice(
            device,
            app_name(device.client_name, device.user_agent)
            if device.kind == "app" and device.client_name
            else browser_name(device.user_agent),
        )
        for device in devices
    ]
    named.sort(
        key=lambda line: (
            not (line.device.current and line.device.kind == "browser"),
            not line.device.current,
            -line.device.last_used_at.timestamp(),
        )
    )
    return named


def _account_page(
    notice: str | None = None,
    password_error: str | None = None,
    email_notice: str | None = None,
    email_error: str | None = None,
    new_email: str = "",
    delete_error: str | None = None,
) -> str:
    browser_session = current_browser_session()
    assert browser_session is not None
    devices = named_devices(
        list_devices(
            db.session,
            browser_session.user_id,
            runtime().now(),
            current_session_id=browser_session.id,
        )
    )
    return render_template(
        "account.html",
        email=browser_session.user.email,
        email_verified=browser_session.user.email_verified,
        devices=devices,
        notice=notice,
        password_error=password_error,
        email_notice=email_notice,
        email_error=email_error,
        new_email=new_email,
        delete_error=delete_error,
        password_policy=runtime().password_policy,
        two_step=has_confirmed_totp(db.session, browser_session.user),
        recovery_codes_left=remaining_count(db.session, browser_session.user),
        passkeys=list_passkeys(db.session, browser_session.user),
    )


def _login_redirect() -> Response:
    return see_other(url_for("pages.login_form", next=request.path))


@bp.get("/account")
def account() -> str | Response:
    if current_browser_session() is None:
        return _login_redirect()
    return _account_page()


@bp.post("/account/devices/<uuid:device_id>/sign-out")
def sign_out_device(device_id: uuid.UUID) -> Response:
    browser_session = current_browser_session()
    if browser_session is None:
        return _login_redirect()
    if revoke_device(db.session, browser_session.user_id, device_id, runtime().now()):
        audit(AuditEventType.LOGOUT, user_id=browser_session.user_id, reason="device_signed_out")
    return see_other(url_for("pages.account"))


@bp.post("/account/devices/sign-out-others")
def sign_out_others() -> Response:
    browser_session = current_browser_session()
    if browser_session is None:
        return _login_redirect()
    sessions, families = end_user_sessions(
        db.session,
        browser_session.user_id,
        RevocationReason.LOGOUT_EVERYWHERE,
        runtime().now(),
        keep_session_id=browser_session.id,
    )
    audit(
        AuditEventType.LOGOUT_EVERYWHERE,
        user_id=browser_session.user_id,
        reason="everywhere_else",
        sessions_ended=sessions,
        families_revoked=families,
    )
    return see_other(url_for("pages.account"))


def _confirmation() -> Confirmation:
    """How the account page's forms check the password typed again (services/own_account.py)."""
    browser_session = current_browser_session()
    assert browser_session is not None
    rt = runtime()
    return Confirmation(
        rt.hasher,
        rt.throttle_policy,
        request_context(),
        trusted_device=is_trusted_device(throttle_account(browser_session.user.email)),
    )


def _throttled_page(
    throttled: ConfirmationThrottled, **errors: str
) -> tuple[str, int, dict[str, str]]:
    page = _account_page(**errors)
    return page, 429, {"Retry-After": str(throttled.retry_after)}


def _wait_message(throttled: ConfirmationThrottled) -> str:
    return str(
        gettext(
            "Too many wrong passwords. Try again in %(seconds)s seconds.",
            seconds=throttled.retry_after,
        )
    )


@bp.post("/account/password", endpoint="change_password")
def change_password_page() -> str | tuple[str, int] | tuple[str, int, dict[str, str]] | Response:
    browser_session = current_browser_session()
    if browser_session is None:
        return _login_redirect()
    rt = runtime()
    try:
        change_own_password(
            db.session,
            browser_session.user,
            _confirmation(),
            rt.notices,
            current_password=request.form.get("current_password", ""),
            new_password=request.form.get("new_password", ""),
            password_policy=rt.password_policy,
            keep_session_id=browser_session.id,
        )
    except ConfirmationThrottled as throttled:
        return _throttled_page(throttled, password_error=_wait_message(throttled))
    except ValidationError as exc:
        return _account_page(password_error=exc.description), 400
    return _account_page(notice=gettext("Password changed. Every other session was signed out."))


@bp.post("/account/delete", endpoint="delete_account")
def delete_account_page() -> str | tuple[str, int] | tuple[str, int, dict[str, str]] | Response:
    """Delete the signed-in account, after its password once more. Everything it held is
    revoked (services/users.delete_account), this browser's session too: its cookie goes."""
    browser_session = current_browser_session()
    if browser_session is None:
        return _login_redirect()
    rt = runtime()
    email = browser_session.user.email
    try:
        delete_own_account(
            db.session,
            browser_session.user,
            _confirmation(),
            rt.notices,
            current_password=request.form.get("current_password", ""),
        )
    except ConfirmationThrottled as throttled:
        return _throttled_page(throttled, delete_error=_wait_message(throttled))
    except ValidationError as exc:
        return _account_page(delete_error=exc.description), 400
    response = Response(render_template("account_deleted.html", email=email))
    clear_session_cookie(response, rt.config)
    return response


@bp.post("/account/email/verification", endpoint="send_email_verification")
def send_email_verification() -> str | tuple[str, int] | Response:
    browser_session = current_browser_session()
    if browser_session is None:
        return _login_redirect()
    try:
        sent = send_verification_link(
            db.session,
            runtime().composer,
            email_link_settings(),
            browser_session.user,
            context=request_context(),
        )
    except TooManyLinks:
        error = gettext(
            "We sent several verification messages in the last hour. Look for them, or try "
            "again later."
        )
        return _account_page(email_error=error), 429
    if not sent:
        return _account_page(email_notice=gettext("Your address is already confirmed."))
    return _account_page(
        email_notice=gettext(
            "We sent a link to %(email)s. Open it and press the button to confirm your address.",
            email=browser_session.user.email,
        )
    )


@bp.post("/account/email", endpoint="change_email")
def change_email() -> str | tuple[str, int] | tuple[str, int, dict[str, str]] | Response:
    """The same answer whether or not another account has the new address
    (services/email_change.py)."""
    browser_session = current_browser_session()
    if browser_session is None:
        return _login_redirect()
    rt = runtime()
    user = browser_session.user
    old_email = user.email
    typed = request.form.get("new_email", "")[:254]
    try:
        new_email = request_email_change(
            db.session,
            rt.hasher,
            runtime().composer,
            email_link_settings(),
            rt.throttle_policy,
            user,
            current_password=request.form.get("current_password", ""),
            new_email=request.form.get("new_email", "")[:1000],
            context=request_context(),
            trusted_device=is_trusted_device(throttle_account(old_email)),
        )
    except ConfirmationThrottled as throttled:
        page = _account_page(email_error=_wait_message(throttled), new_email=typed)
        return page, 429, {"Retry-After": str(throttled.retry_after)}
    except TooManyLinks:
        error = gettext(
            "Too many address changes were asked for in the last hour. Try again later."
        )
        return _account_page(email_error=error), 429
    except ValidationError as exc:
        return _account_page(email_error=exc.description, new_email=typed), 400
    return _account_page(
        email_notice=gettext(
            "We sent a link to %(new_email)s. Your address changes when you open it and press "
            "the button. Until then you keep %(old_email)s, and we told it about this.",
            new_email=new_email,
            old_email=old_email,
        )
    )
