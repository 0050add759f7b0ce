"""What each scope lets an app do, in the words the consent page uses (OpenID Connect Core
§5.4 and §11 for the standard ones)."""

from __future__ import annotations

from dataclasses import dataclass

from flask_babel import gettext, lazy_gettext
from flask_babel.speaklater import LazyString

from authserver.own_apis import ACCOUNT_API


@dataclass(frozen=True)
class ScopeWords:
    scope: str
    summary: str
    detail: str


# Translated when the consent page is rendered (http/locale.py); ``%(email)s`` is the user's.
_WORDS: dict[str, tuple[LazyString, LazyString]] = {
    "openid": (
        lazy_gettext("Know who you are"),
        lazy_gettext("Sign you in with your account and recognise you next time."),
    ),
    "profile": (
        lazy_gettext("See your basic profile"),
        lazy_gettext("When your account details last changed."),
    ),
    "email": (
        lazy_gettext("See your email address"),
        lazy_gettext("%(email)s, and whether you confirmed it."),
    ),
    # OpenID Connect Core §11: a refresh token that works while the user is away.
    "offline_access": (
        lazy_gettext("Stay signed in"),
        lazy_gettext(
            "Keep access while you are not using it, until you sign out or remove it from "
            "your account page."
        ),
    ),
    ACCOUNT_API.scope: (
        lazy_gettext("Manage your account"),
        lazy_gettext("See where you are signed in and sign devices out."),
    ),
}


def describe_scopes(scopes: list[str], email: str) -> list[ScopeWords]:
    """The scopes asked for, in plain words; one this server has no words for is named as
    it is (an API's own scope), so the user still sees everything asked for."""
    described = []
    for scope in scopes:
        if scope in _WORDS:
            summary, detail = _WORDS[scope]
            described.append(ScopeWords(scope, str(summary), str(detail) % {"email": email}))
        else:
            described.append(
                ScopeWords(
                    scope,
                    gettext("Other access"),
                    gettext("The app's own “%(scope)s” access.", scope=scope),
                )
            )
    return described
