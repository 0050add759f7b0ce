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
from datetime import datetime

from sqlalchemy.orm import Session

from authserver.errors import TooManyAttempts, ValidationError
from authserver.models import BrowserSession, User
from authserver.services import recovery_codes, totp
from authserver.services.account_links import LinkPurpose, find_live_link, redeem_link
from authserver.services.audit import AuditEventType, record
from authserver.services.browser_sessions import SessionPolicy, StartedSession
from authserver.services.keys import KeyCipher
from authserver.services.password_reset import InvalidLink
from authserver.services.security_notices import SecurityNotices
from authserver.services.sign_in import PASSWORD_FORM, RequestContext, finish_browser_sign_in
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


# RFC 8176 §2: what a browser session that passed both steps says of itself. A recovery code
# is a one-time password too.
AMR_SECOND_FACTOR = "pwd otp mfa"


class SecondStepExpired(InvalidLink):
    """The half-done sign-in is unknown, used or older than SECOND_STEP_TTL: start again."""


class WrongCode(ValidationError):
    default_description = "That code is not right. Try the newest code from your app."


def user_of_second_step(session: Session, token: str, now: datetime) -> User:
    """Whose half-done sign-in ``token`` names (to show the code's page); SecondStepExpired."""
    link = find_live_link(session, token, LinkPurpose.SECOND_FACTOR, now)
    user = session.get(User, link.user_id) if link is not None and link.user_id else None
    if user is None or user.disabled:
        raise SecondStepExpired("Sign in again.")
    return user


def complete_second_factor(
    session: Session,
    cipher: KeyCipher,
    policy: ThrottlePolicy,
    sessions: SessionPolicy,
    notices: SecurityNotices,
    *,
    token: str,
    code: str,
    context: RequestContext,
    trusted_device: bool,
    previous: BrowserSession | None,
) -> StartedSession:
    """The code's page: check the code (``check_second_factor``: throttled, spent once), then
    use up the half-done sign-in in one statement (two tabs with one of them: one session)
    and start the session, ``amr`` "pwd otp mfa". A wrong code (WrongCode) leaves the
    half-done sign-in usable until it expires; SecondStepExpired, SecondFactorThrottled."""
    user = user_of_second_step(session, token, context.now)
    method = check_second_factor(
        session, cipher, user, code, context, policy, trusted_device=trusted_device
    )
    if method is None:
        raise WrongCode()
    link = redeem_link(session, token, LinkPurpose.SECOND_FACTOR, context.now)
    if link is None or link.user_id != user.id:
        raise SecondStepExpired("Sign in again.")
    if method is SecondFactorMethod.RECOVERY_CODE:
        notices.recovery_code_used(
            session, user, context.now, left=recovery_codes.remaining_count(session, user)
        )
    return finish_browser_sign_in(
        session,
        sessions,
        notices,
        user,
        amr=AMR_SECOND_FACTOR,
        method=f"{PASSWORD_FORM}+{method.value}",
        context=context,
        trusted_device=trusted_device,
        previous=previous,
    )
