"""A DPoP client's key and the proofs it makes (RFC 9449 §4.2), for tests: each proof can be
bent in one way to check that the server refuses it."""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

from joserfc.jwk import ECKey, RSAKey
from joserfc.jws import JWSRegistry

from authserver.resource.dpop import access_token_hash


class DPoPKey:
    def __init__(self, algorithm: str = "ES256") -> None:
        self.algorithm = algorithm
        self.key: ECKey | RSAKey = (
            RSAKey.generate_key(2048)
            if algorithm[:2] in ("RS", "PS")
            else ECKey.generate_key(
                {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[algorithm]
            )
        )

    @property
    def jkt(self) -> str:
        """The RFC 7638 thumbprint of the public key: what cnf.jkt must hold."""
        return str(self.key.thumbprint())

    @property
    def public_jwk(self) -> dict[str, Any]:
        return dict(self.key.as_dict(private=False))

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
        issued_at: float | None = None,
        jti: str | None = None,
        header: dict[str, Any] | None = None,
        claims: dict[str, Any] | None = None,
        drop: tuple[str, ...] = (),
    ) -> str:
        """A proof for a ``method`` request to ``url``; ``header`` and ``claims`` override or
        add members, ``drop`` removes claims."""
        payload: dict[str, Any] = {
            "jti": jti or secrets.token_urlsafe(16),
            "htm": method,
            "htu": url,
            "iat": int(time.time() if issued_at is None else issued_at),
        }
        if access_token is not None:
            payload["ath"] = access_token_hash(access_token)
        if nonce is not None:
            payload["nonce"] = nonce
        payload.update(claims or {})
        for name in drop:
            payload.pop(name, None)
        protected: dict[str, Any] = {
            "typ": "dpop+jwt",
            "alg": self.algorithm,
            "jwk": self.public_jwk,
        }
        protected.update(header or {})
        protected = {name: value for name, value in protected.items() if value is not None}
        # Signed by hand rather than by joserfc's serializer, which would refuse to write
        # the broken headers some tests need (no jwk, a "crit" member).
        signing_input = f"{_segment(protected)}.{_segment(payload)}"
        signature = JWSRegistry.algorithms[self.algorithm].sign(signing_input.encode(), self.key)
        return f"{signing_input}.{_base64url(signature)}"


def _segment(value: dict[str, Any]) -> str:
    return _base64url(json.dumps(value, separators=(",", ":")).encode())


def _base64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
