"""OAuth endpoints: parse nothing ourselves, hand the request to authlib."""

from __future__ import annotations

from flask import Blueprint, Response

from authserver.oauth.metadata import TOKEN_PATH
from authserver.oauth.server import authorization_server

bp = Blueprint("oauth", __name__)


@bp.post(TOKEN_PATH)
def token() -> Response:
    """RFC 6749 §3.2, the token endpoint."""
    return authorization_server().create_token_response()
