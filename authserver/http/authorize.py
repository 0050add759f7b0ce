"""The authorization endpoint (RFC 6749 §3.1): sign-in, consent, then a code to the client."""

from __future__ import annotations

from urllib.parse import urlencode

from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import Blueprint, Response, redirect, render_template, request, url_for

from authserver.db import db
from authserver.http.web import current_browser_session
from authserver.oauth.server import authorization_server
from authserver.runtime import runtime
from authserver.services.consents import consent_needed, remember_consent

bp = Blueprint("authorize", __name__)

AUTHORIZE_PATH = "/oauth/authorize"


def _error_page(error: OAuth2Error) -> tuple[str, int]:
    # The redirect URI is not trusted (unknown client, unregistered or malformed URI), so
    # the browser stays here: never an open redirect (RFC 6749 §4.1.2.1).
    return (
        render_template(
            "error.html",
            title="This sign-in link is not valid",
            message=error.description or error.error,
        ),
        400,
    )


def _error_response(error: OAuth2Error) -> Response | tuple[str, int]:
    if error.redirect_uri:
        response: Response = authorization_server().handle_error_response(None, error)
        return response
    return _error_page(error)


def _without_prompt_login() -> str:
    """This request's URL with ``prompt=login`` removed, for after the sign-in it asked for."""
    params = [
        (k, v)
        for k, v in request.args.items(multi=True)
        if not (k == "prompt" and "login" in v.split())
    ]
    return f"{AUTHORIZE_PATH}?{urlencode(params)}"


@bp.route(AUTHORIZE_PATH, methods=["GET", "POST"])
def authorize() -> Response | tuple[str, int]:
    server = authorization_server()
    browser_session = current_browser_session()
    user = browser_session.user if browser_session else None
    try:
        grant = server.get_consent_grant(end_user=user)
    except OAuth2Error as error:
        return _error_response(error)

    prompt = set(request.args.get("prompt", "").split())
    if user is None or ("login" in prompt and request.method == "GET"):
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
            next=_without_prompt_login(),
            # Asked to re-authenticate: the sign-in page must not wave a signed-in user on.
            prompt="login" if "login" in prompt else None,
        )
        return redirect(login_url, code=303)  # type: ignore[return-value]

    client = grant.client
    scope = grant.request.scope
    if request.method == "POST":
        if request.form.get("decision") != "allow":
            response: Response = server.create_authorization_response(grant=grant, grant_user=None)
            return response
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
        return render_template(
            "consent.html",
            client_name=client.name,
            email=user.email,
            scopes=scope.split(),
            action=request.full_path,
        ), 200
    response = server.create_authorization_response(grant=grant, grant_user=user)
    return response
