"""Configuration, read once from the environment into one frozen object.

Every setting is an environment variable: ``DATABASE_URL`` and ``AUTHSERVER_*``. Reading fails
fast: a value that does not parse is a problem, and in production a missing or development
secret, a non-https issuer or an SQLite database is a problem too. All problems are collected
and reported together, one line each, so an operator fixes them in one pass.
"""

from __future__ import annotations

import email.policy
import functools
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from email.headerregistry import Address
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from limits import RateLimitItem, parse_many

from authserver.own_apis import own_audiences

DEVELOPMENT = "development"
PRODUCTION = "production"

# Known values so that production can recognise and refuse them.
DEV_SECRET_KEY = "authserver-development-secret-key-do-not-use-in-production"  # noqa: S105
DEV_KEY_ENCRYPTION_KEY = "authserver-development-key-encryption-key-not-for-production"

MIN_SECRET_LENGTH = 32
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SIGNING_ALGORITHMS = ("ES256", "RS256")
# A key prefix goes into every rate-limit key: nothing that would need quoting anywhere.
RATELIMIT_KEY_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{0,64}")
# AUTHSERVER_SMTP_URL's schemes and their ports when the URL names none: plain (a relay on
# the same host or network), STARTTLS on the submission port (RFC 6409, RFC 3207) and
# implicit TLS (RFC 8314 §3.3).
SMTP_SCHEMES = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
# AUTHSERVER_SIGNUP: who may create an account besides the operator (services/signup.py).
SIGNUP_OFF = "off"
SIGNUP_OPEN = "open"
SIGNUP_INVITE = "invite"
SIGNUP_MODES = (SIGNUP_OFF, SIGNUP_OPEN, SIGNUP_INVITE)
DEV_MAIL_FROM = "no-reply@localhost"
# AUTHSERVER_PRIMARY_COLOR: a CSS hex colour, nothing else (it is written into a stylesheet).
HEX_COLOR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
# What may not appear in a URL written into a page's attribute or the CSP header.
_UNSAFE_IN_URL = re.compile(r"[\x00-\x20\"'<>\\;,`]")


def _is_web_url(url: str, production: bool) -> bool:
    """An absolute https URL (http too on a loopback host, outside production)."""
    parts = urlsplit(url)
    if not parts.hostname or parts.username or parts.password:
        return False
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and not production and parts.hostname in LOOPBACK_HOSTS


def _is_page_asset_url(url: str, production: bool) -> bool:
    """A logo's address: an https URL, or a path on this server (/static/..., not //host)."""
    if _UNSAFE_IN_URL.search(url) or len(url) > 2000:
        return False
    if url.startswith("/"):
        return not url.startswith("//")
    return _is_web_url(url, production)


def _is_support_url(url: str, production: bool) -> bool:
    if _UNSAFE_IN_URL.search(url) or len(url) > 2000:
        return False
    if url.startswith("mailto:"):
        return "@" in url
    return _is_web_url(url, production)


RATE_LIMIT_SETTINGS = (
    "ratelimit_token",
    "ratelimit_token_per_client",
    "ratelimit_signin",
    "ratelimit_signin_per_account",
    "ratelimit_introspection",
    "ratelimit_revocation",
    "ratelimit_bearer_api",
    "ratelimit_per_browser_session",
    "ratelimit_per_family",
    "ratelimit_password_reset",
    "ratelimit_password_reset_per_email",
    "ratelimit_signup",
    "ratelimit_signup_per_email",
    "ratelimit_registration",
)


@functools.cache
def parse_rate_limit(value: str) -> RateLimitItem:
    """One rate in the notation of the ``limits`` library (Flask-Limiter's): "600/minute".
    ValueError if it is not one, or if it names several."""
    parsed = parse_many(value)
    if len(parsed) != 1:
        raise ValueError(f"one rate expected, got {value!r}")
    return parsed[0]


def default_database_url(instance_dir: str) -> str:
    """The embedded development database: SQLite under the instance folder."""
    return f"sqlite:///{Path(instance_dir).resolve() / 'authserver.db'}"


# The URL schemes of the databases authserver runs on, with the driver it ships with.
DATABASE_SCHEMES = ("postgresql+psycopg", "sqlite", "sqlite+pysqlite")


def normalise_database_url(url: str) -> str:
    """``postgres://`` (the spelling Heroku-style platforms hand out) and ``postgresql://``
    without a driver both mean PostgreSQL through psycopg 3, the driver authserver ships
    with."""
    scheme, separator, rest = url.strip().partition("://")
    if separator and scheme.lower() in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}"
    return url.strip()


def database_url_problem(url: str) -> str | None:
    """Why DATABASE_URL names no database authserver runs on, or None. Only the scheme is
    quoted: the rest of the URL may carry a password."""
    scheme, separator, _ = url.partition("://")
    if not separator:
        return (
            "DATABASE_URL must be a URL like postgresql+psycopg://USER@HOST/NAME or sqlite:///PATH"
        )
    if scheme.lower() in DATABASE_SCHEMES:
        return None
    if scheme.lower().startswith("postgresql+"):
        return (
            f"DATABASE_URL names the driver {scheme.partition('+')[2]!r}; authserver ships with "
            "psycopg 3: postgresql+psycopg://USER@HOST/NAME"
        )
    return (
        f"DATABASE_URL names a {scheme}:// database; authserver runs on PostgreSQL "
        "(postgresql+psycopg://USER@HOST/NAME) and SQLite (sqlite:///PATH) only"
    )


@dataclass(frozen=True)
class SmtpServer:
    """Where mail goes (AUTHSERVER_SMTP_URL). ``password`` is never shown: not in a repr,
    not in a log line, not in a configuration error."""

    scheme: str
    host: str
    port: int
    username: str = ""
    password: str = field(default="", repr=False)

    @property
    def implicit_tls(self) -> bool:
        return self.scheme == "smtps"

    @property
    def starttls(self) -> bool:
        return self.scheme == "smtp+starttls"


def parse_smtp_url(url: str) -> SmtpServer:
    """``smtp://``, ``smtp+starttls://`` or ``smtps://``, with an optional ``user:password@``
    (percent-encoded) and port. ValueError saying what is wrong, never repeating the URL (it
    may hold a password)."""
    parts = urlsplit(url)
    if parts.scheme not in SMTP_SCHEMES:
        raise ValueError(
            "must start with smtp://, smtp+starttls:// or smtps://"
            + (f", got {parts.scheme}://" if parts.scheme and len(parts.scheme) < 20 else "")
        )
    try:
        port = parts.port or SMTP_SCHEMES[parts.scheme]
    except ValueError:
        raise ValueError("has a port that is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must have no path, query or fragment")
    return SmtpServer(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port,
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
    )


def parse_mail_address(value: str) -> Address:
    """One address, optionally with a display name: ``no-reply@example.com`` or
    ``Example <no-reply@example.com>``. ValueError if it is not exactly that."""
    if any(c in value for c in "\r\n\0"):
        raise ValueError("must be one line")
    try:
        header = email.policy.default.header_factory("To", value)
    except Exception:  # the stdlib parser raises IndexError on some inputs ("x@")
        raise ValueError("must be one address like no-reply@example.com") from None
    addresses: tuple[Address, ...] = tuple(getattr(header, "addresses", ()))
    if header.defects or len(addresses) != 1:
        raise ValueError("must be one address like no-reply@example.com")
    found = addresses[0]
    if (
        not found.username
        or not found.domain
        or " " in found.addr_spec
        or found.addr_spec != parseaddr(value)[1]
    ):
        raise ValueError("must be one address like no-reply@example.com")
    return found


class ConfigError(Exception):
    """The environment does not describe a server that may start."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Config:
    env: str = DEVELOPMENT
    database_url: str = ""
    issuer: str = "http://127.0.0.1:8000"
    secret_key: str = DEV_SECRET_KEY
    key_encryption_key: str = DEV_KEY_ENCRYPTION_KEY
    instance_dir: str = "instance"

    # Tokens (seconds).
    access_token_ttl: int = 600
    refresh_idle_ttl: int = 14 * 24 * 3600
    refresh_absolute_ttl: int = 30 * 24 * 3600
    # A retry of the previous refresh token inside this window gets the same successor back
    # instead of being treated as theft; 0 turns the window off.
    refresh_reuse_grace: int = 15
    default_audience: str = ""
    signing_alg: str = "ES256"
    jwks_max_age: int = 900
    # How often a process re-reads the signing keys, so a rotation or a withdrawal done
    # elsewhere is seen: one small SELECT per process per interval.
    key_refresh_interval: int = 5
    # 1: on PostgreSQL each server process also listens for key changes (LISTEN/NOTIFY) and
    # re-reads its keys at once, so a withdrawn key leaves every JWKS and stops signing now;
    # 0 (behind a pooler in transaction mode, where LISTEN cannot work): the interval only.
    key_change_notifications: int = 1
    # Automatic rotation: a new key is published this many days after the current one began
    # signing; 0 turns it off (rotate with `authserver keys rotate`).
    key_rotation_days: int = 0

    # Browser sessions (seconds) and authorization codes.
    session_idle_ttl: int = 30 * 60
    session_absolute_ttl: int = 12 * 3600
    authorization_code_ttl: int = 60
    # How long a pushed authorization request's request_uri works (RFC 9126 §2.2), seconds:
    # the whole sign-in it starts must fit in it, since the request is used up only when
    # the authorization endpoint answers.
    par_ttl: int = 600
    # 1: every client must push its authorization requests first (RFC 9126 §5).
    require_par: int = 0
    # 1: DPoP proofs must carry a nonce the server handed out (RFC 9449 §8, §9): a proof
    # made ahead of time by someone who briefly held the key is then useless. Clients learn
    # the nonce from a use_dpop_nonce answer and the DPoP-Nonce header, at one extra round
    # trip when it changes (every 5 minutes).
    dpop_nonce: int = 0
    # The device authorization grant (RFC 8628): how long a device code and its user code
    # work, and the polling interval a device must keep, seconds.
    device_code_ttl: int = 600
    device_poll_interval: int = 5
    # How long a password reset link works, seconds (services/account_links.py).
    password_reset_ttl: int = 30 * 60
    # At most this many reset messages are mailed per account an hour, whoever asks.
    password_reset_mails_per_hour: int = 3
    # How long an address verification or address change link works, seconds.
    email_verification_ttl: int = 24 * 3600
    # At most this many verification (and, apart, address change) links are mailed per
    # account an hour.
    email_link_mails_per_hour: int = 3
    # Accounts made by their owners: off (only `authserver users create`), open (a sign-up
    # page, and invitations) or invite (only `authserver users invite`). services/signup.py.
    signup: str = SIGNUP_OFF
    # How long a sign-up link works (seconds): the person is waiting for it.
    signup_link_ttl: int = 3600
    # How long an invitation works (seconds): it may wait in a mailbox for days.
    invitation_ttl: int = 7 * 24 * 3600
    # At most this many sign-up messages (a link, or "this address has an account") are
    # mailed to one address an hour, whoever asks.
    signup_mails_per_hour: int = 3
    # 1: mail the user when the sign-in page signs them in from a browser that has not signed
    # in to the account before (services/security_notices.py). Off by default: a browser that
    # keeps no cookies would be "new" at every sign-in.
    new_device_notices: int = 0
    # 1: every user must sign in with two factors (README "Second factors"): the
    # authorization endpoint asks for the second one, or has it set up first, and the
    # password grant is refused. A client can ask the same for its own users alone.
    require_second_factor: int = 0
    # 1: a browser that carries the account's device cookie (it signed in to the account
    # before) is signed in with the password alone, its session saying so (amr pwd); what
    # needs two factors then asks for the code. 0: the code is asked every time.
    trusted_device_skips_second_factor: int = 0
    # 1: clients may register themselves at POST /register (RFC 7591) and manage their
    # registration at /register/<client_id> (RFC 7592), each with an initial access token the
    # operator made (`authserver registration-tokens create`); discovery then advertises
    # registration_endpoint. 0: those endpoints are 404.
    dynamic_registration: int = 0

    # Passwords: argon2id, at least OWASP's minimum (m=19 MiB, t=2, p=1).
    argon2_time_cost: int = 2
    argon2_memory_cost_kib: int = 19 * 1024
    argon2_parallelism: int = 1
    password_max_bytes: int = 1024
    password_min_length: int = 8
    # zxcvbn score (0-4) a new password must reach (services/password_policy.py); 0: no check.
    password_min_score: int = 3
    # How many hashes may run at once; more would only queue inside the CPU and cost memory.
    hash_concurrency: int = field(default_factory=lambda: os.cpu_count() or 1)

    # Request rate limits ("N/period", Flask-Limiter notation) and where counts are kept:
    # "memory://" (per process) or a Redis URL shared by every process.
    ratelimit_enabled: int = 1
    ratelimit_storage_uri: str = "memory://"
    # Put before every key in the store, so that deployments (or test runs) sharing one Redis
    # count apart; empty: no prefix.
    ratelimit_key_prefix: str = ""
    ratelimit_token: str = "600/minute"  # noqa: S105 (a rate, not a secret)
    ratelimit_token_per_client: str = "1200/minute"  # noqa: S105
    ratelimit_signin: str = "60/minute"
    ratelimit_signin_per_account: str = "20/minute"
    ratelimit_introspection: str = "6000/minute"
    ratelimit_revocation: str = "600/minute"
    # Budgets of one browser session (every request it makes) and of one refresh family (its
    # rotations, and its access tokens' calls to the account API and userinfo).
    ratelimit_bearer_api: str = "600/minute"
    ratelimit_per_browser_session: str = "300/minute"
    ratelimit_per_family: str = "120/minute"
    # "Forgot password?" requests (POST /password/forgot), per client address and per address
    # asked for (keyed by a digest of the normalised address, never the address itself).
    ratelimit_password_reset: str = "20/hour"  # noqa: S105 (a rate, not a secret)
    ratelimit_password_reset_per_email: str = "5/hour"  # noqa: S105
    # Sign-up requests (POST /signup), likewise per client address and per address asked for.
    ratelimit_signup: str = "20/hour"
    ratelimit_signup_per_email: str = "5/hour"
    # Dynamic client registration (POST /register and /register/<client_id>, every method),
    # per client address.
    ratelimit_registration: str = "60/hour"
    # Failed guesses (services/sign_in_throttle.py).
    signin_free_failures: int = 5
    signin_failures_per_hour: int = 100

    # `authserver purge` deletes audit events older than this many days.
    audit_retention_days: int = 365
    # How often (milliseconds) the token_issued rows of client_credentials tokens are written,
    # in batches, off the request path: such a token changes no state, so nothing need commit
    # before it is handed out, and client_credentials keeps answering while the database is
    # down. 0: each row commits before its token leaves, and the grant answers 503 during an
    # outage. Every other event commits with its request (services/audit_queue.py).
    token_audit_flush_ms: int = 200

    # How long a process may answer from its memory of a client registration (seconds; 0:
    # read it on every request). A client disabled elsewhere is refused within this time.
    client_cache_seconds: int = 5
    # How long the secret `clients rotate-secret` replaces keeps authenticating (seconds; 0:
    # not at all), so a client's deployments can take up the new one one by one.
    client_secret_overlap_seconds: int = 86400

    # The outbox (services/outbox.py): messages for other systems, such as back-channel logout
    # tokens, delivered at least once. 1: every server process runs a sender thread; 0: only
    # `authserver outbox deliver` delivers them.
    outbox_in_process: int = 1
    # The longest wait between two attempts at one message (exponential backoff with jitter,
    # up to this): a receiver that comes back is reached within about this long.
    outbox_retry_max_seconds: int = 60
    # A message still undelivered this long after it was written is given up, and audited.
    outbox_give_up_seconds: int = 24 * 3600

    # The product's name, in every e-mail's subject, body and From display name, and at the
    # top and in the title of every page.
    product_name: str = "authserver"
    # Branding of the pages (http/branding.py): a logo shown beside the product's name (an
    # https URL, or a path on this server), the colour of buttons and links (#rgb or #rrggbb),
    # and where people get help (an https or mailto: URL), linked at the foot of every page.
    logo_url: str = ""
    primary_color: str = ""
    support_url: str = ""
    # A folder whose templates are used instead of the package's of the same name
    # (templates/login.html, mail/...), for an operator's own wording or layout.
    template_dir: str = ""
    # Where e-mail goes: smtp:// (plain), smtp+starttls:// or smtps:// (implicit TLS), with
    # user:password@ in the URL. Empty: development prints each message to the console and
    # shows it at /dev/mail; production sends none (services/mail.py).
    smtp_url: str = field(default="", repr=False)
    # A PEM file of the certificate authorities the SMTP server's certificate must chain to,
    # instead of the system's (a relay with a private CA). Verification is never turned off.
    smtp_ca_file: str = ""
    # The From address of every e-mail; required in production when mail is sent.
    mail_from: str = ""

    # psycopg's server-side prepared statements: after this many runs of a statement on one
    # connection; 0 turns them off (needed behind PgBouncer < 1.21 in transaction mode).
    db_prepare_threshold: int = 5

    # The bearer credential a Prometheus scraper sends to GET /metrics. Empty: /metrics is off
    # (404): its counters describe attacks in progress and are nobody else's business.
    metrics_token: str = ""

    # Number of reverse proxies in front of the server whose X-Forwarded-* headers are trusted.
    trusted_proxies: int = 0
    log_level: str = "INFO"

    @property
    def is_production(self) -> bool:
        return self.env == PRODUCTION

    @property
    def secure_cookies(self) -> bool:
        """Cookies are Secure and __Host- prefixed, except in development on a loopback http
        issuer (http://127.0.0.1:8000), where a browser would drop Secure cookies."""
        issuer = urlsplit(self.issuer)
        loopback_http = issuer.scheme == "http" and issuer.hostname in LOOPBACK_HOSTS
        return self.is_production or not loopback_http

    @property
    def smtp_server(self) -> SmtpServer | None:
        """AUTHSERVER_SMTP_URL parsed; None when it is not set."""
        return parse_smtp_url(self.smtp_url) if self.smtp_url else None

    @property
    def mail_sender(self) -> Address:
        """The From of every e-mail: AUTHSERVER_MAIL_FROM, else (development) no-reply@localhost;
        named after the product when the setting gives no display name."""
        address = parse_mail_address(self.mail_from or DEV_MAIL_FROM)
        if address.display_name:
            return address
        return Address(display_name=self.product_name, addr_spec=address.addr_spec)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Build and validate a Config from ``environ`` (default: the process environment)."""
        env_map = os.environ if environ is None else environ
        problems: list[str] = []
        unparsed: list[str] = []
        values: dict[str, Any] = {}
        defaults = cls()
        for f in fields(cls):
            name = "DATABASE_URL" if f.name == "database_url" else f"AUTHSERVER_{f.name.upper()}"
            raw = env_map.get(name)
            if raw is None or raw == "":
                continue
            default = getattr(defaults, f.name)
            parse: Callable[[str], Any] = int if isinstance(default, int) else str
            try:
                values[f.name] = parse(raw.strip())
            except ValueError:
                problems.append(f"{name} must be a whole number, got {raw!r}")
                unparsed.append(name)
        if "database_url" in values:
            values["database_url"] = normalise_database_url(values["database_url"])
        else:
            values["database_url"] = default_database_url(values.get("instance_dir", "instance"))
        config = cls(**values)
        # A value that did not parse was replaced by its default; checks comparing it with
        # other settings would only report that default.
        problems.extend(p for p in config.problems() if not any(n in p for n in unparsed))
        if problems:
            raise ConfigError(problems)
        return config

    def problems(self) -> list[str]:
        """Everything wrong with this configuration, one line each."""
        problems: list[str] = []
        database_problem = database_url_problem(self.database_url)
        if database_problem:
            problems.append(database_problem)
        if self.env not in (DEVELOPMENT, PRODUCTION):
            problems.append(
                f"AUTHSERVER_ENV must be '{DEVELOPMENT}' or '{PRODUCTION}', got {self.env!r}"
            )
        issuer = urlsplit(self.issuer)
        if issuer.scheme not in ("http", "https") or not issuer.netloc:
            problems.append(f"AUTHSERVER_ISSUER must be an absolute URL, got {self.issuer!r}")
        # RFC 8414 §2: the issuer has no query or fragment components.
        if issuer.query or issuer.fragment or self.issuer.endswith("/"):
            problems.append("AUTHSERVER_ISSUER must have no query, fragment or trailing slash")
        if self.signing_alg not in SIGNING_ALGORITHMS:
            problems.append(
                f"AUTHSERVER_SIGNING_ALG must be one of {', '.join(SIGNING_ALGORITHMS)}, "
                f"got {self.signing_alg!r}"
            )
        positive = (
            "access_token_ttl",
            "session_idle_ttl",
            "session_absolute_ttl",
            "authorization_code_ttl",
            "par_ttl",
            "device_code_ttl",
            "device_poll_interval",
            "password_reset_ttl",
            "password_reset_mails_per_hour",
            "email_verification_ttl",
            "email_link_mails_per_hour",
            "signup_link_ttl",
            "invitation_ttl",
            "signup_mails_per_hour",
            "refresh_idle_ttl",
            "refresh_absolute_ttl",
            "jwks_max_age",
            "key_refresh_interval",
            "argon2_time_cost",
            "argon2_parallelism",
            "password_max_bytes",
            "hash_concurrency",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                problems.append(f"AUTHSERVER_{name.upper()} must be positive")
        if self.signup not in SIGNUP_MODES:
            problems.append(
                f"AUTHSERVER_SIGNUP must be one of {', '.join(SIGNUP_MODES)}, got {self.signup!r}"
            )
        if self.refresh_reuse_grace < 0:
            problems.append("AUTHSERVER_REFRESH_REUSE_GRACE must be 0 (off) or positive")
        if self.refresh_idle_ttl > self.refresh_absolute_ttl:
            problems.append(
                "AUTHSERVER_REFRESH_IDLE_TTL must not exceed AUTHSERVER_REFRESH_ABSOLUTE_TTL"
            )
        if self.session_idle_ttl > self.session_absolute_ttl:
            problems.append(
                "AUTHSERVER_SESSION_IDLE_TTL must not exceed AUTHSERVER_SESSION_ABSOLUTE_TTL"
            )
        if self.argon2_memory_cost_kib < 19 * 1024:
            problems.append(
                "AUTHSERVER_ARGON2_MEMORY_COST_KIB must be at least 19456 (OWASP minimum)"
            )
        if self.argon2_time_cost < 2 and self.argon2_memory_cost_kib < 46 * 1024:
            problems.append("AUTHSERVER_ARGON2_TIME_COST must be at least 2 with under 46 MiB")
        if self.password_min_length < 1:
            problems.append("AUTHSERVER_PASSWORD_MIN_LENGTH must be at least 1")
        if not 0 <= self.password_min_score <= 4:
            problems.append("AUTHSERVER_PASSWORD_MIN_SCORE must be 0 (off) to 4")
        if self.default_audience:
            audience = urlsplit(self.default_audience)
            if not audience.scheme or "#" in self.default_audience:
                problems.append(
                    "AUTHSERVER_DEFAULT_AUDIENCE must be an absolute URI without fragment"
                )
        for name in RATE_LIMIT_SETTINGS:
            # The family budget is counted by authserver itself: one rate. Flask-Limiter's own
            # limits take several, separated by ";".
            parse = parse_rate_limit if name == "ratelimit_per_family" else parse_many
            try:
                parse(getattr(self, name))
            except ValueError:
                problems.append(
                    f"AUTHSERVER_{name.upper()} must be a rate like 600/minute, "
                    f"got {getattr(self, name)!r}"
                )
        if self.default_audience and self.default_audience in own_audiences(self.issuer):
            problems.append(
                "AUTHSERVER_DEFAULT_AUDIENCE must not be an audience of authserver's own APIs "
                f"({self.default_audience}): such tokens are only issued when asked for by name"
            )
        if self.log_level.upper() not in logging.getLevelNamesMapping():
            problems.append(
                "AUTHSERVER_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
            )
        if self.key_rotation_days < 0:
            problems.append("AUTHSERVER_KEY_ROTATION_DAYS must be 0 (off) or positive")
        if self.audit_retention_days < 1:
            problems.append("AUTHSERVER_AUDIT_RETENTION_DAYS must be at least 1")
        if self.token_audit_flush_ms < 0:
            problems.append("AUTHSERVER_TOKEN_AUDIT_FLUSH_MS must be 0 (off) or positive")
        if self.client_cache_seconds < 0:
            problems.append("AUTHSERVER_CLIENT_CACHE_SECONDS must be 0 (off) or positive")
        if self.client_secret_overlap_seconds < 0:
            problems.append("AUTHSERVER_CLIENT_SECRET_OVERLAP_SECONDS must be 0 (none) or positive")
        if not RATELIMIT_KEY_PREFIX.fullmatch(self.ratelimit_key_prefix):
            problems.append(
                "AUTHSERVER_RATELIMIT_KEY_PREFIX must be at most 64 letters, digits, '-', '_', "
                "'.' or ':'"
            )
        if self.key_change_notifications not in (0, 1):
            problems.append("AUTHSERVER_KEY_CHANGE_NOTIFICATIONS must be 0 or 1")
        if self.trusted_device_skips_second_factor not in (0, 1):
            problems.append("AUTHSERVER_TRUSTED_DEVICE_SKIPS_SECOND_FACTOR must be 0 or 1")
        if self.require_second_factor not in (0, 1):
            problems.append("AUTHSERVER_REQUIRE_SECOND_FACTOR must be 0 or 1")
        if self.require_par not in (0, 1):
            problems.append("AUTHSERVER_REQUIRE_PAR must be 0 or 1")
        if self.dpop_nonce not in (0, 1):
            problems.append("AUTHSERVER_DPOP_NONCE must be 0 or 1")
        if self.dynamic_registration not in (0, 1):
            problems.append("AUTHSERVER_DYNAMIC_REGISTRATION must be 0 or 1")
        if self.new_device_notices not in (0, 1):
            problems.append("AUTHSERVER_NEW_DEVICE_NOTICES must be 0 or 1")
        if self.outbox_in_process not in (0, 1):
            problems.append("AUTHSERVER_OUTBOX_IN_PROCESS must be 0 or 1")
        if self.outbox_retry_max_seconds < 1:
            problems.append("AUTHSERVER_OUTBOX_RETRY_MAX_SECONDS must be at least 1")
        if self.outbox_give_up_seconds < self.outbox_retry_max_seconds:
            problems.append(
                "AUTHSERVER_OUTBOX_GIVE_UP_SECONDS must be at least "
                "AUTHSERVER_OUTBOX_RETRY_MAX_SECONDS"
            )
        if self.trusted_proxies < 0:
            problems.append("AUTHSERVER_TRUSTED_PROXIES must be 0 or positive")
        problems.extend(self._mail_problems())
        problems.extend(self._branding_problems())
        if self.is_production:
            problems.extend(self._production_problems())
        return problems

    def _mail_problems(self) -> list[str]:
        problems: list[str] = []
        if not self.product_name.strip() or any(c in self.product_name for c in '\r\n<>"'):
            problems.append('AUTHSERVER_PRODUCT_NAME must be one line without <, > or "')
        server = None
        try:
            server = self.smtp_server
        except ValueError as exc:
            problems.append(f"AUTHSERVER_SMTP_URL {exc}")
        if (
            server is not None
            and server.password
            and not (server.implicit_tls or server.starttls or server.host in LOOPBACK_HOSTS)
        ):
            problems.append(
                "AUTHSERVER_SMTP_URL with a password must use smtp+starttls:// or smtps:// "
                "(smtp:// would send it in the clear)"
            )
        if self.smtp_ca_file and not Path(self.smtp_ca_file).is_file():
            problems.append(f"AUTHSERVER_SMTP_CA_FILE names no file: {self.smtp_ca_file}")
        if self.mail_from:
            try:
                parse_mail_address(self.mail_from)
            except ValueError as exc:
                problems.append(f"AUTHSERVER_MAIL_FROM {exc}, got {self.mail_from!r}")
        elif self.is_production and server is not None:
            problems.append("AUTHSERVER_MAIL_FROM must be set when AUTHSERVER_SMTP_URL is")
        return problems

    def _branding_problems(self) -> list[str]:
        problems: list[str] = []
        if self.logo_url and not _is_page_asset_url(self.logo_url, self.is_production):
            problems.append(
                "AUTHSERVER_LOGO_URL must be an https URL or a path starting with /, got "
                f"{self.logo_url[:100]!r}"
            )
        if self.primary_color and not HEX_COLOR.fullmatch(self.primary_color):
            problems.append(
                f"AUTHSERVER_PRIMARY_COLOR must be #rgb or #rrggbb, got {self.primary_color[:20]!r}"
            )
        if self.support_url and not _is_support_url(self.support_url, self.is_production):
            problems.append(
                "AUTHSERVER_SUPPORT_URL must be an https or mailto: URL, got "
                f"{self.support_url[:100]!r}"
            )
        if self.template_dir and not Path(self.template_dir).is_dir():
            problems.append(f"AUTHSERVER_TEMPLATE_DIR names no folder: {self.template_dir}")
        return problems

    def _production_problems(self) -> list[str]:
        problems: list[str] = []
        secrets = (
            ("AUTHSERVER_SECRET_KEY", self.secret_key, DEV_SECRET_KEY),
            ("AUTHSERVER_KEY_ENCRYPTION_KEY", self.key_encryption_key, DEV_KEY_ENCRYPTION_KEY),
        )
        for name, value, dev_value in secrets:
            if value == dev_value:
                problems.append(f"{name} is missing or the development default; set a secret")
            elif len(value) < MIN_SECRET_LENGTH:
                problems.append(f"{name} must be at least {MIN_SECRET_LENGTH} characters")
        if self.metrics_token and len(self.metrics_token) < MIN_SECRET_LENGTH:
            problems.append(
                f"AUTHSERVER_METRICS_TOKEN must be at least {MIN_SECRET_LENGTH} characters"
            )
        if self.secret_key == self.key_encryption_key:
            problems.append("AUTHSERVER_SECRET_KEY and AUTHSERVER_KEY_ENCRYPTION_KEY must differ")
        if urlsplit(self.issuer).scheme != "https":
            problems.append("AUTHSERVER_ISSUER must be an https URL in production")
        if self.is_sqlite:
            problems.append("DATABASE_URL must name PostgreSQL in production, not SQLite")
        return problems
