from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from authserver.db import Base, utcnow
from authserver.models.users import User

# RFC 8176 §2: the authentication method reference of a password.
AMR_PASSWORD = "pwd"  # noqa: S105 (a method's name, not a password)


class BrowserSession(Base):
    """A signed-in browser. Server-side, so it can be listed and revoked (a signed cookie
    cannot). The cookie carries a 256-bit random id; only its SHA-256 is stored."""

    __tablename__ = "browser_sessions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    token_digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the user proved who they are (OpenID Connect auth_time).
    auth_time: Mapped[datetime] = mapped_column(default=utcnow)
    # How they proved it: RFC 8176 authentication method references, space-separated
    # ("pwd"), for the ID token's amr claim.
    amr: Mapped[str] = mapped_column(String(64), default=AMR_PASSWORD, server_default=AMR_PASSWORD)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Slides forward with activity, never past expires_at.
    idle_expires_at: Mapped[datetime]
    # Absolute end, fixed at sign-in.
    expires_at: Mapped[datetime] = mapped_column(index=True)
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(40))
    ip_address: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))

    user: Mapped[User] = relationship(lazy="joined")

    def __repr__(self) -> str:
        return f"<BrowserSession {self.id}>"


class BrowserSessionClient(Base):
    """A client that signed in through a browser session: it is told when the session ends
    (OpenID Connect Back-Channel Logout 1.0 §2.3, "remembering logged-in RPs").

    Written when an authorization code is issued in the session, once per client and
    ``sid``, so it covers clients that got only an ID token. ``sid`` is the session id the
    client was given (the ``sid`` of its ID token): the session's own, or that of an earlier
    session of the same user whose clients were carried over to this one when the user
    signed in again (``prompt=login``), since the client still knows that earlier id.
    """

    __tablename__ = "browser_session_clients"

    browser_session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("browser_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    client_pk: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
    )
    sid: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"<BrowserSessionClient {self.browser_session_id} {self.client_pk}>"
