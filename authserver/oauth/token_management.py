"""Revocation (RFC 7009) and introspection (RFC 7662) as authlib endpoints.

authlib authenticates the client and checks the request's shape; the services decide what
the token is and what becomes of it.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc7009 import RevocationEndpoint as AuthlibRevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint as AuthlibIntrospectionEndpoint

from authserver.db import db
from authserver.errors import InvalidRequest
from authserver.models import Client
from authserver.runtime import runtime
from authserver.services.token_status import (
    PresentedToken,
    find_presented_token,
    introspect_presented_token,
    revoke_presented_token,
)

CONFIDENTIAL_METHODS = ["client_secret_basic", "client_secret_post"]


def _require_token(request: Any) -> None:
    """RFC 7009 §2.1 / RFC 7662 §2.1: ``token`` is required; a hint is only a hint, and one we
    do not know is ignored (we look everywhere anyway) rather than refused."""
    if not request.form.get("token"):
        raise InvalidRequest("Missing 'token'.")


def _find(token: str, hint: str | None) -> PresentedToken | None:
    rt = runtime()
    return find_presented_token(db.session, rt.keys, rt.config.issuer, token, hint, rt.now())


class RevocationEndpoint(AuthlibRevocationEndpoint):
    # RFC 7009 §2.1: public clients may revoke their own tokens too.
    CLIENT_AUTH_METHODS = [*CONFIDENTIAL_METHODS, "none"]  # noqa: RUF012 (authlib attribute)

    def check_params(self, request: Any, client: Client) -> None:
        _require_token(request)

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return _find(token_string, token_type_hint)

    def authenticate_token(self, request: Any, client: Client) -> PresentedToken | None:
        self.check_params(request, client)
        token = self.query_token(request.form["token"], request.form.get("token_type_hint"))
        # Another client's token is treated like an unknown one: 200 and nothing revoked,
        # so a client learns nothing about tokens that are not its own.
        if token is None or not token.check_client(client):
            return None
        found: PresentedToken = token
        return found

    def revoke_token(self, token: PresentedToken, request: Any) -> None:
        revoke_presented_token(db.session, token, runtime().now())


class IntrospectionEndpoint(AuthlibIntrospectionEndpoint):
    # Resource servers are confidential clients (RFC 7662 §2.1 requires authorization).
    CLIENT_AUTH_METHODS = CONFIDENTIAL_METHODS

    def check_params(self, request: Any, client: Client) -> None:
        _require_token(request)

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return _find(token_string, token_type_hint)

    def check_permission(self, token: PresentedToken, client: Client, request: Any) -> bool:
        # RFC 7662 §2.1, §4: a client learns about a token only if it was issued to it, or if
        # it is an access token for an audience the client serves as a resource server; any
        # other token answers {"active": false}, as an unknown one would.
        return token.check_client(client) or token.is_for_audience_of(client)

    def create_introspection_payload(self, token: PresentedToken | None) -> dict[str, Any]:
        rt = runtime()
        return introspect_presented_token(db.session, token, rt.config.issuer, rt.now())
