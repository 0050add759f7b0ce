"""Audit events raised while handling a request: the caller's address and user agent come
from the request, the time from the runtime clock."""

from __future__ import annotations

import uuid
from typing import Any

from flask import request

from authserver.db import db
from authserver.runtime import runtime
from authserver.services.audit import AuditEventType, record


def audit(
    event_type: AuditEventType,
    *,
    user_id: uuid.UUID | None = None,
    client_id: str | None = None,
    row_written: bool = False,
    queued: bool = False,
    **details: Any,
) -> None:
    """Record ``event_type`` for this request. ``queued``: a token_issued row that may wait
    for the audit queue (a client_credentials token's) instead of committing now."""
    record(
        db.session,
        event_type,
        runtime().now(),
        user_id=user_id,
        client_id=client_id,
        ip_address=request.remote_addr,
        user_agent=request.user_agent.string,
        queue=runtime().audit_queue if queued else None,
        row_written=row_written,
        **details,
    )
