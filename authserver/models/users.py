from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # Normalised (trimmed, NFKC, case-folded) so that one address is one account.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    # argon2id PHC string; parameters travel inside it, so old hashes verify after a change.
    password_hash: Mapped[str] = mapped_column(String(255))
    # A disabled user cannot sign in and their refresh tokens stop working.
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"<User {self.id}>"
