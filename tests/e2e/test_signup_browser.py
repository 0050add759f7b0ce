"""Sign-up in a real headless Chromium (issue 14, part 4): from the sign-in page through
"Create an account", the mail as a real SMTP server received it, the link, a password, to the
account page, signed in.

Chromium and its launch are those of ``test_browser_flow.py`` (skipped the same way without
it). Each page is also photographed in light, dark and 390 px wide into the test artefacts'
``signup/`` and checked there by axe-core (``screenshots.shoot``).
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from authserver.config import Config
from authserver.db import db
from authserver.runtime import runtime
from authserver.services.signup import send_invitation, signup_settings
from tests.conftest import LiveServer
from tests.e2e import screenshots
from tests.e2e.test_browser_flow import browser, page  # noqa: F401 (fixtures)
from tests.smtp_servers import Mailbox
from tests.test_mail import deliver, parts

EMAIL = "new.person@example.com"
INVITED = "invited.person@example.com"
NEW_PASSWORD = "violet tractor umbrella 42"
SHOTS = "signup"  # the folder of its screenshots in the test artefacts


@pytest.fixture
def config(config: Config) -> Config:
    return replace(config, signup="open")


def shoot(tab: Page, name: str) -> None:
    screenshots.shoot(tab, SHOTS, name)


def mailed_link(app: Flask, mailbox: Mailbox, to: str, path: str) -> str:
    deliver(app)
    message = mailbox.received[-1]
    assert message["To"] == to
    match = re.search(rf"(http://\S+{path}\?token=[A-Za-z0-9_-]+)", parts(message)["text/plain"])
    assert match, f"no {path} link in the mail"
    return match.group(1)


def test_a_new_person_signs_up_through_the_mailed_link_in_a_real_browser(
    live_server: LiveServer,
    mailbox: Mailbox,
    page: Page,  # noqa: F811
) -> None:
    page.goto(live_server.url + "/login")
    shoot(page, "login")
    page.click("text=Create an account")
    expect(page.locator("h1")).to_have_text("Create an account")
    shoot(page, "signup")
    page.fill("input[name=email]", EMAIL)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Check your email")
    shoot(page, "signup-sent")

    link = mailed_link(live_server.app, mailbox, EMAIL, "/signup/password")
    page.goto(link)
    expect(page.locator("h1")).to_have_text("Choose your password")
    expect(page.locator("main")).to_contain_text(EMAIL)
    shoot(page, "choose-password")
    page.fill("input[name=new_password]", "short")
    page.fill("input[name=confirm_password]", "short")
    # The browser's own minlength check would stop this; the server's answer is what counts.
    page.eval_on_selector("form.stack", "f => f.noValidate = true")
    page.click("button[type=submit]")
    expect(page.locator("p.error")).to_be_visible()
    shoot(page, "choose-password-refused")
    page.fill("input[name=new_password]", NEW_PASSWORD)
    page.fill("input[name=confirm_password]", NEW_PASSWORD)
    page.click("button[type=submit]")

    page.wait_for_url(live_server.url + "/account")
    expect(page.locator("main")).to_contain_text(f"Signed in as {EMAIL}")
    shoot(page, "account")

    # The link is used up.
    page.goto(link)
    expect(page.locator("h1")).to_have_text("This link does not work")
    shoot(page, "link-invalid")


def test_an_invited_person_chooses_a_password_in_a_real_browser(
    live_server: LiveServer,
    mailbox: Mailbox,
    page: Page,  # noqa: F811
) -> None:
    app = live_server.app
    rt = runtime(app)
    assert rt.mail is not None
    with db.transaction(app) as session:
        send_invitation(session, rt.mail, signup_settings(rt.config), INVITED, rt.now())

    page.goto(mailed_link(app, mailbox, INVITED, "/invitation"))
    expect(page.locator("h1")).to_have_text("Choose your password")
    expect(page.locator("main")).to_contain_text("You were invited")
    shoot(page, "invitation")
    page.fill("input[name=new_password]", NEW_PASSWORD)
    page.fill("input[name=confirm_password]", NEW_PASSWORD)
    page.click("button[type=submit]")

    page.wait_for_url(live_server.url + "/account")
    expect(page.locator("main")).to_contain_text(f"Signed in as {INVITED}")
