"""What a Python resource server imports to accept authserver's access tokens.

    from authserver.resource import TokenVerifier, InvalidToken

    verifier = TokenVerifier("https://auth.example.com", audience="https://api.example.com")
    token = verifier.verify(bearer_token)      # a VerifiedToken, or an InvalidToken subclass
    token.subject, token.scope, token.client_id

    # Authorization: DPoP <token>, with its proof in the DPoP header (RFC 9449 §7.1)
    token = verifier.verify_dpop(dpop_token, proof, method="GET", url="https://api.example.com/x")

Tokens are verified offline (RFC 9068 §4) against the issuer's JWKS, which is discovered from
its metadata (RFC 8414) and cached. A token bound to a key (DPoP, RFC 9449) is refused by
``verify`` and taken by ``verify_dpop`` with a proof signed by that key (see ``dpop``).
Optional extras: a revocation feed polled in the
background (``revocation_feed=True``, see ``revocation_feed``), revocations pushed as Security
Event Tokens (``SecurityEventReceiver``, see ``security_events``), online checks with
``IntrospectionClient`` (RFC 7662), and a Flask decorator in ``authserver.resource.flask``.

This package depends only on the standard library and joserfc (Flask for the ``flask``
module). It imports nothing else from authserver and refers to its own modules relatively, so
it has no need of the server's database code and can be vendored as a directory.
"""

from __future__ import annotations

from .dpop import InvalidDPoPProof, MemoryReplayCache, ReplayCache, UseDPoPNonce
from .errors import (
    BadSignature,
    BindingMismatch,
    DPoPBoundToken,
    IntrospectionFailed,
    InvalidToken,
    JWKSUnavailable,
    MalformedToken,
    NotDPoPBound,
    TokenExpired,
    TokenNotYetValid,
    TokenRevoked,
    UnknownKey,
    WrongAudience,
    WrongIssuer,
    WrongType,
)
from .introspection import IntrospectionClient
from .revocation_feed import RevocationState
from .security_events import PushAnswer, SecurityEventReceiver, SetRejected
from .transport import HttpCall, HttpResponse, make_urllib_http
from .verifier import TokenVerifier, VerifiedToken

__all__ = [
    "BadSignature",
    "BindingMismatch",
    "DPoPBoundToken",
    "HttpCall",
    "HttpResponse",
    "IntrospectionClient",
    "IntrospectionFailed",
    "InvalidDPoPProof",
    "InvalidToken",
    "JWKSUnavailable",
    "MalformedToken",
    "MemoryReplayCache",
    "NotDPoPBound",
    "PushAnswer",
    "ReplayCache",
    "RevocationState",
    "SecurityEventReceiver",
    "SetRejected",
    "TokenExpired",
    "TokenNotYetValid",
    "TokenRevoked",
    "TokenVerifier",
    "UnknownKey",
    "UseDPoPNonce",
    "VerifiedToken",
    "WrongAudience",
    "WrongIssuer",
    "WrongType",
    "make_urllib_http",
]
