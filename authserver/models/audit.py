from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow


class AuditEvent(Base):
    """One security event. Identifiers, addresses and reasons only: never a token, code,
    session id, password or secret (``services/audit.py`` enforces the allowed detail keys)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    event_type: Mapped[str] = mapped_column(String(40), index=True)
    # No foreign keys: the trail outlives the users and clients it mentions.
    user_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    client_id: Mapped[str | None] = mapped_column(String(64))
    ip_address: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    details: Mapped[dict[str, Any]]
