"""The reader of untrusted compact JWS: each rule, and an attempt to get past it."""

from __future__ import annotations

import json
import sys
import traceback

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey

from authserver.services.jose_input import (
    MAX_COMPACT_JWS_LENGTH,
    MAX_HEADER_SEGMENT_LENGTH,
    MAX_SAFE_INTEGER,
    CompactJws,
    MalformedJws,
    parse_compact_jws,
)
from tests.hostile_input import NOT_BASE64URL, TokenMaterial, b64url, malformed_tokens

KEY = ECKey.generate_key("P-256", private=True)
KID = KEY.thumbprint()
HEADER = {"typ": "at+jwt", "alg": "ES256", "kid": KID}
TOKEN = jwt.encode(HEADER, {"iss": "https://issuer.test", "exp": 1}, KEY, ["ES256"])
PAYLOAD, SIGNATURE = TOKEN.split(".")[1:]
PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None)


def with_header(text: str | bytes) -> str:
    """TOKEN's payload and signature under another header, given as JSON text or raw bytes."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return f"{b64url(raw)}.{PAYLOAD}.{SIGNATURE}"


def refusal(token: object) -> str:
    with pytest.raises(MalformedJws) as refused:
        parse_compact_jws(token)  # type: ignore[arg-type]
    return refused.value.reason


# -- what it accepts ---------------------------------------------------------------------------


def test_a_token_authserver_writes_is_read_into_its_header() -> None:
    parsed = parse_compact_jws(TOKEN)

    assert parsed == CompactJws(header=HEADER, algorithm="ES256", key_id=KID, media_type="at+jwt")


def test_members_it_does_not_read_are_left_for_the_verifier_to_judge() -> None:
    parsed = parse_compact_jws(with_header('{"alg":"ES256","jku":"https://attacker.example"}'))

    assert parsed.header["jku"] == "https://attacker.example"
    assert parsed.key_id is None
    assert parsed.media_type is None


# -- size and structure ------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, b"a.b.c", 5, ""], ids=repr)
def test_a_token_that_is_not_a_non_empty_string_is_refused(token: object) -> None:
    assert refusal(token) == "empty"


def test_a_token_over_8_kib_is_refused_before_it_is_split() -> None:
    # 8 KiB of dots would be 8193 empty segments if it were split first.
    assert refusal("." * (MAX_COMPACT_JWS_LENGTH + 1)) == "too large"


def test_a_token_of_exactly_8_kib_is_not_refused_for_its_size() -> None:
    header = TOKEN.split(".")[0]
    # The parser checks no signature: choose its length so the payload's is valid base64url.
    signature = next(
        "A" * n for n in (2, 3) if (MAX_COMPACT_JWS_LENGTH - len(header) - n - 2) % 4 != 1
    )
    payload = "A" * (MAX_COMPACT_JWS_LENGTH - len(header) - len(signature) - 2)
    token = f"{header}.{payload}.{signature}"
    assert len(token) == MAX_COMPACT_JWS_LENGTH

    assert parse_compact_jws(token).key_id == KID


@pytest.mark.parametrize("count", [1, 2, 4, 5])
def test_anything_but_three_segments_is_refused(count: int) -> None:
    token = ".".join([*TOKEN.split("."), SIGNATURE, SIGNATURE][:count])

    assert refusal(token) == "not three segments"


@pytest.mark.parametrize("position", [0, 1, 2])
def test_an_empty_segment_is_refused(position: int) -> None:
    segments = TOKEN.split(".")
    segments[position] = ""

    assert refusal(".".join(segments)) == "not base64url"


# -- base64url ---------------------------------------------------------------------------------


@pytest.mark.parametrize("position", [0, 1, 2])
@pytest.mark.parametrize("char", NOT_BASE64URL, ids=repr)
def test_a_character_outside_the_base64url_alphabet_is_refused(position: int, char: str) -> None:
    segments = TOKEN.split(".")
    segments[position] = segments[position][:4] + char + segments[position][4:]

    assert refusal(".".join(segments)) == "not base64url"


@pytest.mark.parametrize("position", [0, 1, 2])
def test_padding_is_refused(position: int) -> None:
    segments = TOKEN.split(".")
    segments[position] += "=" * (-len(segments[position]) % 4 or 4)

    assert refusal(".".join(segments)) == "not base64url"


@pytest.mark.parametrize("position", [0, 1, 2])
def test_a_segment_of_4n_plus_1_characters_is_refused(position: int) -> None:
    segments = TOKEN.split(".")
    segments[position] += "A" * ((1 - len(segments[position])) % 4 or 4)

    assert refusal(".".join(segments)) == "not base64url"


def test_a_last_character_with_bits_that_encode_nothing_is_refused() -> None:
    # 86 characters for 64 bytes: the last one's four low bits must be zero (RFC 4648 §3.5).
    assert len(SIGNATURE) % 4 == 2
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(SIGNATURE[-1])
    same_bytes = SIGNATURE[:-1] + alphabet[last | 0b0001]
    assert same_bytes != SIGNATURE

    assert refusal(f"{TOKEN.rsplit('.', 1)[0]}.{same_bytes}") == "not canonical base64url"


# -- the header's size and encoding ------------------------------------------------------------


def _header_segment_of_length(length: int) -> str:
    """A header as authserver writes it, padded with an unread member to ``length``."""
    filler = ""
    segment = b64url(json.dumps({**HEADER, "x": filler}).encode())
    while len(segment) < length:
        filler += "a"
        segment = b64url(json.dumps({**HEADER, "x": filler}).encode())
    return segment


def test_a_header_segment_over_512_characters_is_refused() -> None:
    segment = _header_segment_of_length(MAX_HEADER_SEGMENT_LENGTH + 1)

    assert refusal(f"{segment}.{PAYLOAD}.{SIGNATURE}") == "header too large"


def test_a_header_segment_of_512_characters_is_read() -> None:
    segment = _header_segment_of_length(MAX_HEADER_SEGMENT_LENGTH - 3)
    assert len(segment) <= MAX_HEADER_SEGMENT_LENGTH

    assert parse_compact_jws(f"{segment}.{PAYLOAD}.{SIGNATURE}").key_id == KID


@pytest.mark.parametrize(
    "raw",
    [
        '{"alg":"ES256"}'.encode("utf-16"),
        '{"alg":"ES256"}'.encode("utf-32"),
        b'{"alg":"ES256","kid":"\xff"}',
        b'{"alg":"ES256","kid":"\xc0\xaf"}',  # an overlong "/"
        b'{"alg":"ES256","kid":"\xed\xa0\x80"}',  # an encoded surrogate
    ],
    ids=["utf-16", "utf-32", "0xff", "overlong", "surrogate"],
)
def test_a_header_that_is_not_utf8_is_refused(raw: bytes) -> None:
    assert refusal(with_header(raw)) == "header not UTF-8"


# -- the header's JSON -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"alg":"ES256","x":[]}',
        '{"alg":"ES256","x":{}}',
        '{"alg":"ES256","crit":["exp"]}',
        '[{"alg":"ES256"}]',
    ],
)
def test_a_header_nested_past_one_level_is_refused(text: str) -> None:
    assert refusal(with_header(text)) == "header nested"


# As deep as fits in a header segment of 512 characters.
DEEPEST = 190


def test_deep_nesting_is_refused_before_json_could_recurse() -> None:
    token = with_header("[" * DEEPEST + "]" * DEEPEST)
    # Little stack to spare: json.loads on that many levels would raise RecursionError here.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(traceback.extract_stack()) + 40)
    try:
        with pytest.raises(MalformedJws) as refused:
            parse_compact_jws(token)
    finally:
        sys.setrecursionlimit(limit)

    assert refused.value.reason == "header nested"


def test_the_same_nesting_would_make_json_recurse_past_that_limit() -> None:
    """The control for the test above: without the check, json.loads fails there."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(traceback.extract_stack()) + 40)
    try:
        with pytest.raises(RecursionError):
            json.loads("[" * DEEPEST + "]" * DEEPEST)
    finally:
        sys.setrecursionlimit(limit)


def test_brackets_inside_a_string_are_not_nesting() -> None:
    parsed = parse_compact_jws(with_header('{"alg":"ES256","kid":"[[{\\"{]"}'))

    assert parsed.key_id == '[[{"{]'


@pytest.mark.parametrize(
    "text",
    ['{"alg":"ES256",}', "{'alg':'ES256'}", '{"alg":"ES256"', '{"alg":"ES256"}{}', "\ufeff{}"],
)
def test_a_header_that_is_not_json_is_refused(text: str) -> None:
    assert refusal(with_header(text)) == "header not JSON"


@pytest.mark.parametrize("text", ['"alg"', "1", "null", "true"])
def test_a_header_that_is_not_an_object_is_refused(text: str) -> None:
    assert refusal(with_header(text)) == "header not an object"


@pytest.mark.parametrize(
    "text",
    [
        f'{{"alg":"ES256","kid":"{KID}","kid":"{KID}"}}',
        '{"alg":"none","typ":"at+jwt","alg":"ES256"}',
    ],
    ids=["kid twice", "alg twice"],
)
def test_a_repeated_member_is_refused(text: str) -> None:
    # RFC 7515 §4 also allows keeping the last member; then one parser would read "ES256"
    # where another, keeping the first, reads "none".
    assert refusal(with_header(text)) == "header member repeated"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1E+400"])
def test_a_number_that_is_not_finite_is_refused(literal: str) -> None:
    assert refusal(with_header(f'{{"alg":"ES256","x":{literal}}}')) == "header number not finite"


@pytest.mark.parametrize("value", [MAX_SAFE_INTEGER + 1, -(MAX_SAFE_INTEGER + 1), 10**100])
def test_an_integer_past_2_to_the_53_is_refused(value: int) -> None:
    assert refusal(with_header(f'{{"alg":"ES256","x":{value}}}')) == "header number too large"


def test_an_integer_within_2_to_the_53_is_read() -> None:
    parsed = parse_compact_jws(with_header(f'{{"alg":"ES256","x":{MAX_SAFE_INTEGER}}}'))

    assert parsed.header["x"] == MAX_SAFE_INTEGER


@pytest.mark.parametrize(
    "text",
    ['{"alg":"ES256","kid":"\\ud800"}', '{"alg":"ES256","\\udfff":1}'],
    ids=["in a value", "in a name"],
)
def test_a_lone_surrogate_is_refused(text: str) -> None:
    assert refusal(with_header(text)) == "header not Unicode text"


# -- the header's members ----------------------------------------------------------------------


@pytest.mark.parametrize("crit", ['"exp"', "5", "null", '"b64"'])
def test_crit_is_refused_whatever_it_holds(crit: str) -> None:
    # RFC 7515 §4.1.11: a critical extension not understood must be refused; none is.
    text = f'{{"alg":"ES256","kid":"{KID}","crit":{crit}}}'

    assert refusal(with_header(text)) == "header extension refused"


@pytest.mark.parametrize("b64", ["false", "true"])
def test_b64_is_refused(b64: str) -> None:
    assert refusal(with_header(f'{{"alg":"ES256","b64":{b64}}}')) == "header extension refused"


def test_a_header_without_alg_is_refused() -> None:
    # RFC 7515 §4.1.1: alg is required.
    assert refusal(with_header(f'{{"kid":"{KID}","typ":"at+jwt"}}')) == "header member missing"


@pytest.mark.parametrize("member", ["alg", "kid", "typ", "cty"])
@pytest.mark.parametrize("value", ["5", "null", "true", '""', "1.5"])
def test_a_string_member_of_another_type_is_refused(member: str, value: str) -> None:
    text = json.dumps({**HEADER, member: "VALUE"}).replace('"VALUE"', value)

    assert refusal(with_header(text)) == "header member of the wrong type"


# -- whatever arrives --------------------------------------------------------------------------

REASONS = {
    "empty",
    "too large",
    "not three segments",
    "header too large",
    "not base64url",
    "not canonical base64url",
    "header not UTF-8",
    "header nested",
    "header not JSON",
    "header not an object",
    "header not Unicode text",
    "header member repeated",
    "header number not finite",
    "header number too large",
    "header extension refused",
    "header member of the wrong type",
    "header member missing",
}


def _read_or_refuse(token: str) -> CompactJws | None:
    """The parse, or None for a refusal with one of the fixed reasons; anything else raises."""
    try:
        return parse_compact_jws(token)
    except MalformedJws as refused:
        reason = refused.reason
    assert reason in REASONS
    return None


@PROPERTY
@given(token=st.text(max_size=200) | st.text(alphabet="ABab09-_.=", max_size=200))
def test_any_text_is_read_or_refused_with_a_fixed_reason(token: str) -> None:
    _read_or_refuse(token)


@settings(PROPERTY, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_the_malformed_jose_corpus_is_read_or_refused_with_a_fixed_reason(
    data: st.DataObject,
) -> None:
    token = data.draw(malformed_tokens(TokenMaterial.of([KID], TOKEN)))

    parsed = _read_or_refuse(token)

    if parsed is not None:
        # What passes holds only what the verifier may read: strings where it reads them.
        assert isinstance(parsed.algorithm, str)
        assert parsed.key_id is None or isinstance(parsed.key_id, str)
        assert parsed.media_type is None or isinstance(parsed.media_type, str)
