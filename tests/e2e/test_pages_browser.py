"""The pages people see, in a real headless Chromium (issue 18, part 5): a branded authserver
(name, logo, colour, support link) signs a user in to the example relying party; after a wrong
password the focus is back on the password field, tied to the error; the consent page shows
the app's logo, links and scopes in words, and "Switch account" comes back to the same
request as another user; the account page names this browser first in words; a browser meets
an HTML 404; the relying party's "expired sign-in" page starts again. Every page is
photographed in light, dark and 390 px wide into the test artefacts' ``pages/`` and checked
there by axe-core (``screenshots.shoot``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from flask import Flask, Response
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import Engine, update

from authserver import create_app
from authserver.config import Config
from authserver.db import db
from authserver.models import Client
from examples.relying_party import create_rp_app
from tests.conftest import listening_socket, serving, stop_outbox_sender, truncate_all, url_of
from tests.e2e import screenshots
from tests.e2e.test_browser_flow import TIMEOUT_MS, browser  # noqa: F401 (fixture)
from tests.helpers import PASSWORD, make_client, make_user

ANN = "ann@example.com"
BOB = "bob@example.com"
SHOTS = "pages"  # the folder of its screenshots in the test artefacts
LOGO_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">'
    '<rect width="64" height="64" rx="14" fill="{colour}"/>'
    '<text x="32" y="44" font-size="34" text-anchor="middle" fill="#fff" '
    'font-family="sans-serif">{letter}</text></svg>'
)


def shoot(tab: Page, name: str) -> None:
    screenshots.shoot(tab, SHOTS, name)


@dataclass
class Site:
    issuer: str
    rp: str
    app: Flask


def _logo_server() -> Flask:
    """Serves the operator's and the app's logos from another origin, as a CDN would."""
    assets = Flask("logos")

    @assets.get("/acme.svg")
    def acme() -> Response:
        return Response(LOGO_SVG.format(colour="#7a1fa2", letter="A"), mimetype="image/svg+xml")

    @assets.get("/notes.svg")
    def notes() -> Response:
        return Response(LOGO_SVG.format(colour="#0b6e4f", letter="N"), mimetype="image/svg+xml")

    return assets


@pytest.fixture
def site(engine: Engine, config: Config) -> Iterator[Site]:
    server_listener, rp_listener, logo_listener = (
        listening_socket(),
        listening_socket(),
        listening_socket(),
    )
    issuer, rp, logos = url_of(server_listener), url_of(rp_listener), url_of(logo_listener)
    authserver = create_app(
        replace(
            config,
            issuer=issuer,
            product_name="Acme ID",
            logo_url=logos + "/acme.svg",
            primary_color="#7a1fa2",
            support_url="mailto:help@acme.example",
        )
    )
    with db.transaction(authserver) as session:
        make_user(authserver, session, ANN)
        make_user(authserver, session, BOB)
        registered = make_client(
            session,
            name="Notes",
            grant_types=["authorization_code", "refresh_token"],
            public=True,
            first_party=False,
            redirect_uris=[rp + "/callback"],
            post_logout_redirect_uris=[rp + "/"],
            scopes=["openid", "email", "offline_access"],
            policy_uri="https://notes.example/privacy",
            tos_uri="https://notes.example/terms",
        )
        client_id = registered.client.client_id
        # A logo over http on 127.0.0.1: registration takes https only, and this test has no
        # certificate; the page and its image policy treat it as they would an https one.
        session.execute(
            update(Client)
            .where(Client.client_id == client_id)
            .values(logo_uri=logos + "/notes.svg")
        )
    try:
        with (
            serving(_logo_server(), logo_listener),
            serving(authserver, server_listener),
            serving(create_rp_app(issuer, client_id, rp), rp_listener),
        ):
            yield Site(issuer, rp, authserver)
    finally:
        stop_outbox_sender(authserver)
        db.state(authserver).engine.dispose()
        truncate_all(engine)


@pytest.fixture
def tab(browser: Browser) -> Iterator[Page]:  # noqa: F811
    context = browser.new_context(viewport={"width": 1024, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


def _image_loaded(tab: Page, selector: str) -> bool:
    loaded: bool = tab.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0")
    return loaded


def test_pages_through_a_sign_in_to_the_example_app(
    site: Site,
    tab: Page,
    browser: Browser,  # noqa: F811
) -> None:
    tab.goto(site.rp + "/")
    expect(tab.locator("#sign-in")).to_be_visible()
    shoot(tab, "rp-welcome")
    tab.click("#sign-in")

    # The branded sign-in page.
    tab.wait_for_url(site.issuer + "/login?**")
    expect(tab).to_have_title("Sign in · Acme ID")
    expect(tab.locator("header.brand .product")).to_have_text("Acme ID")
    assert _image_loaded(tab, "header.brand img")
    expect(tab.locator("footer.brand a")).to_have_text("Need help? Contact support")
    shoot(tab, "login")

    # A wrong password: the focus is on the password field, which the error describes.
    tab.fill("#email", ANN)
    tab.fill("#password", "not the password")
    tab.click("button[type=submit]")
    expect(tab.locator("#sign_in_error")).to_have_text("Email or password is incorrect.")
    # The browser applies autofocus once the page has loaded: wait for it, not for the clock.
    expect(tab.locator("#password")).to_be_focused()
    expect(tab.locator("#password")).to_have_attribute("aria-invalid", "true")
    expect(tab.locator("#password")).to_have_attribute("aria-describedby", "sign_in_error")
    expect(tab.locator("#email")).to_have_value(ANN)
    shoot(tab, "login-wrong-password")

    tab.fill("#password", PASSWORD)
    tab.click("button[type=submit]")

    # The consent page: the app's logo, links and what it may do in words.
    expect(tab.locator("h1")).to_have_text("Allow Notes to access your account?")
    assert _image_loaded(tab, ".app-identity img")
    expect(tab.get_by_role("link", name="privacy policy")).to_have_attribute(
        "href", "https://notes.example/privacy"
    )
    expect(tab.get_by_role("link", name="terms of service")).to_be_visible()
    expect(tab.locator("ul.scopes")).to_contain_text("Stay signed in")
    expect(tab.locator("ul.scopes")).to_contain_text("See your email address")
    shoot(tab, "consent")
    consent_url = tab.url

    # Not Ann: switch account, sign in as Bob, and the same request asks Bob.
    tab.click("#switch-account")
    tab.wait_for_url(site.issuer + "/login?**")
    tab.fill("#email", BOB)
    tab.fill("#password", PASSWORD)
    tab.click("button[type=submit]")
    expect(tab.locator("p.signed-in-as")).to_have_text(f"Signed in as {BOB}.")
    assert tab.url == consent_url
    tab.click("button[name=decision][value=allow]")

    # The example app, signed in as Bob.
    tab.wait_for_url(site.rp + "/")
    expect(tab.locator("#who")).to_have_text(f"Signed in as {BOB}")
    expect(tab.locator("h1")).to_have_text("Hello, bob")
    shoot(tab, "rp-home")

    # Bob signs in on a second browser too; the account page names both, this one first.
    other = browser.new_context(
        user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
    )
    phone = other.new_page()
    phone.goto(site.issuer + "/login")
    phone.fill("#email", BOB)
    phone.fill("#password", PASSWORD)
    phone.click("button[type=submit]")
    phone.wait_for_url(site.issuer + "/account")
    other.close()

    tab.goto(site.issuer + "/account")
    first = tab.locator("ul.devices > li").first
    expect(first).to_contain_text("Chrome on Linux")
    expect(first).to_contain_text("This device")
    expect(tab.locator("ul.devices")).to_contain_text("Safari on iPhone")
    expect(tab.locator("ul.devices")).to_contain_text("Notes")
    expect(tab.locator("ul.devices")).not_to_contain_text("Mozilla/5.0")
    everywhere_else = tab.get_by_role("button", name="Sign out everywhere else")
    expect(everywhere_else).to_have_class("secondary")
    shoot(tab, "account")

    # An address where nothing is: a page, in the same look, with a way forward.
    answer = tab.goto(site.issuer + "/no/such/page")
    assert answer is not None
    assert answer.status == 404
    expect(tab.locator("h1")).to_have_text("Page not found")
    expect(tab.get_by_role("link", name="Go to your account")).to_be_visible()
    shoot(tab, "not-found")

    # A sign-in link that is not valid.
    tab.goto(site.issuer + "/oauth/authorize?response_type=code&client_id=nobody")
    expect(tab.locator("h1")).to_have_text("This sign-in link is not valid")
    shoot(tab, "bad-sign-in-link")

    # Back at the app, a callback it did not start: a page that starts again.
    tab.goto(site.rp + "/callback?state=forged&code=x")
    expect(tab.locator("h1")).to_have_text("This sign-in has expired")
    shoot(tab, "rp-sign-in-expired")
    tab.click("#start-again")
    # Bob is still signed in at authserver and allowed Notes before: straight back.
    tab.wait_for_url(site.rp + "/")
    expect(tab.locator("#who")).to_have_text(f"Signed in as {BOB}")

    tab.click("#sign-out")
    tab.wait_for_url(site.rp + "/")
    expect(tab.locator("#sign-in")).to_be_visible()
