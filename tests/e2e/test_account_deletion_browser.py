"""Deleting the account from its page in a real headless Chromium (issue 14, part 6): sign in,
a wrong password refused on the "Delete account" form, the right one deletes the account,
the "account deleted" notice arrives at a real SMTP server, and the address no longer signs
in. The password change form is exercised on the way (its notice arrives too).

Chromium and its launch are those of ``test_browser_flow.py`` (skipped the same way without
it). Each page is also photographed in light, dark and 390 px wide into
the test artefacts' ``account/`` and checked there by axe-core (``screenshots.shoot``).
"""

from __future__ import annotations

from playwright.sync_api import Page, expect

from authserver.db import db
from authserver.services.users import find_user_by_email
from tests.conftest import LiveServer
from tests.e2e import screenshots
from tests.e2e.test_browser_flow import browser, page  # noqa: F401 (fixtures)
from tests.helpers import PASSWORD, make_user
from tests.smtp_servers import Mailbox
from tests.test_mail import deliver, parts

EMAIL = "ann@example.com"
NEW_PASSWORD = "violet tractor umbrella 42"
SHOTS = "account"  # the folder of its screenshots in the test artefacts


def shoot(tab: Page, name: str) -> None:
    screenshots.shoot(tab, SHOTS, name)


def sign_in(tab: Page, url: str, password: str) -> None:
    tab.goto(url + "/login")
    tab.fill("input[name=email]", EMAIL)
    tab.fill("input[name=password]", password)
    tab.click("button[type=submit]")


def test_the_account_is_deleted_from_its_page_in_a_real_browser(
    live_server: LiveServer,
    mailbox: Mailbox,
    page: Page,  # noqa: F811
) -> None:
    with db.transaction(live_server.app) as session:
        make_user(live_server.app, session, EMAIL)
    sign_in(page, live_server.url, PASSWORD)
    page.wait_for_url(live_server.url + "/account")
    shoot(page, "account")

    page.fill("#current_password", PASSWORD)
    page.fill("#new_password", NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page.locator("main")).to_contain_text("Password changed.")
    shoot(page, "password-changed")

    page.fill("#delete_current_password", "not my password")
    page.get_by_role("button", name="Delete my account").click()
    expect(page.locator("#delete ~ p.error")).to_have_text("The current password is incorrect.")
    shoot(page, "delete-refused")

    page.fill("#delete_current_password", NEW_PASSWORD)
    page.get_by_role("button", name="Delete my account").click()
    expect(page.locator("h1")).to_have_text("Your account is deleted")
    shoot(page, "deleted")

    deliver(live_server.app)
    # One delivery round sends both, concurrently: they may arrive in either order.
    received = {m["Subject"]: m for m in mailbox.received if m["To"] == EMAIL}
    assert sorted(received) == [
        "Your authserver account was deleted",
        "Your authserver password was changed",
    ]
    farewell = received["Your authserver account was deleted"]
    assert "deleted from its account page" in parts(farewell)["text/plain"]
    with db.transaction(live_server.app) as session:
        assert find_user_by_email(session, EMAIL) is None
    # The cookie went with the account: the account page asks to sign in, and the old
    # password signs nobody in.
    page.goto(live_server.url + "/account")
    page.wait_for_url(f"{live_server.url}/login?next=/account")
    sign_in(page, live_server.url, NEW_PASSWORD)
    expect(page.locator("p.error")).to_have_text("Email or password is incorrect.")
