"""Where a user is signed in: the account page, the JSON account API (RFC 6750 bearer), password
change and disabling a user, each ending the right browser sessions and refresh families."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.http.device_names import app_name, browser_name
from authserver.models import AuditEvent
from authserver.runtime import runtime
from authserver.services.clients import RegisteredClient
from authserver.services.users import disable_user, find_user_by_email
from tests.browser_helpers import (
    browser_session_rows,
    csrf_token_of,
    refused_as_csrf,
    sign_in,
    signed_in_as,
    tokens_through_browser,
    web_client,
)
from tests.helpers import (
    PASSWORD,
    Clock,
    account_api_request,
    basic_auth,
    make_client,
    make_resource_server,
    make_user,
    password_login,
    refresh,
)

NEW_PASSWORD = "a brand new passphrase"
# Real user agents: the account page names them in words (http/device_names.py); the JSON
# API gives them as they came.
LAPTOP_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
PHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
LAPTOP = "Firefox on Windows"
PHONE = "Safari on iPhone"


def _browser(app: Flask, user_agent: str, address: str) -> FlaskClient:
    http = app.test_client()
    http.environ_base.update(HTTP_USER_AGENT=user_agent, REMOTE_ADDR=address)
    return http


@dataclass
class SignedInDevices:
    """Ann signed in on a laptop and a phone, with Photo app connected through the laptop
    (code flow) and Command-line app signed in by password (tied to no browser)."""

    laptop: FlaskClient
    phone: FlaskClient
    photo_app: RegisteredClient
    photo_tokens: dict[str, Any]
    cli_app: RegisteredClient
    cli_tokens: dict[str, Any]
    cli: FlaskClient


@pytest.fixture
def devices(app: Flask, session: Session) -> SignedInDevices:
    make_user(app, session)
    laptop = _browser(app, LAPTOP_UA, "198.51.100.1")
    phone = _browser(app, PHONE_UA, "198.51.100.2")
    assert sign_in(laptop).status_code == 303
    assert sign_in(phone).status_code == 303
    account = account_api_request(app)
    # A third-party app registered for the account API (its audience and scope).
    photo_app = web_client(
        session,
        audiences=[account["resource"]],
        scopes=["openid", "email", "profile", "offline_access", "account"],
    )
    photo_tokens = tokens_through_browser(
        laptop,
        photo_app,
        _browser(app, "PhotoApp-server/1.0", "192.0.2.10"),
        resource=account["resource"],
        scope="openid email offline_access account",
    )
    cli_app = make_client(session, name="Command-line app")
    cli = _browser(app, "CLI/1.0", "198.51.100.3")
    cli_tokens = password_login(cli, cli_app, **account)
    assert cli_tokens.status_code == 200, cli_tokens.json
    return SignedInDevices(
        laptop, phone, photo_app, photo_tokens, cli_app, dict(cli_tokens.json), cli
    )


def _refreshes(http: FlaskClient, registered: RegisteredClient, tokens: dict[str, Any]) -> bool:
    return refresh(http, registered, tokens["refresh_token"]).status_code == 200


def _api(http: FlaskClient, method: str, path: str, access_token: str) -> TestResponse:
    return http.open(path, method=method, headers={"Authorization": f"Bearer {access_token}"})


def _device_list(http: FlaskClient, access_token: str) -> list[dict[str, Any]]:
    response = _api(http, "GET", "/account/sessions", access_token)
    assert response.status_code == 200, response.json
    sessions: list[dict[str, Any]] = response.json["sessions"]
    return sessions


def _labelled(devices: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Devices by what a user recognises them by: the app's name, or the browser."""
    return {d["client_name"] or d["user_agent"]: d for d in devices}


def _device_id(devices: list[dict[str, Any]], label: str) -> str:
    return str(_labelled(devices)[label]["id"])


def _page_entries(page: TestResponse) -> list[str]:
    return re.findall(r"<li(?: class=\"[^\"]*\")?>(.*?)</li>", page.get_data(as_text=True), re.S)


def _page_entry(page: TestResponse, marker: str) -> str:
    (entry,) = [e for e in _page_entries(page) if marker in e]
    return entry


def _sign_out_action(entry: str) -> str:
    match = re.search(r'action="(/account/devices/[^"/]+/sign-out)"', entry)
    assert match, "entry has no sign-out button"
    return match.group(1)


def _password_login_works(http: FlaskClient, registered: RegisteredClient, password: str) -> bool:
    return password_login(http, registered, password=password).status_code == 200


def _bob_signed_in(
    app: Flask, session: Session, cli_app: RegisteredClient
) -> tuple[FlaskClient, dict[str, Any]]:
    """Bob, signed in on his browser and in Command-line app."""
    make_user(app, session, email="bob@example.com")
    bob = _browser(app, "Bob's browser", "203.0.113.9")
    sign_in(bob, email="bob@example.com")
    tokens = password_login(bob, cli_app, email="bob@example.com", **account_api_request(app))
    assert tokens.status_code == 200
    return bob, dict(tokens.json)


# -- the account page ------------------------------------------------------------------------


def test_account_page_sends_an_anonymous_browser_to_sign_in(client: FlaskClient) -> None:
    response = client.get("/account")

    assert response.status_code == 303
    assert response.headers["Location"] == "/login?next=/account"


def test_account_page_lists_every_browser_and_app_and_marks_this_browser(
    devices: SignedInDevices,
) -> None:
    page = devices.laptop.get("/account")

    assert page.status_code == 200
    laptop = _page_entry(page, LAPTOP)
    assert "This device" in laptop
    assert "from 198.51.100.1" in laptop
    assert "/sign-out" not in laptop
    assert LAPTOP_UA not in page.get_data(as_text=True)
    for other, address in ((PHONE, "198.51.100.2"), ("Command-line app", "198.51.100.3")):
        entry = _page_entry(page, other)
        assert "This device" not in entry
        assert f"from {address}" in entry
        assert f"Sign out {other}</button>" in entry
    assert "Photo app" in page.get_data(as_text=True)
    assert len(_page_entries(page)) == 4


def test_account_page_lists_this_browser_first_whatever_was_active_last(
    devices: SignedInDevices,
) -> None:
    # The phone was active after the laptop; the laptop's page still starts with the laptop.
    assert devices.phone.get("/account").status_code == 200
    page = devices.laptop.get("/account")

    first = _page_entries(page)[0]
    assert LAPTOP in first
    assert "This device" in first


def test_sign_out_everywhere_else_is_not_the_loudest_button(devices: SignedInDevices) -> None:
    html = devices.laptop.get("/account").get_data(as_text=True)

    assert '<button type="submit" class="secondary">Sign out everywhere else</button>' in html


def test_devices_are_named_in_words_with_the_app_and_the_system() -> None:
    assert browser_name(LAPTOP_UA) == "Firefox on Windows"
    assert browser_name(PHONE_UA) == "Safari on iPhone"
    android = (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Mobile Safari/537.36"
    )
    assert browser_name(android) == "Chrome on Android"
    assert app_name("Photo app", PHONE_UA) == "Photo app on iPhone"
    # What no rule recognises is not shown raw.
    assert browser_name("<script>x</script>") == "Unknown browser"
    assert browser_name(None) == "Unknown browser"
    assert app_name("Command-line app", "CLI/1.0") == "Command-line app"


def test_sign_out_this_device_button_signs_out_that_browser(
    devices: SignedInDevices,
) -> None:
    page = devices.laptop.get("/account")

    response = devices.laptop.post(
        _sign_out_action(_page_entry(page, PHONE)),
        data={"csrf_token": csrf_token_of(page)},
    )

    assert response.status_code == 303
    assert response.headers["Location"] == "/account"
    assert signed_in_as(devices.phone) is None
    assert signed_in_as(devices.laptop) == "ann@example.com"
    assert PHONE not in devices.laptop.get("/account").get_data(as_text=True)


def test_sign_out_this_device_button_revokes_that_app(devices: SignedInDevices) -> None:
    page = devices.laptop.get("/account")

    devices.laptop.post(
        _sign_out_action(_page_entry(page, "Command-line app")),
        data={"csrf_token": csrf_token_of(page)},
    )

    assert not _refreshes(devices.cli, devices.cli_app, devices.cli_tokens)
    assert signed_in_as(devices.phone) == "ann@example.com"
    assert _refreshes(devices.cli, devices.photo_app, devices.photo_tokens)


def test_sign_out_everywhere_else_button_keeps_only_this_browser_and_its_apps(
    devices: SignedInDevices,
) -> None:
    page = devices.laptop.get("/account")

    response = devices.laptop.post(
        "/account/devices/sign-out-others", data={"csrf_token": csrf_token_of(page)}
    )

    assert response.status_code == 303
    assert signed_in_as(devices.phone) is None
    assert not _refreshes(devices.cli, devices.cli_app, devices.cli_tokens)
    assert signed_in_as(devices.laptop) == "ann@example.com"
    assert _refreshes(devices.cli, devices.photo_app, devices.photo_tokens)


def test_sign_out_device_button_cannot_reach_another_users_browser(
    app: Flask, session: Session, devices: SignedInDevices
) -> None:
    bob, bob_tokens = _bob_signed_in(app, session, devices.cli_app)
    bob_browser_id = _device_id(_device_list(bob, bob_tokens["access_token"]), "Bob's browser")
    page = devices.laptop.get("/account")

    devices.laptop.post(
        f"/account/devices/{bob_browser_id}/sign-out", data={"csrf_token": csrf_token_of(page)}
    )

    assert signed_in_as(bob) == "bob@example.com"


ACCOUNT_FORMS = ["sign-out-phone", "sign-out-others", "change-password", "delete-account"]


def _post_account_form(
    devices: SignedInDevices, form: str, csrf_token: str | None, headers: dict[str, str]
) -> TestResponse:
    page = devices.laptop.get("/account")
    data = {"csrf_token": csrf_token} if csrf_token is not None else {}
    if form == "sign-out-phone":
        path = _sign_out_action(_page_entry(page, PHONE))
    elif form == "sign-out-others":
        path = "/account/devices/sign-out-others"
    elif form == "delete-account":
        path = "/account/delete"
        data.update(current_password=PASSWORD)
    else:
        path = "/account/password"
        data.update(current_password=PASSWORD, new_password=NEW_PASSWORD)
    return devices.laptop.post(path, data=data, headers=headers)


def _assert_nothing_changed(devices: SignedInDevices) -> None:
    assert signed_in_as(devices.phone) == "ann@example.com"
    assert signed_in_as(devices.laptop) == "ann@example.com"
    assert _refreshes(devices.cli, devices.cli_app, devices.cli_tokens)
    assert _password_login_works(devices.cli, devices.cli_app, PASSWORD)
    assert not _password_login_works(devices.cli, devices.cli_app, NEW_PASSWORD)


@pytest.mark.parametrize("token", ["missing", "foreign"])
@pytest.mark.parametrize("form", ACCOUNT_FORMS)
def test_account_form_with_a_bad_csrf_token_is_refused_and_changes_nothing(
    app: Flask, devices: SignedInDevices, form: str, token: str
) -> None:
    foreign = csrf_token_of(app.test_client().get("/login"))

    response = _post_account_form(devices, form, None if token == "missing" else foreign, {})

    assert refused_as_csrf(response)
    _assert_nothing_changed(devices)


@pytest.mark.parametrize("form", ACCOUNT_FORMS)
def test_account_form_posted_cross_site_is_refused_and_changes_nothing(
    devices: SignedInDevices, form: str
) -> None:
    token = csrf_token_of(devices.laptop.get("/account"))

    response = _post_account_form(devices, form, token, {"Sec-Fetch-Site": "cross-site"})

    assert response.status_code == 403
    assert "sent from another site" in response.get_data(as_text=True)
    _assert_nothing_changed(devices)


# -- the JSON account API ---------------------------------------------------------------------


def test_api_lists_browsers_and_apps_and_marks_the_callers_browser_and_app_current(
    devices: SignedInDevices,
) -> None:
    listed = _device_list(devices.cli, devices.photo_tokens["access_token"])

    current = {label: d["current"] for label, d in _labelled(listed).items()}
    assert current == {
        LAPTOP_UA: True,
        "Photo app": True,
        PHONE_UA: False,
        "Command-line app": False,
    }


def test_api_marks_only_the_password_grant_app_current_for_its_token(
    devices: SignedInDevices,
) -> None:
    listed = _device_list(devices.cli, devices.cli_tokens["access_token"])

    current = [label for label, d in _labelled(listed).items() if d["current"]]
    assert current == ["Command-line app"]


def test_api_entries_say_what_where_and_when(devices: SignedInDevices) -> None:
    response = _api(devices.cli, "GET", "/account/sessions", devices.cli_tokens["access_token"])

    assert response.headers["Cache-Control"] == "no-store"
    by_label = _labelled(response.json["sessions"])
    phone = by_label[PHONE_UA]
    assert phone["type"] == "browser"
    assert phone["client_name"] is None
    assert phone["ip_address"] == "198.51.100.2"
    photo = by_label["Photo app"]
    assert photo["type"] == "app"
    assert photo["user_agent"] == "PhotoApp-server/1.0"
    assert photo["ip_address"] == "192.0.2.10"
    for entry in by_label.values():
        uuid.UUID(entry["id"])
        assert datetime.fromisoformat(entry["created_at"]) <= datetime.fromisoformat(
            entry["last_used_at"]
        )


def test_api_lists_only_the_callers_own_devices(
    app: Flask, session: Session, devices: SignedInDevices
) -> None:
    _bob_signed_in(app, session, devices.cli_app)

    listed = _device_list(devices.cli, devices.cli_tokens["access_token"])

    assert "Bob's browser" not in _labelled(listed)
    assert len(listed) == 4


def test_api_list_leaves_out_browsers_whose_session_timed_out(
    clock: Clock, devices: SignedInDevices
) -> None:
    clock.advance(minutes=31)
    renewed = refresh(devices.cli, devices.cli_app, devices.cli_tokens["refresh_token"])

    listed = _device_list(devices.cli, renewed.json["access_token"])

    assert set(_labelled(listed)) == {"Photo app", "Command-line app"}


def test_api_delete_signs_out_that_browser(devices: SignedInDevices) -> None:
    token = devices.cli_tokens["access_token"]
    phone_id = _device_id(_device_list(devices.cli, token), PHONE_UA)

    response = _api(devices.cli, "DELETE", f"/account/sessions/{phone_id}", token)

    assert response.status_code == 204
    assert signed_in_as(devices.phone) is None
    assert signed_in_as(devices.laptop) == "ann@example.com"
    assert PHONE_UA not in _labelled(_device_list(devices.cli, token))


def test_api_delete_of_a_browser_revokes_the_apps_connected_through_it(
    devices: SignedInDevices,
) -> None:
    token = devices.cli_tokens["access_token"]
    laptop_id = _device_id(_device_list(devices.cli, token), LAPTOP_UA)

    _api(devices.cli, "DELETE", f"/account/sessions/{laptop_id}", token)

    assert not _refreshes(devices.cli, devices.photo_app, devices.photo_tokens)


def test_api_delete_revokes_that_app(devices: SignedInDevices) -> None:
    token = devices.photo_tokens["access_token"]
    cli_id = _device_id(_device_list(devices.cli, token), "Command-line app")

    response = _api(devices.cli, "DELETE", f"/account/sessions/{cli_id}", token)

    assert response.status_code == 204
    assert not _refreshes(devices.cli, devices.cli_app, devices.cli_tokens)
    assert _refreshes(devices.cli, devices.photo_app, devices.photo_tokens)


def test_api_delete_of_another_users_browser_is_404_and_leaves_it_signed_in(
    app: Flask, session: Session, devices: SignedInDevices
) -> None:
    bob, bob_tokens = _bob_signed_in(app, session, devices.cli_app)
    bob_browser_id = _device_id(_device_list(bob, bob_tokens["access_token"]), "Bob's browser")

    response = _api(
        devices.cli,
        "DELETE",
        f"/account/sessions/{bob_browser_id}",
        devices.cli_tokens["access_token"],
    )

    assert response.status_code == 404
    assert response.json["error"] == "not_found"
    assert signed_in_as(bob) == "bob@example.com"


def test_api_delete_of_another_users_app_is_404_and_leaves_it_working(
    app: Flask, session: Session, devices: SignedInDevices
) -> None:
    bob, bob_tokens = _bob_signed_in(app, session, devices.cli_app)
    bob_app_id = _device_id(_device_list(bob, bob_tokens["access_token"]), "Command-line app")

    response = _api(
        devices.cli,
        "DELETE",
        f"/account/sessions/{bob_app_id}",
        devices.cli_tokens["access_token"],
    )

    assert response.status_code == 404
    assert _refreshes(bob, devices.cli_app, bob_tokens)


def test_api_delete_of_an_unknown_id_is_404(devices: SignedInDevices) -> None:
    response = _api(
        devices.cli,
        "DELETE",
        f"/account/sessions/{uuid.uuid4()}",
        devices.cli_tokens["access_token"],
    )

    assert response.status_code == 404


def test_api_revoke_others_keeps_only_the_callers_browser_and_app(
    devices: SignedInDevices,
) -> None:
    token = devices.photo_tokens["access_token"]

    response = _api(devices.cli, "POST", "/account/sessions/revoke-others", token)

    assert response.status_code == 200
    assert response.json == {"revoked_sessions": 1, "revoked_families": 1}
    assert signed_in_as(devices.phone) is None
    assert not _refreshes(devices.cli, devices.cli_app, devices.cli_tokens)
    assert signed_in_as(devices.laptop) == "ann@example.com"
    assert _refreshes(devices.cli, devices.photo_app, devices.photo_tokens)
    assert set(_labelled(_device_list(devices.cli, token))) == {LAPTOP_UA, "Photo app"}


def test_api_revoke_others_from_a_password_grant_app_signs_out_every_browser(
    devices: SignedInDevices,
) -> None:
    token = devices.cli_tokens["access_token"]

    response = _api(devices.cli, "POST", "/account/sessions/revoke-others", token)

    assert response.json == {"revoked_sessions": 2, "revoked_families": 1}
    assert signed_in_as(devices.laptop) is None
    assert signed_in_as(devices.phone) is None
    assert not _refreshes(devices.cli, devices.photo_app, devices.photo_tokens)
    assert _refreshes(devices.cli, devices.cli_app, devices.cli_tokens)


def test_api_logout_all_ends_every_session_and_family_including_the_callers(
    session: Session, devices: SignedInDevices
) -> None:
    token = devices.photo_tokens["access_token"]

    response = _api(devices.cli, "POST", "/account/logout-all", token)

    assert response.status_code == 200
    assert response.json == {"revoked_sessions": 2, "revoked_families": 2}
    assert signed_in_as(devices.laptop) is None
    assert signed_in_as(devices.phone) is None
    assert not _refreshes(devices.cli, devices.photo_app, devices.photo_tokens)
    assert not _refreshes(devices.cli, devices.cli_app, devices.cli_tokens)
    assert {row.revoked_reason for row in browser_session_rows(session)} == {"logout_everywhere"}
    # The caller's own access token names its (now revoked) family.
    again = _api(devices.cli, "GET", "/account/sessions", token)
    assert again.status_code == 401
    assert 'error="invalid_token"' in again.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="no-header"),
        pytest.param("Bearer ", id="empty"),
        pytest.param("Bearer garbage", id="garbage"),
        pytest.param("Bearer a.b.c", id="three-garbage-parts"),
        pytest.param("Basic YW5uOnB3", id="basic"),
    ],
)
def test_api_without_a_valid_access_token_is_401_invalid_token(
    client: FlaskClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    response = client.get("/account/sessions", headers=headers)

    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    assert "sessions" not in response.json


def test_api_with_an_expired_access_token_is_401_invalid_token(
    app: Flask, clock: Clock, devices: SignedInDevices
) -> None:
    clock.advance(seconds=app.config["AUTHSERVER"].access_token_ttl + 1)

    response = _api(devices.cli, "GET", "/account/sessions", devices.cli_tokens["access_token"])

    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_api_refuses_an_id_token_as_bearer(devices: SignedInDevices) -> None:
    response = _api(devices.cli, "GET", "/account/sessions", devices.photo_tokens["id_token"])

    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_api_needs_no_csrf_token_but_refuses_cookies_alone(devices: SignedInDevices) -> None:
    # The laptop holds a session cookie; without a bearer token it is nobody to the API.
    response = devices.laptop.post("/account/logout-all")

    assert response.status_code == 401
    assert signed_in_as(devices.laptop) == "ann@example.com"


def test_api_refuses_an_access_token_revoked_at_the_revocation_endpoint(
    devices: SignedInDevices,
) -> None:
    token = devices.cli_tokens["access_token"]
    revoked = devices.cli.post(
        "/oauth/revoke",
        data={"token": token, "token_type_hint": "access_token"},
        headers=basic_auth(devices.cli_app),
    )
    assert revoked.status_code == 200

    response = _api(devices.cli, "GET", "/account/sessions", token)

    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_api_logout_all_also_ends_access_tokens_without_a_refresh_family(
    app: Flask, session: Session, devices: SignedInDevices, clock: Clock
) -> None:
    no_refresh_app = make_client(session, name="Kiosk", grant_types=["password"])
    kiosk = password_login(devices.cli, no_refresh_app, **account_api_request(app)).json
    assert "refresh_token" not in kiosk
    clock.advance(seconds=1)  # the cut-off is a whole second (see the test below)

    _api(devices.cli, "POST", "/account/logout-all", devices.cli_tokens["access_token"])

    response = _api(devices.cli, "GET", "/account/sessions", kiosk["access_token"])
    assert response.status_code == 401


def test_signing_in_again_in_the_second_of_a_logout_all_works_everywhere(
    app: Flask, session: Session, devices: SignedInDevices, clock: Clock
) -> None:
    # Late in a second: a cut-off that kept the microseconds would refuse every token issued
    # in the rest of it, since iat has whole seconds.
    clock.now = clock.now.replace(microsecond=900_000) + timedelta(seconds=1)
    _api(devices.cli, "POST", "/account/logout-all", devices.cli_tokens["access_token"])
    clock.advance(milliseconds=50)
    no_refresh_app = make_client(session, name="Kiosk", grant_types=["password"])

    again = password_login(devices.cli, devices.cli_app, **account_api_request(app)).json
    kiosk = password_login(devices.cli, no_refresh_app, **account_api_request(app)).json

    for token in (again["access_token"], kiosk["access_token"]):
        assert _api(devices.cli, "GET", "/account/sessions", token).status_code == 200
    assert _refreshes(devices.cli, devices.cli_app, again)


# -- password change ---------------------------------------------------------------------------


def _change_password(http: FlaskClient, current: str, new: str) -> TestResponse:
    token = csrf_token_of(http.get("/account"))
    return http.post(
        "/account/password",
        data={"csrf_token": token, "current_password": current, "new_password": new},
    )


def test_password_change_with_a_wrong_current_password_changes_nothing(
    devices: SignedInDevices,
) -> None:
    response = _change_password(devices.laptop, "not my password", NEW_PASSWORD)

    assert response.status_code == 400
    assert "The current password is incorrect." in response.get_data(as_text=True)
    _assert_nothing_changed(devices)


def test_password_change_to_a_too_short_password_is_refused_and_changes_nothing(
    devices: SignedInDevices,
) -> None:
    response = _change_password(devices.laptop, PASSWORD, "short")

    assert response.status_code == 400
    assert "at least 8 characters" in response.get_data(as_text=True)
    _assert_nothing_changed(devices)


@pytest.mark.parametrize(
    ("weak", "reason"),
    [
        pytest.param("password123", "This is a very common password.", id="common"),
        pytest.param(
            "annexample2024",
            "It contains your address or the name of this service.",
            id="built-from-the-address",
        ),
        pytest.param("aaaaaaaaaaaa", 'Repeats like "aaa" are easy to guess.', id="repeats"),
    ],
)
def test_password_change_to_an_easily_guessed_password_shows_why_and_changes_nothing(
    devices: SignedInDevices, weak: str, reason: str
) -> None:
    response = _change_password(devices.laptop, PASSWORD, weak)

    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "This password is too easy to guess." in page
    assert escape(reason) in page
    assert weak not in page
    _assert_nothing_changed(devices)
    assert not _password_login_works(devices.cli, devices.cli_app, weak)


def test_account_page_says_what_a_new_password_must_be(
    app: Flask, devices: SignedInDevices
) -> None:
    page = devices.laptop.get("/account").get_data(as_text=True)

    assert escape(runtime(app).password_policy.describe()) in page
    assert 'minlength="8"' in page


def test_password_change_signs_out_every_other_browser_and_app(
    devices: SignedInDevices,
) -> None:
    response = _change_password(devices.laptop, PASSWORD, NEW_PASSWORD)

    assert response.status_code == 200
    assert "Password changed." in response.get_data(as_text=True)
    assert signed_in_as(devices.phone) is None
    assert not _refreshes(devices.cli, devices.cli_app, devices.cli_tokens)
    cli_access = _api(devices.cli, "GET", "/account/sessions", devices.cli_tokens["access_token"])
    assert cli_access.status_code == 401


def test_password_change_keeps_this_browser_and_the_apps_connected_through_it(
    devices: SignedInDevices,
) -> None:
    _change_password(devices.laptop, PASSWORD, NEW_PASSWORD)

    assert signed_in_as(devices.laptop) == "ann@example.com"
    assert _refreshes(devices.cli, devices.photo_app, devices.photo_tokens)


def test_after_password_change_the_new_password_signs_in_and_the_old_one_does_not(
    app: Flask, devices: SignedInDevices
) -> None:
    _change_password(devices.laptop, PASSWORD, NEW_PASSWORD)

    assert sign_in(app.test_client(), password=PASSWORD).status_code == 401
    fresh = app.test_client()
    assert sign_in(fresh, password=NEW_PASSWORD).status_code == 303
    assert signed_in_as(fresh) == "ann@example.com"


def test_password_guesses_on_the_change_form_are_throttled_before_any_hash(
    app: Flask, devices: SignedInDevices, clock: Clock
) -> None:
    free = runtime(app).config.signin_free_failures
    codes = [
        _change_password(devices.laptop, f"guess {n}", NEW_PASSWORD).status_code
        for n in range(free + 1)
    ]
    assert codes == [400] * (free + 1)

    # Now even the right password waits: the throttle answers before the hash.
    refused = _change_password(devices.laptop, PASSWORD, NEW_PASSWORD)

    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert "Too many wrong passwords" in refused.get_data(as_text=True)
    _assert_nothing_changed(devices)
    # The guesses count for the account as sign-in guesses do, from this address.
    assert sign_in(_browser(app, "Laptop browser", "198.51.100.1")).status_code == 429
    clock.advance(seconds=3)
    assert _change_password(devices.laptop, PASSWORD, NEW_PASSWORD).status_code == 200


def test_a_wrong_password_on_the_change_form_is_in_the_trail_without_the_guess(
    session: Session, devices: SignedInDevices
) -> None:
    _change_password(devices.laptop, "my secret guess", NEW_PASSWORD)

    (failed,) = [
        e
        for e in session.scalars(select(AuditEvent).where(AuditEvent.event_type == "signin_failed"))
        if e.details.get("method") == "reauthentication"
    ]
    assert failed.details == {
        "method": "reauthentication",
        "action": "change_password",
        "reason": "wrong_password",
    }
    assert "my secret guess" not in str(failed.details)


# -- deleting the account ---------------------------------------------------------------------


def _delete_account(http: FlaskClient, password: str) -> TestResponse:
    token = csrf_token_of(http.get("/account"))
    return http.post("/account/delete", data={"csrf_token": token, "current_password": password})


def test_the_account_page_offers_deletion_behind_the_password(devices: SignedInDevices) -> None:
    page = devices.laptop.get("/account").get_data(as_text=True)

    form = page[page.index('action="/account/delete"') :]
    assert 'name="current_password"' in form[: form.index("</form>")]
    assert "Delete my account" in page


def test_deleting_with_a_wrong_password_deletes_nothing(
    app: Flask, session: Session, devices: SignedInDevices
) -> None:
    response = _delete_account(devices.laptop, "not my password")

    assert response.status_code == 400
    assert "The current password is incorrect." in response.get_data(as_text=True)
    assert find_user_by_email(session, "ann@example.com") is not None
    _assert_nothing_changed(devices)


def test_password_guesses_on_the_delete_form_are_throttled_and_delete_nothing(
    app: Flask, session: Session, devices: SignedInDevices
) -> None:
    free = runtime(app).config.signin_free_failures
    codes = [_delete_account(devices.laptop, f"guess {n}").status_code for n in range(free + 1)]

    refused = _delete_account(devices.laptop, PASSWORD)

    assert codes == [400] * (free + 1)
    assert refused.status_code == 429
    assert "Too many wrong passwords" in refused.get_data(as_text=True)
    assert find_user_by_email(session, "ann@example.com") is not None
    _assert_nothing_changed(devices)


def test_deleting_the_account_revokes_everything_and_removes_it(
    app: Flask, session: Session, devices: SignedInDevices
) -> None:
    user = find_user_by_email(session, "ann@example.com")
    assert user is not None
    user_id = user.id
    resource_server = make_resource_server(session)
    photo_access = devices.photo_tokens["access_token"]

    response = _delete_account(devices.laptop, PASSWORD)

    assert response.status_code == 200
    assert "Your account is deleted" in response.get_data(as_text=True)
    # This browser's cookie goes with its session; every other browser is signed out.
    assert any(
        "Max-Age=0" in header or "expires=Thu, 01 Jan 1970" in header
        for header in response.headers.getlist("Set-Cookie")
    )
    assert signed_in_as(devices.laptop) is None
    assert signed_in_as(devices.phone) is None
    # Every app: refresh tokens are refused, access tokens are inactive to introspection and
    # refused by authserver's own API.
    assert not _refreshes(devices.cli, devices.cli_app, devices.cli_tokens)
    assert not _refreshes(devices.cli, devices.photo_app, devices.photo_tokens)
    introspected = devices.cli.post(
        "/oauth/introspect", data={"token": photo_access}, headers=basic_auth(resource_server)
    ).json
    assert introspected == {"active": False}
    assert _api(devices.cli, "GET", "/account/sessions", photo_access).status_code == 401
    # Resource servers reading the revocation feed learn the subject is gone.
    feed = devices.cli.get("/oauth/revocations", headers=basic_auth(resource_server)).json
    assert feed is not None
    assert ("sub", str(user_id)) in {(e["type"], e["value"]) for e in feed["entries"]}
    # The account is gone: its password signs nobody in, and the address is free again.
    session.expire_all()
    assert find_user_by_email(session, "ann@example.com") is None
    assert sign_in(app.test_client()).status_code == 401
    assert not _password_login_works(devices.cli, devices.cli_app, PASSWORD)
    (deleted,) = session.scalars(
        select(AuditEvent).where(AuditEvent.event_type == "user_deleted")
    ).all()
    assert deleted.user_id == user_id
    assert deleted.details["method"] == "account_page"
    assert deleted.ip_address == "198.51.100.1"


def test_a_signed_out_browser_cannot_delete_anything(
    app: Flask, session: Session, devices: SignedInDevices
) -> None:
    stranger = app.test_client()
    token = csrf_token_of(stranger.get("/login"))

    response = stranger.post(
        "/account/delete", data={"csrf_token": token, "current_password": PASSWORD}
    )

    assert response.status_code == 303
    assert "/login" in response.headers["Location"]
    assert find_user_by_email(session, "ann@example.com") is not None


# -- disabling a user -------------------------------------------------------------------------


def _disable_ann(app: Flask, session: Session) -> None:
    disable_user(session, "ann@example.com", runtime(app).now())
    session.commit()


def test_disabling_a_user_signs_out_every_browser_of_theirs(
    app: Flask, session: Session, devices: SignedInDevices
) -> None:
    _disable_ann(app, session)

    assert signed_in_as(devices.laptop) is None
    assert signed_in_as(devices.phone) is None
    assert {row.revoked_reason for row in browser_session_rows(session)} == {"user_disabled"}


def test_disabling_a_user_revokes_their_apps_and_access_tokens(
    app: Flask, session: Session, devices: SignedInDevices
) -> None:
    _disable_ann(app, session)

    assert not _refreshes(devices.cli, devices.photo_app, devices.photo_tokens)
    assert not _refreshes(devices.cli, devices.cli_app, devices.cli_tokens)
    for tokens in (devices.photo_tokens, devices.cli_tokens):
        response = _api(devices.cli, "GET", "/account/sessions", tokens["access_token"])
        assert response.status_code == 401


def test_disabled_user_cannot_sign_in_again(
    app: Flask, session: Session, devices: SignedInDevices
) -> None:
    _disable_ann(app, session)

    response = sign_in(app.test_client())

    assert response.status_code == 401
    assert "Email or password is incorrect." in response.get_data(as_text=True)
