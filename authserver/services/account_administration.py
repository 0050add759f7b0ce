"""What the admin API does to accounts beyond what the CLI already shares with it
(``services/users.py``): find an account by id, hold it for a conditional change, make one
whose owner chooses the password, and change its address or whether it is verified.

The rules are the ones the account pages and the CLI follow: a new address is refused when
it or a look-alike is taken (``email_change.move_account``), a password goes through the
policy, and each change is audited where it is made.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.errors import NotFound, ValidationError
from authserver.models import User
from authserver.services.email_change import move_account
from authserver.services.password_policy import PasswordPolicy
from authserver.services.passwords import PasswordHasher
from authserver.services.sign_in import RequestContext
from authserver.services.users import create_user, mark_email_verified, new_account_email

# A password nobody knows: an account made without one signs in only once its owner has
# chosen one through a reset link (256 bits, never shown, never stored but as its hash).
_UNKNOWN_PASSWORD_BYTES = 32


def get_user(session: Session, user_id: uuid.UUID) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("No user has this id.")
    return user


def lock_user(session: Session, user_id: uuid.UUID) -> User:
    """The account, its row locked until the transaction ends: a change checked against
    what the caller read (an ETag) cannot interleave with another change."""
    user = session.scalars(
        select(User)
        .where(User.id == user_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if user is None:
        raise NotFound("No user has this id.")
    return user


def create_account(
    session: Session,
    hasher: PasswordHasher,
    email: str,
    password: str | None,
    *,
    password_policy: PasswordPolicy,
) -> User:
    """``users.create_user``; without a password, the account gets one nobody knows, and
    its owner chooses theirs through a reset link (``password_reset.send_reset_link``)."""
    chosen = password if password is not None else secrets.token_urlsafe(_UNKNOWN_PASSWORD_BYTES)
    return create_user(session, hasher, email, chosen, password_policy=password_policy)


@dataclass(frozen=True)
class AccountChanges:
    """What an update asks for; None: left as it is."""

    email: str | None = None
    email_verified: bool | None = None


def update_account(
    session: Session, user: User, changes: AccountChanges, context: RequestContext
) -> list[str]:
    """Apply ``changes``: a new address (normalised, refused if taken or a look-alike of one
    that is; unverified unless ``email_verified`` says so), and that the address is
    verified. Returns the names of the fields that changed."""
    if changes.email is None and changes.email_verified is None:
        raise ValidationError("Nothing to change: give email or email_verified.")
    changed: list[str] = []
    if changes.email is not None:
        normalized = new_account_email(changes.email)
        if normalized != user.email:
            move_account(session, user, normalized, context, method="operator")
            changed.append("email")
    if changes.email_verified is False:
        # Nothing proves an address stopped reaching its owner; a new address starts out
        # unverified, which is the one way an address becomes unverified.
        raise ValidationError("email_verified can only be set to true.")
    if changes.email_verified and mark_email_verified(
        session, user, context.now, method="operator"
    ):
        changed.append("email_verified")
    session.flush()
    return changed


def addresses_of(session: Session, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The address of each account of ``user_ids`` that still exists (an audit trail names
    accounts by id, and outlives them)."""
    if not user_ids:
        return {}
    rows = session.execute(select(User.id, User.email).where(User.id.in_(user_ids)))
    return {row.id: row.email for row in rows}
