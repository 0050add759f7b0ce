"""The language of the end-user pages (Flask-Babel; catalogs in ``authserver/translations``).

Chosen per request, first match wins:

1. ``ui_locales`` of the authorization request the page belongs to (OpenID Connect Core 1.0
   §3.1.2.1: a space-separated list of BCP 47 tags, most preferred first). The request's
   own parameters on ``/oauth/authorize`` (a pushed request's included, which the authorize
   view hands over in ``g.ui_locales``); on the pages the flow passes through on the way
   back (sign-in, second factor, the switch of account), the authorization request's URL
   they carry in ``next``.
2. The browser's ``Accept-Language``.
3. English, the source language.

Tags this server has no catalog for are passed over silently, never refused (§3.1.2.1:
"an error SHOULD NOT result"). The operator console stays in English. OAuth and API error
bodies are for developers and stay in English (RFC 6749 §5.2: ``error_description``)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

from flask import Flask, Response, g, request
from flask_babel import Babel, get_locale

from authserver.oauth.metadata import AUTHORIZATION_PATH, UI_LOCALES_SUPPORTED

DEFAULT_LOCALE = "en"
SUPPORTED_LOCALES = UI_LOCALES_SUPPORTED
# Pages that stay in English whatever the browser asks: the operator console.
_ENGLISH_ONLY_BLUEPRINTS = frozenset({"admin_console"})

babel = Babel()


def first_supported(ui_locales: str | None) -> str | None:
    """The first tag of a ``ui_locales`` list that a catalog answers: exactly, or by its
    primary language ("fr-CA" is French). None when none is."""
    for tag in (ui_locales or "").split()[:20]:
        primary = tag.replace("_", "-").split("-", 1)[0].lower()
        if primary in SUPPORTED_LOCALES:
            return primary
    return None


def _ui_locales_of_url(url: str | None) -> str | None:
    """``ui_locales`` of an authorization request's URL (a sign-in page's ``next``)."""
    if not url or not url.startswith("/"):
        return None
    parts = urlsplit(url)
    if parts.path != AUTHORIZATION_PATH:
        return None
    for name, value in parse_qsl(parts.query):
        if name == "ui_locales":
            return value
    return None


def _asked_by_authorization_request() -> str | None:
    if "ui_locales" in g:
        return first_supported(g.ui_locales)
    if request.path == AUTHORIZATION_PATH:
        return first_supported(request.args.get("ui_locales"))
    return first_supported(_ui_locales_of_url(request.values.get("next")))


def select_locale() -> str:
    """Flask-Babel's locale selector: called once per request, at the first translation."""
    chosen = _choose_locale()
    g.page_locale = chosen
    return chosen


def _choose_locale() -> str:
    if request.blueprint in _ENGLISH_ONLY_BLUEPRINTS:
        return DEFAULT_LOCALE
    asked = _asked_by_authorization_request()
    if asked is not None:
        return asked
    # Only now did the browser's header decide (RFC 9110 §12.5.5: say so in Vary).
    g.language_negotiated = True
    best: str | None = request.accept_languages.best_match(SUPPORTED_LOCALES)
    return best or DEFAULT_LOCALE


def page_language() -> str:
    """The chosen language's tag, for ``<html lang>`` (and Content-Language)."""
    return str(get_locale() or DEFAULT_LOCALE)


def remember_ui_locales(ui_locales: str | None) -> None:
    """The authorization request's ``ui_locales`` as its parameters say, once they are known
    (a pushed request's are not in the URL): the pages of this request speak it."""
    g.ui_locales = ui_locales or ""


def with_ui_locales(path: str) -> str:
    """``path`` (this authorization request's URL, which the pages on the way carry in
    ``next``) showing the request's own ``ui_locales``. A pushed request's URL is only its
    request_uri, and only its pushed parameters count at the endpoint (RFC 9126 §4): the
    pushed ``ui_locales`` is added to the URL for the pages, and one the URL carried beside
    the request_uri is replaced. A plain request's URL already shows its own: unchanged."""
    if "ui_locales" not in g or (_ui_locales_of_url(path) or "") == g.ui_locales:
        return path
    parts = urlsplit(path)
    query = [
        (name, value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
        if name != "ui_locales"
    ]
    if g.ui_locales:
        query.append(("ui_locales", g.ui_locales))
    return parts._replace(query=urlencode(query)).geturl()


def _say_which_language(response: Response) -> Response:
    """A response whose words were translated says in which language, and that the
    browser's Accept-Language chose it when it did (a shared cache keeps one copy per
    language). A response nothing was translated for (JSON, the console) says nothing."""
    if g.get("language_negotiated"):
        response.vary.add("Accept-Language")
    if g.get("page_locale"):
        response.headers["Content-Language"] = g.page_locale
    return response


def init_locale(app: Flask) -> None:
    babel.init_app(app, default_locale=DEFAULT_LOCALE, locale_selector=select_locale)
    app.jinja_env.globals["page_language"] = page_language
    app.after_request(_say_which_language)
