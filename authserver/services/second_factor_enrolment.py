"""The account's second factor as its owner (the account page) and the operator change it:
set up an authenticator app, turn it off, make new recovery codes, reset everything.

Each change by the owner needs a *recent* sign-in: the browser session's ``auth_time`` no
more than RECENT_SIGN_IN ago (five minutes), else the page sends the user to sign in again
(``prompt=login``); and, for an account that has a second factor, a session that gave it
(``amr`` has ``mfa``), else the code's page asks for it. A borrowed or stolen session,
however long it lives, cannot turn the second factor off or replace it with an app of its
own. Every change mails the user a notice
(``services/security_notices.py``) and is audited.

Losing both the app and every recovery code is recoverable only through the operator:
``authserver users reset-factors EMAIL`` (``reset_second_factors``), which also removes the
account's passkeys (``services/passkeys.py``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, delete
from sqlalchemy.orm import Session

from authserver.errors import AuthServerError
from authserver.models import BrowserSession, Passkey, User
from authserver.services import recovery_codes, totp
from authserver.services.acr import MFA
from authserver.services.audit import AuditEventType, record
from authserver.services.factor_status import has_second_factor
from authserver.services.keys import KeyCipher
from authserver.services.second_factors import AMR_SECOND_FACTOR
from authserver.services.security_notices import SecondFactorChange, SecurityNotices
from authserver.services.sign_in import RequestContext

RECENT_SIGN_IN = timedelta(minutes=5)
_PASSKEYS = cast(Table, Passkey.__table__)


class SignInTooOld(AuthServerError):
    """The browser session signed in longer ago than RECENT_SIGN_IN: sign in again first."""

    error = "login_required"


class SecondFactorNeeded(SignInTooOld):
    """The browser session signed in without the account's second factor (it signed in
    before the factor was set up in another browser, or a trusted device was let through
    with the password, AUTHSERVER_TRUSTED_DEVICE_SKIPS_SECOND_FACTOR): changing factors asks
    for the factor first. A password alone never removes or replaces a second factor."""


def require_recent_sign_in(browser_session: BrowserSession, now: datetime) -> None:
    if now - browser_session.auth_time > RECENT_SIGN_IN:
        raise SignInTooOld("Sign in again to change two-step sign-in or passkeys.")


def require_full_recent_sign_in(
    session: Session, browser_session: BrowserSession, now: datetime
) -> None:
    """What changing factors needs: a sign-in from the last RECENT_SIGN_IN, with the
    account's second factor if it has one (SignInTooOld, SecondFactorNeeded)."""
    require_recent_sign_in(browser_session, now)
    if MFA not in browser_session.amr.split() and has_second_factor(session, browser_session.user):
        raise SecondFactorNeeded("Give your second factor to change two-step sign-in.")


def begin_totp(
    session: Session,
    cipher: KeyCipher,
    browser_session: BrowserSession,
    now: datetime,
    *,
    issuer: str,
) -> totp.TotpEnrolment:
    """A new secret to scan (SignInTooOld, totp.TotpAlreadyEnrolled)."""
    require_full_recent_sign_in(session, browser_session, now)
    return totp.begin_enrolment(session, cipher, browser_session.user, now, issuer=issuer)


def confirm_totp(
    session: Session,
    cipher: KeyCipher,
    notices: SecurityNotices,
    browser_session: BrowserSession,
    code: str,
    context: RequestContext,
) -> list[str] | None:
    """Confirm the app with a code it made: its first set of recovery codes, to be shown once,
    and a notice; None for a wrong code (the enrolment waits for a right one)."""
    require_full_recent_sign_in(session, browser_session, context.now)
    user = browser_session.user
    if not totp.confirm_enrolment(
        session,
        cipher,
        user,
        code,
        context.now,
        ip_address=context.ip_address,
        user_agent=context.user_agent,
    ):
        return None
    codes = recovery_codes.generate(
        session, user, context.now, ip_address=context.ip_address, user_agent=context.user_agent
    )
    notices.second_factor_changed(session, user, context.now, change=SecondFactorChange.TOTP_ADDED)
    # This browser signed in with the password within RECENT_SIGN_IN and has just shown a code
    # of the app: it has both factors (an authorization request that sent it here to set one
    # up continues with them).
    browser_session.amr = AMR_SECOND_FACTOR
    session.flush()
    return codes


def regenerate_recovery_codes(
    session: Session,
    notices: SecurityNotices,
    browser_session: BrowserSession,
    context: RequestContext,
) -> list[str]:
    """A new set of ten recovery codes (the old ones end), shown once; only with an app."""
    require_full_recent_sign_in(session, browser_session, context.now)
    user = browser_session.user
    if not totp.has_confirmed_totp(session, user):
        raise totp.NoTotpEnrolment("Set up an authenticator app first.")
    codes = recovery_codes.generate(
        session, user, context.now, ip_address=context.ip_address, user_agent=context.user_agent
    )
    notices.second_factor_changed(
        session, user, context.now, change=SecondFactorChange.RECOVERY_CODES_REGENERATED
    )
    return codes


def turn_off(
    session: Session,
    notices: SecurityNotices,
    browser_session: BrowserSession,
    context: RequestContext,
) -> bool:
    """Remove the app and the recovery codes. False if there was no app (nothing mailed)."""
    require_full_recent_sign_in(session, browser_session, context.now)
    user = browser_session.user
    removed = totp.remove_totp(
        session, user, context.now, ip_address=context.ip_address, user_agent=context.user_agent
    )
    if removed:
        notices.second_factor_changed(
            session, user, context.now, change=SecondFactorChange.TOTP_REMOVED
        )
    return removed


def remove_all_passkeys(session: Session, user: User, now: datetime) -> int:
    """Every passkey of the account goes, each audited ``passkey_removed`` with ``method:
    operator``. How many there were."""
    removed = session.execute(
        delete(_PASSKEYS).where(_PASSKEYS.c.user_id == user.id).returning(_PASSKEYS.c.id)
    ).all()
    for row in removed:
        record(
            session,
            AuditEventType.PASSKEY_REMOVED,
            now,
            user_id=user.id,
            passkey_id=row.id,
            method="operator",
        )
    return len(removed)


def reset_second_factors(
    session: Session, notices: SecurityNotices, user: User, now: datetime
) -> bool:
    """The operator's reset (``users reset-factors``), for a user who lost the app and every
    recovery code, or their passkeys: the app, the codes and the passkeys go, audited
    ``totp_removed`` / ``passkey_removed`` with ``method: operator``, and the user is told.
    False if the account had none (nothing changes)."""
    removed_app = totp.remove_totp(session, user, now, by_operator=True)
    removed = remove_all_passkeys(session, user, now) > 0 or removed_app
    if removed:
        notices.second_factor_changed(
            session, user, now, change=SecondFactorChange.RESET_BY_OPERATOR
        )
    return removed
