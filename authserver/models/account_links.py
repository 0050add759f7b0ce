from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow


class AccountLink(Base):
    """A single-use link mailed to a user: a password reset, an address verification or an
    address change (``services/account_links.py``). The link carries a 256-bit random token;
    only its SHA-256 is stored, so a copy of the table opens no account."""

    __tablename__ = "account_links"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # password_reset | email_verification | email_change (account_links.LinkPurpose).
    purpose: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    # The address an email_change link moves the account to (normalised); NULL otherwise.
    # For email_verification, the address the link was sent to: a link for an address the
    # account no longer has verifies nothing.
    email: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    # Set when the link is followed, or when a newer link or a password change replaces it.
    used_at: Mapped[datetime | None]

    # The user's links of one purpose, newest first: replacing them and the per-hour mail cap.
    __table_args__ = (Index("ix_account_links_user_purpose", "user_id", "purpose", "created_at"),)

    def __repr__(self) -> str:
        return f"<AccountLink {self.id} {self.purpose}>"
