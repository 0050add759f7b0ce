"""Changing the account's address in a real headless Chromium (issue 14, part 3): sign in,
the account page, the change form, the mail as a real SMTP server received it, the link, the
confirmation, and the account page showing the new, confirmed address.

Chromium and its launch are those of ``test_browser_flow.py`` (skipped the same way without
it). Each page is also photographed in light, dark and 390 px wide into the test artefacts'
``email/`` and checked there by axe-core (``screenshots.shoot``).
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
NEW = "ann.new@example.org"
SHOTS = "email"  # the folder of its screenshots in the test artefacts


def shoot(tab: Page, name: str) -> None:
    screenshots.shoot(tab, SHOTS, name)


def mailed_link(app: Flask, mailbox: Mailbox, to: str, path: str) -> str:
    deliver(app)
    message = [m for m in mailbox.received if m["To"] == to][-1]
    match = re.search(rf"(http://\S+{path}\?token=[A-Za-z0-9_-]+)", parts(message)["text/plain"])
    assert match, f"no {path} link in the mail"
    return match.group(1)


def test_the_address_is_changed_through_the_mailed_link_in_a_real_browser(
    live_server: LiveServer,
    mailbox: Mailbox,
    page: Page,  # noqa: F811
) -> None:
    with db.transaction(live_server.app) as session:
        make_user(live_server.app, session, EMAIL)

    page.goto(live_server.url + "/login")
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(live_server.url + "/account")
    expect(page.locator("main")).to_contain_text("Not confirmed")
    shoot(page, "account-unconfirmed")

    page.click("text=Send verification email")
    expect(page.locator("main")).to_contain_text(f"We sent a link to {EMAIL}")
    shoot(page, "account-verification-sent")
    page.goto(mailed_link(live_server.app, mailbox, EMAIL, "/email/verify"))
    expect(page.locator("h1")).to_have_text("Confirm your address")
    shoot(page, "verify")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Address confirmed")
    shoot(page, "verified")

    page.goto(live_server.url + "/account")
    page.fill("input[name=new_email]", NEW)
    page.fill("#email_current_password", "not my password")
    page.get_by_role("button", name="Change address").click()
    expect(page.locator("p.error")).to_have_text("The current password is incorrect.")
    expect(page.locator("input[name=new_email]")).to_have_value(NEW)  # kept for another try
    shoot(page, "account-change-refused")
    page.fill("input[name=new_email]", NEW)
    page.fill("#email_current_password", PASSWORD)
    page.get_by_role("button", name="Change address").click()
    expect(page.locator("main")).to_contain_text(f"We sent a link to {NEW}")
    expect(page.locator("main")).to_contain_text(f"Signed in as {EMAIL}")
    shoot(page, "account-change-sent")

    link = mailed_link(live_server.app, mailbox, NEW, "/email/change")
    page.goto(link)
    expect(page.locator("h1")).to_have_text("Confirm your new address")
    shoot(page, "change-confirm")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Address confirmed")
    expect(page.locator("main")).to_contain_text(f"is now {NEW}")
    shoot(page, "changed")

    page.goto(link)
    expect(page.locator("h1")).to_have_text("This link does not work")
    shoot(page, "link-invalid")

    page.goto(live_server.url + "/account")
    expect(page.locator("main")).to_contain_text(f"Signed in as {NEW}")
    expect(page.locator("#email ~ p.address")).to_contain_text(NEW)
    expect(page.locator("#email ~ p.address .badge")).to_have_text("Confirmed")
    shoot(page, "account-changed")
