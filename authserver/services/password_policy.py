"""The password policy: what a new password must be, wherever one is set.

Every place that sets a password asks ``PasswordPolicy.check`` first: ``authserver users
create``, the account page's change of password, and later reset and sign-up. It follows OWASP
ASVS 5.0 V6.2:

- at least ``min_length`` characters, 8 by default (6.2.1), and long passwords welcome: up to
  ``max_bytes`` of UTF-8, 1024 by default (6.2.9), hashed whole, never truncated (6.2.8);
- no composition rules: no demand for digits, capitals or symbols (6.2.5);
- refused when easily guessed (6.2.4, 6.2.11): zxcvbn estimates how many guesses a password
  would take from its bundled frequency lists (common passwords, English words, names), keyboard
  patterns, dates, repeats and sequences, and from the context words of ``context_words``:
  the account's address and its parts and the service's name (ASVS 6.1.2 asks for that list
  to be documented; the README's configuration section names it). A password whose score
  (0-4) is below ``min_score`` is refused, with zxcvbn's reason. Score 3 means about 10^8
  guesses or more: out of reach online, and slow even offline against argon2id.

Nothing leaves the process: no list to download, no breached-password service to ask.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from zxcvbn import zxcvbn

from authserver.services.passwords import PasswordRejected, fits_in_bytes

SERVICE_NAME = "authserver"
# zxcvbn's own limit, for its running time: its matching grows with the square of the length
# (about 35 ms at 72 characters). A longer password is judged by its first 72 characters: a
# guess of the whole password must get those right too, so the whole is at least that hard.
ANALYSED_CHARACTERS = 72
# Shorter words would match inside almost any password and mean nothing.
MIN_CONTEXT_WORD_LENGTH = 3
FALLBACK_ADVICE = "Try a longer password: a few uncommon words together are easy to remember."

# zxcvbn keeps a call's context words in a module-level dictionary while it runs, so two
# threads checking at once would each score against the other's words.
_zxcvbn_lock = threading.Lock()


@dataclass(frozen=True)
class PasswordPolicy:
    min_length: int = 8
    max_bytes: int = 1024
    # zxcvbn's score (0-4) a new password must reach; 0 turns the guessability check off.
    min_score: int = 3
    # Words of this service that a password must not lean on, besides the account's address.
    site_words: tuple[str, ...] = (SERVICE_NAME,)

    @classmethod
    def for_issuer(
        cls, issuer: str, *, min_length: int, max_bytes: int, min_score: int
    ) -> PasswordPolicy:
        """The policy of a server at ``issuer``: its host's labels join the site words."""
        return cls(
            min_length=min_length,
            max_bytes=max_bytes,
            min_score=min_score,
            site_words=(SERVICE_NAME, *_host_words(issuer)),
        )

    def check(self, password: str, *, email: str) -> None:
        """Raise ``PasswordRejected``, saying why in one line, unless ``password`` may be the
        new password of the account with this (normalised) address."""
        if not fits_in_bytes(password, self.max_bytes):
            raise PasswordRejected.too_long(self.max_bytes)
        if len(password) < self.min_length:
            raise PasswordRejected(f"password must be at least {self.min_length} characters")
        if self.min_score == 0:
            return
        estimate = _estimate(password, self.context_words(email))
        if estimate["score"] < self.min_score:
            raise PasswordRejected(_reason(estimate))

    def context_words(self, email: str) -> list[str]:
        """The words a password of this account must not be built from (ASVS 6.1.2): the
        address; its local part, the local part's pieces (split at ``. _ + -``) and those
        pieces run together; the domain and its labels; the local part (as typed, and run
        together) joined to each domain label but the last, directly or by ``.`` or ``@``; then
        the site words. Most telling first, as zxcvbn ranks them; none shorter than 3."""
        local, _, domain = email.rpartition("@")
        pieces = [piece for piece in re.split(r"[._+-]+", local) if piece]
        labels = [label for label in domain.split(".") if label]
        locals_ = [local, "".join(pieces)]
        candidates = [email, local, *pieces, "".join(pieces), domain, *labels]
        candidates += [
            f"{form}{joiner}{label}"
            for label in labels[:-1]
            for form in locals_
            for joiner in ("", ".", "@")
        ]
        candidates += self.site_words
        words: list[str] = []
        for word in candidates:
            if len(word) >= MIN_CONTEXT_WORD_LENGTH and word not in words:
                words.append(word)
        return words

    def describe(self) -> str:
        """One sentence for a password form, true to this policy."""
        length = f"At least {self.min_length} characters."
        if self.min_score == 0:
            return length
        return (
            f"{length} Common passwords, easily guessed ones and ones built from your "
            "address are refused; a few uncommon words together make a good one."
        )


def _estimate(password: str, context_words: list[str]) -> dict[str, Any]:
    with _zxcvbn_lock:
        result: dict[str, Any] = zxcvbn(
            password[:ANALYSED_CHARACTERS],
            user_inputs=context_words,
            max_length=ANALYSED_CHARACTERS,
        )
    return result


def _reason(estimate: dict[str, Any]) -> str:
    """zxcvbn's warning and suggestions as one line; never any part of the password."""
    sentences = ["This password is too easy to guess."]
    if any(match.get("dictionary_name") == "user_inputs" for match in estimate["sequence"]):
        sentences.append("It contains your address or the name of this service.")
    feedback = estimate["feedback"]
    if feedback["warning"]:
        sentences.append(feedback["warning"])
    sentences.extend(feedback["suggestions"])
    if len(sentences) == 1:
        sentences.append(FALLBACK_ADVICE)
    return " ".join(sentences)


def _host_words(issuer: str) -> list[str]:
    """The labels of the issuer's host name, less the top-level domain: a company's name is
    the first thing its users reach for. An IP address or a one-label host gives none."""
    host = urlsplit(issuer).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host.split(".")[:-1]
    return []
