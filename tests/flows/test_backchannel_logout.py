"""OpenID Connect Back-Channel Logout 1.0: every way a browser session ends tells the apps that
signed in through it, and only them, once, with a logout token a relying party accepts.

Deliveries go to a real HTTP receiver on 127.0.0.1; the outbox is delivered by the test
(``runtime.deliver_outbox``, what the sender thread and `authserver outbox deliver` run), so
each test decides when. Tokens are checked with PyJWT against the published JWKS.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.db import db, utcnow
from authserver.models import AuditEvent, BrowserSession, OutboundMessage, User
from authserver.runtime import runtime
from authserver.services.backchannel_logout import CHANNEL as BACKCHANNEL_LOGOUT
from authserver.services.clients import RegisteredClient
from authserver.services.outbox import DeliveryReport
from authserver.services.token_verification import TokenRejected, verify_own_token
from authserver.services.users import disable_user
from tests.browser_helpers import (
    csrf_token_of,
    sign_in,
    tokens_through_browser,
    web_client,
)
from tests.helpers import account_api_request, make_client, make_user, password_login
from tests.receivers import Receiver, receiving, verified_logout_token

ISSUER = "http://127.0.0.1:8000"  # the `config` fixture's issuer
NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    with receiving() as served:
        yield served


def deliver(app: Flask) -> DeliveryReport:
    """Back-channel logout tokens only (some endings also mail the user a notice)."""
    return runtime(app).deliver_outbox(db.state(app).session_factory, only=BACKCHANNEL_LOGOUT)


def unverified_sid(id_token: str) -> str:
    sid: str = jwt.decode(id_token, options={"verify_signature": False})["sid"]
    return sid


@dataclass
class SignedIn:
    """Ann on a laptop (session S1: Photos, Notes and Plain signed in through it) and a phone
    (S2: Photos and Stranger). Photos, Notes and Stranger registered a back-channel logout
    URI on the receiver (/photos, /notes, /stranger); Plain registered none."""

    app: Flask
    user: User
    laptop: FlaskClient
    phone: FlaskClient
    clients: dict[str, RegisteredClient]
    # (client name, sid) for every sign-in, the sid read from the app's ID token.
    laptop_sid: str
    phone_sid: str
    id_tokens: dict[tuple[str, str], str]
    receiver: Receiver
    jwks: dict[str, Any]

    def told(self) -> set[tuple[str, str]]:
        """(path, sid) of every logout token received, each one verified for its client."""
        found = set()
        for received in self.receiver.received:
            name = received.path.strip("/")
            assert received.content_type == "application/x-www-form-urlencoded"  # §2.5
            claims = verified_logout_token(
                received.logout_token,
                self.jwks,
                issuer=ISSUER,
                client_id=self.clients[name].client.client_id,
            )
            assert claims["sub"] == str(self.user.id)
            found.add((name, claims["sid"]))
        return found


@pytest.fixture
def signed_in(
    app: Flask, session: Session, client: FlaskClient, receiver: tuple[Receiver, str]
) -> SignedIn:
    listener, base = receiver
    user = make_user(app, session)
    clients = {
        name: web_client(
            session,
            name=name.title(),
            backchannel_logout_uri=f"{base}/{name}" if name != "plain" else None,
        )
        for name in ("photos", "notes", "plain", "stranger")
    }
    laptop, phone = app.test_client(), app.test_client()
    assert sign_in(laptop).status_code == 303
    assert sign_in(phone).status_code == 303
    id_tokens = {}
    for browser, names in ((laptop, ("photos", "notes", "plain")), (phone, ("photos", "stranger"))):
        for name in names:
            id_token = tokens_through_browser(browser, clients[name])["id_token"]
            id_tokens[(name, unverified_sid(id_token))] = id_token
    sessions = list(session.scalars(select(BrowserSession).order_by(BrowserSession.created_at)))
    laptop_sid, phone_sid = (str(s.id) for s in sessions)
    return SignedIn(
        app,
        user,
        laptop,
        phone,
        clients,
        laptop_sid,
        phone_sid,
        id_tokens,
        listener,
        client.get("/.well-known/jwks.json").json,
    )


def expected_for(world: SignedIn, *ended: str) -> set[tuple[str, str]]:
    by_session = {
        "laptop": {("photos", world.laptop_sid), ("notes", world.laptop_sid)},
        "phone": {("photos", world.phone_sid), ("stranger", world.phone_sid)},
    }
    return set().union(*(by_session[name] for name in ended))


# -- the ways a browser session ends ---------------------------------------------------------


def sign_out_page(world: SignedIn) -> None:
    page = world.laptop.get("/logout")
    assert world.laptop.post("/logout", data={"csrf_token": csrf_token_of(page)}).status_code == 303


def rp_initiated_logout(world: SignedIn) -> None:
    hint = world.id_tokens[("notes", world.laptop_sid)]
    assert (
        world.laptop.get("/oauth/logout", query_string={"id_token_hint": hint}).status_code == 303
    )


def account_page_signs_out_the_phone(world: SignedIn) -> None:
    page = world.laptop.get("/account")
    answer = world.laptop.post(
        f"/account/devices/{world.phone_sid}/sign-out", data={"csrf_token": csrf_token_of(page)}
    )
    assert answer.status_code == 303


def account_page_signs_out_everywhere_else(world: SignedIn) -> None:
    page = world.laptop.get("/account")
    answer = world.laptop.post(
        "/account/devices/sign-out-others", data={"csrf_token": csrf_token_of(page)}
    )
    assert answer.status_code == 303


def password_change(world: SignedIn) -> None:
    page = world.laptop.get("/account")
    answer = world.laptop.post(
        "/account/password",
        data={
            "csrf_token": csrf_token_of(page),
            "current_password": "correct horse battery staple",
            "new_password": NEW_PASSWORD,
        },
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)


def _account_token(world: SignedIn) -> dict[str, str]:
    with db.transaction(world.app) as session:
        cli = make_client(session, name="Command-line app")
    tokens = password_login(world.app.test_client(), cli, **account_api_request(world.app))
    assert tokens.status_code == 200, tokens.json
    return {"Authorization": "Bearer " + tokens.json["access_token"]}


def account_api_signs_out_the_phone(world: SignedIn) -> None:
    answer = world.app.test_client().delete(
        f"/account/sessions/{world.phone_sid}", headers=_account_token(world)
    )
    assert answer.status_code == 204


def account_api_signs_out_everywhere_else(world: SignedIn) -> None:
    # The caller is an app signed in by password, tied to no browser: both browsers end.
    answer = world.app.test_client().post(
        "/account/sessions/revoke-others", headers=_account_token(world)
    )
    assert answer.json["revoked_sessions"] == 2


def account_api_signs_out_everywhere(world: SignedIn) -> None:
    answer = world.app.test_client().post("/account/logout-all", headers=_account_token(world))
    assert answer.json["revoked_sessions"] == 2


def user_disabled(world: SignedIn) -> None:
    with db.transaction(world.app) as session:
        disable_user(session, world.user.email, utcnow())


def sign_in_again(browser: FlaskClient, email: str = "ann@example.com") -> None:
    """The sign-in form of a browser that is signed in already (``prompt=login``)."""
    page = browser.get("/login", query_string={"prompt": "login"})
    answer = browser.post(
        "/login",
        data={
            "email": email,
            "password": "correct horse battery staple",
            "csrf_token": csrf_token_of(page),
            "next": "/account",
        },
    )
    assert answer.status_code == 303


def another_user_signs_in_on_the_laptop(world: SignedIn) -> None:
    with db.transaction(world.app) as session:
        make_user(world.app, session, "bob@example.com")
    sign_in_again(world.laptop, "bob@example.com")


SESSION_ENDINGS: list[tuple[Callable[[SignedIn], None], tuple[str, ...]]] = [
    (sign_out_page, ("laptop",)),
    (rp_initiated_logout, ("laptop",)),
    (account_page_signs_out_the_phone, ("phone",)),
    (account_page_signs_out_everywhere_else, ("phone",)),
    (password_change, ("phone",)),
    (account_api_signs_out_the_phone, ("phone",)),
    (account_api_signs_out_everywhere_else, ("laptop", "phone")),
    (account_api_signs_out_everywhere, ("laptop", "phone")),
    (user_disabled, ("laptop", "phone")),
    (another_user_signs_in_on_the_laptop, ("laptop",)),
]


@pytest.mark.parametrize(
    ("end_sessions", "ended"), SESSION_ENDINGS, ids=[f.__name__ for f, _ in SESSION_ENDINGS]
)
def test_every_way_a_session_ends_tells_exactly_the_apps_that_signed_in_through_it_once(
    signed_in: SignedIn, end_sessions: Callable[[SignedIn], None], ended: tuple[str, ...]
) -> None:
    end_sessions(signed_in)

    report = deliver(signed_in.app)

    expected = expected_for(signed_in, *ended)
    assert signed_in.told() == expected
    assert report.delivered == len(expected) == signed_in.receiver.count()
    # Nothing is left to send, now or later.
    assert deliver(signed_in.app).attempted == 0
    assert signed_in.receiver.count() == len(expected)


def test_nothing_is_sent_while_no_session_ends(signed_in: SignedIn) -> None:
    assert deliver(signed_in.app).attempted == 0
    assert signed_in.receiver.count() == 0


def test_the_logout_token_names_the_sid_of_the_apps_id_token_and_its_own_client(
    signed_in: SignedIn,
) -> None:
    sign_out_page(signed_in)
    deliver(signed_in.app)

    (photos,) = signed_in.receiver.at("/photos")
    claims = verified_logout_token(
        photos.logout_token,
        signed_in.jwks,
        issuer=ISSUER,
        client_id=signed_in.clients["photos"].client.client_id,
    )
    assert ("photos", claims["sid"]) in signed_in.id_tokens
    assert claims["sid"] == signed_in.laptop_sid
    assert set(claims) == {"iss", "sub", "aud", "iat", "exp", "jti", "events", "sid"}
    header = jwt.get_unverified_header(photos.logout_token)
    assert set(header) == {"typ", "alg", "kid"}


def test_each_logout_has_its_own_jti(signed_in: SignedIn) -> None:
    account_api_signs_out_everywhere(signed_in)
    deliver(signed_in.app)

    jtis = [
        jwt.decode(r.logout_token, options={"verify_signature": False})["jti"]
        for r in signed_in.receiver.received
    ]
    assert len(jtis) == 4
    assert len(set(jtis)) == 4


def test_a_session_ended_twice_tells_its_apps_once(signed_in: SignedIn) -> None:
    sign_out_page(signed_in)
    user_disabled(signed_in)  # ends the phone too, and finds the laptop already ended

    deliver(signed_in.app)

    assert signed_in.told() == expected_for(signed_in, "laptop", "phone")
    assert signed_in.receiver.count() == 4


def test_signing_in_again_as_the_same_user_tells_nobody_and_the_apps_keep_their_sid(
    signed_in: SignedIn, session: Session
) -> None:
    # prompt=login: the same user signs in again on the laptop; the session id changes.
    sign_in_again(signed_in.laptop)
    assert deliver(signed_in.app).attempted == 0

    sign_out_page(signed_in)
    deliver(signed_in.app)

    # Told with the sid their ID tokens carry, though the session they signed in through
    # has been replaced by the new one.
    assert signed_in.told() == expected_for(signed_in, "laptop")
    current = session.scalars(
        select(BrowserSession).where(BrowserSession.revoked_reason == "logout")
    ).all()
    assert {str(s.id) for s in current} - {signed_in.laptop_sid}


def test_an_app_signed_in_again_through_the_new_session_is_told_with_both_sids(
    signed_in: SignedIn,
) -> None:
    sign_in_again(signed_in.laptop)
    id_token = tokens_through_browser(signed_in.laptop, signed_in.clients["photos"])["id_token"]
    new_sid = unverified_sid(id_token)
    assert new_sid != signed_in.laptop_sid

    sign_out_page(signed_in)
    deliver(signed_in.app)

    assert signed_in.told() == expected_for(signed_in, "laptop") | {("photos", new_sid)}


def test_an_app_that_removed_its_uri_is_no_longer_told(
    signed_in: SignedIn, session: Session
) -> None:
    from authserver.services.clients import set_backchannel_logout

    set_backchannel_logout(session, signed_in.clients["notes"].client.client_id, None, utcnow())
    session.commit()

    sign_out_page(signed_in)
    deliver(signed_in.app)

    assert signed_in.told() == {("photos", signed_in.laptop_sid)}


def test_a_session_that_expired_tells_nobody(signed_in: SignedIn, app: Flask) -> None:
    # Expiry is not an event: nothing ends the session, it just stops working.
    later = utcnow() + timedelta(days=1)
    runtime(app).clock = lambda: later
    assert signed_in.laptop.get("/account").status_code == 303

    assert deliver(app).attempted == 0


# -- what is sent, and what is audited and logged -------------------------------------------


def test_delivery_is_audited_with_the_app_the_user_and_the_session(
    signed_in: SignedIn, session: Session
) -> None:
    sign_out_page(signed_in)
    deliver(signed_in.app)

    events = session.scalars(
        select(AuditEvent).where(AuditEvent.event_type == "outbox_delivered")
    ).all()
    assert {e.client_id for e in events} == {
        signed_in.clients[name].client.client_id for name in ("photos", "notes")
    }
    for event in events:
        assert event.user_id == signed_in.user.id
        assert event.details["channel"] == "backchannel_logout"
        assert event.details["browser_session_id"] == signed_in.laptop_sid
        assert event.details["attempts"] == 1


def test_no_logout_token_reaches_a_log_the_audit_trail_or_the_database(
    signed_in: SignedIn, session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    signed_in.receiver.status = 503  # a failed attempt is logged too
    sign_out_page(signed_in)
    deliver(signed_in.app)
    signed_in.receiver.status = 200
    runtime(signed_in.app).clock = lambda: utcnow() + timedelta(minutes=5)
    deliver(signed_in.app)

    tokens = [r.logout_token for r in signed_in.receiver.received]
    assert len(tokens) == 4
    stored = [
        repr((m.payload, m.destination, m.last_error))
        for m in session.scalars(select(OutboundMessage))
    ] + [repr(e.details) for e in session.scalars(select(AuditEvent))]
    for token in tokens:
        signature = token.rsplit(".", 1)[1]
        assert signature not in caplog.text
        assert not any(signature in row for row in stored)
    assert "HTTP 503" in caplog.text


# -- a logout token is no other token, and no other token is a logout token -----------------


def _a_logout_token(signed_in: SignedIn) -> str:
    sign_out_page(signed_in)
    deliver(signed_in.app)
    return signed_in.receiver.at("/photos")[0].logout_token


def test_a_logout_token_is_not_an_id_token_hint(signed_in: SignedIn, client: FlaskClient) -> None:
    logout_token = _a_logout_token(signed_in)
    assert sign_in(client).status_code == 303

    answer = client.get("/oauth/logout", query_string={"id_token_hint": logout_token})

    assert answer.status_code == 400
    assert client.get("/account").status_code == 200  # still signed in


def test_a_logout_token_is_not_an_access_token(signed_in: SignedIn, client: FlaskClient) -> None:
    logout_token = _a_logout_token(signed_in)
    bearer = {"Authorization": "Bearer " + logout_token}

    assert client.get("/oauth/userinfo", headers=bearer).status_code == 401
    assert client.get("/account/sessions", headers=bearer).status_code == 401


def test_a_logout_token_verified_as_an_id_token_or_access_token_is_refused(
    signed_in: SignedIn, app: Flask
) -> None:
    logout_token = _a_logout_token(signed_in)
    now = int(utcnow().timestamp())
    for typ in ("JWT", "at+jwt"):
        with pytest.raises(TokenRejected, match="wrong type"):
            verify_own_token(runtime(app).keys, logout_token, issuer=ISSUER, typ=typ, now=now)
    # ... and it is what it says it is.
    claims = verify_own_token(
        runtime(app).keys, logout_token, issuer=ISSUER, typ="logout+jwt", now=now
    ).claims
    assert claims["sid"] == signed_in.laptop_sid


def test_an_id_token_or_an_access_token_is_not_a_logout_token(signed_in: SignedIn) -> None:
    tokens = tokens_through_browser(signed_in.laptop, signed_in.clients["photos"])
    now = int(utcnow().timestamp())
    for token in (tokens["id_token"], tokens["access_token"]):
        with pytest.raises(TokenRejected, match="wrong type"):
            verify_own_token(
                runtime(signed_in.app).keys, token, issuer=ISSUER, typ="logout+jwt", now=now
            )


# -- discovery ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"]
)
def test_metadata_says_back_channel_logout_with_sid_is_supported(
    client: FlaskClient, path: str
) -> None:
    metadata = client.get(path).json

    assert metadata["backchannel_logout_supported"] is True
    assert metadata["backchannel_logout_session_supported"] is True


def test_a_client_registered_with_session_required_gets_the_sid(
    app: Flask, session: Session, client: FlaskClient, receiver: tuple[Receiver, str]
) -> None:
    listener, base = receiver
    make_user(app, session)
    photos = web_client(
        session,
        backchannel_logout_uri=base + "/photos",
        backchannel_logout_session_required=True,
    )
    assert sign_in(client).status_code == 303
    sid = unverified_sid(tokens_through_browser(client, photos)["id_token"])
    page = client.get("/logout")
    client.post("/logout", data={"csrf_token": csrf_token_of(page)})

    deliver(app)

    (received,) = listener.received
    claims = jwt.decode(received.logout_token, options={"verify_signature": False})
    assert claims["sid"] == sid
    assert uuid.UUID(claims["sub"])
