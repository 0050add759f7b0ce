"""The pages where a user connects a device (RFC 8628 §3.3): type the code the device shows,
check it is the same on the confirmation page, allow or deny.

Only a signed-in user reaches them (the sign-in page brings them back, with the code when
the device showed ``verification_uri_complete``). Wrong codes are counted per user and
address like wrong passwords, so guessing a live code is throttled. When the server's or the
client's policy wants two factors, a session without the second one is sent for it first,
as the authorization endpoint does. The decision is recorded once; the device learns it at
its next poll.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, Response, render_template, request, url_for
from flask_babel import gettext, lazy_gettext

from authserver.db import db
from authserver.http.rate_limits import per_ip
from authserver.http.two_step import ask_for_second_factor
from authserver.http.web import current_browser_session, see_other
from authserver.models import BrowserSession, DeviceAuthorization
from authserver.runtime import runtime
from authserver.services.acr import ACR_MFA, satisfies
from authserver.services.device_authorization import (
    DEVICE_PAGE_PATH,
    decide,
    find_pending,
    normalize_user_code,
    shown,
)
from authserver.services.factor_status import has_second_factor
from authserver.services.sign_in_throttle import record_failure, record_success, seconds_to_wait

bp = Blueprint("device", __name__)

NOT_FOUND = lazy_gettext(
    "That code is not valid, or it has expired. Check the code on your device, or start again "
    "there."
)


def _throttle_key(browser_session: BrowserSession) -> str:
    return f"device:{browser_session.user_id}"


def _sign_in_first() -> Response:
    # full_path ends in "?" when there is no query: come back to the bare path then.
    here = request.full_path if request.query_string else request.path
    return see_other(url_for("pages.login_form", next=here))


def _form(
    email: str, user_code: str = "", error: str | None = None, status: int = 200
) -> tuple[str, int]:
    return render_template("device.html", email=email, user_code=user_code, error=error), status


def _second_factor_needed(
    browser_session: BrowserSession, authorization: DeviceAuthorization, code: str
) -> Response | None:
    """The two-factor policy holds here as at the authorization endpoint."""
    config = runtime().config
    if not (config.require_second_factor or authorization.client.require_second_factor):
        return None
    if satisfies(browser_session.amr, ACR_MFA):
        return None
    has_factor = has_second_factor(db.session, browser_session.user)
    return ask_for_second_factor(
        browser_session, f"{DEVICE_PAGE_PATH}?user_code={shown(code)}", has_factor=has_factor
    )


def _find(
    browser_session: BrowserSession, raw_code: str
) -> tuple[DeviceAuthorization | None, str | None, int]:
    """The pending request for the typed code, counting a wrong one; (request, code, wait)."""
    rt = runtime()
    now = rt.now()
    address = request.remote_addr or "-"
    key = _throttle_key(browser_session)
    wait = seconds_to_wait(db.session, key, address, now, rt.throttle_policy)
    if wait:
        return None, None, wait
    code = normalize_user_code(raw_code)
    found = find_pending(db.session, code, now) if code is not None else None
    if found is None:
        record_failure(db.session, key, address, now, rt.throttle_policy)
        return None, None, 0
    record_success(db.session, key, address)
    return found, code, 0


@bp.get(DEVICE_PAGE_PATH)
def device_form() -> str | tuple[str, int] | Response:
    browser_session = current_browser_session()
    if browser_session is None:
        return _sign_in_first()
    typed = request.args.get("user_code", "")
    prefilled = shown(code) if (code := normalize_user_code(typed)) else ""
    return _form(browser_session.user.email, prefilled)


@dataclass(frozen=True)
class TypedCode:
    authorization: DeviceAuthorization
    code: str  # normalised


def _typed_request(browser_session: BrowserSession) -> TypedCode | tuple[str, int] | Response:
    """What both forms start with: the pending request the typed code names, and the code;
    or the page to answer instead (too many wrong codes, a wrong or expired code, the second
    factor first)."""
    typed = request.form.get("user_code", "")
    found, code, wait = _find(browser_session, typed)
    email = browser_session.user.email
    if wait:
        message = gettext(
            "Too many wrong codes. Wait %(seconds)s seconds and try again.", seconds=wait
        )
        return _form(email, typed[:32], message, 429)
    if found is None or code is None:
        return _form(email, typed[:32], str(NOT_FOUND), 400)
    stepped_up = _second_factor_needed(browser_session, found, code)
    if stepped_up is not None:
        return stepped_up
    return TypedCode(found, code)


@bp.post(DEVICE_PAGE_PATH)
@per_ip["signin"]
def enter_code() -> str | tuple[str, int] | Response:
    browser_session = current_browser_session()
    if browser_session is None:
        return _sign_in_first()
    typed = _typed_request(browser_session)
    if not isinstance(typed, TypedCode):
        return typed
    return render_template(
        "device_confirm.html",
        client_name=typed.authorization.client.name,
        email=browser_session.user.email,
        scopes=typed.authorization.scope.split(),
        user_code=shown(typed.code),
    )


@bp.post(DEVICE_PAGE_PATH + "/decision")
@per_ip["signin"]
def decide_device() -> str | tuple[str, int] | Response:
    browser_session = current_browser_session()
    if browser_session is None:
        return _sign_in_first()
    typed = _typed_request(browser_session)
    if not isinstance(typed, TypedCode):
        return typed
    approve = request.form.get("decision") == "allow"
    now = runtime().now()
    if not decide(db.session, typed.authorization, browser_session, approve=approve, now=now):
        return _form(browser_session.user.email, "", str(NOT_FOUND), 400)
    if approve:
        title = gettext("Device connected")
        message = gettext("You can go back to your device: it is signed in.")
    else:
        title = gettext("Device denied")
        message = gettext("The device was not given access to your account.")
    return render_template("device_done.html", title=title, message=message)
