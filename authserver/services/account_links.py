"""Single-use links mailed to users, one mechanism for every purpose: a password reset, an
address verification (``services/email_verification.py``), an address change
(``services/email_change.py``); and links mailed to an address that has no account yet, a
sign-up or an invitation (``services/signup.py``), which name the address and no user.

A link carries a 256-bit random token (``secrets.token_urlsafe(32)``); the table keeps only
its SHA-256, so a copy of the database, a backup or a log of its rows opens no account
(the same rule as session cookies and refresh tokens). A link is:

- *single use*: ``redeem_link`` is one ``UPDATE ... WHERE used_at IS NULL AND expires_at > now
  RETURNING``, so of two requests racing with one token exactly one gets the row;
- *short-lived*: ``expires_at`` is fixed at issue (AUTHSERVER_PASSWORD_RESET_TTL for resets,
  AUTHSERVER_EMAIL_VERIFICATION_TTL for address links, AUTHSERVER_SIGNUP_LINK_TTL and
  AUTHSERVER_INVITATION_TTL);
- *replaced*: issuing a link ends the user's (or, without a user, the address's) earlier
  unused links of that purpose, and a
  password change of any kind ends unused reset links (``users.replace_password``), so only
  the newest mail works and a link taken from an old mailbox is dead once the owner acts.

A link ended before use keeps its row, marked used: the per-hour mail cap counts it.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import uuid
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.orm import Session

from authserver.models import AccountLink

TOKEN_BYTES = 32  # 256 bits
# token_urlsafe(32) is 43 characters; anything much longer is not one of ours, and is not
# hashed (a megabyte "token" in a query string costs nothing but the refusal).
MAX_TOKEN_LENGTH = 64
_LINKS = cast(Table, AccountLink.__table__)


class LinkPurpose(enum.StrEnum):
    PASSWORD_RESET = "password_reset"  # noqa: S105 (a purpose, not a password)
    EMAIL_VERIFICATION = "email_verification"
    EMAIL_CHANGE = "email_change"
    # Not mailed: the half-done sign-in between the password and the second factor, named
    # by a short-lived cookie (services/sign_in.py).
    SECOND_FACTOR = "second_factor"
    SIGNUP = "signup"
    INVITATION = "invitation"


def digest_link_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


def new_link_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def issue_link(
    session: Session,
    user_id: uuid.UUID,
    purpose: LinkPurpose,
    *,
    now: datetime,
    ttl: timedelta,
    email: str | None = None,
    token: str | None = None,
    end_older: bool = True,
) -> str:
    """A new link for ``user_id``; ends their earlier unused links of this purpose (unless
    ``end_older`` is False: half-done sign-ins of two browsers do not end each other).
    Returns the token, which exists only in the caller's hands (and the sealed mail, or the
    cookie) from now on."""
    if end_older:
        invalidate_links(session, user_id, purpose, now)
    return _add_link(session, purpose, user_id, email, now=now, ttl=ttl, token=token)


def issue_address_link(
    session: Session,
    email: str,
    purpose: LinkPurpose,
    *,
    now: datetime,
    ttl: timedelta,
    token: str | None = None,
) -> str:
    """A new link for an address that has no account yet (``email``, normalised); ends the
    address's earlier unused links of this purpose. Returns the token, as ``issue_link``."""
    invalidate_address_links(session, email, purpose, now)
    return _add_link(session, purpose, None, email, now=now, ttl=ttl, token=token)


def _add_link(
    session: Session,
    purpose: LinkPurpose,
    user_id: uuid.UUID | None,
    email: str | None,
    *,
    now: datetime,
    ttl: timedelta,
    token: str | None,
) -> str:
    token = token or new_link_token()
    session.add(
        AccountLink(
            purpose=purpose.value,
            user_id=user_id,
            token_digest=digest_link_token(token),
            email=email,
            created_at=now,
            expires_at=now + ttl,
        )
    )
    session.flush()
    return token


def invalidate_links(
    session: Session, user_id: uuid.UUID, purpose: LinkPurpose, now: datetime
) -> int:
    """End the user's unused links of ``purpose``; how many there were."""
    result = session.execute(
        update(_LINKS)
        .where(
            _LINKS.c.user_id == user_id,
            _LINKS.c.purpose == purpose.value,
            _LINKS.c.used_at.is_(None),
        )
        .values(used_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def invalidate_address_links(
    session: Session, email: str, purpose: LinkPurpose, now: datetime
) -> int:
    """End the unused links of ``purpose`` mailed to ``email`` without a user; how many."""
    result = session.execute(
        update(_LINKS)
        .where(
            _LINKS.c.email == email,
            _LINKS.c.purpose == purpose.value,
            _LINKS.c.user_id.is_(None),
            _LINKS.c.used_at.is_(None),
        )
        .values(used_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _well_formed(token: str) -> bool:
    return 0 < len(token) <= MAX_TOKEN_LENGTH


def find_live_link(
    session: Session, token: str, purpose: LinkPurpose, now: datetime
) -> AccountLink | None:
    """The unused, unexpired link of this purpose that ``token`` opens, without using it
    (to show the form the link leads to). Unknown, used, expired and of another purpose are
    one answer: None."""
    if not _well_formed(token):
        return None
    return session.scalars(
        select(AccountLink).where(
            AccountLink.token_digest == digest_link_token(token),
            AccountLink.purpose == purpose.value,
            AccountLink.used_at.is_(None),
            AccountLink.expires_at > now,
        )
    ).one_or_none()


def redeem_link(
    session: Session, token: str, purpose: LinkPurpose, now: datetime
) -> AccountLink | None:
    """Use the link: one statement that marks it used only if it is still unused and
    unexpired, so two requests with the same token cannot both get it (the second finds
    ``used_at`` set, or waits on the first's row lock and then finds it). None for a link
    that is unknown, used, expired or of another purpose."""
    if not _well_formed(token):
        return None
    link_id = session.execute(
        update(_LINKS)
        .where(
            _LINKS.c.token_digest == digest_link_token(token),
            _LINKS.c.purpose == purpose.value,
            _LINKS.c.used_at.is_(None),
            _LINKS.c.expires_at > now,
        )
        .values(used_at=now)
        .returning(_LINKS.c.id)
    ).scalar_one_or_none()
    if link_id is None:
        return None
    link = session.get(AccountLink, link_id, populate_existing=True)
    assert link is not None  # the row this transaction just updated
    return link


def links_issued_since(
    session: Session, user_id: uuid.UUID, purpose: LinkPurpose, since: datetime
) -> int:
    """How many links of ``purpose`` the user was sent since ``since`` (used or not)."""
    count = session.scalar(
        select(func.count())
        .select_from(AccountLink)
        .where(
            AccountLink.user_id == user_id,
            AccountLink.purpose == purpose.value,
            AccountLink.created_at > since,
        )
    )
    return int(count or 0)


def address_links_issued_since(
    session: Session, email: str, purpose: LinkPurpose, since: datetime
) -> int:
    """How many links of ``purpose`` were mailed to ``email`` without a user since ``since``
    (used or not)."""
    count = session.scalar(
        select(func.count())
        .select_from(AccountLink)
        .where(
            AccountLink.email == email,
            AccountLink.purpose == purpose.value,
            AccountLink.user_id.is_(None),
            AccountLink.created_at > since,
        )
    )
    return int(count or 0)
