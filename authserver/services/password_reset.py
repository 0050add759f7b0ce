"""Password reset by mail ("Forgot password?").

Asking answers the same whether or not the address has an account (the page says "if an
account exists, we sent a link"), and costs the same work either way, so neither the answer
nor its timing tells whether an address is registered (OWASP ASVS 5.0 6.3.x, the Forgot
Password Cheat Sheet):

- both paths make a token, render and seal the message (Jinja and AES-GCM: the CPU part of
  sending), and write one audit row, so both transactions write and commit alike (a read-only
  commit would be measurably quicker than one that flushes WAL);
- no password hash is computed on either path (the slow part of sign-in is absent here);
- what remains different is the account path's two small writes in the same transaction
  (the link row, the outbox row) and the update of older links.

The message itself is mailed only to an account's own address, at most
AUTHSERVER_PASSWORD_RESET_MAILS_PER_HOUR times an hour, however many addresses ask.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy.orm import Session

from authserver.config import Config
from authserver.errors import AuthServerError, NotFound, ValidationError
from authserver.models import User
from authserver.services.account_links import (
    LinkPurpose,
    find_live_link,
    issue_link,
    links_issued_since,
    new_link_token,
    redeem_link,
)
from authserver.services.audit import AuditEventType, record
from authserver.services.mail import MailComposer, enqueue_mail
from authserver.services.password_policy import PasswordPolicy
from authserver.services.passwords import PasswordHasher
from authserver.services.security_notices import SecurityNotices
from authserver.services.sign_in import RequestContext
from authserver.services.users import find_user_by_email, reset_password

FORGOT_PATH = "/password/forgot"
RESET_PATH = "/password/reset"
RESET_TEMPLATE = "password_reset"


class InvalidLink(AuthServerError):
    """A link that is unknown, used, replaced or expired: one answer for all of them."""

    error = "invalid_request"


@dataclass(frozen=True)
class ResetSettings:
    ttl: timedelta
    mails_per_hour: int
    # The absolute URL of the reset page; the token is appended as ?token=...
    reset_url: str
    forgot_url: str


def request_password_reset(
    session: Session,
    composer: MailComposer,
    settings: ResetSettings,
    *,
    email: str,
    context: RequestContext,
) -> None:
    """Mail a reset link to the account ``email`` names, if there is one, it is enabled and
    it has not had its hourly share of reset mail. The caller answers the same in every case."""
    now = context.now
    user = find_user_by_email(session, email)
    token = new_link_token()
    reason: str | None = None
    if user is None:
        reason = "unknown_account"
    elif user.disabled:
        reason = "account_disabled"
    elif (
        links_issued_since(session, user.id, LinkPurpose.PASSWORD_RESET, now - timedelta(hours=1))
        >= settings.mails_per_hour
    ):
        reason = "mail_cap"
    mail_context = {
        "link": settings.reset_url + "?token=" + quote(token),
        "minutes": int(settings.ttl.total_seconds() // 60),
    }
    if user is None or reason is not None:
        # The work of composing the mail, thrown away: see the module docstring.
        content = composer.render(RESET_TEMPLATE, mail_context)
        composer.seal(content, "nobody@invalid", composer.new_message_id())
    else:
        _mail_reset_link(session, composer, settings, user, token, mail_context, now)
    details: dict[str, Any] = {"reason": reason} if reason else {}
    record(
        session,
        AuditEventType.PASSWORD_RESET_REQUESTED,
        now,
        user_id=user.id if user is not None else None,
        ip_address=context.ip_address,
        user_agent=context.user_agent,
        **details,
    )


def reset_settings(config: Config) -> ResetSettings:
    """The reset settings of this server: the pages' absolute URLs come from the issuer, so
    a CLI command mails the same links a request would."""
    return ResetSettings(
        ttl=timedelta(seconds=config.password_reset_ttl),
        mails_per_hour=config.password_reset_mails_per_hour,
        reset_url=config.issuer + RESET_PATH,
        forgot_url=config.issuer + FORGOT_PATH,
    )


def _mail_reset_link(
    session: Session,
    composer: MailComposer,
    settings: ResetSettings,
    user: User,
    token: str,
    mail_context: dict[str, Any],
    now: datetime,
) -> None:
    issue_link(session, user.id, LinkPurpose.PASSWORD_RESET, now=now, ttl=settings.ttl, token=token)
    enqueue_mail(
        session,
        composer,
        to=user.email,
        template=RESET_TEMPLATE,
        context=mail_context,
        now=now,
        user_id=user.id,
    )


def send_reset_link(
    session: Session, composer: MailComposer, settings: ResetSettings, email: str, now: datetime
) -> User:
    """An operator sends a reset link (``authserver users send-reset``): the same link and
    mail as "Forgot password?", but the operator is told plainly when there is no such enabled
    account, and the hourly cap on anonymous requests does not apply (the operator is trusted;
    the audit event says who asked)."""
    user = find_user_by_email(session, email)
    if user is None:
        raise NotFound(f"no user with the email {email.strip()[:100]!r}")
    if user.disabled:
        raise ValidationError(
            f"{user.email} is disabled; enable it first (authserver users enable)"
        )
    token = new_link_token()
    mail_context = {
        "link": settings.reset_url + "?token=" + quote(token),
        "minutes": int(settings.ttl.total_seconds() // 60),
    }
    _mail_reset_link(session, composer, settings, user, token, mail_context, now)
    record(
        session, AuditEventType.PASSWORD_RESET_REQUESTED, now, user_id=user.id, method="operator"
    )
    return user


def user_of_reset_link(session: Session, token: str, now: datetime) -> User:
    """The user a live reset link belongs to (to show its form); InvalidLink otherwise."""
    link = find_live_link(session, token, LinkPurpose.PASSWORD_RESET, now)
    user = session.get(User, link.user_id) if link is not None else None
    if user is None or user.disabled:
        raise InvalidLink("This link is not valid.")
    return user


def complete_password_reset(
    session: Session,
    hasher: PasswordHasher,
    *,
    token: str,
    new_password: str,
    password_policy: PasswordPolicy,
    notices: SecurityNotices,
    context: RequestContext,
) -> User:
    """Set the new password through the link: the policy first (a refused password leaves
    the link usable), then the link is used in one statement (``redeem_link``: of two racing
    requests one wins, the other gets InvalidLink), the password is stored, the user signed
    out everywhere, and told by mail."""
    now = context.now
    user = user_of_reset_link(session, token, now)
    password_policy.check(new_password, email=user.email)
    link = redeem_link(session, token, LinkPurpose.PASSWORD_RESET, now)
    if link is None or link.user_id != user.id:
        raise InvalidLink("This link is not valid.")
    reset_password(
        session,
        hasher,
        user,
        new_password,
        now=now,
        password_policy=password_policy,
        notices=notices,
    )
    return user
