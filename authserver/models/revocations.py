from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, FetchedValue, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow

# SQLite only auto-increments an INTEGER PRIMARY KEY.
_CURSOR = BigInteger().with_variant(Integer(), "sqlite")


class Revocation(Base):
    """One revocation a resource server verifying JWTs offline must hear about.

    Append-only; ``txid`` (PostgreSQL) or the id (SQLite) is what the revocation feed's cursor
    counts (``services.revocations.read_feed``). ``kind`` is "sid" (a refresh family, the
    ``sid`` claim of its access tokens), "jti" (one denylisted access token), "sub" (a user
    signed out everywhere: tokens issued before ``not_before`` are dead), "client" (a disabled
    client: its tokens issued before ``not_before`` are dead) or "kid" (a withdrawn signing
    key: every token it signed).
    """

    __tablename__ = "revocations"

    id: Mapped[int] = mapped_column(_CURSOR, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(8))
    value: Mapped[str] = mapped_column(String(64))
    not_before: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # Known for a jti (the token's own exp), a client and a kid (written with the entry). For
    # sid and sub it is created_at plus the longest access-token lifetime, worked out when the
    # feed is read, since that can change.
    expires_at: Mapped[datetime | None]
    # PostgreSQL: the 64-bit id of the transaction that wrote the row, filled by the column's
    # default (``pg_current_xact_id()``, migration 0014). Ids are taken when a row is written
    # but seen when it commits, so the feed counts transactions, not ids. NULL on SQLite.
    txid: Mapped[int | None] = mapped_column(BigInteger, server_default=FetchedValue(), index=True)

    __table_args__ = (Index("ix_revocations_kind_value", "kind", "value"),)

    def __repr__(self) -> str:
        return f"<Revocation {self.id} {self.kind}>"
