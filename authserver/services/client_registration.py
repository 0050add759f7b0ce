"""Dynamic client registration: clients register themselves (RFC 7591) and read, replace and
delete their registration (RFC 7592), when ``AUTHSERVER_DYNAMIC_REGISTRATION`` is on.

Who may register is the operator's decision: every registration presents an initial access
token (RFC 7591 §1.2, §3) made with ``authserver registration-tokens create``, which works
until it expires, for a number of registrations, unless revoked. A registered client gets a
registration access token (RFC 7592 §1.1), its only key to its registration. Both are 256-bit
random values shown once; only their SHA-256 digests are stored.

A registration is held to the rules of ``authserver clients create``: the metadata is checked
by the same functions (``services/clients.py``: ``create_client`` and its ``checked_*``
helpers), so redirect URIs are exact (no wildcard, no fragment, https or loopback http), the
grant types are the server's, and the code flow always needs PKCE (S256, the authorization
endpoint's rule for every client). On top of those, what only the operator may grant is never
registered here: the first-party mark (implied consent), the password grant, the scopes and
audiences of the server's own APIs (``own_apis``), resource-server registrations (served
audiences, which open introspection and the revocation feed), per-client lifetimes and
second-factor requirements. A back-channel logout URI must not name a loopback or private
address: the server itself POSTs to it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from authserver.errors import (
    BearerError,
    InvalidClientMetadata,
    InvalidRedirectUri,
    NotFound,
    ValidationError,
)
from authserver.models import Client, InitialAccessToken
from authserver.models.clients import CONFIDENTIAL_AUTH_METHODS, PUBLIC_AUTH_METHOD
from authserver.own_apis import FIRST_PARTY_SCOPES, own_audiences
from authserver.services import clients as client_service
from authserver.services.audit import AuditEventType, record
from authserver.services.device_authorization import DEVICE_CODE_GRANT

TOKEN_BYTES = 32  # 256 bits, for both kinds of token
REGISTRATION_PATH = "/register"
# RFC 7591 §2: what a client that says nothing of them gets.
DEFAULT_GRANT_TYPES = ("authorization_code",)
DEFAULT_AUTH_METHOD = "client_secret_basic"
# RFC 7591 §2 makes client_name optional; users are shown a name on the consent page.
DEFAULT_CLIENT_NAME = "Unnamed application"
# A client that names no scope may ask for the OpenID Connect user scopes (and, with the
# refresh_token grant, offline_access); never for an own API's scope.
DEFAULT_SCOPES = ("openid", "profile", "email")
OFFLINE_ACCESS = "offline_access"
# Grants a client may register itself for: the password grant is the operator's (RFC 9700
# §2.4, and only for first-party clients, which a registration never makes).
REGISTRABLE_GRANT_TYPES = (
    "authorization_code",
    "refresh_token",
    "client_credentials",
    DEVICE_CODE_GRANT,  # RFC 8628 §4: a device, with no redirect URI
)
AUTH_METHODS = (*CONFIDENTIAL_AUTH_METHODS, PUBLIC_AUTH_METHOD)
# Bounds on what one registration may hold: every list and every string.
MAX_LIST_ITEMS = 20
MAX_STRING_LENGTH = 2000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def digest_token(token: str) -> bytes:
    """SHA-256 of an initial or registration access token (256 random bits: a slow hash
    would add nothing)."""
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


def _invalid_token(description: str) -> BearerError:
    # RFC 6750 §3.1 / RFC 7591 §3 / RFC 7592 §2: 401 with a Bearer challenge, the same
    # answer whatever was wrong, so a caller learns nothing by probing.
    return BearerError(401, "invalid_token", description)


# -- initial access tokens (the operator's) --------------------------------------------------


@dataclass(frozen=True)
class IssuedInitialAccessToken:
    row: InitialAccessToken
    # Shown once, to the operator; only its digest is kept.
    token: str


def create_initial_access_token(
    session: Session, now: datetime, *, expires_in: timedelta, uses: int
) -> IssuedInitialAccessToken:
    """A token that registers up to ``uses`` clients until ``expires_in`` from now."""
    if expires_in <= timedelta(0):
        raise ValidationError("the token's lifetime must be positive")
    if uses < 1:
        raise ValidationError("the token must allow at least one registration")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    row = InitialAccessToken(
        token_digest=digest_token(token),
        created_at=now,
        expires_at=now + expires_in,
        uses_allowed=uses,
        uses=0,
    )
    session.add(row)
    session.flush()
    record(
        session,
        AuditEventType.REGISTRATION_TOKEN_CREATED,
        now,
        registration_token_id=row.id,
        uses_allowed=uses,
    )
    return IssuedInitialAccessToken(row, token)


def list_initial_access_tokens(session: Session) -> list[InitialAccessToken]:
    return list(
        session.scalars(
            select(InitialAccessToken).order_by(
                InitialAccessToken.created_at, InitialAccessToken.id
            )
        )
    )


def revoke_initial_access_token(session: Session, token_id: str, now: datetime) -> None:
    """The token registers no client from now on; the clients it registered stay."""
    try:
        row_id = uuid.UUID(token_id)
    except ValueError:
        row_id = None
    row = session.get(InitialAccessToken, row_id) if row_id is not None else None
    if row is None:
        raise NotFound(f"no registration token with the id {token_id.strip()[:64]!r}")
    if row.revoked_at is not None:
        raise ValidationError(f"registration token {row.id} is already revoked")
    row.revoked_at = now
    record(session, AuditEventType.REGISTRATION_TOKEN_REVOKED, now, registration_token_id=row.id)
    session.flush()


def initial_access_token_state(row: InitialAccessToken, now: datetime) -> str:
    """ "usable", "revoked", "expired" or "used up"."""
    if row.revoked_at is not None:
        return "revoked"
    if now >= row.expires_at:
        return "expired"
    if row.uses >= row.uses_allowed:
        return "used up"
    return "usable"


def authenticate_initial_access_token(
    session: Session, presented: str | None, now: datetime
) -> InitialAccessToken:
    """The usable initial access token presented (RFC 7591 §3), or 401: checked before the
    metadata is even read, so a caller without one learns nothing of the rules."""
    if not presented:
        raise _invalid_token("An initial access token is required.")
    row = session.scalars(
        select(InitialAccessToken).where(InitialAccessToken.token_digest == digest_token(presented))
    ).one_or_none()
    if row is None or initial_access_token_state(row, now) != "usable":
        raise _invalid_token("The initial access token is invalid, expired, used up or revoked.")
    return row


def _take_one_use(session: Session, row: InitialAccessToken, now: datetime) -> None:
    """Count the registration against the token, in the one statement that checks it still
    may register (two registrations at once cannot both take its last use)."""
    taken = session.execute(
        update(InitialAccessToken)
        .where(
            InitialAccessToken.id == row.id,
            InitialAccessToken.revoked_at.is_(None),
            InitialAccessToken.expires_at > now,
            InitialAccessToken.uses < InitialAccessToken.uses_allowed,
        )
        .values(uses=InitialAccessToken.uses + 1)
        .returning(InitialAccessToken.id)
        .execution_options(synchronize_session=False)
    ).first()
    if taken is None:
        raise _invalid_token("The initial access token is invalid, expired, used up or revoked.")


# -- client metadata (RFC 7591 §2) -----------------------------------------------------------


@dataclass(frozen=True)
class ClientMetadata:
    """What a registration asks for, type-checked; the rules come after."""

    redirect_uris: list[str]
    grant_types: list[str]
    response_types: list[str] | None
    token_endpoint_auth_method: str
    client_name: str
    scopes: list[str]
    post_logout_redirect_uris: list[str]
    audiences: list[str]
    backchannel_logout_uri: str | None
    backchannel_logout_session_required: bool
    # RFC 9126 §6: its authorization requests must be pushed first.
    require_pushed_authorization_requests: bool
    # RFC 9449 §5.2: its token requests must carry a DPoP proof.
    dpop_bound_access_tokens: bool
    # RFC 7591 §2: shown on the consent page.
    logo_uri: str | None = None
    policy_uri: str | None = None
    tos_uri: str | None = None

    @property
    def public(self) -> bool:
        return self.token_endpoint_auth_method == PUBLIC_AUTH_METHOD


def _storable(value: str) -> bool:
    """At most MAX_STRING_LENGTH characters, no control character (PostgreSQL refuses NUL),
    and UTF-8 (JSON lets a lone surrogate through, which no database column takes)."""
    if len(value) > MAX_STRING_LENGTH or _CONTROL.search(value):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _string(body: dict[str, Any], name: str, *, max_length: int = MAX_STRING_LENGTH) -> str | None:
    """The string field ``name``; None when left out or null (RFC 7591 §2: the default)."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidClientMetadata(f"{name} must be a string")
    if len(value) > max_length or not _storable(value):
        raise InvalidClientMetadata(
            f"{name} must be at most {max_length} characters of UTF-8, without controls"
        )
    return value


def _strings(
    body: dict[str, Any],
    name: str,
    *,
    error: type[InvalidClientMetadata] = InvalidClientMetadata,
) -> list[str] | None:
    """The array-of-strings field ``name``; None when left out or null."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise error(f"{name} must be an array of strings")
    if len(value) > MAX_LIST_ITEMS:
        raise error(f"{name} may hold at most {MAX_LIST_ITEMS} values")
    if not all(_storable(item) for item in value):
        raise error(
            f"each of {name} must be at most {MAX_STRING_LENGTH} characters of UTF-8, "
            "without controls"
        )
    return list(value)


def parse_client_metadata(body: object) -> ClientMetadata:
    """RFC 7591 §2 metadata from a request body, or InvalidClientMetadata (InvalidRedirectUri
    for redirect_uris). Fields this server does not know are ignored (§2); the ones it knows
    get their defaults when left out or null."""
    if not isinstance(body, dict):
        raise InvalidClientMetadata("The request body must be a JSON object.")
    if body.get("served_audiences") is not None:
        raise InvalidClientMetadata(
            "served_audiences is not registrable: only the operator makes resource servers"
        )
    auth_method = _string(body, "token_endpoint_auth_method")
    if auth_method is None:
        auth_method = DEFAULT_AUTH_METHOD
    if auth_method not in AUTH_METHODS:
        raise InvalidClientMetadata(
            f"token_endpoint_auth_method must be one of {', '.join(AUTH_METHODS)}"
        )
    grants = _strings(body, "grant_types")
    if grants is None:
        grants = list(DEFAULT_GRANT_TYPES)
    scope = _string(body, "scope")
    if scope is None:
        scopes = list(DEFAULT_SCOPES) + ([OFFLINE_ACCESS] if "refresh_token" in grants else [])
    else:
        scopes = scope.split()
    name = _string(body, "client_name", max_length=client_service.CLIENT_NAME_MAX_LENGTH)
    session_required = body.get("backchannel_logout_session_required")
    if session_required is not None and not isinstance(session_required, bool):
        raise InvalidClientMetadata("backchannel_logout_session_required must be true or false")
    require_par = body.get("require_pushed_authorization_requests")
    if require_par is not None and not isinstance(require_par, bool):
        raise InvalidClientMetadata("require_pushed_authorization_requests must be true or false")
    dpop_bound = body.get("dpop_bound_access_tokens")
    if dpop_bound is not None and not isinstance(dpop_bound, bool):
        raise InvalidClientMetadata("dpop_bound_access_tokens must be true or false")
    return ClientMetadata(
        redirect_uris=_strings(body, "redirect_uris", error=InvalidRedirectUri) or [],
        grant_types=grants,
        response_types=_strings(body, "response_types"),
        token_endpoint_auth_method=auth_method,
        client_name=DEFAULT_CLIENT_NAME if name is None else name,
        scopes=scopes,
        post_logout_redirect_uris=_strings(body, "post_logout_redirect_uris") or [],
        audiences=_strings(body, "audiences") or [],
        backchannel_logout_uri=_string(body, "backchannel_logout_uri"),
        backchannel_logout_session_required=bool(session_required),
        require_pushed_authorization_requests=bool(require_par),
        logo_uri=_string(body, "logo_uri"),
        policy_uri=_string(body, "policy_uri"),
        tos_uri=_string(body, "tos_uri"),
        dpop_bound_access_tokens=bool(dpop_bound),
    )


def _checked_registration(metadata: ClientMetadata, issuer: str) -> dict[str, Any]:
    """The registration ``metadata`` asks for, checked by the rules of ``clients create``
    (services/clients.py) and by what only the operator may grant; the fields of ``Client``
    it sets, with their checked values. Raises InvalidClientMetadata, or InvalidRedirectUri
    for the redirect URIs (RFC 7591 §3.2.2 names that refusal apart). Everything is checked
    here, before any row is written."""
    for grant in metadata.grant_types:
        if grant not in REGISTRABLE_GRANT_TYPES:
            raise InvalidClientMetadata(
                f"grant type {grant!r} is not registrable; choose from "
                f"{', '.join(REGISTRABLE_GRANT_TYPES)}"
            )
    check = client_service
    grants = _checked(
        check.checked_grant_types, metadata.grant_types, public=metadata.public, first_party=False
    )
    # RFC 7591 §2.1: response_types and grant_types must agree; "code" is the only one.
    expected = ["code"] if "authorization_code" in grants else []
    if metadata.response_types is not None and sorted(set(metadata.response_types)) != expected:
        raise InvalidClientMetadata(
            "response_types must be code with the authorization_code grant, else empty"
        )
    uris = _checked(check.checked_redirect_uris, metadata.redirect_uris, error=InvalidRedirectUri)
    _checked(check.check_redirect_uris_for_grants, grants, uris, error=InvalidRedirectUri)
    scopes = _checked(check.checked_scopes, metadata.scopes)
    own_scopes = sorted(set(scopes) & FIRST_PARTY_SCOPES)
    if own_scopes:
        raise InvalidClientMetadata(
            f"scope {own_scopes[0]!r} is for the operator's own apps and not registrable"
        )
    audiences = _checked(check.checked_audiences, metadata.audiences)
    own = own_audiences(issuer)
    if any(audience in own or audience.rstrip("/") in own for audience in audiences):
        raise InvalidClientMetadata(
            "audiences must not name an API of this server; only the operator's own apps reach them"
        )
    logout_uri = metadata.backchannel_logout_uri
    _checked(
        check.check_backchannel_logout, logout_uri, metadata.backchannel_logout_session_required
    )
    if logout_uri is not None and _is_internal_host(urlsplit(logout_uri).hostname or ""):
        # The server POSTs there itself: not into its own network on a stranger's word.
        raise InvalidClientMetadata(
            "backchannel_logout_uri must not name a loopback, private or link-local address"
        )
    return {
        "name": _checked(check.checked_client_name, metadata.client_name),
        "grant_types": grants,
        "redirect_uris": uris,
        "post_logout_redirect_uris": _checked(
            check.checked_redirect_uris, metadata.post_logout_redirect_uris
        ),
        "scopes": scopes,
        "audiences": audiences,
        "backchannel_logout_uri": logout_uri,
        "backchannel_logout_session_required": metadata.backchannel_logout_session_required,
        "require_pushed_authorization_requests": metadata.require_pushed_authorization_requests,
        "logo_uri": _checked(check.checked_page_link, "logo_uri", metadata.logo_uri),
        "policy_uri": _checked(check.checked_page_link, "policy_uri", metadata.policy_uri),
        "tos_uri": _checked(check.checked_page_link, "tos_uri", metadata.tos_uri),
        "dpop_bound_access_tokens": metadata.dpop_bound_access_tokens,
    }


def _is_internal_host(host: str) -> bool:
    """Whether ``host`` names this machine or a non-public address: "localhost", an IP
    literal that is not global, or one the system resolver reads as such without DNS
    ("2130706433", "127.1" and "0x7f.0.0.1" are all 127.0.0.1 to inet_aton). A name that
    DNS resolves to a private address is not caught here."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host)
    except ValueError:
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return False
    return not address.is_global


def _checked(check: Any, *args: Any, error: type = InvalidClientMetadata, **kwargs: Any) -> Any:
    """``check`` (a rule of services/clients.py), its refusal as ``error``. ValueError is
    urllib's refusal of a URI it cannot parse ("https://[")."""
    try:
        return check(*args, **kwargs)
    except ValidationError as exc:
        raise error(exc.description) from None
    except ValueError:
        raise error("a URI is not a valid URI") from None


# -- registration (RFC 7591 §3) ---------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    client: Client
    # Shown once each, in the registration response; only digests are kept.
    client_secret: str | None
    registration_access_token: str


def register_client(
    session: Session, token: InitialAccessToken, body: object, now: datetime, *, issuer: str
) -> Registration:
    """RFC 7591 §3.1: register the client ``body`` describes, with an initial access token
    (``authenticate_initial_access_token``). One of the token's uses is taken only when the
    client is registered."""
    metadata = parse_client_metadata(body)
    wanted = _checked_registration(metadata, issuer)
    # A savepoint: a refusal after this (the token's last use taken by a registration at the
    # same moment) must not leave a client behind, as the request commits its 401 too.
    with session.begin_nested():
        _take_one_use(session, token, now)
        registered = _checked(
            client_service.create_client,
            session,
            **wanted,
            public=metadata.public,
            first_party=False,
            served_audiences=[],
        )
    client: Client = registered.client
    registration_access_token = secrets.token_urlsafe(TOKEN_BYTES)
    client.registration_access_token_digest = digest_token(registration_access_token)
    session.flush()
    record(
        session,
        AuditEventType.CLIENT_REGISTERED,
        now,
        client_id=client.client_id,
        registration_token_id=token.id,
        grant_type=" ".join(client.grant_types),
        scope=" ".join(client.scopes),
    )
    return Registration(client, registered.client_secret, registration_access_token)


def client_information(
    client: Client, registration_access_token: str, *, issuer: str
) -> dict[str, Any]:
    """RFC 7591 §3.2.1 / RFC 7592 §3: the registered metadata as the server holds it, with
    the registration access token and where to use it. Never the secret (only its digest is
    kept): the registration response adds it once."""
    information: dict[str, Any] = {
        "client_id": client.client_id,
        "client_id_issued_at": int(client.created_at.timestamp()),
        "client_name": client.name,
        "redirect_uris": list(client.redirect_uris),
        "grant_types": list(client.grant_types),
        "response_types": ["code"] if "authorization_code" in client.grant_types else [],
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "scope": " ".join(client.scopes),
        "post_logout_redirect_uris": list(client.post_logout_redirect_uris),
        "audiences": list(client.audiences),
        "backchannel_logout_session_required": client.backchannel_logout_session_required,
        "require_pushed_authorization_requests": client.require_pushed_authorization_requests,
        "dpop_bound_access_tokens": client.dpop_bound_access_tokens,
        "registration_access_token": registration_access_token,
        "registration_client_uri": f"{issuer}{REGISTRATION_PATH}/{client.client_id}",
    }
    if client.backchannel_logout_uri is not None:
        information["backchannel_logout_uri"] = client.backchannel_logout_uri
    for link in ("logo_uri", "policy_uri", "tos_uri"):
        if getattr(client, link) is not None:
            information[link] = getattr(client, link)
    if not client.is_public:
        # RFC 7591 §3.2.1: required with a secret; 0, the secret does not expire.
        information["client_secret_expires_at"] = 0
    return information


# -- management (RFC 7592) ---------------------------------------------------------------------


def authenticate_registration(
    session: Session, client_id: str, registration_access_token: str | None
) -> Client:
    """The client whose registration this token manages (RFC 7592 §2), or 401. An unknown
    client, the operator's own clients, a disabled client and any other token (another
    client's, an initial access token, a client secret) are all the same 401 (§2.1: the
    server must not say whether the client exists)."""
    refusal = _invalid_token("The registration access token is invalid for this client.")
    if not registration_access_token:
        raise _invalid_token("A registration access token is required.")
    client = client_service.find_client(session, client_id, fresh=True)
    if client is None or client.registration_access_token_digest is None or client.disabled:
        raise refusal
    if not hmac.compare_digest(
        client.registration_access_token_digest, digest_token(registration_access_token)
    ):
        raise refusal
    return client


@dataclass(frozen=True)
class Replaced:
    client: Client
    # RFC 7592 §3: a new registration access token; the one presented stopped working.
    registration_access_token: str


def replace_registration(
    session: Session, client: Client, body: object, now: datetime, *, issuer: str
) -> Replaced:
    """RFC 7592 §2.2: replace the registration with ``body``, under the rules of a new one.
    Fields left out take their defaults (they are removed, not kept). The body must name
    the client's client_id and, if it carries a client_secret, the current one; it cannot
    turn a confidential client public or back (register a new client for that). The client
    secret stays; the registration access token is replaced (§3), so a copy of the old one
    that leaked stops working, and the client's next update fails if someone else's did."""
    if not isinstance(body, dict):
        raise InvalidClientMetadata("The request body must be a JSON object.")
    if body.get("client_id") != client.client_id:
        raise InvalidClientMetadata("client_id must be the client's own")
    secret = body.get("client_secret")
    if secret is not None and not (
        isinstance(secret, str) and client.check_client_secret(secret, now)
    ):
        raise InvalidClientMetadata("client_secret does not match the client's")
    metadata = parse_client_metadata(body)
    if metadata.public != client.is_public:
        raise InvalidClientMetadata(
            "token_endpoint_auth_method cannot change between none and a client secret; "
            "register a new client"
        )
    wanted = _checked_registration(metadata, issuer)
    changed = [name for name, value in wanted.items() if getattr(client, name) != value]
    for name in changed:
        setattr(client, name, wanted[name])
    registration_access_token = secrets.token_urlsafe(TOKEN_BYTES)
    client.registration_access_token_digest = digest_token(registration_access_token)
    record(
        session,
        AuditEventType.CLIENT_UPDATED,
        now,
        client_id=client.client_id,
        changed=changed,
        scope=" ".join(client.scopes),
        reason="registration_replaced",
    )
    session.flush()
    return Replaced(client, registration_access_token)


def delete_registration(
    session: Session, client: Client, now: datetime, *, stale_for: timedelta, token_ttl: timedelta
) -> None:
    """RFC 7592 §2.3: delete the client as ``authserver clients delete`` does: its refresh
    families revoked, its access tokens recalled, then the row (and its registration access
    token) gone."""
    client_service.delete_client(
        session, client.client_id, now, stale_for=stale_for, token_ttl=token_ttl
    )
