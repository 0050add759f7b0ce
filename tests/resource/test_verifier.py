"""TokenVerifier against a real HTTP issuer on 127.0.0.1: what it accepts, what it refuses, and
how often it asks the issuer for keys."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor

import pytest

from authserver.resource import (
    BadSignature,
    InvalidToken,
    JWKSUnavailable,
    MalformedToken,
    TokenExpired,
    TokenNotYetValid,
    TokenVerifier,
    UnknownKey,
    WrongAudience,
    WrongIssuer,
    WrongType,
)
from tests.resource.support import (
    AUDIENCE,
    FakeClock,
    FakeIssuer,
    IssuerKey,
    b64url,
    b64url_json,
    claims_for,
    ec_key,
    forge,
    hs256_with_public_pem,
    mint,
    rsa_key,
    sign_raw_payload,
)

METADATA = "/.well-known/oauth-authorization-server"
JWKS = "/.well-known/jwks.json"


@pytest.fixture
def other_server(clock: FakeClock) -> Iterator[FakeIssuer]:
    """A second local server an attacker would like the verifier to fetch from."""
    server = FakeIssuer(clock)
    yield server
    server.stop()


# -- accepted ------------------------------------------------------------------------------


def test_good_token_verifies_into_its_claims(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = mint(signing_key, issuer.url, clock(), jti="token-1", sub="user-7")

    verified = verifier.verify(token)

    assert verified.subject == "user-7"
    assert verified.client_id == "client-1"
    assert verified.scope == frozenset({"read", "write"})
    assert verified.audience == (AUDIENCE,)
    assert verified.issued_at == int(clock())
    assert verified.expires_at == int(clock()) + 300
    assert verified.jti == "token-1"
    assert verified.session_id == "family-1"
    assert verified.claims["iss"] == issuer.url
    assert verified.has_scope("read")
    assert not verified.has_scope("admin")


def test_rs256_key_verifies_with_its_own_algorithm(
    verifier: TokenVerifier, issuer: FakeIssuer, clock: FakeClock
) -> None:
    key = rsa_key()
    issuer.publish(key)

    assert verifier.verify(mint(key, issuer.url, clock())).subject == "user-1"


def test_nothing_is_fetched_before_the_first_verification(
    issuer: FakeIssuer, clock: FakeClock
) -> None:
    TokenVerifier(issuer.url, AUDIENCE, clock=clock)

    assert issuer.requests == []


def test_keys_are_fetched_once_for_many_tokens(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    for _ in range(20):
        verifier.verify(mint(signing_key, issuer.url, clock()))

    assert len(issuer.requests_to(METADATA)) == 1
    assert len(issuer.requests_to(JWKS)) == 1


def test_concurrent_first_verifications_fetch_the_keys_once(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    tokens = [mint(signing_key, issuer.url, clock()) for _ in range(16)]
    start = threading.Barrier(len(tokens))

    def verify(token: str) -> str:
        start.wait()
        return verifier.verify(token).subject

    with ThreadPoolExecutor(max_workers=len(tokens)) as pool:
        subjects = list(pool.map(verify, tokens))

    assert subjects == ["user-1"] * len(tokens)
    assert len(issuer.requests_to(METADATA)) == 1
    assert len(issuer.requests_to(JWKS)) == 1


def test_audience_list_containing_ours_is_accepted(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = mint(signing_key, issuer.url, clock(), aud=["https://other.test", AUDIENCE])

    assert verifier.verify(token).audience == ("https://other.test", AUDIENCE)


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+JWT"])
def test_access_token_type_is_accepted_in_either_spelling(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock, typ: str
) -> None:
    token = mint(signing_key, issuer.url, clock(), header={"typ": typ})

    assert verifier.verify(token).subject == "user-1"


def test_token_without_scope_or_sid_verifies_with_empty_values(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    verified = verifier.verify(mint(signing_key, issuer.url, clock(), scope=None, sid=None))

    assert verified.scope == frozenset()
    assert verified.session_id is None


# -- forged algorithms -----------------------------------------------------------------------


def test_alg_none_without_signature_is_rejected(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = forge(
        {"typ": "at+jwt", "alg": "none", "kid": signing_key.kid}, claims_for(issuer.url, clock())
    )

    with pytest.raises(MalformedToken):
        verifier.verify(token)


def test_alg_none_with_a_signature_and_a_real_kid_is_rejected(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = forge(
        {"typ": "at+jwt", "alg": "none", "kid": signing_key.kid},
        claims_for(issuer.url, clock()),
        signature=b"anything",
    )

    with pytest.raises(BadSignature):
        verifier.verify(token)


@pytest.mark.parametrize("make_key", [ec_key, rsa_key], ids=["ES256", "RS256"])
def test_hs256_signed_with_the_public_key_pem_is_rejected(
    verifier: TokenVerifier, issuer: FakeIssuer, clock: FakeClock, make_key: type[IssuerKey]
) -> None:
    key = make_key()
    issuer.publish(key)

    with pytest.raises(BadSignature):
        verifier.verify(hs256_with_public_pem(key, issuer.url, clock()))


def test_algorithm_comes_from_the_key_not_the_header(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    """Header alg RS256 and the kid of the EC key: an RS256 signature by a key the issuer
    also publishes, so only the key/algorithm binding stands in the way."""
    attacker_visible_rsa = rsa_key()
    issuer.publish(attacker_visible_rsa)
    token = mint(attacker_visible_rsa, issuer.url, clock(), header={"kid": signing_key.kid})

    with pytest.raises(BadSignature):
        verifier.verify(token)


def test_key_whose_algorithm_is_not_allowed_is_not_used(
    issuer: FakeIssuer, clock: FakeClock
) -> None:
    key = rsa_key()
    issuer.publish(key)
    es256_only = TokenVerifier(issuer.url, AUDIENCE, clock=clock, algorithms=["ES256"])

    with pytest.raises(UnknownKey):
        es256_only.verify(mint(key, issuer.url, clock()))


def test_key_published_without_alg_is_not_used(
    verifier: TokenVerifier, issuer: FakeIssuer, clock: FakeClock
) -> None:
    key = ec_key()
    issuer.jwks.append(key.public_jwk(alg=None))

    with pytest.raises(UnknownKey):
        verifier.verify(mint(key, issuer.url, clock()))


def test_key_whose_alg_does_not_fit_its_type_is_not_used(
    verifier: TokenVerifier, issuer: FakeIssuer, clock: FakeClock
) -> None:
    key = ec_key()
    issuer.jwks.append(key.public_jwk(alg="RS256"))

    with pytest.raises(UnknownKey):
        verifier.verify(mint(key, issuer.url, clock()))


@pytest.mark.parametrize("algorithms", [["HS256"], ["none"], ["ES256", "HS512"], []])
def test_symmetric_or_no_algorithms_cannot_be_allowed(
    issuer: FakeIssuer, algorithms: list[str]
) -> None:
    with pytest.raises(ValueError, match="algorithms"):
        TokenVerifier(issuer.url, AUDIENCE, algorithms=algorithms)


# -- unknown kids and rate limits ------------------------------------------------------------


def test_flood_of_unknown_kids_refetches_at_most_once_per_interval(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    verifier.verify(mint(signing_key, issuer.url, clock()))
    assert len(issuer.requests_to(JWKS)) == 1
    attacker = ec_key()
    clock.advance(31)  # past min_refetch_interval: one refetch is allowed now

    for _ in range(1000):
        token = mint(attacker, issuer.url, clock(), header={"kid": secrets.token_urlsafe(16)})
        with pytest.raises(UnknownKey):
            verifier.verify(token)
        clock.advance(0.01)  # the flood lasts 10 s, within the 30 s interval

    assert len(issuer.requests_to(JWKS)) == 2
    assert len(issuer.requests_to(METADATA)) == 1
    # The good key was never lost along the way.
    assert verifier.verify(mint(signing_key, issuer.url, clock())).subject == "user-1"


def test_unknown_kid_right_after_a_fetch_does_not_refetch(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    verifier.verify(mint(signing_key, issuer.url, clock()))

    with pytest.raises(UnknownKey):
        verifier.verify(mint(ec_key(), issuer.url, clock()))

    assert len(issuer.requests_to(JWKS)) == 1


def test_token_without_kid_is_rejected_without_a_fetch(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = forge({"typ": "at+jwt", "alg": "ES256"}, claims_for(issuer.url, clock()), b"sig")

    with pytest.raises(UnknownKey):
        verifier.verify(token)

    assert issuer.requests == []


# -- claims ------------------------------------------------------------------------------------


def test_token_from_another_issuer_is_rejected(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = mint(signing_key, "https://evil.example", clock())

    with pytest.raises(WrongIssuer):
        verifier.verify(token)


def test_issuer_must_match_exactly(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    with pytest.raises(WrongIssuer):
        verifier.verify(mint(signing_key, issuer.url + "/", clock()))


@pytest.mark.parametrize(
    "aud", ["https://other.test", ["https://other.test"], [], None, 42], ids=repr
)
def test_token_for_another_audience_is_rejected(
    verifier: TokenVerifier,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
    clock: FakeClock,
    aud: object,
) -> None:
    token = mint(signing_key, issuer.url, clock(), aud=aud)

    with pytest.raises(WrongAudience):
        verifier.verify(token)


def test_token_expired_beyond_leeway_is_rejected(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = mint(signing_key, issuer.url, clock(), exp=int(clock()) - 30)

    with pytest.raises(TokenExpired):
        verifier.verify(token)


def test_token_expired_within_leeway_is_accepted(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = mint(signing_key, issuer.url, clock(), iat=int(clock()) - 300, exp=int(clock()) - 29)

    assert verifier.verify(token).subject == "user-1"


def test_token_expires_as_the_clock_moves(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = mint(signing_key, issuer.url, clock())
    verifier.verify(token)
    clock.advance(300 + 30)

    with pytest.raises(TokenExpired):
        verifier.verify(token)


def test_token_not_before_the_future_is_rejected(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = mint(signing_key, issuer.url, clock(), nbf=int(clock()) + 31)

    with pytest.raises(TokenNotYetValid):
        verifier.verify(token)


def test_token_not_before_within_leeway_is_accepted(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = mint(signing_key, issuer.url, clock(), nbf=int(clock()) + 29)

    assert verifier.verify(token).subject == "user-1"


def test_token_issued_in_the_future_is_rejected(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = mint(signing_key, issuer.url, clock(), iat=int(clock()) + 120)

    with pytest.raises(TokenNotYetValid):
        verifier.verify(token)


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "client_id", "jti"])
def test_token_missing_a_required_claim_is_rejected(
    verifier: TokenVerifier,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
    clock: FakeClock,
    claim: str,
) -> None:
    token = mint(signing_key, issuer.url, clock(), **{claim: None})

    with pytest.raises(MalformedToken, match=claim):
        verifier.verify(token)


@pytest.mark.parametrize(
    ("claim", "value"),
    [("exp", "tomorrow"), ("exp", True), ("iat", [1]), ("nbf", "now"), ("scope", ["read"])],
)
def test_token_with_a_claim_of_the_wrong_type_is_rejected(
    verifier: TokenVerifier,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
    clock: FakeClock,
    claim: str,
    value: object,
) -> None:
    token = mint(signing_key, issuer.url, clock(), **{claim: value})

    with pytest.raises(MalformedToken):
        verifier.verify(token)


# -- the header ------------------------------------------------------------------------------


def test_id_token_typ_jwt_is_not_accepted_as_an_access_token(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    """Signed by the right key, for the right audience: only the type tells them apart."""
    id_token = mint(signing_key, issuer.url, clock(), header={"typ": "JWT"}, nonce="n-0S6_WzA2Mj")

    with pytest.raises(WrongType):
        verifier.verify(id_token)


def test_token_without_typ_is_rejected(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = forge({"alg": "ES256", "kid": signing_key.kid}, claims_for(issuer.url, clock()), b"s")

    with pytest.raises(WrongType):
        verifier.verify(token)


def test_critical_header_extension_is_rejected(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = forge(
        {"typ": "at+jwt", "alg": "ES256", "kid": signing_key.kid, "crit": ["exp"], "exp": 1},
        claims_for(issuer.url, clock()),
        b"s",
    )

    with pytest.raises(MalformedToken):
        verifier.verify(token)


def test_tampered_payload_is_rejected(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    header, _, signature = mint(signing_key, issuer.url, clock()).split(".")
    raised = b64url_json(claims_for(issuer.url, clock(), scope="read write admin"))

    with pytest.raises(BadSignature):
        verifier.verify(f"{header}.{raised}.{signature}")


def test_signature_from_another_key_with_the_issuers_kid_is_rejected(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = mint(ec_key(), issuer.url, clock(), header={"kid": signing_key.kid})

    with pytest.raises(BadSignature):
        verifier.verify(token)


@pytest.mark.parametrize("member", ["jku", "x5u"])
def test_key_url_in_the_header_is_never_fetched(
    verifier: TokenVerifier,
    issuer: FakeIssuer,
    other_server: FakeIssuer,
    clock: FakeClock,
    member: str,
) -> None:
    attacker = ec_key()
    other_server.publish(attacker)
    token = mint(
        attacker, issuer.url, clock(), header={member: other_server.url + "/.well-known/jwks.json"}
    )

    with pytest.raises(UnknownKey):
        verifier.verify(token)

    assert other_server.requests == []


def test_key_embedded_in_the_header_is_never_trusted(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    attacker = ec_key()
    for kid in (attacker.kid, signing_key.kid):
        token = mint(
            attacker, issuer.url, clock(), header={"kid": kid, "jwk": attacker.public_jwk()}
        )
        with pytest.raises((UnknownKey, BadSignature)):
            verifier.verify(token)


# -- shapes --------------------------------------------------------------------------------------


def test_megabyte_token_is_refused_before_parsing(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    """Parsing would fail on the header ("!" is not base64url) or fetch keys; the answer is
    "too large" instead, and no key is fetched: the length is checked before anything else.
    (How long a check takes is for a benchmark, not for a test on a busy machine.)"""
    huge = "!" * 1024 * 1024 + "." + "a" * 10 + "." + "b" * 10

    for _ in range(1000):
        with pytest.raises(MalformedToken, match="too large"):
            verifier.verify(huge)

    assert issuer.requests == []


def test_token_just_over_8_kib_is_refused(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = mint(signing_key, issuer.url, clock(), padding="x" * 8192)

    with pytest.raises(MalformedToken, match="too large"):
        verifier.verify(token)
    assert issuer.requests == []


_HEADER = b64url_json({"typ": "at+jwt", "alg": "ES256", "kid": "k"})
_PAYLOAD = b64url_json({"sub": "x"})


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-jwt",
        f"{_HEADER}.{_PAYLOAD}",
        f"{_HEADER}.{_PAYLOAD}.sig.extra",
        f"{_HEADER}..sig",
        f".{_PAYLOAD}.sig",
        "..",
        f"{_HEADER}.{_PAYLOAD}.c2ln+/=",
        f"{_HEADER} .{_PAYLOAD}.sig",
        f"{_HEADER}.{_PAYLOAD}.sïg",
        f"{b64url(b'not json')}.{_PAYLOAD}.sig",
        f"{b64url_json(['a', 'list'])}.{_PAYLOAD}.sig",
        f"{b64url(bytes([0xFF, 0xFE]))}.{_PAYLOAD}.sig",
        "a.b.c",
    ],
    ids=lambda token: repr(token[:24]),
)
def test_malformed_token_is_rejected(
    verifier: TokenVerifier, issuer: FakeIssuer, token: str
) -> None:
    with pytest.raises(MalformedToken):
        verifier.verify(token)

    assert issuer.requests == []


def test_signed_payload_that_is_not_json_is_rejected(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey
) -> None:
    with pytest.raises(MalformedToken):
        verifier.verify(sign_raw_payload(signing_key, b"not json at all"))


def test_non_string_token_is_rejected(verifier: TokenVerifier) -> None:
    with pytest.raises(MalformedToken):
        verifier.verify(b"a.b.c")  # type: ignore[arg-type]


def test_errors_carry_invalid_token_and_never_the_token(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    refused = [
        mint(signing_key, issuer.url, clock(), aud="https://other.test"),
        mint(signing_key, "https://evil.example", clock()),
        mint(signing_key, issuer.url, clock(), exp=int(clock()) - 100),
        mint(signing_key, issuer.url, clock(), header={"typ": "JWT"}),
        mint(ec_key(), issuer.url, clock()),
        hs256_with_public_pem(signing_key, issuer.url, clock()),
    ]
    for token in refused:
        with pytest.raises(InvalidToken) as caught:
            verifier.verify(token)
        error = caught.value
        assert error.error == "invalid_token"
        for segment in token.split("."):
            assert segment not in error.description
            assert segment not in str(error)
            assert segment not in repr(error)


# -- the JWKS cache ----------------------------------------------------------------------------


def test_key_rotation_while_running(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    old_token = mint(signing_key, issuer.url, clock())
    verifier.verify(old_token)
    clock.advance(60)  # the JWKS is still fresh (max-age 300), the refetch limit has passed

    new_key = ec_key()
    issuer.publish(new_key)  # authserver keeps the retired key published beside the new one
    new_token = mint(new_key, issuer.url, clock())

    assert verifier.verify(new_token).subject == "user-1"
    assert verifier.verify(old_token).subject == "user-1"
    assert len(issuer.requests_to(JWKS)) == 2


def test_key_removed_from_the_jwks_stops_verifying_after_a_refetch(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = mint(signing_key, issuer.url, clock(), exp=int(clock()) + 3600)
    verifier.verify(token)
    issuer.jwks.clear()
    issuer.publish(ec_key())
    clock.advance(301)

    with pytest.raises(UnknownKey):
        verifier.verify(token)


def test_cache_control_max_age_is_honoured(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    issuer.jwks_cache_control = "public, max-age=120"
    verifier.verify(mint(signing_key, issuer.url, clock()))

    clock.advance(119)
    verifier.verify(mint(signing_key, issuer.url, clock()))
    assert len(issuer.requests_to(JWKS)) == 1

    clock.advance(2)
    verifier.verify(mint(signing_key, issuer.url, clock()))
    assert len(issuer.requests_to(JWKS)) == 2


def test_stale_refetch_is_conditional_and_a_304_keeps_the_keys(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    issuer.jwks_cache_control = "max-age=60"
    verifier.verify(mint(signing_key, issuer.url, clock()))
    first_etag = next(iter(issuer.requests_to(JWKS)))
    assert "if-none-match" not in first_etag.headers

    clock.advance(61)
    verifier.verify(mint(signing_key, issuer.url, clock()))
    clock.advance(59)  # the 304 renewed the max-age
    verifier.verify(mint(signing_key, issuer.url, clock()))

    fetches = issuer.requests_to(JWKS)
    assert len(fetches) == 2
    assert fetches[1].headers["if-none-match"].startswith('"')


def test_jwks_without_cache_control_is_kept_for_the_default_time(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    issuer.jwks_cache_control = None
    verifier.verify(mint(signing_key, issuer.url, clock()))
    clock.advance(299)
    verifier.verify(mint(signing_key, issuer.url, clock()))
    assert len(issuer.requests_to(JWKS)) == 1
    clock.advance(2)
    verifier.verify(mint(signing_key, issuer.url, clock()))
    assert len(issuer.requests_to(JWKS)) == 2


@pytest.mark.parametrize("cache_control", ["no-cache", "no-store", "max-age=0"])
def test_uncacheable_jwks_is_refetched_at_most_once_per_interval(
    verifier: TokenVerifier,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
    clock: FakeClock,
    cache_control: str,
) -> None:
    issuer.jwks_cache_control = cache_control
    verifier.verify(mint(signing_key, issuer.url, clock()))
    clock.advance(29)
    verifier.verify(mint(signing_key, issuer.url, clock()))
    assert len(issuer.requests_to(JWKS)) == 1

    clock.advance(2)
    verifier.verify(mint(signing_key, issuer.url, clock()))
    assert len(issuer.requests_to(JWKS)) == 2


def test_clock_going_back_does_not_block_refetches(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    verifier.verify(mint(signing_key, issuer.url, clock()))
    clock.advance(-3600)  # the host clock is corrected backwards
    new_key = ec_key()
    issuer.publish(new_key)

    assert verifier.verify(mint(new_key, issuer.url, clock())).subject == "user-1"


def test_jwks_errors_after_a_first_fetch_keep_verification_working(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = mint(signing_key, issuer.url, clock(), exp=int(clock()) + 3600)
    verifier.verify(token)
    issuer.jwks_status = 503

    clock.advance(301)  # stale: a refetch is tried, and fails
    assert verifier.verify(token).subject == "user-1"
    for _ in range(50):  # and is not retried on every request
        verifier.verify(token)
    assert len(issuer.requests_to(JWKS)) == 2


def test_issuer_gone_after_a_first_fetch_keeps_verification_working(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = mint(signing_key, issuer.url, clock(), exp=int(clock()) + 3600)
    verifier.verify(token)
    issuer.stop()  # connections are refused from now on

    clock.advance(301)
    assert verifier.verify(token).subject == "user-1"
    clock.advance(600)
    assert verifier.verify(token).subject == "user-1"


def test_no_keys_at_all_is_jwks_unavailable_not_invalid_token(
    issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    verifier = TokenVerifier(issuer.url, AUDIENCE, clock=clock)
    issuer.stop()

    with pytest.raises(JWKSUnavailable):
        verifier.verify(mint(signing_key, issuer.url, clock()))


def test_unavailable_issuer_is_not_hammered_and_recovery_is_picked_up(
    issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    verifier = TokenVerifier(issuer.url, AUDIENCE, clock=clock)
    issuer.jwks_status = 500
    token = mint(signing_key, issuer.url, clock(), exp=int(clock()) + 3600)
    for _ in range(20):
        with pytest.raises(JWKSUnavailable):
            verifier.verify(token)
    assert len(issuer.requests_to(JWKS)) == 1

    issuer.jwks_status = 200
    clock.advance(31)
    assert verifier.verify(token).subject == "user-1"


def test_metadata_naming_another_issuer_is_not_trusted(
    issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    """RFC 8414 §3.3: a metadata document for someone else gives no keys."""
    issuer.metadata_issuer = "https://evil.example"
    verifier = TokenVerifier(issuer.url, AUDIENCE, clock=clock)

    with pytest.raises(JWKSUnavailable):
        verifier.verify(mint(signing_key, issuer.url, clock()))
    assert issuer.requests_to(JWKS) == []


def test_one_unusable_key_in_the_jwks_does_not_hide_the_others(
    verifier: TokenVerifier, issuer: FakeIssuer, clock: FakeClock
) -> None:
    good = ec_key()
    issuer.jwks.append({"kty": "EC", "kid": "broken", "alg": "ES256", "crv": "P-256", "x": "AA"})
    issuer.jwks.append({"kty": "oct", "kid": "shared", "alg": "HS256", "k": "c2VjcmV0"})
    issuer.publish(good)

    assert verifier.verify(mint(good, issuer.url, clock())).subject == "user-1"


def test_an_issuer_reply_nested_past_the_recursion_limit_is_jwks_unavailable(
    signing_key: IssuerKey, clock: FakeClock
) -> None:
    """A reply that is not a document fails like one: never a RecursionError out of verify."""
    issuer_url = "https://issuer.test"
    deep = b'{"keys": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    def http(
        method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[int, dict[str, str], bytes]:
        if url.endswith("/.well-known/oauth-authorization-server"):
            document = {"issuer": issuer_url, "jwks_uri": issuer_url + "/jwks"}
            return 200, {}, json.dumps(document).encode()
        return 200, {}, deep

    verifier = TokenVerifier(issuer_url, AUDIENCE, clock=clock, http=http)

    with pytest.raises(JWKSUnavailable):
        verifier.verify(mint(signing_key, issuer_url, clock()))
