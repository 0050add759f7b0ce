from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base


class SignInThrottle(Base):
    """Failed password (or client secret) guesses against one account, from one address
    (``ip_address``) or from everywhere (``ip_address`` = "*")."""

    __tablename__ = "sign_in_throttles"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # A normalised email, or "client:<client_id>" for client-secret guesses.
    account: Mapped[str] = mapped_column(String(300))
    ip_address: Mapped[str] = mapped_column(String(45))
    failures: Mapped[int]
    window_started_at: Mapped[datetime]
    last_failure_at: Mapped[datetime] = mapped_column(index=True)

    __table_args__ = (UniqueConstraint("account", "ip_address"),)
