"""``/admin/v1/audit-events``: the audit trail, filtered by user, client, type and time,
newest first, a page at a time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Response, request

from authserver.db import db
from authserver.errors import InvalidRequest
from authserver.http.admin_api import bp
from authserver.http.admin_api.common import (
    admin_endpoint,
    decode_cursor,
    iso,
    page,
    page_limit,
)
from authserver.http.bearer import AdminCaller
from authserver.models import AuditEvent
from authserver.services.audit import AuditEventType, find_events

READ = "admin:audit:read"


def _event_json(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "occurred_at": iso(event.occurred_at),
        "type": event.event_type,
        "user_id": str(event.user_id) if event.user_id else None,
        "client_id": event.client_id,
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "details": event.details,
    }


def _moment(name: str) -> datetime | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be an RFC 3339 date and time.") from None
    if moment.tzinfo is None:
        raise InvalidRequest(f"{name} must say its offset from UTC (like Z or +00:00).")
    return moment.astimezone(UTC)


@bp.get("/audit-events")
@admin_endpoint(READ)
def list_events(caller: AdminCaller) -> Response:
    """Filters: ``user_id``, ``client_id``, ``type``, ``since`` (inclusive) and ``until``
    (exclusive), all optional, all applied together."""
    limit = page_limit()
    position = decode_cursor("audit-events")
    before = position.get("before") if position else None
    if before is not None and (isinstance(before, bool) or not isinstance(before, int)):
        raise InvalidRequest("The cursor is not one this list gave.")
    user_id = None
    if (raw_user := request.args.get("user_id")) is not None:
        try:
            user_id = uuid.UUID(raw_user)
        except ValueError:
            raise InvalidRequest("user_id must be a user's id (a UUID).") from None
    event_type = request.args.get("type")
    if event_type is not None and event_type not in set(AuditEventType):
        raise InvalidRequest(f"Unknown event type {event_type[:40]!r}.")
    client_id = request.args.get("client_id")
    if client_id is not None and len(client_id) > 64:
        raise InvalidRequest("client_id is at most 64 characters.")
    events = find_events(
        db.session,
        limit=limit,
        before_id=before,
        user_id=user_id,
        client_id=client_id,
        event_type=event_type,
        since=_moment("since"),
        until=_moment("until"),
    )
    following = {"kind": "audit-events", "before": events[-1].id} if len(events) == limit else None
    return page("audit_events", [_event_json(event) for event in events], following)
