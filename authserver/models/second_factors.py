from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, LargeBinary
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
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    code_digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when the code signs its user in; it never works again.
    used_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"<RecoveryCode {self.id}>"
