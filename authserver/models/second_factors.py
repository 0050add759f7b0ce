from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, LargeBinary, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow


class TotpCredential(Base):
    """A user's authenticator app (RFC 6238 TOTP, ``services/totp.py``): at most one per user.
    It signs nobody in until ``confirmed_at`` is set, by a code from the app proving that the
    app holds the secret."""

    __tablename__ = "totp_credentials"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    # The shared secret (raw bytes) sealed with AES-256-GCM under AUTHSERVER_KEY_ENCRYPTION_KEY
    # (nonce || ct), as the signing keys are, with "totp:<user_id>" as associated data: a
    # ciphertext copied to another user's row does not open.
    secret_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    # NULL while enrolling: a code from the app has not been typed back yet.
    confirmed_at: Mapped[datetime | None]
    # The RFC 6238 time step (Unix time // 30) of the last code accepted; a code of this step
    # or an earlier one is refused, so each code works once. NULL before the first.
    last_used_step: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"<TotpCredential {self.id}>"


class RecoveryCode(Base):
    """One of a user's single-use recovery codes (``services/recovery_codes.py``): what signs
    them in when the authenticator app is lost. Only the code's SHA-256 is stored."""

    __tablename__ = "recovery_codes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    code_digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when the code signs its user in; it never works again.
    used_at: Mapped[datetime | None]

    __table_args__ = (
        # Unique per user, not across users: a code is only ever looked up among its own
        # user's, and 50-bit codes drawn for millions of accounts would, by the birthday
        # bound, sooner or later repeat across two of them and fail an insert. The index
        # also serves "this user's codes".
        UniqueConstraint("user_id", "code_digest"),
    )

    def __repr__(self) -> str:
        return f"<RecoveryCode {self.id}>"
