"""A software WebAuthn authenticator for the flow tests: a real ES256 key pair, real
authenticator data (flags, signature counter, attested credential data) and real
clientDataJSON, as a browser and an authenticator would make them (WebAuthn §6.1, §6.5,
§5.8.1). Nothing of authserver's is imitated: the server verifies what this signs.

Its knobs are the ones an attacker or a broken authenticator turns: the origin and RP ID it
signs for, the counter it reports, whether it verified the user, whether the credential is
backup eligible."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def from_b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SoftAuthenticator:
    origin: str
    rp_id: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    credential_id: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    sign_count: int = 0
    counts: bool = True  # False: an authenticator that keeps no counter (reports 0)
    backup_eligible: bool = False
    user_handle: bytes | None = None

    def _flags(self, *, verified: bool, attested: bool = False) -> int:
        flags = UP | (UV if verified else 0) | (AT if attested else 0)
        if self.backup_eligible:
            flags |= BE | BS
        return flags

    def _client_data(self, kind: str, challenge: bytes, origin: str | None) -> bytes:
        return json.dumps(
            {
                "type": kind,
                "challenge": b64url(challenge),
                "origin": origin or self.origin,
                "crossOrigin": False,
            }
        ).encode()

    def _cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return bytes(
            cbor2.dumps(
                {
                    1: 2,  # kty: EC2
                    3: -7,  # alg: ES256
                    -1: 1,  # crv: P-256
                    -2: numbers.x.to_bytes(32, "big"),
                    -3: numbers.y.to_bytes(32, "big"),
                }
            )
        )

    def register(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        verified: bool = True,
    ) -> dict[str, Any]:
        """The PublicKeyCredential (JSON) ``navigator.credentials.create(options)`` returns."""
        self.user_handle = from_b64url(options["user"]["id"])
        challenge = from_b64url(options["challenge"])
        rp_hash = hashlib.sha256((rp_id or self.rp_id).encode()).digest()
        auth_data = (
            rp_hash
            + bytes([self._flags(verified=verified, attested=True)])
            + struct.pack(">I", self.sign_count)
            + bytes(16)  # AAGUID: none
            + struct.pack(">H", len(self.credential_id))
            + self.credential_id
            + self._cose_key()
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(self._client_data("webauthn.create", challenge, origin)),
                "attestationObject": b64url(bytes(attestation)),
                "transports": ["internal"],
            },
        }

    def get_assertion(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        verified: bool = True,
        sign_count: int | None = None,
    ) -> dict[str, Any]:
        """The PublicKeyCredential (JSON) ``navigator.credentials.get(options)`` returns;
        the counter moves on by one unless ``sign_count`` says what to report."""
        if sign_count is None:
            if self.counts:
                self.sign_count += 1
            sign_count = self.sign_count if self.counts else 0
        challenge = from_b64url(options["challenge"])
        client_data = self._client_data("webauthn.get", challenge, origin)
        auth_data = (
            hashlib.sha256((rp_id or self.rp_id).encode()).digest()
            + bytes([self._flags(verified=verified)])
            + struct.pack(">I", sign_count)
        )
        signature = self.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        response = {
            "clientDataJSON": b64url(client_data),
            "authenticatorData": b64url(auth_data),
            "signature": b64url(signature),
        }
        if self.user_handle is not None:
            response["userHandle"] = b64url(self.user_handle)
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": response,
        }
