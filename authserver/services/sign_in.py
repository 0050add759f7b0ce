"""Signing in with a password: the sign-in page and the password grant run the same steps.

throttle (before any hash) -> check the password -> record the outcome for the throttle ->
audit -> (the page) start a browser session. The request's context (address, user agent,
time) is built at the boundary and passed in; nothing here reads Flask's request.

The audit trail names the account a failed attempt was for, when the address belongs to one:
the trail is operator-only, and an operator investigating attacks on an account must see them
(`authserver audit tail --user EMAIL`). The caller is never told whether the account exists.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from authserver.errors import InvalidGrant, TooManyAttempts, ValidationError
from authserver.models import AMR_PASSWORD, BrowserSession, User
from authserver.services.account_links import LinkPurpose, issue_link
from authserver.services.audit import AuditEventType, record
from authserver.services.backchannel_logout import move_signed_in_clients
from authserver.services.browser_sessions import (
    SessionPolicy,
    StartedSession,
    end_session,
    move_families,
    start_session,
)
from authserver.services.factor_status import has_second_factor
from authserver.services.passwords import PasswordHasher
from authserver.services.refresh_tokens import RevocationReason
from authserver.services.security_notices import SecurityNotices
from authserver.services.sign_in_throttle import (
    ThrottlePolicy,
    record_failure,
    record_success,
    seconds_to_wait,
    throttle_account,
)
from authserver.services.users import (
    check_password,
    find_user_by_email,
    normalize_email,
    record_sign_in,
)

# How long the code's page waits for the code after the password (RFC 6238 codes change
# every 30 s; five minutes is time to find the phone, not time to try many).
SECOND_STEP_TTL = timedelta(minutes=5)

# How the attempt arrived, as the audit trail's ``method`` says it.
PASSWORD_FORM = "password_form"  # noqa: S105 (a method name, not a password)
PASSWORD_GRANT = "password"  # noqa: S105 (the grant's name, not a password)


@dataclass(frozen=True)
class RequestContext:
    """Who is asking, as the request's boundary saw it."""

    ip_address: str | None
    user_agent: str | None
    now: datetime


class SignInThrottled(TooManyAttempts):
    """Too many failed attempts for this account: refused before any hash."""


@dataclass(frozen=True)
class PendingSecondFactor:
    """The password was right and the account has a second factor: no session yet. ``token``
    (256 bits; an ``account_links`` row of purpose ``second_factor`` keeps only its digest)
    goes into a short-lived cookie and names this half-done sign-in to the code's page."""

    user: User
    token: str


class SecondFactorRequired(InvalidGrant):
    """The password grant for an account with a second factor, which it cannot ask for."""

    default_description = "This account signs in with a second factor: sign in through the browser."


class SignInFailed(InvalidGrant):
    """Wrong email or password (or a disabled account; the caller is not told which).
    RFC 6749 §5.2: invalid resource owner credentials are ``invalid_grant``."""

    default_description = "The email or password is incorrect."


def auditable_email(raw: str | None) -> str | None:
    """The typed-in sign-in name, for the trail, only if it is an email address: people type
    their password into the email field, and a password must never reach a log."""
    try:
        return normalize_email(raw) if raw else None
    except ValidationError:
        return None


def _audit(
    db: Session,
    event_type: AuditEventType,
    context: RequestContext,
    *,
    user_id: uuid.UUID | None,
    client_id: str | None,
    **details: Any,
) -> None:
    record(
        db,
        event_type,
        context.now,
        user_id=user_id,
        client_id=client_id,
        ip_address=context.ip_address,
        user_agent=context.user_agent,
        **details,
    )


def _check_attempt(
    db: Session,
    hasher: PasswordHasher,
    throttle: ThrottlePolicy,
    *,
    email: str,
    password: str,
    method: str,
    context: RequestContext,
    client_id: str | None,
    trusted_device: bool,
) -> User:
    account = throttle_account(email)
    ip = context.ip_address or "-"
    wait = seconds_to_wait(db, account, ip, context.now, throttle, trusted_device=trusted_device)
    if wait:
        target = find_user_by_email(db, email)
        _audit(
            db,
            AuditEventType.RATE_LIMIT_HIT,
            context,
            user_id=target.id if target else None,
            client_id=client_id,
            endpoint="sign_in_throttle",
            email=auditable_email(email),
        )
        raise SignInThrottled(wait)
    checked = check_password(db, hasher, email, password)
    if checked.user is None:
        record_failure(db, account, ip, context.now, throttle)
        _audit(
            db,
            AuditEventType.SIGNIN_FAILED,
            context,
            user_id=checked.account.id if checked.account else None,
            client_id=client_id,
            method=method,
            reason=checked.failure_reason,
            email=auditable_email(email),
        )
        raise SignInFailed()
    record_success(db, account, ip)
    return checked.user


def sign_in_for_token(
    db: Session,
    hasher: PasswordHasher,
    throttle: ThrottlePolicy,
    *,
    email: str,
    password: str,
    client_id: str,
    context: RequestContext,
) -> User:
    """The password grant (RFC 6749 §4.3): the user, or SignInThrottled / SignInFailed."""
    user = _check_attempt(
        db,
        hasher,
        throttle,
        email=email,
        password=password,
        method=PASSWORD_GRANT,
        context=context,
        client_id=client_id,
        trusted_device=False,
    )
    if has_second_factor(db, user):
        # The grant has no second step to ask for a code: an account that signs in with one
        # signs in through the browser (the authorization code flow). Refused after the
        # password, so the answer tells nothing to whoever does not know it.
        _audit(
            db,
            AuditEventType.SIGNIN_FAILED,
            context,
            user_id=user.id,
            client_id=client_id,
            method=PASSWORD_GRANT,
            reason="second_factor_required",
        )
        raise SecondFactorRequired()
    record_sign_in(user, context.now)
    _audit(
        db,
        AuditEventType.SIGNIN_SUCCEEDED,
        context,
        user_id=user.id,
        client_id=client_id,
        method=PASSWORD_GRANT,
    )
    return user


def sign_in_browser(
    db: Session,
    hasher: PasswordHasher,
    throttle: ThrottlePolicy,
    sessions: SessionPolicy,
    *,
    email: str,
    password: str,
    context: RequestContext,
    trusted_device: bool,
    previous: BrowserSession | None,
    notices: SecurityNotices,
    trusted_device_skips_second_factor: bool = False,
) -> StartedSession | PendingSecondFactor:
    """The sign-in page: a new browser session, or, for an account with a second factor, a
    PendingSecondFactor (``services/second_factors.complete_second_factor`` finishes it);
    SignInThrottled / SignInFailed.

    A fresh session id at every sign-in: an id planted before sign-in is worth nothing (no
    fixation). Signing in again as the same user (``prompt=login``) keeps the apps connected
    through the previous session, now tied to the new one (their refresh families, and whom
    to tell when it ends); the previous session ends without telling them. Another user
    signing in ends the previous session like a sign-out.

    With new-device notices on, a sign-in from a browser that is not a trusted device of the
    account (it has no device cookie for it) mails the user, unless it is the account's first
    sign-in ever: a new account has no old device to compare with.
    """
    user = _check_attempt(
        db,
        hasher,
        throttle,
        email=email,
        password=password,
        method=PASSWORD_FORM,
        context=context,
        client_id=None,
        trusted_device=trusted_device,
    )
    skips = trusted_device and trusted_device_skips_second_factor
    if not skips and has_second_factor(db, user):
        # The password is right; the session waits for the code. A trusted device skips this
        # step only where the operator allows it; the session then says amr "pwd", and
        # whatever needs two factors (a client's policy, acr_values, changing the factors)
        # asks for the code.
        return begin_second_step(db, user, context.now)
    return finish_browser_sign_in(
        db,
        sessions,
        notices,
        user,
        amr=AMR_PASSWORD,
        method=PASSWORD_FORM,
        context=context,
        trusted_device=trusted_device,
        previous=previous,
    )


def begin_second_step(db: Session, user: User, now: datetime) -> PendingSecondFactor:
    """A half-done sign-in waiting for ``user``'s second factor: after the password, or for
    a step-up of a signed-in browser (``acr_values``, a client that requires two factors).
    Two browsers' half-done sign-ins do not end each other."""
    token = issue_link(
        db, user.id, LinkPurpose.SECOND_FACTOR, now=now, ttl=SECOND_STEP_TTL, end_older=False
    )
    return PendingSecondFactor(user=user, token=token)


def finish_browser_sign_in(
    db: Session,
    sessions: SessionPolicy,
    notices: SecurityNotices,
    user: User,
    *,
    amr: str,
    method: str,
    context: RequestContext,
    trusted_device: bool,
    previous: BrowserSession | None,
) -> StartedSession:
    """Every factor checked: record the sign-in, tell the user of a new device (with
    new-device notices on), and start the session with ``amr`` (RFC 8176)."""
    first_sign_in = user.last_sign_in_at is None
    record_sign_in(user, context.now)
    if notices.new_device_notices and not trusted_device and not first_sign_in:
        notices.new_device_sign_in(
            db, user, context.now, user_agent=context.user_agent, ip_address=context.ip_address
        )
    return start_browser_session(
        db, sessions, user, method=method, context=context, previous=previous, amr=amr
    )


def start_browser_session(
    db: Session,
    sessions: SessionPolicy,
    user: User,
    *,
    method: str,
    context: RequestContext,
    previous: BrowserSession | None,
    amr: str = AMR_PASSWORD,
) -> StartedSession:
    """Sign ``user`` in to this browser, the check of who they are done by the caller (the
    password, or a sign-up link just followed): a new session, the previous one handled as
    ``sign_in_browser`` says, and ``signin_succeeded`` audited with ``method``."""
    started = start_session(
        db,
        user=user,
        policy=sessions,
        now=context.now,
        ip_address=context.ip_address,
        user_agent=context.user_agent,
        amr=amr,
    )
    if previous is not None:
        if previous.user_id == user.id:
            move_families(db, previous, started.session)
            move_signed_in_clients(db, previous, started.session)
        end_session(db, previous, RevocationReason.LOGOUT, context.now)
    _audit(
        db,
        AuditEventType.SIGNIN_SUCCEEDED,
        context,
        user_id=user.id,
        client_id=None,
        method=method,
        browser_session_id=started.session.id,
    )
    return started
