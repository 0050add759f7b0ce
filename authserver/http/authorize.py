"""The authorization endpoint (RFC 6749 §3.1): sign-in, consent, then a code to the client."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc9101.errors import InvalidRequestUriError
from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from flask_babel import gettext

from authserver.db import db
from authserver.http.branding import origin_of
from authserver.http.locale import remember_ui_locales, with_ui_locales
from authserver.http.scope_words import describe_scopes
from authserver.http.two_step import ask_for_second_factor
from authserver.http.web import allow_images_from, current_browser_session
from authserver.models import BrowserSession, Client, PushedAuthorizationRequest, User
from authserver.oauth.server import authorization_server
from authserver.runtime import runtime
from authserver.services.acr import ACR_MFA, satisfies, stronger, weakest_acceptable
from authserver.services.consents import consent_needed, remember_consent
from authserver.services.factor_status import has_second_factor
from authserver.services.pushed_requests import use_pushed_request

bp = Blueprint("authorize", __name__)

AUTHORIZE_PATH = "/oauth/authorize"


def _error_page(error: OAuth2Error) -> tuple[str, int]:
    # The redirect URI is not trusted (unknown client, unregistered or malformed URI), so
    # the browser stays here: never an open redirect (RFC 6749 §4.1.2.1).
    return (
        render_template(
            "error.html",
            title=gettext("This sign-in link is not valid"),
            # The description is the developers' (RFC 6749 §4.1.2.1), in English.
            message=error.description or error.error,
            hint=gettext("Go back to the app you came from and sign in from there again."),
            link_url=url_for("pages.account"),
            link_text=gettext("Go to your account"),
        ),
        400,
    )


def _error_response(error: OAuth2Error) -> Response | tuple[str, int]:
    if error.redirect_uri:
        response: Response = authorization_server().handle_error_response(None, error)
        return response
    return _error_page(error)


def _after_sign_in() -> str:
    """This request's URL without what asked for the sign-in (``prompt=login``, ``max_age``),
    to come back to once it is done: asked again, they would ask for another sign-in, for
    ever. The fresh session's ``auth_time`` is in the ID token, where the client checks it
    against its ``max_age`` (OpenID Connect Core 1.0 §3.1.2.1). A pushed request's URL is
    only its request_uri: it comes back as it is (``_must_sign_in`` knows the sign-in was
    made for it), with a copy of its ``ui_locales`` for the pages on the way
    (http/locale.py)."""
    if g.get("pushed_request") is not None:
        return with_ui_locales(request.full_path)
    params = [
        (k, v)
        for k, v in request.args.items(multi=True)
        if not (k == "prompt" and "login" in v.split()) and k != "max_age"
    ]
    return f"{AUTHORIZE_PATH}?{urlencode(params)}"


class InvalidMaxAge(ValueError):
    pass


def parse_max_age(parameters: Mapping[str, str]) -> int | None:
    """``max_age`` (OpenID Connect Core 1.0 §3.1.2.1): whole seconds, 0 or more; None when
    not asked. InvalidMaxAge for anything else (ASCII digits only: int() would take "+5",
    " 5", Arabic-Indic digits or "1_000")."""
    raw = parameters.get("max_age")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10:
        raise InvalidMaxAge(raw)
    return int(raw)


def _signed_in_too_long_ago(auth_time: datetime, max_age: int | None) -> bool:
    """The session's sign-in is older than ``max_age`` allows: the user must sign in again.
    Whole seconds, as ``auth_time`` travels in the ID token; ``max_age=0`` always asks."""
    if max_age is None:
        return False
    elapsed = int(runtime().now().timestamp()) - int(auth_time.timestamp())
    return max_age == 0 or elapsed > max_age


def _required_acr(client: Client, parameters: Mapping[str, str]) -> tuple[str | None, bool]:
    """The class this request needs (services/acr.py), and whether it is a must: the server's
    or the client's policy of two factors is; ``acr_values`` (Core §3.1.2.1) is honoured where
    the user can give it, and otherwise the ID token's ``acr`` tells the client what it got."""
    must = (
        ACR_MFA if runtime().config.require_second_factor or client.require_second_factor else None
    )
    asked = weakest_acceptable(parameters.get("acr_values", "").split())
    return stronger(must, asked), must is not None


def _step_up(
    browser_session: BrowserSession, client: Client, prompt: set[str], grant: Any
) -> Response | tuple[str, int] | None:
    """None when the session's sign-in reaches the class this request needs; else where to
    go for what is missing, and only that: the second factor's page (no password again), or,
    for a user who has none and must, setting one up first."""
    required, must = _required_acr(client, grant.request.payload.data)
    if satisfies(browser_session.amr, required):
        return None
    has_factor = has_second_factor(db.session, browser_session.user)
    if not has_factor and not must:
        return None
    if request.method != "GET":
        # A form posted without the GET that asks first (the consent page comes after it).
        return redirect(request.full_path, code=303)  # type: ignore[return-value]
    if "none" in prompt:
        return _error_response(
            OAuth2Error(
                error="login_required",
                description="This request needs a second factor.",
                redirect_uri=grant.redirect_uri,
                state=grant.request.payload.state,
            )
        )
    return ask_for_second_factor(
        browser_session, with_ui_locales(request.full_path), has_factor=has_factor
    )


def _not_signed_in_since_the_push(browser_session: BrowserSession | None) -> bool:
    """``prompt=login`` asks for a sign-in made for this request. A plain request drops
    the prompt from the URL it comes back to (``_after_sign_in``); a pushed request cannot,
    so a sign-in after the push is the one it asked for."""
    pushed: PushedAuthorizationRequest | None = g.get("pushed_request")
    if pushed is None or browser_session is None:
        return True
    return browser_session.auth_time < pushed.created_at


def _answer(grant: Any, user: User | None) -> Response | tuple[str, int]:
    """The authorization response (a code, or the user's refusal), which uses up a pushed
    request: of two answers racing for one request_uri, one is made (RFC 9126 §4)."""
    pushed: PushedAuthorizationRequest | None = g.get("pushed_request")
    if pushed is not None and not use_pushed_request(db.session, pushed, runtime().now()):
        return _error_page(InvalidRequestUriError(description="This request was answered already."))
    response: Response = authorization_server().create_authorization_response(
        grant=grant, grant_user=user
    )
    return response


@bp.route(AUTHORIZE_PATH, methods=["GET", "POST"])
def authorize() -> Response | tuple[str, int]:
    server = authorization_server()
    browser_session = current_browser_session()
    user = browser_session.user if browser_session else None
    try:
        grant = server.get_consent_grant(end_user=user)
    except OAuth2Error as error:
        return _error_response(error)

    parameters = grant.request.payload.data
    # OpenID Connect Core §3.1.2.1: the pages of this request speak the first of these
    # languages that has a catalog (http/locale.py); a pushed request's come from the push.
    remember_ui_locales(parameters.get("ui_locales"))
    prompt = set(parameters.get("prompt", "").split())
    try:
        max_age = parse_max_age(parameters)
    except InvalidMaxAge:
        return _error_response(
            OAuth2Error(
                error="invalid_request",
                description="max_age must be a whole number of seconds.",
                redirect_uri=grant.redirect_uri,
                state=grant.request.payload.state,
            )
        )
    reauthenticate = request.method == "GET" and (
        ("login" in prompt and _not_signed_in_since_the_push(browser_session))
        or (
            browser_session is not None
            and _signed_in_too_long_ago(browser_session.auth_time, max_age)
        )
    )
    if user is None or reauthenticate:
        if "none" in prompt:
            # OpenID Connect Core §3.1.2.6: no UI allowed, and the user is not signed in.
            return _error_response(
                OAuth2Error(
                    error="login_required",
                    redirect_uri=grant.redirect_uri,
                    state=grant.request.payload.state,
                )
            )
        login_url = url_for(
            "pages.login_form",
            next=_after_sign_in(),
            # Asked to re-authenticate: the sign-in page must not wave a signed-in user on.
            prompt="login" if reauthenticate else None,
        )
        return redirect(login_url, code=303)  # type: ignore[return-value]

    client = grant.client
    assert browser_session is not None
    stepped_up = _step_up(browser_session, client, prompt, grant)
    if stepped_up is not None:
        return stepped_up
    scope = grant.request.scope
    if request.method == "POST":
        if request.form.get("decision") != "allow":
            return _answer(grant, None)
        remember_consent(db.session, user, client, scope, runtime().now())
    elif consent_needed(db.session, user, client, scope):
        if "none" in prompt:
            return _error_response(
                OAuth2Error(
                    error="consent_required",
                    redirect_uri=grant.redirect_uri,
                    state=grant.request.payload.state,
                )
            )
        allow_images_from(origin_of(client.logo_uri))
        return render_template(
            "consent.html",
            client=client,
            email=user.email,
            scopes=describe_scopes(scope.split(), user.email),
            action=with_ui_locales(request.full_path),
        ), 200
    return _answer(grant, user)
