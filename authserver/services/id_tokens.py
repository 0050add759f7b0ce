"""OpenID Connect ID tokens (OpenID Connect Core 1.0 §2, §3.1.3.6)."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

from joserfc import jwt

from authserver.services.acr import acr_of
from authserver.services.keys import KeyRing


def at_hash(access_token: str, algorithm: str) -> str:
    """Core §3.1.3.6: left half of the hash of the access token, base64url. ES256 and RS256
    both hash with SHA-256."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


def issue_id_token(
    keys: KeyRing,
    *,
    issuer: str,
    subject: str,
    client_id: str,
    auth_time: datetime,
    amr: str,
    ttl: int,
    now: datetime,
    nonce: str | None,
    access_token: str | None,
    session_id: str | None,
) -> str:
    signing = keys.snapshot().signing
    if signing is None:
        raise RuntimeError("no current signing key")
    issued_at = int(now.timestamp())
    claims: dict[str, object] = {
        "iss": issuer,
        "sub": subject,
        "aud": client_id,
        "exp": issued_at + ttl,
        "iat": issued_at,
        "auth_time": int(auth_time.timestamp()),
        # Core §2: how the user authenticated, RFC 8176 values ("pwd", ...), a JSON array,
        # and the class that reaches (services/acr.py).
        "amr": amr.split(),
        "acr": acr_of(amr),
    }
    if nonce:
        claims["nonce"] = nonce
    if access_token:
        claims["at_hash"] = at_hash(access_token, signing.algorithm)
    if session_id:
        claims["sid"] = session_id
    # typ "JWT", never "at+jwt": an ID token must not pass as an access token (RFC 9068 §2.1).
    header = {"typ": "JWT", "alg": signing.algorithm, "kid": signing.kid}
    return jwt.encode(header, claims, signing.private_key, algorithms=[signing.algorithm])
