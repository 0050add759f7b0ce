"""The operator's client services (``services/clients.py``, behind ``authserver clients
...``): rotating a secret with and without an overlap, enabling a disabled client, updating a
registration under the rules of registration, deleting a client."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.errors import NotFound, ValidationError
from authserver.models import AuditEvent, Client, RefreshFamily
from authserver.runtime import runtime
from authserver.services.clients import (
    ClientDisabledMoments,
    RegisteredClient,
    client_overview,
    delete_client,
    disable_client,
    enable_client,
    rotate_client_secret,
    update_client,
)
from tests.helpers import (
    Clock,
    basic_auth,
    make_client,
    make_resource_server,
    make_user,
    password_login,
    refresh,
)

DAY = timedelta(hours=24)


def _with_secret(registered: RegisteredClient, secret: str) -> RegisteredClient:
    return RegisteredClient(client=registered.client, client_secret=secret)


def _client_credentials(http: FlaskClient, registered: RegisteredClient) -> int:
    response = http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(registered.client.client_id, registered.client_secret or ""),
    )
    return response.status_code


def _stale_for(app: Flask) -> timedelta:
    return timedelta(seconds=runtime(app).config.client_cache_seconds)


def _audit_types(session: Session, client_id: str) -> list[str]:
    query = select(AuditEvent.event_type).where(AuditEvent.client_id == client_id)
    return list(session.scalars(query.order_by(AuditEvent.id)))


def test_after_a_rotation_both_secrets_work_until_the_overlap_ends(
    app: Flask, session: Session, client: FlaskClient, clock: Clock
) -> None:
    registered = make_client(session)

    rotated = rotate_client_secret(session, registered.client.client_id, clock.now, overlap=DAY)
    session.commit()

    new = _with_secret(registered, rotated.client_secret)
    assert rotated.previous_valid_until == clock.now + DAY
    assert _client_credentials(client, registered) == 200
    assert _client_credentials(client, new) == 200
    clock.advance(hours=24)
    assert _client_credentials(client, registered) == 401
    assert _client_credentials(client, new) == 200
    assert "client_secret_rotated" in _audit_types(session, registered.client.client_id)


def test_a_rotation_without_overlap_refuses_the_old_secret_at_once(
    app: Flask, session: Session, client: FlaskClient, clock: Clock
) -> None:
    registered = make_client(session)
    assert _client_credentials(client, registered) == 200  # now in this process's cache

    rotated = rotate_client_secret(
        session, registered.client.client_id, clock.now, overlap=timedelta(0)
    )
    session.commit()

    assert _client_credentials(client, registered) == 401
    assert _client_credentials(client, _with_secret(registered, rotated.client_secret)) == 200


def test_rotating_again_in_an_overlap_ends_the_oldest_secret(
    app: Flask, session: Session, client: FlaskClient, clock: Clock
) -> None:
    registered = make_client(session)
    client_id = registered.client.client_id
    second = rotate_client_secret(session, client_id, clock.now, overlap=DAY).client_secret
    third = rotate_client_secret(session, client_id, clock.now, overlap=DAY).client_secret
    session.commit()

    assert _client_credentials(client, registered) == 401
    assert _client_credentials(client, _with_secret(registered, second)) == 200
    assert _client_credentials(client, _with_secret(registered, third)) == 200


def test_a_public_client_has_no_secret_to_rotate(
    app: Flask, session: Session, clock: Clock
) -> None:
    public = make_client(
        session, public=True, grant_types=["password", "refresh_token"], first_party=True
    )

    with pytest.raises(ValidationError, match="public"):
        rotate_client_secret(session, public.client.client_id, clock.now, overlap=DAY)


def test_the_previous_secret_digest_is_compared_only_within_its_overlap(
    session: Session, clock: Clock
) -> None:
    registered = make_client(session)
    old = registered.client_secret
    assert old is not None
    rotate_client_secret(session, registered.client.client_id, clock.now, overlap=DAY)
    client = registered.client

    assert client.check_client_secret(old, clock.now + DAY - timedelta(microseconds=1))
    assert not client.check_client_secret(old, clock.now + DAY)
    assert not client.check_client_secret("", clock.now)


def test_enable_after_disable_lets_the_client_get_tokens_that_stay_good(
    app: Flask, session: Session, client: FlaskClient, clock: Clock
) -> None:
    registered = make_client(session)
    resource_server = make_resource_server(session)
    client_id = registered.client.client_id
    disable_client(
        session, client_id, clock.now, stale_for=_stale_for(app), token_ttl=timedelta(hours=1)
    )
    session.commit()
    assert _client_credentials(client, registered) == 401

    # Tokens a server may still have issued from its memory of the client are recalled up to
    # the disable plus the cache time; enabling is refused until that moment has passed.
    with pytest.raises(ClientDisabledMoments):
        enable_client(session, client_id, clock.now)
    clock.advance(seconds=runtime(app).config.client_cache_seconds + 1)
    enable_client(session, client_id, clock.now)
    session.commit()

    issued = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, registered.client_secret or ""),
    ).json
    assert issued is not None
    introspected = client.post(
        "/oauth/introspect",
        data={"token": issued["access_token"]},
        headers=basic_auth(resource_server),
    ).json
    assert introspected is not None
    assert introspected["active"] is True
    assert _audit_types(session, client_id)[-2:] == ["client_enabled", "token_issued"]


def test_enable_refuses_a_client_that_is_not_disabled(session: Session, clock: Clock) -> None:
    registered = make_client(session)

    with pytest.raises(ValidationError, match="not disabled"):
        enable_client(session, registered.client.client_id, clock.now)
    with pytest.raises(NotFound):
        enable_client(session, "no-such-client", clock.now)


def test_update_replaces_what_is_given_and_audits_which_fields(
    session: Session, clock: Clock
) -> None:
    registered = make_client(session, audiences=["https://api.example.test"])
    client_id = registered.client.client_id

    changed = update_client(
        session, client_id, clock.now, scopes=["read"], access_token_ttl=60, audiences=[]
    )
    session.commit()

    assert changed == ["scopes", "audiences", "access_token_ttl"]
    client = session.get(Client, registered.client.id)
    assert client is not None
    assert (client.scopes, client.audiences, client.access_token_ttl) == (["read"], [], 60)
    event = session.scalars(
        select(AuditEvent).where(
            AuditEvent.client_id == client_id, AuditEvent.event_type == "client_updated"
        )
    ).one()
    assert event.details["changed"] == changed
    assert update_client(session, client_id, clock.now, scopes=["read"]) == []


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"redirect_uris": ["javascript:alert(1)"]}, "not allowed"),
        ({"redirect_uris": ["http://photos.example.test/cb"]}, "https"),
        ({"post_logout_redirect_uris": ["https://u@photos.example.test/"]}, "user information"),
        ({"redirect_uris": []}, "authorization_code needs at least one redirect URI"),
        ({"scopes": ["read", 'bad"scope']}, "scope token"),
        ({"audiences": ["not-absolute"]}, "absolute URI"),
        ({"refresh_idle_ttl": 0}, "positive"),
    ],
)
def test_update_applies_the_rules_of_registration_and_changes_nothing_when_refused(
    session: Session, clock: Clock, change: dict[str, Any], refusal: str
) -> None:
    registered = make_client(
        session,
        grant_types=["authorization_code", "refresh_token"],
        first_party=False,
        redirect_uris=["https://photos.example.test/cb"],
    )
    before = {
        column.key: getattr(registered.client, column.key)
        for column in Client.__mapper__.column_attrs
    }

    arguments = {"scopes": ["x"], **change}
    with pytest.raises(ValidationError, match=refusal):
        update_client(session, registered.client.client_id, clock.now, **arguments)
    session.rollback()

    client = session.get(Client, registered.client.id)
    assert client is not None
    after = {column.key: getattr(client, column.key) for column in Client.__mapper__.column_attrs}
    assert after == before


def test_delete_revokes_its_families_and_recalls_its_tokens_then_removes_it(
    app: Flask, session: Session, client: FlaskClient, clock: Clock
) -> None:
    make_user(app, session)
    registered = make_client(session)
    tokens = password_login(client, registered).json
    assert tokens is not None
    resource_server = make_resource_server(session)
    client_id = registered.client.client_id
    family_id = session.scalars(
        select(RefreshFamily.id).where(RefreshFamily.client_pk == registered.client.id)
    ).one()
    assert client_overview(session, client_id, clock.now).live_families == 1

    revoked = delete_client(
        session, client_id, clock.now, stale_for=_stale_for(app), token_ttl=timedelta(hours=1)
    )
    session.commit()

    assert revoked == 1
    assert session.scalars(select(Client).where(Client.client_id == client_id)).first() is None
    assert session.get(RefreshFamily, family_id) is None
    feed = client.get("/oauth/revocations", headers=basic_auth(resource_server)).json
    assert feed is not None
    entries = {(entry["type"], entry["value"]) for entry in feed["entries"]}
    assert {("sid", str(family_id)), ("client", client_id)} <= entries
    assert _audit_types(session, client_id)[-1] == "client_deleted"
    assert _client_credentials(client, registered) == 401
    assert refresh(client, registered, tokens["refresh_token"]).status_code == 401
    introspected = client.post(
        "/oauth/introspect",
        data={"token": tokens["access_token"]},
        headers=basic_auth(resource_server),
    ).json
    assert introspected == {"active": False}
