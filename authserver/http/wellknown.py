"""Public, cacheable documents: the JWKS and the server metadata."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from authserver.oauth.metadata import JWKS_PATH, server_metadata
from authserver.runtime import runtime

bp = Blueprint("wellknown", __name__)


@bp.get(JWKS_PATH)
def jwks() -> Response:
    """The public signing keys (RFC 7517 §5). Built once per key change, served from memory."""
    rt = runtime()
    snapshot = rt.keys.snapshot()
    headers = {
        "Cache-Control": f"public, max-age={rt.config.jwks_max_age}",
        "ETag": f'"{snapshot.jwks_etag}"',
    }
    # RFC 9110 §13.1.2: 304 when If-None-Match names this representation. Checked by hand
    # (not Response.make_conditional, which also parses Range and dates): resource servers
    # fetch this document often, and it should cost little more than Flask itself.
    if "If-None-Match" in request.headers and request.if_none_match.contains(snapshot.jwks_etag):
        return Response(status=304, headers=headers)
    return Response(snapshot.jwks_body, mimetype="application/jwk-set+json", headers=headers)


@bp.get("/.well-known/oauth-authorization-server")
@bp.get("/.well-known/openid-configuration")
def metadata() -> Response:
    response = jsonify(server_metadata(runtime().config))
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
