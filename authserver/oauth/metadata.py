"""Authorization server metadata (RFC 8414) and its OpenID Connect Discovery twin.

Lists exactly what the server implements today, nothing aspirational: clients decide what to
use from this document.
"""

from __future__ import annotations

from typing import Any

from authserver.config import Config
from authserver.oauth.server import supported_grant_types

TOKEN_PATH = "/oauth/token"  # noqa: S105 (a path, not a secret)
JWKS_PATH = "/.well-known/jwks.json"


def server_metadata(config: Config) -> dict[str, Any]:
    issuer = config.issuer
    return {
        "issuer": issuer,
        "token_endpoint": issuer + TOKEN_PATH,
        "jwks_uri": issuer + JWKS_PATH,
        "grant_types_supported": supported_grant_types(),
        # No authorization endpoint yet, so no response type is supported.
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
    }
