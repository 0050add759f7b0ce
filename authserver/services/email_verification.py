"""Address verification by mail: the account page sends a link, the link's page confirms.

The link (``services/account_links.py``, purpose ``email_verification``) records the address
it was mailed to; following it verifies the account's address only while that is still the
address, so a link from before an address change verifies nothing. Opening the link shows a
page with a button and only its POST verifies: mail scanners and link previews fetch links
with GET, and must not verify an address on their own.

``email_verified`` is what userinfo reports (OpenID Connect Core 1.0 §5.1). ID tokens carry
no address claims at all: they travel in logout URLs as ``id_token_hint``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

from sqlalchemy.orm import Session

from authserver.errors import AuthServerError
from authserver.models import AccountLink, User
from authserver.services.account_links import (
    LinkPurpose,
    find_live_link,
    issue_link,
    links_issued_since,
    redeem_link,
)
from authserver.services.audit import AuditEventType, record
from authserver.services.mail import MailComposer, enqueue_mail
from authserver.services.password_reset import InvalidLink
from authserver.services.sign_in import RequestContext
from authserver.services.users import mark_email_verified

VERIFY_TEMPLATE = "email_verification"


class TooManyLinks(AuthServerError):
    """The account had its hourly share of links of this purpose."""

    error = "too_many_requests"
    status_code = 429


@dataclass(frozen=True)
class EmailLinkSettings:
    ttl: timedelta
    mails_per_hour: int
    # Absolute URLs of the pages the links open; the token is appended as ?token=...
    verify_url: str
    change_url: str
    account_url: str
    forgot_url: str


def under_hourly_cap(
    session: Session, user: User, purpose: LinkPurpose, settings: EmailLinkSettings, now: datetime
) -> bool:
    sent = links_issued_since(session, user.id, purpose, now - timedelta(hours=1))
    return sent < settings.mails_per_hour


def send_verification_link(
    session: Session,
    composer: MailComposer,
    settings: EmailLinkSettings,
    user: User,
    *,
    context: RequestContext,
) -> bool:
    """Mail a verification link to the account's address. False if it is verified already
    (nothing sent); TooManyLinks past the hourly cap."""
    now = context.now
    if user.email_verified:
        return False
    if not under_hourly_cap(session, user, LinkPurpose.EMAIL_VERIFICATION, settings, now):
        record(
            session,
            AuditEventType.EMAIL_VERIFICATION_REQUESTED,
            now,
            user_id=user.id,
            ip_address=context.ip_address,
            user_agent=context.user_agent,
            reason="mail_cap",
        )
        raise TooManyLinks("Too many verification messages were sent in the last hour.")
    token = issue_link(
        session,
        user.id,
        LinkPurpose.EMAIL_VERIFICATION,
        now=now,
        ttl=settings.ttl,
        email=user.email,
    )
    enqueue_mail(
        session,
        composer,
        to=user.email,
        template=VERIFY_TEMPLATE,
        context={
            "link": settings.verify_url + "?token=" + quote(token),
            "hours": max(1, int(settings.ttl.total_seconds() // 3600)),
        },
        now=now,
        user_id=user.id,
    )
    record(
        session,
        AuditEventType.EMAIL_VERIFICATION_REQUESTED,
        now,
        user_id=user.id,
        ip_address=context.ip_address,
        user_agent=context.user_agent,
    )
    return True


def _user_of(session: Session, link: AccountLink | None) -> User:
    """The link's user, if the link is live and the account still has the address it was
    mailed to and is enabled; InvalidLink otherwise (one answer for every reason)."""
    user = session.get(User, link.user_id) if link is not None else None
    if link is None or user is None or user.disabled or link.email != user.email:
        raise InvalidLink("This link is not valid.")
    return user


def user_of_verification_link(session: Session, token: str, now: datetime) -> User:
    """The user a live verification link belongs to (to show its page)."""
    return _user_of(session, find_live_link(session, token, LinkPurpose.EMAIL_VERIFICATION, now))


def complete_email_verification(session: Session, *, token: str, context: RequestContext) -> User:
    """Use the link (one statement: of two racing requests one wins) and mark the address
    verified."""
    link = redeem_link(session, token, LinkPurpose.EMAIL_VERIFICATION, context.now)
    user = _user_of(session, link)
    mark_email_verified(session, user, context.now, method="link")
    return user
