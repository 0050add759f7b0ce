"""Passkeys in a real headless Chromium with its virtual authenticator (the DevTools
protocol's ``WebAuthn`` domain, through Playwright's CDP session): the account page adds a
passkey, the sign-in page's "Sign in with a passkey" signs in without a password, a copy of
the credential with a lower signature counter (a cloned authenticator) is refused, and a
removed passkey signs nobody in.

WebAuthn does not accept an IP address as RP ID, so this server's issuer is
``http://localhost:PORT`` (a secure context, like 127.0.0.1). Pages are photographed in
light, dark and 390 px wide into the test artefacts' ``passkeys/`` and checked there by
axe-core (``screenshots.shoot``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from playwright.sync_api import CDPSession, Page, expect
from sqlalchemy import select
from sqlalchemy.engine import Engine

from authserver.app import create_app
from authserver.config import Config
from authserver.db import db
from authserver.models import BrowserSession
from tests.conftest import (
    LiveServer,
    listening_socket,
    serving,
    stop_outbox_sender,
    truncate_all,
    url_of,
)
from tests.e2e import screenshots
from tests.e2e.test_browser_flow import browser, page  # noqa: F401 (fixtures)
from tests.helpers import PASSWORD, make_user

EMAIL = "ann@example.com"
SHOTS = "passkeys"  # the folder of its screenshots in the test artefacts
AUTHENTICATOR = {
    "protocol": "ctap2",
    "transport": "internal",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
}


@pytest.fixture
def localhost_server(engine: Engine, config: Config) -> Iterator[LiveServer]:
    """The app on 127.0.0.1, its issuer (and so its RP ID) ``localhost``."""
    listener = listening_socket()
    url = url_of(listener).replace("127.0.0.1", "localhost")
    application = create_app(replace(config, issuer=url))
    with serving(application, listener):
        yield LiveServer(application, url)
    stop_outbox_sender(application)
    db.state(application).engine.dispose()
    truncate_all(engine)


def shoot(tab: Page, name: str) -> None:
    screenshots.shoot(tab, SHOTS, name)


def without_autofill_requests(tab: Page) -> None:
    """Chromium's virtual authenticator answers a conditional (autofill) request as soon as
    the page makes it, as if the user had picked the passkey from the autofill: a test of the
    buttons tells the page conditional mediation is unavailable, so the button is what asks.
    ``test_the_autofill_request_signs_in_and_a_refusal_leaves_the_password_form`` covers the
    conditional request itself."""
    tab.add_init_script("PublicKeyCredential.isConditionalMediationAvailable = async () => false;")


def add_authenticator(cdp: CDPSession) -> str:
    answer = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
    return str(answer["authenticatorId"])


def credentials_of(cdp: CDPSession, authenticator_id: str) -> list[dict[str, Any]]:
    answer = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})
    return list(answer["credentials"])


def authenticator_holding(cdp: CDPSession, credential: dict[str, Any], sign_count: int) -> str:
    """A new virtual authenticator holding a copy of ``credential`` (its private key too),
    reporting ``sign_count``: what a cloned authenticator is."""
    authenticator_id = add_authenticator(cdp)
    copy = {**credential, "signCount": sign_count}
    cdp.send("WebAuthn.addCredential", {"authenticatorId": authenticator_id, "credential": copy})
    return authenticator_id


def sign_out(tab: Page) -> None:
    tab.get_by_role("button", name="Sign out", exact=True).click()
    expect(tab.locator("h1")).to_have_text("You are signed out")


def password_step(tab: Page, url: str) -> None:
    tab.goto(url + "/login")
    tab.fill("input[name=email]", EMAIL)
    tab.fill("input[name=password]", PASSWORD)
    tab.get_by_role("button", name="Sign in", exact=True).click()


def passkey_sign_in(tab: Page, url: str) -> None:
    tab.goto(url + "/login")
    tab.get_by_role("button", name="Sign in with a passkey").click()


def test_a_passkey_is_added_signs_in_and_its_clone_and_removal_are_refused(
    localhost_server: LiveServer,
    page: Page,  # noqa: F811
) -> None:
    url = localhost_server.url
    with db.transaction(localhost_server.app) as session:
        make_user(localhost_server.app, session, EMAIL)
    without_autofill_requests(page)
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    original = add_authenticator(cdp)

    page.goto(url + "/login")
    expect(page.locator("#email")).to_have_attribute("autocomplete", "username webauthn")
    expect(page.get_by_role("button", name="Sign in with a passkey")).to_be_visible()
    shoot(page, "login")
    password_step(page, url)
    page.wait_for_url(url + "/account")
    expect(page.locator("#passkeys ~ p.muted").first).to_contain_text("A passkey signs you in")
    page.fill("#passkey_name", "Test laptop")
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.locator("ul.passkeys li")).to_contain_text("Test laptop")
    expect(page.locator("ul.passkeys li")).to_contain_text("This device only")
    page.locator("#passkeys").scroll_into_view_if_needed()
    shoot(page, "account-with-passkey")
    assert len(credentials_of(cdp, original)) == 1
    sign_out(page)

    # Without a password.
    passkey_sign_in(page, url)
    page.wait_for_url(url + "/account")
    expect(page.locator("ul.passkeys li")).to_contain_text("last used")
    (credential,) = credentials_of(cdp, original)
    assert credential["signCount"] >= 1
    sign_out(page)

    # A clone: the same key, its counter behind the one the server last saw.
    cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": original})
    clone = authenticator_holding(cdp, credential, 0)
    passkey_sign_in(page, url)
    expect(page.locator("#passkey_error")).to_contain_text("counter went backwards")
    assert page.url.startswith(url + "/login")
    shoot(page, "login-clone-refused")

    # The authenticator whose counter moves on still signs in; the page warns of the copy.
    cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": clone})
    ahead = authenticator_holding(cdp, credential, credential["signCount"] + 10)
    passkey_sign_in(page, url)
    page.wait_for_url(url + "/account")
    expect(page.locator("ul.passkeys li .error")).to_contain_text("may have been copied")
    shoot(page, "account-clone-warning")

    # Removed: it signs nobody in.
    page.get_by_role("button", name="Remove Test laptop").click()
    expect(page.locator("#passkeys ~ p.muted").nth(1)).to_have_text("No passkeys yet.")
    sign_out(page)
    passkey_sign_in(page, url)
    expect(page.locator("#passkey_error")).to_contain_text("not registered here")
    shoot(page, "login-removed-refused")
    assert len(credentials_of(cdp, ahead)) == 1  # the authenticator still holds it


def test_a_passkey_is_the_second_step_after_the_password(
    localhost_server: LiveServer,
    page: Page,  # noqa: F811
) -> None:
    url = localhost_server.url
    with db.transaction(localhost_server.app) as session:
        make_user(localhost_server.app, session, EMAIL)
    without_autofill_requests(page)
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    add_authenticator(cdp)
    password_step(page, url)
    page.wait_for_url(url + "/account")
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.locator("ul.passkeys li")).to_contain_text("Passkey")
    sign_out(page)

    password_step(page, url)
    expect(page.locator("h1")).to_have_text("Two-step sign-in")
    # No authenticator app: the passkey is the only way on, and no code field is offered.
    expect(page.locator("#code")).to_have_count(0)
    shoot(page, "second-step")
    page.get_by_role("button", name="Use a passkey").click()
    page.wait_for_url(url + "/account")
    with db.transaction(localhost_server.app) as session:
        live = session.scalars(
            select(BrowserSession).where(BrowserSession.revoked_at.is_(None))
        ).one()
        assert live.amr == "pwd hwk mfa"


def test_the_autofill_request_signs_in_and_a_refusal_leaves_the_password_form(
    localhost_server: LiveServer,
    page: Page,  # noqa: F811
) -> None:
    """Conditional mediation (WebAuthn Level 3 §5.1.4.1, ``mediation: "conditional"``): the
    sign-in page asks the browser for a passkey through the email field's autofill, without a
    click. Chromium's virtual authenticator answers such a request at once, as a user picking
    the passkey from the autofill would."""
    url = localhost_server.url
    with db.transaction(localhost_server.app) as session:
        make_user(localhost_server.app, session, EMAIL)
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    authenticator = add_authenticator(cdp)

    # The authenticator holds nothing yet: the autofill request waits, and the password
    # form is not in its way.
    password_step(page, url)
    page.wait_for_url(url + "/account")
    page.fill("#passkey_name", "Test laptop")
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.locator("ul.passkeys li")).to_contain_text("Test laptop")
    sign_out(page)

    # Opening the page is all it takes: the autofill request signs in with the passkey.
    page.goto(url + "/login")
    page.wait_for_url(url + "/account")
    expect(page.locator("ul.passkeys li")).to_contain_text("last used")
    (credential,) = credentials_of(cdp, authenticator)
    assert credential["signCount"] >= 1
    with db.transaction(localhost_server.app) as session:
        live = session.scalars(
            select(BrowserSession).where(BrowserSession.revoked_at.is_(None))
        ).one()
        assert live.amr == "hwk mfa"  # a user-verifying passkey alone is two factors

    # Removed on the server, still held by the authenticator: the autofill answer is refused
    # with a word on the page, nobody is signed in, and the password still works.
    page.get_by_role("button", name="Remove Test laptop").click()
    expect(page.locator("#passkeys ~ p.muted").nth(1)).to_have_text("No passkeys yet.")
    sign_out(page)
    page.goto(url + "/login")
    expect(page.locator("#passkey_error")).to_contain_text("not registered here")
    assert page.url.startswith(url + "/login")
    with db.transaction(localhost_server.app) as session:
        assert (
            session.scalars(
                select(BrowserSession).where(BrowserSession.revoked_at.is_(None))
            ).first()
            is None
        )
    assert len(credentials_of(cdp, authenticator)) == 1
    shoot(page, "login-autofill-refused")
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(url + "/account")
