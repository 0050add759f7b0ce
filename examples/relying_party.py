"""A small web app that signs its users in through authserver (a "relying party").

It shows the whole browser flow a real app performs: authorization code with PKCE and a
nonce, the token exchange, ID token verification against the JWKS, a refresh, and
RP-initiated logout. Run `make run` in one terminal, then:

    .venv/bin/python examples/relying_party.py

and open http://127.0.0.1:8765. It uses the public "Demo web app" client that `make run`
registers (its client_id is read from instance/demo-credentials.json, or RP_CLIENT_ID).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from flask import Flask, redirect, request, session
from joserfc import jwt
from joserfc.jwk import KeySet
from markupsafe import escape

RP_HOST = "127.0.0.1"
RP_PORT = 8765


def _http_json(url: str, form: dict[str, str] | None = None) -> dict[str, Any]:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    try:
        with urllib.request.urlopen(url, data=data, timeout=10) as response:  # noqa: S310
            result: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:
        result = json.load(exc)
    return result


def create_rp_app(issuer: str, client_id: str, base_url: str) -> Flask:
    """The relying party for ``client_id``, served at ``base_url``."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY=secrets.token_hex(32), SESSION_COOKIE_NAME="rp_session")
    redirect_uri = base_url + "/callback"
    metadata = _http_json(issuer + "/.well-known/openid-configuration")

    def verify_id_token(id_token: str, nonce: str | None) -> dict[str, Any]:
        keys = KeySet.import_key_set(_http_json(metadata["jwks_uri"]))
        token = jwt.decode(
            id_token, keys, algorithms=metadata["id_token_signing_alg_values_supported"]
        )
        claims = token.claims
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": client_id},
            exp={"essential": True},
        ).validate(claims)
        if nonce is not None and claims.get("nonce") != nonce:
            raise ValueError("nonce mismatch")
        return dict(claims)

    @app.get("/")
    def home() -> str:
        claims = session.get("claims")
        if not claims:
            return '<h1>Relying party</h1><p><a id="sign-in" href="/login">Sign in</a></p>'
        return (
            "<h1>Relying party</h1>"
            f'<p id="who">Signed in as {escape(claims.get("email", claims["sub"]))}</p>'
            f'<p id="refreshes">Refreshes: {session.get("refreshes", 0)}</p>'
            '<form method="post" action="/refresh"><button id="refresh">Refresh</button></form>'
            '<p><a id="sign-out" href="/logout">Sign out</a></p>'
        )

    @app.get("/login")
    def login() -> Any:
        verifier = secrets.token_urlsafe(48)
        session.update(
            state=secrets.token_urlsafe(16),
            nonce=secrets.token_urlsafe(16),
            verifier=verifier,
        )
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "scope": "openid email offline_access",
                "state": session["state"],
                "nonce": session["nonce"],
                "code_challenge": challenge.rstrip(b"=").decode(),
                "code_challenge_method": "S256",
            }
        )
        return redirect(metadata["authorization_endpoint"] + "?" + query)

    @app.get("/callback")
    def callback() -> Any:
        if request.args.get("state") != session.get("state"):
            return "state mismatch", 400
        if request.args.get("iss") != issuer:  # RFC 9207
            return "issuer mismatch", 400
        if "code" not in request.args:
            return f"sign-in failed: {escape(request.args.get('error', 'unknown'))}", 400
        tokens = _http_json(
            metadata["token_endpoint"],
            {
                "grant_type": "authorization_code",
                "code": request.args["code"],
                "redirect_uri": redirect_uri,
                "client_id": client_id,
                "code_verifier": session.pop("verifier", ""),
            },
        )
        if "id_token" not in tokens:
            return f"token exchange failed: {escape(tokens.get('error', ''))}", 400
        claims = verify_id_token(tokens["id_token"], session.pop("nonce", None))
        userinfo_request = urllib.request.Request(  # noqa: S310
            metadata["userinfo_endpoint"],
            headers={"Authorization": "Bearer " + tokens["access_token"]},
        )
        with urllib.request.urlopen(userinfo_request, timeout=10) as response:  # noqa: S310
            claims.update(json.load(response))
        session.update(
            claims=claims,
            id_token=tokens["id_token"],
            refresh_token=tokens.get("refresh_token"),
            refreshes=0,
        )
        return redirect("/")

    @app.post("/refresh")
    def refresh() -> Any:
        tokens = _http_json(
            metadata["token_endpoint"],
            {
                "grant_type": "refresh_token",
                "refresh_token": session.get("refresh_token") or "",
                "client_id": client_id,
            },
        )
        if "refresh_token" not in tokens:
            session.clear()
            return f"refresh failed: {escape(tokens.get('error', ''))}", 400
        session["refresh_token"] = tokens["refresh_token"]
        session["refreshes"] = session.get("refreshes", 0) + 1
        return redirect("/")

    @app.get("/logout")
    def logout() -> Any:
        id_token = session.get("id_token", "")
        session.clear()
        query = urllib.parse.urlencode(
            {"id_token_hint": id_token, "post_logout_redirect_uri": base_url + "/"}
        )
        return redirect(metadata["end_session_endpoint"] + "?" + query)

    return app


def _demo_client_id() -> str:
    if os.environ.get("RP_CLIENT_ID"):
        return os.environ["RP_CLIENT_ID"]
    instance = Path(os.environ.get("AUTHSERVER_INSTANCE_DIR", "instance"))
    credentials = json.loads((instance / "demo-credentials.json").read_text())
    return str(credentials["web_client_id"])


if __name__ == "__main__":
    issuer = os.environ.get("AUTHSERVER_ISSUER", "http://127.0.0.1:8000")
    base = f"http://{RP_HOST}:{RP_PORT}"
    create_rp_app(issuer, _demo_client_id(), base).run(RP_HOST, RP_PORT)
