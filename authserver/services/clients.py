"""OAuth clients: registration and the per-client rules of the token endpoint."""

from __future__ import annotations

import enum
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlsplit

from sqlalchemy import Table, func, select
from sqlalchemy.orm import Session

from authserver.errors import InvalidScope, InvalidTarget, NotFound, ValidationError
from authserver.models import Client, RefreshFamily, Revocation
from authserver.models.clients import digest_client_secret
from authserver.own_apis import (
    ADMIN_SCOPE_PREFIX,
    ADMIN_SCOPES,
    admin_audience,
    own_audiences,
)
from authserver.services.audit import AuditEventType, record
from authserver.services.refresh_tokens import RevocationReason, live_family_exists
from authserver.services.revocations import CLIENT, record_client_disabled, revoke_families

# Grants this server implements; authorization_code is accepted in registrations so clients
# can be set up ahead of the authorization endpoint.
SUPPORTED_GRANT_TYPES = (
    "authorization_code",
    "client_credentials",
    "password",
    "refresh_token",
    # RFC 8628 (services/device_authorization.DEVICE_CODE_GRANT)
    "urn:ietf:params:oauth:grant-type:device_code",
)
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
CLIENT_SECRET_BYTES = 32  # 256 bits


@dataclass(frozen=True)
class RegisteredClient:
    client: Client
    # Shown once, at registration; only its digest is kept.
    client_secret: str | None


# What create_client issues (token_urlsafe); anything else cannot be a client, and is not
# sent to the database (PostgreSQL refuses NUL in text, for one).
CLIENT_ID_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def new_client_id() -> str:
    """A random client_id (144 bits) that does not begin with "-": the operator types it as an
    argument of ``authserver clients ...``, where one that did would be read as an option."""
    while True:
        client_id = secrets.token_urlsafe(18)
        if not client_id.startswith("-"):
            return client_id


def find_client(session: Session, client_id: str, *, fresh: bool = False) -> Client | None:
    """The client with this id. ``fresh`` re-reads a row the session already holds."""
    if not isinstance(client_id, str) or not CLIENT_ID_SHAPE.fullmatch(client_id):
        return None
    query = select(Client).where(Client.client_id == client_id)
    if fresh:
        query = query.execution_options(populate_existing=True)
    return session.scalars(query).one_or_none()


def get_client(session: Session, client_id: str) -> Client:
    """The client with this id (re-read), or NotFound in one line that names the id."""
    client = find_client(session, client_id, fresh=True)
    if client is None:
        raise NotFound(f"no client with the id {client_id.strip()[:64]!r}")
    return client


def lock_client(session: Session, client_id: str) -> Client:
    """The client, its row locked until the transaction ends: a change checked against what
    the caller read (an ETag) cannot interleave with another change."""
    client = get_client(session, client_id)
    session.execute(select(Client.id).where(Client.id == client.id).with_for_update()).one()
    session.refresh(client)
    return client


def disable_client(
    session: Session, client_id: str, now: datetime, *, stale_for: timedelta, token_ttl: timedelta
) -> int:
    """Refuse the client from now on, revoke every refresh-token family issued to it and
    recall every access token it holds (a leaked secret, a retired app). Returns how many
    families were revoked.

    Running servers stop authenticating it within ``stale_for``
    (AUTHSERVER_CLIENT_CACHE_SECONDS, their memory of client rows). Every access token issued
    to it until then, its own client_credentials tokens included, is recalled by a "client"
    entry in the revocation feed, which introspection and the server's own APIs check too.
    ``token_ttl`` is the longest access-token lifetime, how long the entry is needed.
    """
    client = find_client(session, client_id, fresh=True)
    if client is None:
        raise NotFound(f"no client with the id {client_id.strip()[:64]!r}")
    client.disabled = True
    families = revoke_families(
        session, [RefreshFamily.client_pk == client.id], RevocationReason.CLIENT_DISABLED, now
    )
    record_client_disabled(session, client.client_id, now, stale_for, token_ttl)
    record(
        session,
        AuditEventType.CLIENT_DISABLED,
        now,
        client_id=client.client_id,
        families_revoked=len(families),
    )
    session.flush()
    return len(families)


# Spaces, control and format characters (Unicode general categories).
_UNSEEN_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})
# Schemes that run code or read local data in the browser instead of reaching a client.
FORBIDDEN_REDIRECT_SCHEMES = frozenset({"javascript", "data", "vbscript", "file", "blob"})


def _check_redirect_uri(uri: str) -> None:
    if any(unicodedata.category(char) in _UNSEEN_CATEGORIES for char in uri):
        # RFC 3986 §2: no URI holds a space or a control character; and a format
        # character (a bidi override, a zero-width space) makes one read as another.
        raise ValidationError(
            f"redirect URI must not contain spaces, control or invisible characters: {uri!r}"
        )
    parts = urlsplit(uri)
    if not parts.scheme or "#" in uri:
        raise ValidationError(f"redirect URI must be absolute and without fragment: {uri!r}")
    if parts.scheme.lower() in FORBIDDEN_REDIRECT_SCHEMES:
        raise ValidationError(f"redirect URI scheme {parts.scheme!r} is not allowed")
    if "*" in uri:
        # Matching is by exact string (RFC 9700 §4.1.3): a "*" would never match anything
        # but itself, and registering one says its author expects a pattern.
        raise ValidationError(
            f"redirect URI {uri!r} has a wildcard, which never matches: redirect URIs are "
            "compared exactly; register each one"
        )
    if "@" in parts.netloc:
        # userinfo makes a URI read as one host and go to another (RFC 9700 §4.1.1).
        raise ValidationError(f"redirect URI must not contain user information: {uri!r}")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "::1", "localhost"):
        # RFC 9700 §2.6 / RFC 8252 §7.3: plain http only for loopback.
        raise ValidationError(f"redirect URI must use https (or http on loopback): {uri!r}")
    if parts.scheme in ("https", "http") and not parts.hostname:
        raise ValidationError(f"redirect URI has no host: {uri!r}")


SERVER_CALLED_URL_MAX_LENGTH = 2000


def checked_server_called_url(uri: str, what: str) -> str:
    """A URL the server itself POSTs to: a back-channel logout URI (OpenID Connect Back-Channel
    Logout 1.0 §2.2: absolute, without fragment) or a Security Event Token push URL (RFC 8935
    §2). The redirect URIs' rules hold too (https, plain http only on loopback, no user
    information), and only http(s). ``what`` names it in the refusal."""
    if (
        not uri
        or len(uri) > SERVER_CALLED_URL_MAX_LENGTH
        or any(ord(char) <= 0x20 or ord(char) == 0x7F for char in uri)
    ):
        raise ValidationError(f"{what} must be 1 to 2000 characters, without spaces or controls")
    parts = urlsplit(uri)
    if parts.scheme not in ("https", "http") or "#" in uri:
        raise ValidationError(f"{what} must be an absolute https URL without fragment: {uri!r}")
    if "@" in parts.netloc:
        raise ValidationError(f"{what} must not contain user information: {uri!r}")
    try:
        parts.port  # noqa: B018 (parsing it is the check)
    except ValueError:
        raise ValidationError(f"{what} has an invalid port: {uri!r}") from None
    if not parts.hostname:
        raise ValidationError(f"{what} has no host: {uri!r}")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "::1", "localhost"):
        raise ValidationError(f"{what} must use https (or http on loopback): {uri!r}")
    return uri


def _check_scope_tokens(scopes: list[str]) -> None:
    for scope in scopes:
        if not SCOPE_TOKEN.match(scope):
            raise ValidationError(f"not a valid scope token: {scope!r}")


def _check_audience(audience: str) -> None:
    # RFC 8707 §2: a resource indicator is an absolute URI without a fragment.
    parts = urlsplit(audience)
    if not parts.scheme or "#" in audience:
        raise ValidationError(f"audience must be an absolute URI without fragment: {audience!r}")


# -- the registration rules, shared by create_client and update_client ----------------------


CLIENT_NAME_MAX_LENGTH = 200


def checked_client_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > CLIENT_NAME_MAX_LENGTH:
        raise ValidationError(f"client name must be 1 to {CLIENT_NAME_MAX_LENGTH} characters")
    return name


def checked_grant_types(grant_types: list[str], *, public: bool, first_party: bool) -> list[str]:
    grants = list(dict.fromkeys(grant_types))
    if not grants:
        raise ValidationError("a client needs at least one grant type")
    for grant in grants:
        if grant not in SUPPORTED_GRANT_TYPES:
            raise ValidationError(
                f"unsupported grant type {grant!r}; choose from {', '.join(SUPPORTED_GRANT_TYPES)}"
            )
    if public and "client_credentials" in grants:
        # RFC 6749 §4.4: client_credentials is for confidential clients only.
        raise ValidationError("a public client cannot use client_credentials")
    if "password" in grants and not first_party:
        # RFC 9700 §2.4: the password grant must not be used; we keep it for the operator's
        # own apps only.
        raise ValidationError("only a first-party client may use the password grant")
    return grants


def checked_redirect_uris(uris: list[str]) -> list[str]:
    """Redirect URIs or post-logout redirect URIs, without repeats."""
    unique = list(dict.fromkeys(uris))
    for uri in unique:
        _check_redirect_uri(uri)
    return unique


def check_redirect_uris_for_grants(grants: list[str], redirect_uris: list[str]) -> None:
    if "authorization_code" in grants and not redirect_uris:
        raise ValidationError("authorization_code needs at least one redirect URI")


def checked_scopes(scopes: list[str]) -> list[str]:
    unique = list(dict.fromkeys(scopes))
    _check_scope_tokens(unique)
    for scope in unique:
        if scope.startswith(ADMIN_SCOPE_PREFIX):
            # An ordinary scope goes into tokens for any audience, a user's too.
            raise ValidationError(f"{scope!r} is an admin scope: register it as an admin scope")
    return unique


def checked_admin_scopes(scopes: list[str], *, public: bool, grant_types: list[str]) -> list[str]:
    """The admin API's scopes a client may be granted (``own_apis.ADMIN_SCOPES``): only a
    confidential client with client_credentials holds any, since admin tokens act for no
    user and are issued by that grant alone."""
    unique = list(dict.fromkeys(scopes))
    for scope in unique:
        if scope not in ADMIN_SCOPES:
            raise ValidationError(
                f"unknown admin scope {scope!r}; one of: {', '.join(ADMIN_SCOPES)}"
            )
    if unique and (public or "client_credentials" not in grant_types):
        raise ValidationError(
            "an admin client must be confidential and allowed the client_credentials grant"
        )
    return unique


def checked_audiences(audiences: list[str]) -> list[str]:
    unique = list(dict.fromkeys(audiences))
    for audience in unique:
        _check_audience(audience)
    return unique


def check_lifetimes(**lifetimes: int | None) -> None:
    """Per-client lifetimes (seconds): positive, or None for the server-wide setting."""
    for field, ttl in lifetimes.items():
        if ttl is not None and ttl <= 0:
            label = field.removesuffix("_ttl").replace("_", " ")
            raise ValidationError(f"{label} lifetime must be positive")


# What may not appear in a link a page shows: it would leave the attribute, or the CSP header
# the logo's origin goes into.
_UNSAFE_IN_LINK = re.compile(r"[\x00-\x20\"'<>\\;,`]")


def checked_page_link(field: str, uri: str | None) -> str | None:
    """A link the consent page shows (``logo_uri``, ``policy_uri``, ``tos_uri``): an absolute
    https URL of at most 2000 characters, or None. Never javascript: or data:, never a plain
    http page a network could change on the way."""
    if uri is None or uri == "":
        return None
    try:
        parts = urlsplit(uri)
        plain_https = parts.scheme == "https" and bool(parts.hostname) and parts.username is None
    except ValueError:  # "https://[": not a URL urllib can read
        plain_https = False
    if len(uri) > 2000 or _UNSAFE_IN_LINK.search(uri) or not plain_https:
        raise ValidationError(f"{field} must be an https URL without spaces or quotes")
    return uri


def create_client(
    session: Session,
    *,
    name: str,
    grant_types: list[str],
    public: bool = False,
    first_party: bool = False,
    redirect_uris: list[str] | None = None,
    post_logout_redirect_uris: list[str] | None = None,
    scopes: list[str] | None = None,
    audiences: list[str] | None = None,
    served_audiences: list[str] | None = None,
    access_token_ttl: int | None = None,
    refresh_idle_ttl: int | None = None,
    refresh_absolute_ttl: int | None = None,
    backchannel_logout_uri: str | None = None,
    backchannel_logout_session_required: bool = False,
    require_second_factor: bool = False,
    admin_scopes: list[str] | None = None,
    require_pushed_authorization_requests: bool = False,
    logo_uri: str | None = None,
    policy_uri: str | None = None,
    tos_uri: str | None = None,
    dpop_bound_access_tokens: bool = False,
) -> RegisteredClient:
    name = checked_client_name(name)
    links = {
        "logo_uri": checked_page_link("logo_uri", logo_uri),
        "policy_uri": checked_page_link("policy_uri", policy_uri),
        "tos_uri": checked_page_link("tos_uri", tos_uri),
    }
    grants = checked_grant_types(grant_types, public=public, first_party=first_party)
    admin_list = checked_admin_scopes(admin_scopes or [], public=public, grant_types=grants)
    uris = checked_redirect_uris(redirect_uris or [])
    logout_uris = checked_redirect_uris(post_logout_redirect_uris or [])
    check_redirect_uris_for_grants(grants, uris)
    scope_list = checked_scopes(scopes or [])
    audience_list = checked_audiences(audiences or [])
    served_list = _checked_served_audiences(served_audiences or [])
    check_backchannel_logout(backchannel_logout_uri, backchannel_logout_session_required)
    check_lifetimes(
        access_token_ttl=access_token_ttl,
        refresh_idle_ttl=refresh_idle_ttl,
        refresh_absolute_ttl=refresh_absolute_ttl,
    )

    secret = None if public else secrets.token_urlsafe(CLIENT_SECRET_BYTES)
    client = Client(
        client_id=new_client_id(),
        name=name,
        secret_digest=digest_client_secret(secret) if secret else None,
        is_public=public,
        is_first_party=first_party,
        grant_types=grants,
        scopes=scope_list,
        redirect_uris=uris,
        post_logout_redirect_uris=logout_uris,
        audiences=audience_list,
        served_audiences=served_list,
        access_token_ttl=access_token_ttl,
        refresh_idle_ttl=refresh_idle_ttl,
        refresh_absolute_ttl=refresh_absolute_ttl,
        backchannel_logout_uri=backchannel_logout_uri,
        backchannel_logout_session_required=backchannel_logout_session_required,
        require_second_factor=require_second_factor,
        admin_scopes=admin_list,
        require_pushed_authorization_requests=require_pushed_authorization_requests,
        **links,
        dpop_bound_access_tokens=dpop_bound_access_tokens,
    )
    session.add(client)
    session.flush()
    details: dict[str, Any] = {}
    if backchannel_logout_uri:
        details["backchannel_logout_uri"] = backchannel_logout_uri
    if admin_list:
        details["admin_scopes"] = admin_list
    record(
        session,
        AuditEventType.CLIENT_CREATED,
        client.created_at,
        client_id=client.client_id,
        grant_type=" ".join(grants),
        scope=" ".join(scope_list),
        served_audiences=served_list,
        **details,
    )
    return RegisteredClient(client=client, client_secret=secret)


def check_backchannel_logout(uri: str | None, session_required: bool) -> None:
    if uri is not None:
        checked_server_called_url(uri, "back-channel logout URI")
    elif session_required:
        raise ValidationError("backchannel_logout_session_required needs a back-channel logout URI")


def set_backchannel_logout(
    session: Session,
    client_id: str,
    uri: str | None,
    now: datetime,
    *,
    session_required: bool = False,
) -> Client:
    """Where the client is told that a browser session it signed in through has ended
    (OpenID Connect Back-Channel Logout 1.0 §2.2), replacing what it had; None: it is told
    nothing from now on. Logouts already waiting go where they were addressed."""
    client = find_client(session, client_id, fresh=True)
    if client is None:
        raise NotFound(f"no client with the id {client_id.strip()[:64]!r}")
    check_backchannel_logout(uri, session_required)
    client.backchannel_logout_uri = uri
    client.backchannel_logout_session_required = session_required
    record(
        session,
        AuditEventType.CLIENT_UPDATED,
        now,
        client_id=client.client_id,
        backchannel_logout_uri=uri,
    )
    session.flush()
    return client


def _checked_served_audiences(audiences: list[str]) -> list[str]:
    served = list(dict.fromkeys(audiences))
    for audience in served:
        _check_audience(audience)
    return served


def set_served_audiences(
    session: Session, client_id: str, audiences: list[str], now: datetime
) -> Client:
    """Register the client as the resource server of ``audiences`` (replacing its list; empty:
    it serves none). It may then introspect tokens issued for them and read the revocation
    feed; running servers see the change within AUTHSERVER_CLIENT_CACHE_SECONDS."""
    client = find_client(session, client_id, fresh=True)
    if client is None:
        raise NotFound(f"no client with the id {client_id.strip()[:64]!r}")
    client.served_audiences = _checked_served_audiences(audiences)
    record(
        session,
        AuditEventType.CLIENT_UPDATED,
        now,
        client_id=client.client_id,
        served_audiences=client.served_audiences,
    )
    session.flush()
    return client


def set_security_event_delivery(
    session: Session, client_id: str, delivery: str | None, push_url: str | None, now: datetime
) -> Client:
    """How the client receives Security Event Tokens about revocations: "push" to
    ``push_url`` (RFC 8935), "poll" (RFC 8936), or None to stop. Only a resource server (a
    client serving an audience) may receive them: they say what the revocation feed says.
    SETs already queued for it stay queued; changes reach running servers at once (events
    are addressed in the transaction that makes them)."""
    from authserver.services.security_events import DELIVERY_MODES, PUSH

    client = find_client(session, client_id, fresh=True)
    if client is None:
        raise NotFound(f"no client with the id {client_id.strip()[:64]!r}")
    if delivery is not None and delivery not in DELIVERY_MODES:
        raise ValidationError(f"security event delivery must be one of {', '.join(DELIVERY_MODES)}")
    if delivery is not None and not client.served_audiences:
        raise ValidationError(
            "only a resource server receives security events: "
            "give it an audience first (authserver clients serve CLIENT_ID AUDIENCE)"
        )
    if delivery == PUSH:
        if push_url is None:
            raise ValidationError("push delivery needs the receiver's URL")
        push_url = checked_server_called_url(push_url, "security event push URL")
    elif push_url is not None:
        raise ValidationError("a push URL goes with push delivery only")
    client.security_event_delivery = delivery
    client.security_event_push_url = push_url
    record(
        session,
        AuditEventType.CLIENT_UPDATED,
        now,
        client_id=client.client_id,
        security_event_delivery=delivery or "off",
    )
    session.flush()
    return client


def resolve_scope(client: Client, requested: str | None, *, for_user: bool = True) -> str:
    """The scope to grant (RFC 6749 §3.3): the request's if the client may have all of it, or
    every scope it is registered for when the request names none. ``Client.get_allowed_scope``
    is the rule, shared with the authorization endpoint; this raises where that says no."""
    granted = client.get_allowed_scope(requested, for_user=for_user)
    if granted is None:
        raise InvalidScope()
    return granted


def resolve_audience(
    client: Client,
    resources: list[str],
    *,
    default_audience: str,
    issuer: str,
    for_user: bool = True,
) -> str:
    """The ``aud`` of the access token (RFC 8707 §2, RFC 9068 §3).

    A requested resource must be one the client is registered for, or one of the server's own
    APIs (``own_apis``) that the client may reach: any first-party client, or a client
    registered with that audience, and only for a user (``for_user``). Without a resource,
    the client's first registered audience that is not an own API, else the server default,
    else the issuer: an own API is never reached by default.
    """
    if len(resources) > 1:
        raise InvalidTarget("Only one resource per request is supported.")
    own = own_audiences(issuer)
    if resources:
        requested = resources[0]
        if requested == admin_audience(issuer):
            raise InvalidTarget()  # only resolve_admin_grant hands out this audience
        if requested in own:
            if not for_user:
                raise InvalidTarget("This resource acts for a user; the grant names none.")
            if not (client.is_first_party or requested in client.audiences):
                raise InvalidTarget()
            return requested
        if requested not in client.audiences:
            raise InvalidTarget()
        return requested
    for audience in client.audiences:
        if audience not in own:
            return audience
    return default_audience or issuer


def resolve_admin_grant(
    client: Client, requested_scope: str | None, resources: list[str], *, issuer: str
) -> str | None:
    """For client_credentials: the scope of an admin API token, or None when the request
    is not for the admin API (it names neither its audience nor an admin scope).

    An admin token's audience is the admin API alone and its scope admin scopes alone, all
    of them registered for the client (``clients create --admin-scope``); without a scope,
    every admin scope it holds. A request mixing the admin API with anything else is
    refused (RFC 6749 §5.2 ``invalid_scope``, RFC 8707 §2 ``invalid_target``)."""
    wanted = list(dict.fromkeys((requested_scope or "").split()))
    audience = admin_audience(issuer)
    asks_admin_scope = any(scope.startswith(ADMIN_SCOPE_PREFIX) for scope in wanted)
    if audience not in resources and not asks_admin_scope:
        return None
    if not client.admin_scopes:
        raise InvalidTarget("The client is not an admin client.")
    if resources and resources != [audience]:
        raise InvalidTarget("Admin scopes are granted for the admin API alone.")
    if not wanted:
        return " ".join(client.admin_scopes)
    if not set(wanted) <= set(client.admin_scopes):
        raise InvalidScope("The client is not registered for every scope it asked for.")
    return " ".join(wanted)


# -- the operator's commands (``authserver clients ...``) -----------------------------------


class Unchanged(enum.Enum):
    """An ``update_client`` argument left out: the registration keeps what it has."""

    UNCHANGED = "unchanged"


UNCHANGED = Unchanged.UNCHANGED


def update_client(
    session: Session,
    client_id: str,
    now: datetime,
    *,
    redirect_uris: list[str] | Unchanged = UNCHANGED,
    post_logout_redirect_uris: list[str] | Unchanged = UNCHANGED,
    scopes: list[str] | Unchanged = UNCHANGED,
    audiences: list[str] | Unchanged = UNCHANGED,
    access_token_ttl: int | Unchanged | None = UNCHANGED,
    refresh_idle_ttl: int | Unchanged | None = UNCHANGED,
    refresh_absolute_ttl: int | Unchanged | None = UNCHANGED,
    require_second_factor: bool | Unchanged = UNCHANGED,
    admin_scopes: list[str] | Unchanged = UNCHANGED,
    require_pushed_authorization_requests: bool | Unchanged = UNCHANGED,
    logo_uri: str | Unchanged | None = UNCHANGED,
    policy_uri: str | Unchanged | None = UNCHANGED,
    tos_uri: str | Unchanged | None = UNCHANGED,
    dpop_bound_access_tokens: bool | Unchanged = UNCHANGED,
) -> list[str]:
    """Replace what is given of the registration, under the rules ``create_client`` applies
    (checked all before anything is changed); a lifetime of None means the server-wide
    setting. Returns the names of the fields that changed (audited). Tokens already issued
    keep what they were issued with; running servers see the change within
    AUTHSERVER_CLIENT_CACHE_SECONDS."""
    client = get_client(session, client_id)
    wanted: dict[str, object] = {}
    if not isinstance(redirect_uris, Unchanged):
        wanted["redirect_uris"] = checked_redirect_uris(redirect_uris)
    if not isinstance(post_logout_redirect_uris, Unchanged):
        wanted["post_logout_redirect_uris"] = checked_redirect_uris(post_logout_redirect_uris)
    if not isinstance(scopes, Unchanged):
        wanted["scopes"] = checked_scopes(scopes)
    if not isinstance(audiences, Unchanged):
        wanted["audiences"] = checked_audiences(audiences)
    if not isinstance(require_second_factor, Unchanged):
        wanted["require_second_factor"] = require_second_factor
    if not isinstance(require_pushed_authorization_requests, Unchanged):
        wanted["require_pushed_authorization_requests"] = require_pushed_authorization_requests
    links = {"logo_uri": logo_uri, "policy_uri": policy_uri, "tos_uri": tos_uri}
    for link, uri in links.items():
        if not isinstance(uri, Unchanged):
            # None or "": the consent page no longer shows it.
            wanted[link] = checked_page_link(link, uri)
    if not isinstance(dpop_bound_access_tokens, Unchanged):
        wanted["dpop_bound_access_tokens"] = dpop_bound_access_tokens
    if not isinstance(admin_scopes, Unchanged):
        wanted["admin_scopes"] = checked_admin_scopes(
            admin_scopes, public=client.is_public, grant_types=client.grant_types
        )
    lifetimes = {
        "access_token_ttl": access_token_ttl,
        "refresh_idle_ttl": refresh_idle_ttl,
        "refresh_absolute_ttl": refresh_absolute_ttl,
    }
    given = {name: ttl for name, ttl in lifetimes.items() if not isinstance(ttl, Unchanged)}
    check_lifetimes(**given)
    wanted.update(given)
    check_redirect_uris_for_grants(
        client.grant_types,
        list(wanted.get("redirect_uris", client.redirect_uris)),  # type: ignore[call-overload]
    )
    changed = [name for name, value in wanted.items() if getattr(client, name) != value]
    if not changed:
        return []
    for name in changed:
        setattr(client, name, wanted[name])
    record(
        session,
        AuditEventType.CLIENT_UPDATED,
        now,
        client_id=client.client_id,
        changed=changed,
        scope=" ".join(client.scopes),
    )
    session.flush()
    return changed


class ClientDisabledMoments(ValidationError):
    """The client's revocation entry still refuses tokens issued now."""


def enable_client(session: Session, client_id: str, now: datetime) -> Client:
    """Undo ``disable_client``: the client authenticates again. What disabling ended stays
    ended: its refresh families, and the "client" entry of the revocation feed, which refuses
    its tokens issued before the entry's ``not_before`` (the disable plus
    AUTHSERVER_CLIENT_CACHE_SECONDS, the time a server may have gone on issuing them).

    So the client is enabled only once that moment has passed: a token issued after it is
    never refused by the entry, whereas a token issued earlier would be, by every resource
    server that has read the feed, although the client was enabled when it was issued."""
    client = get_client(session, client_id)
    if not client.disabled:
        raise ValidationError(f"client {client.client_id} is not disabled")
    cut_off = session.scalar(
        select(func.max(Revocation.not_before)).where(
            Revocation.kind == CLIENT, Revocation.value == client.client_id
        )
    )
    if cut_off is not None and now < cut_off:
        wait = int((cut_off - now).total_seconds()) + 1
        raise ClientDisabledMoments(
            f"client {client.client_id} was disabled moments ago and tokens issued to it until "
            f"{cut_off:%H:%M:%S} UTC are refused; enable it in {wait} s"
        )
    client.disabled = False
    record(session, AuditEventType.CLIENT_ENABLED, now, client_id=client.client_id)
    session.flush()
    return client


@dataclass(frozen=True)
class RotatedSecret:
    client: Client
    # Shown once; only its digest is kept.
    client_secret: str
    # Until when the secret it replaced still authenticates; None: it stopped at once.
    previous_valid_until: datetime | None


def rotate_client_secret(
    session: Session, client_id: str, now: datetime, *, overlap: timedelta
) -> RotatedSecret:
    """A new secret for a confidential client. The one it replaces keeps authenticating for
    ``overlap`` (AUTHSERVER_CLIENT_SECRET_OVERLAP_SECONDS), so the client's deployments can
    switch one by one; ``overlap`` zero (a leaked secret): not at all. Only one previous
    secret is kept: rotating again during an overlap ends the older one's at once. Running
    servers see the change within AUTHSERVER_CLIENT_CACHE_SECONDS."""
    client = get_client(session, client_id)
    if client.is_public or client.secret_digest is None:
        raise ValidationError(f"client {client.client_id} is public and has no secret")
    secret = secrets.token_urlsafe(CLIENT_SECRET_BYTES)
    if overlap > timedelta(0):
        client.previous_secret_digest = client.secret_digest
        client.previous_secret_expires_at = now + overlap
    else:
        client.previous_secret_digest = None
        client.previous_secret_expires_at = None
    client.secret_digest = digest_client_secret(secret)
    record(
        session,
        AuditEventType.CLIENT_SECRET_ROTATED,
        now,
        client_id=client.client_id,
        overlap_seconds=int(overlap.total_seconds()),
    )
    session.flush()
    return RotatedSecret(client, secret, client.previous_secret_expires_at)


def delete_client(
    session: Session, client_id: str, now: datetime, *, stale_for: timedelta, token_ttl: timedelta
) -> int:
    """Delete the client. First everything it holds is revoked as ``disable_client`` does
    (its refresh families in the revocation feed, a "client" entry recalling its access
    tokens, Security Event Tokens), since none of that refers to the row; then the row goes,
    and with it, by ON DELETE CASCADE, its families, codes, consents, the record of the
    browser sessions it signed in through and SETs still queued for it. Its audit events stay.
    Returns how many families were revoked."""
    client = get_client(session, client_id)
    families = revoke_families(
        session, [RefreshFamily.client_pk == client.id], RevocationReason.CLIENT_DELETED, now
    )
    record_client_disabled(session, client.client_id, now, stale_for, token_ttl)
    record(
        session,
        AuditEventType.CLIENT_DELETED,
        now,
        client_id=client.client_id,
        families_revoked=len(families),
    )
    # Through the ORM, so this process forgets what it holds of the row (the client cache).
    session.delete(client)
    session.flush()
    return len(families)


def list_clients(session: Session) -> list[Client]:
    return list(session.scalars(select(Client).order_by(Client.created_at, Client.client_id)))


@dataclass(frozen=True)
class ClientOverview:
    client: Client
    live_families: int


def client_overview(session: Session, client_id: str, now: datetime) -> ClientOverview:
    client = get_client(session, client_id)
    # An alias, so that the liveness subquery, on refresh_families itself, is not correlated.
    family = cast(Table, RefreshFamily.__table__).alias()
    live = session.execute(
        select(func.count())
        .select_from(family)
        .where(family.c.client_pk == client.id, live_family_exists(family.c.id)),
        {"now": now},
    ).scalar_one()
    return ClientOverview(client=client, live_families=live)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def registration_fields(overview: ClientOverview) -> dict[str, Any]:
    """Everything of a registration but its secret digests, as JSON: what ``clients show
    --json`` prints and the admin API serves."""
    client = overview.client
    return {
        "client_id": client.client_id,
        "name": client.name,
        "type": "public" if client.is_public else "confidential",
        "first_party": client.is_first_party,
        "disabled": client.disabled,
        "grant_types": list(client.grant_types),
        "scopes": list(client.scopes),
        "admin_scopes": list(client.admin_scopes),
        "redirect_uris": list(client.redirect_uris),
        "post_logout_redirect_uris": list(client.post_logout_redirect_uris),
        "audiences": list(client.audiences),
        "served_audiences": list(client.served_audiences),
        "security_event_delivery": client.security_event_delivery,
        "security_event_push_url": client.security_event_push_url,
        "backchannel_logout_uri": client.backchannel_logout_uri,
        "backchannel_logout_session_required": client.backchannel_logout_session_required,
        "logo_uri": client.logo_uri,
        "policy_uri": client.policy_uri,
        "tos_uri": client.tos_uri,
        "require_second_factor": client.require_second_factor,
        "require_pushed_authorization_requests": client.require_pushed_authorization_requests,
        "dpop_bound_access_tokens": client.dpop_bound_access_tokens,
        "access_token_ttl": client.access_token_ttl,
        "refresh_idle_ttl": client.refresh_idle_ttl,
        "refresh_absolute_ttl": client.refresh_absolute_ttl,
        "previous_secret_valid_until": _iso(client.previous_secret_expires_at),
        "created_at": _iso(client.created_at),
        "live_refresh_families": overview.live_families,
    }
