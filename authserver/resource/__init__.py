"""What a Python resource server imports to accept authserver's access tokens.

    from authserver.resource import TokenVerifier, InvalidToken

    verifier = TokenVerifier("https://auth.example.com", audience="https://api.example.com")
    token = verifier.verify(bearer_token)      # a VerifiedToken, or an InvalidToken subclass
    token.subject, token.scope, token.client_id

Tokens are verified offline (RFC 9068 §4) against the issuer's JWKS, which is discovered from
its metadata (RFC 8414) and cached. Optional extras: a revocation feed polled in the
background (``revocation_feed=True``, see ``revocation_feed``), revocations pushed as Security
Event Tokens (``SecurityEventReceiver``, see ``security_events``), online checks with
``IntrospectionClient`` (RFC 7662), and a Flask decorator in ``authserver.resource.flask``.

This package depends only on the standard library and joserfc (Flask for the ``flask``
module). It imports nothing else from authserver and refers to its own modules relatively, so
it has no need of the server's database code and can be vendored as a directory.
"""

from __future__ import annotations

from .errors import (
    BadSignature,
    IntrospectionFailed,
    InvalidToken,
    JWKSUnavailable,
    MalformedToken,
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
    "HttpCall",
    "HttpResponse",
    "IntrospectionClient",
    "IntrospectionFailed",
    "InvalidToken",
    "JWKSUnavailable",
    "MalformedToken",
    "PushAnswer",
    "RevocationState",
    "SecurityEventReceiver",
    "SetRejected",
    "TokenExpired",
    "TokenNotYetValid",
    "TokenRevoked",
    "TokenVerifier",
    "UnknownKey",
    "VerifiedToken",
    "WrongAudience",
    "WrongIssuer",
    "WrongType",
    "make_urllib_http",
]
