"""Signing keys: creation, rotation, encryption at rest, and the in-memory key ring.

Private keys are stored as PKCS#8 PEM sealed with AES-256-GCM under a key derived (HKDF) from
``AUTHSERVER_KEY_ENCRYPTION_KEY``. Each process keeps the parsed keys in a ``KeyRing`` and
re-reads the table every few seconds, so a rotation made by one process (or the CLI) reaches
all of them without a restart, and a database outage leaves signing and the JWKS working from
memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from authserver.errors import KeyDecryptionError
from authserver.models import KeyState, SigningKey
from authserver.services.audit import AuditEventType, record
from authserver.services.key_notifications import announce_key_change
from authserver.services.revocations import record_key_withdrawn

log = logging.getLogger(__name__)

# JWK members that exist only on private keys (RFC 7518 §6.2.2 and §6.3.2).
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
RSA_KEY_BITS = 3072  # NIST SP 800-57: 128-bit security, like P-256
_NONCE_BYTES = 12
# An arbitrary constant naming the advisory lock taken while creating the first key.
_FIRST_KEY_LOCK = 0x61757468_6B657931

PrivateKey = ECKey | RSAKey


class KeyCipher:
    def __init__(self, key_encryption_key: str) -> None:
        self._aead = AESGCM(
            HKDF(
                algorithm=hashes.SHA256(),
                length=32,
                salt=None,
                info=b"authserver signing-key encryption v1",
            ).derive(key_encryption_key.encode())
        )

    def seal(self, plaintext: bytes, kid: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, kid.encode())

    def open(self, ciphertext: bytes, kid: str) -> bytes:
        try:
            return self._aead.decrypt(
                ciphertext[:_NONCE_BYTES], ciphertext[_NONCE_BYTES:], kid.encode()
            )
        except InvalidTag as exc:
            raise KeyDecryptionError(
                f"signing key {kid} does not decrypt with AUTHSERVER_KEY_ENCRYPTION_KEY"
            ) from exc


def _generate_private_key(algorithm: str) -> PrivateKey:
    if algorithm == "ES256":
        return ECKey.generate_key("P-256", private=True)
    if algorithm == "RS256":
        return RSAKey.generate_key(RSA_KEY_BITS, private=True)
    raise ValueError(f"unsupported signing algorithm {algorithm!r}")


def _import_private_key(algorithm: str, pem: bytes) -> PrivateKey:
    if algorithm == "ES256":
        return ECKey.import_key(pem)
    return RSAKey.import_key(pem)


def public_jwk(key: PrivateKey, kid: str, algorithm: str) -> dict[str, Any]:
    jwk = {k: v for k, v in key.as_dict(private=False).items() if k not in PRIVATE_JWK_MEMBERS}
    jwk.update(kid=kid, alg=algorithm, use="sig")
    return jwk


def create_signing_key(
    session: Session, cipher: KeyCipher, algorithm: str, now: datetime
) -> SigningKey:
    """Add a new current key at once (an emergency rotation); any previous current key is
    retired but stays published, and a pending next key is discarded.

    Why discard the next key: a rotation that cannot wait is made because key material may
    be exposed, and a next key was stored, sealed and loaded into every process exactly as
    the current one was, so it is as suspect. Left waiting, it would take over signing at its
    scheduled time. It has signed nothing, so it leaves the JWKS without recalling a token."""
    discarded = session.scalars(
        select(SigningKey.kid).where(SigningKey.state == KeyState.NEXT)
    ).all()
    if discarded:
        session.execute(
            update(SigningKey)
            .where(SigningKey.state == KeyState.NEXT)
            .values(state=KeyState.REMOVED, retired_at=now)
            .execution_options(synchronize_session="fetch")
        )
        for kid in discarded:
            record(
                session,
                AuditEventType.KEY_ROTATED,
                now,
                kid=kid,
                state=KeyState.REMOVED.value,
                reason="discarded_by_emergency_rotation",
            )
    key = _generate_private_key(algorithm)
    kid = key.thumbprint()
    session.execute(
        update(SigningKey)
        .where(SigningKey.state == KeyState.CURRENT)
        .values(state=KeyState.RETIRED, retired_at=now)
        .execution_options(synchronize_session="fetch")
    )
    row = SigningKey(
        kid=kid,
        algorithm=algorithm,
        public_jwk=public_jwk(key, kid, algorithm),
        private_key_ciphertext=cipher.seal(key.as_pem(private=True), kid),
        state=KeyState.CURRENT,
        created_at=now,
        activated_at=now,
    )
    session.add(row)
    session.flush()
    record(session, AuditEventType.KEY_ROTATED, now, kid=kid, state=KeyState.CURRENT.value)
    announce_key_change(session)
    return row


def _lock_keys(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        # Several processes run key maintenance; one at a time decides, the others then see
        # its result (SQLite serialises writers anyway).
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _FIRST_KEY_LOCK})


def ensure_signing_key(
    session: Session, cipher: KeyCipher, algorithm: str, now: datetime
) -> SigningKey | None:
    """Create the first key if there is no current one; returns the key created, if any."""
    _lock_keys(session)
    exists = session.scalars(
        select(SigningKey.kid).where(SigningKey.state == KeyState.CURRENT)
    ).first()
    if exists is not None:
        return None
    return create_signing_key(session, cipher, algorithm, now)


class NextKeyPending(Exception):
    """A next key is already published and waiting to become current."""


def add_next_signing_key(
    session: Session, cipher: KeyCipher, algorithm: str, now: datetime
) -> SigningKey:
    """Publish a new key that starts signing only after every JWKS cache has seen it."""
    _lock_keys(session)
    pending = session.scalars(select(SigningKey).where(SigningKey.state == KeyState.NEXT)).first()
    if pending is not None:
        raise NextKeyPending(pending.kid)
    key = _generate_private_key(algorithm)
    kid = key.thumbprint()
    row = SigningKey(
        kid=kid,
        algorithm=algorithm,
        public_jwk=public_jwk(key, kid, algorithm),
        private_key_ciphertext=cipher.seal(key.as_pem(private=True), kid),
        state=KeyState.NEXT,
        created_at=now,
    )
    session.add(row)
    session.flush()
    record(session, AuditEventType.KEY_ROTATED, now, kid=kid, state=KeyState.NEXT.value)
    announce_key_change(session)
    return row


@dataclass(frozen=True)
class KeyRotation:
    """What ``rotate_signing_key`` did. ``outcome``: "first" (there was no key: the new one
    is current), "immediate" (the new key signs at once, the old one is retired, any next
    key waiting is discarded and listed in ``discarded``) or "next" (published, it starts
    signing at ``starts_at``)."""

    outcome: str
    key: SigningKey
    discarded: list[str]
    starts_at: datetime


def rotate_signing_key(
    session: Session,
    cipher: KeyCipher,
    algorithm: str,
    now: datetime,
    *,
    immediately: bool,
    publish_delay: timedelta,
) -> KeyRotation:
    """The operator's rotation (``keys rotate``, the admin API): a next key, published
    ``publish_delay`` before it signs so every JWKS cache meets it first; ``immediately``
    (a compromised key): current at once. NextKeyPending if a next key is waiting."""
    first = ensure_signing_key(session, cipher, algorithm, now)
    if first is not None:
        return KeyRotation("first", first, [], now)
    if immediately:
        pending = [row.kid for row in list_signing_keys(session) if row.state == KeyState.NEXT]
        key = create_signing_key(session, cipher, algorithm, now)
        return KeyRotation("immediate", key, pending, now)
    key = add_next_signing_key(session, cipher, algorithm, now)
    return KeyRotation("next", key, [], now + publish_delay)


@dataclass(frozen=True)
class KeySchedule:
    """When keys change state.

    ``publish_delay``: how long a next key is published before it signs — the JWKS max-age
    plus the processes' own refresh interval, so no cache can meet a kid it has not seen.
    ``retired_for``: how long a retired key stays published — the longest token lifetime
    plus the refresh interval (a process may sign with it that much after retirement).
    ``rotate_every``: automatic rotation period, or None.
    """

    publish_delay: timedelta
    retired_for: timedelta
    rotate_every: timedelta | None = None


def maintain_signing_keys(
    session: Session, cipher: KeyCipher, algorithm: str, now: datetime, schedule: KeySchedule
) -> None:
    """Move keys along their lifecycle; every process may call this, one decides at a time."""
    # ensure_signing_key takes the lock that serialises maintenance for this transaction.
    if ensure_signing_key(session, cipher, algorithm, now) is not None:
        return
    due_next = session.scalars(
        select(SigningKey)
        .where(
            SigningKey.state == KeyState.NEXT, SigningKey.created_at <= now - schedule.publish_delay
        )
        .order_by(SigningKey.created_at)
    ).first()
    if due_next is not None:
        session.execute(
            update(SigningKey)
            .where(SigningKey.state == KeyState.CURRENT)
            .values(state=KeyState.RETIRED, retired_at=now)
            .execution_options(synchronize_session="fetch")
        )
        due_next.state = KeyState.CURRENT
        due_next.activated_at = now
        record(
            session,
            AuditEventType.KEY_ROTATED,
            now,
            kid=due_next.kid,
            state=KeyState.CURRENT.value,
            reason="scheduled",
        )
    session.execute(
        update(SigningKey)
        .where(
            SigningKey.state == KeyState.RETIRED,
            SigningKey.retired_at <= now - schedule.retired_for,
        )
        .values(state=KeyState.REMOVED)
        .execution_options(synchronize_session="fetch")
    )
    if schedule.rotate_every is not None:
        current = session.scalars(
            select(SigningKey).where(SigningKey.state == KeyState.CURRENT)
        ).first()
        pending = session.scalars(
            select(SigningKey.kid).where(SigningKey.state == KeyState.NEXT)
        ).first()
        started = current.activated_at or current.created_at if current else None
        if pending is None and started is not None and started <= now - schedule.rotate_every:
            add_next_signing_key(session, cipher, algorithm, now)
    session.flush()


class UnknownSigningKey(Exception):
    """No signing key has this kid."""


class KeyAlreadyGone(Exception):
    """The key was withdrawn or removed already."""


@dataclass(frozen=True)
class Withdrawal:
    withdrawn: SigningKey
    # The key that signs from now on, when the withdrawn one was signing.
    replacement: SigningKey | None


def withdraw_signing_key(
    session: Session,
    cipher: KeyCipher,
    algorithm: str,
    kid: str,
    now: datetime,
    *,
    stale_for: timedelta,
    token_ttl: timedelta,
) -> Withdrawal:
    """Take a possibly compromised key out of service everywhere at once.

    It never signs again (a current key is replaced by a new one, as in an emergency
    rotation), it leaves the JWKS, and a "kid" entry in the revocation feed recalls every
    token it signed: introspection and the server's own APIs refuse them from this commit,
    resource servers after their next poll, even with the key still in their JWKS cache.
    ``stale_for`` is how long another server process may still sign with it (its key-refresh
    interval), ``token_ttl`` the longest access-token lifetime; together they say how long
    the feed must carry the entry.
    """
    _lock_keys(session)
    row = session.get(SigningKey, kid, populate_existing=True)
    if row is None:
        raise UnknownSigningKey(kid)
    if row.state in (KeyState.WITHDRAWN, KeyState.REMOVED):
        raise KeyAlreadyGone(row.state.value)
    previous = row.state
    replacement = None
    if previous == KeyState.CURRENT:
        replacement = create_signing_key(session, cipher, algorithm, now)
    row.state = KeyState.WITHDRAWN
    row.retired_at = row.retired_at or now
    record_key_withdrawn(session, kid, now, stale_for, token_ttl)
    record(session, AuditEventType.KEY_WITHDRAWN, now, kid=kid, state=previous.value)
    announce_key_change(session)
    session.flush()
    return Withdrawal(withdrawn=row, replacement=replacement)


def list_signing_keys(session: Session) -> list[SigningKey]:
    return list(session.scalars(select(SigningKey).order_by(SigningKey.created_at.desc())))


@dataclass(frozen=True)
class ActiveKey:
    kid: str
    algorithm: str
    private_key: PrivateKey


@dataclass(frozen=True)
class KeySnapshot:
    """What one process signs with and publishes, as of its last read of the table."""

    signing: ActiveKey | None
    jwks_body: bytes
    jwks_etag: str  # the entity tag's opaque value, without quotes
    kids: frozenset[str] = field(default_factory=frozenset)
    # Every published key by kid, for verifying tokens this server issued.
    by_kid: dict[str, ActiveKey] = field(default_factory=dict)


_JWKS_ORDER = {KeyState.CURRENT: 0, KeyState.NEXT: 1, KeyState.RETIRED: 2}


def _snapshot(rows: list[SigningKey], parsed: dict[str, ActiveKey]) -> KeySnapshot:
    published = sorted(rows, key=lambda r: (_JWKS_ORDER.get(r.state, 3), r.kid))
    body = json.dumps(
        {"keys": [row.public_jwk for row in published]}, separators=(",", ":")
    ).encode()
    # The newest current key signs (two can coexist for a moment if two processes raced).
    currents = [r for r in rows if r.state == KeyState.CURRENT]
    current = max(currents, key=lambda r: (r.activated_at or r.created_at, r.kid), default=None)
    return KeySnapshot(
        signing=parsed[current.kid] if current is not None else None,
        jwks_body=body,
        jwks_etag=hashlib.sha256(body).hexdigest()[:32],
        kids=frozenset(r.kid for r in rows),
        by_kid={r.kid: parsed[r.kid] for r in rows},
    )


class KeyRing:
    """The signing keys of this process: parsed once, refreshed on an interval.

    ``load_rows`` reads the published keys from the database; it is called at most once per
    ``refresh_interval`` and only from one thread at a time. Parsed private keys are cached
    by kid, so a refresh that finds nothing new parses nothing.
    """

    def __init__(
        self,
        load_rows: Callable[[], list[SigningKey]],
        cipher: KeyCipher,
        refresh_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load_rows = load_rows
        self._cipher = cipher
        self._interval = refresh_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._parsed: dict[str, ActiveKey] = {}
        self._snapshot: KeySnapshot | None = None
        self._loaded_at = float("-inf")

    def snapshot(self) -> KeySnapshot:
        """The keys as last read; read them now only if they never were."""
        snap = self._snapshot
        if snap is not None:
            return snap
        return self.refresh()

    def loaded(self) -> KeySnapshot | None:
        """The keys as last read, or None if they never were (no database read here)."""
        return self._snapshot

    def refresh_if_due(self) -> None:
        """Re-read the table if the interval has passed. Called at the start of a request,
        before its own transaction opens (on SQLite a second writer inside a request would
        wait on the request's own lock)."""
        if self._snapshot is not None and self._clock() - self._loaded_at < self._interval:
            return
        if self._lock.acquire(blocking=self._snapshot is None):
            try:
                self._refresh_locked()
            except Exception:
                # Never loaded and cannot load now: leave it to the endpoints that need keys
                # to fail (503); the others (health, pages) must still answer.
                log.warning("signing keys could not be loaded yet", exc_info=True)
            finally:
                self._lock.release()

    def refresh(self) -> KeySnapshot:
        with self._lock:
            return self._refresh_locked()

    def _refresh_locked(self) -> KeySnapshot:
        try:
            rows = self._load_rows()
        except Exception:
            if self._snapshot is None:
                raise
            # Database unreachable: keep signing and publishing what we had, retry later.
            self._loaded_at = self._clock()
            return self._snapshot
        try:
            for row in rows:
                if row.kid not in self._parsed:
                    pem = self._cipher.open(row.private_key_ciphertext, row.kid)
                    self._parsed[row.kid] = ActiveKey(
                        kid=row.kid,
                        algorithm=row.algorithm,
                        private_key=_import_private_key(row.algorithm, pem),
                    )
        except KeyDecryptionError:
            if self._snapshot is None:
                raise
            # A key sealed under another key-encryption key (a misconfigured node ran
            # `keys rotate`): keep serving the keys we have rather than fail every request.
            log.exception("signing keys not reloaded; keeping the previous set")
            self._loaded_at = self._clock()
            return self._snapshot
        live = {row.kid for row in rows}
        self._parsed = {kid: key for kid, key in self._parsed.items() if kid in live}
        self._snapshot = _snapshot(rows, self._parsed)
        self._loaded_at = self._clock()
        return self._snapshot


PUBLISHED_STATES = (KeyState.NEXT, KeyState.CURRENT, KeyState.RETIRED)


def published_key_rows(session: Session) -> list[SigningKey]:
    """Every key the JWKS publishes: next, current and retired."""
    return list(session.scalars(select(SigningKey).where(SigningKey.state.in_(PUBLISHED_STATES))))
