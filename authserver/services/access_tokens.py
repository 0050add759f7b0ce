"""JWT access tokens per RFC 9068."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from joserfc import jwt

from authserver.services.acr import acr_of
from authserver.services.keys import KeyRing


class NoSigningKey(RuntimeError):
    """There is no current signing key; run `authserver keys rotate` or restart."""


@dataclass(frozen=True)
class IssuedAccessToken:
    token: str
    jti: str
    expires_in: int
    # The token's exp claim, for whoever must remember the token until then (a denylist).
    expires_at: datetime
    # RFC 9449 §5: "DPoP" for a token bound to a key (cnf.jkt), else RFC 6750's "Bearer".
    token_type: str = "Bearer"  # noqa: S105 (a token type, not a secret)


class AccessTokenIssuer:
    def __init__(self, issuer: str, keys: KeyRing) -> None:
        self.issuer = issuer
        self.keys = keys

    def issue(
        self,
        *,
        subject: str,
        client_id: str,
        audience: str,
        scope: str,
        ttl: int,
        now: datetime,
        family_id: uuid.UUID | None = None,
        auth_time: datetime | None = None,
        amr: str | None = None,
        dpop_jkt: str | None = None,
    ) -> IssuedAccessToken:
        """Sign an access token.

        RFC 9068 §2.2 claims: iss, exp, aud, sub, client_id, iat, jti, and scope when there
        is one; ``sid`` names the refresh family, so revoking the family can reach tokens a
        resource server verifies offline. Nothing personal (email, name) goes in: the token
        is readable by anyone who holds it. With ``dpop_jkt``, the token is bound to that
        key (RFC 9449 §6.1 ``cnf.jkt``): it works only beside a proof signed with it.
        """
        signing = self.keys.snapshot().signing
        if signing is None:
            raise NoSigningKey("no current signing key")
        issued_at = int(now.timestamp())
        expires = issued_at + ttl
        jti = secrets.token_urlsafe(16)
        claims: dict[str, object] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "exp": expires,
            "iat": issued_at,
            "jti": jti,
            "client_id": client_id,
        }
        if scope:
            claims["scope"] = scope
        if family_id is not None:
            claims["sid"] = str(family_id)
        # RFC 9068 §2.2.1: when and how strongly the user authenticated, where known (not for
        # client_credentials, nor for families from before they were kept), so a resource
        # server can ask for more (RFC 9470).
        if auth_time is not None:
            claims["auth_time"] = int(auth_time.timestamp())
        if amr is not None:
            claims["acr"] = acr_of(amr)
        if dpop_jkt is not None:
            claims["cnf"] = {"jkt": dpop_jkt}
        # RFC 9068 §2.1: typ "at+jwt" keeps an access token from passing as an ID token.
        header = {"typ": "at+jwt", "alg": signing.algorithm, "kid": signing.kid}
        token = jwt.encode(header, claims, signing.private_key, algorithms=[signing.algorithm])
        return IssuedAccessToken(
            token=token,
            jti=jti,
            expires_in=ttl,
            expires_at=datetime.fromtimestamp(expires, UTC),
            token_type="DPoP" if dpop_jkt is not None else "Bearer",
        )
