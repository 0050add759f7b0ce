"""Request rate limits (Flask-Limiter) and the sign-in throttle's web side.

Limits are settings (``AUTHSERVER_RATELIMIT_*``, in Flask-Limiter's "N/period" notation): per
client address, per client and per account, and budgets per browser session and per refresh
family (a family's rotations are counted in its own row, services/refresh_tokens.py). Counts
live in memory, or in Redis when ``AUTHSERVER_RATELIMIT_STORAGE_URI`` names one, so that
several processes share them, under ``AUTHSERVER_RATELIMIT_KEY_PREFIX`` when several
deployments share one store. A refusal is 429 with ``Retry-After`` (RFC 6585 §4).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable

from flask import Flask, Response, g, render_template, request
from flask_babel import gettext
from flask_limiter import ApplicationLimit, Limiter, RequestLimit
from flask_limiter.util import get_remote_address
from itsdangerous import BadSignature, URLSafeTimedSerializer

from authserver.config import Config, parse_rate_limit
from authserver.errors import TooManyAttempts
from authserver.http.audit import audit
from authserver.http.web import session_cookie_name
from authserver.runtime import runtime
from authserver.services.audit import AuditEventType
from authserver.services.sign_in_throttle import throttle_account

log = logging.getLogger(__name__)


def _browser_session_cookie() -> str | None:
    return request.cookies.get(session_cookie_name(runtime().config)) or None


def browser_session_key() -> str:
    """A browser session's own budget, keyed by a digest of its cookie: the session id itself
    never reaches the rate-limit store. A forged cookie gets a budget of its own, which costs
    nobody else anything (the per-address limits still count it)."""
    cookie = _browser_session_cookie() or ""
    return "browser-session:" + hashlib.sha256(cookie.encode("utf-8", "replace")).hexdigest()[:32]


def _under_prefix(key_func: Callable[[], str]) -> Callable[[], str]:
    """``key_func``'s key behind AUTHSERVER_RATELIMIT_KEY_PREFIX, read per request like the
    limits: the one Limiter serves every app of a process, and Flask-Limiter's own
    RATELIMIT_KEY_PREFIX keeps the first app's value for all that come after."""

    def key() -> str:
        prefix = runtime().config.ratelimit_key_prefix
        counted = key_func()
        # An empty key stays empty: Flask-Limiter skips the limit, as it did without a prefix.
        return f"{prefix}/{counted}" if prefix and counted else counted

    return key


limiter = Limiter(
    key_func=get_remote_address,
    # Every request a signed-in browser makes, whatever the page, spends from its session's
    # budget (scope "browser_session": one count shared by all routes).
    application_limits=[
        ApplicationLimit(
            limit_provider=lambda: runtime().config.ratelimit_per_browser_session,
            key_function=_under_prefix(browser_session_key),
            scope="browser_session",
            exempt_when=lambda: _browser_session_cookie() is None,
        )
    ],
)

# One audit row per limit and caller per minute: a flood of refused requests must not turn
# into a flood of database writes. When each was last written is kept per app
# (Runtime.rate_limit_reports).
_REPORT_EVERY_SECONDS = 60.0


def _setting(name: str) -> Callable[[], str]:
    def read() -> str:
        value: str = getattr(runtime().config, name)
        return value

    return read


def claimed_client_id() -> str:
    """The client the request says it is (authenticated or not): per-client limits must
    count before authentication, or a wrong-secret flood would go uncounted."""
    authorization = request.authorization
    if authorization is not None and authorization.type == "basic" and authorization.username:
        return "client:" + authorization.username[:64]
    client_id = request.form.get("client_id")
    return "client:" + client_id[:64] if client_id else "ip:" + (get_remote_address() or "")


def claimed_account() -> str:
    return "account:" + throttle_account(request.form.get("username") or request.form.get("email"))


def is_password_grant() -> bool:
    return request.form.get("grant_type") == "password"


per_ip = {
    name: limiter.limit(
        _setting(setting), key_func=_under_prefix(get_remote_address), methods=["POST"]
    )
    for name, setting in (
        ("token", "ratelimit_token"),
        ("signin", "ratelimit_signin"),
        ("revocation", "ratelimit_revocation"),
        ("introspection", "ratelimit_introspection"),
    )
}
# The bearer APIs (account API, userinfo): every method, per address, before the token is
# even parsed; each verified token's family has its own budget on top (spend_family_budget).
per_ip_bearer_api = limiter.limit(
    _setting("ratelimit_bearer_api"), key_func=_under_prefix(get_remote_address)
)
per_client = {
    name: limiter.limit(
        _setting(setting), key_func=_under_prefix(claimed_client_id), methods=["POST"]
    )
    for name, setting in (
        ("token", "ratelimit_token_per_client"),
        ("revocation", "ratelimit_revocation"),
        ("introspection", "ratelimit_introspection"),
    )
}
per_account = limiter.limit(
    _setting("ratelimit_signin_per_account"),
    key_func=_under_prefix(claimed_account),
    methods=["POST"],
)
per_account_password_grant = limiter.limit(
    _setting("ratelimit_signin_per_account"),
    key_func=_under_prefix(claimed_account),
    methods=["POST"],
    exempt_when=lambda: not is_password_grant(),
)


def _claimed_address(kind: str) -> Callable[[], str]:
    """The address a form asks for ("Forgot password?", sign-up), as a digest of its
    normalised form: the rate-limit store (Redis, maybe shared) never holds the address."""

    def key() -> str:
        account = throttle_account(request.form.get("email"))
        return f"{kind}:" + hashlib.sha256(account.encode("utf-8", "replace")).hexdigest()[:32]

    return key


claimed_reset_address = _claimed_address("reset-email")
claimed_signup_address = _claimed_address("signup-email")

per_ip_password_reset = limiter.limit(
    _setting("ratelimit_password_reset"),
    key_func=_under_prefix(get_remote_address),
    methods=["POST"],
)
per_email_password_reset = limiter.limit(
    _setting("ratelimit_password_reset_per_email"),
    key_func=_under_prefix(claimed_reset_address),
    methods=["POST"],
)
per_ip_signup = limiter.limit(
    _setting("ratelimit_signup"), key_func=_under_prefix(get_remote_address), methods=["POST"]
)
per_email_signup = limiter.limit(
    _setting("ratelimit_signup_per_email"),
    key_func=_under_prefix(claimed_signup_address),
    methods=["POST"],
)

# Dynamic client registration (http/client_registration.py): every method, per address,
# before the initial or registration access token is even looked up.
per_ip_registration = limiter.limit(
    _setting("ratelimit_registration"), key_func=_under_prefix(get_remote_address)
)


def spend_family_budget(family_id: str | None, jti: str) -> None:
    """One request from the budget of the refresh family a verified access token belongs to
    (of the token itself when it has none), counted in the rate-limit store.

    Flask-Limiter's decorators choose their key before the view runs, when the token is not
    verified yet, and a key taken from an unverified token would let anyone spend another
    family's budget; so the bearer boundary spends it here, after verification. A full budget
    is 429 with Retry-After. If the store is unreachable nothing is refused (as with
    Flask-Limiter's own limits, which fall back to memory)."""
    config = runtime().config
    if not config.ratelimit_enabled:
        return
    item = parse_rate_limit(config.ratelimit_per_family)
    prefix = config.ratelimit_key_prefix
    identity = [*([prefix] if prefix else []), "family-budget"]
    identity.append(f"family:{family_id}" if family_id else f"token:{jti[:64]}")
    try:
        if limiter.limiter.hit(item, *identity):
            return
        reset_at = limiter.limiter.get_window_stats(item, *identity).reset_time
    except Exception:  # any storage failure: count nothing rather than refuse
        log.warning("rate-limit store unavailable for the family budget")
        return
    _report(f"{':'.join(identity)}/{item}", str(item))
    raise TooManyAttempts(max(1, math.ceil(reset_at - time.time())))


def _report_breach(limit: RequestLimit) -> Response | None:
    # For errors.py, which answers the 429: when this window frees a slot.
    g.retry_after = max(1, math.ceil(limit.reset_at - time.time()))
    _report(f"{limit.key}/{limit.limit}", str(limit.limit))
    return None


def _report(key: str, limit: str) -> None:
    """An audit row for a refusal, at most once a minute per limit and caller."""
    now = time.monotonic()
    last_reported = runtime().rate_limit_reports
    if now - last_reported.get(key, float("-inf")) >= _REPORT_EVERY_SECONDS:
        if len(last_reported) > 10_000:
            last_reported.clear()
        last_reported[key] = now
        audit(
            AuditEventType.RATE_LIMIT_HIT,
            endpoint=request.endpoint or request.path[:100],
            limit=limit,
        )


# -- trusted devices (see services/sign_in_throttle.py) ------------------------------------

DEVICE_COOKIE_MAX_AGE = 180 * 24 * 3600


def device_cookie_name(config: Config) -> str:
    return "__Host-authserver-device" if config.secure_cookies else "authserver_device"


def _account_tag(account: str) -> str:
    # The cookie names the account by a digest, not by its email.
    return hashlib.sha256(account.encode()).hexdigest()[:32]


def _serializer(config: Config) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(config.secret_key, salt="authserver trusted device")


def is_trusted_device(account: str) -> bool:
    config = runtime().config
    cookie = request.cookies.get(device_cookie_name(config))
    if not cookie:
        return False
    try:
        tags = _serializer(config).loads(cookie, max_age=DEVICE_COOKIE_MAX_AGE)
    except BadSignature:
        return False
    return isinstance(tags, list) and _account_tag(account) in tags


def remember_device(response: Response, account: str) -> None:
    config = runtime().config
    tags: list[str] = []
    cookie = request.cookies.get(device_cookie_name(config))
    if cookie:
        try:
            loaded = _serializer(config).loads(cookie, max_age=DEVICE_COOKIE_MAX_AGE)
            tags = [t for t in loaded if isinstance(t, str)] if isinstance(loaded, list) else []
        except BadSignature:
            tags = []
    tag = _account_tag(account)
    tags = [tag, *[t for t in tags if t != tag]][:10]
    response.set_cookie(
        device_cookie_name(config),
        _serializer(config).dumps(tags),
        max_age=DEVICE_COOKIE_MAX_AGE,
        path="/",
        secure=config.secure_cookies,
        httponly=True,
        samesite="Lax",
    )


def init_rate_limits(app: Flask, config: Config) -> None:
    app.config.update(
        RATELIMIT_STORAGE_URI=config.ratelimit_storage_uri,
        # Flask-Limiter's own headers would put a Retry-After on every answer, even a 200,
        # and overwrite the throttle's; errors.py sets it on the 429s instead.
        RATELIMIT_HEADERS_ENABLED=False,
        # A sliding window kept as two counters per key (the previous window's count, weighted
        # by how much of it still overlaps, plus the current one): constant cost per check.
        # The exact moving window keeps one entry per request, so with a limit of thousands a
        # minute every check cost as much as the rest of an introspection (docs/PERFORMANCE.md).
        RATELIMIT_STRATEGY="sliding-window-counter",
        RATELIMIT_ENABLED=bool(config.ratelimit_enabled),
        # A broken Redis must not take sign-in down: fall back to counting in memory.
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        RATELIMIT_SWALLOW_ERRORS=True,
    )
    app.config["RATELIMIT_ON_BREACH_CALLBACK"] = _report_breach  # the one hook for every limit
    limiter.init_app(app)


def too_many_requests_page(message: str) -> tuple[str, int, dict[str, str]]:
    """Flask-Limiter's refusal of a page's form, as a page (the JSON one is for API
    clients), with the Retry-After the limit set."""
    page = render_template("error.html", title=gettext("Too many requests"), message=message)
    return page, 429, {"Retry-After": str(g.get("retry_after", 60))}
