"""Accounts made by their owners: the sign-up page and the operator's invitations.

``AUTHSERVER_SIGNUP`` says who may make an account besides the operator (``users create``):
``off`` (nobody: the default), ``open`` (anyone, through ``/signup``; invitations work too) or
``invite`` (whoever the operator invites with ``authserver users invite``).

**Email first.** The sign-up page asks for the address only, and mails it a link; the
password is chosen on the page the link opens, and only then is the account made, with its
address verified (following the link proved it reaches the person). Asking for the password
on the first page instead would let anyone register someone else's address under a password
of their own choosing, before its owner arrives, and would have to answer "this address is
taken" there and then. Here nobody gets an account they cannot read the mail of, and the page
answers every address alike.

**The same answer for every address.** Like "Forgot password?" (``password_reset.py``), the
page says "check your email" whether or not the address has an account, and does the same
work either way: a link row is written (ending the address's older sign-up links), a message
rendered, sealed and put in the outbox, an audit row written. A new address is mailed the
link; an address that has an account (or one that looks the same, UTS #39) is mailed "someone
tried to sign up with this address" with links to sign in and to "Forgot password?", and the
token of its link row is mailed nowhere (the row is there so that both paths write alike and
the hourly cap counts both). A disabled account's address is mailed nothing. At most
AUTHSERVER_SIGNUP_MAILS_PER_HOUR messages go to one address an hour, whoever asks; past that
the page answers the same and nothing is sent.

**Links.** A sign-up or invitation link is an ``account_links`` row with no user and the
normalised address in ``email`` (purposes ``signup`` and ``invitation``): 256-bit token,
only its digest stored, single use, a newer link for the same address and purpose ends the
older ones. Sign-up links work for AUTHSERVER_SIGNUP_LINK_TTL (1 h: the person is waiting for
the mail), invitations for AUTHSERVER_INVITATION_TTL (7 days: they wait in a mailbox).

**Accepting.** The link's page asks for the password (twice). The policy comes first (a
refused password leaves the link usable); then the link is used in one statement (of two
racing requests one wins) and the account made by ``users.create_user``, the one way every
account is made (normalisation, look-alike check, policy). If the address got an account in
the meantime (another invitation, another sign-up), the answer is a refusal, never a 500: the
check before and, for a race, the unique indexes in ``create_user``'s savepoint. The new
account's address is verified, the address's other unused sign-up and invitation links end,
``signup_completed`` is audited, and the browser is signed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.config import SIGNUP_INVITE, SIGNUP_OFF, SIGNUP_OPEN, Config, parse_mail_address
from authserver.errors import NotFound, ValidationError
from authserver.models import BrowserSession, User
from authserver.services.account_links import (
    LinkPurpose,
    address_links_issued_since,
    find_live_link,
    invalidate_address_links,
    issue_address_link,
    new_link_token,
    redeem_link,
)
from authserver.services.audit import AuditEventType, record
from authserver.services.browser_sessions import SessionPolicy, StartedSession
from authserver.services.lookalikes import email_skeleton_digest
from authserver.services.mail import MailComposer, enqueue_mail
from authserver.services.password_policy import PasswordPolicy
from authserver.services.password_reset import FORGOT_PATH, InvalidLink
from authserver.services.passwords import PasswordHasher
from authserver.services.security_notices import SIGN_IN_PATH
from authserver.services.sign_in import RequestContext, start_browser_session
from authserver.services.users import (
    LOOKALIKE_EXISTS,
    create_user,
    mark_email_verified,
    new_account_email,
    record_sign_in,
)

SIGNUP_PATH = "/signup"
SIGNUP_LINK_PATH = "/signup/password"
INVITATION_PATH = "/invitation"
LINK_TEMPLATE = "signup"
EXISTS_TEMPLATE = "signup_exists"
INVITATION_TEMPLATE = "invitation"
# How each kind of link is named in the audit trail (``method``).
METHODS = {LinkPurpose.SIGNUP: "signup_link", LinkPurpose.INVITATION: "invitation"}


class SignupClosed(NotFound):
    """The sign-up page in a mode that has none: as if it did not exist."""


class AddressTaken(InvalidLink):
    """At the link: the address has an account by now (or one that looks the same)."""


@dataclass(frozen=True)
class SignupSettings:
    mode: str
    link_ttl: timedelta
    invitation_ttl: timedelta
    mails_per_hour: int
    # Absolute URLs: the pages the links open (the token is appended as ?token=...), and
    # the sign-in and "Forgot password?" pages for an address that has an account.
    signup_link_url: str
    invitation_url: str
    sign_in_url: str
    forgot_url: str

    @property
    def page_open(self) -> bool:
        """The sign-up page exists (and its links work) only in open mode."""
        return self.mode == SIGNUP_OPEN

    def accepts(self, purpose: LinkPurpose) -> bool:
        """Whether links of ``purpose`` work in this mode: a link mailed before the operator
        closed sign-up opens nothing after."""
        if purpose is LinkPurpose.SIGNUP:
            return self.mode == SIGNUP_OPEN
        return purpose is LinkPurpose.INVITATION and self.mode in (SIGNUP_OPEN, SIGNUP_INVITE)


def signup_settings(config: Config) -> SignupSettings:
    """This server's sign-up settings; URLs from the issuer, so the CLI mails the same links
    a request would."""
    return SignupSettings(
        mode=config.signup,
        link_ttl=timedelta(seconds=config.signup_link_ttl),
        invitation_ttl=timedelta(seconds=config.invitation_ttl),
        mails_per_hour=config.signup_mails_per_hour,
        signup_link_url=config.issuer + SIGNUP_LINK_PATH,
        invitation_url=config.issuer + INVITATION_PATH,
        sign_in_url=config.issuer + SIGN_IN_PATH,
        forgot_url=config.issuer + FORGOT_PATH,
    )


def signup_address(raw: str) -> str:
    """The address typed, normalised and held to a new account's rules; ValidationError
    saying what is wrong with it (which tells nothing of any account)."""
    normalized = new_account_email(raw)
    try:
        parse_mail_address(normalized)
    except ValueError:
        raise ValidationError(f"not a valid email address: {raw.strip()[:100]!r}") from None
    return normalized


def _account_of(session: Session, email: str) -> User | None:
    """The account with this address, else one whose address looks the same (UTS #39)."""
    skeleton = email_skeleton_digest(email)
    return session.scalars(
        select(User)
        .where((User.email == email) | (User.email_skeleton_digest == skeleton))
        .order_by((User.email == email).desc())
        .limit(1)
    ).first()


def _minutes(ttl: timedelta) -> int:
    return max(1, int(ttl.total_seconds() // 60))


def request_signup(
    session: Session,
    composer: MailComposer,
    settings: SignupSettings,
    *,
    email: str,
    context: RequestContext,
) -> str:
    """The sign-up page's POST: mail the address a sign-up link, or, if it has an account,
    a notice (see the module docstring). Returns the address, normalised; the caller answers
    the same whatever was mailed. SignupClosed outside open mode; ValidationError for an
    address the rules refuse."""
    if not settings.page_open:
        raise SignupClosed()
    normalized = signup_address(email)
    now = context.now
    account = _account_of(session, normalized)
    own_account = account if account is not None and account.email == normalized else None
    token = new_link_token()
    link_context = {
        "link": settings.signup_link_url + "?token=" + quote(token),
        "minutes": _minutes(settings.link_ttl),
    }
    reason: str | None = None
    if own_account is not None and own_account.disabled:
        reason = "account_disabled"
    elif (
        address_links_issued_since(
            session, normalized, LinkPurpose.SIGNUP, now - timedelta(hours=1)
        )
        >= settings.mails_per_hour
    ):
        reason = "mail_cap"
    elif account is not None:
        reason = "account_exists" if own_account is not None else "lookalike_exists"

    if reason in ("account_disabled", "mail_cap"):
        # The work of composing the mail, thrown away: both answers cost alike.
        content = composer.render(LINK_TEMPLATE, link_context)
        composer.seal(content, "nobody@invalid", composer.new_message_id())
    else:
        issue_address_link(
            session, normalized, LinkPurpose.SIGNUP, now=now, ttl=settings.link_ttl, token=token
        )
        mail_context: dict[str, Any] = link_context
        template = LINK_TEMPLATE
        if account is not None:
            # The link row's token goes nowhere: this address gets no way to a second account.
            template = EXISTS_TEMPLATE
            mail_context = {"sign_in_url": settings.sign_in_url, "forgot_url": settings.forgot_url}
        enqueue_mail(
            session,
            composer,
            to=normalized,
            template=template,
            context=mail_context,
            now=now,
            user_id=own_account.id if own_account is not None else None,
        )
    details: dict[str, Any] = {"reason": reason} if reason else {}
    record(
        session,
        AuditEventType.SIGNUP_REQUESTED,
        now,
        user_id=own_account.id if own_account is not None else None,
        ip_address=context.ip_address,
        user_agent=context.user_agent,
        **details,
    )
    return normalized


@dataclass(frozen=True)
class Invitation:
    email: str
    expires_at: datetime


def send_invitation(
    session: Session,
    composer: MailComposer,
    settings: SignupSettings,
    email: str,
    now: datetime,
) -> Invitation:
    """The operator invites an address (``authserver users invite``): a link to choose a
    password, mailed to it. The operator is trusted, so told plainly (ValidationError) when
    the address has an account or looks like one that has, and no hourly cap applies."""
    if settings.mode == SIGNUP_OFF:
        raise ValidationError(
            "invitations are off; set AUTHSERVER_SIGNUP=invite (or open) to send them"
        )
    normalized = signup_address(email)
    account = _account_of(session, normalized)
    if account is not None:
        if account.email == normalized:
            raise ValidationError(f"{normalized} already has an account")
        raise ValidationError(LOOKALIKE_EXISTS)
    token = issue_address_link(
        session, normalized, LinkPurpose.INVITATION, now=now, ttl=settings.invitation_ttl
    )
    expires_at = now + settings.invitation_ttl
    enqueue_mail(
        session,
        composer,
        to=normalized,
        template=INVITATION_TEMPLATE,
        context={
            "link": settings.invitation_url + "?token=" + quote(token),
            "expires": f"{expires_at:%Y-%m-%d %H:%M} UTC",
        },
        now=now,
    )
    record(session, AuditEventType.INVITATION_SENT, now, email=normalized, method="operator")
    return Invitation(email=normalized, expires_at=expires_at)


def address_of_link(
    session: Session, settings: SignupSettings, token: str, purpose: LinkPurpose, now: datetime
) -> str:
    """The address a live sign-up or invitation link is for (to show its page). InvalidLink
    for a link that is unknown, used, replaced, expired or not accepted in this mode;
    AddressTaken if the address has an account by now."""
    link = find_live_link(session, token, purpose, now) if settings.accepts(purpose) else None
    if link is None or link.email is None or link.user_id is not None:
        raise InvalidLink("This link is not valid.")
    if _account_of(session, link.email) is not None:
        raise AddressTaken("This address has an account now.")
    return link.email


def complete_signup(
    session: Session,
    hasher: PasswordHasher,
    settings: SignupSettings,
    sessions: SessionPolicy,
    *,
    token: str,
    purpose: LinkPurpose,
    password: str,
    password_policy: PasswordPolicy,
    context: RequestContext,
    previous: BrowserSession | None,
) -> StartedSession:
    """Make the account a link was mailed for, with ``password``, and sign this browser in
    to it (see the module docstring). PasswordRejected (the link stays usable), InvalidLink,
    AddressTaken."""
    now = context.now
    email = address_of_link(session, settings, token, purpose, now)
    password_policy.check(password, email=email)
    link = redeem_link(session, token, purpose, now)
    if link is None or link.email != email:
        raise InvalidLink("This link is not valid.")
    try:
        user = create_user(session, hasher, email, password, password_policy=password_policy)
    except ValidationError:
        # The address is valid and the password passed the policy above: what is left is an
        # account made with this address (or a look-alike) since the check.
        raise AddressTaken("This address has an account now.") from None
    method = METHODS[purpose]
    mark_email_verified(session, user, now, method=method)
    for other in METHODS:
        invalidate_address_links(session, email, other, now)
    record(
        session,
        AuditEventType.SIGNUP_COMPLETED,
        now,
        user_id=user.id,
        ip_address=context.ip_address,
        user_agent=context.user_agent,
        method=method,
    )
    record_sign_in(user, now)
    return start_browser_session(
        session, sessions, user, method=method, context=context, previous=previous
    )
