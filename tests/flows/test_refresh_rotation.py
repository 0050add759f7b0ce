"""Refresh-token rotation, reuse detection and the grace window (RFC 6749 §6, RFC 9700 §4.14)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.db import utcnow
from authserver.models import AuditEvent, RefreshFamily, RefreshToken, User
from authserver.services.clients import RegisteredClient
from authserver.services.refresh_tokens import digest_token
from tests.helpers import client_auth, make_client, make_user, password_login, refresh


def _login(app: Flask, session: Session, http: FlaskClient):  # type: ignore[no-untyped-def]
    make_user(app, session)
    registered = make_client(session)
    response = password_login(http, registered)
    assert response.status_code == 200, response.json
    return registered, response.json["refresh_token"]


def _family(session: Session) -> RefreshFamily:
    session.expire_all()
    return session.scalars(select(RefreshFamily)).one()


def _audit_events(session: Session, event_type: str) -> list[AuditEvent]:
    session.expire_all()
    return list(
        session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == event_type).order_by(AuditEvent.id)
        )
    )


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


# -- the order of the checks: unknown, then used (retry or reuse), then everything else ----

# The config fixture's default audience: the audience of every family in this file.
FAMILY_AUDIENCE = "https://api.example.test"
UNKNOWN_AUDIENCE = "https://elsewhere.example.test"
WIDER_SCOPE = "read write admin"

# What a request may carry beside a refresh token. Each is refused for a live token
# (invalid_scope, invalid_target) or allowed (narrower scope, the family's own resource); for
# a used token none of them matters.
ANYTHING_ELSE = [
    pytest.param({}, id="nothing-else"),
    pytest.param({"scope": WIDER_SCOPE}, id="wider-scope"),
    pytest.param({"scope": "read"}, id="narrower-scope"),
    pytest.param({"resource": UNKNOWN_AUDIENCE}, id="foreign-resource"),
    pytest.param({"resource": [FAMILY_AUDIENCE, UNKNOWN_AUDIENCE]}, id="two-resources"),
    pytest.param({"resource": FAMILY_AUDIENCE}, id="the-family-resource"),
]


def _refresh_carrying(
    http: FlaskClient, registered: RegisteredClient, token: str, form: dict[str, Any]
) -> TestResponse:
    """A refresh whose form may repeat a parameter (a list value), as ``resource`` may."""
    headers, extra = client_auth(registered)
    return http.post(
        "/oauth/token",
        data={**extra, "grant_type": "refresh_token", "refresh_token": token, **form},
        headers=headers,
    )


def _two_generations(
    http: FlaskClient, registered: RegisteredClient, first: str
) -> tuple[str, str]:
    """(second, third): ``first`` is then used and its successor used too, so showing
    ``first`` again is no retry."""
    second = refresh(http, registered, first).json["refresh_token"]
    third = refresh(http, registered, second).json["refresh_token"]
    return second, third


@pytest.mark.parametrize("anything_else", ANYTHING_ELSE)
def test_a_used_token_is_reuse_whatever_else_the_request_carries(
    app: Flask, session: Session, client: FlaskClient, anything_else: dict[str, Any]
) -> None:
    registered, first = _login(app, session, client)
    _, third = _two_generations(client, registered, first)

    replay = _refresh_carrying(client, registered, first, anything_else)

    assert replay.status_code == 400
    assert replay.json["error"] == "invalid_grant"
    assert _family(session).revoked_reason == "reuse_detected"
    assert refresh(client, registered, third).json["error"] == "invalid_grant"


def test_a_used_token_shown_by_another_client_inside_the_grace_window_is_reuse(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    """A retry comes from the family's own client; anywhere else the used token has leaked,
    and the live successor may have leaked with it."""
    registered, first = _login(app, session, client)
    second = refresh(client, registered, first).json["refresh_token"]
    other = make_client(session, name="Other app")

    shown_elsewhere = refresh(client, other, first)

    assert shown_elsewhere.json["error"] == "invalid_grant"
    assert _family(session).revoked_reason == "reuse_detected"
    assert refresh(client, registered, second).json["error"] == "invalid_grant"


def test_reuse_by_another_client_is_recorded_with_the_client_the_family_belongs_to(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, first = _login(app, session, client)
    refresh(client, registered, first)
    other = make_client(session, name="Other app")

    refresh(client, other, first)

    [reuse] = _audit_events(session, "refresh_reuse_detected")
    assert reuse.client_id == other.client.client_id
    assert reuse.details["family_client_id"] == registered.client.client_id
    assert reuse.details["family_id"] == str(_family(session).id)


@pytest.mark.parametrize(
    ("beyond_the_grant", "error"),
    [
        pytest.param({"scope": WIDER_SCOPE}, "invalid_scope", id="wider-scope"),
        pytest.param({"resource": UNKNOWN_AUDIENCE}, "invalid_target", id="foreign-resource"),
        pytest.param(
            {"resource": [FAMILY_AUDIENCE, FAMILY_AUDIENCE]}, "invalid_target", id="two-resources"
        ),
    ],
)
def test_a_retry_inside_the_grace_window_asking_beyond_the_grant_is_refused_and_keeps_the_family(
    app: Flask,
    session: Session,
    client: FlaskClient,
    beyond_the_grant: dict[str, Any],
    error: str,
) -> None:
    """Answered as the request it repeats would be: its holder could have had the successor
    by asking plainly, so the refusal tells it nothing, and revoking would log out a client
    that merely retried."""
    registered, first = _login(app, session, client)
    original = refresh(client, registered, first).json["refresh_token"]

    retry = _refresh_carrying(client, registered, first, beyond_the_grant)

    assert retry.status_code == 400
    assert retry.json["error"] == error
    assert _family(session).revoked_at is None
    assert refresh(client, registered, first).json["refresh_token"] == original


def test_a_retry_inside_the_grace_window_may_narrow_the_scope(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, first = _login(app, session, client)
    original = refresh(client, registered, first).json["refresh_token"]

    retry = refresh(client, registered, first, scope="read")

    assert retry.status_code == 200
    assert retry.json["refresh_token"] == original
    assert retry.json["scope"] == "read"


# Tokens their presenter cannot use, each made so by one thing. Every answer must read
# exactly like the answer to a token the server never issued: whoever holds a stolen token
# learns nothing of its family (alive, revoked, expired, its user disabled), and nothing of
# whether the token is used.
UNUSABLE_TOKENS = [
    "used-of-a-live-family",
    "used-of-a-revoked-family",
    "used-of-an-expired-family",
    "used-of-an-idle-expired-family",
    "used-of-a-disabled-user",
    "used-inside-the-grace-window-of-a-revoked-family",
    "used-inside-the-grace-window-shown-by-another-client",
    "live-of-a-revoked-family",
    "live-of-an-expired-family",
    "live-of-a-disabled-user",
    "live-shown-by-another-client",
]


def _unusable_token(
    app: Flask, session: Session, http: FlaskClient, how: str
) -> tuple[RegisteredClient, str]:
    """(presenter, token) for one of ``UNUSABLE_TOKENS``."""
    registered, first = _login(app, session, http)
    token = first
    if how.startswith("used-inside-the-grace-window"):
        refresh(http, registered, first)
    elif how.startswith("used"):
        _two_generations(http, registered, first)
    now = utcnow()
    presenter = registered
    if how.endswith("revoked-family"):
        session.execute(update(RefreshFamily).values(revoked_at=now, revoked_reason="logout"))
    elif how.endswith("idle-expired-family"):
        session.execute(update(RefreshFamily).values(idle_expires_at=now - timedelta(seconds=1)))
    elif how.endswith("expired-family"):
        session.execute(update(RefreshFamily).values(expires_at=now - timedelta(seconds=1)))
    elif how.endswith("disabled-user"):
        session.execute(update(User).values(disabled=True))
    elif how.endswith("another-client"):
        presenter = make_client(session, name="Other app")
    session.commit()
    return presenter, token


@pytest.mark.parametrize("anything_else", ANYTHING_ELSE)
@pytest.mark.parametrize("how", UNUSABLE_TOKENS)
def test_an_unusable_token_is_answered_exactly_like_an_unknown_one(
    app: Flask, session: Session, client: FlaskClient, how: str, anything_else: dict[str, Any]
) -> None:
    presenter, token = _unusable_token(app, session, client, how)
    unknown = _refresh_carrying(client, presenter, "never-issued", anything_else)

    answer = _refresh_carrying(client, presenter, token, anything_else)

    assert (answer.status_code, answer.json) == (unknown.status_code, unknown.json)
    assert answer.json["error"] == "invalid_grant"


def test_a_retry_after_the_family_was_signed_out_is_not_recorded_as_reuse(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    registered, first = _login(app, session, client)
    refresh(client, registered, first)
    session.execute(update(RefreshFamily).values(revoked_at=utcnow(), revoked_reason="logout"))
    session.commit()

    refresh(client, registered, first)

    assert _audit_events(session, "refresh_reuse_detected") == []
    assert _family(session).revoked_reason == "logout"


def test_a_used_token_of_a_signed_out_family_is_recorded_as_reuse(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    """Nothing is left to revoke, but the trail learns that a used token is out there."""
    registered, first = _login(app, session, client)
    _two_generations(client, registered, first)
    session.execute(update(RefreshFamily).values(revoked_at=utcnow(), revoked_reason="logout"))
    session.commit()

    refresh(client, registered, first)

    [reuse] = _audit_events(session, "refresh_reuse_detected")
    assert reuse.details["family_id"] == str(_family(session).id)
    assert _family(session).revoked_reason == "logout"


@pytest.mark.parametrize(
    ("beyond_the_grant", "error"),
    [
        pytest.param({"scope": WIDER_SCOPE}, "invalid_scope", id="wider-scope"),
        pytest.param({"resource": UNKNOWN_AUDIENCE}, "invalid_target", id="foreign-resource"),
    ],
)
def test_a_live_token_asking_beyond_the_grant_is_refused_and_left_unused(
    app: Flask,
    session: Session,
    client: FlaskClient,
    beyond_the_grant: dict[str, Any],
    error: str,
) -> None:
    registered, first = _login(app, session, client)

    response = _refresh_carrying(client, registered, first, beyond_the_grant)

    assert response.status_code == 400
    assert response.json["error"] == error
    session.expire_all()
    tokens = session.scalars(select(RefreshToken)).all()
    assert [(t.token_digest, t.used_at) for t in tokens] == [(digest_token(first), None)]


@pytest.mark.parametrize(
    "shape",
    [
        "{family}.{secret}x",  # the right family, a wrong secret
        "{family}x.{secret}",  # a family part one character too long
        "!!!!!!!!!!!!!!!!!!!!!!.{secret}",  # not base64url
        ".{secret}",
        "{family}.",
        "{family}.{secret}.{secret}",
        "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9.{secret}",
    ],
)
def test_a_refresh_token_with_a_wrong_family_part_or_secret_is_invalid_grant_and_revokes_nothing(
    app: Flask, session: Session, client: FlaskClient, shape: str
) -> None:
    registered, first = _login(app, session, client)
    family, _, secret = first.partition(".")

    response = refresh(client, registered, shape.format(family=family, secret=secret))

    assert response.status_code == 400
    assert response.json["error"] == "invalid_grant"
    assert _family(session).revoked_at is None
    assert refresh(client, registered, first).status_code == 200
