"""What each scope lets an app do, in the words the consent page uses (OpenID Connect Core
§5.4 and §11 for the standard ones)."""

from __future__ import annotations

from dataclasses import dataclass

from authserver.own_apis import ACCOUNT_API


@dataclass(frozen=True)
class ScopeWords:
    scope: str
    summary: str
    detail: str


_WORDS = {
    "openid": ("Know who you are", "Sign you in with your account and recognise you next time."),
    "profile": ("See your basic profile", "When your account details last changed."),
    "email": ("See your email address", "{email}, and whether you confirmed it."),
    # OpenID Connect Core §11: a refresh token that works while the user is away.
    "offline_access": (
        "Stay signed in",
        "Keep access while you are not using it, until you sign out or remove it from your "
        "account page.",
    ),
    ACCOUNT_API.scope: (
        "Manage your account",
        "See where you are signed in and sign devices out.",
    ),
}


def describe_scopes(scopes: list[str], email: str) -> list[ScopeWords]:
    """The scopes asked for, in plain words; one this server has no words for is named as
    it is (an API's own scope), so the user still sees everything asked for."""
    described = []
    for scope in scopes:
        if scope in _WORDS:
            summary, detail = _WORDS[scope]
            described.append(ScopeWords(scope, summary, detail.format(email=email)))
        else:
            described.append(ScopeWords(scope, "Other access", f"The app's own “{scope}” access."))
    return described
