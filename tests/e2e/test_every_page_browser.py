"""Every page authserver serves to a browser, in a real headless Chromium, checked by axe-core
in the light and the dark colour scheme and at phone width, and photographed into the test
artefacts' ``pages/`` folder (``screenshots.shoot``; docs/testing.md).

The walk goes through the pages as people reach them. So that a new page cannot be left out,
the test notes which templates the server rendered and which paths the browser was on when it
checked, and ends by requiring every page template (``authserver/templates``, less the mail
and the pieces others include) and every GET page of ``tests/test_openapi.py`` ``HTML_PAGES``.
The POST pages answer with one of those templates (a form shown again with its error, or the
step after it), so covering the templates covers them. The last tests show that the checks
can fail.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

import pyotp
import pytest
from flask import Flask, template_rendered
from jinja2 import Template
from playwright.sync_api import Browser, Page

from authserver.config import Config
from authserver.db import db, utcnow
from authserver.runtime import runtime
from authserver.services import totp
from authserver.services.admin_role import grant_admin_role
from authserver.services.device_authorization import DEVICE_CODE_GRANT
from authserver.services.signup import send_invitation, signup_settings
from tests.browser_helpers import authorize_url, pkce_pair, web_client
from tests.conftest import LiveServer
from tests.e2e import screenshots
from tests.e2e.test_browser_flow import TIMEOUT_MS, browser, page  # noqa: F401 (fixtures)
from tests.e2e.test_device_browser import post_form
from tests.helpers import PASSWORD, make_client, make_user
from tests.smtp_servers import Mailbox
from tests.test_mail import deliver, parts
from tests.test_openapi import HTML_PAGES

SHOTS = "pages"  # the folder of its screenshots in the test artefacts
ANN = "ann@example.com"
ANN_NEW = "ann@example.org"
BOB = "bob@example.com"
NEWCOMER = "new.person@example.com"
INVITED = "invited.person@example.com"
ADMIN = "support@example.com"
NEW_PASSWORD = "violet tractor umbrella 42"
# Templates that are not pages: the frame every page extends, the console's navigation, and
# the passkey script's message box (included by, and checked with, the pages that have one).
NOT_PAGES = {"base.html", "admin/_console.html", "_passkey_error.html"}
# Shown only by a development server that keeps its mail (no SMTP server): the second test.
DEVELOPMENT_PAGES = {"dev_mail.html"}
DEVELOPMENT_PATHS = {"/dev/mail", "/dev/mail/{}/html"}
# A message's HTML part is the body of a mail, which a mail client shows inside its own page:
# the client's page has the main landmark and the level-one heading, and the message is the
# content of one of its regions. axe's best-practice rules for a whole page (not WCAG success
# criteria) judge the client, not the message; every WCAG rule still runs on it.
MAIL_DOCUMENT = ("landmark-one-main", "page-has-heading-one", "region")


def page_templates() -> set[str]:
    folder = files("authserver").joinpath("templates")
    names = {entry.name for entry in folder.iterdir() if entry.name.endswith(".html")}
    names |= {
        f"admin/{entry.name}"
        for entry in folder.joinpath("admin").iterdir()
        if entry.name.endswith(".html")
    }
    return names - NOT_PAGES


def get_pages() -> set[str]:
    return {path for method, path in HTML_PAGES if method == "GET"}


@dataclass
class Walk:
    """What has been checked: the templates the server rendered and the browser's paths."""

    app: Flask
    rendered: list[str] = field(default_factory=list)
    templates: set[str] = field(default_factory=set)
    paths: set[str] = field(default_factory=set)

    def note(self, sender: Flask, template: Template, context: dict[str, Any]) -> None:
        self.rendered.append(str(template.name))

    def check(self, tab: Page, name: str, skip: tuple[str, ...] = ()) -> None:
        tab.wait_for_load_state()
        screenshots.shoot(tab, SHOTS, name, skip)
        self.templates.update(self.rendered)
        self.rendered.clear()
        self.paths.add(urlsplit(tab.url).path)

    def missing_paths(self, expected: set[str]) -> set[str]:
        return {
            path
            for path in expected
            if not any(re.fullmatch(path.replace("{}", "[^/]+"), seen) for seen in self.paths)
        }


@pytest.fixture
def config(config: Config) -> Config:
    return replace(config, signup="open")


@pytest.fixture
def walk(live_server: LiveServer) -> Iterator[Walk]:
    recorder = Walk(live_server.app)
    with template_rendered.connected_to(recorder.note, live_server.app):
        yield recorder


def mailed_link(app: Flask, mailbox: Mailbox, to: str, path: str) -> str:
    deliver(app)
    message = [m for m in mailbox.received if m["To"] == to][-1]
    match = re.search(rf"(http://\S+{path}\?token=[A-Za-z0-9_-]+)", parts(message)["text/plain"])
    assert match, f"no {path} link in the mail to {to}"
    return match.group(1)


def submit(tab: Page, action: str, button: str = "button[type=submit]") -> None:
    """Sends the form whose action ends with ``action`` and waits for the page it leads to."""
    with tab.expect_navigation():
        tab.locator(f"form[action$='{action}'] {button}").first.click()


def sign_in(tab: Page, url: str, email: str, password: str) -> None:
    tab.goto(url + "/login")
    tab.fill("input[name=email]", email)
    tab.fill("input[name=password]", password)
    submit(tab, "/login")


def arrange(live_server: LiveServer) -> dict[str, str]:
    app = live_server.app
    earlier = utcnow() - timedelta(minutes=10)
    with db.transaction(app) as session:
        make_user(app, session, ANN)
        make_user(app, session, BOB)
        admin = make_user(app, session, ADMIN)
        grant_admin_role(session, ADMIN, earlier)
        cipher = runtime(app).key_cipher
        enrolment = totp.begin_enrolment(session, cipher, admin, earlier, issuer="authserver")
        assert totp.confirm_enrolment(
            session, cipher, admin, pyotp.TOTP(enrolment.secret).at(earlier), earlier
        )
        photos = web_client(session, name="Photo app")
        tool = make_client(
            session,
            name="Deploy CLI",
            grant_types=[DEVICE_CODE_GRANT],
            first_party=False,
            public=True,
            scopes=["openid", "email"],
        )
    return {
        "admin_secret": enrolment.secret,
        "web_client": photos.client.client_id,
        "device_client": tool.client.client_id,
    }


def test_every_page_passes_axe_in_light_dark_and_at_phone_width(
    live_server: LiveServer,
    mailbox: Mailbox,
    browser: Browser,  # noqa: F811
    page: Page,  # noqa: F811
    walk: Walk,
) -> None:
    url = live_server.url
    app = live_server.app
    ids = arrange(live_server)

    # Signed out: signing in, signing up, invitations, a forgotten password, bad links.
    page.goto(url + "/login")
    walk.check(page, "login")
    page.fill("input[name=email]", ANN)
    page.fill("input[name=password]", "not the password")
    submit(page, "/login")
    walk.check(page, "login-refused")

    page.goto(url + "/signup")
    walk.check(page, "signup")
    page.fill("input[name=email]", NEWCOMER)
    submit(page, "/signup")
    walk.check(page, "signup-sent")
    page.goto(mailed_link(app, mailbox, NEWCOMER, "/signup/password"))
    walk.check(page, "signup-password")
    page.fill("input[name=new_password]", "short")
    page.fill("input[name=confirm_password]", "short")
    page.eval_on_selector("form.stack", "f => f.noValidate = true")
    submit(page, "/signup/password")
    walk.check(page, "signup-password-refused")

    rt = runtime(app)
    assert rt.mail is not None
    with db.transaction(app) as session:
        send_invitation(session, rt.mail, signup_settings(rt.config), INVITED, rt.now())
    page.goto(mailed_link(app, mailbox, INVITED, "/invitation"))
    walk.check(page, "invitation")

    page.goto(url + "/password/forgot")
    walk.check(page, "forgot")
    page.fill("input[name=email]", BOB)
    submit(page, "/password/forgot")
    walk.check(page, "forgot-sent")
    page.goto(mailed_link(app, mailbox, BOB, "/password/reset"))
    walk.check(page, "reset")
    page.fill("input[name=new_password]", NEW_PASSWORD)
    page.fill("input[name=confirm_password]", NEW_PASSWORD)
    submit(page, "/password/reset")
    walk.check(page, "reset-done")
    page.goto(url + "/password/reset?token=not-a-token")
    walk.check(page, "link-invalid")
    page.goto(url + "/no/such/page")
    walk.check(page, "not-found")
    page.goto(url + "/oauth/logout?post_logout_redirect_uri=https%3A%2F%2Fnowhere.example.test%2F")
    walk.check(page, "logout-request-invalid")

    # Ann's account: her address, a new one, two-step sign-in.
    sign_in(page, url, ANN, PASSWORD)
    page.wait_for_url(url + "/account")
    walk.check(page, "account")
    submit(page, "/account/email/verification")
    walk.check(page, "account-verification-sent")
    page.goto(mailed_link(app, mailbox, ANN, "/email/verify"))
    walk.check(page, "email-verify")
    submit(page, "/email/verify")
    walk.check(page, "email-verified")
    page.goto(url + "/account")
    page.fill("input[name=new_email]", ANN_NEW)
    page.fill("#email_current_password", PASSWORD)
    submit(page, "/account/email")
    page.goto(mailed_link(app, mailbox, ANN_NEW, "/email/change"))
    walk.check(page, "email-change")
    submit(page, "/email/change")
    walk.check(page, "email-changed")

    page.goto(url + "/account/two-step")
    walk.check(page, "two-step-setup")
    key = pyotp.TOTP(page.locator("#manual_key").inner_text().replace(" ", ""))
    page.fill("#code", key.now())
    submit(page, "/account/two-step")
    walk.check(page, "recovery-codes")

    # A third-party app asks; a device asks.
    _, challenge = pkce_pair()
    page.goto(url + authorize_url(ids["web_client"], challenge))
    walk.check(page, "consent")
    status, codes = post_form(
        url + "/oauth/device_authorization",
        {"client_id": ids["device_client"], "scope": "openid email"},
    )
    assert status == 200, codes
    page.goto(url + "/device")
    walk.check(page, "device")
    page.fill("input[name=user_code]", codes["user_code"])
    submit(page, "/device")
    walk.check(page, "device-confirm")
    submit(page, "/device/decision", "button[value=allow]")
    walk.check(page, "device-done")

    # Signing out, and in again with the second step.
    page.goto(url + "/logout")
    walk.check(page, "logout-confirm")
    submit(page, "/logout")
    walk.check(page, "logged-out")
    sign_in(page, url, ANN_NEW, PASSWORD)
    walk.check(page, "second-factor")
    page.fill("#code", key.at(time.time() + 30))
    submit(page, "/login/second-factor")
    page.wait_for_url(url + "/account")
    page.fill("#delete_current_password", PASSWORD)
    submit(page, "/account/delete")
    walk.check(page, "account-deleted")

    # The operator console, in a browser of its own.
    console = browser.new_context()
    console.set_default_timeout(TIMEOUT_MS)
    tab = console.new_page()
    sign_in(tab, url, ADMIN, PASSWORD)
    tab.fill("#code", pyotp.TOTP(ids["admin_secret"]).now())
    submit(tab, "/login/second-factor")
    tab.goto(url + "/admin")
    walk.check(tab, "console-users")
    with tab.expect_navigation():
        tab.get_by_role("list", name="Accounts").get_by_role("link").first.click()
    walk.check(tab, "console-user")
    tab.goto(url + "/admin/clients")
    walk.check(tab, "console-clients")
    with tab.expect_navigation():
        tab.get_by_role("link", name="Photo app").click()
    walk.check(tab, "console-client")
    console.close()

    assert walk.templates >= page_templates() - DEVELOPMENT_PAGES, (
        "pages never checked: add them to this walk: "
        f"{sorted(page_templates() - DEVELOPMENT_PAGES - walk.templates)}"
    )
    assert not walk.missing_paths(get_pages() - DEVELOPMENT_PATHS), (
        f"GET pages never checked: {sorted(walk.missing_paths(get_pages() - DEVELOPMENT_PATHS))}"
    )


def test_the_development_mailbox_passes_axe(
    live_server: LiveServer,
    browser: Browser,  # noqa: F811
    page: Page,  # noqa: F811
    walk: Walk,
) -> None:
    """Without an SMTP server, a development server keeps its mail for ``/dev/mail``."""
    with db.transaction(live_server.app) as session:
        make_user(live_server.app, session, BOB)
    page.goto(live_server.url + "/password/forgot")
    page.fill("input[name=email]", BOB)
    submit(page, "/password/forgot")
    page.goto(live_server.url + "/dev/mail")
    walk.check(page, "dev-mail")
    part = page.locator("a[href$='/html']").first.get_attribute("href")
    assert part is not None
    # The message's own document forbids every script (CSP sandbox), axe's too: it is opened
    # in a browser that sets the policy aside, to be checked as it is shown.
    reader = browser.new_context(bypass_csp=True)
    reader.set_default_timeout(TIMEOUT_MS)
    tab = reader.new_page()
    tab.goto(live_server.url + part)
    walk.check(tab, "dev-mail-html", skip=MAIL_DOCUMENT)
    reader.close()

    assert walk.templates >= DEVELOPMENT_PAGES
    assert not walk.missing_paths(DEVELOPMENT_PATHS), sorted(walk.paths)


def test_axe_finds_what_a_page_gets_wrong_in_the_scheme_it_is_shown_in(
    live_server: LiveServer,
    page: Page,  # noqa: F811
) -> None:
    """The check can fail: a field without a name, and text that only the dark scheme puts
    on a background too close to it."""
    if screenshots.axe_source() is None:
        pytest.skip("axe-core is missing (make axe)")
    page.goto(live_server.url + "/login")
    assert screenshots.violations(page) == []
    page.evaluate(
        """() => {
            const main = document.querySelector("main");
            main.insertAdjacentHTML("beforeend", '<input type="text" id="nameless">');
            const dim = document.createElement("p");
            dim.id = "dim";
            dim.textContent = "Dim";
            dim.style.color = "#333";  // through CSSOM: the page's CSP refuses style attributes
            main.append(dim);
        }"""
    )

    light = {problem["id"]: problem for problem in screenshots.violations(page)}
    page.emulate_media(color_scheme="dark")
    dark = {problem["id"]: problem for problem in screenshots.violations(page)}

    assert [node["target"] for node in light["label"]["nodes"]] == [["#nameless"]]
    assert "color-contrast" not in light
    assert [node["target"] for node in dark["color-contrast"]["nodes"]] == [["#dim"]]


def test_a_page_wider_than_a_narrow_phone_is_found(
    live_server: LiveServer,
    page: Page,  # noqa: F811
) -> None:
    page.set_viewport_size(screenshots.NARROWEST)
    page.goto(live_server.url + "/login")
    assert screenshots.wider_than_the_window(page) == []
    page.evaluate(
        """() => {
            const wide = document.createElement("div");
            wide.id = "wide";
            wide.textContent = "Wide";
            wide.style.width = "30rem";
            document.querySelector("main").append(wide);
        }"""
    )

    assert screenshots.wider_than_the_window(page) == ["div#wide"]
