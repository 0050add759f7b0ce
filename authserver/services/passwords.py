"""Password hashing with argon2id.

Parameters default to OWASP's minimum for argon2id (m=19 MiB, t=2, p=1; Password Storage
Cheat Sheet) and are settable. Each hash costs ``memory_cost`` KiB for its duration, so the
number of hashes in flight is bounded by a semaphore sized to the cores: a burst of sign-ins
queues instead of multiplying memory.
"""

from __future__ import annotations

import threading

from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from authserver.errors import ValidationError


class PasswordRejected(ValidationError):
    """The password breaks the length policy; nothing was hashed."""


class PasswordHasher:
    def __init__(
        self,
        *,
        time_cost: int,
        memory_cost_kib: int,
        parallelism: int,
        max_bytes: int,
        min_length: int,
        concurrency: int,
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
        self.min_length = min_length
        self._slots = threading.BoundedSemaphore(concurrency)
        # Verified when the email is unknown, so both answers take one hash's time.
        self._dummy_hash = self._argon2.hash("authserver-timing-equaliser")

    def fits(self, password: str) -> bool:
        """Whether the password is short enough to be hashed at all.

        Checked before hashing: argon2 pre-hashes any length, but a megabyte-long password
        still costs bandwidth and time for nothing.
        """
        try:
            encoded = password.encode("utf-8")
        except UnicodeEncodeError:
            return False  # lone surrogates (from undecodable CLI bytes) are not a password
        return len(encoded) <= self.max_bytes

    def hash(self, password: str) -> str:
        if not self.fits(password):
            raise PasswordRejected(
                f"password must be valid text of at most {self.max_bytes} bytes in UTF-8"
            )
        if len(password) < self.min_length:
            raise PasswordRejected(f"password must be at least {self.min_length} characters")
        return self.rehash(password)

    def rehash(self, password: str) -> str:
        """Hash a password already accepted once (on sign-in), skipping the policy checks."""
        with self._slots:
            return self._argon2.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        if not self.fits(password):
            return False
        with self._slots:
            try:
                return self._argon2.verify(password_hash, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

    def verify_dummy(self, password: str) -> None:
        """Spend the time of one verification, for an account that does not exist."""
        self.verify(self._dummy_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        return self._argon2.check_needs_rehash(password_hash)
