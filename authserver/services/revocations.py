"""Revocations that must reach resource servers verifying JWTs offline, and the feed that
carries them (``GET /oauth/revocations``).

Every path that revokes refresh families goes through ``revoke_families``, so each revoked
family is recorded once as a "sid" entry. Entries fall out of the feed once no unexpired
access token can carry them: a family's or user's entry lives for the longest access-token
lifetime after the revocation, a denylisted jti until its token's ``exp``, a disabled client's
or withdrawn key's until the last token it covers has expired (written with the entry).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import Session

from authserver.errors import InvalidRequest
from authserver.models import Client, RefreshFamily, Revocation
from authserver.services.audit import AuditEventType, record

SID = "sid"
JTI = "jti"
SUB = "sub"
# A disabled client: its tokens issued before not_before are dead (client_credentials tokens
# carry no sid, so no family revocation reaches them).
CLIENT = "client"
# A withdrawn signing key: every token it signed is dead, whenever it was issued.
KID = "kid"


def revoke_families(
    db: Session, where: Sequence[ColumnElement[bool]], reason: str, now: datetime
) -> list[uuid.UUID]:
    """Revoke the live families matching ``where``; returns their ids."""
    rows = db.execute(
        update(RefreshFamily)
        .where(*where, RefreshFamily.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
        .returning(RefreshFamily.id, RefreshFamily.user_id)
        .execution_options(synchronize_session=False)
    ).all()
    for family_id, user_id in rows:
        db.add(Revocation(kind=SID, value=str(family_id), created_at=now))
        record(
            db,
            AuditEventType.FAMILY_REVOKED,
            now,
            user_id=user_id,
            family_id=family_id,
            reason=reason,
        )
    db.flush()
    return [family_id for family_id, _ in rows]


def record_user_signed_out_everywhere(db: Session, user_id: uuid.UUID, now: datetime) -> None:
    """Tokens of this user issued before now are dead, including ones without a family.

    The cut-off is the whole second: ``iat`` has whole seconds (RFC 7519 §2 NumericDate as
    authserver writes it), so a cut-off with microseconds would refuse a token issued after
    it in the same second, and the user signing in again at once would be refused. A token
    without a family issued in that same second before the sign-out is not recalled by this
    entry; one with a family is, by its family's revocation."""
    not_before = now.replace(microsecond=0)
    db.add(Revocation(kind=SUB, value=str(user_id), not_before=not_before, created_at=now))
    db.flush()


def record_client_disabled(
    db: Session, client_id: str, now: datetime, stale_for: timedelta, token_ttl: timedelta
) -> None:
    """Tokens issued to this client before every server has stopped authenticating it are
    dead. Servers keep a client row in memory for up to ``stale_for``
    (AUTHSERVER_CLIENT_CACHE_SECONDS) and may issue tokens that long after the disable, so the
    cut-off is the first whole second after that; ``iat`` has whole seconds."""
    not_before = (now + stale_for).replace(microsecond=0) + timedelta(seconds=1)
    db.add(
        Revocation(
            kind=CLIENT,
            value=client_id,
            not_before=not_before,
            expires_at=not_before + token_ttl,
            created_at=now,
        )
    )
    db.flush()


def record_key_withdrawn(
    db: Session, kid: str, now: datetime, stale_for: timedelta, token_ttl: timedelta
) -> None:
    """Every token signed with ``kid`` is dead. A server process may go on signing with it
    until its next key refresh (``stale_for``), so the entry lives until the last token it
    can have signed has expired."""
    db.add(Revocation(kind=KID, value=kid, expires_at=now + stale_for + token_ttl, created_at=now))
    db.flush()


def denylist_access_token(db: Session, jti: str, expires_at: datetime, now: datetime) -> None:
    """RFC 7009 for a JWT: it stays on the denylist until it would have expired anyway."""
    if expires_at <= now or is_denylisted(db, jti):
        return
    db.add(Revocation(kind=JTI, value=jti[:64], expires_at=expires_at, created_at=now))
    db.flush()


def is_denylisted(db: Session, jti: str) -> bool:
    found = db.scalars(
        select(Revocation.id).where(Revocation.kind == JTI, Revocation.value == jti[:64])
    ).first()
    return found is not None


def longest_access_token_ttl(db: Session, default_ttl: int) -> timedelta:
    """The longest lifetime any access token can have now: the server default or a client's."""
    longest_client = db.scalar(select(func.max(Client.access_token_ttl)))
    return timedelta(seconds=max(default_ttl, longest_client or 0))


# The cursor is a revocations.id: a PostgreSQL bigint (an SQLite integer), signed 64-bit.
MAX_FEED_CURSOR = 2**63 - 1
# ASCII digits only: str.isdigit() also takes SUPERSCRIPT TWO and other scripts' digits, and
# int() reads some of them (ARABIC-INDIC DIGIT ONE as 1).
FEED_CURSOR_TEXT = re.compile(r"[0-9]{1,19}")
FEED_CURSOR_REFUSED = "'since' must be a cursor from an earlier answer."


def parse_feed_cursor(text: str) -> int:
    """``since`` as a cursor, or ``InvalidRequest`` in words that never repeat the input
    (RFC 6749 §5.2 limits what an error_description may hold)."""
    if not FEED_CURSOR_TEXT.fullmatch(text) or int(text) > MAX_FEED_CURSOR:
        raise InvalidRequest(FEED_CURSOR_REFUSED)
    return int(text)


@dataclass(frozen=True)
class FeedPage:
    cursor: int
    entries: list[dict[str, Any]]


def read_feed(db: Session, since: int | None, now: datetime, token_ttl: timedelta) -> FeedPage:
    """Live entries newer than ``since`` (all live entries without it), oldest first."""
    live = or_(
        Revocation.expires_at > now,
        (Revocation.expires_at.is_(None)) & (Revocation.created_at > now - token_ttl),
    )
    # The cursor first, and the page bounded by it: on PostgreSQL each statement sees what was
    # committed when it began, so a cursor read after the page could pass an entry committed
    # in between, and every later poll (since=cursor) would skip it.
    cursor = db.scalar(select(func.max(Revocation.id))) or 0
    query = select(Revocation).where(live, Revocation.id <= cursor).order_by(Revocation.id)
    if since is not None:
        query = query.where(Revocation.id > since)
    rows = list(db.scalars(query))
    entries: list[dict[str, Any]] = []
    for row in rows:
        expires_at = row.expires_at or row.created_at + token_ttl
        entry: dict[str, Any] = {
            "type": row.kind,
            "value": row.value,
            "expires_at": int(expires_at.timestamp()),
        }
        if row.not_before is not None:
            entry["not_before"] = int(row.not_before.timestamp())
        entries.append(entry)
    return FeedPage(cursor=max(cursor, since or 0), entries=entries)
