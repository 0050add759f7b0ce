from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow

# SQLite only auto-increments an INTEGER PRIMARY KEY.
_CURSOR = BigInteger().with_variant(Integer(), "sqlite")


class Revocation(Base):
    """One revocation a resource server verifying JWTs offline must hear about.

    Append-only. ``kind`` is "sid" (a refresh family, the ``sid`` claim of its access
    tokens), "jti" (one denylisted access token), "sub" (a user signed out everywhere: tokens
    issued before ``not_before`` are dead), "client" (a disabled client: its tokens issued
    before ``not_before`` are dead) or "kid" (a withdrawn signing key: every token it signed).
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

    __table_args__ = (Index("ix_revocations_kind_value", "kind", "value"),)

    def __repr__(self) -> str:
        return f"<Revocation {self.id} {self.kind}>"
