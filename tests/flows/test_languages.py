"""The language of the pages (http/locale.py): an authorization request's ``ui_locales``
(OpenID Connect Core 1.0 §3.1.2.1) carried through the sign-in, the second factor and the
consent page, then the browser's Accept-Language, then English. Tags without a catalog are
passed over, never refused; API errors stay in English."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from authserver.runtime import runtime
from tests.browser_helpers import (
    authorize_url,
    csrf_token_of,
    pkce_pair,
    query_of,
    sign_in,
    web_client,
)
from tests.flows.test_admin_console import browser, make_admin, sign_in_to_console
from tests.flows.test_pushed_authorization import authorize_with, pushed_uri
from tests.flows.test_two_step import code_at, set_up_app
from tests.helpers import PASSWORD, Clock, make_user

ENGLISH = {"Accept-Language": "en-GB,en;q=0.9"}
FRENCH = {"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"}


def html_lang(page: TestResponse) -> str:
    match = re.search(r'<html lang="([^"]+)">', page.get_data(as_text=True))
    assert match, "page has no <html lang>"
    return match.group(1)


def follow_to_sign_in(http: FlaskClient, url: str, headers: dict[str, str]) -> TestResponse:
    """The authorization request's redirect to the sign-in page, and that page."""
    answer = http.get(url, headers=headers)
    assert answer.status_code == 303, answer.get_data(as_text=True)
    assert answer.headers["Location"].startswith("/login?next=")
    page = http.get(answer.headers["Location"], headers=headers)
    assert page.status_code == 200
    return page


def next_of(page: TestResponse) -> str:
    """The authorization request's URL a page's form carries back (``next``)."""
    found = re.search(r'name="next" value="([^"]+)"', page.get_data(as_text=True))
    assert found, "page has no next field"
    return found[1].replace("&amp;", "&")


def sign_in_from(http: FlaskClient, page: TestResponse, headers: dict[str, str]) -> TestResponse:
    """The sign-in form of ``page`` posted with Ann's password; where it sends the browser."""
    answer = http.post(
        "/login",
        data={
            "email": "ann@example.com",
            "password": PASSWORD,
            "csrf_token": csrf_token_of(page),
            "next": next_of(page),
        },
        headers=headers,
    )
    assert answer.status_code == 303, answer.get_data(as_text=True)
    return answer


def test_accept_language_french_gets_the_sign_in_page_in_french(client: FlaskClient) -> None:
    page = client.get("/login", headers=FRENCH)

    html = page.get_data(as_text=True)
    assert html_lang(page) == "fr"
    assert "<h1>Se connecter</h1>" in html
    assert "Mot de passe oublié\u00a0?" in html
    assert page.headers["Content-Language"] == "fr"
    assert "Accept-Language" in page.headers["Vary"]


def test_without_accept_language_the_page_is_in_english(client: FlaskClient) -> None:
    page = client.get("/login")

    assert html_lang(page) == "en"
    assert "<h1>Sign in</h1>" in page.get_data(as_text=True)
    assert page.headers["Content-Language"] == "en"
    assert "Accept-Language" in page.headers["Vary"]


@pytest.mark.parametrize(
    "accept_language", ["de-DE,de;q=0.9", "*", "xx;q=abc", "fr;q=0", ";;,,", "e" * 300]
)
def test_a_language_without_catalog_or_a_broken_header_falls_back_to_english(
    client: FlaskClient, accept_language: str
) -> None:
    page = client.get("/login", headers={"Accept-Language": accept_language})

    assert page.status_code == 200
    assert html_lang(page) == "en"
    assert "<h1>Sign in</h1>" in page.get_data(as_text=True)


def test_ui_locales_french_wins_over_an_english_browser_through_sign_in_and_consent(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    rp = web_client(session)
    _, challenge = pkce_pair()
    url = authorize_url(rp.client.client_id, challenge, ui_locales="fr")

    sign_in_page = follow_to_sign_in(client, url, ENGLISH)
    assert html_lang(sign_in_page) == "fr"
    assert "<h1>Se connecter</h1>" in sign_in_page.get_data(as_text=True)
    # The browser's header did not choose this page's language: nothing to vary on.
    assert "Accept-Language" not in sign_in_page.headers.get("Vary", "")

    back = sign_in_from(client, sign_in_page, ENGLISH)
    consent = client.get(back.headers["Location"], headers=ENGLISH)

    html = consent.get_data(as_text=True)
    assert consent.status_code == 200
    assert html_lang(consent) == "fr"
    assert "Autoriser Photo app à accéder à votre compte\u00a0?" in html
    assert "<strong>Rester connecté</strong>" in html
    assert "ann@example.com, et si vous l\u2019avez confirmée." in html
    assert ">Autoriser</button>" in html
    assert consent.headers["Content-Language"] == "fr"


def test_a_wrong_password_on_a_french_request_is_refused_in_french(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    rp = web_client(session)
    _, challenge = pkce_pair()
    page = follow_to_sign_in(
        client, authorize_url(rp.client.client_id, challenge, ui_locales="fr"), ENGLISH
    )
    refused = client.post(
        "/login",
        data={
            "email": "ann@example.com",
            "password": "not the password",
            "csrf_token": csrf_token_of(page),
            "next": next_of(page),
        },
        headers=ENGLISH,
    )

    assert refused.status_code == 401
    assert "L\u2019e-mail ou le mot de passe est incorrect." in refused.get_data(as_text=True)


@pytest.mark.parametrize(
    ("ui_locales", "headers", "expected"),
    [
        ("de fr", ENGLISH, "fr"),
        ("fr-CA en", ENGLISH, "fr"),
        ("en fr", FRENCH, "en"),
        # None has a catalog: the browser's language, then English; never an error.
        ("de ja", FRENCH, "fr"),
        ("de ja", ENGLISH, "en"),
        ("x-klingon <script>", {}, "en"),
        ("", FRENCH, "fr"),
    ],
)
def test_the_first_ui_locale_with_a_catalog_wins_and_the_others_are_passed_over(
    app: Flask,
    session: Session,
    client: FlaskClient,
    ui_locales: str,
    headers: dict[str, str],
    expected: str,
) -> None:
    rp = web_client(session)
    _, challenge = pkce_pair()
    url = authorize_url(rp.client.client_id, challenge, ui_locales=ui_locales)

    page = follow_to_sign_in(client, url, headers)

    assert html_lang(page) == expected


def test_the_error_page_of_a_french_request_is_in_french_and_its_description_in_english(
    session: Session, client: FlaskClient
) -> None:
    _, challenge = pkce_pair()
    url = authorize_url("no-such-client", challenge, ui_locales="fr")

    page = client.get(url, headers=ENGLISH)

    html = page.get_data(as_text=True)
    assert page.status_code == 400
    assert html_lang(page) == "fr"
    assert "Ce lien de connexion n\u2019est pas valide" in html


def test_a_pushed_request_carries_its_ui_locales_through_sign_in_and_consent(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    rp = web_client(session)
    _, challenge = pkce_pair()
    request_uri = pushed_uri(client, rp, challenge, ui_locales="fr")
    url = authorize_with(rp.client.client_id, request_uri)

    sign_in_page = follow_to_sign_in(client, url, ENGLISH)
    assert html_lang(sign_in_page) == "fr"
    back = sign_in_from(client, sign_in_page, ENGLISH)
    consent = client.get(back.headers["Location"], headers=ENGLISH)

    assert consent.status_code == 200
    assert html_lang(consent) == "fr"
    assert "<strong>Rester connecté</strong>" in consent.get_data(as_text=True)


def test_ui_locales_in_the_url_of_a_pushed_request_does_not_override_the_pushed_one(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    """RFC 9126 §4: only the pushed parameters count, the language too."""
    make_user(app, session)
    assert sign_in(client).status_code == 303
    rp = web_client(session)
    _, challenge = pkce_pair()
    request_uri = pushed_uri(client, rp, challenge, ui_locales="en")

    consent = client.get(authorize_with(rp.client.client_id, request_uri, ui_locales="fr"))

    assert consent.status_code == 200
    assert html_lang(consent) == "en"
    # "Switch account" comes back through the sign-in page in the pushed language too.
    switch = re.search(r'name="next" value="([^"]+)"', consent.get_data(as_text=True))
    assert switch
    back_to = query_of(switch[1].replace("&amp;", "&"))
    assert back_to["ui_locales"] == "en"
    assert back_to["request_uri"] == request_uri


def test_the_second_factor_page_of_a_french_request_is_in_french(
    app: Flask, session: Session, client: FlaskClient, clock: Clock
) -> None:
    make_user(app, session)
    assert sign_in(client).status_code == 303
    key, _ = set_up_app(client, clock)
    client.post("/logout", data={"csrf_token": csrf_token_of(client.get("/account"))})
    rp = web_client(session)
    _, challenge = pkce_pair()
    url = authorize_url(rp.client.client_id, challenge, ui_locales="fr")

    sign_in_page = follow_to_sign_in(client, url, ENGLISH)
    to_second_step = sign_in_from(client, sign_in_page, ENGLISH)
    second_step = client.get(to_second_step.headers["Location"], headers=ENGLISH)

    html = second_step.get_data(as_text=True)
    assert second_step.status_code == 200
    assert html_lang(second_step) == "fr"
    assert "<h1>Connexion en deux étapes</h1>" in html

    wrong = client.post(
        "/login/second-factor",
        data={
            "csrf_token": csrf_token_of(second_step),
            "code": "000000" if code_at(key, clock.now) != "000000" else "111111",
            "next": next_of(second_step),
        },
        headers=ENGLISH,
    )
    assert wrong.status_code == 400
    assert "Ce code n\u2019est pas le bon." in wrong.get_data(as_text=True)


def test_the_account_page_follows_the_browser(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    assert sign_in(client).status_code == 303

    page = client.get("/account", headers=FRENCH)

    html = page.get_data(as_text=True)
    assert html_lang(page) == "fr"
    assert "<h1>Où vous êtes connecté</h1>" in html
    assert "Connecté en tant que <strong>ann@example.com</strong>." in html


def test_the_operator_console_stays_in_english(app: Flask, session: Session, clock: Clock) -> None:
    console = browser(app)
    sign_in_to_console(console, make_admin(app, session, clock), clock)

    page = console.get("/admin", headers=FRENCH)

    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert html_lang(page) == "en"
    assert ">Users</a>" in html
    assert "Se connecter" not in html
    assert "Accept-Language" not in page.headers.get("Vary", "")


def test_api_errors_stay_in_english_and_do_not_vary(client: FlaskClient) -> None:
    answer = client.post("/oauth/token", data={"grant_type": "nonsense"}, headers=FRENCH)

    assert answer.status_code in (400, 401)
    assert answer.is_json
    assert "Content-Language" not in answer.headers
    assert "Accept-Language" not in answer.headers.get("Vary", "")


def test_the_metadata_lists_the_languages_of_the_pages(client: FlaskClient) -> None:
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        metadata = client.get(path).get_json()

        assert metadata["ui_locales_supported"] == ["en", "fr"]


def test_the_redirect_back_to_the_client_is_unchanged_by_the_language(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    make_user(app, session)
    assert sign_in(client).status_code == 303
    rp = web_client(session)
    _, challenge = pkce_pair()
    url = authorize_url(rp.client.client_id, challenge, ui_locales="fr")
    consent = client.get(url, headers=ENGLISH)

    answer = client.post(url, data={"csrf_token": csrf_token_of(consent), "decision": "allow"})

    assert answer.status_code == 302
    assert set(query_of(answer.headers["Location"])) == {"code", "state", "iss"}
    assert runtime(app).config.issuer == query_of(answer.headers["Location"])["iss"]
