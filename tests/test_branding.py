"""Branding from settings (AUTHSERVER_PRODUCT_NAME, _LOGO_URL, _PRIMARY_COLOR, _SUPPORT_URL)
and the folder of template overrides (AUTHSERVER_TEMPLATE_DIR): what every page shows, the
stylesheet it links, the images its policy lets in, and the refusals of unsafe values."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy.engine import Engine

from authserver.app import create_app
from authserver.config import Config, ConfigError
from authserver.db import db
from authserver.http.branding import branding_css, contrast_ratio
from authserver.runtime import runtime
from tests.conftest import stop_outbox_sender, truncate_all


def _problems(**settings: str) -> list[str]:
    environ = {f"AUTHSERVER_{name.upper()}": value for name, value in settings.items()}
    with pytest.raises(ConfigError) as caught:
        Config.from_env(environ)
    return caught.value.problems


@pytest.fixture
def branded(engine: Engine, config: Config, tmp_path: Path) -> Iterator[Flask]:
    overrides = tmp_path / "overrides"
    (overrides / "mail").mkdir(parents=True)
    (overrides / "logged_out.html").write_text(
        '{% extends "base.html" %}{% block content %}<h1>See you soon at Acme</h1>{% endblock %}'
    )
    (overrides / "mail" / "password_reset.subject.txt").write_text("Acme: your new password\n")
    application = create_app(
        replace(
            config,
            product_name="Acme ID",
            logo_url="https://cdn.acme.example/logo.svg",
            primary_color="#7a1fa2",
            support_url="https://help.acme.example/",
            template_dir=str(overrides),
        )
    )
    yield application
    stop_outbox_sender(application)
    db.state(application).engine.dispose()
    # Its requests committed (signing keys, sessions): leave the worker's database empty.
    truncate_all(engine)


def test_every_page_shows_the_product_name_logo_and_support_link(branded: Flask) -> None:
    page = branded.test_client().get("/login")
    html = page.get_data(as_text=True)
    assert "<title>Sign in · Acme ID</title>" in html
    assert '<img src="https://cdn.acme.example/logo.svg"' in html
    assert '<span class="product">Acme ID</span>' in html
    assert '<a href="https://help.acme.example/">Need help? Contact support</a>' in html
    assert '<link rel="stylesheet" href="/branding.css">' in html


def test_the_logo_origin_alone_is_added_to_the_pages_image_policy(branded: Flask) -> None:
    policy = branded.test_client().get("/login").headers["Content-Security-Policy"]
    assert "img-src 'self' https://cdn.acme.example;" in policy


def test_without_branding_pages_name_authserver_and_link_no_extra_stylesheet(
    app: Flask,
) -> None:
    page = app.test_client().get("/login")
    html = page.get_data(as_text=True)
    assert "<title>Sign in · authserver</title>" in html
    assert "branding.css" not in html
    assert "<img" not in html
    assert "Contact support" not in html
    assert "img-src 'self';" in page.headers["Content-Security-Policy"]


def test_the_primary_colour_paints_buttons_with_a_label_that_reads_on_it(
    branded: Flask,
) -> None:
    answer = branded.test_client().get("/branding.css")
    assert answer.mimetype == "text/css"
    css = answer.get_data(as_text=True)
    assert ":root { --accent: #7a1fa2; }" in css
    # Dark purple: white labels, and the colour for links on the light canvas.
    assert "button:not(.secondary):not(.danger):not(.link) { color: #fff; }" in css
    assert "--accent-text: #7a1fa2" in css


def test_a_light_primary_colour_gets_black_labels_and_leaves_link_colour_alone() -> None:
    css = branding_css("#ffd400")
    assert "button:not(.secondary):not(.danger):not(.link) { color: #000; }" in css
    assert "--accent-text" not in css
    assert contrast_ratio("#ffffff", "#000000") == pytest.approx(21)


def test_a_page_template_in_the_override_folder_replaces_the_packages(branded: Flask) -> None:
    html = branded.test_client().get("/logged-out").get_data(as_text=True)
    assert "<h1>See you soon at Acme</h1>" in html
    # The override extends the package's base: the branding is still there.
    assert '<span class="product">Acme ID</span>' in html
    # Templates the folder lacks are the package's.
    login = branded.test_client().get("/login").get_data(as_text=True)
    assert re.search(r"<h1>Sign in</h1>", login)


def test_a_mail_template_in_the_override_folder_replaces_the_packages(branded: Flask) -> None:
    with branded.app_context():
        composer = runtime(branded).composer
    overridden = composer.render("password_reset", {"link": "https://x.example/r", "minutes": 30})
    assert overridden.subject == "Acme: your new password"


@pytest.mark.parametrize(
    ("setting", "value", "problem"),
    [
        ("logo_url", "javascript:alert(1)", "AUTHSERVER_LOGO_URL must be an https URL"),
        ("logo_url", "//evil.example/logo.png", "AUTHSERVER_LOGO_URL must be an https URL"),
        ("logo_url", "https://a.example/x'; script-src *", "AUTHSERVER_LOGO_URL must be"),
        ("logo_url", "http://cdn.example/logo.png", "AUTHSERVER_LOGO_URL must be an https URL"),
        ("primary_color", "red; } body { display:none", "AUTHSERVER_PRIMARY_COLOR must be"),
        ("primary_color", "#12345", "AUTHSERVER_PRIMARY_COLOR must be #rgb or #rrggbb"),
        ("support_url", "javascript:alert(1)", "AUTHSERVER_SUPPORT_URL must be an https"),
        ("support_url", 'https://a.example/"><script>', "AUTHSERVER_SUPPORT_URL must be"),
        ("template_dir", "/nonexistent/authserver-templates", "AUTHSERVER_TEMPLATE_DIR names no"),
    ],
)
def test_unsafe_or_wrong_branding_settings_are_refused_at_start(
    setting: str, value: str, problem: str
) -> None:
    assert any(p.startswith(problem) for p in _problems(**{setting: value}))


def test_branding_settings_that_are_fine_are_accepted(tmp_path: Path) -> None:
    config = Config.from_env(
        {
            "AUTHSERVER_LOGO_URL": "/static/logo.svg",
            "AUTHSERVER_PRIMARY_COLOR": "#0a7",
            "AUTHSERVER_SUPPORT_URL": "mailto:help@example.com",
            "AUTHSERVER_TEMPLATE_DIR": str(tmp_path),
            "AUTHSERVER_INSTANCE_DIR": str(tmp_path / "instance"),
        }
    )
    assert (config.logo_url, config.primary_color) == ("/static/logo.svg", "#0a7")
