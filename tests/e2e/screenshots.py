"""Every page the end-to-end tests reach, looked at the way people see it and checked the way
assistive technology reads it: in the light and the dark colour scheme and on a 390 px wide
phone, each one photographed into the run's artefacts and checked with axe-core against WCAG
2.2 A and AA (and axe's best practices: landmarks, heading order), and at 320 px wide it must
not scroll sideways (1.4.10 Reflow).

axe-core comes from the npm registry (``make axe``, which ``make test`` runs) into
``test-tools/``; ``AUTHSERVER_TEST_AXE_JS`` names another copy. Without it the checks are
skipped with a message, unless ``AUTHSERVER_TEST_REQUIRE_BROWSER=1`` (CI) makes that an error.
The screenshots go to ``AUTHSERVER_TEST_ARTIFACTS`` (default ``test-artifacts/`` in the
repository, git-ignored), one folder per flow; nothing reads them, they are there to be looked
at (docs/testing.md).
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

REPOSITORY = Path(__file__).resolve().parents[2]
PHONE = {"width": 390, "height": 844}
# WCAG 2.2 1.4.10 (Reflow): at 320 CSS px nothing may need scrolling sideways.
NARROWEST = {"width": 320, "height": 640}
# What axe checks: WCAG 2.0, 2.1 and 2.2 at levels A and AA, and its best practices.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]
REQUIRE_BROWSER = os.environ.get("AUTHSERVER_TEST_REQUIRE_BROWSER") == "1"


def artifacts() -> Path:
    """Where the run's screenshots go."""
    return Path(os.environ.get("AUTHSERVER_TEST_ARTIFACTS") or REPOSITORY / "test-artifacts")


@cache
def axe_source() -> str | None:
    """axe.min.js, or None when it was never fetched (outside CI only)."""
    named = os.environ.get("AUTHSERVER_TEST_AXE_JS")
    found = [Path(named)] if named else sorted(REPOSITORY.glob("test-tools/axe-core-*/axe.min.js"))
    if found and found[-1].is_file():
        return found[-1].read_text(encoding="utf-8")
    where = named or "test-tools/axe-core-*/axe.min.js"
    if REQUIRE_BROWSER:
        pytest.fail(f"AUTHSERVER_TEST_REQUIRE_BROWSER=1 but axe-core is missing at {where}")
    return None


def violations(tab: Page, skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """What axe-core finds wrong with the page as it is now shown; ``skip`` names rules that
    cannot apply to it (each caller says why)."""
    source = axe_source()
    assert source is not None
    # Through DevTools rather than a <script> tag: the pages' CSP rightly refuses inline code.
    if not tab.evaluate("() => typeof window.axe === 'object'"):
        tab.evaluate(source)
    found: list[dict[str, Any]] = tab.evaluate(
        """([tags, skip]) => axe.run(document, {
                runOnly: {type: "tag", values: tags}, resultTypes: ["violations"],
                rules: Object.fromEntries(skip.map(id => [id, {enabled: false}]))})
            .then(results => results.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map(n => ({target: n.target, summary: n.failureSummary})),
            })))""",
        [AXE_TAGS, list(skip)],
    )
    return found


def wider_than_the_window(tab: Page) -> list[str]:
    """The elements that stick out past the window's right edge (none when the page reflows)."""
    found: list[str] = tab.evaluate(
        """() => {
            const width = document.documentElement.clientWidth;
            if (document.documentElement.scrollWidth <= width) return [];
            return [...document.body.querySelectorAll("*")]
                .filter(e => e.getBoundingClientRect().right > width + 0.5)
                .map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "")
                    + (e.className && typeof e.className === "string"
                        ? "." + e.className.trim().split(/\\s+/).join(".") : ""));
        }"""
    )
    return found


def _described(failing: dict[str, list[dict[str, Any]]]) -> str:
    return json.dumps(failing, indent=2)


def shoot(tab: Page, folder: str, name: str, skip: tuple[str, ...] = ()) -> None:
    """The page as it is, in light, dark and on a 390 px wide phone: photographed into
    ``artifacts()/folder`` and checked by axe-core in each (less the rules in ``skip``), which
    must find nothing."""
    target = artifacts() / folder
    target.mkdir(parents=True, exist_ok=True)
    size = tab.viewport_size
    found: dict[str, list[dict[str, Any]]] = {}
    check = axe_source() is not None
    try:
        for scheme, viewport in (("light", None), ("dark", None), ("390", PHONE)):
            tab.emulate_media(color_scheme="dark" if scheme == "dark" else "light")
            if viewport is not None:
                tab.set_viewport_size(viewport)
            tab.screenshot(path=str(target / f"{name}-{scheme}.png"), full_page=True)
            if check:
                found[scheme] = violations(tab, skip)
        tab.set_viewport_size(NARROWEST)
        sticking_out = wider_than_the_window(tab)
    finally:
        tab.emulate_media(color_scheme="light")
        if size is not None:
            tab.set_viewport_size(size)
    assert not sticking_out, f"{tab.url} ({folder}/{name}) is wider than 320 px: {sticking_out}"
    failing = {scheme: problems for scheme, problems in found.items() if problems}
    assert not failing, (
        f"axe-core on {tab.url} ({folder}/{name}): {_described(list(failing.items()))}"
    )
    if not check:
        print(f"axe-core is missing (make axe): {folder}/{name} photographed, not checked")
