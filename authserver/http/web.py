"""What every server-rendered page shares: the session cookie, the signed-in browser
session, CSRF protection, the cross-site form check, and the page security headers."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, redirect, render_template, request, session
from flask_babel import gettext
from flask_wtf.csrf import CSRFError, CSRFProtect

from authserver.config import Config
from authserver.db import db
from authserver.http.branding import origin_of
from authserver.models import BrowserSession
from authserver.own_apis import ADMIN_API_PATH
from authserver.runtime import runtime
from authserver.services.browser_sessions import SessionPolicy, resolve_session

csrf = CSRFProtect()

# Paths of the pages (not the JSON/OAuth endpoints) that get page headers and form checks.
PAGE_PREFIXES = (
    "/login",
    "/logout",
    "/logged-out",
    "/account",
    "/oauth/authorize",
    "/password/",
    "/email/",
    "/signup",
    "/invitation",
    "/device",  # where a user allows a device (RFC 8628 §3.3): never framed, never cached
    "/admin",  # the operator console; its JSON API under ADMIN_API_PATH is not a page
)
# Pages whose forms carry a CSRF token: those above and RP-initiated logout's confirmation.
FORM_PREFIXES = (*PAGE_PREFIXES, "/oauth/logout")
# Flask-WTF keeps the CSRF secret under this key of Flask's signed cookie session
# (WTF_CSRF_FIELD_NAME); the browser session it was issued in is kept beside it.
CSRF_SECRET_KEY = "csrf_token"  # noqa: S105 (a key name, not a secret)
CSRF_ISSUED_IN = "csrf_issued_in"
NO_BROWSER_SESSION = "-"
API_PREFIXES = ("/account/sessions", "/account/logout-all", ADMIN_API_PATH)


def session_cookie_name(config: Config) -> str:
    # __Host-: the browser only accepts it Secure, on Path=/, without Domain (RFC 6265bis
    # §4.1.3.2), so no subdomain can plant or read it.
    return "__Host-authserver" if config.secure_cookies else "authserver_session"


def session_policy(config: Config) -> SessionPolicy:
    return SessionPolicy(
        idle_ttl=timedelta(seconds=config.session_idle_ttl),
        absolute_ttl=timedelta(seconds=config.session_absolute_ttl),
    )


def current_browser_session() -> BrowserSession | None:
    """The signed-in browser session of this request, if any (looked up once)."""
    if "browser_session" not in g:
        config = runtime().config
        token = request.cookies.get(session_cookie_name(config))
        g.browser_session = (
            resolve_session(db.session, token, session_policy(config), runtime().now())
            if token
            else None
        )
    found: BrowserSession | None = g.browser_session
    return found


def set_session_cookie(response: Response, token: str, config: Config) -> None:
    response.set_cookie(
        session_cookie_name(config),
        token,
        max_age=config.session_absolute_ttl,
        path="/",
        secure=config.secure_cookies,
        httponly=True,
        samesite="Lax",
    )


def clear_session_cookie(response: Response, config: Config) -> None:
    response.delete_cookie(
        session_cookie_name(config),
        path="/",
        secure=config.secure_cookies,
        httponly=True,
        samesite="Lax",
    )


def see_other(location: str) -> Response:
    """303: after a form's POST the browser fetches ``location`` with GET (RFC 9110 §15.4.4)."""
    return redirect(location, code=303)  # type: ignore[return-value]


def safe_next(target: str | None, default: str = "/account") -> str:
    """Only same-origin relative paths: ``next`` is never an open redirect."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ch in target for ch in "\r\n\t\\"):
        return default
    return target


def is_page(path: str) -> bool:
    """Whether ``path`` is one of the server-rendered pages (not a JSON or OAuth endpoint)."""
    return path.startswith(PAGE_PREFIXES) and not path.startswith(API_PREFIXES)


def bind_csrf_to_browser_session() -> None:
    """CSRF tokens expire with the browser session they were issued in.

    Flask-WTF derives every token from one secret in Flask's signed cookie, which outlives
    sign-in and sign-out. So the secret is remembered with the browser session it was issued
    in (or none, before sign-in); when a page request arrives in another one (signed in, out,
    or the session expired), the secret is dropped: forms rendered before are refused as
    expired, and the next page gets a fresh token."""
    if not request.path.startswith(FORM_PREFIXES) or request.path.startswith(API_PREFIXES):
        return
    current = current_browser_session()
    issued_in = str(current.id) if current is not None else NO_BROWSER_SESSION
    if session.get(CSRF_ISSUED_IN) != issued_in:
        session.pop(CSRF_SECRET_KEY, None)
        session[CSRF_ISSUED_IN] = issued_in


def refuse_cross_site_forms() -> Response | None:
    """Refuse a form POST that is plainly cross-site, before CSRF or any work.

    ``Origin: null`` is not refused: browsers send it for same-origin forms on pages with
    ``Referrer-Policy: no-referrer``; the CSRF token decides those.
    """
    if request.method != "POST" or not is_page(request.path):
        return None
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return _forbidden_page()
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        issuer = urlsplit(runtime().config.issuer)
        if origin != f"{issuer.scheme}://{issuer.netloc}":
            return _forbidden_page()
    return None


def _forbidden_page() -> Response:
    response = Response(
        render_template(
            "error.html",
            title=gettext("Request refused"),
            message=gettext("This form was sent from another site, so it was not processed."),
        ),
        status=403,
    )
    return response


def handle_csrf_error(exc: CSRFError) -> tuple[str, int]:
    return (
        render_template(
            "error.html",
            title=gettext("Please try again"),
            message=gettext(
                "This form expired or did not come from this site. Go back, reload the "
                "page and send it again."
            ),
        ),
        400,
    )


def allow_images_from(origin: str | None) -> None:
    """Let this page's images load from ``origin`` too (``https://host``)."""
    if origin:
        g.setdefault("image_origins", []).append(origin)


def _image_sources() -> list[str]:
    sources = ["'self'"]
    logo_origin = origin_of(current_app.config["AUTHSERVER"].logo_url)
    for origin in [logo_origin, *g.get("image_origins", [])]:
        if origin and origin not in sources:
            sources.append(origin)
    return sources


# RFC 6797: a year, subdomains included (production only: a development issuer is http).
HSTS_VALUE = "max-age=31536000; includeSubDomains"


def add_security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if is_page(request.path) or response.mimetype == "text/html":
        response.headers["X-Frame-Options"] = "DENY"
        # A view may set a stricter policy of its own (http/dev_mail.py's mail bodies).
        response.headers.setdefault(
            "Content-Security-Policy",
            # No form-action: browsers apply it to the redirect that follows a consent form,
            # and that goes to the client's (any) redirect URI.
            # script-src and connect-src: the passkey pages' own script (static/passkeys.js)
            # and its calls back to the same origin; never inline script.
            # img-src: the operator's logo (AUTHSERVER_LOGO_URL) and the logo of the app a
            # consent page names may come from their own sites (allow_images_from).
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
            f"img-src {' '.join(_image_sources())}; "
            "frame-ancestors 'none'; base-uri 'none'",
        )
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
    if current_app.config["AUTHSERVER"].is_production:
        response.headers.setdefault("Strict-Transport-Security", HSTS_VALUE)
    return response


def init_web(app: Flask, config: Config) -> None:
    secure = config.secure_cookies
    app.config.update(
        # Flask's own signed cookie carries only the CSRF secret (including before sign-in,
        # which is what makes login CSRF fail); the session itself is server-side.
        SESSION_COOKIE_NAME="__Host-authserver-csrf" if secure else "authserver_csrf",
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH="/",
        # Referrer-Policy: no-referrer means no Referer to check; Origin is checked above.
        WTF_CSRF_SSL_STRICT=False,
        WTF_CSRF_FIELD_NAME=CSRF_SECRET_KEY,
        # A backstop: no token outlives the longest browser session, whatever happens to
        # the cookie (the binding above ends it with its session).
        WTF_CSRF_TIME_LIMIT=config.session_absolute_ttl,
    )
    # Before CSRFProtect's own hook: a cross-site POST is refused as such (403), and a token
    # from another browser session finds its secret gone.
    app.before_request(refuse_cross_site_forms)
    app.before_request(bind_csrf_to_browser_session)
    csrf.init_app(app)
    app.after_request(add_security_headers)
    app.register_error_handler(CSRFError, handle_csrf_error)
