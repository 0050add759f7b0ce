"""A small API that accepts authserver's access tokens, through ``authserver.resource``.

``/api/hello`` needs any valid access token; ``/api/write`` needs one with the "write" scope.
Tokens are verified offline against the issuer's JWKS: no call to authserver per request.

Run `make run` in one terminal (it prints the demo user and client), then in another:

    .venv/bin/python examples/resource_server.py

and try it (the demo credentials are in instance/demo-credentials.json):

    creds() {
      python3 -c "import json; print(json.load(open('instance/demo-credentials.json'))['$1'])"
    }
    token() {
      curl -s -u "$(creds client_id):$(creds client_secret)" -d grant_type=password \\
           -d username="$(creds email)" -d password="$(creds password)" -d scope="$1" \\
           http://127.0.0.1:8000/oauth/token \\
        | python3 -c "import json, sys; print(json.load(sys.stdin)['access_token'])"
    }

    curl -i http://127.0.0.1:8001/api/hello
        # 401, WWW-Authenticate: Bearer, DPoP algs="ES256 ..."
    curl -i -H "Authorization: Bearer not-a-token" http://127.0.0.1:8001/api/hello
        # 401, WWW-Authenticate: Bearer error="invalid_token", error_description="..."
    curl -i -H "Authorization: Bearer $(token read)" http://127.0.0.1:8001/api/hello
        # 200 {"hello": "<user id>", "scope": ["read"], ...}
    curl -i -X POST -H "Authorization: Bearer $(token read)" http://127.0.0.1:8001/api/write
        # 403, WWW-Authenticate: Bearer error="insufficient_scope", ..., scope="write"
    curl -i -X POST -H "Authorization: Bearer $(token 'read write')" http://127.0.0.1:8001/api/write
        # 200

A DPoP-bound token (issued to a token request that carried a DPoP proof, RFC 9449) is taken
as ``Authorization: DPoP <token>`` with a proof for the request in the ``DPoP`` header, and
refused as a bearer token (401, ``WWW-Authenticate: DPoP error="invalid_token", ...``).

Settings, from the environment:

    RS_ISSUER    the issuer (default http://127.0.0.1:8000, what `make run` serves)
    RS_AUDIENCE  this API's audience (default http://127.0.0.1:8000: with no audience
                 configured, `make run` puts its own issuer URL in ``aud``)
    RS_FEED_CLIENT_ID, RS_FEED_CLIENT_SECRET
                 when both are set, also follow the issuer's revocation feed with these
                 client credentials (revoked tokens are refused within 5 seconds); only a
                 client registered as a resource server may read it, like the "Demo API"
                 that `make run` creates: RS_FEED_CLIENT_ID="$(creds api_client_id)"
                 RS_FEED_CLIENT_SECRET="$(creds api_client_secret)"

With the feed on, ``POST /security-events`` also receives revocations pushed as Security
Event Tokens (RFC 8935), applied at once rather than at the next poll. Tell authserver to push
them here:

    .venv/bin/authserver clients events "$(creds api_client_id)" \
        --push http://127.0.0.1:8001/security-events
"""

from __future__ import annotations

import os

from flask import Flask, Response, g, request

from authserver.resource import SecurityEventReceiver, TokenVerifier
from authserver.resource.flask import require_token

HOST = "127.0.0.1"
PORT = 8001
DEFAULT_ISSUER = "http://127.0.0.1:8000"


def create_resource_app(
    verifier: TokenVerifier, security_events: SecurityEventReceiver | None = None
) -> Flask:
    """The API, protected by ``verifier``; with ``security_events``, also the endpoint that
    receives pushed revocations."""
    app = Flask(__name__)

    if security_events is not None:
        receiver = security_events

        @app.post("/security-events")
        def receive_security_event() -> Response:
            answer = receiver.receive_push(request.get_data(), request.content_type)
            return Response(answer.body or "", status=answer.status, headers=answer.headers)

    @app.get("/api/hello")
    @require_token(verifier)
    def hello() -> dict[str, object]:
        token = g.access_token
        return {
            "hello": token.subject,
            "client_id": token.client_id,
            "scope": sorted(token.scope),
            "expires_at": token.expires_at,
        }

    @app.post("/api/write")
    @require_token(verifier, scope="write")
    def write() -> dict[str, object]:
        return {"written_by": g.access_token.subject}

    return app


def verifier_from_environment() -> TokenVerifier:
    issuer = os.environ.get("RS_ISSUER", DEFAULT_ISSUER)
    audience = os.environ.get("RS_AUDIENCE", DEFAULT_ISSUER)
    feed_client_id = os.environ.get("RS_FEED_CLIENT_ID")
    feed_client_secret = os.environ.get("RS_FEED_CLIENT_SECRET")
    return TokenVerifier(
        issuer,
        audience,
        revocation_feed=bool(feed_client_id and feed_client_secret),
        client_id=feed_client_id,
        client_secret=feed_client_secret,
    )


if __name__ == "__main__":
    with verifier_from_environment() as resource_verifier:
        feed_client = os.environ.get("RS_FEED_CLIENT_ID")
        pushed = (
            SecurityEventReceiver(resource_verifier, audience=feed_client)
            if feed_client and resource_verifier.revocation_state is not None
            else None
        )
        create_resource_app(resource_verifier, pushed).run(HOST, PORT)
