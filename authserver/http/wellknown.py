"""Public, cacheable documents: the JWKS, the server metadata, and the admin API's
protected-resource metadata."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from authserver.http.jwks_document import jwks_answer
from authserver.oauth.metadata import (
    JWKS_PATH,
    SSF_CONFIGURATION_PATH,
    server_metadata,
    ssf_transmitter_metadata,
)
from authserver.own_apis import ADMIN_API_PATH, ADMIN_SCOPES, admin_audience
from authserver.resource.dpop import DPOP_ALGORITHMS
from authserver.runtime import runtime

bp = Blueprint("wellknown", __name__)


@bp.get(JWKS_PATH)
def jwks() -> Response:
    """The JWKS when the keys were not in memory yet; once they are, ``JwksResponder``
    answers before Flask."""
    rt = runtime()
    status, headers, body = jwks_answer(
        rt.keys.snapshot(), rt.config.jwks_max_age, request.headers.get("If-None-Match")
    )
    return Response(body, status=status, headers=headers)


@bp.get("/.well-known/oauth-authorization-server")
@bp.get("/.well-known/openid-configuration")
def metadata() -> Response:
    response = jsonify(server_metadata(runtime().config))
    response.headers["Cache-Control"] = "public, max-age=3600"
    # A public document (http/cors.py), the same for every request whether or not it names
    # an Origin: MetadataResponder replays this first answer to every later one.
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@bp.get(SSF_CONFIGURATION_PATH)
def ssf_configuration() -> Response:
    """Shared Signals Framework 1.0 §7.2: where a receiver learns how SETs reach it."""
    response = jsonify(ssf_transmitter_metadata(runtime().config))
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


# RFC 9728 §3.1: the well-known URI of a resource with a path inserts the suffix before it.
ADMIN_API_METADATA_PATH = "/.well-known/oauth-protected-resource" + ADMIN_API_PATH


@bp.get(ADMIN_API_METADATA_PATH)
def admin_api_metadata() -> Response:
    """RFC 9728 §2: what a client needs to call the admin API: its resource identifier (the
    audience its tokens must carry), where to get them, and the scopes it knows."""
    issuer = runtime().config.issuer
    response = jsonify(
        resource=admin_audience(issuer),
        authorization_servers=[issuer],
        scopes_supported=list(ADMIN_SCOPES),
        bearer_methods_supported=["header"],
        # RFC 9728 §2: admin tokens may be DPoP-bound (a proof at the token endpoint), and
        # then come with a proof each call; unbound ones are accepted too.
        dpop_signing_alg_values_supported=list(DPOP_ALGORITHMS),
        dpop_bound_access_tokens_required=False,
        resource_name="authserver admin API",
        resource_documentation=issuer + "/openapi.json",
    )
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
