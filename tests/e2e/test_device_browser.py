"""The device grant's pages in a real headless Chromium (issue 17, part 3): a command-line
tool asks for codes over HTTP, the user opens ``verification_uri_complete``, signs in, sees the
code on the confirmation page, allows, and the tool's next poll over HTTP gets the tokens. A
second device's code is denied. Pages are photographed in light, dark and 390 px wide into
the test artefacts' ``device/`` and checked there by axe-core (``screenshots.shoot``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from playwright.sync_api import Page, expect

from authserver.db import db
from authserver.services.device_authorization import DEVICE_CODE_GRANT
from tests.conftest import LiveServer
from tests.e2e import screenshots
from tests.e2e.test_browser_flow import browser, page  # noqa: F401 (fixtures)
from tests.helpers import PASSWORD, make_client, make_user

EMAIL = "ann@example.com"
SHOTS = "device"  # the folder of its screenshots in the test artefacts


def shoot(tab: Page, name: str) -> None:
    screenshots.shoot(tab, SHOTS, name)


def post_form(url: str, fields: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """What the tool sends: a plain form POST over HTTP."""
    body = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(url, data=body, method="POST")  # noqa: S310 (loopback)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_a_tool_is_connected_through_the_device_pages(
    live_server: LiveServer,
    page: Page,  # noqa: F811
) -> None:
    url = live_server.url
    with db.transaction(live_server.app) as session:
        make_user(live_server.app, session, EMAIL)
        tool = make_client(
            session,
            name="Deploy CLI",
            grant_types=[DEVICE_CODE_GRANT],
            first_party=False,
            public=True,
            scopes=["openid", "email"],
        )
    client_id = tool.client.client_id
    status, codes = post_form(
        url + "/oauth/device_authorization", {"client_id": client_id, "scope": "openid email"}
    )
    assert status == 200, codes

    page.goto(codes["verification_uri_complete"])
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator("h1")).to_have_text("Connect a device")
    expect(page.locator("#user_code")).to_have_value(codes["user_code"])
    shoot(page, "code")
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("h1")).to_have_text("Allow Deploy CLI on your device?")
    expect(page.locator(".user-code")).to_have_text(codes["user_code"])
    shoot(page, "confirm")
    page.get_by_role("button", name="Allow").click()
    expect(page.locator("h1")).to_have_text("Device connected")
    shoot(page, "connected")

    answers: list[tuple[int, dict[str, Any]]] = []

    def polled_tokens() -> bool:
        answers.append(
            post_form(
                url + "/oauth/token",
                {
                    "grant_type": DEVICE_CODE_GRANT,
                    "client_id": client_id,
                    "device_code": codes["device_code"],
                },
            )
        )
        return answers[-1][0] == 200

    # Allowed before the first poll: the first poll gets the tokens, interval or not.
    assert polled_tokens(), answers
    assert {"access_token", "id_token"} <= set(answers[-1][1])

    # A second device: a wrong code first, then the right one denied.
    _, other = post_form(url + "/oauth/device_authorization", {"client_id": client_id})
    page.goto(url + "/device")
    page.fill("#user_code", "BBBB-BBBB")
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("#user_code_error")).to_contain_text("not valid, or it has expired")
    expect(page.locator("#user_code")).to_have_attribute("aria-invalid", "true")
    shoot(page, "wrong-code")
    page.fill("#user_code", other["user_code"].lower())
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Deny").click()
    expect(page.locator("h1")).to_have_text("Device denied")
    status, refused = post_form(
        url + "/oauth/token",
        {
            "grant_type": DEVICE_CODE_GRANT,
            "client_id": client_id,
            "device_code": other["device_code"],
        },
    )
    assert (status, refused["error"]) == (400, "access_denied")
