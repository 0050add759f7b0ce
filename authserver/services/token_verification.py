"""Verification of tokens this server issued, by this server (userinfo, the account API,
``id_token_hint``, the ``token`` of revocation and introspection). Every token is taken apart
by ``jose_input`` before joserfc sees it. Keys come from the in-memory key ring, chosen by
``kid``; the algorithm comes from the key, never from the token header."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError

from authserver.services.jose_input import MalformedJws, parse_compact_jws
from authserver.services.keys import KeyRing

# What authserver writes in every header (services.access_tokens, services.id_tokens). A
# member it never writes ("jku", "x5u", "jwk", "x5c", "zip", ...) means the token is not one
# of its own; refusing it also means joserfc never acts on one (RFC 8725 §3.10).
OWN_HEADER_MEMBERS = frozenset({"alg", "kid", "typ"})


class TokenRejected(Exception):
    """The token is not one this server issued, or is no longer valid."""


@dataclass(frozen=True)
class OwnToken:
    """A token this server signed: its claims and the kid of the key that signed it (a
    withdrawn key recalls every token it signed, services.revocations.KID)."""

    claims: dict[str, Any]
    key_id: str


def verify_own_token(
    keys: KeyRing,
    token: str,
    *,
    issuer: str,
    typ: str,
    now: int,
    check_expiry: bool = True,
) -> OwnToken:
    """The claims of ``token`` if this server signed it with a key it still publishes, with
    header ``typ`` and ``iss`` as given and (with ``check_expiry``) not expired; else
    ``TokenRejected``, whatever the caller sent."""
    try:
        parsed = parse_compact_jws(token)
    except MalformedJws as exc:
        raise TokenRejected(f"malformed: {exc.reason}") from None
    if not parsed.header.keys() <= OWN_HEADER_MEMBERS:
        raise TokenRejected("header member authserver never writes")
    key = keys.snapshot().by_kid.get(parsed.key_id) if parsed.key_id else None
    if key is None:
        raise TokenRejected("unknown key")
    # RFC 8725 §3.1: the algorithm is the key's; a header naming another one is refused.
    if parsed.algorithm != key.algorithm:
        raise TokenRejected("wrong algorithm")
    # RFC 7515 §4.1.9: media type names compare case-insensitively.
    if (parsed.media_type or "").lower() != typ.lower():
        raise TokenRejected("wrong type")
    try:
        decoded = jwt.decode(token, key.private_key, algorithms=[key.algorithm])
    except JoseError as exc:
        # What joserfc can still refuse in a token jose_input accepted: a signature that does
        # not verify (BadSignatureError), claims that are not a JSON object
        # (InvalidPayloadError). Anything else it raised would be a bug to see, not hide.
        raise TokenRejected("bad signature") from exc
    claims: dict[str, Any] = dict(decoded.claims)
    if claims.get("iss") != issuer:
        raise TokenRejected("wrong issuer")
    exp = claims.get("exp")
    if not isinstance(exp, int):
        raise TokenRejected("no expiry")
    if check_expiry and exp <= now:
        raise TokenRejected("expired")
    return OwnToken(claims=claims, key_id=key.kid)
