"""The pages in French, in a real headless Chromium: an English browser sent by an app that
asks for ``ui_locales=fr`` signs in and allows the app in French, and a French browser gets
the sign-in page in French on its own (Accept-Language). Each page is photographed in light,
dark and 390 px wide into the test artefacts' ``languages/`` and checked there by axe-core,
``<html lang>`` included (``screenshots.shoot``): French is longer than English, and must not
overflow."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import Engine

from authserver import create_app
from authserver.config import Config
from authserver.db import db
from tests.browser_helpers import pkce_pair
from tests.conftest import listening_socket, serving, stop_outbox_sender, truncate_all, url_of
from tests.e2e import screenshots
from tests.e2e.test_browser_flow import TIMEOUT_MS, browser  # noqa: F401 (fixture)
from tests.helpers import PASSWORD, make_client, make_user

ANN = "ann@example.com"
SHOTS = "languages"  # the folder of its screenshots in the test artefacts


@dataclass
class Site:
    issuer: str
    client_id: str


@pytest.fixture
def site(engine: Engine, config: Config) -> Iterator[Site]:
    listener = listening_socket()
    issuer = url_of(listener)
    authserver = create_app(replace(config, issuer=issuer, product_name="Acme ID"))
    with db.transaction(authserver) as session:
        make_user(authserver, session, ANN)
        registered = make_client(
            session,
            name="Carnet de notes",
            grant_types=["authorization_code", "refresh_token"],
            public=True,
            first_party=False,
            redirect_uris=[issuer + "/callback"],
            scopes=["openid", "email", "profile", "offline_access"],
            policy_uri="https://notes.example/privacy",
            tos_uri="https://notes.example/terms",
        )
    try:
        with serving(authserver, listener):
            yield Site(issuer, registered.client.client_id)
    finally:
        stop_outbox_sender(authserver)
        db.state(authserver).engine.dispose()
        truncate_all(engine)


def _tab(browser: Browser, locale: str) -> Page:  # noqa: F811
    context = browser.new_context(viewport={"width": 1024, "height": 800}, locale=locale)
    context.set_default_timeout(TIMEOUT_MS)
    return context.new_page()


def test_an_app_asking_for_french_gets_sign_in_and_consent_in_french(
    site: Site,
    browser: Browser,  # noqa: F811
) -> None:
    tab = _tab(browser, "en-US")
    _, challenge = pkce_pair()
    query = {
        "response_type": "code",
        "client_id": site.client_id,
        "redirect_uri": site.issuer + "/callback",
        "scope": "openid email profile offline_access",
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "ui_locales": "de fr",
    }
    tab.goto(site.issuer + "/oauth/authorize?" + urlencode(query))

    tab.wait_for_url(site.issuer + "/login?**")
    expect(tab.locator("html")).to_have_attribute("lang", "fr")
    expect(tab).to_have_title("Se connecter · Acme ID")
    expect(tab.locator("h1")).to_have_text("Se connecter")
    shoot = screenshots.shoot
    shoot(tab, SHOTS, "login-fr")

    tab.fill("#email", ANN)
    tab.fill("#password", "not the password")
    tab.click("form.stack button[type=submit]")
    expect(tab.locator("#sign_in_error")).to_have_text(
        "L\u2019e-mail ou le mot de passe est incorrect."
    )
    shoot(tab, SHOTS, "login-wrong-password-fr")

    tab.fill("#password", PASSWORD)
    tab.click("form.stack button[type=submit]")

    expect(tab.locator("h1")).to_have_text(
        "Autoriser Carnet de notes à accéder à votre compte\u00a0?"
    )
    expect(tab.locator("html")).to_have_attribute("lang", "fr")
    expect(tab.locator("ul.scopes")).to_contain_text("Rester connecté")
    expect(tab.locator("ul.scopes")).to_contain_text("Voir votre adresse e-mail")
    expect(tab.get_by_role("link", name="politique de confidentialité")).to_be_visible()
    shoot(tab, SHOTS, "consent-fr")

    tab.get_by_role("button", name="Autoriser").click()
    tab.wait_for_url(site.issuer + "/callback?**")
    assert "code=" in tab.url
    tab.context.close()


def test_a_french_browser_gets_the_sign_in_page_in_french(
    site: Site,
    browser: Browser,  # noqa: F811
) -> None:
    tab = _tab(browser, "fr-FR")

    tab.goto(site.issuer + "/login")

    expect(tab.locator("html")).to_have_attribute("lang", "fr")
    expect(tab.get_by_role("link", name="Mot de passe oublié\u00a0?")).to_be_visible()
    tab.goto(site.issuer + "/password/forgot")
    expect(tab.locator("h1")).to_have_text("Mot de passe oublié\u00a0?")
    screenshots.shoot(tab, SHOTS, "password-forgot-fr")
    tab.context.close()
