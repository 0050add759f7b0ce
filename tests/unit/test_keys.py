"""Signing keys: encryption at rest, creation and rotation, and the per-process KeyRing."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from authserver.models import KeyState, SigningKey
from authserver.services.keys import (
    KeyCipher,
    KeyDecryptionError,
    KeyRing,
    create_signing_key,
    published_key_rows,
)

KEK = "test-key-encryption-key-0123456789abcdef"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
INTERVAL = 30.0
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Loader:
    """Reads the published keys like the runtime's loader, counting calls; can be made to fail."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.calls = 0
        self.failure: Exception | None = None

    def __call__(self) -> list[SigningKey]:
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        return published_key_rows(self.session)


class CountingCipher(KeyCipher):
    """The real cipher, counting how many private keys it decrypted (one per parse)."""

    def __init__(self, key_encryption_key: str) -> None:
        super().__init__(key_encryption_key)
        self.opened = 0

    def open(self, ciphertext: bytes, kid: str) -> bytes:
        self.opened += 1
        return super().open(ciphertext, kid)


def database_down() -> OperationalError:
    return OperationalError("SELECT signing_keys", {}, ConnectionRefusedError("connection refused"))


@pytest.fixture
def cipher() -> CountingCipher:
    return CountingCipher(KEK)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def loader(session: Session) -> Loader:
    return Loader(session)


@pytest.fixture
def ring(loader: Loader, cipher: CountingCipher, clock: FakeClock) -> KeyRing:
    return KeyRing(loader, cipher, INTERVAL, clock=clock)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rfc7638_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 §3: SHA-256 over the required members, sorted, no whitespace."""
    required = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def _stored_row_bytes(session: Session, kid: str) -> bytes:
    """Every stored column of the key's row, as the database returns it."""
    session.expire_all()
    row = session.execute(select(SigningKey.__table__).where(SigningKey.kid == kid)).one()
    parts = [v if isinstance(v, bytes) else json.dumps(v, default=str).encode() for v in row]
    return b"\x00".join(parts)


def _private_jwk(algorithm: str, pem: bytes) -> dict[str, Any]:
    key = ECKey.import_key(pem) if algorithm == "ES256" else RSAKey.import_key(pem)
    return dict(key.as_dict(private=True))


# -- KeyCipher -------------------------------------------------------------------------------


def test_sealed_key_opens_to_the_same_bytes() -> None:
    cipher = KeyCipher(KEK)
    plaintext = b"-----BEGIN PRIVATE KEY-----\nsecret\n"

    sealed = cipher.seal(plaintext, "kid-1")

    assert plaintext not in sealed
    assert cipher.open(sealed, "kid-1") == plaintext


def test_sealing_twice_gives_different_ciphertexts() -> None:
    cipher = KeyCipher(KEK)

    assert cipher.seal(b"same", "kid-1") != cipher.seal(b"same", "kid-1")


def test_another_key_encryption_key_cannot_open_a_sealed_key() -> None:
    sealed = KeyCipher(KEK).seal(b"private", "kid-1")

    with pytest.raises(KeyDecryptionError, match="kid-1"):
        KeyCipher(KEK + "-other").open(sealed, "kid-1")


def test_ciphertext_moved_to_another_kid_does_not_open() -> None:
    cipher = KeyCipher(KEK)
    sealed = cipher.seal(b"private", "kid-1")

    with pytest.raises(KeyDecryptionError):
        cipher.open(sealed, "kid-2")


def test_tampered_ciphertext_does_not_open() -> None:
    cipher = KeyCipher(KEK)
    sealed = bytearray(cipher.seal(b"private", "kid-1"))
    sealed[-1] ^= 1

    with pytest.raises(KeyDecryptionError):
        cipher.open(bytes(sealed), "kid-1")


# -- create and rotate -----------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_created_key_is_stored_without_its_private_key_in_clear(
    session: Session, cipher: CountingCipher, algorithm: str
) -> None:
    row = create_signing_key(session, cipher, algorithm, NOW)
    pem = cipher.open(row.private_key_ciphertext, row.kid)
    d = _private_jwk(algorithm, pem)["d"]

    stored = _stored_row_bytes(session, row.kid)

    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pem not in stored
    pem_body = b"".join(line for line in pem.splitlines() if not line.startswith(b"-----"))
    assert pem_body not in stored
    assert d.encode() not in stored
    assert base64.urlsafe_b64decode(d + "=" * (-len(d) % 4)) not in stored


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_public_jwk_has_no_private_members(
    session: Session, cipher: CountingCipher, algorithm: str
) -> None:
    row = create_signing_key(session, cipher, algorithm, NOW)

    assert set(row.public_jwk) & PRIVATE_MEMBERS == set()
    assert row.public_jwk["alg"] == algorithm
    assert row.public_jwk["use"] == "sig"
    assert row.public_jwk["kid"] == row.kid


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_kid_is_the_rfc7638_thumbprint_of_the_public_key(
    session: Session, cipher: CountingCipher, algorithm: str
) -> None:
    row = create_signing_key(session, cipher, algorithm, NOW)

    assert row.kid == rfc7638_thumbprint(row.public_jwk)


def test_rotation_retires_the_previous_current_key(
    session: Session, cipher: CountingCipher
) -> None:
    first = create_signing_key(session, cipher, "ES256", NOW)
    later = NOW + timedelta(days=30)

    second = create_signing_key(session, cipher, "ES256", later)

    session.expire_all()
    states = {k.kid: (k.state, k.retired_at) for k in session.scalars(select(SigningKey))}
    assert states == {
        first.kid: (KeyState.RETIRED, later),
        second.kid: (KeyState.CURRENT, None),
    }


def test_retired_key_is_still_published(session: Session, cipher: CountingCipher) -> None:
    first = create_signing_key(session, cipher, "ES256", NOW)
    second = create_signing_key(session, cipher, "ES256", NOW + timedelta(days=30))

    published = {row.kid for row in published_key_rows(session)}

    assert published == {first.kid, second.kid}


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_ring_signs_tokens_that_verify_against_its_jwks(
    session: Session, ring: KeyRing, cipher: CountingCipher, algorithm: str
) -> None:
    row = create_signing_key(session, cipher, algorithm, NOW)
    snapshot = ring.snapshot()
    assert snapshot.signing is not None
    header = {"alg": algorithm, "kid": snapshot.signing.kid, "typ": "at+jwt"}

    token = jose_jwt.encode(
        header, {"sub": "ann"}, snapshot.signing.private_key, algorithms=[algorithm]
    )

    # Verified by another library, from the published JWKS alone.
    published = jwt.PyJWKSet.from_dict(json.loads(snapshot.jwks_body))
    claims = jwt.decode(token, published[row.kid].key, algorithms=[algorithm])
    assert claims == {"sub": "ann"}
    assert jwt.get_unverified_header(token)["kid"] == row.kid


# -- KeyRing ---------------------------------------------------------------------------------


def test_ring_reads_the_table_once_for_repeated_snapshots(
    session: Session, ring: KeyRing, loader: Loader, cipher: CountingCipher
) -> None:
    create_signing_key(session, cipher, "ES256", NOW)

    first = ring.snapshot()
    second = ring.snapshot()

    assert loader.calls == 1
    assert second is first


def test_ring_parses_each_private_key_once(
    session: Session, ring: KeyRing, cipher: CountingCipher
) -> None:
    create_signing_key(session, cipher, "ES256", NOW)
    cipher.opened = 0
    ring.refresh()
    ring.refresh()
    assert cipher.opened == 1

    create_signing_key(session, cipher, "ES256", NOW)
    cipher.opened = 0
    ring.refresh()

    assert cipher.opened == 1


def test_refresh_if_due_does_not_reread_before_the_interval(
    session: Session, ring: KeyRing, loader: Loader, clock: FakeClock, cipher: CountingCipher
) -> None:
    create_signing_key(session, cipher, "ES256", NOW)
    ring.snapshot()

    clock.advance(INTERVAL - 0.001)
    ring.refresh_if_due()

    assert loader.calls == 1


def test_refresh_if_due_rereads_once_the_interval_has_passed(
    session: Session, ring: KeyRing, loader: Loader, clock: FakeClock, cipher: CountingCipher
) -> None:
    create_signing_key(session, cipher, "ES256", NOW)
    ring.snapshot()

    clock.advance(INTERVAL)
    ring.refresh_if_due()

    assert loader.calls == 2


def test_refresh_if_due_loads_immediately_when_nothing_was_loaded(
    session: Session, ring: KeyRing, loader: Loader, cipher: CountingCipher
) -> None:
    key = create_signing_key(session, cipher, "ES256", NOW)

    ring.refresh_if_due()

    assert loader.calls == 1
    signing = ring.snapshot().signing
    assert signing is not None
    assert signing.kid == key.kid


def test_ring_picks_up_a_rotation_made_elsewhere(
    session: Session, ring: KeyRing, clock: FakeClock, cipher: CountingCipher
) -> None:
    old = create_signing_key(session, cipher, "ES256", NOW)
    ring.snapshot()
    new = create_signing_key(session, cipher, "ES256", NOW + timedelta(days=1))

    clock.advance(INTERVAL)
    ring.refresh_if_due()

    snapshot = ring.snapshot()
    assert snapshot.signing is not None
    assert snapshot.signing.kid == new.kid
    assert snapshot.kids == {old.kid, new.kid}


def test_ring_keeps_serving_its_keys_while_the_database_is_down(
    session: Session, ring: KeyRing, loader: Loader, clock: FakeClock, cipher: CountingCipher
) -> None:
    key = create_signing_key(session, cipher, "ES256", NOW)
    before = ring.snapshot()
    loader.failure = database_down()

    clock.advance(INTERVAL)
    ring.refresh_if_due()

    after = ring.snapshot()
    assert loader.calls == 2
    assert after.signing is not None
    assert after.signing.kid == key.kid
    assert after.jwks_body == before.jwks_body


def test_ring_waits_an_interval_before_retrying_a_failed_read(
    session: Session, ring: KeyRing, loader: Loader, clock: FakeClock, cipher: CountingCipher
) -> None:
    create_signing_key(session, cipher, "ES256", NOW)
    ring.snapshot()
    loader.failure = database_down()
    clock.advance(INTERVAL)
    ring.refresh_if_due()

    clock.advance(1)
    ring.refresh_if_due()

    assert loader.calls == 2


def test_ring_recovers_after_the_database_comes_back(
    session: Session, ring: KeyRing, loader: Loader, clock: FakeClock, cipher: CountingCipher
) -> None:
    create_signing_key(session, cipher, "ES256", NOW)
    ring.snapshot()
    loader.failure = database_down()
    clock.advance(INTERVAL)
    ring.refresh_if_due()
    new = create_signing_key(session, cipher, "ES256", NOW + timedelta(days=1))

    loader.failure = None
    clock.advance(INTERVAL)
    ring.refresh_if_due()

    signing = ring.snapshot().signing
    assert signing is not None
    assert signing.kid == new.kid


def test_ring_keeps_its_keys_when_a_new_key_does_not_decrypt(
    session: Session, ring: KeyRing, clock: FakeClock, cipher: CountingCipher
) -> None:
    key = create_signing_key(session, cipher, "ES256", NOW)
    before = ring.snapshot()
    # A node with the wrong key-encryption key ran `keys rotate`.
    create_signing_key(session, KeyCipher("another-key-encryption-key"), "ES256", NOW)

    clock.advance(INTERVAL)
    ring.refresh_if_due()

    after = ring.snapshot()
    assert after.signing is not None
    assert after.signing.kid == key.kid
    assert after.jwks_body == before.jwks_body


def test_ring_with_nothing_loaded_refuses_keys_it_cannot_decrypt(
    session: Session, ring: KeyRing
) -> None:
    create_signing_key(session, KeyCipher("another-key-encryption-key"), "ES256", NOW)

    with pytest.raises(KeyDecryptionError):
        ring.snapshot()


def test_ring_with_nothing_loaded_reports_a_failed_first_read(
    ring: KeyRing, loader: Loader
) -> None:
    loader.failure = database_down()

    with pytest.raises(OperationalError):
        ring.snapshot()


def test_jwks_body_and_etag_change_after_rotation(
    session: Session, ring: KeyRing, clock: FakeClock, cipher: CountingCipher
) -> None:
    old = create_signing_key(session, cipher, "ES256", NOW)
    before = ring.snapshot()
    new = create_signing_key(session, cipher, "ES256", NOW + timedelta(days=1))

    clock.advance(INTERVAL)
    ring.refresh_if_due()

    after = ring.snapshot()
    assert after.jwks_etag != before.jwks_etag
    assert after.jwks_body != before.jwks_body
    # The current key comes first; the retired one stays so its tokens still verify.
    assert [k["kid"] for k in json.loads(after.jwks_body)["keys"]] == [new.kid, old.kid]
    assert [k["kid"] for k in json.loads(before.jwks_body)["keys"]] == [old.kid]


def test_jwks_etag_is_stable_when_nothing_changed(
    session: Session, ring: KeyRing, clock: FakeClock, cipher: CountingCipher
) -> None:
    create_signing_key(session, cipher, "ES256", NOW)
    before = ring.snapshot()

    clock.advance(INTERVAL)
    ring.refresh_if_due()

    assert ring.snapshot().jwks_etag == before.jwks_etag
