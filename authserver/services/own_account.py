"""What a signed-in user does to their own account that needs their password again: change
the password, delete the account. (Changing the address, which needs it too, is
``services/email_change.py``; it confirms the password here.)

A browser session is not proof that its user is at the keyboard: it may be a borrowed or
stolen one. So these ask for the current password (OWASP ASVS 5.0 6.2.3 for a password
change; the same reasoning for deletion, which cannot be undone), and wrong guesses count in
the sign-in throttle (``services/sign_in_throttle.py``) under the account's address and the
client's address, checked before any hash, the same counters as the sign-in page: a stolen
session cannot guess its way to the password through these forms either.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from authserver.errors import TooManyAttempts, ValidationError
from authserver.models import User
from authserver.services.audit import AuditEventType, record
from authserver.services.password_policy import PasswordPolicy
from authserver.services.passwords import PasswordHasher
from authserver.services.refresh_tokens import RevocationReason
from authserver.services.security_notices import PasswordChangedBy, SecurityNotices
from authserver.services.sign_in import RequestContext
from authserver.services.sign_in_throttle import (
    ThrottlePolicy,
    record_failure,
    record_success,
    seconds_to_wait,
    throttle_account,
)
from authserver.services.users import delete_account, replace_password


class ConfirmationThrottled(TooManyAttempts):
    """Too many wrong passwords for this account from here: refused before any hash."""


class WrongPassword(ValidationError):
    default_description = "The current password is incorrect."


@dataclass(frozen=True)
class Confirmation:
    """How to check the password typed again: the throttle, and whether this browser carries
    the account's device cookie (a trusted device is not held back by the account-wide cap)."""

    hasher: PasswordHasher
    throttle: ThrottlePolicy
    context: RequestContext
    trusted_device: bool = False


def confirm_current_password(
    session: Session, user: User, password: str, confirmation: Confirmation, *, action: str
) -> None:
    """ConfirmationThrottled (nothing hashed) or WrongPassword (counted; the attempt is
    audited as ``signin_failed`` with ``method: reauthentication`` and ``action``), else None."""
    context = confirmation.context
    account = throttle_account(user.email)
    ip_address = context.ip_address or "-"
    policy = confirmation.throttle
    wait = seconds_to_wait(
        session,
        account,
        ip_address,
        context.now,
        policy,
        trusted_device=confirmation.trusted_device,
    )
    if wait:
        raise ConfirmationThrottled(wait)
    if not confirmation.hasher.verify(user.password_hash, password):
        record_failure(session, account, ip_address, context.now, policy)
        record(
            session,
            AuditEventType.SIGNIN_FAILED,
            context.now,
            user_id=user.id,
            ip_address=context.ip_address,
            user_agent=context.user_agent,
            method="reauthentication",
            action=action,
            reason="wrong_password",
        )
        raise WrongPassword()
    record_success(session, account, ip_address)


def change_own_password(
    session: Session,
    user: User,
    confirmation: Confirmation,
    notices: SecurityNotices,
    *,
    current_password: str,
    new_password: str,
    password_policy: PasswordPolicy,
    keep_session_id: uuid.UUID | None = None,
) -> tuple[int, int]:
    """The account page's "Change password": the current password (throttled), then the new
    one through the one path every password takes (``users.replace_password``: policy, hash,
    reset links ended, every other session and app signed out, audit, SET) and a notice to
    the address. Returns (sessions ended, families revoked)."""
    confirm_current_password(
        session, user, current_password, confirmation, action="change_password"
    )
    return replace_password(
        session,
        confirmation.hasher,
        user,
        new_password,
        confirmation.context.now,
        password_policy,
        notices,
        by=PasswordChangedBy.ACCOUNT_PAGE,
        keep_session_id=keep_session_id,
    )


def delete_own_account(
    session: Session,
    user: User,
    confirmation: Confirmation,
    notices: SecurityNotices,
    *,
    current_password: str,
) -> tuple[int, int]:
    """The account page's "Delete account": the current password (throttled), then the same
    deletion as ``users delete`` (everything revoked and announced first, then the row and
    what cascades from it). Returns (sessions ended, families revoked)."""
    confirm_current_password(session, user, current_password, confirmation, action="delete_account")
    return delete_account(
        session,
        user,
        confirmation.context.now,
        notices,
        reason=RevocationReason.USER_DELETED,
        by_owner=True,
        ip_address=confirmation.context.ip_address,
        user_agent=confirmation.context.user_agent,
    )
