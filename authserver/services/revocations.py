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

from sqlalchemy import BigInteger, ColumnElement, Text, cast, func, or_, select, update
from sqlalchemy.orm import Session

from authserver.errors import InvalidRequest
from authserver.models import Client, RefreshFamily, Revocation
from authserver.services import security_events
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
    security_events.emit(
        db,
        [security_events.family_revoked(fid, uid, reason, now) for fid, uid in rows],
        now,
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
    security_events.emit(db, [security_events.user_signed_out(user_id, not_before)], now)
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
    security_events.emit(db, [security_events.client_disabled(client_id, not_before)], now)
    db.flush()


def record_key_withdrawn(
    db: Session, kid: str, now: datetime, stale_for: timedelta, token_ttl: timedelta
) -> None:
    """Every token signed with ``kid`` is dead. A server process may go on signing with it
    until its next key refresh (``stale_for``), so the entry lives until the last token it
    can have signed has expired."""
    db.add(Revocation(kind=KID, value=kid, expires_at=now + stale_for + token_ttl, created_at=now))
    security_events.emit(db, [security_events.key_withdrawn(kid, now)], now)
    db.flush()


def denylist_access_token(db: Session, jti: str, expires_at: datetime, now: datetime) -> None:
    """RFC 7009 for a JWT: it stays on the denylist until it would have expired anyway."""
    if expires_at <= now or is_denylisted(db, jti):
        return
    db.add(Revocation(kind=JTI, value=jti[:64], expires_at=expires_at, created_at=now))
    security_events.emit(db, [security_events.access_token_revoked(jti[:64], now)], now)
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


# The feed's cursor. What it counts depends on the database (``_feed_position``); either way it
# is a signed 64-bit integer (a PostgreSQL bigint), and that is all a caller may send back.
MAX_FEED_CURSOR = 2**63 - 1
# ASCII digits only: str.isdigit() also takes SUPERSCRIPT TWO and other scripts' digits, and
# int() reads some of them (ARABIC-INDIC DIGIT ONE as 1).
FEED_CURSOR_TEXT = re.compile(r"[0-9]{1,19}")
FEED_CURSOR_REFUSED = "'since' must be a cursor from an earlier answer."
# PostgreSQL's cursors are a transaction id plus this. Every cursor handed out before
# migration 0014 was a revocations.id, far below it: a poller still holding one is answered
# in full, where reading its id as a transaction id could skip what was written between the
# upgrade and that number. (Decimal, so a cursor still shows its transaction id.)
TXID_CURSOR_BASE = 10**12
# The snapshot's xmin, as a bigint (xid8 has no cast to bigint but through text).
_SNAPSHOT_XMIN = cast(cast(func.pg_snapshot_xmin(func.pg_current_snapshot()), Text), BigInteger)


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
    # Whether the page is what a poll with ``since`` had not had yet; False for the full
    # listing, sent without ``since`` or for a ``since`` this database cannot have handed out.
    follows_since: bool


def _feed_position(db: Session, since: int | None) -> tuple[int, ColumnElement[bool] | None]:
    """This answer's cursor, read before its page, and which live rows the page holds (None:
    all of them, the full listing). The one place the databases differ.

    PostgreSQL. A row becomes visible when its transaction commits, not in the order ids were
    taken, so the cursor counts transactions. Each row records the 64-bit id of the
    transaction that wrote it (``txid``, the column's default). The cursor is the snapshot's
    xmin (plus ``TXID_CURSOR_BASE``), which the PostgreSQL documentation ("Transaction ID and
    Snapshot Information Functions", table "Snapshot Components") defines as the "Lowest
    transaction ID that was still active. All transaction IDs less than xmin are either
    committed and visible, or rolled back and dead." It is read in a statement of its own
    before the page: under READ COMMITTED each statement takes a new snapshot, so every
    transaction below the cursor had ended when the page's statement began, and the page sees
    all they committed. The page holds every live row with ``txid >= since``.

    Why nothing is lost: take a row written by transaction t, and the first poll whose cursor
    is above t. t had ended before that poll's page was read, so the page sees the row, and
    that poll's ``since``, the cursor before it, was not above t, so the page holds it (the
    first poll of all sends the full listing). Earlier polls may send the row too, once t has
    committed: at least once, never not at all. The xmin is the whole cluster's: a
    transaction that has written anything, in any database, holds it back while it runs, and
    every poll meanwhile sends again what was written since it began. That costs bytes, never
    an entry.

    A ``since`` above the xmin cannot have come from this database as it is now (xmin never
    goes back on one server): a restore, a replica further ahead. One below
    ``TXID_CURSOR_BASE`` is a revocations.id from before migration 0014. Both get the full
    listing, which depends on no earlier answer.

    SQLite. One writer at a time (``BEGIN IMMEDIATE`` in ``db.py``), so ids are taken and
    committed in the same order, and a transaction reads one snapshot throughout: the largest
    id it reads is a sound cursor for the page it reads. A ``since`` above it gets the full
    listing, as on PostgreSQL.
    """
    if db.get_bind().dialect.name == "postgresql":
        cursor = TXID_CURSOR_BASE + db.execute(select(_SNAPSHOT_XMIN)).scalar_one()
        if since is None or not TXID_CURSOR_BASE <= since <= cursor:
            return cursor, None
        return cursor, Revocation.txid >= since - TXID_CURSOR_BASE
    last = db.scalar(select(func.max(Revocation.id))) or 0
    if since is None or since > last:
        return last, None
    return last, Revocation.id > since


def read_feed(db: Session, since: int | None, now: datetime, token_ttl: timedelta) -> FeedPage:
    """Live entries a poll with ``since`` may not have had (all live entries without it)."""
    live = or_(
        Revocation.expires_at > now,
        (Revocation.expires_at.is_(None)) & (Revocation.created_at > now - token_ttl),
    )
    cursor, newer = _feed_position(db, since)
    query = select(Revocation).where(live).order_by(Revocation.id)
    if newer is not None:
        query = query.where(newer)
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
    return FeedPage(cursor=cursor, entries=entries, follows_since=newer is not None)
