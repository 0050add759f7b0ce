"""The one reader of untrusted compact JWS (RFC 7515 §7.1): every token a caller hands the
server (a bearer ``Authorization`` header, an ``id_token_hint``, the ``token`` of revocation
and introspection) is taken apart here, with the standard library only, before joserfc or any
other code looks at it.

Whatever it refuses, it refuses with ``MalformedJws`` and a fixed reason that never contains
the input, so each caller answers with its own 4xx. What it accepts cannot make json, base64
or joserfc fail in any way but their documented refusals: the token and its header have a
size limit, every segment is strict base64url, the header is UTF-8 I-JSON (RFC 7493), and it
is a flat JSON object, so parsing it never recurses.

It reads headers authserver wrote, which are flat objects of strings (``alg``, ``kid``,
``typ``). Which members a verifier then accepts, and which key and algorithm it uses, is the
verifier's decision (``token_verification``); this module only makes sure it can decide.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn

from authserver.resource.jws_parts import nesting_exceeds

# authserver's tokens are under 1 KiB; this leaves room for any claims it may add, and every
# later step works on at most this much.
MAX_COMPACT_JWS_LENGTH = 8192
# authserver's headers are under 120 characters once encoded; joserfc refuses more than 512
# too (its JWSRegistry.max_header_length), so nothing accepted here is refused there for size.
MAX_HEADER_SEGMENT_LENGTH = 512
# A header is one JSON object whose members hold no arrays or objects: authserver writes
# none, and a bound checked before json.loads keeps its recursion from ever being reached.
MAX_HEADER_NESTING = 1
# RFC 7493 §2.2: integers beyond ±(2**53 - 1) are not interoperable.
MAX_SAFE_INTEGER = 2**53 - 1
# Members that change how a JWS must be processed, which authserver never writes, refused
# rather than ignored: "crit" because RFC 7515 §4.1.11 requires a recipient to reject critical
# parameters it does not understand (it understands none); "b64" because RFC 7797 §3 changes
# how the payload segment is read, and joserfc honours it even where RFC 7797 §6 requires it to
# be listed in "crit".
REFUSED_HEADER_MEMBERS = frozenset({"crit", "b64"})
# Header members that must be strings when present (RFC 7515 §4.1.1, §4.1.4, §4.1.9, §4.1.10).
STRING_HEADER_MEMBERS = ("alg", "kid", "typ", "cty")

# RFC 7515 §2: base64url without padding, from the URL-safe alphabet of RFC 4648 §5 and nothing
# else (no "=", no "+" or "/", no whitespace, no non-ASCII digits). Empty segments are refused
# too: authserver never detaches a payload (RFC 7515 Appendix F) nor signs with "none".
BASE64URL_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


class MalformedJws(Exception):
    """Not a compact JWS this server could have written. ``reason`` is a fixed phrase, safe
    for logs: it never contains any part of the input."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class CompactJws:
    """A compact JWS whose shape and header are sound; its signature is not checked yet."""

    header: Mapping[str, object]
    algorithm: str
    key_id: str | None
    media_type: str | None  # the "typ" member


def parse_compact_jws(token: str) -> CompactJws:
    """The header of ``token`` and the members a verifier reads from it, or ``MalformedJws``.

    The checks run cheapest first, so a hostile token costs at most one pass over 8 KiB.
    """
    if not isinstance(token, str) or not token:
        raise MalformedJws("empty")
    if len(token) > MAX_COMPACT_JWS_LENGTH:
        raise MalformedJws("too large")
    segments = token.split(".")
    if len(segments) != 3:
        raise MalformedJws("not three segments")
    header_segment = segments[0]
    if len(header_segment) > MAX_HEADER_SEGMENT_LENGTH:
        raise MalformedJws("header too large")
    header_bytes = _decode_base64url(header_segment)
    payload_segment, signature_segment = segments[1], segments[2]
    # The payload is only read once the signature over its exact text has verified, so the
    # alphabet is all it needs here (decoding it twice would cost a fifth of a verification).
    _check_base64url(payload_segment)
    # The signature is decoded in full: its unused bits must be zero too, or one token would
    # have several spellings.
    _decode_base64url(signature_segment)
    header = _header_object(header_bytes)
    return CompactJws(
        header=header,
        algorithm=_string_member(header, "alg"),
        key_id=_optional_string_member(header, "kid"),
        media_type=_optional_string_member(header, "typ"),
    )


def _check_base64url(segment: str) -> None:
    # A length of 4n+1 characters encodes no whole byte (RFC 4648 §5); base64 would raise.
    if not BASE64URL_SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        raise MalformedJws("not base64url")


def _decode_base64url(segment: str) -> bytes:
    _check_base64url(segment)
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    # RFC 4648 §3.5: the bits of the last character that encode nothing must be zero. A
    # segment that decodes only by ignoring them is not what any signer produced.
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != segment.encode("ascii"):
        raise MalformedJws("not canonical base64url")
    return raw


def _header_object(header_bytes: bytes) -> dict[str, object]:
    # RFC 7515 §5.2 step 3 and RFC 7493 §2.1: UTF-8, nothing else (json.loads would otherwise
    # guess UTF-16 or UTF-32 from bytes).
    try:
        text = header_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedJws("header not UTF-8") from None
    if nesting_exceeds(text, MAX_HEADER_NESTING):
        raise MalformedJws("header nested")
    try:
        header = json.loads(
            text,
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_safe_integer,
        )
    except json.JSONDecodeError:
        raise MalformedJws("header not JSON") from None
    if not isinstance(header, dict):
        raise MalformedJws("header not an object")
    for name, value in header.items():
        # RFC 7493 §2.1: no lone surrogates ("\ud800" is valid JSON, not valid text).
        if not _is_unicode_text(name) or (isinstance(value, str) and not _is_unicode_text(value)):
            raise MalformedJws("header not Unicode text")
    refused = REFUSED_HEADER_MEMBERS & header.keys()
    if refused:
        raise MalformedJws("header extension refused")
    for name in STRING_HEADER_MEMBERS:
        if name in header and not (isinstance(header[name], str) and header[name]):
            raise MalformedJws("header member of the wrong type")
    return header


def _object_without_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # RFC 7515 §4: reject duplicate Header Parameter names, or keep only the last one (and
    # RFC 7493 §2.3 forbids them). Rejecting means no two parsers read different headers.
    members = dict(pairs)
    if len(members) != len(pairs):
        raise MalformedJws("header member repeated")
    return members


def _refuse_constant(_name: str) -> NoReturn:
    # NaN, Infinity and -Infinity: Python's json takes them, JSON (RFC 8259 §6) does not.
    raise MalformedJws("header number not finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 overflows to inf
        raise MalformedJws("header number not finite")
    return value


def _safe_integer(text: str) -> int:
    # At most MAX_HEADER_SEGMENT_LENGTH digits reach here, so int() is cheap.
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        raise MalformedJws("header number too large")
    return value


def _is_unicode_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _string_member(header: Mapping[str, object], name: str) -> str:
    value = header.get(name)
    if not isinstance(value, str):
        # RFC 7515 §4.1.1: "alg" must be present.
        raise MalformedJws("header member missing")
    return value


def _optional_string_member(header: Mapping[str, object], name: str) -> str | None:
    value = header.get(name)
    return value if isinstance(value, str) else None
