"""The kit's TokenVerifier against the malformed-JOSE corpus the server is fuzzed with
(``tests/hostile_input.py``): whatever arrives, ``verify`` refuses it with an ``InvalidToken``
subclass, the one exception family a resource server maps to 401. Anything else escaping would
be a 500 in every API that uses the kit."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authserver.resource import InvalidToken, MalformedToken, TokenVerifier
from tests.hostile_input import (
    NUMBER_LITERALS,
    TokenMaterial,
    junk_json,
    malformed_tokens,
    nested_arrays,
)
from tests.resource.support import (
    FakeClock,
    FakeIssuer,
    IssuerKey,
    b64url,
    claims_for,
    mint,
    sign_raw_payload,
)

CORPUS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    # One verifier and issuer serve every example: the JWKS is fetched once, as in production.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@CORPUS
@given(data=st.data())
def test_every_malformed_token_is_refused_as_invalid_token(
    verifier: TokenVerifier,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
    clock: FakeClock,
    data: st.DataObject,
) -> None:
    real = mint(signing_key, issuer.url, clock())
    token = data.draw(malformed_tokens(TokenMaterial.of([signing_key.kid], real)))

    with pytest.raises(InvalidToken) as refused:
        verifier.verify(token)

    assert refused.value.error == "invalid_token"


# -- claims only an issuer could sign ----------------------------------------------------------
# A resource server trusts the issuer's signature, not the issuer's JSON: a buggy or
# compromised issuer must still get an InvalidToken, not a crash, for claims like these.

CLAIM_NAMES = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope", "sid"]


def _claims_with_raw(claims: dict[str, Any], name: str, literal: str) -> bytes:
    """The claims as JSON text with one value replaced by ``literal``, written as is."""
    return json.dumps({**claims, name: "RAW"}).replace('"RAW"', literal).encode()


def signed_claim_payloads(claims: dict[str, Any]) -> st.SearchStrategy[bytes]:
    deep = st.integers(min_value=2, max_value=40) | st.integers(min_value=1000, max_value=2700)
    return st.one_of(
        st.builds(
            lambda name, literal: _claims_with_raw(claims, name, literal),
            st.sampled_from(["exp", "iat", "nbf"]),
            st.sampled_from(NUMBER_LITERALS),
        ),
        st.builds(
            lambda name, n: _claims_with_raw(claims, name, nested_arrays(n)),
            st.sampled_from([*CLAIM_NAMES, "x"]),
            deep,
        ),
        st.builds(
            lambda name, value: json.dumps({**claims, name: value}).encode(),
            st.sampled_from(CLAIM_NAMES),
            junk_json,
        ),
        st.sampled_from([b"[]", b"null", b"1", b'"claims"', b"{", b"\xff\xfe{}"]),
        st.builds(lambda n: nested_arrays(n).encode(), deep),
    )


@CORPUS
@given(data=st.data())
def test_signed_claims_of_any_shape_are_verified_or_refused_as_invalid_token(
    verifier: TokenVerifier,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
    clock: FakeClock,
    data: st.DataObject,
) -> None:
    payload = data.draw(signed_claim_payloads(claims_for(issuer.url, clock())))
    token = sign_raw_payload(signing_key, payload)

    try:
        verified = verifier.verify(token)
    except InvalidToken:
        return
    # What passes has the types the kit promises.
    assert isinstance(verified.expires_at, int)
    assert isinstance(verified.issued_at, int)
    assert verified.expires_at > clock() - verifier.leeway
    assert all(isinstance(audience, str) for audience in verified.audience)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "1" + "0" * 400])
@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
def test_a_numeric_date_that_is_no_finite_number_is_malformed(
    verifier: TokenVerifier,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
    clock: FakeClock,
    name: str,
    literal: str,
) -> None:
    """Once a ValueError or OverflowError out of verify (a 500), or for nbf NaN, a token
    accepted though no comparison with its nbf could be true."""
    payload = _claims_with_raw(claims_for(issuer.url, clock()), name, literal)

    with pytest.raises(MalformedToken):
        verifier.verify(sign_raw_payload(signing_key, payload))


@pytest.mark.parametrize("where", ["header", "claims"])
def test_nesting_past_the_recursion_limit_is_malformed(
    verifier: TokenVerifier,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
    clock: FakeClock,
    where: str,
) -> None:
    """Once a RecursionError out of verify: unsigned in the header, signed in the claims."""
    deep = nested_arrays(2500)
    if where == "header":
        header = '{"kid":' + deep + "}"
        token = f"{b64url(header.encode())}.e30.AA"
    else:
        claims = claims_for(issuer.url, clock())
        token = sign_raw_payload(signing_key, _claims_with_raw(claims, "x", deep))

    with pytest.raises(MalformedToken):
        verifier.verify(token)
