"""The ceiling for the database operations: what a hand-written endpoint reaches when it does
the same work as authserver and nothing else.

Each endpoint authenticates the client with HTTP Basic against a digest it holds in memory,
runs the very statement authserver runs for the operation (compiled once from authserver's
own SQLAlchemy construct, then sent through one raw psycopg connection per thread in
autocommit mode), signs or verifies the ES256 JWT with joserfc, and answers JSON:

- ``POST /ceiling/client_credentials``: an access token and its token_issued audit row
  (``?audit=0``: the token alone, to show what the row costs);
- ``POST /ceiling/refresh``: the refresh rotation statement (claim, slide, successor, audit
  row) and an access token;
- ``POST /ceiling/introspect``: verify authserver's access token against its JWKS and ask
  the one "still granted?" SELECT.

No authlib, no SQLAlchemy at run time, no client registry, rate limiter, metrics or audit
log line. Served by the same gunicorn config as authserver, so ``authserver / ceiling`` is
what those layers cost, and ``ceiling / floor`` is what the work itself costs beside a bare
Flask endpoint. Configured by the bench through the environment (CEILING_*).

Not a server to run: it skips every check that a refusal would need (scope, client grant
types, token type hints) because the benchmark only sends valid requests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from flask import Flask, Response, request
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from psycopg.types.json import Json
from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg

from authserver.services.refresh_tokens import (
    RefreshPolicy,
    _rotate_in_one_statement,
    new_refresh_token,
    read_refresh_token,
)
from authserver.services.token_status import _still_granted_query

ACCESS_TTL = 600
IDLE_TTL = timedelta(days=14)
DIALECT = pg_psycopg.dialect()

INSERT_AUDIT_ROW = (
    "INSERT INTO audit_events (occurred_at, event_type, user_id, client_id, ip_address,"
    " user_agent, details) VALUES (%s, 'token_issued', NULL, %s, %s, %s, %s)"
)


class CompiledStatement:
    """One of authserver's statements as PostgreSQL text with its parameter names."""

    def __init__(self, statement: Any) -> None:
        self._compiled = statement.compile(dialect=DIALECT)
        self.sql = self._compiled.string

    def params(self, values: dict[str, Any]) -> dict[str, Any]:
        # Fills in the statement's own literal values (event type, JSON keys) too.
        filled: dict[str, Any] = self._compiled.construct_params(values)
        return filled


ROTATE = CompiledStatement(_rotate_in_one_statement(audited=True))
NO_ROTATION_BUDGET = RefreshPolicy(timedelta(0), timedelta(0), timedelta(0), rotation_budget=None)
STILL_GRANTED = {
    (has_family, users_token): CompiledStatement(_still_granted_query(has_family, users_token))
    for has_family in (False, True)
    for users_token in (False, True)
}


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(
        json.dumps(body),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def create_app() -> Flask:
    app = Flask(__name__)
    database = os.environ["CEILING_DATABASE_URL"]
    clients = {
        os.environ[f"CEILING_{which}_CLIENT_ID"]: (
            _digest(os.environ[f"CEILING_{which}_CLIENT_SECRET"]),
            os.environ.get(f"CEILING_{which}_CLIENT_PK"),
        )
        for which in ("APP", "RS")
    }
    issuer = os.environ["CEILING_ISSUER"]
    audience = os.environ["CEILING_AUDIENCE"]
    signing_key = ECKey.generate_key("P-256", parameters={"kid": "ceiling"})
    with urllib.request.urlopen(issuer + "/.well-known/jwks.json", timeout=10) as response:  # noqa: S310
        authserver_keys = KeySet.import_key_set(json.loads(response.read()))
    local = threading.local()
    opened: list[psycopg.Connection[Any]] = []
    # For whoever embeds the app (the test): gunicorn's workers just exit.
    app.extensions["ceiling_connections"] = opened

    def connection() -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = psycopg.connect(database, autocommit=True)
            opened.append(conn)
        return conn

    def client() -> tuple[str, str | None] | None:
        auth = request.authorization
        if auth is None or auth.username not in clients:
            return None
        digest, pk = clients[auth.username]
        if not hmac.compare_digest(_digest(auth.password or ""), digest):
            return None
        return auth.username, pk

    def access_token(subject: str, client_id: str, scope: str, **extra: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": issuer,
            "sub": subject,
            "aud": audience,
            "client_id": client_id,
            "iat": now,
            "exp": now + ACCESS_TTL,
            "jti": secrets.token_urlsafe(16),
            "scope": scope,
            **extra,
        }
        header = {"typ": "at+jwt", "alg": "ES256", "kid": "ceiling"}
        return jwt.encode(header, claims, signing_key, algorithms=["ES256"])

    @app.get("/ceiling/ready")
    def ready() -> Response:
        return _json({"ok": True})

    @app.post("/ceiling/client_credentials")
    def client_credentials() -> Response:
        who = client()
        if who is None or request.form.get("grant_type") != "client_credentials":
            return _json({"error": "invalid_client"}, 401)
        token = access_token(who[0], who[0], "")
        if request.args.get("audit") == "0":
            # Without issue 5's audit row: what the row costs, measured beside it.
            return _json({"access_token": token, "token_type": "Bearer", "expires_in": ACCESS_TTL})
        details = {"grant_type": "client_credentials", "scope": ""}
        connection().execute(
            INSERT_AUDIT_ROW,
            (
                datetime.now(UTC),
                who[0],
                request.remote_addr,
                request.user_agent.string[:512],
                Json(details),
            ),
        )
        return _json({"access_token": token, "token_type": "Bearer", "expires_in": ACCESS_TTL})

    @app.post("/ceiling/refresh")
    def refresh() -> Response:
        who = client()
        if who is None or who[1] is None:  # only the app client's families are rotated here
            return _json({"error": "invalid_client"}, 401)
        presented = request.form.get("refresh_token")
        if presented is None or request.form.get("grant_type") != "refresh_token":
            return _json({"error": "invalid_request"}, 400)
        named = read_refresh_token(presented)
        if named is None or named.family_id is None:
            return _json({"error": "invalid_grant"}, 400)
        now = datetime.now(UTC)
        successor = new_refresh_token(named.family_id)
        row = (
            connection()
            .execute(
                ROTATE.sql,
                ROTATE.params(
                    {
                        "token_family": named.family_id,
                        "digest": _digest(presented),
                        "presenting_client": uuid.UUID(who[1]),
                        # No DPoP in the bench: only families bound to no key rotate.
                        "proof_jkt": None,
                        "now": now,
                        # authserver seals the successor with AES-GCM for its grace window.
                        "sealed": secrets.token_bytes(60),
                        "idle_until": now + IDLE_TTL,
                        "last_ip": request.remote_addr,
                        "successor_id": uuid.uuid4(),
                        "successor_digest": _digest(successor),
                        "audit_client_id": who[0],
                        "audit_user_agent": request.user_agent.string[:512],
                        # The bench runs authserver with rate limits off: no family budget.
                        **NO_ROTATION_BUDGET.budget_params(now),
                    }
                ),
            )
            .fetchone()
        )
        if row is None:
            return _json({"error": "invalid_grant"}, 400)
        family, user_id, scope, _audience, _auth_time, _amr = row
        token = access_token(str(user_id), who[0], scope, sid=str(family))
        return _json(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": ACCESS_TTL,
                "refresh_token": successor,
                "scope": scope,
            }
        )

    @app.post("/ceiling/introspect")
    def introspect() -> Response:
        if client() is None:
            return _json({"error": "invalid_client"}, 401)
        try:
            token = jwt.decode(request.form.get("token", ""), authserver_keys, algorithms=["ES256"])
        except ValueError:
            return _json({"active": False})
        claims = token.claims
        if claims.get("iss") != issuer or int(claims.get("exp", 0)) <= time.time():
            return _json({"active": False})
        subject = str(claims.get("sub", ""))
        users_token = subject != claims.get("client_id")
        has_family = claims.get("sid") is not None
        params: dict[str, Any] = {
            "jti": str(claims.get("jti", "")),
            "client_id": str(claims.get("client_id", "")),
            "kid": str(token.header.get("kid", "")),
            "issued_at": datetime.fromtimestamp(int(claims.get("iat", 0)), UTC),
            "now": datetime.now(UTC),
        }
        if has_family:
            params["sid"] = uuid.UUID(str(claims["sid"]))
        if users_token:
            params["user_id"] = uuid.UUID(subject)
            params["subject"] = subject
        statement = STILL_GRANTED[(has_family, users_token)]
        granted = connection().execute(statement.sql, statement.params(params)).fetchone()
        if not granted or not granted[0]:
            return _json({"active": False})
        return _json({**claims, "active": True, "token_type": "Bearer"})

    return app
