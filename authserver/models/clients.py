from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import datetime

from sqlalchemy import LargeBinary, String, false, text
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow
from authserver.own_apis import FIRST_PARTY_SCOPES, USER_SCOPES

# RFC 6749 §2.3.1 / RFC 8414 §2 names of the ways a client proves who it is.
CONFIDENTIAL_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
PUBLIC_AUTH_METHOD = "none"


def digest_client_secret(secret: str) -> bytes:
    """SHA-256 of a client secret. Secrets are 256-bit random, so a slow hash adds nothing."""
    return hashlib.sha256(secret.encode()).digest()


class Client(Base):
    """An OAuth client. Implements the part of authlib's ``ClientMixin`` the grants call."""

    __tablename__ = "clients"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    # SHA-256 of the secret; NULL for public clients, which have none (RFC 6749 §2.1).
    secret_digest: Mapped[bytes | None]
    # The secret ``clients rotate-secret`` replaced, which still authenticates until
    # previous_secret_expires_at (AUTHSERVER_CLIENT_SECRET_OVERLAP_SECONDS after the rotation)
    # so the client's deployments can switch over; both NULL outside an overlap.
    previous_secret_digest: Mapped[bytes | None]
    previous_secret_expires_at: Mapped[datetime | None]
    is_public: Mapped[bool] = mapped_column(default=False)
    # First-party clients belong to the operator: consent is implied (issue 3) and only they
    # may be allowed the legacy password grant.
    is_first_party: Mapped[bool] = mapped_column(default=False)
    grant_types: Mapped[list[str]]
    # Space-free scope tokens the client may request; a request without scope gets all of them.
    scopes: Mapped[list[str]]
    # Matched by exact string comparison (RFC 9700 §4.1.3).
    redirect_uris: Mapped[list[str]]
    # Where RP-initiated logout may send the browser afterwards; exact match too.
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(
        server_default=text("'[]'"), default=list
    )
    # Resource indicators (RFC 8707) the client may ask for; the first is its default audience.
    audiences: Mapped[list[str]]
    # Audiences this client serves as a resource server: it may introspect tokens issued for
    # them (RFC 7662 §4) and read the revocation feed. Empty for clients that serve no API.
    served_audiences: Mapped[list[str]] = mapped_column(server_default=text("'[]'"), default=list)
    # Where the client is told that a browser session it signed in through has ended
    # (OpenID Connect Back-Channel Logout 1.0 §2.2); NULL: it is not told.
    backchannel_logout_uri: Mapped[str | None] = mapped_column(String(2000))
    # Whether its logout tokens must carry ``sid`` (§2.2). authserver always sends ``sid``
    # (and ``sub``), so this is kept as registered and always honoured.
    backchannel_logout_session_required: Mapped[bool] = mapped_column(
        default=False, server_default=false()
    )
    # What the consent page shows beside its name (RFC 7591 §2): its logo, its privacy
    # policy and its terms of service; https URLs (services/clients.checked_page_link).
    logo_uri: Mapped[str | None] = mapped_column(String(2000))
    policy_uri: Mapped[str | None] = mapped_column(String(2000))
    tos_uri: Mapped[str | None] = mapped_column(String(2000))
    # How this client, a resource server, receives Security Event Tokens (RFC 8417) about
    # revocations: "push" to security_event_push_url (RFC 8935), "poll" (RFC 8936), or NULL.
    security_event_delivery: Mapped[str | None] = mapped_column(String(8))
    security_event_push_url: Mapped[str | None] = mapped_column(String(2000))
    # Its authorization requests must be pushed first (RFC 9126 §6, ``/oauth/par``): the
    # authorization endpoint refuses its requests that carry parameters instead of a
    # request_uri.
    require_pushed_authorization_requests: Mapped[bool] = mapped_column(
        default=False, server_default=false()
    )
    # RFC 9449 §5.2 ``dpop_bound_access_tokens``: the token endpoint refuses this client's
    # requests that carry no DPoP proof, so every token it gets is bound to a key it holds.
    dpop_bound_access_tokens: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Scopes of the admin API (own_apis.ADMIN_SCOPES) this client may be granted, through
    # client_credentials only, in tokens whose audience is the admin API. Empty: not an
    # admin client.
    admin_scopes: Mapped[list[str]] = mapped_column(server_default=text("'[]'"), default=list)
    # Per-client lifetimes in seconds; NULL means the server-wide setting.
    access_token_ttl: Mapped[int | None]
    refresh_absolute_ttl: Mapped[int | None]
    refresh_idle_ttl: Mapped[int | None]
    disabled: Mapped[bool] = mapped_column(default=False)
    # Its users must have signed in with two factors (services/acr.py): the authorization
    # endpoint asks for the second one, and the password grant is refused.
    require_second_factor: Mapped[bool] = mapped_column(default=False, server_default=false())
    # SHA-256 of the RFC 7592 registration access token of a client registered at
    # ``POST /register`` (services/client_registration.py): what authenticates reading,
    # replacing and deleting the registration there. NULL for the operator's clients.
    registration_access_token_digest: Mapped[bytes | None] = mapped_column(
        LargeBinary(32), unique=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"<Client {self.client_id}>"

    # -- authlib ClientMixin -------------------------------------------------------------

    def get_client_id(self) -> str:
        return self.client_id

    def check_client_secret(self, client_secret: str, now: datetime) -> bool:
        """The current secret, or the previous one until its overlap ends (``clients
        rotate-secret``). Both digests are compared every time, so how long the check takes
        says nothing of which one matched."""
        if self.secret_digest is None:
            return False
        presented = digest_client_secret(client_secret)
        current = hmac.compare_digest(self.secret_digest, presented)
        previous = hmac.compare_digest(self.previous_secret_digest or b"", presented)
        overlap_open = (
            self.previous_secret_digest is not None
            and self.previous_secret_expires_at is not None
            and now < self.previous_secret_expires_at
        )
        return current or (previous and overlap_open)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.disabled:
            return False
        if self.is_public:
            return method == PUBLIC_AUTH_METHOD
        return method in CONFIDENTIAL_AUTH_METHODS

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types

    def check_response_type(self, response_type: str) -> bool:
        # RFC 9700 §2.1.2: the implicit grant (response_type=token) is not offered at all.
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def get_default_redirect_uri(self) -> str | None:
        # RFC 9700 §2.1: with several registered URIs the request must name one.
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str | None, *, for_user: bool = True) -> str | None:
        """The scope to grant (RFC 6749 §3.3); None (invalid_scope) if the request names a
        scope this client may not have. Without a requested scope, every scope it is
        registered for. ``for_user=False`` (client_credentials): never a scope that only
        means something for a signed-in user (``own_apis.USER_SCOPES``)."""
        if not scope or not scope.strip():
            registered = [s for s in self.scopes if for_user or s not in USER_SCOPES]
            return " ".join(registered)
        wanted = list(dict.fromkeys(scope.split()))
        grantable = set(self.scopes)
        if self.is_first_party:
            grantable |= FIRST_PARTY_SCOPES
        if not for_user:
            grantable -= USER_SCOPES
        if not set(wanted) <= grantable:
            return None
        return " ".join(wanted)

    @property
    def token_endpoint_auth_method(self) -> str:
        return PUBLIC_AUTH_METHOD if self.is_public else CONFIDENTIAL_AUTH_METHODS[0]
