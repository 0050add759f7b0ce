from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import LargeBinary
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow


class InitialAccessToken(Base):
    """An initial access token (RFC 7591 §1.2, §3): what the operator hands to whoever may
    register clients at ``POST /register`` (``authserver registration-tokens create``). Only
    its SHA-256 digest is kept; it works until ``expires_at``, for ``uses_allowed``
    registrations, unless revoked."""

    __tablename__ = "initial_access_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # SHA-256 of the token (256 random bits, so a slow hash adds nothing).
    token_digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    # How many clients it may register, and how many it has: a registration takes one in the
    # statement that checks there is one left, so two at once cannot both take the last.
    uses_allowed: Mapped[int]
    uses: Mapped[int] = mapped_column(default=0)
    # Set by ``registration-tokens revoke``; the row stays, for ``list`` and the audit trail.
    revoked_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"<InitialAccessToken {self.id}>"
