from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Enum, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from authserver.db import Base, utcnow


class KeyState(enum.StrEnum):
    """next -> current -> retired -> removed. Published in the JWKS: next, current, retired.

    Any state but removed can also end in withdrawn (``authserver keys withdraw``): a key
    that may be compromised, out of the JWKS at once and its tokens refused everywhere."""

    NEXT = "next"  # published, not signing yet: every JWKS cache sees it before it signs
    CURRENT = "current"  # signs new tokens (one at a time) and is published
    RETIRED = "retired"  # no longer signs; published until every token it signed has expired
    REMOVED = "removed"  # out of the JWKS; the row stays until purged
    WITHDRAWN = "withdrawn"  # out of the JWKS and in the revocation feed; never signs again


class SigningKey(Base):
    __tablename__ = "signing_keys"

    # RFC 7638 JWK thumbprint of the public key.
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(10))
    public_jwk: Mapped[dict[str, Any]]
    # PKCS#8 PEM sealed with AES-256-GCM under AUTHSERVER_KEY_ENCRYPTION_KEY (nonce || ct),
    # with the kid as associated data so a ciphertext cannot be moved to another row.
    private_key_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[KeyState] = mapped_column(
        Enum(
            KeyState,
            native_enum=False,
            length=16,
            values_callable=lambda states: [s.value for s in states],
        ),
        index=True,
    )
    # When it was first published (a next key), or created current at once.
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[datetime | None]
    retired_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"<SigningKey {self.kid} {self.state}>"
