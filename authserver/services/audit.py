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
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from authserver.metrics import count_security_event
from authserver.models import AuditEvent

log = logging.getLogger("authserver.audit")
_INSERT_EVENT = insert(cast(Table, AuditEvent.__table__))


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
    CLIENT_CREATED = "client_created"
    KEY_ROTATED = "key_rotated"
    RATE_LIMIT_HIT = "rate_limit_hit"


ALLOWED_DETAILS = frozenset(
    {
        "grant_type",
        "method",
        "reason",
        "family_id",
        "browser_session_id",
        "scope",
        "kid",
        "state",
        "email",
        "endpoint",
        "limit",
        "first_ip_address",
        "last_ip_address",
        "families_revoked",
        "sessions_ended",
    }
)


def record(
    db: Session,
    event_type: AuditEventType,
    now: datetime,
    *,
    user_id: uuid.UUID | None = None,
    client_id: str | None = None,
    ip_address: str | None = None,
    user_agent: str | None = None,
    **details: Any,
) -> None:
    unknown = set(details) - ALLOWED_DETAILS
    if unknown:
        raise ValueError(f"audit details not allowed: {sorted(unknown)}")
    clean = {k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in details.items()}
    user_agent = (user_agent or None) and user_agent[:512]
    # A plain INSERT in the caller's transaction, not an ORM object: one row per token issued
    # is on every token request's path, and nothing reads the row back in the same request.
    db.execute(
        _INSERT_EVENT,
        {
            "occurred_at": now,
            "event_type": event_type.value,
            "user_id": user_id,
            "client_id": client_id,
            "ip_address": ip_address,
            "user_agent": user_agent,
            "details": clean,
        },
    )
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
