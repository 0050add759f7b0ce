"""Audit events raised while handling a request: the caller's address and user agent come
from the request, the time from the runtime clock."""

from __future__ import annotations

import uuid
from typing import Any

from flask import request

from authserver.db import db
from authserver.errors import ValidationError
from authserver.runtime import runtime
from authserver.services.audit import AuditEventType, record
from authserver.services.users import normalize_email


def auditable_email(raw: str | None) -> str | None:
    """The typed-in sign-in name, for the trail, only if it is an email address: people type
    their password into the email field, and a password must never reach a log."""
    try:
        return normalize_email(raw) if raw else None
    except ValidationError:
        return None


def audit(
    event_type: AuditEventType,
    *,
    user_id: uuid.UUID | None = None,
    client_id: str | None = None,
    row_written: bool = False,
    **details: Any,
) -> None:
    record(
        db.session,
        event_type,
        runtime().now(),
        user_id=user_id,
        client_id=client_id,
        ip_address=request.remote_addr,
        user_agent=request.user_agent.string,
        queue=runtime().audit_queue,
        row_written=row_written,
        **details,
    )
