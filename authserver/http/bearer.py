"""Bearer-token authentication (RFC 6750) for the endpoints this server protects itself:
userinfo and the account API."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from authserver.db import db
from authserver.runtime import runtime
from authserver.services.token_status import access_token_still_granted
from authserver.services.token_verification import TokenRejected, verify_own_token


class BearerError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def response(self) -> Response:
        body = jsonify(error=self.error, error_description=self.description)
        body.status_code = self.status
        # RFC 6750 §3: say how to authenticate and what was wrong.
        body.headers["WWW-Authenticate"] = (
            f'Bearer error="{self.error}", error_description="{self.description}"'
        )
        body.headers["Cache-Control"] = "no-store"
        return body


def bearer_claims(required_scope: str | None = None) -> dict[str, Any]:
    """The verified claims of the request's access token, or a BearerError."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise BearerError(401, "invalid_token", "A bearer access token is required.")
    rt = runtime()
    try:
        claims = verify_own_token(
            rt.keys,
            token.strip(),
            issuer=rt.config.issuer,
            typ="at+jwt",
            now=int(runtime().now().timestamp()),
        )
    except TokenRejected:
        raise BearerError(401, "invalid_token", "The access token is invalid.") from None
    if not access_token_still_granted(db.session, claims, rt.now()):
        raise BearerError(401, "invalid_token", "The access token was revoked.")
    if required_scope and required_scope not in str(claims.get("scope", "")).split():
        raise BearerError(403, "insufficient_scope", f"The '{required_scope}' scope is needed.")
    return claims


def handle_bearer_error(exc: BearerError) -> Response:
    return exc.response()
