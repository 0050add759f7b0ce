"""Errors as pages for browsers, JSON for API clients, chosen by ``Accept`` (RFC 9110
§12.5.1) in one place (authserver/errors.py): a browser on a page, or on an address where
nothing is, gets an HTML page with a way forward; the OAuth endpoints keep their RFC 6749 §5.2
JSON and the admin API its problem details whatever the request accepts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy.engine import Engine

from authserver.app import create_app
from authserver.config import Config
from authserver.db import db
from tests.conftest import stop_outbox_sender, truncate_all

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
API_CLIENT = {"Accept": "application/json"}
ANYTHING = {"Accept": "*/*"}  # curl's


def _boom() -> str:
    raise RuntimeError("secret internals: password=hunter2")


@pytest.fixture
def failing_app(app: Flask) -> Flask:
    """The app with a page that fails: what a bug in a page's view would do."""
    app.add_url_rule("/account/boom", "boom", _boom)
    return app


def test_a_browser_gets_a_not_found_page_with_a_way_forward(app: Flask) -> None:
    answer = app.test_client().get("/no/such/page", headers=BROWSER)

    assert answer.status_code == 404
    assert answer.mimetype == "text/html"
    html = answer.get_data(as_text=True)
    assert "<h1>Page not found</h1>" in html
    assert '<a class="button" href="/account">Go to your account</a>' in html
    assert answer.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]


@pytest.mark.parametrize("accept", [API_CLIENT, ANYTHING, {}], ids=["json", "any", "none"])
def test_an_api_client_gets_json_for_an_unknown_address(app: Flask, accept: dict[str, str]) -> None:
    answer = app.test_client().get("/no/such/page", headers=accept)

    assert answer.status_code == 404
    assert answer.mimetype == "application/json"
    assert answer.json is not None
    assert answer.json["error"] == "not_found"


def test_a_failing_page_shows_a_browser_a_page_that_tells_nothing_of_the_failure(
    failing_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    answer = failing_app.test_client().get("/account/boom", headers=BROWSER)

    assert answer.status_code == 500
    assert answer.mimetype == "text/html"
    html = answer.get_data(as_text=True)
    assert "<h1>Something went wrong</h1>" in html
    assert "hunter2" not in html
    assert "RuntimeError" not in html
    assert "Traceback" not in html
    # The traceback went to the server's log.
    assert "RuntimeError" in caplog.text


def test_a_failing_page_answers_an_api_client_in_json(failing_app: Flask) -> None:
    answer = failing_app.test_client().get("/account/boom", headers=API_CLIENT)

    assert answer.status_code == 500
    assert answer.json == {"error": "server_error"}


def test_a_browser_on_the_token_endpoint_still_gets_oauth_json(app: Flask) -> None:
    http = app.test_client()

    refused = http.post("/oauth/token", data={"grant_type": "password"}, headers=BROWSER)
    wrong_method = http.get("/oauth/token", headers=BROWSER)

    assert refused.mimetype == "application/json"
    assert refused.json is not None
    assert refused.json["error"] in ("invalid_client", "invalid_request", "unsupported_grant_type")
    assert wrong_method.status_code == 405
    assert wrong_method.mimetype == "application/json"
    assert wrong_method.json is not None
    assert wrong_method.json["error"] == "method_not_allowed"


def test_a_browser_on_the_admin_api_still_gets_problem_details(app: Flask) -> None:
    answer = app.test_client().get("/admin/v1/no-such-thing", headers=BROWSER)

    assert answer.status_code == 404
    assert answer.mimetype == "application/problem+json"


def test_a_browser_on_the_account_api_still_gets_json(app: Flask) -> None:
    answer = app.test_client().get("/account/sessions", headers=BROWSER)

    assert answer.status_code == 401
    assert answer.mimetype == "application/json"


def test_a_page_asked_for_with_the_wrong_method_is_a_page(app: Flask) -> None:
    answer = app.test_client().get("/account/delete", headers=BROWSER)

    assert answer.status_code == 405
    assert answer.mimetype == "text/html"
    assert "Allow" in answer.headers
    assert "cannot be opened that way" in answer.get_data(as_text=True)


def test_a_bad_sign_in_link_says_how_to_go_on(app: Flask) -> None:
    answer = app.test_client().get(
        "/oauth/authorize?response_type=code&client_id=nobody", headers=BROWSER
    )

    assert answer.status_code == 400
    html = answer.get_data(as_text=True)
    assert "This sign-in link is not valid" in html
    assert "Go back to the app you came from" in html
    assert '<a href="/account">Go to your account</a>' in html


@pytest.fixture
def app_with_broken_error_page(engine: Engine, config: Config, tmp_path: Path) -> Iterator[Flask]:
    (tmp_path / "error_page.html").write_text("{{ nothing.at.all }}")
    application = create_app(replace(config, template_dir=str(tmp_path)))
    yield application
    stop_outbox_sender(application)
    db.state(application).engine.dispose()
    # Its requests committed (signing keys, sessions): leave the worker's database empty.
    truncate_all(engine)


def test_an_error_page_that_cannot_be_rendered_falls_back_to_json(
    app_with_broken_error_page: Flask,
) -> None:
    answer = app_with_broken_error_page.test_client().get("/no/such/page", headers=BROWSER)

    assert answer.status_code == 404
    assert answer.mimetype == "application/json"
