"""Whether an account has a second factor: the one question sign-in, the password grant and
the account page ask, answered in one place as factors are added (an authenticator app
today, ``services/totp.py``)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from authserver.models import User
from authserver.services.totp import has_confirmed_totp


def has_second_factor(session: Session, user: User) -> bool:
    """Signing in to this account takes a second step after the password."""
    return has_confirmed_totp(session, user)
