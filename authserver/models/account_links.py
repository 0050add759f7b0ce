from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow


class AccountLink(Base):
    """A single-use link mailed to a user: a password reset, an address verification or an
    address change; or to an address that has no account yet: a sign-up or an invitation
    (``services/account_links.py``). The link carries a 256-bit random token;
    only its SHA-256 is stored, so a copy of the table opens no account."""

    __tablename__ = "account_links"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # password_reset | email_verification | email_change | signup | invitation
    # (account_links.LinkPurpose).
    purpose: Mapped[str] = mapped_column(String(32))
    # NULL for a sign-up or invitation link: the account does not exist yet.
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    # Normalised. email_change: the address the link moves the account to. email_verification:
    # the address the link was sent to (a link for an address the account no longer has
    # verifies nothing). signup and invitation: the address the new account will have.
    # NULL for a password reset.
    email: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    # Set when the link is followed, or when a newer link or a password change replaces it.
    used_at: Mapped[datetime | None]

    __table_args__ = (
        # The user's links of one purpose, newest first: replacing them and the per-hour cap.
        Index("ix_account_links_user_purpose", "user_id", "purpose", "created_at"),
        # An address's links of one purpose (sign-up, invitation): the same, per address.
        Index("ix_account_links_email_purpose", "email", "purpose", "created_at"),
        CheckConstraint("user_id IS NOT NULL OR email IS NOT NULL", name="user_or_email"),
    )

    def __repr__(self) -> str:
        return f"<AccountLink {self.id} {self.purpose}>"
