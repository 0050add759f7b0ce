from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow


class Passkey(Base):
    """A WebAuthn public-key credential a user registered (``services/passkeys.py``): it signs
    them in without a password (a discoverable credential) and is a second factor after it.
    Only public data is kept: the private key never leaves the authenticator."""

    __tablename__ = "passkeys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # The authenticator's credential id (WebAuthn §4, at most 1023 bytes), how a sign-in
    # names the credential it used.
    credential_id: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    # The credential public key, COSE-encoded (RFC 9052), as the authenticator sent it.
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    # The authenticator's signature counter at the last accepted use (WebAuthn §6.1.1);
    # 0 for authenticators that keep none (most synced passkeys).
    sign_count: Mapped[int] = mapped_column(BigInteger)
    # AuthenticatorTransport values the browser reported ("internal,hybrid"), handed back in
    # allowCredentials so the browser knows where to look.
    transports: Mapped[str] = mapped_column(String(200), default="")
    # The authenticator model (AAGUID), all zeros when the authenticator does not say.
    aaguid: Mapped[str] = mapped_column(String(36))
    # The BE and BS flags (WebAuthn §6.1): whether the credential may be synced to other
    # devices (fixed at registration), and whether it is backed up now.
    backup_eligible: Mapped[bool]
    backed_up: Mapped[bool]
    # What the user calls it on the account page.
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    # Set the first time a sign-in with it was refused because its counter went backwards
    # (a copy of the authenticator may exist, WebAuthn §6.1.1); shown on the account page.
    clone_suspected_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"<Passkey {self.id}>"


class PasskeyChallenge(Base):
    """A WebAuthn challenge handed to a browser (``services/passkeys.py``): single use (its
    row is deleted by the statement that accepts it), alive five minutes, and bound to what it
    was issued for: registering a passkey for ``user_id``, a passwordless sign-in (no user),
    or the second step of ``user_id``'s sign-in. Only its SHA-256 is kept."""

    __tablename__ = "passkey_challenges"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    challenge_digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    # registration | sign_in | second_factor (passkeys.ChallengePurpose).
    purpose: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]

    __table_args__ = (
        # ``authserver purge`` of the challenges never answered.
        Index("ix_passkey_challenges_expires_at", "expires_at"),
    )

    def __repr__(self) -> str:
        return f"<PasskeyChallenge {self.id} {self.purpose}>"
