"""Changing the account's address: asked for on the account page, done by a link mailed to
the new address.

Asking needs the current password (ASVS 5.0 6.2.3 asks it for a password change; an address
is as good as a password once the reset link goes there), confirmed as for the account's
other changes (``services/own_account.py``): wrong guesses count in the sign-in throttle
before any hash, so a stolen browser session cannot guess its way to a new address.
Nothing changes when asked. The new address is mailed a link (``account_links``, purpose
``email_change``, the address in ``account_links.email``); the old one a notice naming the
new address half-hidden, so that the owner of a session someone else is using hears of it.

An address that another account has (or one that looks like it, UTS #39) gets the same
answer on the page as any other, so the form cannot be used to learn who has an account: the
new address is mailed "this address already has an account, nothing was changed" instead of a
link, the old one the same notice, and a link row is written either way (its token mailed
nowhere), so the hourly cap and the ending of older links count both cases alike.

Following the link (a POST from its page, never the GET: mail scanners follow links) checks
again that no account has the address (another may have taken it since), then moves the
account to it in a savepoint, so that the unique indexes decide a race: the loser gets a
clean refusal. The address counts as verified (the link reached it), and every unused link
mailed to the old address or for an older change is ended.

No Security Event Token is sent: CAEP's credential-change is about credentials, and
authserver's SETs name users by ``iss_sub``, which an address change does not touch.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from authserver.errors import AuthServerError, ValidationError
from authserver.models import User
from authserver.services.account_links import (
    LinkPurpose,
    find_live_link,
    invalidate_links,
    issue_link,
    redeem_link,
)
from authserver.services.audit import AuditEventType, record
from authserver.services.email_verification import (
    EmailLinkSettings,
    TooManyLinks,
    under_hourly_cap,
)
from authserver.services.lookalikes import email_skeleton_digest
from authserver.services.mail import MailComposer, enqueue_mail
from authserver.services.own_account import Confirmation, WrongPassword, confirm_current_password
from authserver.services.password_reset import InvalidLink
from authserver.services.passwords import PasswordHasher
from authserver.services.sign_in import RequestContext
from authserver.services.sign_in_throttle import ThrottlePolicy
from authserver.services.users import mark_email_verified, new_account_email

CHANGE_TEMPLATE = "email_change"
TAKEN_TEMPLATE = "email_change_taken"
NOTICE_TEMPLATE = "email_change_notice"


class AddressTaken(AuthServerError):
    """At the link: another account has the address (or one that looks like it) by now."""

    error = "invalid_request"


def masked_address(email: str) -> str:
    """``n***@example.com``: enough for the owner to recognise an address they typed, not
    enough to give a stranger's address away to whoever reads the old mailbox."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}***@{domain}"


def _taken_by_another(session: Session, user: User, email: str) -> bool:
    skeleton = email_skeleton_digest(email)
    other = session.scalars(
        select(User.id).where(
            User.id != user.id,
            (User.email == email) | (User.email_skeleton_digest == skeleton),
        )
    ).first()
    return other is not None


def request_email_change(
    session: Session,
    hasher: PasswordHasher,
    composer: MailComposer,
    settings: EmailLinkSettings,
    throttle: ThrottlePolicy,
    user: User,
    *,
    current_password: str,
    new_email: str,
    context: RequestContext,
    trusted_device: bool = False,
) -> str:
    """Check the password and mail the new address (a link, or "already has an account")
    and the old one (a notice). Returns the new address, normalised. ValidationError for a
    wrong password or an address the rules refuse, ConfirmationThrottled, TooManyLinks."""
    now = context.now
    normalized = new_account_email(new_email)
    if normalized == user.email:
        raise ValidationError("That is already your address.")

    def audit(reason: str | None = None) -> None:
        details: dict[str, Any] = {"reason": reason} if reason else {}
        record(
            session,
            AuditEventType.EMAIL_CHANGE_REQUESTED,
            now,
            user_id=user.id,
            ip_address=context.ip_address,
            user_agent=context.user_agent,
            **details,
        )

    confirmation = Confirmation(hasher, throttle, context, trusted_device)
    try:
        confirm_current_password(
            session, user, current_password, confirmation, action="change_email"
        )
    except WrongPassword:
        audit(reason="wrong_password")
        raise
    if not under_hourly_cap(session, user, LinkPurpose.EMAIL_CHANGE, settings, now):
        audit(reason="mail_cap")
        raise TooManyLinks("Too many address changes were asked for in the last hour.")

    taken = _taken_by_another(session, user, normalized)
    # Both cases write a link (older change links end either way); only a free address is
    # sent its token.
    token = issue_link(
        session, user.id, LinkPurpose.EMAIL_CHANGE, now=now, ttl=settings.ttl, email=normalized
    )
    hours = max(1, int(settings.ttl.total_seconds() // 3600))
    mail_context: dict[str, object]
    if taken:
        template = TAKEN_TEMPLATE
        mail_context = {"account_url": settings.account_url, "forgot_url": settings.forgot_url}
    else:
        template = CHANGE_TEMPLATE
        mail_context = {"link": settings.change_url + "?token=" + quote(token), "hours": hours}
    enqueue_mail(
        session,
        composer,
        to=normalized,
        template=template,
        context=mail_context,
        now=now,
        user_id=user.id,
    )
    enqueue_mail(
        session,
        composer,
        to=user.email,
        template=NOTICE_TEMPLATE,
        context={
            "masked": masked_address(normalized),
            "account_url": settings.account_url,
            "forgot_url": settings.forgot_url,
        },
        now=now,
        user_id=user.id,
    )
    audit("address_taken" if taken else None)
    return normalized


def change_of_link(session: Session, token: str, now: datetime) -> tuple[User, str]:
    """The user and the new address of a live change link (to show its page)."""
    link = find_live_link(session, token, LinkPurpose.EMAIL_CHANGE, now)
    user = session.get(User, link.user_id) if link is not None else None
    if link is None or link.email is None or user is None or user.disabled:
        raise InvalidLink("This link is not valid.")
    return user, link.email


def complete_email_change(session: Session, *, token: str, context: RequestContext) -> User:
    """Use the link and move the account to its address: InvalidLink for a link that is not
    live (of two racing requests one wins), AddressTaken if another account has the address
    (or one like it) by now, checked again here and, for a race, by the unique indexes."""
    now = context.now
    link = redeem_link(session, token, LinkPurpose.EMAIL_CHANGE, now)
    user = session.get(User, link.user_id) if link is not None else None
    if link is None or link.email is None or user is None or user.disabled:
        raise InvalidLink("This link is not valid.")
    move_account(session, user, link.email, context, method="link")
    # The link reached the new address: it is verified (and audited as such).
    mark_email_verified(session, user, now, method="email_change")
    return user


def move_account(
    session: Session, user: User, new_email: str, context: RequestContext, *, method: str
) -> None:
    """Give the account ``new_email`` (normalised), unverified: AddressTaken if another
    account has it or one that looks like it, checked here and, for a race, by the unique
    indexes. Links mailed to the old address open nothing afterwards. ``method`` says who
    moved it, for the trail: "link" (the owner's change link) or "operator"."""
    if _taken_by_another(session, user, new_email):
        raise AddressTaken("Another account has this address now; nothing was changed.")
    previous = user.email
    try:
        # A savepoint: if another transaction took this address or a look-alike since the
        # check above, the unique indexes refuse the row and only the change is undone.
        with session.begin_nested():
            user.email = new_email
            user.email_skeleton_digest = email_skeleton_digest(new_email)
            user.email_verified = False
            session.flush()
    except IntegrityError:
        session.refresh(user)
        raise AddressTaken("Another account has this address now; nothing was changed.") from None
    # Whatever was mailed to the old address, and any other change, opens nothing now.
    for purpose in (
        LinkPurpose.EMAIL_CHANGE,
        LinkPurpose.EMAIL_VERIFICATION,
        LinkPurpose.PASSWORD_RESET,
    ):
        invalidate_links(session, user.id, purpose, context.now)
    record(
        session,
        AuditEventType.EMAIL_CHANGED,
        context.now,
        user_id=user.id,
        ip_address=context.ip_address,
        user_agent=context.user_agent,
        email=new_email,
        previous_email=previous,
        method=method,
    )
