"""Authentication context classes (OpenID Connect Core 1.0 §2 ``acr``, §3.1.2.1
``acr_values``; RFC 9068 §2.2.1; RFC 9470): how strongly the user was authenticated, as a
level a client or a resource server can ask for.

authserver defines two, weakest first, and derives them from the sign-in's ``amr`` (RFC 8176):

- ``urn:authserver:acr:password``: one factor (a password);
- ``urn:authserver:acr:mfa``: two factors (``amr`` has ``mfa``: a password and a code from an
  authenticator app or a recovery code).

A stronger level satisfies a request for a weaker one. Values authserver does not define are
ignored in a request (``acr_values`` is a list of acceptable values, Core §3.1.2.1); a request
that names none of ours asks for nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from authserver.resource.authentication import ACR_CLASSES, ACR_MFA, ACR_PASSWORD

__all__ = [
    "ACR_MFA",
    "ACR_PASSWORD",
    "ACR_VALUES",
    "acr_of",
    "satisfies",
    "stronger",
    "weakest_acceptable",
]

# Weakest first: the discovery document's acr_values_supported. The names are the resource
# kit's, which verifiers compare tokens with (resource/authentication.py).
ACR_VALUES = ACR_CLASSES
_LEVEL = {value: level for level, value in enumerate(ACR_VALUES)}
MFA = "mfa"


def acr_of(amr: str) -> str:
    """The class a sign-in with these methods (space-separated RFC 8176 values) reaches."""
    return ACR_MFA if MFA in amr.split() else ACR_PASSWORD


def weakest_acceptable(requested: Iterable[str]) -> str | None:
    """Of the requested classes, the weakest one authserver defines (any of them is
    acceptable, so reaching the weakest is enough); None when it defines none of them."""
    known = [value for value in requested if value in _LEVEL]
    return min(known, key=_LEVEL.__getitem__) if known else None


def satisfies(amr: str, required: str | None) -> bool:
    """Whether a sign-in with ``amr`` reaches the class ``required`` (None: anything does)."""
    return required is None or _LEVEL[acr_of(amr)] >= _LEVEL[required]


def stronger(first: str | None, second: str | None) -> str | None:
    """The stronger of two requirements (None: no requirement)."""
    if first is None or second is None:
        return first or second
    return first if _LEVEL[first] >= _LEVEL[second] else second
