"""Hostile input as Hypothesis strategies, for the places the server parses what a caller
sends: malformed compact JWS where a token belongs (a bearer header, an ``id_token_hint``, the
``token`` of revocation and introspection, a resource server's ``Authorization`` header), and
cursors that are not cursors where the revocation feed reads ``since``.

Each family aims at one way a parser can break: structure (segment counts, empty segments),
encodings (the base64url alphabet, padding, non-canonical endings, headers that are not UTF-8),
sizes (up to and past the limits), and hostile headers: nesting, numbers (huge, non-finite,
exponents), members of the wrong type, ``crit``, ``b64``, ``zip``, ``jku``/``x5u``/``jwk``/
``x5c``, repeated members. Many name a real ``kid``, so the token gets as far as a key.

Every token drawn here must be refused by a correct verifier, whoever holds the keys: a real
signature is only ever paired with the real header and a payload that differs from the one it
signed, and a header built here never comes with a real signature.
"""

from __future__ import annotations

import base64
import json
import re
import string
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

BASE64URL_ALPHABET = string.ascii_letters + string.digits + "-_"
# Characters that are not base64url: the standard alphabet's two, padding, separators,
# whitespace, control characters, a non-ASCII letter and non-ASCII digits (ARABIC-INDIC DIGIT
# ONE and SUPERSCRIPT TWO pass str.isdigit() and str.isalnum()).
NOT_BASE64URL = [
    "+",
    "/",
    "=",
    "%",
    "!",
    "~",
    "*",
    " ",
    "\t",
    "\x00",
    "\x7f",
    "\u00e9",
    "\u0661",
    "\u00b2",
]
ALGORITHMS = ["ES256", "RS256", "PS256", "HS256", "none", "", "es256"]
TYPES = ["at+jwt", "JWT", "AT+JWT", "application/at+jwt", "jwt", ""]
# Number literals JSON or Python's json module reads in ways a parser may not expect.
NUMBER_LITERALS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "1E+400",
    "1.5e-400",
    "-0",
    "0.1",
    str(2**53),
    str(-(2**53)),
    str(2**63),
    "9" * 400,
    "1" + "0" * 5000,
]

# One more flat member after a header as authserver writes it: extensions, and members it
# never writes, with values a registry may or may not type-check.
FLAT_EXTRAS = [
    ',"crit":5',
    ',"crit":"b64"',
    ',"crit":null',
    ',"b64":false',
    ',"b64":"false"',
    ',"zip":"DEF"',
    ',"jku":"https://attacker.example/jwks.json"',
    ',"jku":5',
    ',"x5u":true',
    ',"jwk":"x"',
    ',"x5c":"MIIB"',
    ',"cty":5',
    ',"":""',
]
# Flat headers whose alg, kid or typ has the wrong type (KID stands for a real kid).
FLAT_WRONG_TYPES = [
    '{"alg":5,"kid":KID,"typ":"at+jwt"}',
    '{"alg":null,"kid":KID}',
    '{"alg":"","kid":KID}',
    '{"alg":"ES256","kid":5}',
    '{"alg":"ES256","kid":""}',
    '{"alg":"ES256","kid":true}',
    '{"alg":"ES256","kid":KID,"typ":5}',
    '{"alg":"ES256","kid":KID,"typ":null}',
    '{"alg":"ES256","kid":KID,"typ":false}',
    '{"alg":"ES256","kid":KID,"typ":1e999}',
]


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class TokenMaterial:
    """What any caller can learn: the kids the JWKS publishes, and one real token's
    segments (its own, say)."""

    kids: tuple[str, ...]
    header: str
    payload: str
    signature: str

    @classmethod
    def of(cls, kids: list[str], real_token: str) -> TokenMaterial:
        header, payload, signature = real_token.split(".")
        return cls(tuple(kids), header, payload, signature)


# -- pieces --------------------------------------------------------------------------------

junk_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
random_segments = st.binary(min_size=1, max_size=96).map(b64url)


def _kids(material: TokenMaterial) -> st.SearchStrategy[Any]:
    return st.sampled_from(material.kids) | junk_json


def header_members(material: TokenMaterial) -> st.SearchStrategy[dict[str, Any]]:
    """Header objects: the members authserver writes, real or junk, and members it never
    writes, with sensible and senseless values."""
    return st.fixed_dictionaries(
        {},
        optional={
            "alg": st.sampled_from(ALGORITHMS) | junk_json,
            "kid": _kids(material),
            "typ": st.sampled_from(TYPES) | junk_json,
            "crit": st.sampled_from([["exp"], ["b64"], [], 5, "b64", [[1]], [{}], [None]])
            | junk_json,
            "b64": st.sampled_from([False, True]) | junk_json,
            "zip": st.just("DEF") | junk_json,
            "jku": st.just("https://attacker.example/jwks.json") | junk_json,
            "x5u": st.just("https://attacker.example/cert.pem") | junk_json,
            "jwk": st.just({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}) | junk_json,
            "x5c": st.sampled_from([["MIIB"], [1], "MIIB"]) | junk_json,
            "cty": st.just("JWT") | junk_json,
            "exp": junk_json,
        },
    )


def nested_arrays(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def raw_header_texts(material: TokenMaterial) -> st.SearchStrategy[str]:
    """Header text json.dumps would never write: odd numbers, repeated members, deep
    nesting, brackets inside strings, escapes of things that are not text, and JSON that is
    not an object or not JSON."""
    kid = st.sampled_from(material.kids)
    # A header as authserver writes it, left open for one more member.
    start = st.builds(lambda k: '{"alg":"ES256","typ":"at+jwt","kid":' + compact_json(k), kid)
    shallow = st.integers(min_value=2, max_value=40)
    nested = st.builds(nested_arrays, shallow) | st.builds(nested_objects, shallow)
    number = st.sampled_from(NUMBER_LITERALS)
    return st.one_of(
        st.builds(lambda s, n: s + ',"x":' + n + "}", start, number),
        st.builds(lambda s, n: s + ',"kid":' + n + "}", start, number),
        st.builds(lambda s, k: s + ',"kid":' + compact_json(k) + "}", start, kid),  # kid twice
        st.builds(lambda s: s + ',"alg":"none"}', start),  # alg twice
        st.builds(lambda s, n: s + ',"x":' + n + "}", start, nested),
        st.builds(lambda s, member: s + member + "}", start, st.sampled_from(FLAT_EXTRAS)),
        st.builds(
            lambda k, text: text.replace("KID", compact_json(k)),
            kid,
            st.sampled_from(FLAT_WRONG_TYPES),
        ),
        st.builds(lambda n: '{"kid":' + n + "}", nested),  # the kid itself nested
        # Brackets inside a string are not nesting.
        st.builds(lambda k: '{"alg":"ES256","kid":"' + k + '[[[{{"}', kid),
        st.sampled_from(
            [
                '{"alg":"ES256","kid":"\\ud800"}',  # a lone surrogate
                '{"alg":"ES256","kid":"\\u0000"}',
                '{"alg":"ES\\u0032\\u00356"}',
                '{"alg":"ES256",}',
                "{'alg':'ES256'}",
                '{"alg":"ES256"',
                '{"alg":"ES256"}{}',
                '{"alg":"ES256"} x',
                '\ufeff{"alg":"ES256"}',
                " \n\t{}",
                "{}",
                "[]",
                '["alg","kid"]',
                '"alg"',
                "1",
                "null",
                "true",
                "",
                nested_arrays(3000),
            ]
        ),
    )


def header_texts(material: TokenMaterial) -> st.SearchStrategy[str]:
    return header_members(material).map(compact_json) | raw_header_texts(material)


def header_bytes_not_utf8(material: TokenMaterial) -> st.SearchStrategy[bytes]:
    """Header texts in other encodings, with bytes UTF-8 forbids (a lone continuation byte,
    an overlong "/", an encoded surrogate), or no text at all."""
    texts = header_texts(material)
    return st.one_of(
        texts.map(lambda text: text.encode("utf-16")),
        texts.map(lambda text: text.encode("utf-32-le")),
        st.builds(
            lambda text, bad: text.encode("utf-8").replace(b'"', bad, 1),
            texts,
            st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80"]),
        ),
        st.binary(max_size=64),
    )


# -- the families ------------------------------------------------------------------------


def wrong_structure(material: TokenMaterial) -> st.SearchStrategy[str]:
    segments = st.sampled_from([material.header, material.payload, material.signature, ""])
    return st.one_of(
        st.lists(segments | random_segments, min_size=0, max_size=8)
        .filter(lambda parts: len(parts) != 3)
        .map(".".join),
        st.sampled_from(
            [
                "",
                ".",
                "..",
                "...",
                f"{material.header}.{material.payload}.",
                f"{material.header}..{material.signature}",
                f".{material.payload}.{material.signature}",
                f"{material.header}.{material.payload}",
                f"{material.header}.{material.payload}.{material.signature}.",
                f".{material.header}.{material.payload}.{material.signature}",
                f"{material.header}.{material.payload}.{material.signature}.{material.signature}",
                # JWE compact has five segments (RFC 7516 §7.1).
                f"{material.header}.{material.payload}.{material.signature}.AA.AA",
            ]
        ),
    )


def _corrupt(segment: str, how: str, char: str) -> str:
    if how == "pad":
        return segment + "=" * (4 - len(segment) % 4 if len(segment) % 4 else 4)
    if how == "insert":
        middle = len(segment) // 2
        return segment[:middle] + char + segment[middle:]
    if how == "append":
        return segment + char
    if how == "four_n_plus_one":  # a length that encodes no whole byte
        return segment + "A" * ((1 - len(segment)) % 4 or 4)
    # "non_canonical": set bits the last character must leave zero (RFC 4648 §3.5), when
    # the length leaves any; otherwise make it 4n+1 long.
    if len(segment) % 4 in (2, 3):
        last = BASE64URL_ALPHABET.index(segment[-1])
        unused = 0b1111 if len(segment) % 4 == 2 else 0b11
        if last & unused != unused:
            return segment[:-1] + BASE64URL_ALPHABET[last | unused]
        return segment[:-1] + BASE64URL_ALPHABET[(last & ~unused) | 1]
    return segment + "A" * ((1 - len(segment)) % 4 or 4)


def bad_encodings(material: TokenMaterial) -> st.SearchStrategy[str]:
    """The real token with one segment no longer strict base64url, or a header whose bytes
    are not UTF-8 JSON."""

    def corrupted(index: int, how: str, char: str) -> str:
        parts = [material.header, material.payload, material.signature]
        parts[index] = _corrupt(parts[index], how, char)
        return ".".join(parts)

    return st.one_of(
        st.builds(
            corrupted,
            st.integers(min_value=0, max_value=2),
            st.sampled_from(["pad", "insert", "append", "four_n_plus_one", "non_canonical"]),
            st.sampled_from(NOT_BASE64URL),
        ),
        st.builds(
            lambda raw, signature: f"{b64url(raw)}.{material.payload}.{signature}",
            header_bytes_not_utf8(material),
            random_segments,
        ),
    )


def wrong_sizes(material: TokenMaterial) -> st.SearchStrategy[str]:
    """Headers around 512 characters and tokens around 8 KiB, and far past both."""

    def header_of_length(length: int, kid: str) -> str:
        base = {"alg": "ES256", "kid": kid, "typ": "at+jwt", "x": ""}
        room = max(0, length * 3 // 4 - len(compact_json(base)))
        return b64url(compact_json({**base, "x": "a" * room}).encode())

    def token_of_length(length: int) -> str:
        room = max(4, length - len(material.header) - len(material.signature) - 2)
        payload = b64url(b"{" * (room * 3 // 4))
        return f"{material.header}.{payload}.{material.signature}"

    near = st.integers(min_value=-4, max_value=4)
    return st.one_of(
        st.builds(
            lambda delta, kid, sig: (
                f"{header_of_length(512 + delta, kid)}.{material.payload}.{sig}"
            ),
            near,
            st.sampled_from(material.kids),
            random_segments,
        ),
        st.builds(lambda delta: token_of_length(8192 + delta), near),
        st.builds(
            lambda n: f"{material.header}.{material.payload}.{'A' * n}",
            st.integers(min_value=1000, max_value=9000),
        ),
        st.integers(min_value=8193, max_value=200_000).map(lambda n: "A" * n),
        st.integers(min_value=8193, max_value=200_000).map(
            lambda n: f"{'a' * (n // 2)}.{material.payload}.{'b' * (n // 2)}"
        ),
    )


def hostile_headers(material: TokenMaterial) -> st.SearchStrategy[str]:
    """A header built here (members, numbers, nesting, duplicates) over the real payload or a
    junk one, with a signature nobody made."""
    payloads = st.sampled_from([material.payload, "e30"]) | random_segments
    return st.builds(
        lambda header, payload, signature: f"{b64url(header.encode())}.{payload}.{signature}",
        header_texts(material),
        payloads,
        random_segments,
    )


def deep_nesting(material: TokenMaterial) -> st.SearchStrategy[str]:
    """Headers nested as deep as fits in 512 characters, and as deep as fits in 8 KiB with a
    short payload and signature: past Python's default recursion limit of 1000."""
    depth = st.integers(min_value=150, max_value=190) | st.integers(min_value=1000, max_value=2700)
    headers = st.one_of(
        st.builds(lambda n: '{"kid":' + nested_arrays(n) + "}", depth),
        st.builds(lambda n: '{"typ":' + nested_arrays(n) + "}", depth),
        st.builds(
            lambda k, n: f'{{"alg":"ES256","kid":"{k}","x":{nested_arrays(n)}}}',
            st.sampled_from(material.kids),
            depth,
        ),
        st.builds(nested_arrays, depth),
    )
    return st.builds(lambda header: f"{b64url(header.encode())}.e30.AA", headers)


def real_kid_with_junk(material: TokenMaterial) -> st.SearchStrategy[str]:
    """Tokens that reach a real key: a header naming a published kid, then a payload or a
    signature that does not belong to it."""
    forged_header = st.builds(
        lambda kid, alg, typ: b64url(compact_json({"typ": typ, "alg": alg, "kid": kid}).encode()),
        st.sampled_from(material.kids),
        st.sampled_from(ALGORITHMS),
        st.sampled_from(TYPES),
    )
    junk_claims = st.dictionaries(st.sampled_from(["iss", "exp", "sub", "aud", "x"]), junk_json)
    return st.one_of(
        # A header of its own: no signature made here verifies under a real key.
        st.builds(
            lambda header, payload, signature: f"{header}.{payload}.{signature}",
            forged_header,
            st.sampled_from([material.payload])
            | junk_claims.map(compact_json).map(str.encode).map(b64url),
            random_segments | st.just("A" * 86) | st.just("A" * 342),
        ),
        # The real header and signature over other claims (a payload that differs).
        st.builds(
            lambda claims: (
                f"{material.header}.{b64url(compact_json(claims).encode())}.{material.signature}"
            ),
            junk_claims,
        ).filter(lambda token: token.split(".")[1] != material.payload),
    )


FAMILIES = (
    wrong_structure,
    bad_encodings,
    wrong_sizes,
    hostile_headers,
    deep_nesting,
    real_kid_with_junk,
)


def malformed_tokens(material: TokenMaterial) -> st.SearchStrategy[str]:
    """Any of the families. The family is drawn first so that each gets a fair share of a
    test's examples: a plain st.one_of over them left deep nesting about one draw in twenty."""
    return st.sampled_from(FAMILIES).flatmap(lambda family: family(material))


# -- feed cursors ------------------------------------------------------------------------------

# The cursor is a revocations.id, a signed 64-bit integer.
LARGEST_CURSOR = 2**63 - 1
NON_ASCII_DIGITS = st.characters(categories=["Nd", "No"]).filter(lambda c: c not in "0123456789")


def is_plain_cursor(text: str) -> bool:
    return re.fullmatch(r"[0-9]{1,19}", text) is not None and int(text) <= LARGEST_CURSOR


junk_feed_cursors = st.one_of(
    st.integers(min_value=LARGEST_CURSOR + 1, max_value=10**40).map(str),  # past bigint
    st.integers(max_value=-1).map(str),
    st.text(NON_ASCII_DIGITS, min_size=1, max_size=4),  # str.isdigit() says yes
    st.builds(
        lambda digits, junk, before: junk + digits if before else digits + junk,
        st.integers(min_value=0, max_value=10**6).map(str),
        st.sampled_from([" ", "+", "-", ".0", "e3", "0x", "_0", "\x00", "\t", "\u0661"]),
        st.booleans(),
    ),
    st.sampled_from(["", "1.0", "1e3", "0x10", "NaN", "Infinity", "0" * 20, "9" * 5000]),
    st.text(max_size=30),
).filter(lambda text: not is_plain_cursor(text))
