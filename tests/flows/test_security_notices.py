"""Security notices (issue 14, part 6): the user is mailed when their password changes (each
way, said differently), when a replayed refresh token revokes one of their app sign-ins
(which app, which device, which addresses; once, however often the copy is replayed), and,
when turned on, when a browser new to the account signs in. Mail goes over real SMTP
(``tests/smtp_servers.py``) and is read back as a mail client reads it."""

from __future__ import annotations

from dataclasses import replace
from email.message import EmailMessage
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from authserver.runtime import runtime
from authserver.services.users import set_password
from tests.browser_helpers import csrf_token_of, sign_in
from tests.helpers import PASSWORD, Clock, make_client, make_user, password_login, refresh
from tests.smtp_servers import Mailbox
from tests.test_mail import deliver, parts

EMAIL = "ann@example.com"
NEW_PASSWORD = "violet tractor umbrella 42"
CLI_AGENT = "PhotoSync/3.1 (Linux; x86_64)"
CLI_ADDRESS = "198.51.100.3"
THIEF_ADDRESS = "203.0.113.66"


def mailed(app: Flask, mailbox: Mailbox) -> list[EmailMessage]:
    deliver(app)
    return list(mailbox.received)


def text_of(message: EmailMessage) -> str:
    return parts(message)["text/plain"]


def _browser(app: Flask, user_agent: str, address: str) -> FlaskClient:
    http = app.test_client()
    http.environ_base.update(HTTP_USER_AGENT=user_agent, REMOTE_ADDR=address)
    return http


def _change_password(http: FlaskClient, current: str, new: str) -> int:
    token = csrf_token_of(http.get("/account"))
    answer = http.post(
        "/account/password",
        data={"csrf_token": token, "current_password": current, "new_password": new},
    )
    return answer.status_code


# -- password changed ----------------------------------------------------------------------


def test_a_password_change_on_the_account_page_is_announced_to_the_address(
    app: Flask, session: Session, mailbox: Mailbox
) -> None:
    make_user(app, session)
    laptop = _browser(app, "Laptop browser", "198.51.100.1")
    assert sign_in(laptop).status_code == 303

    assert _change_password(laptop, PASSWORD, NEW_PASSWORD) == 200

    (notice,) = mailed(app, mailbox)
    assert notice["To"] == EMAIL
    assert notice["Subject"] == "Your authserver password was changed"
    body = text_of(notice)
    assert "changed on its account page" in body
    assert "http://127.0.0.1:8000/password/forgot" in body
    assert "account page" in parts(notice)["text/html"]
    assert NEW_PASSWORD not in body
    assert PASSWORD not in body


def test_a_refused_password_change_announces_nothing(
    app: Flask, session: Session, mailbox: Mailbox
) -> None:
    make_user(app, session)
    laptop = _browser(app, "Laptop browser", "198.51.100.1")
    assert sign_in(laptop).status_code == 303

    assert _change_password(laptop, "not my password", NEW_PASSWORD) == 400
    assert _change_password(laptop, PASSWORD, "password123") == 400

    assert mailed(app, mailbox) == []


def test_a_password_set_by_the_operator_tells_the_user_it_was_an_administrator(
    app: Flask, session: Session, mailbox: Mailbox
) -> None:
    user = make_user(app, session)
    rt = runtime(app)

    set_password(
        session,
        rt.hasher,
        user,
        NEW_PASSWORD,
        now=rt.now(),
        password_policy=rt.password_policy,
        notices=rt.notices,
    )
    session.commit()

    (notice,) = mailed(app, mailbox)
    assert "an administrator of authserver set a new password" in text_of(notice)
    assert NEW_PASSWORD not in text_of(notice)


# -- refresh-token reuse ---------------------------------------------------------------------


def _app_signed_in(app: Flask, session: Session) -> tuple[Any, FlaskClient, dict[str, Any]]:
    make_user(app, session)
    registered = make_client(session, name="Photo Sync")
    phone = _browser(app, CLI_AGENT, CLI_ADDRESS)
    tokens = password_login(phone, registered).json
    assert tokens is not None
    return registered, phone, tokens


def test_a_replayed_refresh_token_tells_the_user_which_app_device_and_addresses(
    app: Flask, session: Session, mailbox: Mailbox, clock: Clock
) -> None:
    registered, phone, first = _app_signed_in(app, session)
    second = refresh(phone, registered, first["refresh_token"]).json
    assert second is not None
    clock.advance(seconds=runtime(app).config.refresh_reuse_grace + 1)
    thief = _browser(app, "curl/8.5", THIEF_ADDRESS)

    replay = refresh(thief, registered, first["refresh_token"])

    assert replay.status_code == 400
    assert replay.json is not None
    assert replay.json["error"] == "invalid_grant"
    (notice,) = mailed(app, mailbox)
    assert notice["To"] == EMAIL
    assert notice["Subject"] == "authserver signed out one of your apps: its sign-in was copied"
    body = text_of(notice)
    assert "App:              Photo Sync" in body
    assert f"Device:           {CLI_AGENT}" in body
    assert f"UTC from {CLI_ADDRESS}" in body
    assert f"Copy used from:   {THIEF_ADDRESS}" in body
    html = parts(notice)["text/html"]
    assert THIEF_ADDRESS in html
    assert "Photo Sync" in html
    for secret in (first["refresh_token"], second["refresh_token"], second["access_token"]):
        assert secret not in body
        assert secret not in html
    # The family is gone: the token the app holds now is refused too.
    assert refresh(phone, registered, second["refresh_token"]).status_code == 400


def test_replaying_again_and_again_sends_one_notice(
    app: Flask, session: Session, mailbox: Mailbox, clock: Clock
) -> None:
    registered, phone, first = _app_signed_in(app, session)
    assert refresh(phone, registered, first["refresh_token"]).status_code == 200
    clock.advance(seconds=runtime(app).config.refresh_reuse_grace + 1)
    thief = _browser(app, "curl/8.5", THIEF_ADDRESS)

    answers = [refresh(thief, registered, first["refresh_token"]).status_code for _ in range(5)]

    assert answers == [400] * 5
    assert len(mailed(app, mailbox)) == 1


def test_a_retry_inside_the_grace_window_is_not_reuse_and_sends_nothing(
    app: Flask, session: Session, mailbox: Mailbox
) -> None:
    registered, phone, first = _app_signed_in(app, session)
    assert refresh(phone, registered, first["refresh_token"]).status_code == 200

    assert refresh(phone, registered, first["refresh_token"]).status_code == 200

    assert mailed(app, mailbox) == []


def test_a_replay_into_a_family_already_signed_out_revokes_nothing_and_sends_nothing(
    app: Flask, session: Session, mailbox: Mailbox, clock: Clock
) -> None:
    registered, phone, first = _app_signed_in(app, session)
    second = refresh(phone, registered, first["refresh_token"]).json
    assert second is not None
    revoked = phone.post(
        "/oauth/revoke",
        data={"token": second["refresh_token"]},
        auth=(registered.client.client_id, registered.client_secret or ""),
    )
    assert revoked.status_code == 200
    clock.advance(seconds=runtime(app).config.refresh_reuse_grace + 1)

    assert refresh(phone, registered, first["refresh_token"]).status_code == 400

    assert mailed(app, mailbox) == []


# -- a new device --------------------------------------------------------------------------


def _new_device_notices(app: Flask, on: bool) -> None:
    rt = runtime(app)
    rt.config = replace(rt.config, new_device_notices=int(on))


def test_with_notices_on_a_browser_new_to_the_account_is_announced(
    app: Flask, session: Session, mailbox: Mailbox
) -> None:
    _new_device_notices(app, True)
    make_user(app, session)
    laptop = _browser(app, "Laptop browser", "198.51.100.1")
    # The account's first sign-in: nothing to compare with, no notice.
    assert sign_in(laptop).status_code == 303
    assert mailed(app, mailbox) == []

    stranger = _browser(app, "Strange browser/1.0", "203.0.113.7")
    assert sign_in(stranger).status_code == 303

    (notice,) = mailed(app, mailbox)
    assert notice["Subject"] == "New sign-in to your authserver account"
    body = text_of(notice)
    assert "Device:   Strange browser/1.0" in body
    assert "Address:  203.0.113.7" in body
    assert "http://127.0.0.1:8000/account" in body


def test_a_browser_that_signed_in_before_is_not_announced_again(
    app: Flask, session: Session, mailbox: Mailbox
) -> None:
    _new_device_notices(app, True)
    make_user(app, session)
    laptop = _browser(app, "Laptop browser", "198.51.100.1")
    assert sign_in(laptop).status_code == 303
    other = _browser(app, "Other browser", "198.51.100.2")
    assert sign_in(other).status_code == 303
    assert len(mailed(app, mailbox)) == 1

    # Both carry the account's device cookie now; signing in again from either is not news.
    for http in (laptop, other):
        signed_out = http.post("/logout", data={"csrf_token": csrf_token_of(http.get("/logout"))})
        assert signed_out.status_code == 303
        assert sign_in(http).status_code == 303

    assert len(mailed(app, mailbox)) == 1


def test_a_failed_sign_in_from_a_new_browser_announces_nothing(
    app: Flask, session: Session, mailbox: Mailbox
) -> None:
    _new_device_notices(app, True)
    make_user(app, session)
    assert sign_in(_browser(app, "Laptop browser", "198.51.100.1")).status_code == 303

    stranger = _browser(app, "Strange browser/1.0", "203.0.113.7")
    assert sign_in(stranger, password="not the password").status_code == 401

    assert mailed(app, mailbox) == []


def test_new_device_notices_are_off_unless_turned_on(
    app: Flask, session: Session, mailbox: Mailbox
) -> None:
    assert runtime(app).config.new_device_notices == 0
    make_user(app, session)
    assert sign_in(_browser(app, "Laptop browser", "198.51.100.1")).status_code == 303

    assert sign_in(_browser(app, "Strange browser/1.0", "203.0.113.7")).status_code == 303

    assert mailed(app, mailbox) == []


# -- account deleted -----------------------------------------------------------------------


def test_deleting_the_account_on_its_page_mails_a_last_notice(
    app: Flask, session: Session, mailbox: Mailbox
) -> None:
    make_user(app, session)
    laptop = _browser(app, "Laptop browser", "198.51.100.1")
    assert sign_in(laptop).status_code == 303
    token = csrf_token_of(laptop.get("/account"))

    deleted = laptop.post(
        "/account/delete", data={"csrf_token": token, "current_password": PASSWORD}
    )

    assert deleted.status_code == 200
    (notice,) = mailed(app, mailbox)
    assert notice["To"] == EMAIL
    assert notice["Subject"] == "Your authserver account was deleted"
    assert "deleted from its account page" in text_of(notice)
