"""Password reset by mail (issue 14, part 2): "Forgot password?" answers the same for every
address; the link is a 256-bit token kept only as a digest, single use, short-lived, replaced
by a newer link or any password change; the new password passes the policy, signs the user
out everywhere and is announced by mail. Mail goes over real SMTP (``tests/smtp_servers.py``)
and is read back as a mail client reads it."""

from __future__ import annotations

import hashlib
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
from authserver.http.rate_limits import limiter
from authserver.models import AccountLink, AuditEvent, User
from authserver.runtime import runtime
from authserver.services.account_links import LinkPurpose, issue_link, redeem_link
from authserver.services.own_account import Confirmation, change_own_password
from authserver.services.sign_in import RequestContext
from authserver.services.users import set_password
from tests.browser_helpers import browser_session_rows, csrf_token_of, refused_as_csrf, sign_in
from tests.helpers import PASSWORD, Clock, make_client, make_user, password_login, refresh
from tests.smtp_servers import Mailbox
from tests.test_mail import deliver, parts

EMAIL = "ann@example.com"
NEW_PASSWORD = "violet tractor umbrella 42"
ANSWER = "If an account exists for the address you entered"


def ask_reset(http: FlaskClient, email: str = EMAIL) -> tuple[int, bytes]:
    page = http.get("/password/forgot")
    answer = http.post("/password/forgot", data={"email": email, "csrf_token": csrf_token_of(page)})
    return answer.status_code, answer.get_data()


def mailed(app: Flask, mailbox: Mailbox) -> list[EmailMessage]:
    deliver(app)
    return list(mailbox.received)


def link_token(message: EmailMessage) -> str:
    match = re.search(r"/password/reset\?token=([A-Za-z0-9_-]+)", parts(message)["text/plain"])
    assert match, "no reset link in the message"
    return match.group(1)


def reset_token(app: Flask, http: FlaskClient, mailbox: Mailbox, email: str = EMAIL) -> str:
    before = len(mailbox.received)
    assert ask_reset(http, email)[0] == 200
    received = mailed(app, mailbox)
    assert len(received) == before + 1
    return link_token(received[-1])


def submit_new_password(
    http: FlaskClient, token: str, password: str = NEW_PASSWORD, confirm: str | None = None
) -> tuple[int, str]:
    form = http.get("/password/reset", query_string={"token": token})
    assert form.status_code == 200, form.get_data(as_text=True)
    answer = http.post(
        "/password/reset",
        data={
            "token": token,
            "new_password": password,
            "confirm_password": password if confirm is None else confirm,
            "csrf_token": csrf_token_of(form),
        },
    )
    return answer.status_code, answer.get_data(as_text=True)


def post_reset_with_csrf_of_forgot_page(
    http: FlaskClient, token: str, password: str = NEW_PASSWORD
) -> tuple[int, str]:
    """A reset POST whose link need not open a form (a CSRF token from another page)."""
    page = http.get("/password/forgot")
    answer = http.post(
        "/password/reset",
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


def signs_in(http: FlaskClient, password: str) -> bool:
    return sign_in(http, EMAIL, password).status_code == 303


# -- asking ---------------------------------------------------------------------------------


def test_the_sign_in_page_links_to_forgot_password(client: FlaskClient) -> None:
    page = client.get("/login").get_data(as_text=True)
    assert '<a href="/password/forgot">Forgot password?</a>' in page


def test_forgot_password_answers_the_same_bytes_for_an_account_and_an_unknown_address(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    make_user(app, session)

    known = ask_reset(client, EMAIL)
    unknown = ask_reset(client, "nobody@example.com")
    malformed = ask_reset(client, "not an address")

    assert known == unknown == malformed
    assert known[0] == 200
    assert ANSWER.encode() in known[1]
    # Only the account was mailed; the unknown address got nothing.
    assert [m["To"] for m in mailed(app, mailbox)] == [EMAIL]


def test_both_answers_write_an_audit_row_so_both_transactions_commit_alike(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    user = make_user(app, session)
    ask_reset(client, EMAIL)
    ask_reset(client, "nobody@example.com")

    rows = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.event_type == "password_reset_requested")
        .order_by(AuditEvent.occurred_at)
    ).all()
    assert [(r.user_id, r.details.get("reason")) for r in rows] == [
        (user.id, None),
        (None, "unknown_account"),
    ]
    assert all("nobody" not in str(r.details) for r in rows)


def test_a_disabled_account_is_mailed_nothing(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    make_user(app, session).disabled = True
    session.commit()

    status, body = ask_reset(client)

    assert status == 200

    assert ANSWER.encode() in body
    assert mailed(app, mailbox) == []


def test_the_link_token_is_stored_only_as_its_digest(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    make_user(app, session)
    token = reset_token(app, client, mailbox)

    assert len(token) >= 43  # 256 bits, base64url
    (link,) = session.scalars(select(AccountLink)).all()
    assert link.token_digest == hashlib.sha256(token.encode()).digest()
    assert link.purpose == "password_reset"
    assert link.expires_at - link.created_at == timedelta(minutes=30)
    # No column of the link or of the outbox row holds the token in any form but the digest.
    for table in ("account_links", "outbound_messages"):
        for row in session.execute(text(f"SELECT * FROM {table}")).all():
            assert token not in repr(tuple(row)), table


# -- the link -------------------------------------------------------------------------------


def test_a_new_password_through_the_link_signs_out_everywhere_and_is_announced(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    make_user(app, session)
    registered = make_client(session)
    old_refresh = password_login(client, registered).json["refresh_token"]
    browser = app.test_client()
    assert signs_in(browser, PASSWORD)
    token = reset_token(app, client, mailbox)

    page = client.get("/password/reset", query_string={"token": token})
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    assert "Choose a new password" in page.get_data(as_text=True)
    status, body = submit_new_password(client, token)

    assert status == 200

    assert "Password changed" in body
    # Signed out everywhere: the browser session and the refresh family of before.
    assert all(s.revoked_reason == "password_reset" for s in browser_session_rows(session))
    assert refresh(client, registered, old_refresh).json["error"] == "invalid_grant"
    assert not signs_in(app.test_client(), PASSWORD)
    assert signs_in(app.test_client(), NEW_PASSWORD)
    # Following the link proved the address reaches the user.
    user = session.scalars(select(User)).one()
    session.refresh(user)
    assert user.email_verified
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.event_type == "password_changed")
    ).all()
    assert [e.details["method"] for e in events] == ["reset_link"]
    notice = mailed(app, mailbox)[-1]
    assert notice["To"] == EMAIL
    assert notice["Subject"] == "Your authserver password was changed"
    assert "signed out" in parts(notice)["text/plain"]
    assert "token=" not in parts(notice)["text/plain"]


def test_a_link_works_once(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    make_user(app, session)
    token = reset_token(app, client, mailbox)
    assert submit_new_password(client, token)[0] == 200

    assert is_invalid_link_page(
        *post_reset_with_csrf_of_forgot_page(client, token, "x" + NEW_PASSWORD)
    )
    answer = client.get("/password/reset", query_string={"token": token})
    assert is_invalid_link_page(answer.status_code, answer.get_data(as_text=True))
    assert signs_in(app.test_client(), NEW_PASSWORD)


def test_an_expired_link_opens_nothing(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox, clock: Clock
) -> None:
    make_user(app, session)
    token = reset_token(app, client, mailbox)
    clock.advance(minutes=30, seconds=1)

    answer = client.get("/password/reset", query_string={"token": token})
    assert is_invalid_link_page(answer.status_code, answer.get_data(as_text=True))
    assert is_invalid_link_page(*post_reset_with_csrf_of_forgot_page(client, token))
    assert signs_in(app.test_client(), PASSWORD)


def test_the_lifetime_is_a_setting(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    runtime(app).config = replace(runtime(app).config, password_reset_ttl=120)
    make_user(app, session)
    reset_token(app, client, mailbox)

    link = session.scalars(select(AccountLink)).one()
    assert link.expires_at - link.created_at == timedelta(seconds=120)


def test_unknown_and_malformed_tokens_get_the_same_page(client: FlaskClient) -> None:
    for token in ("", "A" * 43, "x" * 5000, "../../etc", "\x00"):
        answer = client.get("/password/reset", query_string={"token": token})
        assert is_invalid_link_page(answer.status_code, answer.get_data(as_text=True)), token


def test_a_newer_link_ends_the_older_one(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    make_user(app, session)
    older = reset_token(app, client, mailbox)
    newer = reset_token(app, client, mailbox)

    assert is_invalid_link_page(*post_reset_with_csrf_of_forgot_page(client, older))
    assert submit_new_password(client, newer)[0] == 200


@pytest.mark.parametrize("how", ["change_password", "set_password", "another_reset"])
def test_any_later_password_change_ends_an_unused_link(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox, how: str
) -> None:
    user = make_user(app, session)
    token = reset_token(app, client, mailbox)
    rt = runtime(app)
    if how == "change_password":
        confirmation = Confirmation(
            rt.hasher, rt.throttle_policy, RequestContext("192.0.2.1", None, rt.now())
        )
        change_own_password(
            session, user, confirmation, rt.notices, current_password=PASSWORD,
            new_password=NEW_PASSWORD, password_policy=rt.password_policy,
        )  # fmt: skip
    elif how == "set_password":
        set_password(
            session, rt.hasher, user, NEW_PASSWORD, now=rt.now(),
            password_policy=rt.password_policy, notices=rt.notices,
        )  # fmt: skip
    else:
        # A second link, used: the password it set ends the first link (issued before it).
        other = issue_link(
            session, user.id, LinkPurpose.PASSWORD_RESET, now=rt.now(),
            ttl=timedelta(minutes=30),
        )  # fmt: skip
        session.commit()
        assert submit_new_password(client, other)[0] == 200
    session.commit()

    assert is_invalid_link_page(
        *post_reset_with_csrf_of_forgot_page(client, token, "another " + NEW_PASSWORD)
    )


def test_the_password_policy_applies_and_a_refused_password_leaves_the_link_usable(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    make_user(app, session)
    token = reset_token(app, client, mailbox)

    for weak in ("short", "password123", "ann@example.com"):
        status, body = submit_new_password(client, token, weak)
        assert (status, 'class="error"' in body) == (400, True), weak
    status, body = submit_new_password(client, token, NEW_PASSWORD, confirm=NEW_PASSWORD + "!")
    assert status == 400
    assert "not the same" in body

    assert signs_in(app.test_client(), PASSWORD)
    assert submit_new_password(client, token)[0] == 200
    assert signs_in(app.test_client(), NEW_PASSWORD)


def test_forms_without_a_csrf_token_are_refused(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox
) -> None:
    make_user(app, session)
    assert refused_as_csrf(client.post("/password/forgot", data={"email": EMAIL}))
    assert mailed(app, mailbox) == []
    token = reset_token(app, client, mailbox)

    refused = client.post(
        "/password/reset",
        data={"token": token, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD},
    )

    assert refused_as_csrf(refused)
    assert signs_in(app.test_client(), PASSWORD)
    assert submit_new_password(client, token)[0] == 200


# -- limits ---------------------------------------------------------------------------------


@pytest.fixture
def config(config: Config) -> Config:
    # Lower than the defaults, so that the limit tests reach them quickly; the other tests
    # ask a handful of times.
    return replace(
        config,
        ratelimit_password_reset="10/hour",
        ratelimit_password_reset_per_email="5/hour",
    )


def test_the_per_address_limit_answers_429_with_a_page(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    codes = [ask_reset(client, EMAIL)[0] for _ in range(6)]

    assert codes == [200] * 5 + [429]
    page = client.get("/password/forgot")
    refused = client.post(
        "/password/forgot", data={"email": " ANN@example.com ", "csrf_token": csrf_token_of(page)}
    )
    assert refused.status_code == 429
    assert refused.mimetype == "text/html"
    assert int(refused.headers["Retry-After"]) > 0
    assert "Too many requests" in refused.get_data(as_text=True)
    # Another address from the same client is still answered.
    assert ask_reset(client, "bob@example.com")[0] == 200


def test_the_per_client_address_limit_counts_every_address(client: FlaskClient) -> None:
    codes = [ask_reset(client, f"user{n}@example.com")[0] for n in range(11)]
    assert codes == [200] * 10 + [429]


def test_rate_limit_keys_hold_a_digest_of_the_address_never_the_address(
    app: Flask, client: FlaskClient
) -> None:
    ask_reset(client, "carol.secret@example.com")
    keys = list(getattr(limiter.storage, "storage", {}).keys())
    assert keys, "the memory store holds the counts"
    assert not any("carol" in key for key in keys)
    digest = hashlib.sha256(b"carol.secret@example.com").hexdigest()[:32]
    assert any(digest in key for key in keys)


def test_an_account_is_mailed_at_most_the_hourly_cap_of_reset_messages(
    app: Flask, session: Session, client: FlaskClient, mailbox: Mailbox, clock: Clock
) -> None:
    make_user(app, session)
    for _ in range(4):
        # From four addresses: the cap is per account, whoever asks.
        assert ask_reset(client)[0] == 200

    assert len(mailed(app, mailbox)) == 3
    reasons = session.scalars(
        select(AuditEvent).where(AuditEvent.event_type == "password_reset_requested")
    ).all()
    assert [r.details.get("reason") for r in reasons].count("mail_cap") == 1
    clock.advance(hours=1, seconds=1)
    assert ask_reset(client)[0] == 200
    assert len(mailed(app, mailbox)) == 4


# -- two requests with one link ---------------------------------------------------------------


def test_two_concurrent_redemptions_of_one_link_exactly_one_wins(
    committed_app: Flask, engine: Engine
) -> None:
    factory = db.state(committed_app).session_factory
    with factory() as setup:
        user = make_user(committed_app, setup)
        now = runtime(committed_app).now()
        token = issue_link(
            setup, user.id, LinkPurpose.PASSWORD_RESET, now=now, ttl=timedelta(minutes=30)
        )
        setup.commit()

    first, second = factory(), factory()
    try:
        # The first redeems and holds its transaction open; the second's UPDATE waits on the
        # row lock, then finds the row used.
        won_first = redeem_link(first, token, LinkPurpose.PASSWORD_RESET, now)
        outcome: list[object] = []
        racer = threading.Thread(
            target=lambda: outcome.append(
                redeem_link(second, token, LinkPurpose.PASSWORD_RESET, now)
            )
        )
        racer.start()
        first.commit()
        racer.join(timeout=120)
        assert not racer.is_alive()
        second.commit()
    finally:
        first.close()
        second.close()

    assert won_first is not None
    assert outcome == [None]
    with factory() as check:
        used = check.scalar(select(func.count()).where(AccountLink.used_at.is_not(None)))
        assert used == 1
