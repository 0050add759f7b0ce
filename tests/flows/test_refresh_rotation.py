"""Refresh-token rotation, reuse detection and the grace window (RFC 6749 §6, RFC 9700 §4.14)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from authserver.db import utcnow
from authserver.models import RefreshFamily, RefreshToken, User
from authserver.services.refresh_tokens import digest_token
from tests.helpers import make_client, make_user, password_login, refresh


def _login(app: Flask, session: Session, http: FlaskClient):  # type: ignore[no-untyped-def]
    make_user(app, session)
    registered = make_client(session)
    response = password_login(http, registered)
    assert response.status_code == 200, response.json
    return registered, response.json["refresh_token"]


def _family(session: Session) -> RefreshFamily:
    session.expire_all()
    return session.scalars(select(RefreshFamily)).one()


def test_refresh_returns_a_new_refresh_token_and_the_old_one_is_marked_used(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, first = _login(app, session, client)

    response = refresh(client, registered, first)

    assert response.status_code == 200
    assert response.json["refresh_token"] != first
    assert response.json["token_type"] == "Bearer"
    assert response.headers["Cache-Control"] == "no-store"
    old = session.scalars(
        select(RefreshToken).where(RefreshToken.token_digest == digest_token(first))
    ).one()
    assert old.used_at is not None


def test_the_successor_refreshes_again(app: Flask, session: Session, client: FlaskClient) -> None:
    registered, first = _login(app, session, client)
    second = refresh(client, registered, first).json["refresh_token"]

    third = refresh(client, registered, second)

    assert third.status_code == 200
    assert third.json["refresh_token"] not in (first, second)


def test_only_digests_of_refresh_tokens_are_stored(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, first = _login(app, session, client)
    second = refresh(client, registered, first).json["refresh_token"]

    rows = session.scalars(select(RefreshToken)).all()
    stored = b"".join(row.token_digest + (row.successor_ciphertext or b"") for row in rows)
    assert first.encode() not in stored
    assert second.encode() not in stored
    assert {row.token_digest for row in rows} == {digest_token(first), digest_token(second)}


def test_replayed_refresh_token_revokes_whole_family(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, first = _login(app, session, client)
    second = refresh(client, registered, first).json["refresh_token"]
    third = refresh(client, registered, second).json["refresh_token"]

    # `first` is two generations old: not a retry, a theft.
    replay = refresh(client, registered, first)

    assert replay.status_code == 400
    assert replay.json["error"] == "invalid_grant"
    family = _family(session)
    assert family.revoked_at is not None
    assert family.revoked_reason == "reuse_detected"
    # The legitimate holder's live token is dead too.
    successor = refresh(client, registered, third)
    assert successor.status_code == 400
    assert successor.json["error"] == "invalid_grant"


def test_retry_inside_grace_window_returns_identical_successor_without_forking(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, first = _login(app, session, client)
    original = refresh(client, registered, first)

    retry = refresh(client, registered, first)

    assert retry.status_code == 200
    assert retry.json["refresh_token"] == original.json["refresh_token"]
    # A fresh access token, not a copy of the lost one.
    assert retry.json["access_token"] != original.json["access_token"]
    unused = session.scalars(select(RefreshToken).where(RefreshToken.used_at.is_(None))).all()
    assert len(unused) == 1
    assert _family(session).revoked_at is None
    # And the family carries on from that successor.
    assert refresh(client, registered, retry.json["refresh_token"]).status_code == 200


def test_reuse_after_grace_window_revokes_family(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, first = _login(app, session, client)
    second = refresh(client, registered, first).json["refresh_token"]
    grace = app.config["AUTHSERVER"].refresh_reuse_grace
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.token_digest == digest_token(first))
        .values(used_at=utcnow() - timedelta(seconds=grace + 1))
    )
    session.commit()

    replay = refresh(client, registered, first)

    assert replay.json["error"] == "invalid_grant"
    assert _family(session).revoked_reason == "reuse_detected"
    assert refresh(client, registered, second).json["error"] == "invalid_grant"


def test_retry_of_predecessor_after_successor_was_used_revokes_family(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, first = _login(app, session, client)
    second = refresh(client, registered, first).json["refresh_token"]
    third = refresh(client, registered, second).json["refresh_token"]

    # `second` is the immediate predecessor of `third`... but `second`'s successor (third)
    # is unused, so that is a retry; `first`'s successor (second) has been used: theft.
    assert refresh(client, registered, second).json["refresh_token"] == third
    assert refresh(client, registered, first).json["error"] == "invalid_grant"
    assert _family(session).revoked_at is not None


def test_unknown_refresh_token_is_invalid_grant(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, _ = _login(app, session, client)

    response = refresh(client, registered, "not-a-token-we-issued")

    assert response.status_code == 400
    assert response.json["error"] == "invalid_grant"
    assert _family(session).revoked_at is None


def test_refresh_token_of_another_client_is_invalid_grant_and_leaves_family_alone(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, first = _login(app, session, client)
    other = make_client(session, name="Other app")

    response = refresh(client, other, first)

    assert response.json["error"] == "invalid_grant"
    assert _family(session).revoked_at is None
    assert refresh(client, registered, first).status_code == 200


def test_expired_family_is_invalid_grant(app: Flask, session: Session, client: FlaskClient) -> None:
    registered, first = _login(app, session, client)
    session.execute(update(RefreshFamily).values(expires_at=utcnow() - timedelta(seconds=1)))
    session.commit()

    assert refresh(client, registered, first).json["error"] == "invalid_grant"


def test_idle_expired_family_is_invalid_grant(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, first = _login(app, session, client)
    session.execute(update(RefreshFamily).values(idle_expires_at=utcnow() - timedelta(seconds=1)))
    session.commit()

    assert refresh(client, registered, first).json["error"] == "invalid_grant"


def test_rotation_slides_idle_expiry_but_never_the_absolute_expiry(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, first = _login(app, session, client)
    before = _family(session)
    absolute, idle = before.expires_at, before.idle_expires_at
    # Pretend the family is nearly at its absolute end.
    session.execute(
        update(RefreshFamily).values(
            expires_at=utcnow() + timedelta(seconds=60), idle_expires_at=idle
        )
    )
    session.commit()

    refresh(client, registered, first)

    after = _family(session)
    assert after.expires_at < absolute
    assert after.idle_expires_at <= after.expires_at


def test_disabled_user_cannot_refresh(app: Flask, session: Session, client: FlaskClient) -> None:
    from authserver.services.users import disable_user

    registered, first = _login(app, session, client)
    disable_user(session, "ann@example.com", utcnow())
    session.commit()

    assert refresh(client, registered, first).json["error"] == "invalid_grant"
    assert _family(session).revoked_reason == "user_disabled"


def test_scope_can_narrow_on_refresh(app: Flask, session: Session, client: FlaskClient) -> None:
    registered, first = _login(app, session, client)

    response = refresh(client, registered, first, scope="read")

    assert response.status_code == 200
    assert response.json["scope"] == "read"


def test_scope_cannot_widen_on_refresh(app: Flask, session: Session, client: FlaskClient) -> None:
    registered, _ = _login(app, session, client)
    narrow = password_login(client, registered, scope="read").json["refresh_token"]

    response = refresh(client, registered, narrow, scope="read write")

    assert response.status_code == 400
    assert response.json["error"] == "invalid_scope"
    # The refused request did not consume the token.
    assert refresh(client, registered, narrow).status_code == 200


@pytest.mark.parametrize(
    "spoil",
    [
        "user_disabled_without_revocation",
        "family_revoked",
        "family_expired",
        "family_idle_expired",
        "presented_by_another_client",
    ],
)
def test_every_refusal_leaves_the_token_unused(
    app: Flask, session: Session, client: FlaskClient, spoil: str
) -> None:
    """Each rule is checked before the token is claimed (in SQL on the common path, in
    Python on the other): a refusal never uses the token up or issues a successor."""
    registered, first = _login(app, session, client)
    presenter = registered
    now = utcnow()
    if spoil == "user_disabled_without_revocation":
        session.execute(update(User).values(disabled=True))
    elif spoil == "family_revoked":
        session.execute(update(RefreshFamily).values(revoked_at=now, revoked_reason="logout"))
    elif spoil == "family_expired":
        session.execute(update(RefreshFamily).values(expires_at=now - timedelta(seconds=1)))
    elif spoil == "family_idle_expired":
        session.execute(update(RefreshFamily).values(idle_expires_at=now - timedelta(seconds=1)))
    else:
        presenter = make_client(session, name="Other app")
    session.commit()

    response = refresh(client, presenter, first)

    assert response.status_code == 400
    assert response.json["error"] == "invalid_grant"
    session.expire_all()
    tokens = session.scalars(select(RefreshToken)).all()
    assert [(t.token_digest, t.used_at) for t in tokens] == [(digest_token(first), None)]
