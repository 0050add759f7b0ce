"""Whether an account has a second factor: the one question sign-in, the password grant and
the account page ask, answered in one place as factors are added: an authenticator app
(``services/totp.py``) or a passkey (``services/passkeys.py``)."""

from __future__ import annotations

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from authserver.models import Passkey, TotpCredential, User


def has_passkey(session: Session, user: User) -> bool:
    return bool(session.scalar(select(exists().where(Passkey.user_id == user.id))))


def has_second_factor(session: Session, user: User) -> bool:
    """Signing in to this account takes a second step after the password: a confirmed app
    or a passkey, asked in one statement (every password sign-in asks)."""
    app = exists().where(
        TotpCredential.user_id == user.id, TotpCredential.confirmed_at.is_not(None)
    )
    passkey = exists().where(Passkey.user_id == user.id)
    return bool(session.scalar(select(or_(app, passkey))))
