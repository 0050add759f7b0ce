"""Sign-up and invitations (issue 14, part 4): AUTHSERVER_SIGNUP off|open|invite; the sign-up
page asks for the address only and answers every address alike (a new one is mailed a link,
one with an account a notice); the link (or an operator's invitation) opens a page to choose
the password, which makes the account with its address verified and signs the browser in.
Links are single use, short-lived, replaced by newer ones, and never logged. Mail goes over
real SMTP (``tests/smtp_servers.py``) and is read back as a mail client reads it."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import replace
from datetime import timedelta
from email.message import EmailMessage

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from authserver.config import Config
from authserver.db import db
from authserver.errors import ValidationError
from authserver.http.rate_limits import limiter
from authserver.http.web import session_policy
from authserver.models import AccountLink, AuditEvent, BrowserSession, User
from authserver.runtime import runtime
from authserver.services.account_links import LinkPurpose, issue_address_link
from authserver.services.password_reset import InvalidLink
from authserver.services.sign_in import RequestContext
from authserver.services.signup import (
    AddressTaken,
    complete_signup,
    send_invitation,
    signup_settings,
)
from authserver.services.users import create_user
from tests.browser_helpers import csrf_token_of, refused_as_csrf, sign_in
from tests.helpers import HANG_SECONDS, PASSWORD, Clock, make_user, wait_until, waiting_on_a_lock
from tests.smtp_servers import Mailbox
from tests.test_mail import deliver, parts

EMAIL = "new.person@example.com"
TAKEN = "ann@example.com"
LOOKALIKE = "ann@examp1e.com"  # the same skeleton (UTS #39) as TAKEN
NEW_PASSWORD = "violet tractor umbrella 42"
LINK = re.compile(r"(/signup/password|/invitation)\?token=([A-Za-z0-9_-]+)")
CSRF_FIELD = re.compile(r'name="csrf_token" value="[^"]+"')


@pytest.fixture
def config(config: Config) -> Config:
    # Open sign-up, and limits low enough that the limit tests reach them quickly; the other
    # tests ask a handful of times.
    return replace(
        config,
        signup="open",
        ratelimit_signup="10/hour",
        ratelimit_signup_per_email="5/hour",
    )


def set_mode(app: Flask, mode: str) -> None:
    runtime(app).config = replace(runtime(app).config, signup=mode)


def ask_signup(http: FlaskClient, email: str = EMAIL, ip: str = "192.0.2.1") -> tuple[int, str]:
    page = http.get("/signup")
    assert page.status_code == 200
    answer = http.post(
        "/signup",
        data={"email": email, "csrf_token": csrf_token_of(page)},
        environ_base={"REMOTE_ADDR": ip},
    )
    return answer.status_code, answer.get_data(as_text=True)


def mailed(app: Flask, mailbox: Mailbox) -> list[EmailMessage]:
    deliver(app)
    return list(mailbox.received)


def link_of(message: EmailMessage) -> tuple[str, str]:
    """(path, token) of the link in the message."""
    match = LINK.search(parts(message)["text/plain"])
    assert match, "no sign-up or invitation link in the message"
    return match.group(1), match.group(2)


def signup_token(app: Flask, http: FlaskClient, mailbox: Mailbox, email: str = EMAIL) -> str:
    before = len(mailbox.received)
    assert ask_signup(http, email)[0] == 200
    received = mailed(app, mailbox)
    assert len(received) == before + 1
    path, token = link_of(received[-1])
    assert path == "/signup/password"
    return token


def choose_password(
    http: FlaskClient,
    token: str,
    password: str = NEW_PASSWORD,
    confirm: str | None = None,
    path: str = "/signup/password",
) -> tuple[int, str, str | None]:
    """Open the link's page and submit a password: (status, body, Location)."""
    form = http.get(path, query_string={"token": token})
    assert form.status_code == 200, form.get_data(as_text=True)
    answer = http.post(
        path,
        data={
            "token": token,
            "new_password": password,
            "confirm_password": password if confirm is None else confirm,
            "csrf_token": csrf_token_of(form),
        },
    )
    return answer.status_code, answer.get_data(as_text=True), answer.headers.get("Location")


def post_password_with_csrf_of_signup_page(
    http: FlaskClient, token: str, path: str = "/signup/password", password: str = NEW_PASSWORD
) -> tuple[int, str]:
    """A POST to the link's page whose link need not open a form (a CSRF token from the
    sign-in page)."""
    page = http.get("/login")
    answer = http.post(
        path,
        data={
            "token": token,
            "new_password": password,
            "confirm_password": password,
            "csrf_token": csrf_token_of(page),
        },
    )
    return answer.status_code, answer.get_data(as_text=True)


def is_invalid_link_page(status: int, body: str) -> bool:
    return status == 400 and "This link does not work" in body


def accounts(session: Session, email: str = EMAIL) -> list[User]:
    session.expire_all()
    return list(session.scalars(select(User).where(User.email == email)))


def signs_in(app: Flask, email: str, password: str) -> bool:
    return sign_in(app.test_client(), email, password).status_code == 303


def events(session: Session, event_type: str) -> list[AuditEvent]:
    return list(
        session.scalars(
            select(AuditEvent)
            .where(AuditEvent.event_type == event_type)
            .order_by(AuditEvent.occurred_at)
        )
    )


# -- modes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["off", "invite"])
def test_the_signup_pages_do_not_exist_unless_sign_up_is_open(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox, mode: str
) -> None:
    set_mode(app, mode)
    csrf = csrf_token_of(client.get("/login"))
    unknown = client.get("/no-such-page")

    answers = [
        client.get("/signup"),
        client.post("/signup", data={"email": EMAIL, "csrf_token": csrf}),
        client.get("/signup/password", query_string={"token": "A" * 43}),
        client.post("/signup/password", data={"token": "A" * 43, "csrf_token": csrf}),
        # Without a CSRF token, or cross-site: still unknown, not refused as a form.
        client.post("/signup", data={"email": EMAIL}),
        client.post("/signup", data={"email": EMAIL}, headers={"Sec-Fetch-Site": "cross-site"}),
    ]

    assert unknown.status_code == 404
    for answer in answers:
        assert answer.status_code == 404
        assert answer.get_json() == unknown.get_json()
    assert "Create an account" not in client.get("/login").get_data(as_text=True)
    assert mailed(app, mailbox) == []
    assert session.scalar(select(func.count()).select_from(AccountLink)) == 0


def test_the_sign_in_page_offers_an_account_only_when_sign_up_is_open(
    client: FlaskClient,
) -> None:
    page = client.get("/login").get_data(as_text=True)
    assert '<a href="/signup">Create an account</a>' in page


def test_a_signup_link_mailed_while_open_opens_nothing_once_sign_up_is_closed(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    token = signup_token(app, client, mailbox)
    set_mode(app, "invite")

    assert client.get("/signup/password", query_string={"token": token}).status_code == 404
    # Not even through the invitation page: a sign-up link is not an invitation.
    assert is_invalid_link_page(
        *post_password_with_csrf_of_signup_page(client, token, path="/invitation")
    )
    assert accounts(session) == []


# -- asking ---------------------------------------------------------------------------------


def masked(body: str) -> str:
    return CSRF_FIELD.sub('name="csrf_token" value="-"', body)


def test_signup_answers_the_same_page_for_a_free_and_a_taken_address(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    make_user(app, session, TAKEN)

    free = ask_signup(client, EMAIL)
    taken = ask_signup(client, TAKEN)
    lookalike = ask_signup(client, LOOKALIKE)
    spelt_otherwise = ask_signup(client, " ANN@Example.com")

    assert free[0] == taken[0] == lookalike[0] == spelt_otherwise[0] == 200
    assert masked(free[1]) == masked(taken[1]) == masked(lookalike[1]) == masked(spelt_otherwise[1])
    assert "Check your email" in free[1]
    # Every path did the same writes: a link row, a message, an audit row.
    links = session.scalars(select(AccountLink).order_by(AccountLink.created_at)).all()
    assert [link.email for link in links] == [EMAIL, TAKEN, LOOKALIKE, TAKEN]
    assert {link.user_id for link in links} == {None}
    received = {m["To"]: m for m in mailed(app, mailbox)}
    assert len(mailbox.received) == 4
    assert received[EMAIL]["Subject"] == "Finish making your authserver account"
    for address in (TAKEN, LOOKALIKE):
        assert received[address]["Subject"].startswith("Someone tried to sign up")
    reasons = [e.details.get("reason") for e in events(session, "signup_requested")]
    assert reasons == [None, "account_exists", "lookalike_exists", "account_exists"]


def test_a_new_address_gets_a_link_that_makes_a_verified_account_and_signs_in(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    token = signup_token(app, client, mailbox)
    (message,) = mailbox.received
    assert message["To"] == EMAIL
    assert message["Subject"] == "Finish making your authserver account"
    assert "within 60 minutes" in parts(message)["text/plain"]
    assert accounts(session) == []  # nothing is made before the password is chosen

    page = client.get("/signup/password", query_string={"token": token})
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    assert "Choose your password" in page.get_data(as_text=True)
    assert EMAIL in page.get_data(as_text=True)
    status, _, location = choose_password(client, token)

    assert (status, location) == (303, "/account")
    account_page = client.get("/account").get_data(as_text=True)
    assert f"Signed in as <strong>{EMAIL}</strong>" in account_page
    (user,) = accounts(session)
    assert user.email_verified
    assert user.last_sign_in_at is not None
    assert signs_in(app, EMAIL, NEW_PASSWORD)
    (completed,) = events(session, "signup_completed")
    assert (completed.user_id, completed.details) == (user.id, {"method": "signup_link"})
    assert [e.details["method"] for e in events(session, "email_verified")] == ["signup_link"]
    assert [e.user_id for e in events(session, "user_created")] == [user.id]
    signed_in = events(session, "signin_succeeded")
    assert [e.details["method"] for e in signed_in] == ["signup_link", "password_form"]


def test_an_address_with_an_account_is_told_and_nothing_changes(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    user = make_user(app, session, TAKEN)
    password_hash = user.password_hash

    assert ask_signup(client, TAKEN)[0] == 200

    (notice,) = mailed(app, mailbox)
    assert notice["To"] == TAKEN
    assert notice["Subject"] == "Someone tried to sign up to authserver with your address"
    text_part = parts(notice)["text/plain"]
    assert "http://127.0.0.1:8000/login" in text_part
    assert "http://127.0.0.1:8000/password/forgot" in text_part
    assert "token=" not in text_part
    assert "token=" not in parts(notice)["text/html"]
    (still,) = accounts(session, TAKEN)
    assert (still.password_hash, still.email_verified) == (password_hash, False)
    assert signs_in(app, TAKEN, PASSWORD)
    (requested,) = events(session, "signup_requested")
    assert (requested.user_id, requested.details) == (user.id, {"reason": "account_exists"})


def test_a_disabled_account_is_mailed_nothing(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    make_user(app, session, TAKEN).disabled = True
    session.commit()

    status, body = ask_signup(client, TAKEN)

    assert status == 200
    assert "Check your email" in body
    assert mailed(app, mailbox) == []
    assert [e.details for e in events(session, "signup_requested")] == [
        {"reason": "account_disabled"}
    ]


@pytest.mark.parametrize("typed", ["not an address", "ann@localhost", "al\u200bice@example.com"])
def test_a_malformed_address_is_refused_on_the_form(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox, typed: str
) -> None:
    status, body = ask_signup(client, typed)

    assert status == 400
    assert 'class="error"' in body
    assert "not a valid email address" in body
    assert mailed(app, mailbox) == []
    assert session.scalar(select(func.count()).select_from(AccountLink)) == 0


# -- the link -------------------------------------------------------------------------------


def test_the_link_token_is_stored_only_as_its_digest_and_never_logged(
    app: Flask,
    session: Session,
    client: FlaskClient,
    mailbox: Mailbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = signup_token(app, client, mailbox)
    choose_password(client, token)

    assert len(token) >= 43  # 256 bits, base64url
    (link,) = session.scalars(select(AccountLink)).all()
    assert link.token_digest == hashlib.sha256(token.encode()).digest()
    assert (link.purpose, link.email, link.user_id) == ("signup", EMAIL, None)
    assert link.expires_at - link.created_at == timedelta(hours=1)
    assert link.used_at is not None
    for table in ("account_links", "outbound_messages", "audit_events"):
        for row in session.execute(text(f"SELECT * FROM {table}")).all():
            assert token not in repr(tuple(row)), table
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("authserver")]
    assert any("signup_completed" in line for line in ours), "the audit trail logs each event"
    assert not any(token in line for line in ours)


def test_a_link_works_once(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    token = signup_token(app, client, mailbox)
    assert choose_password(client, token)[0] == 303

    other = app.test_client()
    assert is_invalid_link_page(
        *post_password_with_csrf_of_signup_page(other, token, password="x" + NEW_PASSWORD)
    )
    answer = other.get("/signup/password", query_string={"token": token})
    assert is_invalid_link_page(answer.status_code, answer.get_data(as_text=True))
    assert len(accounts(session)) == 1
    assert signs_in(app, EMAIL, NEW_PASSWORD)


def test_an_expired_link_opens_nothing(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox, clock: Clock
) -> None:
    token = signup_token(app, client, mailbox)
    clock.advance(hours=1, seconds=1)

    answer = client.get("/signup/password", query_string={"token": token})
    assert is_invalid_link_page(answer.status_code, answer.get_data(as_text=True))
    assert is_invalid_link_page(*post_password_with_csrf_of_signup_page(client, token))
    assert accounts(session) == []


def test_unknown_and_malformed_tokens_get_the_same_page(client: FlaskClient) -> None:
    for path in ("/signup/password", "/invitation"):
        for token in ("", "A" * 43, "x" * 5000, "../../etc", "\x00"):
            answer = client.get(path, query_string={"token": token})
            assert is_invalid_link_page(answer.status_code, answer.get_data(as_text=True)), token


def test_a_newer_link_ends_the_older_one(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    older = signup_token(app, client, mailbox)
    newer = signup_token(app, client, mailbox)

    assert is_invalid_link_page(*post_password_with_csrf_of_signup_page(client, older))
    assert choose_password(client, newer)[0] == 303
    assert len(accounts(session)) == 1


def test_the_password_policy_applies_and_a_refused_password_leaves_the_link_usable(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    token = signup_token(app, client, mailbox)

    for weak in ("short", "password123", EMAIL, "newperson2024"):
        status, body, _ = choose_password(client, token, weak)
        assert (status, 'class="error"' in body) == (400, True), weak
    status, body, _ = choose_password(client, token, NEW_PASSWORD, confirm=NEW_PASSWORD + "!")
    assert status == 400
    assert "not the same" in body
    assert accounts(session) == []

    assert choose_password(client, token)[0] == 303
    assert len(accounts(session)) == 1


def test_an_address_taken_after_the_link_was_sent_is_refused_clearly(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    token = signup_token(app, client, mailbox)
    form = client.get("/signup/password", query_string={"token": token})
    make_user(app, session, EMAIL)  # `users create`, or another link, got there first

    answer = client.post(
        "/signup/password",
        data={
            "token": token,
            "new_password": NEW_PASSWORD,
            "confirm_password": NEW_PASSWORD,
            "csrf_token": csrf_token_of(form),
        },
    )

    assert answer.status_code == 409
    assert "This address has an account" in answer.get_data(as_text=True)
    assert len(accounts(session)) == 1
    assert signs_in(app, EMAIL, PASSWORD)
    assert not signs_in(app, EMAIL, NEW_PASSWORD)


def test_forms_without_a_csrf_token_are_refused(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    assert refused_as_csrf(client.post("/signup", data={"email": EMAIL}))
    assert mailed(app, mailbox) == []
    token = signup_token(app, client, mailbox)

    refused = client.post(
        "/signup/password",
        data={"token": token, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD},
    )

    assert refused_as_csrf(refused)
    assert accounts(session) == []
    assert choose_password(client, token)[0] == 303


def test_signing_up_in_a_browser_signed_in_as_someone_else_ends_that_session(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    make_user(app, session, TAKEN)
    assert sign_in(client, TAKEN, PASSWORD).status_code == 303
    token = signup_token(app, client, mailbox)

    assert choose_password(client, token)[0] == 303

    assert f"Signed in as <strong>{EMAIL}</strong>" in client.get("/account").get_data(as_text=True)
    sessions = session.scalars(select(BrowserSession).order_by(BrowserSession.created_at)).all()
    assert [s.revoked_reason for s in sessions] == ["logout", None]


# -- limits ---------------------------------------------------------------------------------


def test_an_address_is_mailed_at_most_the_hourly_cap(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox, clock: Clock
) -> None:
    make_user(app, session, TAKEN)
    for address in (EMAIL, TAKEN):
        for n in range(4):
            # From four client addresses: the cap is per address asked for, whoever asks.
            assert ask_signup(client, address, ip=f"192.0.2.{n}")[0] == 200

    assert sorted(m["To"] for m in mailed(app, mailbox)) == [TAKEN] * 3 + [EMAIL] * 3
    reasons = [e.details.get("reason") for e in events(session, "signup_requested")]
    assert reasons.count("mail_cap") == 2
    clock.advance(hours=1, seconds=1)
    assert ask_signup(client, EMAIL)[0] == 200
    assert len(mailed(app, mailbox)) == 7


def test_the_per_address_limit_answers_429_with_a_page(client: FlaskClient) -> None:
    codes = [ask_signup(client, EMAIL, ip=f"192.0.2.{n}")[0] for n in range(6)]

    assert codes == [200] * 5 + [429]
    page = client.get("/signup")
    refused = client.post(
        "/signup",
        data={"email": " NEW.person@example.com ", "csrf_token": csrf_token_of(page)},
        environ_base={"REMOTE_ADDR": "192.0.2.99"},
    )
    assert refused.status_code == 429
    assert refused.mimetype == "text/html"
    assert int(refused.headers["Retry-After"]) > 0
    assert "Too many requests" in refused.get_data(as_text=True)
    assert ask_signup(client, "someone.else@example.com")[0] == 200


def test_the_per_client_address_limit_counts_every_address(client: FlaskClient) -> None:
    codes = [ask_signup(client, f"user{n}@example.com")[0] for n in range(11)]
    assert codes == [200] * 10 + [429]
    # Another client address is still answered.
    assert ask_signup(client, "user99@example.com", ip="198.51.100.7")[0] == 200


def test_rate_limit_keys_hold_a_digest_of_the_address_never_the_address(
    client: FlaskClient,
) -> None:
    ask_signup(client, "carol.secret@example.com")
    keys = list(getattr(limiter.storage, "storage", {}).keys())
    assert not any("carol" in key for key in keys)
    digest = hashlib.sha256(b"carol.secret@example.com").hexdigest()[:32]
    assert any(f"signup-email:{digest}" in key for key in keys)


# -- invitations ----------------------------------------------------------------------------


def invite(app: Flask, session: Session, email: str = EMAIL) -> None:
    rt = runtime(app)
    assert rt.mail is not None
    send_invitation(session, rt.mail, signup_settings(rt.config), email, rt.now())
    session.commit()


def invitation_token(app: Flask, session: Session, mailbox: Mailbox) -> str:
    invite(app, session)
    message = mailed(app, mailbox)[-1]
    assert message["To"] == EMAIL
    assert message["Subject"] == "You are invited to authserver"
    path, token = link_of(message)
    assert path == "/invitation"
    return token


@pytest.mark.parametrize("mode", ["invite", "open"])
def test_an_invitation_makes_a_verified_account_and_signs_in(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox, mode: str
) -> None:
    set_mode(app, mode)
    token = invitation_token(app, session, mailbox)
    link = session.scalars(select(AccountLink)).one()
    assert link.expires_at - link.created_at == timedelta(days=7)

    page = client.get("/invitation", query_string={"token": token}).get_data(as_text=True)
    assert "You were invited" in page
    status, _, location = choose_password(client, token, path="/invitation")

    assert (status, location) == (303, "/account")
    assert f"Signed in as <strong>{EMAIL}</strong>" in client.get("/account").get_data(as_text=True)
    (user,) = accounts(session)
    assert user.email_verified
    (completed,) = events(session, "signup_completed")
    assert completed.details == {"method": "invitation"}
    (sent,) = events(session, "invitation_sent")
    assert sent.details == {"email": EMAIL, "method": "operator"}
    # Single use, like every link.
    assert is_invalid_link_page(
        *post_password_with_csrf_of_signup_page(app.test_client(), token, path="/invitation")
    )


def test_invitation_links_are_refused_when_sign_up_is_off(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    set_mode(app, "invite")
    token = invitation_token(app, session, mailbox)
    set_mode(app, "off")

    answer = client.get("/invitation", query_string={"token": token})
    assert is_invalid_link_page(answer.status_code, answer.get_data(as_text=True))
    assert is_invalid_link_page(
        *post_password_with_csrf_of_signup_page(client, token, path="/invitation")
    )
    assert accounts(session) == []


def test_no_invitation_is_sent_when_sign_up_is_off_or_the_address_has_an_account(
    app: Flask, session: Session, mailbox: Mailbox
) -> None:
    make_user(app, session, TAKEN)
    set_mode(app, "off")
    with pytest.raises(ValidationError, match="set AUTHSERVER_SIGNUP=invite"):
        invite(app, session)
    set_mode(app, "invite")
    with pytest.raises(ValidationError, match="already has an account"):
        invite(app, session, TAKEN)
    with pytest.raises(ValidationError, match="looks the same"):
        invite(app, session, LOOKALIKE)
    session.rollback()
    assert mailed(app, mailbox) == []


def test_a_newer_invitation_ends_the_older_and_a_sign_up_ends_the_invitation(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    older = invitation_token(app, session, mailbox)
    newer = invitation_token(app, session, mailbox)
    assert is_invalid_link_page(
        *post_password_with_csrf_of_signup_page(client, older, path="/invitation")
    )

    signed_up = signup_token(app, client, mailbox)
    assert choose_password(client, signed_up)[0] == 303

    # The invitation is ended with the account made by the sign-up link.
    status, _ = post_password_with_csrf_of_signup_page(app.test_client(), newer, path="/invitation")
    assert status == 400
    assert len(accounts(session)) == 1


# -- two requests at once -------------------------------------------------------------------


def _complete(app: Flask, session: Session, token: str, purpose: LinkPurpose) -> object:
    rt = runtime(app)
    try:
        return complete_signup(
            session,
            rt.hasher,
            signup_settings(rt.config),
            session_policy(rt.config),
            token=token,
            purpose=purpose,
            password=NEW_PASSWORD,
            password_policy=rt.password_policy,
            context=RequestContext(ip_address="192.0.2.1", user_agent="test", now=rt.now()),
            previous=None,
        )
    except InvalidLink as refused:
        return refused


@pytest.mark.postgres_only
@pytest.mark.parametrize("first_comes", ["same_link", "invitation", "users_create"])
def test_two_concurrent_acceptances_make_exactly_one_account(
    committed_app: Flask, engine: Engine, first_comes: str
) -> None:
    """The sign-up link is followed while another transaction, not yet committed, makes an
    account for the address: with the same link, with an invitation for the address, or by
    ``users create``. The second waits on a lock (the link's row, which the first used or
    ended; or the address's unique index), then is refused: never an IntegrityError, never
    two accounts."""
    factory = db.state(committed_app).session_factory
    rt = runtime(committed_app)
    now = rt.now()
    with factory() as setup:
        token = issue_address_link(
            setup, EMAIL, LinkPurpose.SIGNUP, now=now, ttl=timedelta(hours=1)
        )
        invitation = issue_address_link(
            setup, EMAIL, LinkPurpose.INVITATION, now=now, ttl=timedelta(days=7)
        )
        setup.commit()

    first, racing = factory(), factory()
    try:
        if first_comes == "same_link":
            assert not isinstance(
                _complete(committed_app, first, token, LinkPurpose.SIGNUP), InvalidLink
            )
        elif first_comes == "invitation":
            won = _complete(committed_app, first, invitation, LinkPurpose.INVITATION)
            assert not isinstance(won, InvalidLink)
        else:
            create_user(first, rt.hasher, EMAIL, PASSWORD, password_policy=rt.password_policy)
        outcome: list[object] = []
        thread = threading.Thread(
            target=lambda: outcome.append(
                _complete(committed_app, racing, token, LinkPurpose.SIGNUP)
            )
        )
        thread.start()
        wait_until(lambda: waiting_on_a_lock(engine), "the second acceptance to wait on a lock")
        first.commit()
        thread.join(timeout=HANG_SECONDS)
        assert not thread.is_alive()
        racing.commit()
    finally:
        first.close()
        racing.close()

    (lost,) = outcome
    assert type(lost) is (AddressTaken if first_comes == "users_create" else InvalidLink)
    with factory() as check:
        assert check.scalar(select(func.count()).where(User.email == EMAIL)) == 1


def test_the_browser_that_signed_up_is_the_accounts_device_for_new_device_notices(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    runtime(app).config = replace(runtime(app).config, new_device_notices=1)
    token = signup_token(app, client, mailbox)
    assert choose_password(client, token)[0] == 303
    before = len(mailed(app, mailbox))

    # Signing out and in again in the browser that signed up: no notice. Another browser: one.
    assert client.post("/logout", data={"csrf_token": csrf_token_of(client.get("/logout"))})
    assert sign_in(client, EMAIL, NEW_PASSWORD).status_code == 303
    assert len(mailed(app, mailbox)) == before
    assert signs_in(app, EMAIL, NEW_PASSWORD)
    (notice,) = mailed(app, mailbox)[before:]
    assert notice["To"] == EMAIL
