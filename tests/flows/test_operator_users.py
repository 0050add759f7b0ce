"""The operator's account services (``services/users.py``, behind ``authserver users ...``):
enabling a disabled account, setting a password, verifying an address, listing and deleting
accounts, and when a user last signed in."""

from __future__ import annotations

import uuid

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.errors import NotFound, ValidationError
from authserver.models import AuditEvent, BrowserSession, RefreshFamily, User
from authserver.runtime import runtime
from authserver.services.passwords import PasswordRejected
from authserver.services.users import (
    delete_user,
    disable_user,
    enable_user,
    find_user_by_email,
    list_users,
    mark_email_verified,
    set_password,
    user_overview,
)
from tests.browser_helpers import sign_in
from tests.helpers import (
    Clock,
    basic_auth,
    make_client,
    make_resource_server,
    make_user,
    password_login,
    refresh,
)

NEW_PASSWORD = "an entirely different passphrase"
FEED = "/oauth/revocations"


def _set_password(app: Flask, session: Session, user: User, password: str) -> tuple[int, int]:
    rt = runtime(app)
    return set_password(
        session,
        rt.hasher,
        user,
        password,
        now=rt.now(),
        password_policy=rt.password_policy,
        notices=rt.notices,
    )


def test_a_successful_sign_in_records_when(
    app: Flask, session: Session, client: FlaskClient, clock: Clock
) -> None:
    user = make_user(app, session)
    assert user.last_sign_in_at is None
    registered = make_client(session)

    assert password_login(client, registered).status_code == 200

    session.expire_all()
    signed_in = session.get(User, user.id)
    assert signed_in is not None
    assert signed_in.last_sign_in_at == clock.now


def test_a_failed_sign_in_does_not_count_as_a_sign_in(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    user = make_user(app, session)
    registered = make_client(session)

    assert password_login(client, registered, password="not the password").status_code == 400

    session.expire_all()
    not_signed_in = session.get(User, user.id)
    assert not_signed_in is not None
    assert not_signed_in.last_sign_in_at is None


def test_enable_lets_a_disabled_user_sign_in_again_but_revives_none_of_their_tokens(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    user = make_user(app, session)
    registered = make_client(session)
    before = password_login(client, registered).json
    assert before is not None
    disable_user(session, user.email, runtime(app).now())
    session.commit()
    assert password_login(client, registered).status_code == 400

    enable_user(session, user.email, runtime(app).now())
    session.commit()

    assert password_login(client, registered).status_code == 200
    assert refresh(client, registered, before["refresh_token"]).status_code == 400
    types = session.scalars(select(AuditEvent.event_type).where(AuditEvent.user_id == user.id))
    assert "user_enabled" in list(types)


def test_enable_refuses_an_account_that_is_not_disabled_or_does_not_exist(
    app: Flask, session: Session
) -> None:
    user = make_user(app, session)

    with pytest.raises(ValidationError, match="not disabled"):
        enable_user(session, user.email, runtime(app).now())
    with pytest.raises(NotFound):
        enable_user(session, "nobody@example.com", runtime(app).now())


def test_set_password_replaces_the_password_and_signs_the_user_out_everywhere(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    user = make_user(app, session)
    registered = make_client(session)
    tokens = password_login(client, registered).json
    assert tokens is not None
    assert sign_in(app.test_client()).status_code == 303

    sessions, families = _set_password(app, session, user, NEW_PASSWORD)
    session.commit()

    assert (sessions, families) == (1, 1)
    assert refresh(client, registered, tokens["refresh_token"]).status_code == 400
    live = select(BrowserSession).where(
        BrowserSession.user_id == user.id, BrowserSession.revoked_at.is_(None)
    )
    assert session.scalars(live).first() is None
    family = session.scalars(select(RefreshFamily).where(RefreshFamily.user_id == user.id)).one()
    assert family.revoked_reason == "password_set"
    assert password_login(client, registered).status_code == 400
    assert password_login(client, registered, password=NEW_PASSWORD).status_code == 200


@pytest.mark.parametrize("weak", ["short", "password123", "ann@example.com"])
def test_set_password_applies_the_password_policy_and_changes_nothing(
    app: Flask, session: Session, client: FlaskClient, weak: str
) -> None:
    user = make_user(app, session)
    registered = make_client(session)
    tokens = password_login(client, registered).json
    assert tokens is not None

    with pytest.raises(PasswordRejected):
        _set_password(app, session, user, weak)
    session.rollback()

    assert password_login(client, registered).status_code == 200
    assert refresh(client, registered, tokens["refresh_token"]).status_code == 200


def test_verifying_an_address_is_recorded_once(app: Flask, session: Session) -> None:
    user = make_user(app, session)

    assert mark_email_verified(session, user, runtime(app).now(), method="operator")
    assert not mark_email_verified(session, user, runtime(app).now(), method="operator")

    assert user.email_verified
    events = session.scalars(
        select(AuditEvent).where(
            AuditEvent.user_id == user.id, AuditEvent.event_type == "email_verified"
        )
    ).all()
    assert [event.details for event in events] == [{"method": "operator"}]


def test_delete_revokes_everything_into_the_feed_then_removes_the_account(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    user = make_user(app, session)
    user_id = user.id
    registered = make_client(session)
    tokens = password_login(client, registered).json
    assert tokens is not None
    resource_server = make_resource_server(session)
    family_id = session.scalars(
        select(RefreshFamily.id).where(RefreshFamily.user_id == user_id)
    ).one()

    _, _, families = delete_user(session, user.email, runtime(app).now(), runtime(app).notices)
    session.commit()

    assert families == 1
    assert find_user_by_email(session, "ann@example.com") is None
    assert session.get(RefreshFamily, family_id) is None
    feed = client.get(FEED, headers=basic_auth(resource_server)).json
    assert feed is not None
    entries = {(entry["type"], entry["value"]) for entry in feed["entries"]}
    assert ("sid", str(family_id)) in entries
    assert ("sub", str(user_id)) in entries
    # The trail keeps the account's events, naming the id of an account that is gone.
    kept = set(session.scalars(select(AuditEvent.event_type).where(AuditEvent.user_id == user_id)))
    assert {"user_created", "signin_succeeded", "family_revoked", "user_deleted"} <= kept
    assert refresh(client, registered, tokens["refresh_token"]).status_code == 400
    introspected = client.post(
        "/oauth/introspect",
        data={"token": tokens["access_token"]},
        headers=basic_auth(resource_server),
    ).json
    assert introspected == {"active": False}


def test_delete_of_an_unknown_account_is_not_found(app: Flask, session: Session) -> None:
    with pytest.raises(NotFound):
        delete_user(session, "nobody@example.com", runtime(app).now(), runtime(app).notices)


def test_list_pages_by_address_and_a_page_is_not_shifted_by_new_accounts(
    app: Flask, session: Session
) -> None:
    tag = uuid.uuid4().hex[:8]
    for name in ("b", "d", "f"):
        make_user(app, session, f"{name}-{tag}@example.com")

    first = list_users(session, search=tag, limit=2)
    make_user(app, session, f"a-{tag}@example.com")  # before the page just read
    make_user(app, session, f"e-{tag}@example.com")  # after it
    second = list_users(session, search=tag, after=first[-1].email, limit=2)

    assert [u.email for u in first] == [f"b-{tag}@example.com", f"d-{tag}@example.com"]
    assert [u.email for u in second] == [f"e-{tag}@example.com", f"f-{tag}@example.com"]
    assert list_users(session, search="%", limit=10) == []  # a wildcard is only a character
    with pytest.raises(ValidationError):
        list_users(session, limit=0)


def test_overview_lists_live_sessions_and_families_with_the_clients_name(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    user = make_user(app, session)
    registered = make_client(session, name="Photos")
    assert password_login(client, registered).status_code == 200
    assert sign_in(app.test_client()).status_code == 303

    overview = user_overview(session, user.email, runtime(app).now())

    assert len(overview.browser_sessions) == 1
    assert [d.client_name for d in overview.refresh_families] == ["Photos"]
