"""Server-side browser sessions: sign-in, lookup with idle and absolute expiry, sign-out,
sign-out everywhere, and the list of a user's signed-in devices.

Every path that ends browser sessions (sign-out, RP-initiated logout, signing a device out,
sign-out everywhere, a password change, a disabled user, another user signing in) goes
through ``end_session`` or ``end_user_sessions``: they revoke the refresh families issued
through the sessions and, in the same transaction, enqueue the back-channel logout tokens
of the apps that signed in through them (``services/backchannel_logout.py``)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from authserver.db import update_loaded_row
from authserver.models import AMR_PASSWORD, BrowserSession, RefreshFamily, User
from authserver.services.backchannel_logout import enqueue_logout_tokens
from authserver.services.refresh_tokens import RevocationReason, digest_token
from authserver.services.revocations import record_user_signed_out_everywhere, revoke_families

SESSION_TOKEN_BYTES = 32  # 256 bits
# last_seen_at is written at most this often: an active tab should not cost a write per page.
TOUCH_INTERVAL = timedelta(seconds=60)
# ...and at least this often relative to the idle lifetime, so that with a short idle lifetime
# (under a minute) activity still keeps the session alive: a session touched at most a tenth
# of its idle lifetime ago keeps at least nine tenths of it.
TOUCH_FRACTION_OF_IDLE_TTL = 10


@dataclass(frozen=True)
class SessionPolicy:
    idle_ttl: timedelta
    absolute_ttl: timedelta


@dataclass(frozen=True)
class StartedSession:
    session: BrowserSession
    # Goes into the cookie, never into the database.
    token: str


def start_session(
    db: Session,
    *,
    user: User,
    policy: SessionPolicy,
    now: datetime,
    ip_address: str | None,
    user_agent: str | None,
    amr: str = AMR_PASSWORD,
) -> StartedSession:
    """A new session with a new id: never reuse one from before sign-in (no fixation).
    ``amr``: how the user proved who they are (RFC 8176 values, space-separated)."""
    token = secrets.token_urlsafe(SESSION_TOKEN_BYTES)
    expires_at = now + policy.absolute_ttl
    browser_session = BrowserSession(
        id=uuid.uuid4(),
        token_digest=digest_token(token),
        user_id=user.id,
        created_at=now,
        auth_time=now,
        amr=amr,
        last_seen_at=now,
        idle_expires_at=min(now + policy.idle_ttl, expires_at),
        expires_at=expires_at,
        ip_address=ip_address,
        user_agent=(user_agent or None) and user_agent[:512],
    )
    db.add(browser_session)
    db.flush()
    browser_session.user = user
    return StartedSession(session=browser_session, token=token)


def resolve_session(
    db: Session, token: str | None, policy: SessionPolicy, now: datetime
) -> BrowserSession | None:
    """The live session this cookie value names, or None. Activity slides the idle expiry."""
    if not token or len(token) > 100:
        return None
    browser_session = db.scalars(
        select(BrowserSession).where(BrowserSession.token_digest == digest_token(token))
    ).one_or_none()
    if browser_session is None or not is_live(browser_session, now):
        return None
    if now - browser_session.last_seen_at >= touch_interval(policy):
        touched = {
            "last_seen_at": now,
            "idle_expires_at": min(now + policy.idle_ttl, browser_session.expires_at),
        }
        update_loaded_row(db, browser_session, _this_session(browser_session), touched)
    return browser_session


def _this_session(browser_session: BrowserSession) -> tuple[ColumnElement[bool], ...]:
    """SQL: the session's row, by the digest it is looked up by as well as its id: the key a
    distributed database would place the table by (README "Past one primary")."""
    return (
        BrowserSession.token_digest == browser_session.token_digest,
        BrowserSession.id == browser_session.id,
    )


def touch_interval(policy: SessionPolicy) -> timedelta:
    """How long after its last recorded activity a request moves the idle expiry forward."""
    return min(TOUCH_INTERVAL, policy.idle_ttl / TOUCH_FRACTION_OF_IDLE_TTL)


def is_live(browser_session: BrowserSession, now: datetime) -> bool:
    return (
        browser_session.revoked_at is None
        and not browser_session.user.disabled
        and now < browser_session.idle_expires_at
        and now < browser_session.expires_at
    )


def end_session(
    db: Session, browser_session: BrowserSession, reason: RevocationReason, now: datetime
) -> None:
    """Sign this browser out, revoke the refresh families issued through it and tell the apps
    that signed in through it. A session already signed out tells nobody again."""
    ended = db.scalars(
        update(BrowserSession)
        .where(*_this_session(browser_session), BrowserSession.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason.value)
        .returning(BrowserSession.id)
        .execution_options(synchronize_session=False)
    ).all()
    revoke_families(db, [RefreshFamily.browser_session_id == browser_session.id], reason.value, now)
    enqueue_logout_tokens(db, ended, now)
    db.scalars(
        select(BrowserSession)
        .where(*_this_session(browser_session))
        .execution_options(populate_existing=True)
    ).one()


def browser_session_of_family(db: Session, family_id: uuid.UUID) -> uuid.UUID | None:
    """The browser session a refresh family was issued through, if any."""
    return db.scalar(select(RefreshFamily.browser_session_id).where(RefreshFamily.id == family_id))


def move_families(db: Session, source: BrowserSession, target: BrowserSession) -> None:
    """Tie the live families of one session of a user to another session of the same user."""
    assert source.user_id == target.user_id
    db.execute(
        update(RefreshFamily)
        .where(RefreshFamily.browser_session_id == source.id, RefreshFamily.revoked_at.is_(None))
        .values(browser_session_id=target.id)
        .execution_options(synchronize_session=False)
    )
    db.flush()


def end_user_sessions(
    db: Session,
    user_id: uuid.UUID,
    reason: RevocationReason,
    now: datetime,
    *,
    keep_session_id: uuid.UUID | None = None,
    keep_family_id: uuid.UUID | None = None,
) -> tuple[int, int]:
    """Sign the user out everywhere (except, optionally, one session and one family), and
    tell the apps that signed in through the sessions ended.

    Returns (sessions ended, families revoked).
    """
    sessions = update(BrowserSession).where(
        BrowserSession.user_id == user_id, BrowserSession.revoked_at.is_(None)
    )
    if keep_session_id is not None:
        sessions = sessions.where(BrowserSession.id != keep_session_id)
    ended = db.scalars(
        sessions.values(revoked_at=now, revoked_reason=reason.value)
        .returning(BrowserSession.id)
        .execution_options(synchronize_session=False)
    ).all()
    conditions = [RefreshFamily.user_id == user_id]
    if keep_session_id is not None:
        conditions.append(
            (RefreshFamily.browser_session_id.is_(None))
            | (RefreshFamily.browser_session_id != keep_session_id)
        )
    if keep_family_id is not None:
        conditions.append(RefreshFamily.id != keep_family_id)
    revoked = revoke_families(db, conditions, reason.value, now)
    if keep_session_id is None and keep_family_id is None:
        # Everywhere means everywhere: also tokens that belong to no family.
        record_user_signed_out_everywhere(db, user_id, now)
    enqueue_logout_tokens(db, ended, now)
    db.flush()
    return len(ended), len(revoked)


@dataclass(frozen=True)
class Device:
    """One line of "where you are signed in": a browser session or an app's refresh family."""

    id: uuid.UUID
    kind: str  # "browser" or "app"
    client_name: str | None
    created_at: datetime
    last_used_at: datetime
    ip_address: str | None
    user_agent: str | None
    current: bool


def list_devices(
    db: Session,
    user_id: uuid.UUID,
    now: datetime,
    *,
    current_session_id: uuid.UUID | None = None,
    current_family_id: uuid.UUID | None = None,
) -> list[Device]:
    devices: list[Device] = []
    sessions = db.scalars(
        select(BrowserSession).where(
            BrowserSession.user_id == user_id,
            BrowserSession.revoked_at.is_(None),
            BrowserSession.expires_at > now,
            BrowserSession.idle_expires_at > now,
        )
    )
    for s in sessions:
        devices.append(
            Device(
                id=s.id,
                kind="browser",
                client_name=None,
                created_at=s.created_at,
                last_used_at=s.last_seen_at,
                ip_address=s.ip_address,
                user_agent=s.user_agent,
                current=s.id == current_session_id,
            )
        )
    families = db.scalars(
        select(RefreshFamily).where(
            RefreshFamily.user_id == user_id,
            RefreshFamily.revoked_at.is_(None),
            RefreshFamily.expires_at > now,
            RefreshFamily.idle_expires_at > now,
        )
    )
    for f in families:
        devices.append(
            Device(
                id=f.id,
                kind="app",
                client_name=f.client.name,
                created_at=f.created_at,
                last_used_at=f.last_used_at,
                ip_address=f.ip_address,
                user_agent=f.user_agent,
                current=f.id == current_family_id
                or (current_session_id is not None and f.browser_session_id == current_session_id),
            )
        )
    devices.sort(key=lambda d: d.last_used_at, reverse=True)
    return devices


def revoke_device(db: Session, user_id: uuid.UUID, device_id: uuid.UUID, now: datetime) -> bool:
    """Sign out one device of this user (a session or a family). False if none matched."""
    browser_session = db.scalars(
        select(BrowserSession).where(
            BrowserSession.id == device_id, BrowserSession.user_id == user_id
        )
    ).one_or_none()
    if browser_session is not None:
        end_session(db, browser_session, RevocationReason.LOGOUT, now)
        return True
    revoked = revoke_families(
        db,
        [RefreshFamily.id == device_id, RefreshFamily.user_id == user_id],
        RevocationReason.LOGOUT.value,
        now,
    )
    return bool(revoked)
