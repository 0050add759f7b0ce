"""Reading the parts of a compact JWS (RFC 7515 §7.1) that a verifier looks at before, or
after, checking its signature: shared by access-token verification (``verifier``) and DPoP
proofs (``dpop``)."""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any

from .errors import MalformedToken

# Three non-empty base64url segments (RFC 7515 §7.1). An empty signature, as "alg":"none"
# produces, is malformed by this definition.
COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# json.loads recurses once per level of nesting, so 8 KiB of brackets would reach Python's
# recursion limit (a RecursionError, not an InvalidToken). authserver's headers are flat and
# its claims nest two levels (an "aud" list); anything past this bound is refused before
# json.loads sees it.
MAX_JSON_NESTING = 16


def decode_segment(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def nesting_exceeds(text: str, limit: int) -> bool:
    """Whether arrays and objects nest deeper than ``limit`` in the JSON ``text``, counted in
    one pass without recursion (brackets inside strings do not count). For text that is not
    JSON the count may be off, but json.loads stops at the first error, and up to there it
    has met exactly the brackets counted here."""
    if text.count("[") + text.count("{") <= limit:
        return False  # not even that many brackets anywhere, inside strings or out
    depth = 0
    in_string = False
    escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def json_object(segment: bytes | str, max_nesting: int = MAX_JSON_NESTING) -> dict[str, Any] | None:
    try:
        # RFC 7515 §5.2 and RFC 7519 §7.2: UTF-8 (json.loads would also guess UTF-16 and -32).
        text = segment.decode("utf-8") if isinstance(segment, bytes) else segment
        if nesting_exceeds(text, max_nesting):
            return None
        value = json.loads(text)
    except ValueError:  # UnicodeDecodeError and json.JSONDecodeError among them
        return None
    return value if isinstance(value, dict) else None


def numeric_date(claims: dict[str, Any], name: str) -> float | None:
    """A NumericDate claim (RFC 7519 §2) as a finite float. Python's json reads NaN and
    Infinity (JSON has neither) and integers too large for a float: none of them is a date,
    and NaN would compare false in every expiry check and so pass them all."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedToken(f"The access token's {name} claim is not a number.")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise MalformedToken(f"The access token's {name} claim is not a number.")
    return number
