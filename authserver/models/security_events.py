from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow

# SQLite only auto-increments an INTEGER PRIMARY KEY.
_ID = BigInteger().with_variant(Integer(), "sqlite")


class SecurityEvent(Base):
    """One Security Event Token (RFC 8417) for one receiver that polls for them (RFC 8936).

    Written in the transaction of the change it reports, so it exists exactly when the change
    does. It waits until the receiver acknowledges its ``jti`` (RFC 8936 §2.4), or for
    AUTHSERVER_SECURITY_EVENT_RETENTION_DAYS if it never does (``authserver purge``). The SET
    is signed when it is handed out, with its stable ``jti``, so a SET polled again after a
    lost answer is recognised as the same event.
    """

    __tablename__ = "security_events"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    # RFC 8417 §2.2 "jti": unique per receiver, never reused.
    jti: Mapped[str] = mapped_column(String(43), unique=True)
    receiver_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    # The SET's "sub_id" and "events" claims; iss, aud, iat and jti are added at signing.
    claims: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    acknowledged_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_security_events_receiver_pending", "receiver_pk", "id"),)

    def __repr__(self) -> str:
        return f"<SecurityEvent {self.id}>"
