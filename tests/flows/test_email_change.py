"""Changing the account's address (issue 14, part 3): the account page asks for the current
password and the new address; nothing changes until the link mailed to the new address is
followed (a POST from its page); the old address is told. An address another account has gets
the same answer on the page, and a message instead of a link. At the link the address is
checked again, and the unique indexes decide a race. Mail goes over real SMTP."""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from email.message import EmailMessage

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from authserver.db import db
from authserver.models import AccountLink, AuditEvent, User
from authserver.runtime import runtime
from authserver.services.account_links import LinkPurpose, issue_link
from authserver.services.email_change import AddressTaken, complete_email_change
from authserver.services.lookalikes import email_skeleton_digest
from authserver.services.sign_in import RequestContext
from tests.browser_helpers import csrf_token_of, refused_as_csrf, sign_in
from tests.helpers import PASSWORD, Clock, make_user
from tests.smtp_servers import Mailbox
from tests.test_mail import deliver, parts

EMAIL = "ann@example.com"
NEW = "ann.new@example.org"
CHANGE_LINK = re.compile(r"/email/change\?token=([A-Za-z0-9_-]+)")
VERIFY_LINK = re.compile(r"/email/verify\?token=([A-Za-z0-9_-]+)")
RESET_LINK = re.compile(r"/password/reset\?token=([A-Za-z0-9_-]+)")


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


def ask_change(
    http: FlaskClient, new_email: str = NEW, password: str = PASSWORD
) -> tuple[int, str]:
    page = http.get("/account")
    answer = http.post(
        "/account/email",
        data={
            "new_email": new_email,
            "current_password": password,
            "csrf_token": csrf_token_of(page),
        },
    )
    return answer.status_code, answer.get_data(as_text=True)


def token_in(message: EmailMessage, pattern: re.Pattern[str] = CHANGE_LINK) -> str:
    match = pattern.search(parts(message)["text/plain"])
    assert match, "no link in the message"
    return match.group(1)


def change_token(app: Flask, http: FlaskClient, mailbox: Mailbox, new_email: str = NEW) -> str:
    assert ask_change(http, new_email)[0] == 200
    to_new = [m for m in mailed(app, mailbox) if m["To"] == new_email]
    return token_in(to_new[-1])


def confirm(http: FlaskClient, token: str) -> tuple[int, str]:
    page = http.get("/email/change", query_string={"token": token})
    if page.status_code != 200:
        return page.status_code, page.get_data(as_text=True)
    answer = http.post("/email/change", data={"token": token, "csrf_token": csrf_token_of(page)})
    return answer.status_code, answer.get_data(as_text=True)


def post_confirm(http: FlaskClient, token: str) -> tuple[int, str]:
    page = http.get("/password/forgot")
    answer = http.post("/email/change", data={"token": token, "csrf_token": csrf_token_of(page)})
    return answer.status_code, answer.get_data(as_text=True)


def is_invalid_link_page(status: int, body: str) -> bool:
    return status == 400 and "This link does not work" in body


def ann(session: Session) -> User:
    user = session.scalars(select(User).where(User.id == _ann_id(session))).one()
    session.refresh(user)
    return user


def _ann_id(session: Session) -> object:
    return session.scalars(select(User.id).order_by(User.created_at)).first()


def signs_in(app: Flask, email: str) -> bool:
    return sign_in(app.test_client(), email).status_code == 303


def links(session: Session) -> list[AccountLink]:
    return list(session.scalars(select(AccountLink).where(AccountLink.purpose == "email_change")))


# -- asking ---------------------------------------------------------------------------------


def test_the_change_happens_only_when_the_link_is_followed(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox
) -> None:
    status, page = ask_change(browser, " Ann.New@Example.org ")

    assert status == 200
    assert f"We sent a link to {NEW}" in page
    # Nothing changed yet: the old address signs in, the new one does not.
    assert ann(session).email == EMAIL
    assert signs_in(app, EMAIL)
    assert not signs_in(app, NEW)
    to_new, _notice = sorted(mailed(app, mailbox), key=lambda m: m["To"] != NEW)
    assert to_new["To"] == NEW
    assert to_new["Subject"] == "Confirm your new authserver address"
    token = token_in(to_new)
    link = links(session)[0]
    assert link.email == NEW
    assert token.encode() not in link.token_digest

    # Opening the link (a mail scanner) changes nothing; the button does.
    page_of_link = app.test_client().get("/email/change", query_string={"token": token})
    assert page_of_link.status_code == 200
    assert page_of_link.headers["Referrer-Policy"] == "no-referrer"
    assert page_of_link.headers["Cache-Control"] == "no-store"
    assert ann(session).email == EMAIL
    status, body = confirm(app.test_client(), token)

    assert status == 200
    assert "is now <strong>ann.new@example.org</strong>" in body
    user = ann(session)
    assert user.email == NEW
    assert user.email_verified
    assert user.email_skeleton_digest == email_skeleton_digest(NEW)
    assert signs_in(app, NEW)
    assert not signs_in(app, EMAIL)
    changed = session.scalars(
        select(AuditEvent).where(AuditEvent.event_type == "email_changed")
    ).one()
    assert changed.details == {"email": NEW, "previous_email": EMAIL, "method": "link"}
    verified = session.scalars(
        select(AuditEvent).where(AuditEvent.event_type == "email_verified")
    ).one()
    assert verified.details["method"] == "email_change"
    account_page = browser.get("/account").get_data(as_text=True)
    assert f"<strong>{NEW}</strong>" in account_page
    assert "Not confirmed" not in account_page


def test_the_old_address_is_told_with_the_new_one_half_hidden(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox
) -> None:
    ask_change(browser)

    notice = next(m for m in mailed(app, mailbox) if m["To"] == EMAIL)
    text = parts(notice)["text/plain"]
    assert notice["Subject"] == "A change of your authserver address was asked for"
    assert "a***@example.org" in text
    assert NEW not in text
    assert NEW not in parts(notice)["text/html"]
    assert "token=" not in text
    assert "change it now" in text


def test_a_wrong_current_password_is_refused_and_sends_nothing(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox
) -> None:
    status, page = ask_change(browser, password="not my password")

    assert status == 400
    assert "The current password is incorrect." in page
    assert mailed(app, mailbox) == []
    assert links(session) == []
    reasons = [
        e.details.get("reason")
        for e in session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "email_change_requested")
        )
    ]
    assert reasons == ["wrong_password"]


def test_password_guesses_on_the_form_are_throttled_before_any_hash(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox, clock: Clock
) -> None:
    free = runtime(app).config.signin_free_failures
    codes = [ask_change(browser, password=f"guess {n}")[0] for n in range(free + 1)]
    assert codes == [400] * (free + 1)

    # Now even the right password waits: the throttle answers before the hash.
    page = browser.get("/account")
    refused = browser.post(
        "/account/email",
        data={"new_email": NEW, "current_password": PASSWORD, "csrf_token": csrf_token_of(page)},
    )

    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert "Too many wrong passwords" in refused.get_data(as_text=True)
    assert links(session) == []
    assert mailed(app, mailbox) == []
    # The guesses count for the account as sign-in guesses do, from this address.
    assert sign_in(app.test_client()).status_code == 429
    clock.advance(seconds=3)
    assert ask_change(browser)[0] == 200


CSRF_VALUE = re.compile(r'(name="csrf_token"[^>]*value=")[^"]*"')
MINUTE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}")


def same_page(page: str) -> str:
    """The page without what differs between any two renderings: the CSRF token (signed
    with the second it was made in) and the minute the session was last active."""
    return MINUTE.sub("T", CSRF_VALUE.sub(r'\1"', page))


def test_an_address_another_account_has_gets_the_same_answer_and_a_message_not_a_link(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox
) -> None:
    make_user(app, session, "bob@example.org")

    free_status, free_page = ask_change(browser, NEW)
    taken_status, taken_page = ask_change(browser, "bob@example.org")

    assert free_status == taken_status == 200
    assert same_page(free_page.replace(NEW, "X")) == same_page(
        taken_page.replace("bob@example.org", "X")
    )
    received = mailed(app, mailbox)
    to_bob = [m for m in received if m["To"] == "bob@example.org"]
    assert len(to_bob) == 1
    assert to_bob[0]["Subject"] == "Your authserver address was not changed"
    assert "already has" in parts(to_bob[0])["text/plain"]
    assert "token=" not in parts(to_bob[0])["text/plain"]
    # The old address is told in both cases alike, and a link row is written in both.
    assert [m["To"] for m in received].count(EMAIL) == 2
    assert len(links(session)) == 2
    assert ann(session).email == EMAIL


def test_a_look_alike_of_another_account_s_address_is_treated_as_taken(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox
) -> None:
    make_user(app, session, "bob@example.org")
    lookalike = "b0b@example.org"  # a zero for the o: the same UTS #39 skeleton

    assert ask_change(browser, lookalike)[0] == 200

    to_lookalike = [m for m in mailed(app, mailbox) if m["To"] != EMAIL]
    assert len(to_lookalike) == 1
    assert "token=" not in parts(to_lookalike[0])["text/plain"]


@pytest.mark.parametrize(
    ("new_email", "error"),
    [
        ("not an address", "not a valid email address"),
        ("an\u200bn@example.org", "does not show"),
        (" ANN@example.com", "already your address"),
    ],
)
def test_addresses_the_rules_refuse_are_refused_on_the_page(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox, new_email: str, error: str
) -> None:
    status, page = ask_change(browser, new_email)
    assert status == 400
    assert error in page
    assert links(session) == []
    assert mailed(app, mailbox) == []


def test_an_account_may_ask_for_at_most_the_hourly_cap_of_changes(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox
) -> None:
    codes = [ask_change(browser, f"ann{n}@example.org")[0] for n in range(4)]
    assert codes == [200, 200, 200, 429]
    assert len(mailed(app, mailbox)) == 6


def test_asking_needs_a_signed_in_browser(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    page = client.get("/login")
    answer = client.post(
        "/account/email",
        data={"new_email": NEW, "current_password": PASSWORD, "csrf_token": csrf_token_of(page)},
    )
    assert answer.status_code == 303
    assert links(session) == []


# -- the link -------------------------------------------------------------------------------


def test_a_link_works_once_and_a_newer_one_ends_the_older(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox
) -> None:
    older = change_token(app, browser, mailbox, "first@example.org")
    newer = change_token(app, browser, mailbox, "second@example.org")

    assert is_invalid_link_page(*post_confirm(browser, older))
    assert confirm(browser, newer)[0] == 200
    assert is_invalid_link_page(*post_confirm(browser, newer))
    assert ann(session).email == "second@example.org"


def test_an_expired_link_changes_nothing(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox, clock: Clock
) -> None:
    token = change_token(app, browser, mailbox)
    clock.advance(hours=24, seconds=1)

    assert is_invalid_link_page(*confirm(app.test_client(), token))
    assert is_invalid_link_page(*post_confirm(app.test_client(), token))
    assert ann(session).email == EMAIL


def test_links_mailed_to_the_old_address_open_nothing_after_the_change(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox
) -> None:
    page = browser.get("/account")
    browser.post("/account/email/verification", data={"csrf_token": csrf_token_of(page)})
    forgot = app.test_client()
    form = forgot.get("/password/forgot")
    forgot.post("/password/forgot", data={"email": EMAIL, "csrf_token": csrf_token_of(form)})
    old_mail = mailed(app, mailbox)
    verify_token = token_in(
        next(m for m in old_mail if VERIFY_LINK.search(parts(m)["text/plain"])), VERIFY_LINK
    )
    reset_token = token_in(
        next(m for m in old_mail if RESET_LINK.search(parts(m)["text/plain"])), RESET_LINK
    )

    assert confirm(browser, change_token(app, browser, mailbox))[0] == 200

    other = app.test_client()
    assert other.get("/email/verify", query_string={"token": verify_token}).status_code == 400
    assert other.get("/password/reset", query_string={"token": reset_token}).status_code == 400


def test_an_address_taken_since_the_link_was_sent_is_refused_cleanly(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox
) -> None:
    token = change_token(app, browser, mailbox)
    make_user(app, session, NEW)  # the operator made an account with it meanwhile

    status, body = confirm(app.test_client(), token)

    assert status == 409
    assert "The address was not changed" in body
    assert ann(session).email == EMAIL
    assert signs_in(app, EMAIL)


def test_forms_without_a_csrf_token_are_refused(
    app: Flask, session: Session, browser: FlaskClient, mailbox: Mailbox
) -> None:
    refused = browser.post("/account/email", data={"new_email": NEW, "current_password": PASSWORD})
    assert refused_as_csrf(refused)
    assert links(session) == []
    token = change_token(app, browser, mailbox)

    assert refused_as_csrf(app.test_client().post("/email/change", data={"token": token}))
    assert refused_as_csrf(browser.post("/email/change", data={"token": token}))
    assert ann(session).email == EMAIL
    assert confirm(browser, token)[0] == 200


def test_unknown_and_malformed_tokens_get_the_same_page(client: FlaskClient) -> None:
    for token in ("", "A" * 43, "x" * 5000, "\x00"):
        answer = client.get("/email/change", query_string={"token": token})
        assert is_invalid_link_page(answer.status_code, answer.get_data(as_text=True)), token
        assert is_invalid_link_page(*post_confirm(client, token)), token


# -- two accounts racing for one address ------------------------------------------------------


def test_two_accounts_moving_to_one_address_at_once_exactly_one_gets_it(
    committed_app: Flask, engine: Engine
) -> None:
    factory = db.state(committed_app).session_factory
    now = runtime(committed_app).now()
    with factory() as setup:
        tokens = []
        for email in (EMAIL, "bob@example.com"):
            user = make_user(committed_app, setup, email)
            tokens.append(
                issue_link(
                    setup,
                    user.id,
                    LinkPurpose.EMAIL_CHANGE,
                    now=now,
                    ttl=timedelta(hours=1),
                    email=NEW,
                )
            )
        setup.commit()

    context = RequestContext(ip_address="127.0.0.1", user_agent="test", now=now)
    first, second = factory(), factory()
    try:
        # Both pass the check (neither sees the other's uncommitted change); the second's
        # UPDATE waits on the first's unique index entry, then is refused by it.
        complete_email_change(first, token=tokens[0], context=context)
        outcome: list[object] = []

        def race() -> None:
            try:
                outcome.append(complete_email_change(second, token=tokens[1], context=context))
            except AddressTaken as exc:
                outcome.append(exc)

        racer = threading.Thread(target=race)
        racer.start()
        first.commit()
        racer.join(timeout=120)
        assert not racer.is_alive()
        second.commit()
    finally:
        first.close()
        second.close()

    assert len(outcome) == 1
    assert isinstance(outcome[0], AddressTaken)
    with factory() as check:
        emails = set(check.scalars(select(User.email)))
        assert emails == {NEW, "bob@example.com"}
