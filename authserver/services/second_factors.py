"""The second step of signing in: a code from the authenticator app (``services/totp.py``)
or one of the recovery codes (``services/recovery_codes.py``), throttled like passwords.

Wrong codes count in the sign-in throttle (``services/sign_in_throttle.py``), checked before
any code is, with the same policy and the same two counters (this address, everywhere) as
passwords, under a key of their own ("second_factor:" + the account's address): a million
possible codes are guessed far sooner than a password, and the budgets are kept apart, so a
password guesser does not spend the real user's code attempts, nor the reverse.
"""

from __future__ import annotations

import enum

from sqlalchemy.orm import Session

from authserver.errors import TooManyAttempts
from authserver.models import User
from authserver.services import recovery_codes, totp
from authserver.services.audit import AuditEventType, record
from authserver.services.keys import KeyCipher
from authserver.services.sign_in import RequestContext
from authserver.services.sign_in_throttle import (
    ThrottlePolicy,
    record_failure,
    record_success,
    seconds_to_wait,
    throttle_account,
)

THROTTLE_PREFIX = "second_factor:"


class SecondFactorThrottled(TooManyAttempts):
    """Too many wrong codes for this account from here: refused before any code is checked."""


class SecondFactorMethod(enum.StrEnum):
    TOTP = "totp"
    RECOVERY_CODE = "recovery_code"


def second_factor_throttle_account(email: str) -> str:
    """The key an account's code guesses are counted under (its passwords': the address)."""
    return THROTTLE_PREFIX + throttle_account(email)


def check_second_factor(
    session: Session,
    cipher: KeyCipher,
    user: User,
    code: str,
    context: RequestContext,
    policy: ThrottlePolicy,
    *,
    trusted_device: bool = False,
) -> SecondFactorMethod | None:
    """Which second factor ``code`` is, spending it: six digits are the app's code, anything
    else a recovery code. None for a wrong code (counted, and audited as
    ``second_factor_failed``); SecondFactorThrottled when the account's attempts from here
    (or everywhere, unless ``trusted_device``) are used up, before anything is checked."""
    account = second_factor_throttle_account(user.email)
    ip_address = context.ip_address or "-"
    wait = seconds_to_wait(
        session, account, ip_address, context.now, policy, trusted_device=trusted_device
    )
    if wait:
        record(
            session,
            AuditEventType.RATE_LIMIT_HIT,
            context.now,
            user_id=user.id,
            ip_address=context.ip_address,
            user_agent=context.user_agent,
            endpoint="second_factor_throttle",
        )
        raise SecondFactorThrottled(wait)
    if totp.normalize_code(code) is not None:
        method = SecondFactorMethod.TOTP
        accepted = totp.verify_code(session, cipher, user, code, context.now)
    else:
        method = SecondFactorMethod.RECOVERY_CODE
        accepted = recovery_codes.use_code(session, user, code, context.now)
    if not accepted:
        record_failure(session, account, ip_address, context.now, policy)
        record(
            session,
            AuditEventType.SECOND_FACTOR_FAILED,
            context.now,
            user_id=user.id,
            ip_address=context.ip_address,
            user_agent=context.user_agent,
            method=method.value,
            reason="wrong_code",
        )
        return None
    record_success(session, account, ip_address)
    if method is SecondFactorMethod.RECOVERY_CODE:
        record(
            session,
            AuditEventType.RECOVERY_CODE_USED,
            context.now,
            user_id=user.id,
            ip_address=context.ip_address,
            user_agent=context.user_agent,
            recovery_codes_left=recovery_codes.remaining_count(session, user),
        )
    return method
