"""What a token request may ask of a grant the user already made (an authorization code, a
refresh family): the same audience, never another."""

from __future__ import annotations

from collections.abc import Sequence

from authserver.errors import InvalidTarget


def check_resource_of_grant(requested_resources: Sequence[str], granted_audience: str) -> None:
    """RFC 8707 §2.2: at the token endpoint, a ``resource`` for an existing grant must be one
    the grant covered. A grant has one audience; the client's current registrations do not
    widen what the user granted."""
    if len(requested_resources) > 1:
        raise InvalidTarget("Only one resource per request is supported.")
    if requested_resources and requested_resources[0] != granted_audience:
        raise InvalidTarget("The resource is not one this grant was made for.")
