"""The audit trail records security events, and nothing secret (services/audit.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.models import AuditEvent
from authserver.runtime import runtime
from authserver.services.audit import AuditEventType, recent_events, record
from authserver.services.clients import RegisteredClient
from authserver.services.users import disable_user
from tests.helpers import PASSWORD, make_client, make_user


def _events(session: Session, event_type: str | None = None) -> list[AuditEvent]:
    session.expire_all()
    query = select(AuditEvent).order_by(AuditEvent.id)
    if event_type is not None:
        query = query.where(AuditEvent.event_type == event_type)
    return list(session.scalars(query))


def _token(
    http: FlaskClient, registered: RegisteredClient, ip: str = "127.0.0.1", **form: str
) -> Any:
    return http.post(
        "/oauth/token",
        data=form,
        auth=(registered.client.client_id, registered.client_secret or ""),
        environ_base={"REMOTE_ADDR": ip},
    ).json


def _password(
    http: FlaskClient, registered: RegisteredClient, password: str = PASSWORD, **kw: str
) -> Any:
    return _token(
        http, registered, grant_type="password", username="ann@example.com", password=password, **kw
    )


def test_a_detail_outside_the_allowed_set_is_refused(app: Flask, session: Session) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        record(session, AuditEventType.LOGOUT, runtime(app).now(), refresh_token="x")


def test_failed_and_successful_password_sign_ins_are_recorded_with_the_address(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    user = make_user(app, session)
    registered = make_client(session)

    _password(client, registered, password="wrong password here", ip="203.0.113.8")
    _password(client, registered, ip="203.0.113.9")

    failed = _events(session, "signin_failed")
    succeeded = _events(session, "signin_succeeded")
    assert [(e.details["email"], e.ip_address) for e in failed] == [
        ("ann@example.com", "203.0.113.8")
    ]
    assert [(e.user_id, e.ip_address) for e in succeeded] == [(user.id, "203.0.113.9")]
    assert succeeded[0].client_id == registered.client.client_id


def test_every_grant_records_a_token_issued_event(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    registered = make_client(session)
    tokens = _password(client, registered)
    _token(client, registered, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    _token(client, registered, grant_type="client_credentials")

    grants = [e.details["grant_type"] for e in _events(session, "token_issued")]

    assert grants == ["password", "refresh_token", "client_credentials"]


@pytest.mark.parametrize("scope", [None, "read"])
def test_a_refresh_records_one_row_that_says_the_same_as_its_log_line(
    app: Flask,
    session: Session,
    client: FlaskClient,
    caplog: pytest.LogCaptureFixture,
    scope: str | None,
) -> None:
    """On PostgreSQL the rotating statement writes the row itself (services/audit.py,
    rotation_audit_row); with a narrowed scope the slower path records it. Either way: one
    row, the same fields as the JSON log line."""
    user = make_user(app, session)
    registered = make_client(session)
    tokens = _password(client, registered)
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    if scope:
        form["scope"] = scope
    with caplog.at_level("INFO", logger="authserver.audit"):
        refreshed = client.post(
            "/oauth/token",
            data=form,
            auth=(registered.client.client_id, registered.client_secret or ""),
            headers={"User-Agent": "RefreshingApp/2.0"},
            environ_base={"REMOTE_ADDR": "192.0.2.44"},
        )
    assert refreshed.status_code == 200

    rows = [e for e in _events(session, "token_issued") if e.details["grant_type"] != "password"]
    lines = [json.loads(r.getMessage()) for r in caplog.records]
    [line] = [x for x in lines if x["event"] == "token_issued" and x["grant_type"] != "password"]
    assert len(rows) == 1
    [row] = rows
    family_id = line["family_id"]
    assert (row.user_id, row.client_id, row.ip_address, row.user_agent) == (
        user.id,
        registered.client.client_id,
        "192.0.2.44",
        "RefreshingApp/2.0",
    )
    assert row.details == {
        "grant_type": "refresh_token",
        "scope": scope or "read write",
        "family_id": family_id,
    }
    assert (line["user_id"], line["client_id"], line["ip"], line["user_agent"]) == (
        str(user.id),
        registered.client.client_id,
        "192.0.2.44",
        "RefreshingApp/2.0",
    )
    assert line["scope"] == row.details["scope"]


def test_refresh_reuse_is_recorded_with_family_client_and_both_addresses(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    registered = make_client(session)
    first = _password(client, registered, ip="198.51.100.1")
    second = _token(
        client,
        registered,
        ip="198.51.100.2",
        grant_type="refresh_token",
        refresh_token=first["refresh_token"],
    )
    _token(client, registered, grant_type="refresh_token", refresh_token=second["refresh_token"])

    _token(
        client,
        registered,
        ip="192.0.2.66",
        grant_type="refresh_token",
        refresh_token=first["refresh_token"],
    )

    [reuse] = _events(session, "refresh_reuse_detected")
    assert reuse.ip_address == "192.0.2.66"
    assert reuse.details["first_ip_address"] == "198.51.100.1"
    assert reuse.details["last_ip_address"] == "127.0.0.1"
    assert reuse.client_id == registered.client.client_id
    [revoked] = _events(session, "family_revoked")
    assert revoked.details["reason"] == "reuse_detected"
    assert revoked.details["family_id"] == reuse.details["family_id"]


def test_disabling_a_user_is_recorded(app: Flask, session: Session) -> None:
    user = make_user(app, session)

    disable_user(session, "ann@example.com", runtime(app).now())

    [event] = _events(session, "user_disabled")
    assert event.user_id == user.id


def test_no_secret_ever_reaches_the_trail_or_the_log(
    app: Flask, session: Session, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    make_user(app, session)
    registered = make_client(session)
    caplog.set_level("INFO", logger="authserver.audit")
    tokens = _password(client, registered)
    rotated = _token(
        client, registered, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    _token(client, registered, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    _password(client, registered, password="a wrong password")

    secrets = [
        PASSWORD,
        "a wrong password",
        registered.client_secret or "",
        tokens["refresh_token"],
        tokens["access_token"],
        rotated["refresh_token"],
    ]
    trail = json.dumps([[e.event_type, e.details] for e in _events(session)])
    assert any(r.name == "authserver.audit" for r in caplog.records), "no audit log line"
    for line in [trail, caplog.text]:
        for secret in secrets:
            assert secret not in line


def test_each_audit_log_line_is_one_json_object(
    app: Flask, session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="authserver.audit")
    user = make_user(app, session)

    record(session, AuditEventType.LOGOUT, runtime(app).now(), user_id=user.id, reason="test")

    line = json.loads(caplog.records[-1].getMessage())
    assert line["event"] == "logout"
    assert line["user_id"] == str(user.id)
    assert line["reason"] == "test"


def test_recent_events_filters_by_user_and_type(app: Flask, session: Session) -> None:
    ann = make_user(app, session)
    bob = make_user(app, session, email="bob@example.com")
    now = runtime(app).now()
    record(session, AuditEventType.LOGOUT, now, user_id=ann.id)
    record(session, AuditEventType.LOGOUT, now, user_id=bob.id)

    only_bob = recent_events(session, user_id=bob.id, event_type="logout")

    assert [e.user_id for e in only_bob] == [bob.id]


def test_a_password_typed_into_the_email_field_never_reaches_the_trail(
    app: Flask, session: Session, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    make_user(app, session)
    registered = make_client(session)
    caplog.set_level("INFO", logger="authserver.audit")
    mistyped = "Tr0ub4dor&3-my-password"

    client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": mistyped, "password": mistyped},
        auth=(registered.client.client_id, registered.client_secret or ""),
    )

    [failed] = _events(session, "signin_failed")
    assert failed.details.get("email") is None
    assert mistyped not in caplog.text
