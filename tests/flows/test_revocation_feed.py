"""The revocation feed: what resource servers verifying JWTs offline must reject."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from authserver.db import utcnow
from authserver.runtime import runtime
from authserver.services.browser_sessions import end_user_sessions
from authserver.services.clients import RegisteredClient, set_served_audiences
from authserver.services.refresh_tokens import RevocationReason
from tests.helpers import basic_auth, make_client, make_resource_server, make_user, password_login

FEED = "/oauth/revocations"


def _feed(http: FlaskClient, rs: RegisteredClient, **query: str) -> Any:
    return http.get(FEED, query_string=query, headers=basic_auth(rs))


def _login_and_revoke(app: Flask, session: Session, http: FlaskClient) -> dict[str, Any]:
    make_user(app, session)
    registered = make_client(session)
    tokens: dict[str, Any] = password_login(http, registered).json
    http.post(
        "/oauth/revoke", data={"token": tokens["refresh_token"]}, headers=basic_auth(registered)
    )
    return tokens


def _sid_of(access_token: str) -> str:
    payload = access_token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sid"])


def test_feed_lists_a_revoked_family_by_sid(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    tokens = _login_and_revoke(app, session, client)

    page = _feed(client, make_resource_server(session))

    assert page.status_code == 200
    sids = [e["value"] for e in page.json["entries"] if e["type"] == "sid"]
    assert sids == [_sid_of(tokens["access_token"])]
    entry = page.json["entries"][0]
    # Live for as long as an access token of the family could be: 600 s by default.
    assert entry["expires_at"] > int(runtime(app).now().timestamp())


def test_feed_lists_denylisted_access_tokens_by_jti(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    registered = make_client(session)
    tokens = password_login(client, registered).json
    client.post(
        "/oauth/revoke", data={"token": tokens["access_token"]}, headers=basic_auth(registered)
    )

    entries = _feed(client, make_resource_server(session)).json["entries"]

    assert [e["type"] for e in entries] == ["jti"]


def test_feed_lists_users_signed_out_everywhere_with_a_not_before(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    user = make_user(app, session)
    now = runtime(app).now()
    end_user_sessions(session, user.id, RevocationReason.LOGOUT_EVERYWHERE, now)
    session.commit()

    entries = _feed(client, make_resource_server(session)).json["entries"]

    subs = [e for e in entries if e["type"] == "sub"]
    assert subs == [
        {
            "type": "sub",
            "value": str(user.id),
            "not_before": int(now.timestamp()),
            "expires_at": subs[0]["expires_at"],
        }
    ]


def test_since_brings_what_was_revoked_after_the_cursor(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    """What the cursor has passed is not sent again, and 304 for nothing new, need committed
    transactions: ``test_revocation_feed_cursor.py``. Here everything is one transaction, which
    on PostgreSQL holds the cursor back, so earlier entries may come again."""
    _login_and_revoke(app, session, client)
    rs = make_resource_server(session)
    first = _feed(client, rs)

    user = make_user(app, session, email="bob@example.com")
    end_user_sessions(session, user.id, RevocationReason.LOGOUT_EVERYWHERE, runtime(app).now())
    session.commit()
    newer = _feed(client, rs, since=str(first.json["cursor"]))

    assert str(user.id) in [e["value"] for e in newer.json["entries"]]
    assert newer.json["cursor"] >= first.json["cursor"]
    assert newer.headers["ETag"] == f'"{newer.json["cursor"]}"'


def test_entries_drop_out_once_no_unexpired_token_can_carry_them(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    _login_and_revoke(app, session, client)
    rt = runtime(app)
    later = rt.now() + timedelta(seconds=app.config["AUTHSERVER"].access_token_ttl + 1)
    rt.clock = lambda: later

    assert _feed(client, make_resource_server(session)).json["entries"] == []


def test_feed_requires_client_authentication(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    _login_and_revoke(app, session, client)

    response = client.get(FEED)

    assert response.status_code == 401
    assert "entries" not in (response.json or {})


def test_a_client_that_serves_no_audience_may_not_read_the_feed(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    _login_and_revoke(app, session, client)
    app_client = make_client(session, name="Photo app backend")

    response = _feed(client, app_client)

    assert response.status_code == 403
    assert response.json["error"] == "unauthorized_client"
    assert "entries" not in response.json
    assert "cursor" not in response.json


def test_a_client_stops_reading_the_feed_once_it_serves_no_audience(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    _login_and_revoke(app, session, client)
    rs = make_resource_server(session)
    assert _feed(client, rs).status_code == 200

    set_served_audiences(session, rs.client.client_id, [], utcnow())
    session.commit()

    assert _feed(client, rs).status_code == 403


def test_since_must_be_a_cursor(app: Flask, session: Session, client: FlaskClient) -> None:
    response = _feed(client, make_resource_server(session), since="yesterday")

    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
