"""Devices and apps named in words people know, from the user agent a sign-in came with:
"Chrome on Android", "Safari on iPhone", "Photo app on Windows". The parsing is ua-parser's
(Browserscope's rules); a string it does not recognise is not shown raw, but as
"Unknown browser"."""

from __future__ import annotations

from ua_parser import parse

# ua-parser's names where people use others.
_BROWSER_WORDS = {
    "HeadlessChrome": "Chrome",
    "Chrome Mobile": "Chrome",
    "Chrome Mobile iOS": "Chrome",
    "Mobile Safari": "Safari",
    "Firefox Mobile": "Firefox",
    "Firefox iOS": "Firefox",
    "Edge Mobile": "Edge",
    "Samsung Internet": "Samsung Internet",
}
_SYSTEM_WORDS = {"Mac OS X": "macOS", "Chrome OS": "ChromeOS"}
# Devices worth naming instead of their system (a phone's model says more than "Android").
_NAMED_DEVICES = {"iPhone", "iPad"}
_UNKNOWN = {"Other", "Generic Smartphone", "Generic Feature Phone", "Generic Tablet", "Spider"}


def _known(name: str | None) -> str | None:
    return None if not name or name in _UNKNOWN else name


def where_from(user_agent: str | None) -> str | None:
    """The device part: "iPhone", "Android", "Windows", "macOS"; None when unknown."""
    if not user_agent:
        return None
    result = parse(user_agent[:1000])
    device = _known(result.device.family) if result.device else None
    if device in _NAMED_DEVICES:
        return device
    system = _known(result.os.family) if result.os else None
    if system is not None:
        return _SYSTEM_WORDS.get(system, system)
    return device


def browser_name(user_agent: str | None) -> str:
    """A browser session's name: "Firefox on Windows", "Safari on iPhone", "Unknown browser"."""
    if not user_agent:
        return "Unknown browser"
    result = parse(user_agent[:1000])
    family = _known(result.user_agent.family) if result.user_agent else None
    browser = _BROWSER_WORDS.get(family, family) if family else None
    place = where_from(user_agent)
    if browser and place:
        return f"{browser} on {place}"
    if browser:
        return browser
    if place:
        return f"A browser on {place}"
    return "Unknown browser"


def app_name(client_name: str, user_agent: str | None) -> str:
    """An app's sign-in: its registered name, and the device when its user agent says."""
    place = where_from(user_agent)
    return f"{client_name} on {place}" if place else client_name
