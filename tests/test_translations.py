"""The catalogs (authserver/translations, `make translations`): every string marked for
translation in the pages and views is in them, every language translates all of it with the
same placeholders, and the committed .mo files are what the .po files compile to."""

from __future__ import annotations

import re
from io import BytesIO
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po

from authserver.http.locale import DEFAULT_LOCALE, SUPPORTED_LOCALES

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "authserver" / "translations"
LANGUAGES = [locale for locale in SUPPORTED_LOCALES if locale != DEFAULT_LOCALE]
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


def _catalog(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as file:
        return read_po(file, locale=locale)


def _ids(catalog: Catalog) -> set[str | tuple[str, ...]]:
    return {message.id for message in catalog if message.id}


def _extracted() -> set[str | tuple[str, ...]]:
    """What `make translations` would extract now (babel.cfg, the same keywords)."""
    with (ROOT / "babel.cfg").open() as config:
        method_map, options_map = parse_mapping_cfg(config)
    keywords = {**DEFAULT_KEYWORDS, "lazy_gettext": None}
    found: set[str | tuple[str, ...]] = set()
    for _, _, message, _, _ in extract_from_dir(
        str(ROOT), method_map, options_map, keywords=keywords
    ):
        found.add(message if isinstance(message, str) else tuple(message))
    return found


def _messages(catalog: Catalog) -> dict[object, object]:
    """A compiled catalog's id -> translation (a plural's as tuples)."""

    def frozen(value: object) -> object:
        return tuple(value) if isinstance(value, list | tuple) else value

    return {frozen(m.id): frozen(m.string) for m in catalog if m.id}


def _placeholders(text: str) -> list[str]:
    return sorted(PLACEHOLDER.findall(text))


def _translations(message: Message) -> list[tuple[str, str]]:
    """(English, translation) pairs of a message; a plural's every form against its plural."""
    if isinstance(message.id, str):
        return [(message.id, str(message.string))]
    singular, plural = message.id[0], message.id[1]
    return [(plural if form else singular, str(text)) for form, text in enumerate(message.string)]


def test_the_template_holds_every_string_marked_for_translation() -> None:
    template = _ids(_catalog(TRANSLATIONS / "messages.pot"))

    extracted = _extracted()

    assert extracted - template == set(), "run `make translations`: new strings"
    assert template - extracted == set(), "run `make translations`: strings no longer used"


@pytest.mark.parametrize("locale", LANGUAGES)
def test_each_language_has_every_string_translated_and_none_fuzzy(locale: str) -> None:
    catalog = _catalog(TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po", locale)
    template = _ids(_catalog(TRANSLATIONS / "messages.pot"))

    assert _ids(catalog) == template, "run `make translations`"
    untranslated = [
        message.id
        for message in catalog
        if message.id and not all(text for _, text in _translations(message))
    ]
    fuzzy = [message.id for message in catalog if message.id and message.fuzzy]
    assert untranslated == []
    assert fuzzy == [], "check these translations and drop their fuzzy mark"


@pytest.mark.parametrize("locale", LANGUAGES)
def test_each_translation_has_the_placeholders_of_its_english(locale: str) -> None:
    catalog = _catalog(TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po", locale)

    different = [
        (english, text)
        for message in catalog
        if message.id
        for english, text in _translations(message)
        if _placeholders(english) != _placeholders(text)
    ]

    assert different == []
    # Babel's own check: python-format strings a translation breaks.
    assert [(message.id, errors) for message, errors in catalog.check()] == []


@pytest.mark.parametrize("locale", LANGUAGES)
def test_the_committed_mo_file_is_the_compiled_po_file(locale: str) -> None:
    folder = TRANSLATIONS / locale / "LC_MESSAGES"
    compiled = BytesIO()
    write_mo(compiled, _catalog(folder / "messages.po", locale))
    compiled.seek(0)

    with (folder / "messages.mo").open("rb") as file:
        committed = read_mo(file)

    assert _messages(committed) == _messages(read_mo(compiled)), (
        "run `make translations` (pybabel compile) and commit the .mo file"
    )


def test_a_placeholder_mismatch_is_caught() -> None:
    """The placeholder check can fail: a translation that renames one is reported."""
    assert _placeholders("Signed in as %(email)s.") != _placeholders("Connecté %(mail)s.")
    assert _placeholders("%(num)d left") == _placeholders("il en reste %(num)d")
