"""The operator console (issue 16, part 3): pages under ``/admin`` for accounts holding the
admin role, signed in with a second factor.

What it refuses, on every page and form: a browser that is not signed in (sent to sign in,
and back), an account without the role (403, shown nothing, nothing changed), an admin whose
session signed in with the password alone (the code's page first) or who has no second
factor (its setup first), a role revoked or an account disabled since the page was opened
(the next request), a form without its CSRF token, and an edit of a client made against a
version someone else has changed since. What it does: find accounts by address a page at a
time, show one with its sessions and its trail, sign it out of one session or everywhere,
disable, enable, mail a reset link, and list, edit, disable and enable clients; every change
audited with the admin as its actor.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.models import AuditEvent, BrowserSession, Client, RefreshFamily, User
from authserver.runtime import runtime
from authserver.services import totp
from authserver.services.admin_role import (
    ConsoleAccess,
    console_access,
    grant_admin_role,
    revoke_admin_role,
)
from authserver.services.clients import RegisteredClient
from authserver.services.users import disable_user
from tests.browser_helpers import (
    csrf_token_of,
    query_of,
    refused_as_csrf,
    sign_in,
    web_client,
)
from tests.helpers import PASSWORD, Clock, make_client, make_user, password_login
from tests.smtp_servers import Mailbox
from tests.test_mail import deliver, parts

ADMIN = "support@example.com"
ANN = "ann@example.com"
ADMIN_ADDRESS = "203.0.113.7"
SECOND_STEP = "/login/second-factor"


def code_at(secret: str, when: datetime) -> str:
    return pyotp.TOTP(secret).at(when)


def enrol_app(app: Flask, session: Session, user: User, when: datetime) -> str:
    """An authenticator app for ``user``, confirmed at ``when``; its secret."""
    cipher = runtime(app).key_cipher
    enrolment = totp.begin_enrolment(session, cipher, user, when, issuer="authserver")
    assert totp.confirm_enrolment(session, cipher, user, code_at(enrolment.secret, when), when)
    session.commit()
    return enrolment.secret


def make_admin(app: Flask, session: Session, clock: Clock, *, with_app: bool = True) -> str:
    """The support account, holding the admin role (and an app, confirmed ten minutes ago,
    unless not ``with_app``); its app's secret, or "" without one."""
    user = make_user(app, session, ADMIN)
    grant_admin_role(session, ADMIN, clock.now)
    session.commit()
    return enrol_app(app, session, user, clock.now - timedelta(minutes=10)) if with_app else ""


def browser(app: Flask, address: str = "198.51.100.4", agent: str = "Test browser") -> FlaskClient:
    http = app.test_client()
    http.environ_base.update(REMOTE_ADDR=address, HTTP_USER_AGENT=agent)
    return http


def give_code(http: FlaskClient, secret: str, when: datetime, target: str) -> TestResponse:
    page = http.get(SECOND_STEP, query_string={"next": target})
    assert page.status_code == 200, page.headers.get("Location")
    return http.post(
        SECOND_STEP,
        data={"csrf_token": csrf_token_of(page), "code": code_at(secret, when), "next": target},
    )


def sign_in_to_console(http: FlaskClient, secret: str, clock: Clock) -> None:
    """The password, then the app's code: a session with both factors, at the console."""
    first = sign_in(http, ADMIN, PASSWORD, "/admin")
    assert first.status_code == 303
    assert first.headers["Location"].startswith(SECOND_STEP), first.headers["Location"]
    done = give_code(http, secret, clock.now, "/admin")
    assert done.status_code == 303
    assert done.headers["Location"] == "/admin"


@pytest.fixture
def secret(app: Flask, session: Session, clock: Clock) -> str:
    return make_admin(app, session, clock)


@pytest.fixture
def console(app: Flask, secret: str, clock: Clock) -> FlaskClient:
    """A browser signed in to the console as the admin, with both factors."""
    http = browser(app, ADMIN_ADDRESS, "Support desk")
    sign_in_to_console(http, secret, clock)
    return http


@pytest.fixture
def ann(app: Flask, session: Session) -> User:
    return make_user(app, session, ANN)


@pytest.fixture
def photos(session: Session) -> RegisteredClient:
    return make_client(session, name="Photos app")


def signed_in_everywhere(app: Flask, ann: User, photos: RegisteredClient) -> FlaskClient:
    """Ann, signed in in a browser of her own and in the Photos app (a refresh family)."""
    hers = browser(app, "192.0.2.50", "Ann's phone")
    assert sign_in(hers, ANN).status_code == 303
    assert password_login(app.test_client(), photos, ANN).status_code == 200
    return hers


def live_sessions(session: Session, user: User) -> int:
    session.expire_all()
    return len(
        list(
            session.scalars(
                select(BrowserSession).where(
                    BrowserSession.user_id == user.id, BrowserSession.revoked_at.is_(None)
                )
            )
        )
    )


def live_families(session: Session, user: User) -> int:
    session.expire_all()
    return len(
        list(
            session.scalars(
                select(RefreshFamily).where(
                    RefreshFamily.user_id == user.id, RefreshFamily.revoked_at.is_(None)
                )
            )
        )
    )


def events(session: Session, event_type: str) -> list[AuditEvent]:
    session.expire_all()
    return list(
        session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == event_type).order_by(AuditEvent.id)
        )
    )


def admin_of(session: Session) -> User:
    found = session.scalars(select(User).where(User.email == ADMIN)).one()
    return found


def assert_made_by_the_admin(event: AuditEvent, session: Session) -> None:
    assert event.details["actor"] == "admin_console"
    assert event.details["actor_user_id"] == str(admin_of(session).id)
    assert event.ip_address == ADMIN_ADDRESS
    assert event.user_agent == "Support desk"


def post_form(http: FlaskClient, page: str, action: str, **fields: str) -> TestResponse:
    """Send the form of ``page`` whose action is ``action``, with its CSRF token."""
    shown = http.get(page)
    assert shown.status_code == 200, shown.headers.get("Location")
    assert f'action="{action}"' in shown.get_data(as_text=True), f"{page} has no form to {action}"
    return http.post(action, data={"csrf_token": csrf_token_of(shown), **fields})


def follow(http: FlaskClient, answer: TestResponse) -> str:
    assert answer.status_code == 303, answer.get_data(as_text=True)
    page = http.get(answer.headers["Location"])
    assert page.status_code == 200
    return page.get_data(as_text=True)


# -- every route of the console --------------------------------------------------------------


def console_routes(app: Flask, user_id: uuid.UUID, client_id: str) -> list[tuple[str, str]]:
    """(method, path) of every route of the console blueprint, the ids filled in: a route
    added later is tried by the refusal tests without anyone listing it."""
    routes = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("admin_console."):
            continue
        values = {"user_id": user_id, "client_id": client_id, "device_id": uuid.uuid4()}
        path = rule.build({k: v for k, v in values.items() if k in rule.arguments})
        assert path is not None
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append((method, path[1]))
    assert len(routes) >= 12
    return routes


def test_a_browser_not_signed_in_is_sent_to_sign_in_and_back_to_the_page(
    app: Flask, client: FlaskClient, ann: User, photos: RegisteredClient
) -> None:
    token = csrf_token_of(client.get("/login"))

    for method, path in console_routes(app, ann.id, photos.client.client_id):
        answer = client.open(
            path,
            method=method,
            query_string={"q": "x"} if path == "/admin" else None,
            data={"csrf_token": token} if method == "POST" else None,
        )

        assert answer.status_code == 303, (method, path)
        location = answer.headers["Location"]
        assert location.startswith("/login?"), location
        # A form's POST cannot be replayed: back to the page the form is on.
        page = re.sub(r"^(/admin/(users|clients)/[^/]+).*", r"\1", path)
        expected = "/admin?q=x" if path == "/admin" else path if method == "GET" else page
        assert query_of(location) == {"next": expected}, (method, path)


def test_a_user_without_the_role_is_refused_every_page_and_form_and_shown_nothing(
    app: Flask, session: Session, ann: User, photos: RegisteredClient
) -> None:
    make_user(app, session, "bob@example.com")
    hers = signed_in_everywhere(app, ann, photos)
    bob = browser(app)
    assert sign_in(bob, "bob@example.com").status_code == 303
    token = csrf_token_of(bob.get("/account"))

    for method, path in console_routes(app, ann.id, photos.client.client_id):
        answer = bob.open(
            path, method=method, data={"csrf_token": token} if method == "POST" else None
        )

        assert answer.status_code == 403, (method, path)
        body = answer.get_data(as_text=True)
        assert "for accounts that hold the admin role" in body
        assert ANN not in body
        assert "Photos app" not in body
        assert str(ann.id) not in body
    assert live_sessions(session, ann) == 1
    assert live_families(session, ann) == 1
    session.expire_all()
    assert not session.get(User, ann.id).disabled  # type: ignore[union-attr]
    assert not session.get(Client, photos.client.id).disabled  # type: ignore[union-attr]
    assert events(session, "password_reset_requested") == []
    assert hers.get("/account").status_code == 200


def test_an_admin_whose_session_has_the_password_alone_is_sent_to_the_second_step(
    app: Flask, session: Session, clock: Clock
) -> None:
    make_admin(app, session, clock, with_app=False)
    http = browser(app)
    assert sign_in(http, ADMIN).status_code == 303
    # The app is set up in another browser: this session signed in with the password only.
    secret = enrol_app(app, session, admin_of(session), clock.now - timedelta(minutes=10))

    answer = http.get("/admin/clients")

    assert answer.status_code == 303
    assert answer.headers["Location"] == f"{SECOND_STEP}?next=/admin/clients"
    done = give_code(http, secret, clock.now, "/admin/clients")
    assert done.headers["Location"] == "/admin/clients"
    assert http.get("/admin/clients").status_code == 200


def test_every_page_and_form_sends_a_session_without_the_second_factor_to_give_it(
    app: Flask, session: Session, clock: Clock, ann: User, photos: RegisteredClient
) -> None:
    make_admin(app, session, clock, with_app=False)
    http = browser(app)
    assert sign_in(http, ADMIN).status_code == 303
    enrol_app(app, session, admin_of(session), clock.now - timedelta(minutes=10))
    token = csrf_token_of(http.get("/account"))

    for method, path in console_routes(app, ann.id, photos.client.client_id):
        answer = http.open(path, method=method, data={"csrf_token": token})

        assert answer.status_code == 303, (method, path)
        assert answer.headers["Location"].startswith(SECOND_STEP + "?next="), (method, path)


def test_a_form_sent_by_a_session_without_the_second_factor_changes_nothing(
    app: Flask, session: Session, clock: Clock, ann: User, photos: RegisteredClient
) -> None:
    make_admin(app, session, clock, with_app=False)
    signed_in_everywhere(app, ann, photos)
    http = browser(app)
    assert sign_in(http, ADMIN).status_code == 303
    enrol_app(app, session, admin_of(session), clock.now - timedelta(minutes=10))
    token = csrf_token_of(http.get("/account"))

    answer = http.post(f"/admin/users/{ann.id}/sign-out-everywhere", data={"csrf_token": token})

    assert answer.status_code == 303
    assert answer.headers["Location"] == f"{SECOND_STEP}?next=/admin/users/{ann.id}"
    assert live_sessions(session, ann) == 1
    assert live_families(session, ann) == 1


def test_an_admin_without_a_second_factor_is_sent_to_set_one_up_first(
    app: Flask, session: Session, clock: Clock
) -> None:
    make_admin(app, session, clock, with_app=False)
    http = browser(app)
    assert sign_in(http, ADMIN).status_code == 303

    answer = http.get("/admin")

    assert answer.status_code == 303
    assert answer.headers["Location"] == "/account/two-step?next=/admin"
    assert http.get(answer.headers["Location"]).status_code == 200  # the setup page


def test_a_revoked_role_refuses_the_very_next_request_of_an_open_session(
    app: Flask, session: Session, console: FlaskClient, clock: Clock, ann: User
) -> None:
    page = console.get(f"/admin/users/{ann.id}")
    assert page.status_code == 200
    token = csrf_token_of(page)

    revoke_admin_role(session, ADMIN, clock.now)
    session.commit()

    assert console.get(f"/admin/users/{ann.id}").status_code == 403
    answer = console.post(f"/admin/users/{ann.id}/disable", data={"csrf_token": token})
    assert answer.status_code == 403
    session.expire_all()
    assert not session.get(User, ann.id).disabled  # type: ignore[union-attr]
    # Still a user: the account page works.
    assert console.get("/account").status_code == 200


def test_a_disabled_admin_is_refused(
    app: Flask, session: Session, console: FlaskClient, clock: Clock
) -> None:
    disable_user(session, ADMIN, clock.now)
    session.commit()

    answer = console.get("/admin")

    assert answer.status_code == 303
    assert answer.headers["Location"].startswith("/login?next=")
    assert sign_in(browser(app), ADMIN, PASSWORD, "/admin").status_code == 401


def test_the_rule_refuses_a_disabled_admin_whatever_its_session(
    app: Flask, session: Session, console: FlaskClient
) -> None:
    # Sessions of a disabled account are not resolved at all; the console's own rule
    # refuses one anyway, should a session ever outlive the flag.
    live = session.scalars(
        select(BrowserSession).where(
            BrowserSession.user_id == admin_of(session).id, BrowserSession.revoked_at.is_(None)
        )
    ).one()
    assert console_access(session, live) is ConsoleAccess.ALLOWED
    admin_of(session).disabled = True

    assert console_access(session, live) is ConsoleAccess.REFUSED


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    app: Flask, session: Session, console: FlaskClient, ann: User, photos: RegisteredClient
) -> None:
    signed_in_everywhere(app, ann, photos)

    for path in (
        f"/admin/users/{ann.id}/sign-out-everywhere",
        f"/admin/users/{ann.id}/disable",
        f"/admin/clients/{photos.client.client_id}/disable",
    ):
        assert refused_as_csrf(console.post(path)), path
        assert refused_as_csrf(console.post(path, data={"csrf_token": "forged"})), path

    assert live_sessions(session, ann) == 1
    assert live_families(session, ann) == 1
    session.expire_all()
    assert not session.get(User, ann.id).disabled  # type: ignore[union-attr]
    assert not session.get(Client, photos.client.id).disabled  # type: ignore[union-attr]


def test_a_form_from_another_site_is_refused(
    console: FlaskClient, session: Session, ann: User
) -> None:
    token = csrf_token_of(console.get(f"/admin/users/{ann.id}"))

    answer = console.post(
        f"/admin/users/{ann.id}/disable",
        data={"csrf_token": token},
        headers={"Origin": "https://evil.example"},
    )

    assert answer.status_code == 403
    session.expire_all()
    assert not session.get(User, ann.id).disabled  # type: ignore[union-attr]


# -- accounts ---------------------------------------------------------------------------------


def test_accounts_are_found_by_part_of_the_address_a_page_at_a_time(
    app: Flask, session: Session, console: FlaskClient
) -> None:
    for number in range(30):
        make_user(app, session, f"user{number:02d}@shop.example")
    make_user(app, session, "other@example.net")

    first = console.get("/admin", query_string={"q": "SHOP.example"})
    body = first.get_data(as_text=True)
    shown = re.findall(r">(user\d\d@shop\.example)</a>", body)
    following = re.search(r'href="([^"]+)" rel="next"', body)
    assert following is not None
    second = console.get(following[1].replace("&amp;", "&")).get_data(as_text=True)
    rest = re.findall(r">(user\d\d@shop\.example)</a>", second)

    assert shown == [f"user{n:02d}@shop.example" for n in range(25)]
    assert rest == [f"user{n:02d}@shop.example" for n in range(25, 30)]
    assert 'rel="next"' not in second
    assert "other@example.net" not in body + second


def test_an_account_that_does_not_exist_is_a_not_found_page(console: FlaskClient) -> None:
    answer = console.get(f"/admin/users/{uuid.uuid4()}")

    assert answer.status_code == 404
    assert answer.mimetype == "text/html"


def test_the_account_page_shows_its_sessions_apps_and_trail_newest_first(
    app: Flask, session: Session, console: FlaskClient, ann: User, photos: RegisteredClient
) -> None:
    signed_in_everywhere(app, ann, photos)

    body = console.get(f"/admin/users/{ann.id}").get_data(as_text=True)

    assert f">{ANN}</h1>" in body
    assert "Ann&#39;s phone" in body
    assert "Sign out of Photos app" in body
    trail = re.findall(r"<code>([a-z_]+)</code>\s*<span", body)
    assert trail[0] == "token_issued"
    assert trail[-1] == "user_created"


def test_the_trail_pages_from_new_to_old(
    app: Flask, session: Session, console: FlaskClient, ann: User, clock: Clock
) -> None:
    for _ in range(30):
        disable_user(session, ANN, clock.now)
    session.commit()

    first = console.get(f"/admin/users/{ann.id}").get_data(as_text=True)
    older = re.search(r'href="([^"]+)" rel="next"', first)
    assert older is not None
    second = console.get(older[1].replace("&amp;", "&")).get_data(as_text=True)

    assert len(re.findall(r"<code>user_disabled</code>", first)) == 25
    assert len(re.findall(r"<code>user_disabled</code>", second)) == 5
    assert "<code>user_created</code>" in second
    assert 'rel="next"' not in second


def test_signing_out_everywhere_ends_every_session_and_app_and_names_the_admin(
    app: Flask, session: Session, console: FlaskClient, ann: User, photos: RegisteredClient
) -> None:
    hers = signed_in_everywhere(app, ann, photos)
    page = f"/admin/users/{ann.id}"

    body = follow(console, post_form(console, page, f"{page}/sign-out-everywhere"))

    assert "1 browser session ended, 1 app signed out" in body
    assert live_sessions(session, ann) == 0
    assert live_families(session, ann) == 0
    assert hers.get("/account").status_code == 303
    (event,) = events(session, "logout_everywhere")
    assert event.user_id == ann.id
    assert event.details["reason"] == "signed_out_by_admin"
    assert_made_by_the_admin(event, session)
    assert "<code>logout_everywhere</code>" in body
    admin = admin_of(session)
    assert f'<a href="/admin/users/{admin.id}">{ADMIN}</a>' in body  # the trail names the actor


def test_signing_out_one_session_leaves_the_others(
    app: Flask, session: Session, console: FlaskClient, ann: User, photos: RegisteredClient
) -> None:
    hers = signed_in_everywhere(app, ann, photos)
    page = f"/admin/users/{ann.id}"
    family = session.scalars(select(RefreshFamily).where(RefreshFamily.user_id == ann.id)).one()

    body = follow(console, post_form(console, page, f"{page}/sessions/{family.id}/sign-out"))

    assert "Signed out of that session." in body
    assert live_families(session, ann) == 0
    assert live_sessions(session, ann) == 1
    assert hers.get("/account").status_code == 200
    (event,) = [e for e in events(session, "logout") if e.user_id == ann.id]
    assert_made_by_the_admin(event, session)
    # The same form again: that session is gone, and it says so.
    again = console.post(
        f"{page}/sessions/{family.id}/sign-out",
        data={"csrf_token": csrf_token_of(console.get(page))},
    )
    assert "That session had ended already." in follow(console, again)


def test_an_account_is_disabled_and_enabled_and_each_names_the_admin(
    app: Flask, session: Session, console: FlaskClient, ann: User, photos: RegisteredClient
) -> None:
    signed_in_everywhere(app, ann, photos)
    page = f"/admin/users/{ann.id}"

    disabled = follow(console, post_form(console, page, f"{page}/disable"))

    assert f"{ANN} is disabled and signed out everywhere." in disabled
    assert live_sessions(session, ann) == 0
    assert live_families(session, ann) == 0
    (event,) = events(session, "user_disabled")
    assert_made_by_the_admin(event, session)
    assert sign_in(browser(app), ANN).status_code == 401

    enabled = follow(console, post_form(console, page, f"{page}/enable"))

    assert f"{ANN} can sign in again." in enabled
    (event,) = events(session, "user_enabled")
    assert_made_by_the_admin(event, session)
    assert sign_in(browser(app), ANN).status_code == 303


def test_enabling_an_account_that_is_not_disabled_says_so_and_records_nothing(
    session: Session, console: FlaskClient, ann: User
) -> None:
    token = csrf_token_of(console.get(f"/admin/users/{ann.id}"))

    answer = console.post(f"/admin/users/{ann.id}/enable", data={"csrf_token": token})

    assert "The account is not disabled." in follow(console, answer)
    assert events(session, "user_enabled") == []


def test_an_admin_cannot_disable_their_own_account_from_the_console(
    session: Session, console: FlaskClient
) -> None:
    admin = admin_of(session)
    token = csrf_token_of(console.get(f"/admin/users/{admin.id}"))

    answer = console.post(f"/admin/users/{admin.id}/disable", data={"csrf_token": token})

    assert "You cannot disable your own account from the console." in follow(console, answer)
    session.expire_all()
    assert not admin_of(session).disabled
    assert events(session, "user_disabled") == []


def test_a_reset_link_is_mailed_and_names_the_admin(
    app: Flask, session: Session, console: FlaskClient, ann: User, mailbox: Mailbox
) -> None:
    page = f"/admin/users/{ann.id}"

    body = follow(console, post_form(console, page, f"{page}/reset-link"))

    assert f"A reset link is on its way to {ANN}." in body
    deliver(app)
    (mail,) = mailbox.received
    assert mail["To"] == ANN
    assert "/password/reset?token=" in parts(mail)["text/plain"]
    (event,) = events(session, "password_reset_requested")
    assert event.details["method"] == "operator"
    assert_made_by_the_admin(event, session)


def test_a_reset_link_for_a_disabled_account_is_refused(
    app: Flask, session: Session, console: FlaskClient, ann: User, clock: Clock
) -> None:
    token = csrf_token_of(console.get(f"/admin/users/{ann.id}"))
    disable_user(session, ANN, clock.now)
    session.commit()

    answer = console.post(f"/admin/users/{ann.id}/reset-link", data={"csrf_token": token})

    assert "No link was sent:" in follow(console, answer)
    assert events(session, "password_reset_requested") == []


# -- clients ----------------------------------------------------------------------------------


def edit_form(console: FlaskClient, client_id: str) -> dict[str, str]:
    """The edit form's fields as the page fills them in."""
    body = console.get(f"/admin/clients/{client_id}").get_data(as_text=True)
    fields = {
        "csrf_token": csrf_token_of(console.get(f"/admin/clients/{client_id}")),
        "version": re.search(r'name="version" value="([0-9a-f]+)"', body)[1],  # type: ignore[index]
        "scopes": re.search(r'id="scopes" name="scopes"[^>]* value="([^"]*)"', body)[1],  # type: ignore[index]
        "redirect_uris": re.search(r'name="redirect_uris"[^>]*>([^<]*)</textarea>', body)[1],  # type: ignore[index]
        "post_logout_redirect_uris": "",
        "access_token_ttl": "",
        "refresh_idle_ttl": "",
        "refresh_absolute_ttl": "",
    }
    for switch in (
        "require_second_factor",
        "require_pushed_authorization_requests",
        "dpop_bound_access_tokens",
    ):
        if re.search(rf'id="{switch}"[^>]* checked', body):
            fields[switch] = "on"
    return fields


def test_clients_are_listed_with_their_state(
    session: Session, console: FlaskClient, photos: RegisteredClient
) -> None:
    body = console.get("/admin/clients").get_data(as_text=True)

    assert "Photos app" in body
    assert photos.client.client_id in body


def test_a_client_is_edited_and_the_change_names_the_admin(
    session: Session, console: FlaskClient
) -> None:
    photos = web_client(session)
    client_id = photos.client.client_id
    form = edit_form(console, client_id)
    form.update(
        redirect_uris="https://photos.example/cb\r\nhttps://photos.example/cb2",
        scopes="openid email",
        access_token_ttl="300",
        require_second_factor="on",
    )

    body = follow(console, console.post(f"/admin/clients/{client_id}", data=form))

    assert "Saved: redirect URIs, scopes, second factor, access token lifetime." in body
    session.expire_all()
    client = session.get(Client, photos.client.id)
    assert client is not None
    assert client.redirect_uris == ["https://photos.example/cb", "https://photos.example/cb2"]
    assert client.scopes == ["openid", "email"]
    assert client.access_token_ttl == 300
    assert client.require_second_factor
    (event,) = events(session, "client_updated")
    assert event.client_id == client_id
    assert_made_by_the_admin(event, session)


def test_pushed_requests_and_dpop_are_switched_on_and_off(
    session: Session, console: FlaskClient
) -> None:
    client_id = web_client(session).client.client_id
    form = edit_form(console, client_id)
    form.update(require_pushed_authorization_requests="on", dpop_bound_access_tokens="on")

    on = follow(console, console.post(f"/admin/clients/{client_id}", data=form))
    session.expire_all()
    switched_on = session.scalars(select(Client).where(Client.client_id == client_id)).one()
    assert switched_on.require_pushed_authorization_requests
    assert switched_on.dpop_bound_access_tokens
    assert "Saved: pushed requests, DPoP." in on
    form = edit_form(console, client_id)
    assert form["dpop_bound_access_tokens"] == "on"
    del form["require_pushed_authorization_requests"], form["dpop_bound_access_tokens"]

    follow(console, console.post(f"/admin/clients/{client_id}", data=form))

    session.expire_all()
    switched_off = session.scalars(select(Client).where(Client.client_id == client_id)).one()
    assert not switched_off.require_pushed_authorization_requests
    assert not switched_off.dpop_bound_access_tokens


def test_an_edit_made_against_a_version_someone_changed_since_is_refused(
    app: Flask, session: Session, console: FlaskClient, secret: str, clock: Clock
) -> None:
    photos = web_client(session)
    client_id = photos.client.client_id
    mine = edit_form(console, client_id)
    colleague = browser(app, ADMIN_ADDRESS, "Support desk")
    clock.advance(seconds=30)  # the colleague's code is the app's next: each signs in once
    sign_in_to_console(colleague, secret, clock)
    theirs = edit_form(colleague, client_id)
    theirs["scopes"] = "openid"
    follow(colleague, colleague.post(f"/admin/clients/{client_id}", data=theirs))

    mine["scopes"] = "openid email profile offline_access photos:write"
    answer = console.post(f"/admin/clients/{client_id}", data=mine)

    assert answer.status_code == 409
    body = answer.get_data(as_text=True)
    assert "Someone changed this client since you opened this page" in body
    assert (
        'id="scopes" name="scopes" type="text" spellcheck="false" autocomplete="off" value="openid"'
        in body
    )
    session.expire_all()
    assert session.get(Client, photos.client.id).scopes == ["openid"]  # type: ignore[union-attr]
    assert len(events(session, "client_updated")) == 1
    # The form as it came back saves.
    mine = edit_form(console, client_id)
    mine["scopes"] = "openid email"
    assert "Saved: scopes." in follow(
        console, console.post(f"/admin/clients/{client_id}", data=mine)
    )


def test_an_edit_without_a_version_is_refused(session: Session, console: FlaskClient) -> None:
    photos = web_client(session)
    form = edit_form(console, photos.client.client_id)
    del form["version"]
    form["scopes"] = "openid"

    answer = console.post(f"/admin/clients/{photos.client.client_id}", data=form)

    assert answer.status_code == 409
    assert events(session, "client_updated") == []


def test_a_refused_field_is_shown_beside_it_and_nothing_is_saved(
    session: Session, console: FlaskClient
) -> None:
    photos = web_client(session)
    client_id = photos.client.client_id
    form = edit_form(console, client_id)
    form.update(
        redirect_uris="http://photos.example/cb",
        scopes="openid admin:users:write",
        access_token_ttl="ten minutes",
    )

    answer = console.post(f"/admin/clients/{client_id}", data=form)

    assert answer.status_code == 400
    body = answer.get_data(as_text=True)
    assert re.search(
        r'id="redirect_uris"[^>]*aria-describedby="redirect_uris_hint redirect_uris_error"'
        r'[^>]*aria-invalid="true"',
        body,
    )
    assert re.search(r'id="redirect_uris_error" class="error">Redirect URI must use https', body)
    assert re.search(
        r'id="scopes_error" class="error">&#39;admin:users:write&#39; is an admin scope', body
    )
    assert 'id="access_token_ttl_error" class="error">A whole number of seconds' in body
    # What was typed is shown again.
    assert ">http://photos.example/cb</textarea>" in body
    assert 'value="ten minutes"' in body
    assert events(session, "client_updated") == []


def test_a_code_flow_client_keeps_at_least_one_redirect_uri(
    session: Session, console: FlaskClient
) -> None:
    photos = web_client(session)
    form = edit_form(console, photos.client.client_id)
    form["redirect_uris"] = ""

    answer = console.post(f"/admin/clients/{photos.client.client_id}", data=form)

    assert answer.status_code == 400
    assert "Authorization_code needs at least one redirect URI." in answer.get_data(as_text=True)


def test_a_client_is_disabled_and_enabled_and_each_names_the_admin(
    app: Flask,
    session: Session,
    console: FlaskClient,
    ann: User,
    photos: RegisteredClient,
    clock: Clock,
) -> None:
    signed_in_everywhere(app, ann, photos)
    page = f"/admin/clients/{photos.client.client_id}"

    body = follow(console, post_form(console, page, f"{page}/disable"))

    assert "The client is disabled; 1 refresh-token family revoked." in body
    assert live_families(session, ann) == 0
    (event,) = events(session, "client_disabled")
    assert_made_by_the_admin(event, session)
    # Enabling waits until the disable's cut-off has passed (services/clients.enable_client).
    refused = follow(console, post_form(console, page, f"{page}/enable"))
    assert "Enable it in" in refused or "enable it in" in refused
    clock.advance(seconds=runtime(app).config.client_cache_seconds + 1)
    enabled = follow(console, post_form(console, page, f"{page}/enable"))
    assert "The client is enabled." in enabled
    (event,) = events(session, "client_enabled")
    assert_made_by_the_admin(event, session)


def test_an_unknown_client_is_a_not_found_page(console: FlaskClient) -> None:
    assert console.get("/admin/clients/no-such-client").status_code == 404


# -- what a page is sent that no page of it sends ---------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {"q": "ann\x00"},
        {"q": "\x1b[31m"},
        {"after": "ann\x00@example.com"},
        {"after": "a" * 300},
        {"q": "b" * 300},
    ],
)
def test_a_search_no_form_sends_is_a_bad_request_page(
    console: FlaskClient, query: dict[str, str]
) -> None:
    answer = console.get("/admin", query_string=query)

    assert answer.status_code == 400
    assert answer.mimetype == "text/html"


@pytest.mark.parametrize("before", ["-1", "x", "1.5", "٣", "9" * 19, "1" * 400])
def test_a_page_of_the_trail_no_link_gives_is_a_bad_request_page(
    console: FlaskClient, ann: User, before: str
) -> None:
    answer = console.get(f"/admin/users/{ann.id}", query_string={"before": before})

    assert answer.status_code == 400
    assert answer.mimetype == "text/html"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("redirect_uris", "https://photos.example/cb\x00"),
        ("redirect_uris", "https://photos.example/\u202ecb"),
        ("redirect_uris", "x" * 5000),
        ("post_logout_redirect_uris", "\x00"),
        ("scopes", "openid\x00"),
        ("scopes", "é"),
        ("access_token_ttl", "\x00"),
        ("access_token_ttl", "99999999999999999999"),
        ("access_token_ttl", "٣٠٠"),
        ("refresh_idle_ttl", "-5"),
        ("version", "\x00"),
    ],
)
def test_a_client_edit_no_form_sends_is_refused_without_an_error_page(
    session: Session, console: FlaskClient, field: str, value: str
) -> None:
    photos = web_client(session)
    form = edit_form(console, photos.client.client_id)
    form[field] = value

    answer = console.post(f"/admin/clients/{photos.client.client_id}", data=form)

    assert answer.status_code in (400, 409), answer.get_data(as_text=True)[:500]
    assert answer.mimetype == "text/html"
    assert events(session, "client_updated") == []
