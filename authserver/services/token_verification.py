"""Verification of tokens this server issued, by this server (userinfo, the account API,
``id_token_hint``). Keys come from the in-memory key ring, chosen by ``kid``; the algorithm
comes from the key, never from the token header."""

from __future__ import annotations

import base64
import json
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError

from authserver.services.keys import KeyRing

MAX_TOKEN_LENGTH = 8192


class TokenRejected(Exception):
    """The token is not one this server issued, or is no longer valid."""


def _kid_of(token: str) -> str | None:
    """The kid named in the (not yet verified) header; used only to pick a key."""
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None


def verify_own_token(
    keys: KeyRing,
    token: str,
    *,
    issuer: str,
    typ: str,
    now: int,
    check_expiry: bool = True,
) -> dict[str, Any]:
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise TokenRejected("malformed")
    kid = _kid_of(token)
    key = keys.snapshot().by_kid.get(kid) if kid else None
    if key is None:
        raise TokenRejected("unknown key")
    try:
        decoded = jwt.decode(token, key.private_key, algorithms=[key.algorithm])
    except (JoseError, ValueError) as exc:
        raise TokenRejected("bad signature") from exc
    if str(decoded.header.get("typ", "")).lower() != typ.lower():
        raise TokenRejected("wrong type")
    claims: dict[str, Any] = dict(decoded.claims)
    if claims.get("iss") != issuer:
        raise TokenRejected("wrong issuer")
    exp = claims.get("exp")
    if not isinstance(exp, int):
        raise TokenRejected("no expiry")
    if check_expiry and exp <= now:
        raise TokenRejected("expired")
    return claims
