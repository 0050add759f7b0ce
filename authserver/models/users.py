from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import String, false
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # Normalised (trimmed, NFKC, case-folded) so that one address is one account.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    # SHA-256 (hex) of the address's UTS #39 skeleton (services/lookalikes.py): addresses that
    # look alike share it, so the unique index refuses a second one. NULL only for accounts
    # that already looked like an older one when the column was added (`authserver users
    # lookalikes` lists them).
    email_skeleton_digest: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)
    # argon2id PHC string; parameters travel inside it, so old hashes verify after a change.
    password_hash: Mapped[str] = mapped_column(String(255))
    # A disabled user cannot sign in and their refresh tokens stop working.
    disabled: Mapped[bool] = mapped_column(default=False)
    # Whether the address was shown to reach the user (a verification link, a reset link or
    # ``users verify-email``); the ``email_verified`` claim of userinfo (OpenID Connect Core
    # 1.0 §5.1).
    email_verified: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The admin role: the account may use the operator console (``/admin``), given a
    # session that signed in with its second factor (services/admin_role.py). Granted and
    # revoked only from the command line, each audited.
    is_admin: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The last successful password check (the sign-in page or the password grant).
    last_sign_in_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"<User {self.id}>"
