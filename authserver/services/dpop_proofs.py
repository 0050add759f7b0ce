"""What the server remembers about DPoP proofs (RFC 9449): which it has accepted, so none is
accepted twice by any of its processes (§11.1), and the nonces it hands out (§8).

The proof itself is checked by ``authserver.resource.dpop.check_proof``, the function the
resource-server kit uses too; the HTTP side (which header, which answer) is ``http/dpop.py``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Insert, Table, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from authserver.db import execute_alone
from authserver.models import DPoPProofSeen
from authserver.resource.dpop import DPoPProof

# How long one nonce is current; the one before it is still accepted, so a nonce works for
# between one and two periods and a client fetches a new one at most every period.
NONCE_PERIOD_SECONDS = 300
_NONCE_KEY_LABEL = b"authserver DPoP nonce key v1"

_SEEN = cast(Table, DPoPProofSeen.__table__)


@functools.cache
def _remember_statement(dialect: str) -> Insert:
    # INSERT ... ON CONFLICT DO NOTHING RETURNING: one statement decides, under the primary
    # key's lock, which of two requests carrying the same proof is first. The second waits
    # for the first to commit, then inserts nothing. Both dialects spell it alike.
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(_SEEN)
        .values(replay_key=bindparam("replay_key"), expires_at=bindparam("expires_at"))
        .on_conflict_do_nothing(index_elements=[_SEEN.c.replay_key])
        .returning(_SEEN.c.replay_key)
    )


def remember_proof(session: Session, proof: DPoPProof) -> bool:
    """Record ``proof`` as accepted; False if it was accepted before (a replay). Committed on
    its own where the request has not begun a transaction yet, so a request that fails
    later has still spent its proof: a client makes a new proof for every request (RFC
    9449 §4.1). ``purge`` forgets the proofs past their window."""
    expires_at = datetime.fromtimestamp(proof.acceptable_until, UTC)
    dialect = session.get_bind().dialect.name
    params: dict[str, Any] = {"replay_key": proof.replay_key, "expires_at": expires_at}
    return bool(execute_alone(session, _remember_statement(dialect), params))


class DPoPNonces:
    """Nonces the server hands out (RFC 9449 §8) without storing them: a nonce is a period
    number and its MAC under a key derived from ``AUTHSERVER_SECRET_KEY``, so every process
    makes and accepts the same ones. It tells a client nothing but the period."""

    def __init__(self, secret_key: str) -> None:
        self._key = hmac.new(secret_key.encode(), _NONCE_KEY_LABEL, hashlib.sha256).digest()

    def _for_period(self, period: int) -> str:
        mac = hmac.new(self._key, str(period).encode(), hashlib.sha256).digest()[:16]
        return f"{period}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"

    def current(self, now: datetime) -> str:
        return self._for_period(int(now.timestamp()) // NONCE_PERIOD_SECONDS)

    def is_current(self, nonce: str, now: datetime) -> bool:
        """Whether ``nonce`` is this period's or the previous one's."""
        period_text, _, _ = nonce.partition(".")
        if not period_text.isascii() or not period_text.isdigit() or len(period_text) > 12:
            return False
        period = int(period_text)
        this_period = int(now.timestamp()) // NONCE_PERIOD_SECONDS
        if period not in (this_period, this_period - 1):
            return False
        return hmac.compare_digest(nonce.encode(), self._for_period(period).encode())
