"""Screenshots of pages for people to look at (light, dark, phone width), taken by the
end-to-end tests as they walk through a flow."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page

PHONE = {"width": 390, "height": 844}


def shoot(tab: Page, folder: Path, name: str) -> None:
    """The page as it is, in light, dark and on a 390 px wide phone, into ``folder``."""
    folder.mkdir(exist_ok=True)
    size = tab.viewport_size
    tab.screenshot(path=str(folder / f"{name}-light.png"), full_page=True)
    tab.emulate_media(color_scheme="dark")
    tab.screenshot(path=str(folder / f"{name}-dark.png"), full_page=True)
    tab.emulate_media(color_scheme="light")
    tab.set_viewport_size(PHONE)
    tab.screenshot(path=str(folder / f"{name}-390.png"), full_page=True)
    if size is not None:
        tab.set_viewport_size(size)
