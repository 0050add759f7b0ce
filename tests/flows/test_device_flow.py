"""The device authorization grant (RFC 8628, issue 17 part 3): a TV or a command-line tool
gets a device code and a user code, the user signs in elsewhere, types the code, checks it
and allows or denies, and the device's polls get, in turn, authorization_pending, slow_down,
the tokens once, then invalid_grant. What must be refused is tried: a client not registered
for the grant, another client's device code, a used or expired one, polls faster than the
interval, wrong user codes past the throttle, a user who is not signed in, a decision
without CSRF, the two-factor policy."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.models import AuditEvent, DeviceAuthorization, RefreshFamily
from authserver.runtime import runtime
from authserver.services.clients import RegisteredClient
from authserver.services.device_authorization import (
    DEVICE_CODE_GRANT,
    USER_CODE_ALPHABET,
    normalize_user_code,
)
from authserver.services.users import disable_user
from tests.browser_helpers import csrf_token_of, refused_as_csrf, sign_in
from tests.helpers import Clock, client_auth, make_client, make_user, token_request

TV_SCOPE = "openid email offline_access"


@pytest.fixture
def tv(app: Flask, session: Session) -> RegisteredClient:
    make_user(app, session)
    return make_client(
        session,
        name="Living-room TV",
        grant_types=[DEVICE_CODE_GRANT, "refresh_token"],
        first_party=False,
        public=True,
        scopes=TV_SCOPE.split(),
    )


def start(http: FlaskClient, registered: RegisteredClient, **form: str) -> TestResponse:
    headers, extra = client_auth(registered)
    return http.post(
        "/oauth/device_authorization", data={**extra, "scope": TV_SCOPE, **form}, headers=headers
    )


def started(http: FlaskClient, registered: RegisteredClient) -> dict[str, Any]:
    answer = start(http, registered)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.headers["Cache-Control"] == "no-store"
    return dict(answer.get_json())


def poll(http: FlaskClient, registered: RegisteredClient, device_code: str) -> TestResponse:
    return token_request(http, registered, grant_type=DEVICE_CODE_GRANT, device_code=device_code)


def enter(http: FlaskClient, user_code: str) -> TestResponse:
    page = http.get("/device")
    return http.post("/device", data={"csrf_token": csrf_token_of(page), "user_code": user_code})


def decide(http: FlaskClient, user_code: str, decision: str = "allow") -> TestResponse:
    confirm = enter(http, user_code)
    assert confirm.status_code == 200, confirm.get_data(as_text=True)
    return http.post(
        "/device/decision",
        data={"csrf_token": csrf_token_of(confirm), "user_code": user_code, "decision": decision},
    )


def error_of(answer: TestResponse) -> str:
    assert answer.status_code == 400, answer.get_data(as_text=True)
    return str(answer.get_json()["error"])


def test_a_device_is_connected_and_its_tokens_come_once(
    app: Flask, client: FlaskClient, tv: RegisteredClient, clock: Clock, session: Session
) -> None:
    body = started(client, tv)
    assert re.fullmatch(
        f"[{USER_CODE_ALPHABET}]{{4}}-[{USER_CODE_ALPHABET}]{{4}}", body["user_code"]
    )
    issuer = runtime(app).config.issuer
    assert body["verification_uri"] == issuer + "/device"
    assert body["verification_uri_complete"].startswith(issuer + "/device?user_code=")
    assert body["interval"] == 5
    assert body["expires_in"] == 600
    assert len(body["device_code"]) >= 40

    assert error_of(poll(client, tv, body["device_code"])) == "authorization_pending"

    browser = app.test_client()
    assert sign_in(browser).status_code == 303
    path = urlsplit(body["verification_uri_complete"])
    form = browser.get(f"{path.path}?{path.query}")
    assert body["user_code"] in form.get_data(as_text=True)
    # Typed in lower case, without the dash: the same code.
    confirm = enter(browser, body["user_code"].replace("-", "").lower())
    page = confirm.get_data(as_text=True)
    assert "Living-room TV" in page
    assert body["user_code"] in page
    done = decide(browser, body["user_code"])
    assert done.status_code == 200
    assert "Device connected" in done.get_data(as_text=True)

    clock.advance(seconds=5)
    tokens = poll(client, tv, body["device_code"])
    assert tokens.status_code == 200, tokens.get_data(as_text=True)
    issued = tokens.get_json()
    assert {"access_token", "refresh_token", "id_token"} <= set(issued)
    assert issued["scope"] == TV_SCOPE
    family = session.scalars(select(RefreshFamily)).one()
    assert family.browser_session_id is not None
    clock.advance(seconds=5)
    assert error_of(poll(client, tv, body["device_code"])) == "invalid_grant"
    # Only digests of the codes are stored.
    row = session.scalars(select(DeviceAuthorization)).one()
    assert body["device_code"].encode() not in row.device_code_digest
    assert row.status == "used"


def test_polling_faster_than_the_interval_slows_the_device_down(
    client: FlaskClient, tv: RegisteredClient, clock: Clock
) -> None:
    device_code = started(client, tv)["device_code"]
    assert error_of(poll(client, tv, device_code)) == "authorization_pending"
    clock.advance(seconds=4)
    assert error_of(poll(client, tv, device_code)) == "slow_down"
    # The interval is now 10 s: 5 s later is still too soon.
    clock.advance(seconds=5)
    assert error_of(poll(client, tv, device_code)) == "slow_down"
    clock.advance(seconds=15)
    assert error_of(poll(client, tv, device_code)) == "authorization_pending"


def test_a_denied_or_expired_request_gives_no_tokens(
    app: Flask, client: FlaskClient, tv: RegisteredClient, clock: Clock
) -> None:
    denied = started(client, tv)
    browser = app.test_client()
    sign_in(browser)
    assert "Device denied" in decide(browser, denied["user_code"], "deny").get_data(as_text=True)
    assert error_of(poll(client, tv, denied["device_code"])) == "access_denied"

    expiring = started(client, tv)
    clock.advance(seconds=600)
    assert error_of(poll(client, tv, expiring["device_code"])) == "expired_token"
    # Nor can the user approve it any more.
    late = enter(browser, expiring["user_code"])
    assert late.status_code == 400
    assert "not valid, or it has expired" in late.get_data(as_text=True)


def test_another_clients_device_code_or_a_made_up_one_is_invalid_grant(
    client: FlaskClient, tv: RegisteredClient, session: Session
) -> None:
    other = make_client(
        session, name="Other TV", grant_types=[DEVICE_CODE_GRANT], first_party=False, public=True
    )
    device_code = started(client, tv)["device_code"]
    assert error_of(poll(client, other, device_code)) == "invalid_grant"
    assert error_of(poll(client, tv, "made-up")) == "invalid_grant"
    missing = token_request(client, tv, grant_type=DEVICE_CODE_GRANT)
    assert error_of(missing) == "invalid_request"


def test_a_client_not_registered_for_the_grant_is_refused(
    app: Flask, client: FlaskClient, session: Session
) -> None:
    make_user(app, session)
    web = make_client(
        session,
        grant_types=["authorization_code"],
        first_party=False,
        redirect_uris=["https://rp.example.test/cb"],
        scopes=["openid"],
    )
    answer = start(client, web, scope="openid")
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "unauthorized_client"
    assert error_of(poll(client, web, "x")) == "unauthorized_client"
    unknown = client.post("/oauth/device_authorization", data={"client_id": "nobody"})
    assert unknown.status_code == 401
    assert unknown.get_json()["error"] == "invalid_client"


def test_a_scope_the_client_may_not_have_is_refused_at_the_start(
    client: FlaskClient, tv: RegisteredClient
) -> None:
    answer = start(client, tv, scope="openid admin")
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "invalid_scope"


def test_the_code_page_needs_a_signed_in_user_and_comes_back_with_the_code(
    client: FlaskClient, tv: RegisteredClient
) -> None:
    user_code = started(client, tv)["user_code"]
    browser_path = f"/device?user_code={user_code}"
    answer = client.get(browser_path)
    assert answer.status_code == 303
    assert answer.headers["Location"].startswith("/login?next=")
    assert "user_code" in answer.headers["Location"]
    assert client.get("/device").headers["Location"] == "/login?next=/device"


def test_a_decision_without_the_csrf_token_is_refused(
    app: Flask, client: FlaskClient, tv: RegisteredClient, session: Session
) -> None:
    body = started(client, tv)
    browser = app.test_client()
    sign_in(browser)
    refused = browser.post(
        "/device/decision", data={"user_code": body["user_code"], "decision": "allow"}
    )
    assert refused_as_csrf(refused)
    assert session.scalars(select(DeviceAuthorization)).one().status == "pending"


def test_wrong_codes_are_throttled_even_for_the_right_one_afterwards(
    app: Flask, client: FlaskClient, tv: RegisteredClient
) -> None:
    body = started(client, tv)
    browser = app.test_client()
    sign_in(browser)
    free = runtime(app).throttle_policy.free_failures
    for _ in range(free + 1):
        wrong = enter(browser, "BBBB-BBBB")
        assert wrong.status_code == 400
        assert 'aria-describedby="user_code_error"' in wrong.get_data(as_text=True)
    throttled = enter(browser, body["user_code"])
    assert throttled.status_code == 429
    assert "Too many wrong codes" in throttled.get_data(as_text=True)


def test_the_two_factor_policy_holds_for_devices_too(
    app: Flask, client: FlaskClient, tv: RegisteredClient
) -> None:
    runtime(app).config = replace(runtime(app).config, require_second_factor=1)
    body = started(client, tv)
    browser = app.test_client()
    sign_in(browser)
    answer = enter(browser, body["user_code"])
    assert answer.status_code == 303
    # No second factor yet: set one up first, then back to this code.
    assert answer.headers["Location"].startswith("/account/two-step?next=")
    assert error_of(poll(client, tv, body["device_code"])) == "authorization_pending"


def test_a_disabled_user_gets_no_tokens(
    app: Flask, client: FlaskClient, tv: RegisteredClient, session: Session, clock: Clock
) -> None:
    body = started(client, tv)
    browser = app.test_client()
    sign_in(browser)
    decide(browser, body["user_code"])
    disable_user(session, "ann@example.com", runtime(app).now())
    session.commit()
    clock.advance(seconds=5)
    assert error_of(poll(client, tv, body["device_code"])) == "invalid_grant"


def test_discovery_lists_the_endpoint_and_the_grant(client: FlaskClient) -> None:
    metadata = client.get("/.well-known/openid-configuration").get_json()
    assert metadata["device_authorization_endpoint"].endswith("/oauth/device_authorization")
    assert DEVICE_CODE_GRANT in metadata["grant_types_supported"]


@pytest.mark.parametrize(
    ("typed", "normalised"),
    [
        ("bcdf-ghjk", "BCDFGHJK"),
        (" BCDF GHJK ", "BCDFGHJK"),
        ("BCDFGHJ", None),
        ("BCDF-GHJA", None),  # a vowel: never issued
        ("BCDF-GHJ0", None),
        ("x" * 40, None),
    ],
)
def test_user_codes_are_read_as_people_type_them(typed: str, normalised: str | None) -> None:
    assert normalize_user_code(typed) == normalised


def test_every_poll_and_decision_is_audited_without_the_codes(
    app: Flask, client: FlaskClient, tv: RegisteredClient, session: Session, clock: Clock
) -> None:
    body = started(client, tv)
    browser = app.test_client()
    sign_in(browser)
    decide(browser, body["user_code"])
    clock.advance(seconds=5)
    assert poll(client, tv, body["device_code"]).status_code == 200
    session.expire_all()
    trail = [(e.event_type, e.details) for e in session.scalars(select(AuditEvent))]
    assert ("token_issued", {"grant_type": DEVICE_CODE_GRANT, "scope": TV_SCOPE}) in [
        (t, {k: v for k, v in d.items() if k in ("grant_type", "scope")}) for t, d in trail
    ]
    text = str(trail)
    assert body["device_code"] not in text
    assert body["user_code"] not in text


def test_signing_out_of_the_approving_browser_signs_the_device_out(
    app: Flask, client: FlaskClient, tv: RegisteredClient, session: Session, clock: Clock
) -> None:
    body = started(client, tv)
    browser = app.test_client()
    sign_in(browser)
    decide(browser, body["user_code"])
    clock.advance(seconds=5)
    tokens = poll(client, tv, body["device_code"]).get_json()
    account = browser.get("/account")
    browser.post("/logout", data={"csrf_token": csrf_token_of(account)})
    refreshed = token_request(
        client, tv, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert refreshed.status_code == 400
    assert refreshed.get_json()["error"] == "invalid_grant"


def test_the_device_pages_are_never_framed_nor_cached_and_refuse_other_sites_forms(
    app: Flask, client: FlaskClient, tv: RegisteredClient
) -> None:
    """The Allow button is what a clickjacking page would want a user to press."""
    body = started(client, tv)
    browser = app.test_client()
    sign_in(browser)
    page = browser.get("/device")
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert "no-store" in page.headers["Cache-Control"]
    cross_site = browser.post(
        "/device/decision",
        data={
            "csrf_token": csrf_token_of(page),
            "user_code": body["user_code"],
            "decision": "allow",
        },
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross_site.status_code == 403
    assert error_of(poll(client, tv, body["device_code"])) == "authorization_pending"
