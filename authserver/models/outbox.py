from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow

# SQLite only auto-increments an INTEGER PRIMARY KEY.
_ID = BigInteger().with_variant(Integer(), "sqlite")
# A message still to be delivered: neither delivered nor given up.
PENDING = "delivered_at IS NULL AND gave_up_at IS NULL"


class OutboundMessage(Base):
    """One message for another system (a transactional outbox, ``services/outbox.py``).

    Written in the transaction of the change it reports, so the change and the message commit
    together or not at all; a sender delivers it afterwards, at least once. ``payload`` is
    what the channel turns into the request at delivery time (a logout token's claims, never
    the signed token): nothing here is a credential.
    """

    __tablename__ = "outbound_messages"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    # Which handler delivers it ("backchannel_logout"); services/outbox.py has the registry.
    channel: Mapped[str] = mapped_column(String(40))
    # Where it goes, as the channel understands it (an https URL for the HTTP channels).
    destination: Mapped[str] = mapped_column(String(2000))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Attempts begun, counted when a sender takes the message (so a message whose delivery
    # kills its sender still runs out of time).
    attempts: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    # When a sender may take it next: due now, the next retry, or, while a sender holds it,
    # the end of that sender's lease.
    next_attempt_at: Mapped[datetime]
    # The lease of the sender that took it last; its outcome is written only while this
    # still names it (a sender whose lease ran out and was taken over writes nothing).
    lease_id: Mapped[uuid.UUID | None]
    delivered_at: Mapped[datetime | None]
    gave_up_at: Mapped[datetime | None]
    # Why the last attempt failed, for operators ("HTTP 503", "connection refused"): never a
    # token, a body or a secret.
    last_error: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        # What a sender asks for: pending messages by when they are due.
        Index(
            "ix_outbound_messages_pending",
            "next_attempt_at",
            postgresql_where=text(PENDING),
            sqlite_where=text(PENDING),
        ),
    )

    def __repr__(self) -> str:
        return f"<OutboundMessage {self.id} {self.channel}>"
