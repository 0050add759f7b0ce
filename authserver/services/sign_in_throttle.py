"""Throttling of failed password and client-secret guesses (ASVS 6.3.1 / 2.2.1).

Two rules, both checked before any hash is computed:

- Per account *and address*: the first ``free_failures`` failures cost nothing; after that
  each attempt must wait ``2 ** (failures - free_failures)`` seconds after the last failure,
  up to ``max_delay``. A guesser at one address slows to a crawl; the real user at another
  address is not affected at all.
- Per account, from everywhere: at most ``failures_per_window`` failures in a window reach the
  hash. Past that, attempts are refused without hashing until the window ends, except from a
  *trusted device* — a browser that signed in to this account before and carries its signed
  device cookie (OWASP's "device cookies"). So a distributed attacker cannot lock the real
  user out: their own browser still gets in.

Client secrets (``oauth/client_auth.py``) count their failures the same way, with one
difference: the right secret is never refused. A 256-bit secret cannot be found by guessing,
while the hourly cap would otherwise let anyone who knows a client_id lock the client out.

Counters live in the database, so every server process sees the same numbers.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from authserver.errors import ValidationError
from authserver.models import SignInThrottle
from authserver.services.users import normalize_email

EVERYWHERE = "*"


@dataclass(frozen=True)
class ThrottlePolicy:
    free_failures: int = 5
    max_delay: timedelta = timedelta(minutes=5)
    failures_per_window: int = 100
    window: timedelta = timedelta(hours=1)


def throttle_account(raw: str | None) -> str:
    """The key an account's attempts are counted under, valid email or not."""
    if not raw:
        return "-"
    try:
        return normalize_email(raw)
    except ValidationError:
        # Not an address, so no account: a digest keeps the key short and free of anything
        # a database refuses (PostgreSQL text cannot hold NUL).
        return "invalid:" + hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()


def _row(db: Session, account: str, ip_address: str) -> SignInThrottle | None:
    return db.scalars(
        select(SignInThrottle).where(
            SignInThrottle.account == account, SignInThrottle.ip_address == ip_address
        )
    ).one_or_none()


def _failures_in_window(row: SignInThrottle | None, now: datetime, window: timedelta) -> int:
    if row is None or now - row.window_started_at >= window:
        return 0
    return row.failures


def seconds_to_wait(
    db: Session,
    account: str,
    ip_address: str,
    now: datetime,
    policy: ThrottlePolicy,
    *,
    trusted_device: bool = False,
) -> int:
    """0 if this attempt may be checked now, else how many seconds to wait first."""
    wait = 0.0
    # Both counters in one query: this runs before every password and secret check.
    rows = {
        row.ip_address: row
        for row in db.scalars(
            select(SignInThrottle).where(
                SignInThrottle.account == account,
                SignInThrottle.ip_address.in_((ip_address, EVERYWHERE)),
            )
        )
    }
    here = rows.get(ip_address)
    failures_here = _failures_in_window(here, now, policy.window)
    if here is not None and failures_here > policy.free_failures:
        delay = min(
            timedelta(seconds=2 ** min(failures_here - policy.free_failures, 30)),
            policy.max_delay,
        )
        wait = max(wait, (here.last_failure_at + delay - now).total_seconds())
    if not trusted_device:
        everywhere = rows.get(EVERYWHERE)
        if _failures_in_window(everywhere, now, policy.window) >= policy.failures_per_window:
            assert everywhere is not None
            window_ends = everywhere.window_started_at + policy.window
            wait = max(wait, (window_ends - now).total_seconds())
    return max(0, math.ceil(wait))


def record_failure(
    db: Session, account: str, ip_address: str, now: datetime, policy: ThrottlePolicy
) -> None:
    for address in (ip_address, EVERYWHERE):
        row = _row(db, account, address) or _create(db, account, address, now)
        if now - row.window_started_at >= policy.window:
            row.failures = 0
            row.window_started_at = now
        row.failures += 1
        row.last_failure_at = now
    db.flush()


def _create(db: Session, account: str, ip_address: str, now: datetime) -> SignInThrottle:
    row = SignInThrottle(
        account=account,
        ip_address=ip_address,
        failures=0,
        window_started_at=now,
        last_failure_at=now,
    )
    try:
        # A savepoint: two first failures at once must not fail the request on the
        # unique constraint; the loser counts on the winner's row.
        with db.begin_nested():
            db.add(row)
    except IntegrityError:
        found = _row(db, account, ip_address)
        assert found is not None
        return found
    return row


def record_success(db: Session, account: str, ip_address: str) -> None:
    """A correct guess from this address clears its delays (not the account-wide count: one
    success among thousands of failures does not make the attack stop)."""
    db.execute(
        delete(SignInThrottle).where(
            SignInThrottle.account == account, SignInThrottle.ip_address == ip_address
        )
    )
    db.flush()
