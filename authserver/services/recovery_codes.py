"""Recovery codes: what signs a user in, in place of the authenticator app's code, when the
phone is lost. Ten at a time, each single use, shown once, replaced all together on demand.

A code is 10 characters of Crockford's base32 alphabet (digits and lower-case letters
without i, l, o and u, so nothing reads as something else): 10 * 5 = 50 bits from
``secrets``, shown as ``xxxxx-xxxxx``. The table keeps only the SHA-256 of each code's
canonical form. A fast digest without salt is the right one here, as for link tokens
(``services/account_links.py``): salting and slow hashing defend guessable secrets such as
passwords, and 2**50 random values per code cannot be tried offline in any useful time, let
alone online, where guesses are throttled like passwords (``services/second_factors.py``).

Typing is forgiving: case, spaces and dashes do not matter, and the letters Crockford's
alphabet leaves out are read as the digits they look like (o as 0; i and l as 1).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.orm import Session

from authserver.models import RecoveryCode, User
from authserver.services.audit import AuditEventType, record

CODES_PER_SET = 10
CODE_LENGTH = 10  # characters: 50 bits
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base32: 32 symbols, 5 bits each
_LOOKALIKES = str.maketrans({"o": "0", "i": "1", "l": "1", "-": None, " ": None})
# Longer input is not a code with spaces in it; not even normalised.
MAX_CODE_INPUT = 64
_CODES = cast(Table, RecoveryCode.__table__)


def _new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def format_code(canonical: str) -> str:
    """How a code is shown: two groups of five."""
    half = CODE_LENGTH // 2
    return f"{canonical[:half]}-{canonical[half:]}"


def canonical_code(code: str) -> str | None:
    """The code's ten characters as generated, or None for input that cannot be a code."""
    if len(code) > MAX_CODE_INPUT:
        return None
    canonical = code.strip().lower().translate(_LOOKALIKES)
    if len(canonical) != CODE_LENGTH or any(ch not in ALPHABET for ch in canonical):
        return None
    return canonical


def digest_code(canonical: str) -> bytes:
    return hashlib.sha256(canonical.encode("ascii")).digest()


def generate(
    session: Session,
    user: User,
    now: datetime,
    *,
    ip_address: str | None = None,
    user_agent: str | None = None,
) -> list[str]:
    """A new set of ten codes for ``user``, which ends every earlier code, used or not.
    Returns them formatted, to be shown once: from here on only their digests exist."""
    codes: set[str] = set()
    while len(codes) < CODES_PER_SET:  # a repeat within one set (1 in 2**44) is drawn again
        codes.add(_new_code())
    session.execute(delete(_CODES).where(_CODES.c.user_id == user.id))
    session.add_all(
        RecoveryCode(user_id=user.id, code_digest=digest_code(code), created_at=now)
        for code in codes
    )
    session.flush()
    record(
        session,
        AuditEventType.RECOVERY_CODES_GENERATED,
        now,
        user_id=user.id,
        ip_address=ip_address,
        user_agent=user_agent,
    )
    return [format_code(code) for code in sorted(codes)]


def use_code(session: Session, user: User, code: str, now: datetime) -> bool:
    """Spend one of ``user``'s unused codes: True once per code, False for anything else
    (another user's code, a used one, input that is not a code; the last without a query).
    One statement that marks the code used only if it is unused, so two requests with one
    code cannot both get it."""
    canonical = canonical_code(code)
    if canonical is None:
        return False
    spent = session.execute(
        update(_CODES)
        .where(
            _CODES.c.user_id == user.id,
            _CODES.c.code_digest == digest_code(canonical),
            _CODES.c.used_at.is_(None),
        )
        .values(used_at=now)
        .returning(_CODES.c.id)
    ).scalar_one_or_none()
    return spent is not None


def remaining_count(session: Session, user: User) -> int:
    """How many of ``user``'s codes are unused."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(_CODES)
            .where(_CODES.c.user_id == user.id, _CODES.c.used_at.is_(None))
        )
        or 0
    )
