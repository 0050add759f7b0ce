"""Password reset in a real headless Chromium (issue 14, part 2): from the sign-in page
through "Forgot password?", the mail as a real SMTP server received it, the link, a new
password, to signing in with it.

Chromium and its launch are those of ``test_browser_flow.py`` (skipped the same way without
it). Each page is also photographed in light, dark and 390 px wide into
the test artefacts' ``recovery/`` and checked there by axe-core (``screenshots.shoot``).
"""

from __future__ import annotations

import re

from flask import Flask
from playwright.sync_api import Page, expect

from authserver.db import db
from tests.conftest import LiveServer
from tests.e2e import screenshots
from tests.e2e.test_browser_flow import browser, page  # noqa: F401 (fixtures)
from tests.helpers import PASSWORD, make_user
from tests.smtp_servers import Mailbox
from tests.test_mail import deliver, parts

EMAIL = "ann@example.com"
NEW_PASSWORD = "violet tractor umbrella 42"
SHOTS = "recovery"  # the folder of its screenshots in the test artefacts


def shoot(tab: Page, name: str) -> None:
    screenshots.shoot(tab, SHOTS, name)


def mailed_link(app: Flask, mailbox: Mailbox) -> str:
    deliver(app)
    (message,) = mailbox.received
    assert message["To"] == EMAIL
    match = re.search(
        r"(http://\S+/password/reset\?token=[A-Za-z0-9_-]+)", parts(message)["text/plain"]
    )
    assert match, "no reset link in the mail"
    return match.group(1)


def test_forgotten_password_is_reset_through_the_mailed_link_in_a_real_browser(
    live_server: LiveServer,
    mailbox: Mailbox,
    page: Page,  # noqa: F811
) -> None:
    with db.transaction(live_server.app) as session:
        make_user(live_server.app, session, EMAIL)

    page.goto(live_server.url + "/login")
    shoot(page, "login")
    page.click("text=Forgot password?")
    expect(page.locator("h1")).to_have_text("Forgot your password?")
    shoot(page, "forgot")
    page.fill("input[name=email]", EMAIL)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Check your email")
    shoot(page, "forgot-sent")

    link = mailed_link(live_server.app, mailbox)
    page.goto(link)
    expect(page.locator("h1")).to_have_text("Choose a new password")
    shoot(page, "reset")
    page.fill("input[name=new_password]", "short")
    page.fill("input[name=confirm_password]", "short")
    # The browser's own minlength check would stop this; the server's answer is what counts.
    page.eval_on_selector("form.stack", "f => f.noValidate = true")
    page.click("button[type=submit]")
    expect(page.locator("p.error")).to_be_visible()
    shoot(page, "reset-refused")
    page.fill("input[name=new_password]", NEW_PASSWORD)
    page.fill("input[name=confirm_password]", NEW_PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Password changed")
    shoot(page, "reset-done")

    # The link is used up.
    page.goto(link)
    expect(page.locator("h1")).to_have_text("This link does not work")
    shoot(page, "link-invalid")

    page.goto(live_server.url + "/login")
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("p.error")).to_have_text("Email or password is incorrect.")
    page.fill("input[name=password]", NEW_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(live_server.url + "/account")
    expect(page.locator("main")).to_contain_text(f"Signed in as {EMAIL}")
