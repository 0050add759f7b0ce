"""The audit trail: one row in ``audit_events`` and one JSON log line per security event.

What may be recorded is fixed here: identifiers, addresses, user agents, reasons and counts.
A detail key not in ``ALLOWED_DETAILS`` is a programming error, so a token, code, session
cookie, password or secret cannot slip into the trail by accident.
"""

from __future__ import annotations

import enum
import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Insert, Table, Text, bindparam, func, insert, literal, select
from sqlalchemy.orm import Session

from authserver.db import RunAlone, execute_alone
from authserver.metrics import count_security_event
from authserver.models import AuditEvent
from authserver.services.audit_queue import AuditQueue, WriteRows

log = logging.getLogger("authserver.audit")
_AUDIT_EVENTS = cast(Table, AuditEvent.__table__)
_INSERT_EVENT = insert(_AUDIT_EVENTS)


class AuditEventType(enum.StrEnum):
    SIGNIN_SUCCEEDED = "signin_succeeded"
    SIGNIN_FAILED = "signin_failed"
    TOKEN_ISSUED = "token_issued"  # noqa: S105 (an event name)
    REFRESH_REUSE_DETECTED = "refresh_reuse_detected"
    FAMILY_REVOKED = "family_revoked"
    LOGOUT = "logout"
    LOGOUT_EVERYWHERE = "logout_everywhere"
    PASSWORD_CHANGED = "password_changed"  # noqa: S105 (an event name)
    USER_CREATED = "user_created"
    USER_DISABLED = "user_disabled"
    USER_ENABLED = "user_enabled"
    USER_DELETED = "user_deleted"
    # The admin role (the operator console) given to or taken from an account, by the CLI.
    ADMIN_ROLE_GRANTED = "admin_role_granted"
    ADMIN_ROLE_REVOKED = "admin_role_revoked"
    EMAIL_VERIFIED = "email_verified"
    # The account page asked for a verification link (the reason says why none was mailed).
    EMAIL_VERIFICATION_REQUESTED = "email_verification_requested"
    # The account page asked to move the account to another address, and the link that did.
    EMAIL_CHANGE_REQUESTED = "email_change_requested"
    EMAIL_CHANGED = "email_changed"
    # "Forgot password?" was sent (for any address; the reason says what was done).
    PASSWORD_RESET_REQUESTED = "password_reset_requested"  # noqa: S105 (an event name)
    # The sign-up page was sent an address (the reason says what was mailed, if anything),
    # the operator invited an address, and a sign-up or invitation link made an account.
    SIGNUP_REQUESTED = "signup_requested"
    INVITATION_SENT = "invitation_sent"
    SIGNUP_COMPLETED = "signup_completed"
    # Second factors (services/totp.py, recovery_codes.py, second_factors.py): an
    # authenticator app confirmed or removed, a new set of recovery codes, one of them used,
    # a wrong code. Never the code or the secret.
    TOTP_ENROLLED = "totp_enrolled"
    TOTP_REMOVED = "totp_removed"
    RECOVERY_CODES_GENERATED = "recovery_codes_generated"
    RECOVERY_CODE_USED = "recovery_code_used"
    SECOND_FACTOR_FAILED = "second_factor_failed"
    # Passkeys (services/passkeys.py): added, renamed, removed (by the owner or the operator),
    # and a sign-in refused because the signature counter went backwards (WebAuthn §6.1.1).
    PASSKEY_ADDED = "passkey_added"
    PASSKEY_RENAMED = "passkey_renamed"
    PASSKEY_REMOVED = "passkey_removed"
    PASSKEY_CLONE_SUSPECTED = "passkey_clone_suspected"
    CLIENT_CREATED = "client_created"
    CLIENT_UPDATED = "client_updated"
    CLIENT_DISABLED = "client_disabled"
    CLIENT_ENABLED = "client_enabled"
    CLIENT_DELETED = "client_deleted"
    CLIENT_SECRET_ROTATED = "client_secret_rotated"  # noqa: S105 (an event name)
    # Dynamic client registration (services/client_registration.py): an initial access token
    # made or revoked by the operator, and a client registered with one (RFC 7591). Its
    # updates and deletion (RFC 7592) are client_updated and client_deleted.
    REGISTRATION_TOKEN_CREATED = "registration_token_created"  # noqa: S105 (an event name)
    REGISTRATION_TOKEN_REVOKED = "registration_token_revoked"  # noqa: S105 (an event name)
    CLIENT_REGISTERED = "client_registered"
    KEY_ROTATED = "key_rotated"
    KEY_WITHDRAWN = "key_withdrawn"
    RATE_LIMIT_HIT = "rate_limit_hit"
    # An outbox message (a back-channel logout token, ...) was taken by its receiver, or
    # given up (services/outbox.py).
    OUTBOX_DELIVERED = "outbox_delivered"
    OUTBOX_GAVE_UP = "outbox_gave_up"


# Events that record no change of state, only that a token left the server. Their rows may
# be queued (services/audit_queue.py); without a queue, a request that wrote nothing else
# commits the row on its own, without BEGIN and COMMIT round trips (db.execute_alone).
TOKEN_EVENTS = frozenset({AuditEventType.TOKEN_ISSUED})

ALLOWED_DETAILS = frozenset(
    {
        "grant_type",
        "method",
        "reason",
        "family_id",
        "family_client_id",
        "browser_session_id",
        "scope",
        "kid",
        "state",
        "email",
        # An address change: the address the account had before.
        "previous_email",
        "endpoint",
        "limit",
        "first_ip_address",
        "last_ip_address",
        "families_revoked",
        "sessions_ended",
        "served_audiences",
        "channel",
        "message_id",
        "attempts",
        "backchannel_logout_uri",
        "security_event_delivery",
        # Which registration fields an update changed (their names, never their values).
        "changed",
        "overlap_seconds",
        # What a password typed again was for (services/own_account.py).
        "action",
        # How many unused recovery codes an account has left (services/second_factors.py).
        "recovery_codes_left",
        # Which passkey (our row id, never the credential), and the signature counters of a
        # suspected clone: the one presented and the one stored.
        # Who made a change for someone else (services/audit.acting_as): "admin_api" and the
        # admin client whose token it was, or "admin_console" and the admin user; and the
        # admin scopes a client was given.
        "actor",
        "actor_client_id",
        "actor_user_id",
        "admin_scopes",
        "passkey_id",
        "sign_count",
        "stored_sign_count",
        # Which initial access token (its row id, never the token) registered a client, or
        # was made or revoked, and how many registrations it allows.
        "registration_token_id",
        "uses_allowed",
    }
)


@dataclass(frozen=True)
class Actor:
    """Who is making the changes of the current request when it is not the user they are
    about: an admin client through the admin API, an admin user through the console. Every
    event recorded meanwhile names it (``actor``, ``actor_client_id`` or ``actor_user_id``;
    an admin client also as the event's client when the event names none), along with the
    request's address and user agent, whichever service records it."""

    via: str  # "admin_api", "admin_console"
    ip_address: str | None
    user_agent: str | None
    # The admin client whose token it was (admin API), or the admin user signed in (console).
    client_id: str | None = None
    user_id: uuid.UUID | None = None


_actor: ContextVar[Actor | None] = ContextVar("audit_actor", default=None)


@contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    """Record the events of the enclosed code as ``actor``'s doing."""
    token = _actor.set(actor)
    try:
        yield
    finally:
        _actor.reset(token)


def record(
    db: Session,
    event_type: AuditEventType,
    now: datetime,
    *,
    user_id: uuid.UUID | None = None,
    client_id: str | None = None,
    ip_address: str | None = None,
    user_agent: str | None = None,
    queue: AuditQueue | None = None,
    row_written: bool = False,
    **details: Any,
) -> None:
    """Record one event: a row and a JSON log line. The row joins ``db``'s transaction,
    except a token_issued row, which goes to ``queue`` if there is one and otherwise commits
    on its own when ``db`` has written nothing else. ``row_written``: the statement that made
    the change wrote the row too (``rotation_audit_row``); only log and count."""
    unknown = set(details) - ALLOWED_DETAILS
    if unknown:
        raise ValueError(f"audit details not allowed: {sorted(unknown)}")
    clean = {k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in details.items()}
    actor = _actor.get()
    if actor is not None:
        clean["actor"] = actor.via
        if actor.client_id is not None:
            clean["actor_client_id"] = actor.client_id
            client_id = client_id or actor.client_id
        if actor.user_id is not None:
            clean["actor_user_id"] = str(actor.user_id)
        ip_address = ip_address or actor.ip_address
        user_agent = user_agent or actor.user_agent
    user_agent = clip_user_agent(user_agent)
    if not row_written:
        row = {
            "occurred_at": now,
            "event_type": event_type.value,
            "user_id": user_id,
            "client_id": client_id,
            "ip_address": ip_address,
            "user_agent": user_agent,
            "details": clean,
        }
        _write_row(db, row, queue)
    count_security_event(event_type.value, clean)
    log.info(
        json.dumps(
            {
                "event": event_type.value,
                "at": now.isoformat(),
                "user_id": str(user_id) if user_id else None,
                "client_id": client_id,
                "ip": ip_address,
                "user_agent": user_agent,
                **clean,
            },
            sort_keys=True,
        )
    )


def _write_row(db: Session, row: dict[str, Any], queue: AuditQueue | None) -> None:
    # A plain INSERT, not an ORM object: nothing reads the row back in the same request.
    if row["event_type"] not in TOKEN_EVENTS:
        db.execute(_INSERT_EVENT, row)
    elif queue is not None:
        queue.put(row)
    else:
        execute_alone(db, _INSERT_EVENT, row)


def clip_user_agent(user_agent: str | None) -> str | None:
    """What of a User-Agent header the trail keeps: ``audit_events.user_agent`` holds 512."""
    return (user_agent or None) and user_agent[:512]


_ROW_COLUMNS = (
    "occurred_at",
    "event_type",
    "user_id",
    "client_id",
    "ip_address",
    "user_agent",
    "details",
)


def rotation_audit_row(family: Any) -> Insert:
    """SQL: the token_issued row of a refresh rotation, for the statement that rotates
    (refresh_tokens._rotate_in_one_statement), so the row commits with the rotation in one
    round trip. ``family`` is that statement's CTE of the slid family (``id``, ``user_id``,
    ``scope``). The row is the one ``record`` writes for the refresh grant; its other values
    are the parameters ``now``, ``audit_client_id``, ``last_ip`` and ``audit_user_agent``."""
    details = func.json_build_object(
        "grant_type",
        "refresh_token",
        "scope",
        family.c.scope,
        "family_id",
        family.c.id.cast(Text),
    )
    return insert(_AUDIT_EVENTS).from_select(
        _ROW_COLUMNS,
        select(
            bindparam("now"),
            literal(AuditEventType.TOKEN_ISSUED.value),
            family.c.user_id,
            bindparam("audit_client_id", type_=_AUDIT_EVENTS.c.client_id.type),
            bindparam("last_ip"),
            bindparam("audit_user_agent", type_=_AUDIT_EVENTS.c.user_agent.type),
            details,
        ),
    )


def row_writer(run_alone: RunAlone) -> WriteRows:
    """How an AuditQueue writes its rows: one INSERT of many rows, committed on its own."""

    def write(rows: list[dict[str, Any]]) -> None:
        run_alone(_INSERT_EVENT, rows)

    return write


def recent_events(
    db: Session,
    *,
    limit: int = 50,
    user_id: uuid.UUID | None = None,
    event_type: str | None = None,
) -> list[AuditEvent]:
    """The newest events, newest last (the way `tail` shows them)."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if user_id is not None:
        query = query.where(AuditEvent.user_id == user_id)
    if event_type is not None:
        query = query.where(AuditEvent.event_type == event_type)
    return list(reversed(list(db.scalars(query))))


def find_events(
    db: Session,
    *,
    limit: int,
    before_id: int | None = None,
    user_id: uuid.UUID | None = None,
    client_id: str | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[AuditEvent]:
    """Events matching every filter given, newest first, ``limit`` at most, those older than
    the event ``before_id`` (the last of the previous page). Paging runs from new to old by
    id, so events recorded while a caller pages land before its first page, never inside
    the pages still to come. ``client_id`` matches an event's client: the one it is about,
    or, for a change to an account made through the admin API, the admin client that made
    it."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    if user_id is not None:
        query = query.where(AuditEvent.user_id == user_id)
    if client_id is not None:
        query = query.where(AuditEvent.client_id == client_id)
    if event_type is not None:
        query = query.where(AuditEvent.event_type == event_type)
    if since is not None:
        query = query.where(AuditEvent.occurred_at >= since)
    if until is not None:
        query = query.where(AuditEvent.occurred_at < until)
    return list(db.scalars(query))
