from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from authserver.db import Base, utcnow
from authserver.models.clients import Client
from authserver.models.sessions import AMR_PASSWORD
from authserver.models.users import User


class AuthorizationCode(Base):
    """An authorization code (RFC 6749 §4.1.2): single use, short-lived, bound to its client
    and redirect URI. Only the SHA-256 of the code is stored."""

    __tablename__ = "authorization_codes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    code_digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    client_pk: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    browser_session_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("browser_sessions.id", ondelete="CASCADE"), index=True
    )
    redirect_uri: Mapped[str] = mapped_column(String(2000))
    scope: Mapped[str] = mapped_column(String(2000))
    audience: Mapped[str] = mapped_column(String(2000))
    nonce: Mapped[str | None] = mapped_column(String(512))
    # RFC 7636: only S256 is accepted, so the method column is informative.
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    code_challenge_method: Mapped[str | None] = mapped_column(String(10))
    # RFC 9449 §10: the thumbprint of the DPoP key the code is bound to (the authorization
    # request's dpop_jkt, or the key of a proof sent with its push); its redemption must
    # prove that key.
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))
    auth_time: Mapped[datetime]
    # The browser session's amr when the code was issued (RFC 8176, space-separated).
    amr: Mapped[str] = mapped_column(String(64), default=AMR_PASSWORD, server_default=AMR_PASSWORD)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]
    # The family the code was exchanged for: a replay of the code revokes it (§4.1.2).
    family_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("refresh_families.id", ondelete="SET NULL"), index=True
    )
    # The access token the code was exchanged for (its jti, and its exp for the denylist
    # entry): a replay denylists it, which is the only way to reach it when the code started
    # no family (RFC 6749 §4.1.2, RFC 9700 §4.2.4).
    access_token_jti: Mapped[str | None] = mapped_column(String(64))
    access_token_expires_at: Mapped[datetime | None]

    client: Mapped[Client] = relationship(lazy="joined")
    user: Mapped[User] = relationship(lazy="joined")

    # -- authlib AuthorizationCodeMixin --------------------------------------------------

    def get_redirect_uri(self) -> str | None:
        return self.redirect_uri or None

    def get_scope(self) -> str:
        return self.scope


class Consent(Base):
    """Scopes a user has granted a (third-party) client, remembered so consent is asked once."""

    __tablename__ = "consents"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    client_pk: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    scopes: Mapped[list[str]]
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("user_id", "client_pk"),)


class PushedAuthorizationRequest(Base):
    """An authorization request a client pushed (RFC 9126 §2): its parameters, kept until the
    authorization endpoint answers it, under a ``request_uri`` of which only the SHA-256 of
    the random part is stored."""

    __tablename__ = "pushed_authorization_requests"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    request_uri_digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    client_pk: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    # The request's parameters as pushed, [name, value] pairs (``resource`` may repeat).
    parameters: Mapped[list[list[str]]] = mapped_column(JSON())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    # When the authorization endpoint answered it (a code, or the user's refusal): one use.
    used_at: Mapped[datetime | None]


class DeviceAuthorization(Base):
    """A device's request to be authorized (RFC 8628 §3.1): the device polls with its
    ``device_code``, the user types the ``user_code`` on another screen and approves or
    denies. Only SHA-256 digests of both codes are stored."""

    __tablename__ = "device_authorizations"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    device_code_digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    # Of the user code as normalised (services/device_authorization.normalize_user_code).
    user_code_digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    client_pk: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    scope: Mapped[str] = mapped_column(String(2000))
    audience: Mapped[str] = mapped_column(String(2000))
    # "pending", then "approved" or "denied" by the user, then "used" once tokens are issued.
    status: Mapped[str] = mapped_column(String(10), default="pending")
    # The polling interval the device must keep (§3.5: slow_down adds 5 seconds).
    interval: Mapped[int]
    last_polled_at: Mapped[datetime | None]
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # The browser session that approved, and its sign-in, for the tokens' auth_time and amr.
    browser_session_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("browser_sessions.id", ondelete="SET NULL"), index=True
    )
    auth_time: Mapped[datetime | None]
    amr: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    decided_at: Mapped[datetime | None]

    client: Mapped[Client] = relationship(lazy="joined")
