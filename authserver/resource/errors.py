"""Why a token was refused, as types a resource server can catch one by one.

Every rejection of the token itself is an ``InvalidToken``: RFC 6750 §3.1 has one error code
for all of them, ``invalid_token``. The subclasses tell the operator (logs, metrics) what was
wrong; the client only ever sees ``error`` and the short ``description``. A DPoP proof that is
refused (``dpop.InvalidDPoPProof``) is an ``InvalidToken`` too, since the request's
credentials are refused either way, but its ``error`` is RFC 9449 §7.1's
``invalid_dpop_proof``: whoever answers with ``exc.error`` answers the right code.

A description is a fixed sentence chosen in the kit, never built from the token, the proof or
their claims, so it is safe to put in a ``WWW-Authenticate`` header and in logs.
"""

from __future__ import annotations


class InvalidToken(Exception):
    """The access token was refused (RFC 6750 §3.1 ``invalid_token``)."""

    error = "invalid_token"
    default_description = "The access token is invalid."

    def __init__(self, description: str | None = None) -> None:
        self.description = description or self.default_description
        super().__init__(self.description)


class MalformedToken(InvalidToken):
    """Not a compact JWS with the claims RFC 9068 §2.2 requires, or too large to consider."""

    default_description = "The access token is malformed."


class UnknownKey(InvalidToken):
    """The ``kid`` names no key the issuer publishes, even after a refetch of the JWKS."""

    default_description = "The access token is signed with an unknown key."


class BadSignature(InvalidToken):
    """The signature does not verify with the named key and that key's algorithm."""

    default_description = "The access token signature is invalid."


class WrongType(InvalidToken):
    """The header ``typ`` is not ``at+jwt`` (RFC 9068 §2.1): an ID token, for instance."""

    default_description = "The token is not an access token."


class WrongIssuer(InvalidToken):
    default_description = "The access token is from another issuer."


class WrongAudience(InvalidToken):
    default_description = "The access token is not meant for this resource server."


class TokenExpired(InvalidToken):
    default_description = "The access token has expired."


class TokenNotYetValid(InvalidToken):
    default_description = "The access token is not valid yet."


class TokenRevoked(InvalidToken):
    """Revoked since it was issued: by the revocation feed or by token introspection."""

    default_description = "The access token has been revoked."


class DPoPBoundToken(InvalidToken):
    """The token is bound to a DPoP key (``cnf.jkt``, RFC 9449 §6) but was presented as a
    bearer token (``verify``): it is taken only with a proof signed by that key
    (``verify_dpop``), or a stolen copy would work without the key."""

    default_description = "This access token is bound to a DPoP key; use the DPoP scheme."


class NotDPoPBound(InvalidToken):
    """The token was presented with a DPoP proof (``verify_dpop``) but is bound to no key:
    a proof from whoever holds it proves nothing about it (RFC 9449 §7.1)."""

    default_description = "This access token is not bound to a DPoP key."


class BindingMismatch(InvalidToken):
    """Token introspection (RFC 9449 §6.2) names another key for the token than the token
    itself does, or none: the issuer and the token disagree, so neither is believed."""

    default_description = "The issuer binds this access token to another key."


class JWKSUnavailable(Exception):
    """No signing keys could be had at all: discovery or the JWKS fetch failed and nothing is
    cached. Says nothing about the token; a resource server answers 503, not 401."""


class IntrospectionFailed(Exception):
    """The introspection endpoint could not be found, reached or understood (RFC 7662 §2.2).
    Says nothing about the token either."""
