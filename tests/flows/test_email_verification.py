"""Address verification by mail (issue 14, part 3): the account page sends a link; the link's
page asks for a button press (a GET verifies nothing: mail scanners follow links); the POST
marks the address verified, once, while the link is live and the account still has the
address it was sent to; userinfo says so. Mail goes over real SMTP and is read back."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from authlib.common.encoding import urlsafe_b64decode as base64url_decode
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from authserver.models import AccountLink, AuditEvent, User
from authserver.runtime import runtime
from authserver.services.users import mark_email_verified
from tests.browser_helpers import (
    csrf_token_of,
    refused_as_csrf,
    sign_in,
    tokens_through_browser,
    web_client,
)
from tests.helpers import Clock, make_user
from tests.smtp_servers import Mailbox
from tests.test_mail import deliver, parts

EMAIL = "ann@example.com"
LINK = re.compile(r"/email/verify\?token=([A-Za-z0-9_-]+)")


@pytest.fixture
def browser(app: Flask, session: Session) -> FlaskClient:
    """Ann, signed in."""
    make_user(app, session)
    http = app.test_client()
    assert sign_in(http).status_code == 303
    return http


def mailed(app: Flask, mailbox: Mailbox) -> list[EmailMessage]:
    deliver(app)
    return list(mailbox.received)


def ask_verification(http: FlaskClient) -> tuple[int, str]:
    page = http.get("/account")
    answer = http.post("/account/email/verification", data={"csrf_token": csrf_token_of(page)})
    return answer.status_code, answer.get_data(as_text=True)


def verification_token(app: Flask, http: FlaskClient, mailbox: Mailbox) -> str:
    before = len(mailbox.received)
    assert ask_verification(http)[0] == 200
    received = mailed(app, mailbox)
    assert len(received) == before + 1
    match = LINK.search(parts(received[-1])["text/plain"])
    assert match, "no verification link in the message"
    return match.group(1)


def confirm(http: FlaskClient, token: str) -> tuple[int, str]:
    """Open the link and press the button, as a person does."""
    page = http.get("/email/verify", query_string={"token": token})
    if page.status_code != 200:
        return page.status_code, page.get_data(as_text=True)
    answer = http.post("/email/verify", data={"token": token, "csrf_token": csrf_token_of(page)})
    return answer.status_code, answer.get_data(as_text=True)


def post_confirm(http: FlaskClient, token: str) -> tuple[int, str]:
    """The POST alone, with a CSRF token from another page (the link need not open)."""
    page = http.get("/password/forgot")
    answer = http.post("/email/verify", data={"token": token, "csrf_token": csrf_token_of(page)})
    return answer.status_code, answer.get_data(as_text=True)


def is_invalid_link_page(status: int, body: str) -> bool:
    return status == 400 and "This link does not work" in body


def verified(session: Session) -> bool:
    user = session.scalars(select(User).where(User.email == EMAIL)).one()
    session.refresh(user)
    return user.email_verified


def userinfo(app: Flask, session: Session) -> dict[str, Any]:
    http = app.test_client()
    assert sign_in(http).status_code == 303
    tokens = tokens_through_browser(http, web_client(session), scope="openid email")
    # The ID token says nothing of the address, verified or not: it travels in logout URLs
    # (id_token_hint); userinfo is where a client reads it.
    id_token_claims = json.loads(base64url_decode(tokens["id_token"].split(".")[1].encode()))
    assert not {"email", "email_verified"} & set(id_token_claims)
    answer = http.get(
        "/oauth/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]}
    )
    assert answer.status_code == 200
    return dict(answer.json)


# -- the account page -------------------------------------------------------------------------


def test_the_account_page_shows_the_address_and_that_it_is_not_confirmed(
    browser: FlaskClient,
) -> None:
    page = browser.get("/account").get_data(as_text=True)
    assert "Not confirmed" in page
    assert "Send verification email" in page


def test_a_confirmed_address_shows_as_confirmed_without_the_button(
    app: Flask, session: Session, browser: FlaskClient
) -> None:
    user = session.scalars(select(User)).one()
    mark_email_verified(session, user, runtime(app).now(), method="operator")
    session.commit()
    page = browser.get("/account").get_data(as_text=True)
    assert "Confirmed" in page
    assert "Not confirmed" not in page
    assert "Send verification email" not in page


# -- the link -----------------------------------------------------------------------------------


def test_the_link_verifies_the_address_and_userinfo_says_so(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox
) -> None:
    token = verification_token(app, browser, mailbox)
    message = mailbox.received[-1]
    assert message["To"] == EMAIL
    assert message["Subject"] == "Confirm your authserver address"
    assert userinfo(app, session)["email_verified"] is False

    # Opening the link (what a mail scanner does) verifies nothing.
    page = app.test_client().get("/email/verify", query_string={"token": token})
    assert page.status_code == 200
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    assert not verified(session)

    # In a browser that is not signed in: the link is proof enough.
    status, body = confirm(app.test_client(), token)

    assert status == 200
    assert "is confirmed as your address" in body
    assert verified(session)
    assert userinfo(app, session) == {
        "sub": str(session.scalars(select(User)).one().id),
        "email": EMAIL,
        "email_verified": True,
    }
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.event_type == "email_verified")
    ).all()
    assert [e.details["method"] for e in events] == ["link"]
    assert "Not confirmed" not in browser.get("/account").get_data(as_text=True)


def test_the_link_token_is_stored_only_as_its_digest(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox
) -> None:
    token = verification_token(app, browser, mailbox)
    link = session.scalars(select(AccountLink)).one()
    assert link.purpose == "email_verification"
    assert link.email == EMAIL
    assert token.encode() not in link.token_digest
    assert link.expires_at - link.created_at == timedelta(hours=24)


def test_a_link_works_once(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox
) -> None:
    token = verification_token(app, browser, mailbox)
    assert confirm(browser, token)[0] == 200
    # Unverified again (an operator's doing, say): the used link does not verify it anew.
    session.execute(update(User).values(email_verified=False))
    session.commit()

    assert is_invalid_link_page(*post_confirm(browser, token))
    assert is_invalid_link_page(*confirm(browser, token))
    assert not verified(session)


def test_an_expired_link_verifies_nothing(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox, clock: Clock
) -> None:
    token = verification_token(app, browser, mailbox)
    clock.advance(hours=24, seconds=1)

    assert is_invalid_link_page(*confirm(browser, token))
    assert is_invalid_link_page(*post_confirm(browser, token))
    assert not verified(session)


def test_the_lifetime_is_a_setting(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox, clock: Clock
) -> None:
    runtime(app).config = replace(runtime(app).config, email_verification_ttl=600)
    token = verification_token(app, browser, mailbox)
    clock.advance(minutes=10, seconds=1)
    assert is_invalid_link_page(*confirm(browser, token))


def test_a_newer_link_ends_the_older_one(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox
) -> None:
    older = verification_token(app, browser, mailbox)
    newer = verification_token(app, browser, mailbox)
    assert is_invalid_link_page(*post_confirm(browser, older))
    assert not verified(session)
    assert confirm(browser, newer)[0] == 200


def test_a_link_for_an_address_the_account_no_longer_has_verifies_nothing(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox
) -> None:
    token = verification_token(app, browser, mailbox)
    # The account moved to another address (by whatever means) after the link was sent.
    session.execute(update(User).values(email="ann.new@example.com"))
    session.commit()

    assert is_invalid_link_page(*confirm(app.test_client(), token))
    assert is_invalid_link_page(*post_confirm(app.test_client(), token))
    user = session.scalars(select(User)).one()
    session.refresh(user)
    assert not user.email_verified


def test_unknown_malformed_and_other_purpose_tokens_get_the_same_page(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    for token in ("", "A" * 43, "x" * 5000, "../../etc", "\x00"):
        answer = client.get("/email/verify", query_string={"token": token})
        assert is_invalid_link_page(answer.status_code, answer.get_data(as_text=True)), token
        assert is_invalid_link_page(*post_confirm(client, token)), token


def test_a_disabled_account_s_link_verifies_nothing(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox
) -> None:
    token = verification_token(app, browser, mailbox)
    session.execute(update(User).values(disabled=True))
    session.commit()
    assert is_invalid_link_page(*post_confirm(app.test_client(), token))
    assert not verified(session)


# -- refusals -----------------------------------------------------------------------------------


def test_forms_without_a_csrf_token_are_refused(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox
) -> None:
    assert refused_as_csrf(browser.post("/account/email/verification"))
    assert mailed(app, mailbox) == []
    token = verification_token(app, browser, mailbox)

    assert refused_as_csrf(app.test_client().post("/email/verify", data={"token": token}))
    assert refused_as_csrf(browser.post("/email/verify", data={"token": token}))
    assert not verified(session)
    assert confirm(browser, token)[0] == 200


def test_a_csrf_token_of_another_browser_session_is_refused(
    app: Flask, browser: FlaskClient, mailbox: Mailbox
) -> None:
    stale = csrf_token_of(browser.get("/account"))
    # Signed out and in again: a new browser session in the same browser.
    assert browser.post("/logout", data={"csrf_token": stale}).status_code == 303
    assert sign_in(browser).status_code == 303
    refused = browser.post("/account/email/verification", data={"csrf_token": stale})
    assert refused_as_csrf(refused)
    assert mailed(app, mailbox) == []


def test_sending_needs_a_signed_in_browser(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    page = client.get("/login")
    answer = client.post("/account/email/verification", data={"csrf_token": csrf_token_of(page)})
    assert answer.status_code == 303
    assert answer.headers["Location"].startswith("/login?next=")
    assert session.scalars(select(AccountLink)).all() == []


def test_an_account_is_mailed_at_most_the_hourly_cap_of_verification_links(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox, clock: Clock
) -> None:
    codes = [ask_verification(browser)[0] for _ in range(4)]

    assert codes == [200, 200, 200, 429]
    assert "try again later" in ask_verification(browser)[1]
    assert len(mailed(app, mailbox)) == 3
    reasons = session.scalars(
        select(AuditEvent).where(AuditEvent.event_type == "email_verification_requested")
    ).all()
    assert [r.details.get("reason") for r in reasons].count("mail_cap") == 2
    clock.advance(hours=1, seconds=1)
    assert sign_in(browser).status_code == 303  # the idle session ended meanwhile
    assert ask_verification(browser)[0] == 200
    assert len(mailed(app, mailbox)) == 4


def test_an_address_already_confirmed_is_sent_nothing(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox
) -> None:
    user = session.scalars(select(User)).one()
    mark_email_verified(session, user, runtime(app).now(), method="operator")
    session.commit()
    status, body = ask_verification(browser)
    assert status == 200
    assert "already confirmed" in body
    assert mailed(app, mailbox) == []
