"""How strongly and how recently the user signed in, as an access token says it (RFC 9068
§2.2.1 ``acr`` and ``auth_time``), and whether that is enough for a resource (RFC 9470).

authserver's authentication context classes, weakest first; a stronger one satisfies a
request for a weaker one:

- ``urn:authserver:acr:password``: one factor;
- ``urn:authserver:acr:mfa``: two factors.
"""

from __future__ import annotations

import time

from .verifier import VerifiedToken

ACR_PASSWORD = "urn:authserver:acr:password"  # noqa: S105 (a class name, not a password)
ACR_MFA = "urn:authserver:acr:mfa"
ACR_CLASSES = (ACR_PASSWORD, ACR_MFA)
_LEVEL = {value: level for level, value in enumerate(ACR_CLASSES)}


def acr_satisfies(token_acr: str | None, required: str) -> bool:
    """Whether a token of class ``token_acr`` is enough where ``required`` is asked. Classes
    authserver does not define are compared as they are."""
    if token_acr is None:
        return False
    if token_acr in _LEVEL and required in _LEVEL:
        return _LEVEL[token_acr] >= _LEVEL[required]
    return token_acr == required


def token_acr(token: VerifiedToken) -> str | None:
    value = token.claims.get("acr")
    return value if isinstance(value, str) else None


def token_auth_time(token: VerifiedToken) -> int | None:
    value = token.claims.get("auth_time")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def signed_in_within(token: VerifiedToken, max_age: int, now: float | None = None) -> bool:
    """Whether the user signed in at most ``max_age`` seconds ago (a token that does not say
    when is not)."""
    auth_time = token_auth_time(token)
    current = time.time() if now is None else now
    return auth_time is not None and current - auth_time <= max_age
