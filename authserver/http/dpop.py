"""The DPoP header of a request (RFC 9449 §4.1), checked where this server reads one: the
token endpoint, and the APIs it protects itself (userinfo, the account API, the admin API).

``presented_proof`` checks the proof with the resource kit's ``check_proof`` (every check of
§4.3), then records it, so no process of this server accepts it twice (§11.1). The URL a
proof must name is the issuer's URL of the endpoint, as the metadata publishes it, not the
URL the request reached this process by (a proxy in front may rewrite it).
"""

from __future__ import annotations

from flask import g, request

from authserver.db import db
from authserver.models import Client
from authserver.resource.dpop import (
    DPoPProof,
    InvalidDPoPProof,
    check_proof,
)
from authserver.runtime import runtime
from authserver.services.dpop_proofs import remember_proof

DPOP_HEADER = "DPoP"
NONCE_HEADER = "DPoP-Nonce"


def endpoint_url() -> str:
    """The public URL of the endpoint this request is for: what ``htu`` must name."""
    return runtime().config.issuer + request.path


def current_nonce() -> str | None:
    """The nonce proofs must carry now, or None when the server asks for none."""
    rt = runtime()
    return rt.dpop_nonces.current(rt.now()) if rt.dpop_nonces is not None else None


def presented_proof(*, access_token: str | None = None) -> DPoPProof | None:
    """The request's DPoP proof, checked and recorded; None when it carries none.

    Raises the kit's ``InvalidDPoPProof`` (``UseDPoPNonce`` when the nonce is missing or
    stale); each caller answers it in its own way (an OAuth error at the token endpoint, a
    ``WWW-Authenticate: DPoP`` challenge at an API)."""
    proofs = request.headers.getlist(DPOP_HEADER)
    if not proofs:
        return None
    # RFC 9449 §4.3 step 1: exactly one DPoP header. A WSGI server joins repeated headers
    # with commas into one, and a proof (base64url and dots) holds no comma.
    if len(proofs) > 1 or "," in proofs[0]:
        raise InvalidDPoPProof("Send one DPoP proof, not several.")
    rt = runtime()
    now = rt.now()
    nonces = rt.dpop_nonces
    proof = check_proof(
        proofs[0],
        method=request.method,
        url=endpoint_url(),
        now=now.timestamp(),
        access_token=access_token,
        nonce_is_current=(
            (lambda nonce: nonces.is_current(nonce, now)) if nonces is not None else None
        ),
    )
    if not remember_proof(db.session, proof):
        raise InvalidDPoPProof("The DPoP proof was used before.")
    return proof


def remember_token_request_proof(proof: DPoPProof | None) -> None:
    """The token endpoint's proof, for the grant that issues the tokens."""
    g.dpop_proof = proof


def token_request_key() -> str | None:
    """The thumbprint of the key the token request proved it holds (RFC 9449 §5): what the
    access token issued to it is bound to (``cnf.jkt``). None without a proof."""
    proof: DPoPProof | None = g.get("dpop_proof")
    return proof.jkt if proof is not None else None


def family_key(client: Client) -> str | None:
    """The key a new refresh family is bound to for its whole life (RFC 9449 §5): the
    proof's, for a public client. A confidential client's refresh token is bound to the
    client by its authentication, and it may use another key for its next access token."""
    return token_request_key() if client.is_public else None
