"""The APIs authserver serves itself, and which access tokens may reach them.

A resource server accepts a token only if its audience names that server (RFC 9068 §4,
RFC 8707 §2); authserver's own APIs hold themselves to the same rule. Each API that acts for a
user has an audience of its own under the issuer and a scope of its own:

- the account API (``/account/...``: the signed-in devices, sign out one or everywhere) takes
  tokens whose ``aud`` is ``{issuer}/account`` and whose scope holds ``account``;
- userinfo (OpenID Connect Core §5.3) takes a user's token that carries ``openid``, whatever
  its audience: relying parties call it with the access token of their sign-in.

An own API's audience is never a default: a token reaches it only when the client asked for it
by name (``resource``, RFC 8707 §2), and only first-party clients, or clients registered with
the audience and scope, may ask (``services/clients.resolve_audience``). So a token that a
user's photo app got for its own API cannot list that user's devices or sign them out.

The admin API (``/admin/v1``) acts for no user: its tokens come from client_credentials, only
to clients registered with admin scopes (``clients create --admin-scope``), with the admin
API as their audience and only admin scopes (``services/clients.resolve_admin_grant``). No
other grant reaches that audience, and admin scopes are never registered as a client's
ordinary scopes.

Pure data: models, services and views all read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OwnApi:
    """An API of this server that acts for the user a token names."""

    name: str
    # Path under the issuer that is the API's audience (RFC 8707 resource indicator); None for
    # an API that takes any audience (userinfo).
    audience_path: str | None
    # The scope a token must carry to be served (RFC 6750 §3.1 insufficient_scope otherwise).
    scope: str

    def audience(self, issuer: str) -> str | None:
        return issuer + self.audience_path if self.audience_path is not None else None


ACCOUNT_API = OwnApi(name="account", audience_path="/account", scope="account")
USERINFO_API = OwnApi(name="userinfo", audience_path=None, scope="openid")
OWN_APIS = (ACCOUNT_API, USERINFO_API)

# Scopes that only mean something for a signed-in user: a client acting for itself
# (client_credentials, RFC 6749 §4.4) is never granted them.
USER_SCOPES = frozenset({"openid", "profile", "email", "offline_access", ACCOUNT_API.scope})
# Scopes a first-party client may ask for without listing them at registration: the
# operator's own apps manage the user's account. Never part of a default grant.
FIRST_PARTY_SCOPES = frozenset({ACCOUNT_API.scope})


def own_audiences(issuer: str) -> frozenset[str]:
    """Every audience an own API accepts: never a client's or the server's default."""
    return frozenset(audience for api in OWN_APIS if (audience := api.audience(issuer)) is not None)


# The admin API: its audience is ``{issuer}/admin/v1`` (never the issuer itself), and each
# area and verb has a scope of its own.
ADMIN_API_PATH = "/admin/v1"
ADMIN_SCOPE_PREFIX = "admin:"
ADMIN_SCOPES = (
    "admin:users:read",
    "admin:users:write",
    "admin:clients:read",
    "admin:clients:write",
    "admin:keys:read",
    "admin:keys:write",
    "admin:audit:read",
)


def admin_audience(issuer: str) -> str:
    return issuer + ADMIN_API_PATH
