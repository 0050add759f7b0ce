"""DPoP-bound tokens (RFC 9449) in the resource kit: the proof checker every check of §4.3
refuses, the replay cache's bounds, ``TokenVerifier.verify`` refusing bound tokens and
``verify_dpop`` taking them only with a fresh proof of their key, the Flask decorator's
answers (§7.1), and a token bound by the real authserver, verified by the kit."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

import pytest
import requests
from flask import Flask, g
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from authserver.db import db
from authserver.resource import (
    BindingMismatch,
    DPoPBoundToken,
    IntrospectionClient,
    InvalidDPoPProof,
    InvalidToken,
    MalformedToken,
    MemoryReplayCache,
    NotDPoPBound,
    TokenExpired,
    TokenVerifier,
    UseDPoPNonce,
    VerifiedToken,
)
from authserver.resource.dpop import (
    DEFAULT_FUTURE_LEEWAY,
    DEFAULT_MAX_AGE,
    MAX_JTI_LENGTH,
    MAX_PROOF_LENGTH,
    DPoPProof,
    access_token_hash,
    check_proof,
    normalized_htu,
)
from authserver.resource.flask import require_token
from tests.conftest import LiveServer
from tests.dpop_keys import DPoPKey
from tests.helpers import make_client, make_resource_server
from tests.resource.support import (
    AUDIENCE,
    FEED_CLIENT_ID,
    FEED_CLIENT_SECRET,
    FakeClock,
    FakeIssuer,
    IssuerKey,
    b64url,
    b64url_json,
    mint,
)

API_URL = "https://api.example.test/orders"
NOW = 1_750_000_000.0
# Every algorithm the kit verifies proofs with, as a challenge's algs lists them.
ALGS = "ES256 ES384 ES512 RS256 RS384 RS512 PS256 PS384 PS512"


@pytest.fixture(scope="module")
def key() -> DPoPKey:
    return DPoPKey()


@pytest.fixture(scope="module")
def other_key() -> DPoPKey:
    return DPoPKey()


def refusal(proof: str, *, method: str = "GET", url: str = API_URL, **options: Any) -> str:
    """The description ``check_proof`` refuses ``proof`` with (failing if it accepts it)."""
    options.setdefault("now", NOW)
    with pytest.raises(InvalidDPoPProof) as refused:
        check_proof(proof, method=method, url=url, **options)
    assert refused.value.error in ("invalid_dpop_proof", "use_dpop_nonce")
    return refused.value.description


# -- check_proof: what passes ---------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ES256", "ES384", "ES512", "RS256", "PS256"])
def test_a_right_proof_is_accepted_and_names_its_key(algorithm: str) -> None:
    key = DPoPKey(algorithm)
    proof = key.proof("GET", API_URL, issued_at=NOW, jti="one-jti")

    checked = check_proof(proof, method="GET", url=API_URL, now=NOW)

    assert checked == DPoPProof(
        jkt=key.jkt,
        jti="one-jti",
        issued_at=NOW,
        acceptable_until=NOW + DEFAULT_MAX_AGE + DEFAULT_FUTURE_LEEWAY,
    )


def test_one_jti_under_two_keys_makes_two_replay_keys(key: DPoPKey, other_key: DPoPKey) -> None:
    mine_proof = key.proof("GET", API_URL, issued_at=NOW, jti="same")
    theirs_proof = other_key.proof("GET", API_URL, issued_at=NOW, jti="same")

    mine = check_proof(mine_proof, method="GET", url=API_URL, now=NOW)
    theirs = check_proof(theirs_proof, method="GET", url=API_URL, now=NOW)

    assert mine.replay_key != theirs.replay_key
    assert "same" not in mine.replay_key


def test_the_typ_compares_case_insensitively(key: DPoPKey) -> None:
    proof = key.proof("GET", API_URL, issued_at=NOW, header={"typ": "DPoP+JWT"})

    assert check_proof(proof, method="GET", url=API_URL, now=NOW).jkt == key.jkt


# -- check_proof: every check of RFC 9449 §4.3 refuses -------------------------------------


@pytest.mark.parametrize("typ", [None, "jwt", "at+jwt", "application/dpop+jwt", 1])
def test_a_proof_of_another_typ_is_refused(key: DPoPKey, typ: Any) -> None:
    proof = key.proof("GET", API_URL, issued_at=NOW, header={"typ": typ})

    assert refusal(proof) == "The DPoP proof's typ is not dpop+jwt."


@pytest.mark.parametrize("algorithm", ["none", "None", "HS256", "ES256K", "EdDSA", "", None])
def test_a_proof_naming_an_algorithm_the_kit_does_not_take_is_refused(
    key: DPoPKey, algorithm: str | None
) -> None:
    # Signed with ES256 whatever the header says: the header alone decides the refusal.
    proof = key.proof("GET", API_URL, issued_at=NOW, header={"alg": algorithm})

    assert refusal(proof) == "The DPoP proof's algorithm is not supported."


def test_an_unsigned_proof_is_refused(key: DPoPKey) -> None:
    header = {"typ": "dpop+jwt", "alg": "none", "jwk": key.public_jwk}
    claims = {"jti": "j", "htm": "GET", "htu": API_URL, "iat": int(NOW)}
    unsigned = f"{b64url_json(header)}.{b64url_json(claims)}."

    assert refusal(unsigned) == "The DPoP proof is malformed."


def test_a_proof_signed_with_hmac_is_refused(key: DPoPKey) -> None:
    # An HMAC keyed with something the verifier could reconstruct: the public key's JSON.
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": key.public_jwk}
    claims = {"jti": "j", "htm": "GET", "htu": API_URL, "iat": int(NOW)}
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    secret = b64url_json(key.public_jwk).encode()
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()

    assert refusal(f"{signing_input}.{b64url(mac)}") == (
        "The DPoP proof's algorithm is not supported."
    )


def test_a_proof_in_an_algorithm_the_caller_does_not_allow_is_refused() -> None:
    proof = DPoPKey("RS256").proof("GET", API_URL, issued_at=NOW)

    assert refusal(proof, algorithms=("ES256",)) == "The DPoP proof's algorithm is not supported."


def test_a_proof_without_a_jwk_is_refused(key: DPoPKey) -> None:
    proof = key.proof("GET", API_URL, issued_at=NOW, header={"jwk": None})

    assert refusal(proof) == "The DPoP proof's jwk is not a public key."


@pytest.mark.parametrize("jwk", ["a string", ["a", "list"], 42])
def test_a_jwk_that_is_no_object_is_refused(key: DPoPKey, jwk: Any) -> None:
    proof = key.proof("GET", API_URL, issued_at=NOW, header={"jwk": jwk})

    assert refusal(proof) == "The DPoP proof's jwk is not a public key."


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_a_proof_carrying_its_private_key_is_refused(algorithm: str) -> None:
    key = DPoPKey(algorithm)
    private_jwk = dict(key.key.as_dict(private=True))
    assert "d" in private_jwk
    proof = key.proof("GET", API_URL, issued_at=NOW, header={"jwk": private_jwk})

    assert refusal(proof) == "The DPoP proof's jwk is not a public key."


def test_a_jwk_of_another_type_than_the_algorithm_is_refused(key: DPoPKey) -> None:
    rsa_jwk = DPoPKey("RS256").public_jwk
    proof = key.proof("GET", API_URL, issued_at=NOW, header={"jwk": rsa_jwk})  # alg ES256

    assert refusal(proof) == "The DPoP proof's jwk does not fit its algorithm."


def test_a_jwk_on_another_curve_than_the_algorithm_is_refused() -> None:
    p384 = DPoPKey("ES384")
    proof = p384.proof("GET", API_URL, issued_at=NOW, header={"alg": "ES256"})

    assert refusal(proof) == "The DPoP proof's jwk does not fit its algorithm."


def test_a_proof_whose_jwk_is_another_key_than_the_signers_is_refused(
    key: DPoPKey, other_key: DPoPKey
) -> None:
    proof = key.proof("GET", API_URL, issued_at=NOW, header={"jwk": other_key.public_jwk})

    assert refusal(proof) == "The DPoP proof's signature is invalid."


def test_a_proof_whose_claims_were_changed_after_signing_is_refused(key: DPoPKey) -> None:
    header, _, signature = key.proof("GET", API_URL, issued_at=NOW).split(".")
    changed = b64url_json({"jti": "j", "htm": "DELETE", "htu": API_URL, "iat": int(NOW)})

    assert refusal(f"{header}.{changed}.{signature}", method="DELETE") == (
        "The DPoP proof's signature is invalid."
    )


def test_a_proof_with_critical_header_extensions_is_refused(key: DPoPKey) -> None:
    proof = key.proof("GET", API_URL, issued_at=NOW, header={"crit": ["exp"], "exp": 1})

    assert refusal(proof) == "The DPoP proof has critical header extensions."


@pytest.mark.parametrize(
    "proof",
    ["", "not a proof", "a.b", "a.b.c.d", "e30.e30.", "!!!.e30.e30", "bm90IGpzb24.e30.c2ln"],
)
def test_what_is_no_compact_jws_is_malformed(proof: str) -> None:
    assert refusal(proof) == "The DPoP proof is malformed."


def test_a_proof_longer_than_the_limit_is_refused_before_decoding(key: DPoPKey) -> None:
    proof = key.proof("GET", API_URL, issued_at=NOW, claims={"pad": "x" * MAX_PROOF_LENGTH})

    assert len(proof) > MAX_PROOF_LENGTH
    assert refusal(proof) == "The DPoP proof is malformed."


def test_a_header_nested_too_deep_is_malformed(key: DPoPKey) -> None:
    proof = key.proof("GET", API_URL, issued_at=NOW, header={"x": {"y": {"z": 1}}})

    assert refusal(proof) == "The DPoP proof is malformed."


@pytest.mark.parametrize("method", ["POST", "get", "Get", "HEAD"])
def test_a_proof_for_another_method_is_refused(key: DPoPKey, method: str) -> None:
    # RFC 9110 §9.1: methods are case-sensitive, so "get" is not GET.
    proof = key.proof(method, API_URL, issued_at=NOW)

    assert refusal(proof, method="GET") == "The DPoP proof is for another HTTP method."


def test_a_proof_without_htm_is_refused(key: DPoPKey) -> None:
    proof = key.proof("GET", API_URL, issued_at=NOW, drop=("htm",))

    assert refusal(proof) == "The DPoP proof is for another HTTP method."


@pytest.mark.parametrize(
    ("htu", "url"),
    [
        ("https://api.example.test/orders?page=2", "https://api.example.test/orders?page=3"),
        ("https://api.example.test/orders#top", "https://api.example.test/orders"),
        ("https://api.example.test:443/orders", "https://api.example.test/orders"),
        ("http://api.example.test:80/orders", "http://api.example.test/orders"),
        ("HTTPS://API.Example.TEST/orders", "https://api.example.test/orders"),
        ("https://api.example.test", "https://api.example.test/"),
        ("https://[::1]:8443/orders", "https://[::1]:8443/orders"),
    ],
)
def test_htu_is_compared_without_query_fragment_case_or_default_port(
    key: DPoPKey, htu: str, url: str
) -> None:
    proof = key.proof("GET", htu, issued_at=NOW)

    assert check_proof(proof, method="GET", url=url, now=NOW).jkt == key.jkt


@pytest.mark.parametrize(
    "htu",
    [
        "https://api.example.test/orders/1",
        "https://api.example.test/Orders",
        "https://api.example.test/",
        "https://other.example.test/orders",
        "https://api.example.test.evil.example/orders",
        "http://api.example.test/orders",
        "https://api.example.test:8443/orders",
        "https://api.example.test:80/orders",
        "/orders",
        "api.example.test/orders",
        "ftp://api.example.test/orders",
        "https://api.example.test:99999/orders",
    ],
)
def test_a_proof_for_another_uri_is_refused(key: DPoPKey, htu: str) -> None:
    proof = key.proof("GET", htu, issued_at=NOW)

    assert refusal(proof) == "The DPoP proof is for another URI."


@pytest.mark.parametrize("htu", [None, 42, ["https://api.example.test/orders"]])
def test_a_proof_whose_htu_is_no_string_is_refused(key: DPoPKey, htu: Any) -> None:
    proof = key.proof("GET", API_URL, issued_at=NOW, claims={"htu": htu})

    assert refusal(proof) == "The DPoP proof is for another URI."


def test_normalized_htu_is_none_for_what_is_no_http_uri() -> None:
    assert normalized_htu("https://API.example.test:443/a?b#c") == "https://api.example.test/a"
    assert normalized_htu("mailto:someone@example.test") is None
    assert normalized_htu("https:///no-host") is None


def test_the_window_for_iat_is_a_minute_back_and_ten_seconds_ahead(key: DPoPKey) -> None:
    oldest = key.proof("GET", API_URL, issued_at=NOW - DEFAULT_MAX_AGE)
    newest = key.proof("GET", API_URL, issued_at=NOW + DEFAULT_FUTURE_LEEWAY)

    assert check_proof(oldest, method="GET", url=API_URL, now=NOW).jkt == key.jkt
    assert check_proof(newest, method="GET", url=API_URL, now=NOW).jkt == key.jkt


@pytest.mark.parametrize(
    "issued_at", [NOW - DEFAULT_MAX_AGE - 1, NOW - 86400, NOW + DEFAULT_FUTURE_LEEWAY + 1]
)
def test_a_proof_too_old_or_from_the_future_is_refused(key: DPoPKey, issued_at: float) -> None:
    proof = key.proof("GET", API_URL, issued_at=issued_at)

    assert refusal(proof) == "The DPoP proof is too old or from the future."


@pytest.mark.parametrize("iat", ["1750000000", True, None, float("nan"), 10**400])
def test_a_proof_whose_iat_is_no_number_is_refused(key: DPoPKey, iat: Any) -> None:
    proof = key.proof("GET", API_URL, claims={"iat": iat})

    assert refusal(proof) == "The DPoP proof has no iat."


def test_a_proof_without_iat_is_refused(key: DPoPKey) -> None:
    proof = key.proof("GET", API_URL, drop=("iat",))

    assert refusal(proof) == "The DPoP proof has no iat."


@pytest.mark.parametrize("jti", ["", 12345, None, "x" * (MAX_JTI_LENGTH + 1)])
def test_a_proof_without_a_usable_jti_is_refused(key: DPoPKey, jti: Any) -> None:
    proof = key.proof("GET", API_URL, issued_at=NOW, claims={"jti": jti})

    assert refusal(proof) == "The DPoP proof has no usable jti."


def test_a_proof_without_jti_is_refused_and_the_longest_jti_passes(key: DPoPKey) -> None:
    missing = key.proof("GET", API_URL, issued_at=NOW, drop=("jti",))
    longest = key.proof("GET", API_URL, issued_at=NOW, jti="x" * MAX_JTI_LENGTH)

    assert refusal(missing) == "The DPoP proof has no usable jti."
    assert check_proof(longest, method="GET", url=API_URL, now=NOW).jti == "x" * MAX_JTI_LENGTH


def test_ath_must_name_the_token_presented(key: DPoPKey) -> None:
    right = key.proof("GET", API_URL, issued_at=NOW, access_token="the-token")
    for_another = key.proof("GET", API_URL, issued_at=NOW, access_token="another-token")
    without = key.proof("GET", API_URL, issued_at=NOW)
    not_a_string = key.proof("GET", API_URL, issued_at=NOW, claims={"ath": 1})

    assert check_proof(right, method="GET", url=API_URL, now=NOW, access_token="the-token")
    for proof in (for_another, without, not_a_string):
        assert refusal(proof, access_token="the-token") == (
            "The DPoP proof does not name this access token."
        )


def test_ath_is_the_base64url_sha256_of_the_token() -> None:
    # RFC 9449 §7.1's example token and its ath.
    assert access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU") == (
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    )


def test_with_nonces_a_proof_needs_a_current_one(key: DPoPKey) -> None:
    def current(nonce: str) -> bool:
        return nonce == "fresh"

    with_it = key.proof("GET", API_URL, issued_at=NOW, nonce="fresh")
    stale = key.proof("GET", API_URL, issued_at=NOW, nonce="stale")
    without = key.proof("GET", API_URL, issued_at=NOW)

    assert check_proof(with_it, method="GET", url=API_URL, now=NOW, nonce_is_current=current)
    for proof in (stale, without):
        with pytest.raises(UseDPoPNonce) as refused:
            check_proof(proof, method="GET", url=API_URL, now=NOW, nonce_is_current=current)
        assert refused.value.error == "use_dpop_nonce"


def test_a_refused_proof_is_an_invalid_token_with_its_own_error_code() -> None:
    refused = InvalidDPoPProof("The DPoP proof was used before.")

    assert isinstance(refused, InvalidToken)
    assert refused.error == "invalid_dpop_proof"
    assert refused.description == "The DPoP proof was used before."
    assert InvalidDPoPProof().description == "The DPoP proof is invalid."
    assert UseDPoPNonce().error == "use_dpop_nonce"


# -- MemoryReplayCache ----------------------------------------------------------------------


def test_the_cache_says_a_key_is_new_once() -> None:
    cache = MemoryReplayCache(clock=FakeClock(NOW))

    assert cache.first_use("a", NOW + 70) is True
    assert cache.first_use("a", NOW + 70) is False
    assert cache.first_use("b", NOW + 70) is True


def test_the_cache_forgets_a_key_once_its_proof_has_expired() -> None:
    clock = FakeClock(NOW)
    cache = MemoryReplayCache(clock=clock)
    cache.first_use("a", NOW + 70)
    cache.first_use("b", NOW + 80)

    clock.advance(69)
    assert cache.first_use("a", NOW + 70) is False
    clock.advance(1)  # "a" expires now; "b" in ten seconds
    assert cache.first_use("c", NOW + 140) is True

    assert len(cache) == 2  # b and c: a is gone
    assert cache.first_use("b", NOW + 80) is False
    clock.advance(10)
    assert cache.first_use("b", NOW + 150) is True


def test_the_cache_holds_at_most_max_entries_and_drops_the_oldest() -> None:
    cache = MemoryReplayCache(max_entries=3, clock=FakeClock(NOW))
    for name in ("a", "b", "c", "d"):
        assert cache.first_use(name, NOW + 70) is True

    assert len(cache) == 3
    assert cache.first_use("d", NOW + 70) is False
    assert cache.first_use("b", NOW + 70) is False
    assert cache.first_use("a", NOW + 70) is True  # forgotten when d came


def test_a_cache_of_no_entries_is_refused() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryReplayCache(max_entries=0)


# -- TokenVerifier --------------------------------------------------------------------------


@pytest.fixture
def bound_token(issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock, key: DPoPKey) -> str:
    return mint(signing_key, issuer.url, clock(), sub="user-42", cnf={"jkt": key.jkt})


def verify_dpop(
    verifier: TokenVerifier, token: str, proof: str, method: str = "GET"
) -> VerifiedToken:
    return verifier.verify_dpop(token, proof, method=method, url=API_URL)


def test_verify_refuses_a_bound_token_as_a_bearer_token(
    verifier: TokenVerifier, bound_token: str
) -> None:
    with pytest.raises(DPoPBoundToken) as refused:
        verifier.verify(bound_token)

    assert refused.value.error == "invalid_token"
    assert refused.value.description == (
        "This access token is bound to a DPoP key; use the DPoP scheme."
    )


def test_verify_gives_an_unbound_token_no_key(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    assert verifier.verify(mint(signing_key, issuer.url, clock())).dpop_jkt is None


@pytest.mark.parametrize(
    "cnf", ["a string", ["x"], {}, {"jkt": ""}, {"jkt": 42}, {"x5t#S256": "bound to a cert"}]
)
def test_a_cnf_that_names_no_dpop_key_is_malformed_either_way(
    verifier: TokenVerifier,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
    clock: FakeClock,
    key: DPoPKey,
    cnf: Any,
) -> None:
    # Bound to something the kit cannot check: neither a bearer token nor a DPoP one.
    token = mint(signing_key, issuer.url, clock(), cnf=cnf)
    proof = key.proof("GET", API_URL, issued_at=clock(), access_token=token)

    with pytest.raises(MalformedToken):
        verifier.verify(token)
    with pytest.raises(MalformedToken):
        verify_dpop(verifier, token, proof)


def test_verify_dpop_takes_a_bound_token_with_a_proof_of_its_key(
    verifier: TokenVerifier, bound_token: str, key: DPoPKey, clock: FakeClock
) -> None:
    proof = key.proof("GET", API_URL, issued_at=clock(), access_token=bound_token)

    verified = verify_dpop(verifier, bound_token, proof)

    assert verified.subject == "user-42"
    assert verified.dpop_jkt == key.jkt


def test_verify_dpop_refuses_a_proof_used_before(
    verifier: TokenVerifier, bound_token: str, key: DPoPKey, clock: FakeClock
) -> None:
    proof = key.proof("GET", API_URL, issued_at=clock(), access_token=bound_token)
    verify_dpop(verifier, bound_token, proof)
    clock.advance(30)

    with pytest.raises(InvalidDPoPProof) as refused:
        verify_dpop(verifier, bound_token, proof)

    assert refused.value.description == "The DPoP proof was used before."
    # A new proof from the key for the next request is fine.
    fresh = key.proof("GET", API_URL, issued_at=clock(), access_token=bound_token)
    assert verify_dpop(verifier, bound_token, fresh).dpop_jkt == key.jkt


def test_verify_dpop_refuses_a_proof_signed_with_another_key(
    verifier: TokenVerifier, bound_token: str, other_key: DPoPKey, clock: FakeClock
) -> None:
    # The thief holds the token and a key of its own, and makes a proof that is right in
    # every other way.
    proof = other_key.proof("GET", API_URL, issued_at=clock(), access_token=bound_token)

    with pytest.raises(InvalidDPoPProof) as refused:
        verify_dpop(verifier, bound_token, proof)

    assert refused.value.description == (
        "The DPoP proof is signed with another key than the token's."
    )


def test_verify_dpop_refuses_a_proof_made_for_another_token(
    verifier: TokenVerifier,
    bound_token: str,
    key: DPoPKey,
    clock: FakeClock,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
) -> None:
    other_token = mint(signing_key, issuer.url, clock(), cnf={"jkt": key.jkt})
    proof = key.proof("GET", API_URL, issued_at=clock(), access_token=other_token)

    with pytest.raises(InvalidDPoPProof) as refused:
        verify_dpop(verifier, bound_token, proof)

    assert refused.value.description == "The DPoP proof does not name this access token."


def test_verify_dpop_refuses_a_proof_for_another_method_or_url(
    verifier: TokenVerifier, bound_token: str, key: DPoPKey, clock: FakeClock
) -> None:
    for_post = key.proof("POST", API_URL, issued_at=clock(), access_token=bound_token)
    elsewhere = key.proof("GET", API_URL + "/1", issued_at=clock(), access_token=bound_token)

    with pytest.raises(InvalidDPoPProof, match="another HTTP method"):
        verify_dpop(verifier, bound_token, for_post, method="GET")
    with pytest.raises(InvalidDPoPProof, match="another URI"):
        verify_dpop(verifier, bound_token, elsewhere)


def test_verify_dpop_judges_iat_by_the_verifiers_clock(
    verifier: TokenVerifier, bound_token: str, key: DPoPKey, clock: FakeClock
) -> None:
    proof = key.proof("GET", API_URL, issued_at=clock(), access_token=bound_token)
    clock.advance(DEFAULT_MAX_AGE + 1)

    with pytest.raises(InvalidDPoPProof, match="too old"):
        verify_dpop(verifier, bound_token, proof)


def test_verify_dpop_refuses_an_unbound_token(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    # A bearer token stolen and presented with the thief's own proof.
    token = mint(signing_key, issuer.url, clock())
    proof = DPoPKey().proof("GET", API_URL, issued_at=clock(), access_token=token)

    with pytest.raises(NotDPoPBound) as refused:
        verify_dpop(verifier, token, proof)

    assert refused.value.error == "invalid_token"


def test_verify_dpop_checks_the_token_as_verify_does(
    verifier: TokenVerifier, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    key = DPoPKey()
    expired = mint(signing_key, issuer.url, clock(), exp=int(clock()) - 3600, cnf={"jkt": key.jkt})
    proof = key.proof("GET", API_URL, issued_at=clock(), access_token=expired)

    with pytest.raises(TokenExpired):
        verify_dpop(verifier, expired, proof)


class RecordingReplayCache:
    """A ``ReplayCache`` as a shared store would be: one set of keys for several verifiers."""

    def __init__(self) -> None:
        self.recorded: dict[str, float] = {}

    def first_use(self, key: str, until: float) -> bool:
        if key in self.recorded:
            return False
        self.recorded[key] = until
        return True


def test_a_shared_replay_cache_refuses_a_proof_replayed_to_another_verifier(
    issuer: FakeIssuer, clock: FakeClock, bound_token: str, key: DPoPKey
) -> None:
    shared = RecordingReplayCache()
    first = TokenVerifier(issuer.url, AUDIENCE, clock=clock, dpop_replay_cache=shared)
    second = TokenVerifier(issuer.url, AUDIENCE, clock=clock, dpop_replay_cache=shared)
    proof = key.proof("GET", API_URL, issued_at=clock(), access_token=bound_token)

    verify_dpop(first, bound_token, proof)
    with pytest.raises(InvalidDPoPProof, match="used before"):
        verify_dpop(second, bound_token, proof)

    # Remembered for as long as the proof could be accepted.
    assert list(shared.recorded.values()) == [clock() + DEFAULT_MAX_AGE + DEFAULT_FUTURE_LEEWAY]


def test_only_an_accepted_proof_is_recorded(
    issuer: FakeIssuer, clock: FakeClock, bound_token: str, other_key: DPoPKey
) -> None:
    cache = RecordingReplayCache()
    verifier = TokenVerifier(issuer.url, AUDIENCE, clock=clock, dpop_replay_cache=cache)
    proof = other_key.proof("GET", API_URL, issued_at=clock(), access_token=bound_token)

    with pytest.raises(InvalidDPoPProof):
        verify_dpop(verifier, bound_token, proof)

    # Whoever lacks the token's key cannot fill the cache.
    assert cache.recorded == {}


def test_separate_default_caches_do_not_share_proofs(
    issuer: FakeIssuer, clock: FakeClock, bound_token: str, key: DPoPKey
) -> None:
    # What the README warns of: one cache per process lets a replay through once elsewhere.
    proof = key.proof("GET", API_URL, issued_at=clock(), access_token=bound_token)
    for verifier in (TokenVerifier(issuer.url, AUDIENCE, clock=clock) for _ in range(2)):
        assert verify_dpop(verifier, bound_token, proof).dpop_jkt == key.jkt


def test_dpop_algorithms_limit_the_proofs_taken(
    issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    rsa = DPoPKey("RS256")
    token = mint(signing_key, issuer.url, clock(), cnf={"jkt": rsa.jkt})
    verifier = TokenVerifier(issuer.url, AUDIENCE, clock=clock, dpop_algorithms=["ES256"])
    proof = rsa.proof("GET", API_URL, issued_at=clock(), access_token=token)

    with pytest.raises(InvalidDPoPProof, match="algorithm is not supported"):
        verify_dpop(verifier, token, proof)
    assert verifier.dpop_algorithms == ("ES256",)


@pytest.mark.parametrize("algorithms", [[], ["HS256"], ["ES256", "none"]])
def test_dpop_algorithms_must_be_ones_the_kit_verifies(algorithms: list[str]) -> None:
    with pytest.raises(ValueError, match="dpop_algorithms"):
        TokenVerifier("https://issuer.example.test", AUDIENCE, dpop_algorithms=algorithms)


# -- the Flask decorator --------------------------------------------------------------------

LOCAL_URL = "http://localhost/orders"  # where Flask's test client sends /orders


def make_api(
    verifier: TokenVerifier,
    *,
    public_url: str | None = None,
    introspect: IntrospectionClient | None = None,
) -> FlaskClient:
    app = Flask(__name__)

    @app.route("/orders", methods=["GET", "POST"])
    @require_token(verifier, scope="read", public_url=public_url, introspect=introspect)
    def orders() -> dict[str, object]:
        return {"subject": g.access_token.subject, "jkt": g.access_token.dpop_jkt}

    @app.post("/orders/delete")
    @require_token(verifier, scope="admin", public_url=public_url)
    def delete() -> dict[str, object]:
        return {"ok": True}

    return app.test_client()


@pytest.fixture
def api(verifier: TokenVerifier) -> FlaskClient:
    return make_api(verifier)


def dpop_headers(token: str, *proofs: str, scheme: str = "DPoP") -> list[tuple[str, str]]:
    return [("Authorization", f"{scheme} {token}"), *(("DPoP", proof) for proof in proofs)]


def challenge(response: TestResponse) -> tuple[str, dict[str, str]]:
    """The scheme and the parameters of the response's one challenge."""
    header = response.headers["WWW-Authenticate"]
    scheme, _, rest = header.partition(" ")
    return scheme, dict(re.findall(r'(\w+)="([^"]*)"', rest))


def test_the_decorator_takes_a_bound_token_with_its_proof(
    api: FlaskClient, bound_token: str, key: DPoPKey, clock: FakeClock
) -> None:
    proof = key.proof("GET", LOCAL_URL, issued_at=clock(), access_token=bound_token)

    response = api.get("/orders", headers=dpop_headers(bound_token, proof))

    assert response.status_code == 200
    assert response.json == {"subject": "user-42", "jkt": key.jkt}


def test_the_dpop_scheme_is_case_insensitive_and_the_query_ignored(
    api: FlaskClient, bound_token: str, key: DPoPKey, clock: FakeClock
) -> None:
    proof = key.proof("POST", LOCAL_URL, issued_at=clock(), access_token=bound_token)

    response = api.post("/orders?page=2", headers=dpop_headers(bound_token, proof, scheme="dpop"))

    assert response.status_code == 200


def test_a_bound_token_sent_as_a_bearer_token_is_told_to_use_dpop(
    api: FlaskClient, bound_token: str, key: DPoPKey, clock: FakeClock
) -> None:
    # Even with its proof beside it: the Bearer scheme says it is a bearer token.
    proof = key.proof("GET", LOCAL_URL, issued_at=clock(), access_token=bound_token)

    response = api.get("/orders", headers=dpop_headers(bound_token, proof, scheme="Bearer"))

    assert response.status_code == 401
    assert challenge(response) == (
        "DPoP",
        {
            "error": "invalid_token",
            "error_description": "This access token is bound to a DPoP key; use the DPoP scheme.",
            "algs": ALGS,
        },
    )
    assert response.json == {
        "error": "invalid_token",
        "error_description": "This access token is bound to a DPoP key; use the DPoP scheme.",
    }


def test_a_bearer_token_still_works_as_one(
    api: FlaskClient, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = mint(signing_key, issuer.url, clock())

    response = api.get("/orders", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 200
    assert response.json is not None
    assert response.json["jkt"] is None


def test_a_bearer_token_sent_with_the_dpop_scheme_is_refused(
    api: FlaskClient, issuer: FakeIssuer, signing_key: IssuerKey, clock: FakeClock
) -> None:
    token = mint(signing_key, issuer.url, clock())
    proof = DPoPKey().proof("GET", LOCAL_URL, issued_at=clock(), access_token=token)

    response = api.get("/orders", headers=dpop_headers(token, proof))

    assert response.status_code == 401
    assert challenge(response) == (
        "DPoP",
        {
            "error": "invalid_token",
            "error_description": "This access token is not bound to a DPoP key.",
            "algs": ALGS,
        },
    )


def proof_refusal(response: TestResponse) -> str:
    """The description of a 401 ``DPoP error="invalid_dpop_proof"`` answer."""
    assert response.status_code == 401
    scheme, params = challenge(response)
    assert scheme == "DPoP"
    assert params["error"] == "invalid_dpop_proof"
    assert params["algs"] == ALGS
    assert response.json == {
        "error": "invalid_dpop_proof",
        "error_description": params["error_description"],
    }
    return params["error_description"]


def test_the_dpop_scheme_without_a_proof_is_refused(api: FlaskClient, bound_token: str) -> None:
    response = api.get("/orders", headers=dpop_headers(bound_token))

    assert proof_refusal(response) == "A DPoP proof is required."


def test_two_proofs_are_refused(
    api: FlaskClient, bound_token: str, key: DPoPKey, clock: FakeClock
) -> None:
    # Each a right proof on its own.
    proofs = [
        key.proof("GET", LOCAL_URL, issued_at=clock(), access_token=bound_token) for _ in range(2)
    ]

    response = api.get("/orders", headers=dpop_headers(bound_token, *proofs))

    assert proof_refusal(response) == "Send one DPoP proof, not several."


def test_a_replayed_request_is_refused(
    api: FlaskClient, bound_token: str, key: DPoPKey, clock: FakeClock
) -> None:
    headers = dpop_headers(
        bound_token, key.proof("GET", LOCAL_URL, issued_at=clock(), access_token=bound_token)
    )
    assert api.get("/orders", headers=headers).status_code == 200

    assert proof_refusal(api.get("/orders", headers=headers)) == "The DPoP proof was used before."


@pytest.mark.parametrize(
    ("method", "url"),
    [("POST", LOCAL_URL), ("GET", "http://localhost/orders/delete"), ("GET", API_URL)],
)
def test_a_proof_for_another_request_is_refused(
    api: FlaskClient, bound_token: str, key: DPoPKey, clock: FakeClock, method: str, url: str
) -> None:
    proof = key.proof(method, url, issued_at=clock(), access_token=bound_token)

    response = api.get("/orders", headers=dpop_headers(bound_token, proof))

    assert proof_refusal(response).startswith("The DPoP proof is for another")


def test_a_proof_of_another_key_is_refused(
    api: FlaskClient, bound_token: str, other_key: DPoPKey, clock: FakeClock
) -> None:
    proof = other_key.proof("GET", LOCAL_URL, issued_at=clock(), access_token=bound_token)

    response = api.get("/orders", headers=dpop_headers(bound_token, proof))

    assert proof_refusal(response) == "The DPoP proof is signed with another key than the token's."


def test_a_bound_token_without_the_scope_gets_a_dpop_insufficient_scope(
    api: FlaskClient, bound_token: str, key: DPoPKey, clock: FakeClock
) -> None:
    url = "http://localhost/orders/delete"
    proof = key.proof("POST", url, issued_at=clock(), access_token=bound_token)

    response = api.post("/orders/delete", headers=dpop_headers(bound_token, proof))

    assert response.status_code == 403
    scheme, params = challenge(response)
    assert scheme == "DPoP"
    assert params["error"] == "insufficient_scope"
    assert params["scope"] == "admin"
    assert params["algs"] == ALGS


@pytest.mark.parametrize("value", ["DPoP", "DPoP   ", "DPoP two tokens"])
def test_a_malformed_dpop_header_is_invalid_request(api: FlaskClient, value: str) -> None:
    response = api.get("/orders", headers={"Authorization": value})

    assert response.status_code == 400
    scheme, params = challenge(response)
    assert scheme == "DPoP"
    assert params["error"] == "invalid_request"


def test_without_a_token_both_schemes_are_offered(api: FlaskClient) -> None:
    response = api.get("/orders")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == f'Bearer, DPoP algs="{ALGS}"'


def test_the_challenge_lists_the_verifiers_dpop_algorithms(
    issuer: FakeIssuer, clock: FakeClock, bound_token: str
) -> None:
    verifier = TokenVerifier(issuer.url, AUDIENCE, clock=clock, dpop_algorithms=["PS256", "ES256"])
    api = make_api(verifier)

    assert api.get("/orders").headers["WWW-Authenticate"] == 'Bearer, DPoP algs="PS256 ES256"'
    refused = api.get("/orders", headers=dpop_headers(bound_token))
    assert challenge(refused)[1]["algs"] == "PS256 ES256"


def test_with_public_url_the_proof_names_the_public_url(
    verifier: TokenVerifier, bound_token: str, key: DPoPKey, clock: FakeClock
) -> None:
    # Behind a proxy: the client calls https://api.example.test/orders, Flask sees
    # http://localhost/orders.
    api = make_api(verifier, public_url="https://api.example.test/")
    public = key.proof("GET", API_URL, issued_at=clock(), access_token=bound_token)
    local = key.proof("GET", LOCAL_URL, issued_at=clock(), access_token=bound_token)

    assert api.get("/orders", headers=dpop_headers(bound_token, public)).status_code == 200
    refused = api.get("/orders", headers=dpop_headers(bound_token, local))
    assert proof_refusal(refused) == "The DPoP proof is for another URI."


def test_with_public_url_the_host_header_is_not_believed(
    verifier: TokenVerifier, bound_token: str, key: DPoPKey, clock: FakeClock
) -> None:
    # A proof captured on its way to another API, replayed here with its Host header.
    api = make_api(verifier, public_url="https://api.example.test")
    elsewhere = "https://other-api.example.test/orders"
    proof = key.proof("GET", elsewhere, issued_at=clock(), access_token=bound_token)

    response = api.get(
        "/orders",
        headers=dpop_headers(bound_token, proof),
        base_url="https://other-api.example.test",
    )

    assert proof_refusal(response) == "The DPoP proof is for another URI."


def test_without_public_url_the_request_url_is_the_one_checked(
    verifier: TokenVerifier, bound_token: str, key: DPoPKey, clock: FakeClock
) -> None:
    api = make_api(verifier)
    proof = key.proof("GET", API_URL, issued_at=clock(), access_token=bound_token)

    response = api.get(
        "/orders", headers=dpop_headers(bound_token, proof), base_url="https://api.example.test"
    )

    assert response.status_code == 200


@pytest.mark.parametrize(
    "public_url", ["api.example.test", "/orders", "ftp://api.example.test", "https://a.test/?x=1"]
)
def test_a_public_url_that_is_no_http_base_is_refused(
    verifier: TokenVerifier, public_url: str
) -> None:
    with pytest.raises(ValueError, match="public_url"):
        require_token(verifier, public_url=public_url)


@pytest.fixture
def introspection(issuer: FakeIssuer) -> IntrospectionClient:
    issuer.introspection_enabled = True
    return IntrospectionClient(issuer.url, FEED_CLIENT_ID, FEED_CLIENT_SECRET)


@pytest.mark.parametrize(
    ("members", "accepted"),
    [
        ("right", True),
        ({"cnf": {"jkt": "another-thumbprint"}}, False),
        ({}, False),
        ({"cnf": "not an object"}, False),
    ],
)
def test_online_the_issuer_must_bind_the_token_to_the_same_key(
    verifier: TokenVerifier,
    introspection: IntrospectionClient,
    issuer: FakeIssuer,
    bound_token: str,
    key: DPoPKey,
    clock: FakeClock,
    members: Any,
    accepted: bool,
) -> None:
    issuer.active_tokens.add(bound_token)
    issuer.introspection_members[bound_token] = (
        {"cnf": {"jkt": key.jkt}} if members == "right" else members
    )
    api = make_api(verifier, introspect=introspection)
    proof = key.proof("GET", LOCAL_URL, issued_at=clock(), access_token=bound_token)

    response = api.get("/orders", headers=dpop_headers(bound_token, proof))

    if accepted:
        assert response.status_code == 200
    else:
        assert response.status_code == 401
        assert challenge(response) == (
            "DPoP",
            {
                "error": "invalid_token",
                "error_description": BindingMismatch.default_description,
                "algs": ALGS,
            },
        )


def test_online_a_bearer_token_the_issuer_says_is_bound_is_refused(
    verifier: TokenVerifier,
    introspection: IntrospectionClient,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
    clock: FakeClock,
) -> None:
    token = mint(signing_key, issuer.url, clock())
    issuer.active_tokens.add(token)
    issuer.introspection_members[token] = {"cnf": {"jkt": "a-thumbprint"}}
    api = make_api(verifier, introspect=introspection)

    response = api.get("/orders", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401
    assert challenge(response)[1]["error_description"] == BindingMismatch.default_description


# -- against the real authserver ------------------------------------------------------------

DEFAULT_AUDIENCE = "https://api.example.test"  # the `config` fixture's default_audience


@pytest.fixture
def server_bound_token(live_server: LiveServer, key: DPoPKey) -> str:
    """An access token the real server bound to ``key`` at its token endpoint."""
    with db.transaction(live_server.app) as session:
        registered = make_client(session, grant_types=["client_credentials"])
    assert registered.client_secret is not None
    token_url = live_server.url + "/oauth/token"
    with requests.Session() as http:
        response = http.post(
            token_url,
            data={"grant_type": "client_credentials", "scope": "read"},
            auth=(registered.client.client_id, registered.client_secret),
            headers={"DPoP": key.proof("POST", token_url)},
            timeout=10,
        )
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "DPoP"
    token: str = response.json()["access_token"]
    return token


def test_a_token_the_server_bound_verifies_only_with_a_proof_of_its_key(
    live_server: LiveServer, server_bound_token: str, key: DPoPKey, other_key: DPoPKey
) -> None:
    verifier = TokenVerifier(live_server.url, DEFAULT_AUDIENCE)
    proof = key.proof("GET", API_URL, access_token=server_bound_token)

    verified = verifier.verify_dpop(server_bound_token, proof, method="GET", url=API_URL)

    assert verified.dpop_jkt == key.jkt
    assert verified.scope == frozenset({"read"})
    with pytest.raises(DPoPBoundToken):
        verifier.verify(server_bound_token)
    with pytest.raises(InvalidDPoPProof, match="used before"):
        verifier.verify_dpop(server_bound_token, proof, method="GET", url=API_URL)
    thief = other_key.proof("GET", API_URL, access_token=server_bound_token)
    with pytest.raises(InvalidDPoPProof, match="another key"):
        verifier.verify_dpop(server_bound_token, thief, method="GET", url=API_URL)


def test_the_decorator_with_the_servers_introspection_takes_its_bound_token(
    live_server: LiveServer, server_bound_token: str, key: DPoPKey
) -> None:
    with db.transaction(live_server.app) as session:
        resource_server = make_resource_server(session)
    assert resource_server.client_secret is not None
    introspection = IntrospectionClient(
        live_server.url, resource_server.client.client_id, resource_server.client_secret
    )
    api = make_api(TokenVerifier(live_server.url, DEFAULT_AUDIENCE), introspect=introspection)
    proof = key.proof("GET", LOCAL_URL, access_token=server_bound_token)

    response = api.get("/orders", headers=dpop_headers(server_bound_token, proof))

    assert response.status_code == 200, response.json
    assert response.json is not None
    assert response.json["jkt"] == key.jkt
    as_bearer = api.get("/orders", headers={"Authorization": f"Bearer {server_bound_token}"})
    assert as_bearer.status_code == 401
    assert challenge(as_bearer)[0] == "DPoP"
