"""The whole browser flow in a real headless Chromium: a relying party on 127.0.0.1 signs its
user in through authserver (authorization code with PKCE, sign-in form, consent), refreshes,
and signs out through RP-initiated logout. Its sign-in and consent pages are photographed and
checked by axe-core like every other (``screenshots.shoot``).

Chromium is Debian's, at /usr/bin/chromium (``.ci/run`` installs it); Playwright only drives
it and never downloads a browser. Without it the module is skipped, unless
``AUTHSERVER_TEST_REQUIRE_BROWSER=1`` makes that an error. Everything runs on 127.0.0.1, never
``localhost``: cookies are per host name, and the two must not be mixed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("AUTHSERVER_TEST_REQUIRE_BROWSER") == "1"

if not CHROMIUM.exists():
    reason = f"no browser: {CHROMIUM} is missing (apt-get install chromium)"
    if REQUIRE_BROWSER:
        pytest.fail(f"AUTHSERVER_TEST_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402
from sqlalchemy import select  # noqa: E402

from authserver.db import db  # noqa: E402
from authserver.models import BrowserSession, RefreshFamily  # noqa: E402
from examples.relying_party import create_rp_app  # noqa: E402
from tests.conftest import LiveServer, listening_socket, serving, url_of  # noqa: E402
from tests.e2e import screenshots  # noqa: E402
from tests.helpers import PASSWORD, make_client, make_user  # noqa: E402

EMAIL = "ann@example.com"
SHOTS = "relying-party"  # the folder of its screenshots in the test artefacts
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000


@pytest.fixture
def rp_url(live_server: LiveServer) -> Iterator[str]:
    """A relying party on its own 127.0.0.1 port, registered with the live authserver as a
    public, third-party client; yields its base URL."""
    listener = listening_socket()
    base = url_of(listener)
    with db.transaction(live_server.app) as session:
        make_user(live_server.app, session, EMAIL)
        registered = make_client(
            session,
            name="Example relying party",
            grant_types=["authorization_code", "refresh_token"],
            public=True,
            first_party=False,
            redirect_uris=[base + "/callback"],
            post_logout_redirect_uris=[base + "/"],
            scopes=["openid", "email", "offline_access"],
        )
        client_id = registered.client.client_id
    rp_app = create_rp_app(live_server.url, client_id, base)
    with serving(rp_app, listener):
        yield base


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    yield tab
    context.close()


def test_relying_party_signs_in_refreshes_and_signs_out_in_a_real_browser(
    live_server: LiveServer, rp_url: str, page: Page
) -> None:
    page.goto(rp_url + "/")
    page.click("#sign-in")

    # authserver's sign-in page, reached through /oauth/authorize.
    page.wait_for_url(live_server.url + "/login?**")
    expect(page.locator("h1")).to_have_text("Sign in")
    screenshots.shoot(page, SHOTS, "login")
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")

    # A third-party client: the user is asked before any code is issued.
    expect(page.locator("h1")).to_have_text("Allow Example relying party to access your account?")
    screenshots.shoot(page, SHOTS, "consent")
    page.click("button[name=decision][value=allow]")

    page.wait_for_url(rp_url + "/")
    expect(page.locator("#who")).to_have_text(f"Signed in as {EMAIL}")
    expect(page.locator("#refreshes")).to_have_text("Refreshes: 0")

    page.click("#refresh")
    expect(page.locator("#refreshes")).to_have_text("Refreshes: 1")

    page.click("#sign-out")
    page.wait_for_url(rp_url + "/")
    expect(page.locator("#sign-in")).to_be_visible()
    expect(page.locator("#who")).to_have_count(0)

    with db.transaction(live_server.app) as session:
        browser_session = session.scalars(select(BrowserSession)).one()
        family = session.scalars(select(RefreshFamily)).one()
        assert browser_session.revoked_reason == "logout"
        assert browser_session.revoked_at is not None
        assert family.browser_session_id == browser_session.id
        assert family.revoked_reason == "logout"
        assert family.revoked_at is not None
