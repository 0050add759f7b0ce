"""Authorization server metadata (RFC 8414) and its OpenID Connect Discovery twin.

Lists exactly what the server implements today, nothing aspirational: clients decide what to
use from this document.
"""

from __future__ import annotations

from typing import Any

from authserver.config import Config
from authserver.oauth.server import supported_grant_types
from authserver.resource.dpop import DPOP_ALGORITHMS
from authserver.services.acr import ACR_VALUES
from authserver.services.client_registration import REGISTRATION_PATH
from authserver.services.security_events import POLL_DELIVERY_METHOD, PUSH_DELIVERY_METHOD

TOKEN_PATH = "/oauth/token"  # noqa: S105 (a path, not a secret)
AUTHORIZATION_PATH = "/oauth/authorize"
PUSHED_AUTHORIZATION_PATH = "/oauth/par"
DEVICE_AUTHORIZATION_PATH = "/oauth/device_authorization"
USERINFO_PATH = "/oauth/userinfo"
END_SESSION_PATH = "/oauth/logout"
REVOCATION_PATH = "/oauth/revoke"
INTROSPECTION_PATH = "/oauth/introspect"
REVOCATIONS_FEED_PATH = "/oauth/revocations"
SECURITY_EVENTS_POLL_PATH = "/oauth/security-events"
SSF_CONFIGURATION_PATH = "/.well-known/ssf-configuration"
JWKS_PATH = "/.well-known/jwks.json"
OIDC_SCOPES = ["openid", "profile", "email", "offline_access"]
# The languages the end-user pages have a catalog for (authserver/translations), English first.
UI_LOCALES_SUPPORTED = ("en", "fr")


def server_metadata(config: Config) -> dict[str, Any]:
    issuer = config.issuer
    metadata = {
        "issuer": issuer,
        "authorization_endpoint": issuer + AUTHORIZATION_PATH,
        "token_endpoint": issuer + TOKEN_PATH,
        "userinfo_endpoint": issuer + USERINFO_PATH,
        "end_session_endpoint": issuer + END_SESSION_PATH,
        "jwks_uri": issuer + JWKS_PATH,
        "scopes_supported": OIDC_SCOPES,
        # RFC 9700 §2.1.2: the authorization code flow only; no implicit, no hybrid.
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": supported_grant_types(),
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "revocation_endpoint": issuer + REVOCATION_PATH,
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "introspection_endpoint": issuer + INTROSPECTION_PATH,
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        # Not a registered metadata name: where authserver's revocation feed lives.
        "revocation_feed_endpoint": issuer + REVOCATIONS_FEED_PATH,
        # RFC 8628 §4
        "device_authorization_endpoint": issuer + DEVICE_AUTHORIZATION_PATH,
        # RFC 9126 §5: where to push, and whether every client must.
        "pushed_authorization_request_endpoint": issuer + PUSHED_AUTHORIZATION_PATH,
        "require_pushed_authorization_requests": bool(config.require_par),
        "code_challenge_methods_supported": ["S256"],
        # RFC 9449 §5.1: the token endpoint binds tokens to a key a DPoP proof shows.
        "dpop_signing_alg_values_supported": list(DPOP_ALGORITHMS),
        # RFC 9207
        "authorization_response_iss_parameter_supported": True,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [config.signing_alg],
        "claims_supported": [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "amr",
            "acr",
            "nonce",
            "at_hash",
            "sid",
            "email",
            "email_verified",
            "updated_at",
        ],
        "prompt_values_supported": ["none", "login"],
        # OpenID Connect Discovery 1.0 §3 / RFC 8414 §2: the languages of the pages; the
        # first of a request's ui_locales that is listed here is used (http/locale.py).
        "ui_locales_supported": list(UI_LOCALES_SUPPORTED),
        # services/acr.py: weakest first.
        "acr_values_supported": list(ACR_VALUES),
        # OpenID Connect Back-Channel Logout 1.0 §2.1: clients with a backchannel_logout_uri
        # get a logout token when a browser session they signed in through ends, always
        # with the session's sid.
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
    }
    if config.dynamic_registration:
        # RFC 8414 §2 / RFC 7591 §3: clients register here, with an initial access token.
        metadata["registration_endpoint"] = issuer + REGISTRATION_PATH
    return metadata


def ssf_transmitter_metadata(config: Config) -> dict[str, Any]:
    """Shared Signals Framework 1.0 §7.1 transmitter configuration metadata. Streams are
    configured by the operator (``authserver clients events``), not over HTTP, so the
    stream-management endpoints are absent, as SSF allows."""
    issuer = config.issuer
    return {
        "spec_version": "1_0",
        "issuer": issuer,
        "jwks_uri": issuer + JWKS_PATH,
        "delivery_methods_supported": [PUSH_DELIVERY_METHOD, POLL_DELIVERY_METHOD],
        "default_subjects": "ALL",
        # Not registered: where a receiver registered for RFC 8936 polls.
        "poll_endpoint": issuer + SECURITY_EVENTS_POLL_PATH,
    }
