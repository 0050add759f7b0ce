"""Addresses that look alike: the UTS #39 skeleton, and the accounts that share one.

Two accounts must never look identical to the person reading an address: ``alice@example.com``
and the same address with a Cyrillic ``a`` (U+0430), a dotted capital ``I`` (U+0130) or a
zero-width space are one address to the eye. PRECIS (RFC 8264/8265, UsernameCaseMapped) does
not help there: it keeps scripts apart and case-maps U+0130 to ``i`` + U+0307. Unicode's answer
is the confusable skeleton of UTS #39 §4, which ICU implements from Unicode's own confusables
data; two addresses look alike when their skeletons are equal.

The skeleton is computed from the normalised address (``users.normalize_email``: trimmed,
NFKC, case-folded), which stays the stored and signed-in-with form. Three steps are added to
the UTS #39 function, because the comparison here is between case-folded addresses:

- the skeleton's output is case-folded again: UTS #39 maps to prototypes that may be capitals
  (the digit ``0`` maps to ``O``), and the folded addresses would otherwise never meet them;
- U+0307 COMBINING DOT ABOVE after a Soft_Dotted letter (``i``, ``j``; UAX #44) is dropped: a
  soft dot gives way to a mark above, so ``i`` + U+0307, what case folding makes of U+0130,
  looks exactly like ``i``. UTS #39's data has no mapping for a sequence like this one;
- the steps are repeated until nothing changes (a prototype can itself have a prototype once
  folded: Cherokee U+13B7 → ``M`` → ``m`` → ``rn``), at most ``MAX_SKELETON_ROUNDS`` times.

UTS #39 warns that a skeleton is not for display or storage: it is an intermediate form that
changes with Unicode's data. The database therefore keeps only a SHA-256 digest of it (a fixed
64 characters for any address, where a skeleton can be seven times longer than the address),
and the digest is only as stable as ICU's confusables data: pyproject.toml pins the ICU
package to one minor version, and a change of ICU that changes skeletons needs a migration
that recomputes them (``authserver users lookalikes`` always recomputes, so it sees the truth).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import icu
from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.models import User

COMBINING_DOT_ABOVE = "\u0307"
# Canonical_Combining_Class of the marks drawn above a letter (UAX #44: 230, Above).
ABOVE = 230
# With ICU 77's data every single character settles after at most two changes; the rest is
# margin. The function stays deterministic if a string ever needed more.
MAX_SKELETON_ROUNDS = 8

# Characters that show nothing, or nothing stable, and so have no place in a new address:
# format characters (zero-width space and joiners, bidirectional overrides that reorder what
# is shown, soft hyphen), private use (drawn however a font likes), unassigned code points
# (no confusables data knows them) and lone surrogates (not text).
_INVISIBLE_CATEGORIES = frozenset(
    {
        icu.UCharCategory.FORMAT_CHAR,
        icu.UCharCategory.PRIVATE_USE_CHAR,
        icu.UCharCategory.UNASSIGNED,
        icu.UCharCategory.SURROGATE,
        icu.UCharCategory.CONTROL_CHAR,
    }
)

# One checker for the process, with ICU's defaults, only asked for skeletons: ICU lets
# several threads use one configured checker at once (uspoof.h, "Thread Safety").
_spoof_checker = icu.SpoofChecker()


def _drop_hidden_dots(text: str) -> str:
    """Drop U+0307 where it sits on a Soft_Dotted letter with no other mark above between."""
    kept: list[str] = []
    dot_hidden = False
    for char in text:
        combining_class = icu.Char.getCombiningClass(char)
        if char == COMBINING_DOT_ABOVE and dot_hidden:
            dot_hidden = False  # a second dot above would show
            continue
        if combining_class == 0:
            dot_hidden = icu.Char.hasBinaryProperty(char, icu.UProperty.SOFT_DOTTED)
        elif combining_class == ABOVE:
            dot_hidden = False
        kept.append(char)
    return "".join(kept)


def email_skeleton(normalized_email: str) -> str:
    """The UTS #39 skeleton of a normalised address, for comparison only (see the module's
    docstring for the steps added to UTS #39 and why)."""
    text = normalized_email
    for _ in range(MAX_SKELETON_ROUNDS):
        next_text = _drop_hidden_dots(_spoof_checker.getSkeleton(0, text).casefold())
        if next_text == text:
            break
        text = next_text
    return text


def email_skeleton_digest(normalized_email: str) -> str:
    """SHA-256 (hex) of the address's skeleton: what ``users.email_skeleton_digest`` holds."""
    return hashlib.sha256(email_skeleton(normalized_email).encode("utf-8")).hexdigest()


def invisible_characters(text: str) -> list[str]:
    """The characters of ``text`` that a reader cannot see, as ``U+XXXX``: Unicode's
    Default_Ignorable_Code_Point property (UAX #44) and the categories above."""
    return [
        f"U+{ord(char):04X}"
        for char in text
        if icu.Char.hasBinaryProperty(char, icu.UProperty.DEFAULT_IGNORABLE_CODE_POINT)
        or icu.Char.charType(char) in _INVISIBLE_CATEGORIES
    ]


@dataclass(frozen=True)
class LookalikeAccount:
    id: uuid.UUID
    email: str
    created_at: datetime


def lookalike_groups(session: Session, batch_size: int = 1000) -> list[list[LookalikeAccount]]:
    """Every group of two or more accounts whose addresses look alike, oldest account first
    in each group and groups in the order of their oldest account.

    Computed from the addresses, not from the stored digests, so it also finds the accounts
    that already collided when the digest column was added (they have none), and any that a
    change of Unicode's data has brought together since.
    """
    oldest: dict[str, LookalikeAccount] = {}
    groups: dict[str, list[LookalikeAccount]] = {}
    for account in _accounts_oldest_first(session, batch_size):
        skeleton = email_skeleton(account.email)
        first = oldest.setdefault(skeleton, account)
        if first is not account:
            groups.setdefault(skeleton, [first]).append(account)
    return sorted(groups.values(), key=lambda group: (group[0].created_at, str(group[0].id)))


def _accounts_oldest_first(session: Session, batch_size: int) -> Iterator[LookalikeAccount]:
    rows = session.execute(
        select(User.id, User.email, User.created_at)
        .order_by(User.created_at, User.id)
        .execution_options(yield_per=batch_size)
    )
    for user_id, email, created_at in rows:
        yield LookalikeAccount(user_id, email, created_at)
