"""The device authorization grant (RFC 8628), for TVs and command-line tools: a device asks
for a device code and a user code (§3.1, §3.2), shows the user code and where to type it,
and polls the token endpoint (§3.4) while the user signs in on another screen, types the
code and approves or denies (§3.3).

- The user code is 8 letters from 20 consonants (§6.1: no vowels, so no words; no letters
  that look like digits), shown as ``BCDF-GHJK``, typed in any case with or without the
  dash: 20^8, about 2^34.6, so with the guesses throttled per user and address a guess
  finds a live code with a negligible chance. The device code is 256 random bits. Only
  SHA-256 digests of both are stored.
- A poll faster than the interval is ``slow_down`` and the interval grows by 5 seconds
  (§3.5); a pending request is ``authorization_pending``; past its lifetime,
  ``expired_token``; refused by the user, ``access_denied``.
- The approved request gives tokens once: the poll that claims it moves it from
  "approved" to "used" in one conditional UPDATE, so two polls racing get one answer each,
  never two token sets.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from authserver.db import update_loaded_row
from authserver.errors import (
    AccessDenied,
    AuthorizationPending,
    ExpiredDeviceCode,
    InvalidGrant,
    SlowDown,
)
from authserver.models import BrowserSession, Client, DeviceAuthorization

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# Where the user types the code (the verification_uri, §3.2).
DEVICE_PAGE_PATH = "/device"
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
DEVICE_CODE_BYTES = 32
SLOW_DOWN_STEP = 5  # seconds, RFC 8628 §3.5

PENDING = "pending"
APPROVED = "approved"
DENIED = "denied"
USED = "used"


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def normalize_user_code(raw: str | None) -> str | None:
    """The code as stored: upper case, without the dash and spaces people type; None for
    anything that cannot be a user code."""
    if raw is None or len(raw) > 32:
        return None
    code = "".join(raw.split()).replace("-", "").upper()
    if len(code) != USER_CODE_LENGTH or any(c not in USER_CODE_ALPHABET for c in code):
        return None
    return code


def shown(code: str) -> str:
    """``BCDFGHJK`` as people read it: ``BCDF-GHJK``."""
    return f"{code[:4]}-{code[4:]}"


@dataclass(frozen=True)
class StartedDeviceAuthorization:
    device_code: str
    user_code: str  # as shown
    expires_in: int
    interval: int


def start_device_authorization(
    session: Session,
    client: Client,
    *,
    scope: str,
    audience: str,
    now: datetime,
    ttl: int,
    interval: int,
) -> StartedDeviceAuthorization:
    """§3.2: a new device code and user code for ``client``'s request."""
    device_code = secrets.token_urlsafe(DEVICE_CODE_BYTES)
    for _ in range(5):
        user_code = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))
        row = DeviceAuthorization(
            device_code_digest=_digest(device_code),
            user_code_digest=_digest(user_code),
            client_pk=client.id,
            scope=scope,
            audience=audience,
            status=PENDING,
            interval=interval,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )
        try:
            # A savepoint: a user code still stored (live, or expired and not yet purged)
            # is refused by the unique index, and another is drawn.
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            continue
        return StartedDeviceAuthorization(device_code, shown(user_code), ttl, interval)
    raise RuntimeError("no free user code after five draws")


def find_pending(session: Session, user_code: str, now: datetime) -> DeviceAuthorization | None:
    """The live, undecided request this (normalised) user code names, if any."""
    found = session.scalars(
        select(DeviceAuthorization).where(
            DeviceAuthorization.user_code_digest == _digest(user_code)
        )
    ).one_or_none()
    if found is None or found.status != PENDING or found.expires_at <= now:
        return None
    return found


def decide(
    session: Session,
    authorization: DeviceAuthorization,
    browser_session: BrowserSession,
    *,
    approve: bool,
    now: datetime,
) -> bool:
    """Record the signed-in user's decision, once (a conditional UPDATE: two tabs deciding
    at once, one decision counts). False if the request was decided or expired meanwhile."""
    decided = session.execute(
        update(DeviceAuthorization)
        .where(
            *_this_request(authorization),
            DeviceAuthorization.status == PENDING,
            DeviceAuthorization.expires_at > now,
        )
        .values(
            status=APPROVED if approve else DENIED,
            user_id=browser_session.user_id,
            browser_session_id=browser_session.id,
            auth_time=browser_session.auth_time,
            amr=browser_session.amr,
            decided_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    session.expire(authorization)
    return bool(decided.rowcount)  # type: ignore[attr-defined]


def poll(session: Session, device_code: str, client: Client, now: datetime) -> DeviceAuthorization:
    """§3.4, §3.5: the approved request, claimed for this poll alone; otherwise the error the
    device is to act on. A device code that is not this client's, or was used, is
    ``invalid_grant``."""
    if len(device_code) > 128:
        raise InvalidGrant()
    found = session.scalars(
        select(DeviceAuthorization).where(
            DeviceAuthorization.device_code_digest == _digest(device_code)
        )
    ).one_or_none()
    if found is None or found.client_pk != client.id or found.status == USED:
        raise InvalidGrant()
    if found.expires_at <= now:
        raise ExpiredDeviceCode()
    if found.status == DENIED:
        raise AccessDenied()
    if found.status == PENDING:
        too_soon = found.last_polled_at is not None and now - found.last_polled_at < timedelta(
            seconds=found.interval
        )
        polled: dict[str, Any] = {"last_polled_at": now}
        if too_soon:
            polled["interval"] = found.interval + SLOW_DOWN_STEP
        update_loaded_row(session, found, _this_request(found), polled)
        if too_soon:
            raise SlowDown()
        raise AuthorizationPending()
    claimed = session.execute(
        update(DeviceAuthorization)
        .where(*_this_request(found), DeviceAuthorization.status == APPROVED)
        .values(status=USED, last_polled_at=now)
        .execution_options(synchronize_session=False)
    )
    if not claimed.rowcount:  # type: ignore[attr-defined]
        raise InvalidGrant()
    return found


def _this_request(authorization: DeviceAuthorization) -> tuple[ColumnElement[bool], ...]:
    """SQL: the request's row, by the digest the device polls with as well as its id: the key
    a distributed database would place the table by (README "Past one primary")."""
    return (
        DeviceAuthorization.device_code_digest == authorization.device_code_digest,
        DeviceAuthorization.id == authorization.id,
    )
