from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from authserver.db import Base, utcnow
from authserver.models.clients import Client
from authserver.models.users import User


class RefreshFamily(Base):
    """Every refresh token descended from one sign-in. Its id is the ``sid`` claim.

    Revoking the family revokes every token in it at once: rotation checks the family, so
    no per-token update is needed.
    """

    __tablename__ = "refresh_families"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    client_pk: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    scope: Mapped[str] = mapped_column(String(2000))
    # The audience the access tokens of this family carry (RFC 8707 resource, or default).
    audience: Mapped[str] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Absolute end of the family: fixed at creation, rotation never extends it.
    expires_at: Mapped[datetime] = mapped_column(index=True)
    # Moves forward on every rotation, but never past expires_at.
    idle_expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(index=True)
    # Why it was revoked: "reuse_detected", "logout", "user_disabled", "revoked_by_client", ...
    revoked_reason: Mapped[str | None] = mapped_column(String(40))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    ip_address: Mapped[str | None] = mapped_column(String(45))
    # Where the family was last refreshed from: with ip_address, the two addresses a reuse
    # alert shows.
    last_ip_address: Mapped[str | None] = mapped_column(String(45))
    # The family's rotation budget (AUTHSERVER_RATELIMIT_PER_FAMILY): when its current window
    # began (NULL before the first rotation) and how many rotations it made in it. Written by
    # the rotating statement itself, so the budget costs no round trip of its own.
    rotation_window_started_at: Mapped[datetime | None]
    rotations_in_window: Mapped[int] = mapped_column(server_default=text("0"), default=0)
    # The browser session the family was issued through (authorization code flow); signing
    # that browser out revokes the family.
    browser_session_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("browser_sessions.id", ondelete="SET NULL"), index=True
    )
    # The sign-in the family came from: when, and how (RFC 8176 amr, space-separated), for
    # its access tokens' auth_time and acr (RFC 9068 §2.2.1). NULL for families from before
    # they were kept: their tokens carry neither claim.
    auth_time: Mapped[datetime | None]
    amr: Mapped[str | None] = mapped_column(String(64))
    # RFC 9449 §5: the RFC 7638 thumbprint of the DPoP key a public client's family began
    # with. Every refresh of the family must then carry a proof signed with that key; NULL
    # for confidential clients (their authentication binds the token) and families begun
    # without a proof.
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))

    user: Mapped[User] = relationship(lazy="joined")
    client: Mapped[Client] = relationship(lazy="joined")

    def __repr__(self) -> str:
        return f"<RefreshFamily {self.id}>"


class RefreshToken(Base):
    """One generation of a family. Only the SHA-256 of the token is stored."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    family_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("refresh_families.id", ondelete="CASCADE")
    )
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("refresh_tokens.id", ondelete="SET NULL"), index=True
    )
    token_digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    generation: Mapped[int]
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set once, when the token is exchanged for its successor.
    used_at: Mapped[datetime | None]
    expires_at: Mapped[datetime]
    # The successor token, sealed with a key derived from this token's own plaintext (which
    # the server never stores). Only the holder of this token can open it, and only within
    # the reuse grace window is it opened: that is how a retry gets the same successor back.
    successor_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)

    family: Mapped[RefreshFamily] = relationship(lazy="joined")

    __table_args__ = (
        Index("ix_refresh_tokens_family_id", "family_id"),
        # At most one live (unused) token per family: a fork of the lineage cannot be
        # committed, whatever the application does.
        Index(
            "uq_refresh_tokens_one_unused_per_family",
            "family_id",
            unique=True,
            postgresql_where=text("used_at IS NULL"),
            sqlite_where=text("used_at IS NULL"),
        ),
    )

    def __repr__(self) -> str:
        return f"<RefreshToken {self.id} gen={self.generation}>"
