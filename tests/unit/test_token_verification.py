"""verify_own_token: what it asks of a token after jose_input has read it, and that every
refusal, whatever the input, is a TokenRejected."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey
from joserfc.jws import JWSRegistry

from authserver.services.keys import ActiveKey, KeySnapshot
from authserver.services.token_verification import TokenRejected, verify_own_token
from tests.hostile_input import TokenMaterial, b64url, compact_json, malformed_tokens

ISSUER = "https://issuer.test"
NOW = 1_750_000_000
KEY = ECKey.generate_key("P-256", private=True)
KID = KEY.thumbprint()


class FixedKeys:
    """The one thing verify_own_token asks of a KeyRing: its snapshot."""

    def __init__(self, *keys: ActiveKey) -> None:
        self._snapshot = KeySnapshot(
            signing=keys[0], jwks_body=b"", jwks_etag="", by_kid={k.kid: k for k in keys}
        )

    def snapshot(self) -> KeySnapshot:
        return self._snapshot


KEYS = FixedKeys(ActiveKey(kid=KID, algorithm="ES256", private_key=KEY))


def sign(header: dict[str, Any], **claims: Any) -> str:
    """Signed with KEY and ES256 whatever the header says, as only the key holder can."""
    body = {"iss": ISSUER, "exp": NOW + 60, **claims}
    signing_input = f"{b64url(compact_json(header).encode())}.{b64url(compact_json(body).encode())}"
    signature = JWSRegistry.algorithms["ES256"].sign(signing_input.encode(), KEY)
    return f"{signing_input}.{b64url(signature)}"


def verify(token: str, typ: str = "at+jwt") -> dict[str, Any]:
    verified = verify_own_token(KEYS, token, issuer=ISSUER, typ=typ, now=NOW)  # type: ignore[arg-type]
    assert verified.key_id == KID
    return verified.claims


OWN_HEADER = {"typ": "at+jwt", "alg": "ES256", "kid": KID}


def test_a_token_signed_as_authserver_signs_is_verified() -> None:
    token = jwt.encode(OWN_HEADER, {"iss": ISSUER, "exp": NOW + 60}, KEY, ["ES256"])

    assert verify(token)["iss"] == ISSUER


def test_the_signing_helper_makes_tokens_that_verify() -> None:
    """The control for the tests below: what they change is what they refuse."""
    assert verify(sign(OWN_HEADER))["exp"] == NOW + 60


def test_a_malformed_token_is_token_rejected() -> None:
    with pytest.raises(TokenRejected, match="malformed"):
        verify(sign(OWN_HEADER) + "=")


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("jku", "https://attacker.example/jwks.json"),
        ("x5u", "https://attacker.example/cert.pem"),
        ("zip", "DEF"),
        ("cty", "JWT"),
        ("exp", 1),
    ],
)
def test_a_header_member_authserver_never_writes_is_refused(member: str, value: Any) -> None:
    # Correctly signed by the real key: only the extra member is wrong.
    token = sign({**OWN_HEADER, member: value})

    with pytest.raises(TokenRejected, match="never writes"):
        verify(token)


def test_a_header_without_kid_is_refused() -> None:
    token = sign({"typ": "at+jwt", "alg": "ES256"})

    with pytest.raises(TokenRejected, match="unknown key"):
        verify(token)


def test_a_kid_that_is_not_published_is_refused() -> None:
    token = sign({**OWN_HEADER, "kid": "not-" + KID})

    with pytest.raises(TokenRejected, match="unknown key"):
        verify(token)


@pytest.mark.parametrize("alg", ["RS256", "HS256", "ES384", "none"])
def test_an_algorithm_other_than_the_keys_is_refused_even_with_a_good_signature(alg: str) -> None:
    # RFC 8725 §3.1: a valid ES256 signature under a header that names another algorithm.
    token = sign({**OWN_HEADER, "alg": alg})

    with pytest.raises(TokenRejected, match="wrong algorithm"):
        verify(token)


@pytest.mark.parametrize("typ", ["JWT", "at+jwt+x", ""])
def test_another_type_is_refused(typ: str) -> None:
    token = sign({**OWN_HEADER, "typ": typ})

    with pytest.raises(TokenRejected, match="wrong type"):
        verify(token)


def test_a_missing_type_is_refused() -> None:
    token = sign({"alg": "ES256", "kid": KID})

    with pytest.raises(TokenRejected, match="wrong type"):
        verify(token)


def test_the_type_compares_case_insensitively() -> None:
    # RFC 7515 §4.1.9: media type names are case-insensitive.
    assert verify(sign({**OWN_HEADER, "typ": "AT+JWT"}))["iss"] == ISSUER


def test_a_signature_from_another_key_under_a_real_kid_is_refused() -> None:
    other = ECKey.generate_key("P-256", private=True)
    token = jwt.encode(OWN_HEADER, {"iss": ISSUER, "exp": NOW + 60}, other, ["ES256"])

    with pytest.raises(TokenRejected, match="bad signature"):
        verify(token)


def test_signed_claims_that_are_not_an_object_are_refused() -> None:
    signing_input = f"{b64url(compact_json(OWN_HEADER).encode())}.{b64url(b'[1]')}"
    signature = JWSRegistry.algorithms["ES256"].sign(signing_input.encode(), KEY)

    with pytest.raises(TokenRejected, match="bad signature"):
        verify(f"{signing_input}.{b64url(signature)}")


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_whatever_arrives_is_verified_or_token_rejected(data: st.DataObject) -> None:
    real = jwt.encode(OWN_HEADER, {"iss": ISSUER, "exp": NOW + 60}, KEY, ["ES256"])
    token = data.draw(malformed_tokens(TokenMaterial.of([KID], real)))

    with pytest.raises(TokenRejected):
        verify(token)
