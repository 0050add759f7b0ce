"""A support task in the operator console, in a real headless Chromium (issue 16, part 3): an
admin opens ``/admin``, signs in with the password and the authenticator app's code, finds a
user by part of the address, signs them out everywhere (the user had a browser session and
an app's refresh family), and reads the ``logout_everywhere`` event in the account's trail,
naming the admin as its actor. The clients' pages are walked too, with an edit the server
refuses (the error beside its field).

Chromium and its launch are those of ``test_browser_flow.py`` (skipped the same way without
it). Each page is also photographed in light, dark and 390 px wide into
the test artefacts' ``console/`` and checked there by axe-core (``screenshots.shoot``).
"""

from __future__ import annotations

from datetime import timedelta

import pyotp
from playwright.sync_api import Page, expect
from sqlalchemy import select

from authserver.db import db, utcnow
from authserver.models import BrowserSession, RefreshFamily
from authserver.runtime import runtime
from authserver.services import totp
from authserver.services.admin_role import grant_admin_role
from authserver.services.users import find_user_by_email
from tests.browser_helpers import sign_in, web_client
from tests.conftest import LiveServer
from tests.e2e import screenshots
from tests.e2e.test_browser_flow import browser, page  # noqa: F401 (fixtures)
from tests.helpers import PASSWORD, make_client, make_user, password_login

ADMIN = "support@example.com"
ANN = "ann@example.com"
SHOTS = "console"  # the folder of its screenshots in the test artefacts


def shoot(tab: Page, name: str) -> None:
    screenshots.shoot(tab, SHOTS, name)


def arrange(live_server: LiveServer) -> str:
    """The admin (with an app set up ten minutes ago; its secret is returned), Ann signed in
    in a browser of her own and in the Photos app, and a few other accounts and clients."""
    app = live_server.app
    earlier = utcnow() - timedelta(minutes=10)
    with db.transaction(app) as session:
        admin = make_user(app, session, ADMIN)
        grant_admin_role(session, ADMIN, earlier)
        cipher = runtime(app).key_cipher
        enrolment = totp.begin_enrolment(session, cipher, admin, earlier, issuer="authserver")
        code = pyotp.TOTP(enrolment.secret).at(earlier)
        assert totp.confirm_enrolment(session, cipher, admin, code, earlier)
        make_user(app, session, ANN)
        for name in ("andrew", "annika", "bob"):
            make_user(app, session, f"{name}@example.com")
        photos = make_client(session, name="Photos app")
        web_client(session, name="Recipes (web)")
    hers = app.test_client()
    hers.environ_base.update(REMOTE_ADDR="192.0.2.50", HTTP_USER_AGENT="Ann's phone")
    assert sign_in(hers, ANN).status_code == 303
    assert password_login(app.test_client(), photos, ANN).status_code == 200
    return enrolment.secret


def still_signed_in(live_server: LiveServer) -> tuple[int, int]:
    with db.transaction(live_server.app) as session:
        ann = find_user_by_email(session, ANN)
        assert ann is not None
        sessions = session.scalars(
            select(BrowserSession).where(
                BrowserSession.user_id == ann.id, BrowserSession.revoked_at.is_(None)
            )
        ).all()
        families = session.scalars(
            select(RefreshFamily).where(
                RefreshFamily.user_id == ann.id, RefreshFamily.revoked_at.is_(None)
            )
        ).all()
        return len(sessions), len(families)


def test_support_signs_a_user_out_everywhere_and_reads_it_in_the_trail(
    live_server: LiveServer,
    page: Page,  # noqa: F811
) -> None:
    secret = arrange(live_server)
    url = live_server.url
    assert still_signed_in(live_server) == (1, 1)

    # Not signed in: the console sends the browser to sign in, then to the code's page.
    page.goto(url + "/admin")
    page.wait_for_url(url + "/login?next=/admin")
    page.fill("input[name=email]", ADMIN)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Two-step sign-in")
    page.fill("#code", pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(url + "/admin")
    expect(page.locator("h1")).to_have_text("Users")
    shoot(page, "users")

    page.get_by_label("Address contains").fill("ANN")
    page.get_by_role("button", name="Find").click()
    accounts = page.get_by_role("list", name="Accounts")
    expect(accounts.get_by_role("link")).to_have_text([ANN, "annika@example.com"])
    shoot(page, "users-found")
    accounts.get_by_role("link", name=ANN).click()
    expect(page.locator("h1")).to_have_text(ANN)
    expect(page.locator("ul.devices > li")).to_have_count(2)
    shoot(page, "user")

    page.get_by_role("button", name="Sign out everywhere").click()
    expect(page.get_by_role("status")).to_have_text(
        f"Signed {ANN} out everywhere: 1 browser session ended, 1 app signed out."
    )
    expect(page.locator("#sessions ~ p.muted").first).to_have_text("Not signed in anywhere.")
    newest = page.get_by_role("list", name="Events, newest first").locator("li").first
    expect(newest.locator("code").first).to_have_text("logout_everywhere")
    expect(newest).to_contain_text("admin_console")
    expect(newest).to_contain_text("signed_out_by_admin")
    expect(newest.get_by_role("link", name=ADMIN)).to_be_visible()  # the actor
    shoot(page, "user-signed-out")
    assert still_signed_in(live_server) == (0, 0)

    page.get_by_role("link", name="Clients").click()
    expect(page.locator("h1")).to_have_text("Clients")
    shoot(page, "clients")
    page.get_by_role("link", name="Recipes (web)").click()
    expect(page.locator("h1")).to_have_text("Recipes (web)")
    page.locator("#redirect_uris").fill("http://recipes.example/callback")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#redirect_uris_error")).to_contain_text("must use https")
    expect(page.locator("#redirect_uris")).to_have_attribute("aria-invalid", "true")
    shoot(page, "client-refused")
    page.locator("#redirect_uris").fill("https://recipes.example/callback")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_have_text("Saved: redirect URIs.")
    shoot(page, "client-saved")
