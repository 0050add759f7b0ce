"""Password hashing with argon2id.

Parameters default to OWASP's minimum for argon2id (m=19 MiB, t=2, p=1; Password Storage
Cheat Sheet) and are settable. Each hash costs ``memory_cost`` KiB for its duration, so the
number of hashes in flight is bounded by a semaphore sized to the cores: a burst of sign-ins
queues instead of multiplying memory.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from authserver.errors import TemporarilyUnavailable, ValidationError


class HashingBusy(TemporarilyUnavailable):
    """Every hashing slot stayed busy for the whole queue timeout."""

    default_description = "The server is busy signing people in; retry in a moment."


class PasswordRejected(ValidationError):
    """A new password that breaks the password policy (``services/password_policy.py``);
    nothing was hashed. The description says why, and never contains the password."""

    @classmethod
    def too_long(cls, max_bytes: int) -> PasswordRejected:
        return cls(f"password must be valid text of at most {max_bytes} bytes in UTF-8")


def fits_in_bytes(password: str, max_bytes: int) -> bool:
    """Whether the password is valid text of at most ``max_bytes`` bytes in UTF-8."""
    try:
        encoded = password.encode("utf-8")
    except UnicodeEncodeError:
        return False  # lone surrogates (from undecodable CLI bytes) are not a password
    return len(encoded) <= max_bytes


class PasswordHasher:
    def __init__(
        self,
        *,
        time_cost: int,
        memory_cost_kib: int,
        parallelism: int,
        max_bytes: int,
        concurrency: int,
        queue_timeout: float = 2.0,
    ) -> None:
        self._argon2 = Argon2Hasher(
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self.max_bytes = max_bytes
        self._slots = threading.BoundedSemaphore(concurrency)
        self.queue_timeout = queue_timeout
        self._count_lock = threading.Lock()
        self.in_flight = 0
        # The most hashes ever computed at once in this process (memory = this x m_cost).
        self.peak_in_flight = 0
        # Verified when the email is unknown, so both answers take one hash's time.
        self._dummy_hash = self._argon2.hash("authserver-timing-equaliser")

    def fits(self, password: str) -> bool:
        """Whether the password is short enough to be hashed at all.

        Checked before hashing: argon2 pre-hashes any length, but a megabyte-long password
        still costs bandwidth and time for nothing.
        """
        return fits_in_bytes(password, self.max_bytes)

    def hash(self, password: str) -> str:
        """Hash a new password. Whether it is acceptable is the password policy's question
        (``PasswordPolicy.check``), asked before this; the one rule kept here is the one
        ``verify`` enforces, so that no stored hash can be one that never verifies."""
        if not self.fits(password):
            raise PasswordRejected.too_long(self.max_bytes)
        return self.rehash(password)

    def rehash(self, password: str) -> str:
        """Hash a password already accepted once (on sign-in), skipping every check."""
        with self._slot():
            return self._argon2.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        if not self.fits(password):
            return False
        with self._slot():
            try:
                return self._argon2.verify(password_hash, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

    @contextmanager
    def _slot(self) -> Iterator[None]:
        """A hashing slot, waited for at most ``queue_timeout``: under a burst of sign-ins the
        excess waits briefly, then gets a 503 with Retry-After instead of piling up."""
        if not self._slots.acquire(timeout=self.queue_timeout):
            raise HashingBusy()
        with self._count_lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self._count_lock:
                self.in_flight -= 1
            self._slots.release()

    def verify_dummy(self, password: str) -> None:
        """Spend the time of one verification, for an account that does not exist."""
        self.verify(self._dummy_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        return self._argon2.check_needs_rehash(password_hash)
