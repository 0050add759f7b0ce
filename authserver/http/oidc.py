"""OpenID Connect endpoints: userinfo (Core §5.3) and RP-initiated logout (RP-Initiated
Logout 1.0)."""

from __future__ import annotations

from authlib.common.urls import add_params_to_uri
from flask import Blueprint, Response, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_wtf.csrf import CSRFError, validate_csrf
from wtforms import ValidationError as WTFValidationError

from authserver.db import db
from authserver.http.audit import audit
from authserver.http.bearer import require_user_token
from authserver.http.rate_limits import per_ip_bearer_api
from authserver.http.web import clear_session_cookie, csrf, current_browser_session
from authserver.models import User
from authserver.own_apis import USERINFO_API
from authserver.runtime import runtime
from authserver.services.audit import AuditEventType
from authserver.services.browser_sessions import end_session
from authserver.services.clients import find_client
from authserver.services.refresh_tokens import RevocationReason
from authserver.services.token_verification import TokenRejected, verify_own_token

bp = Blueprint("oidc", __name__)
# Userinfo takes bearer tokens, and relying parties may POST to the end-session endpoint;
# its own confirmation form is checked with validate_csrf below.
csrf.exempt(bp)

USERINFO_PATH = "/oauth/userinfo"
END_SESSION_PATH = "/oauth/logout"


@bp.route(USERINFO_PATH, methods=["GET", "POST"])
@per_ip_bearer_api
def userinfo() -> Response:
    caller = require_user_token(USERINFO_API)
    user = db.session.get(User, caller.user_id)
    assert user is not None  # the token was still granted: its user exists and is enabled
    scopes = caller.scopes
    body: dict[str, object] = {"sub": str(caller.user_id)}
    if "email" in scopes:
        body["email"] = user.email
        # True only once the address was shown to reach the user (a mailed link, or
        # ``users verify-email``).
        body["email_verified"] = user.email_verified
    if "profile" in scopes:
        body["updated_at"] = int(user.updated_at.timestamp())
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


def _error_page(message: str) -> tuple[str, int]:
    return render_template(
        "error.html", title=gettext("Sign-out request not valid"), message=message
    ), 400


@bp.route(END_SESSION_PATH, methods=["GET", "POST"])
def end_session_endpoint() -> Response | str | tuple[str, int]:
    rt = runtime()
    hint = request.values.get("id_token_hint")
    post_logout_uri = request.values.get("post_logout_redirect_uri")
    state = request.values.get("state")
    hint_claims = None
    if hint:
        try:
            # An expired ID token is still a fine hint (RP-Initiated Logout §2).
            hint_claims = verify_own_token(
                rt.keys,
                hint,
                issuer=rt.config.issuer,
                typ="JWT",
                now=int(runtime().now().timestamp()),
                check_expiry=False,
            ).claims
        except TokenRejected:
            return _error_page(gettext("The id_token_hint was not issued by this server."))
    client_id = request.values.get("client_id") or (hint_claims or {}).get("aud")
    client = find_client(db.session, client_id) if isinstance(client_id, str) else None
    if hint_claims is not None and client_id != hint_claims.get("aud"):
        return _error_page(gettext("The client_id does not match the id_token_hint."))
    if post_logout_uri and (
        client is None or post_logout_uri not in client.post_logout_redirect_uris
    ):
        # Exact match against what the client registered, or no redirect at all.
        return _error_page(
            gettext("The post_logout_redirect_uri is not registered for this client.")
        )

    browser_session = current_browser_session()
    confirmed = False
    if request.method == "POST" and request.form.get("confirm") == "yes":
        # The user's own answer on the confirmation page (which posts back to this URL,
        # hint included), so it is checked first.
        try:
            validate_csrf(request.form.get("csrf_token"))
        except (WTFValidationError, CSRFError):
            return _error_page(gettext("This form expired; reload the page and try again."))
        confirmed = True
    elif hint_claims is not None:
        # The hint is the relying party's word; it only ends the session it names.
        confirmed = browser_session is None or (
            hint_claims.get("sid") == str(browser_session.id)
            and hint_claims.get("sub") == str(browser_session.user_id)
        )
    if not confirmed:
        email = browser_session.user.email if browser_session else None
        return render_template("logout_confirm.html", email=email, action=request.full_path)

    if browser_session is not None:
        end_session(db.session, browser_session, RevocationReason.LOGOUT, runtime().now())
        audit(
            AuditEventType.LOGOUT,
            user_id=browser_session.user_id,
            client_id=client.client_id if client else None,
            browser_session_id=browser_session.id,
            method="end_session",
        )
    if post_logout_uri:
        target = add_params_to_uri(post_logout_uri, [("state", state)] if state else [])
    else:
        target = url_for("pages.logged_out")
    response: Response = redirect(target, code=303)  # type: ignore[assignment]
    clear_session_cookie(response, rt.config)
    return response
