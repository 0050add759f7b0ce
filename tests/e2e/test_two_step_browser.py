"""Two-step sign-in in a real headless Chromium (issue 15, parts 2 and 5): the account page's
"Set up an authenticator app" (the QR code and the key, a code the test computes as an app
would, from the key it read off the page), the recovery codes shown once, then signing in
with the password and a code, and with the password and a recovery code.

Chromium and its launch are those of ``test_browser_flow.py`` (skipped the same way without
it). Each page is also photographed in light, dark and 390 px wide into
the test artefacts' ``two-step/`` and checked there by axe-core (``screenshots.shoot``).
"""

from __future__ import annotations

import time

import pyotp
from playwright.sync_api import Page, expect

from authserver.db import db
from tests.conftest import LiveServer
from tests.e2e import screenshots
from tests.e2e.test_browser_flow import browser, page  # noqa: F401 (fixtures)
from tests.helpers import PASSWORD, make_user

EMAIL = "ann@example.com"
SHOTS = "two-step"  # the folder of its screenshots in the test artefacts


def shoot(tab: Page, name: str) -> None:
    screenshots.shoot(tab, SHOTS, name)


def password_step(tab: Page, url: str) -> None:
    tab.goto(url + "/login")
    tab.fill("input[name=email]", EMAIL)
    tab.fill("input[name=password]", PASSWORD)
    tab.click("button[type=submit]")


def sign_out(tab: Page) -> None:
    tab.get_by_role("button", name="Sign out", exact=True).click()
    expect(tab.locator("h1")).to_have_text("You are signed out")


def test_an_authenticator_app_is_set_up_and_signs_in_in_a_real_browser(
    live_server: LiveServer,
    page: Page,  # noqa: F811
) -> None:
    with db.transaction(live_server.app) as session:
        make_user(live_server.app, session, EMAIL)
    password_step(page, live_server.url)
    page.wait_for_url(live_server.url + "/account")
    expect(page.locator("#two-step ~ p a.button")).to_have_text("Set up an authenticator app")
    shoot(page, "account-off")

    page.get_by_role("link", name="Set up an authenticator app").click()
    expect(page.locator("h1")).to_have_text("Set up an authenticator app")
    expect(page.locator(".qr svg")).to_be_visible()
    key = page.locator("#manual_key").inner_text().replace(" ", "")
    app = pyotp.TOTP(key)
    page.fill("#code", "000000" if app.now() != "000000" else "111111")
    page.get_by_role("button", name="Turn on two-step sign-in").click()
    expect(page.locator("#code_error")).to_contain_text("That code is not right")
    expect(page.locator("#code")).to_have_attribute("aria-invalid", "true")
    shoot(page, "setup-refused")
    page.fill("#code", app.now())
    page.get_by_role("button", name="Turn on two-step sign-in").click()
    expect(page.locator("h1")).to_have_text("Two-step sign-in is on")
    codes = page.locator("ol.codes li").all_inner_texts()
    assert len(codes) == 10
    shoot(page, "recovery-codes")

    page.goto(live_server.url + "/account")
    expect(page.locator("#two-step ~ p.address .badge")).to_have_text("On")
    shoot(page, "account-on")
    sign_out(page)

    # The app's next code: this step's code was spent confirming it.
    password_step(page, live_server.url)
    expect(page.locator("h1")).to_have_text("Two-step sign-in")
    expect(page.locator("#code")).to_be_focused()
    shoot(page, "code-step")
    page.fill("#code", app.at(time.time() + 30))
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(live_server.url + "/account")
    sign_out(page)

    password_step(page, live_server.url)
    page.get_by_role("link", name="Use a recovery code").click()
    expect(page.locator("label[for=code]")).to_contain_text("Recovery code")
    page.fill("#code", "aaaaa-bbbbb")
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("#code_error")).to_contain_text("That recovery code is not right")
    shoot(page, "recovery-step-refused")
    page.fill("#code", codes[0])
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(live_server.url + "/account")
    expect(page.locator("#two-step ~ p.muted").first).to_contain_text(
        "9 unused recovery codes left"
    )
