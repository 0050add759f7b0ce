"""The admin role: who may use the operator console (``/admin``), and on what terms.

The role is a flag on the account (``users.is_admin``), given and taken only by the operator
on the command line (``authserver users grant-admin`` / ``revoke-admin``), each audited. The
console asks ``console_access`` on every request, so a role revoked, or an account disabled,
refuses the very next request of a session that is already open.

A console session must have signed in with a second factor (``amr`` has ``mfa``), whether or
not the admin's account has one yet: the console can sign anyone out, disable them and mail
them a reset link, so a password alone never reaches it (NIST SP 800-63B §4.2 asks for
multi-factor authentication at AAL2 and above; OWASP ASVS 5.0 V6.3.3 for administrative
interfaces). An admin without a second factor is sent to set one up first.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy.orm import Session

from authserver.errors import ValidationError
from authserver.models import BrowserSession, User
from authserver.services.acr import MFA
from authserver.services.audit import AuditEventType, record
from authserver.services.factor_status import has_second_factor
from authserver.services.users import get_user_by_email


def grant_admin_role(session: Session, email: str, now: datetime) -> User:
    """Give the account ``email`` names the admin role. Refused for an account that holds it
    already, and for a disabled one (enable it first: a role nobody can use is a mistake)."""
    user = get_user_by_email(session, email)
    if user.is_admin:
        raise ValidationError(f"{user.email} holds the admin role already")
    if user.disabled:
        raise ValidationError(f"{user.email} is disabled; enable the account first")
    user.is_admin = True
    record(session, AuditEventType.ADMIN_ROLE_GRANTED, now, user_id=user.id, method="operator")
    session.flush()
    return user


def revoke_admin_role(session: Session, email: str, now: datetime) -> User:
    """Take the admin role from the account ``email`` names. Its browser sessions go on (it
    is still a user), but the console refuses the next request of each."""
    user = get_user_by_email(session, email)
    if not user.is_admin:
        raise ValidationError(f"{user.email} does not hold the admin role")
    user.is_admin = False
    record(session, AuditEventType.ADMIN_ROLE_REVOKED, now, user_id=user.id, method="operator")
    session.flush()
    return user


class ConsoleAccess(enum.Enum):
    """What a signed-in browser session may do with the console."""

    ALLOWED = "allowed"
    # Not an admin (or a disabled account): refused, and shown nothing.
    REFUSED = "refused"
    # An admin whose session signed in with the password alone: the code's page first.
    GIVE_SECOND_FACTOR = "give_second_factor"
    # An admin whose account has no second factor yet: set one up first.
    SET_UP_SECOND_FACTOR = "set_up_second_factor"


def console_access(session: Session, browser_session: BrowserSession) -> ConsoleAccess:
    """The console's one rule of access, asked on every request (see the module's doc)."""
    user = browser_session.user
    if not user.is_admin or user.disabled:
        return ConsoleAccess.REFUSED
    if MFA in browser_session.amr.split():
        return ConsoleAccess.ALLOWED
    if has_second_factor(session, user):
        return ConsoleAccess.GIVE_SECOND_FACTOR
    return ConsoleAccess.SET_UP_SECOND_FACTOR
