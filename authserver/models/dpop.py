from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base


class DPoPProofSeen(Base):
    """A DPoP proof the server accepted, remembered until it could no longer be accepted, so
    that no proof is accepted twice by any process (RFC 9449 §11.1). ``purge`` deletes the
    rows past ``expires_at``."""

    __tablename__ = "dpop_proofs_seen"

    # DPoPProof.replay_key: a digest of the proof's key thumbprint and jti (43 characters).
    replay_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
