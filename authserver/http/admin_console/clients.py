"""The console's client pages: every client, and one client's registration, with what
``clients update`` may change (redirect URIs, post-logout redirect URIs, scopes, lifetimes,
whether its users need a second factor) and disabling or enabling it.

An edit carries the version of the registration its form showed (a hidden field); the
change is made only if the registration is still that version, checked under the row's
lock, so two operators never overwrite each other's edits unseen (the admin API's ETag and
If-Match, RFC 9110 §13.1.1, for a form). The version is that of everything the page shows
of the registration, but not of how many of its refresh families are live, which every
sign-in changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flask import Response, flash, render_template, request, url_for

from authserver.db import db
from authserver.errors import ValidationError
from authserver.http.admin_api.common import etag_of
from authserver.http.admin_console import bp
from authserver.http.web import see_other
from authserver.runtime import runtime
from authserver.services import clients as client_service
from authserver.services.revocations import longest_access_token_ttl

LIFETIMES = ("access_token_ttl", "refresh_idle_ttl", "refresh_absolute_ttl")
# The admin API's bounds on a list and on one of its strings.
MAX_LIST_ITEMS = 100
MAX_ITEM_LENGTH = 2000
MAX_SECONDS = 10**9


def _registration(client_id: str) -> dict[str, Any]:
    overview = client_service.client_overview(db.session, client_id, runtime().now())
    return client_service.registration_fields(overview)


def version_of(registration: dict[str, Any]) -> str:
    unchanging = {k: v for k, v in registration.items() if k != "live_refresh_families"}
    return etag_of(unchanging)


@dataclass
class ClientForm:
    """The edit form as typed: shown again, with an error beside each field it concerns,
    when the change is refused."""

    redirect_uris: str
    post_logout_redirect_uris: str
    scopes: str
    lifetimes: dict[str, str]
    require_second_factor: bool
    require_pushed_authorization_requests: bool
    dpop_bound_access_tokens: bool
    version: str
    errors: dict[str, str] = field(default_factory=dict)
    # A refusal that is no one field's (the registration changed meanwhile, ...).
    problem: str | None = None

    @classmethod
    def of(cls, registration: dict[str, Any]) -> ClientForm:
        return cls(
            redirect_uris="\n".join(registration["redirect_uris"]),
            post_logout_redirect_uris="\n".join(registration["post_logout_redirect_uris"]),
            scopes=" ".join(registration["scopes"]),
            lifetimes={
                name: "" if registration[name] is None else str(registration[name])
                for name in LIFETIMES
            },
            require_second_factor=bool(registration["require_second_factor"]),
            require_pushed_authorization_requests=bool(
                registration["require_pushed_authorization_requests"]
            ),
            dpop_bound_access_tokens=bool(registration["dpop_bound_access_tokens"]),
            version=version_of(registration),
        )

    @classmethod
    def posted(cls) -> ClientForm:
        form = request.form
        return cls(
            redirect_uris=form.get("redirect_uris", "")[: MAX_LIST_ITEMS * MAX_ITEM_LENGTH],
            post_logout_redirect_uris=form.get("post_logout_redirect_uris", "")[
                : MAX_LIST_ITEMS * MAX_ITEM_LENGTH
            ],
            scopes=form.get("scopes", "")[:MAX_ITEM_LENGTH],
            lifetimes={name: form.get(name, "").strip()[:20] for name in LIFETIMES},
            require_second_factor=form.get("require_second_factor") == "on",
            require_pushed_authorization_requests=(
                form.get("require_pushed_authorization_requests") == "on"
            ),
            dpop_bound_access_tokens=form.get("dpop_bound_access_tokens") == "on",
            version=form.get("version", "")[:64],
        )

    def _lines(self, name: str, text: str) -> list[str]:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) > MAX_LIST_ITEMS or any(len(line) > MAX_ITEM_LENGTH for line in lines):
            self.errors[name] = (
                f"At most {MAX_LIST_ITEMS} URIs of at most {MAX_ITEM_LENGTH} characters."
            )
        return lines

    def _seconds(self, name: str) -> int | None:
        raw = self.lifetimes[name]
        if raw == "":
            return None
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_SECONDS:
            self.errors[name] = "A whole number of seconds, or empty for the server-wide setting."
            return None
        return int(raw)

    def changes(self, grant_types: list[str]) -> dict[str, Any] | None:
        """The arguments of ``update_client``, each field checked by the rule that
        ``update_client`` applies to it, so a refusal is shown beside its field; None when
        a field is refused."""
        wanted: dict[str, Any] = {
            "redirect_uris": self._lines("redirect_uris", self.redirect_uris),
            "post_logout_redirect_uris": self._lines(
                "post_logout_redirect_uris", self.post_logout_redirect_uris
            ),
            "scopes": self.scopes.split(),
            "require_second_factor": self.require_second_factor,
            "require_pushed_authorization_requests": self.require_pushed_authorization_requests,
            "dpop_bound_access_tokens": self.dpop_bound_access_tokens,
        }
        for name in LIFETIMES:
            wanted[name] = self._seconds(name)

        def redirect_uris() -> None:
            client_service.checked_redirect_uris(wanted["redirect_uris"])
            client_service.check_redirect_uris_for_grants(grant_types, wanted["redirect_uris"])

        checks: dict[str, Callable[[], object]] = {
            "redirect_uris": redirect_uris,
            "post_logout_redirect_uris": lambda: client_service.checked_redirect_uris(
                wanted["post_logout_redirect_uris"]
            ),
            "scopes": lambda: client_service.checked_scopes(wanted["scopes"]),
        }
        for name, check in checks.items():
            if name in self.errors:
                continue
            try:
                check()
            except ValidationError as refused:
                self.errors[name] = _sentence(refused.description)
        return None if self.errors else wanted


def _sentence(text: str | None) -> str:
    text = text or "This is not allowed."
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _duration(seconds: int) -> str:
    """``seconds`` as the page says it: 600 s (10 minutes), 1209600 s (14 days)."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{seconds} s ({count} {unit}{'' if count == 1 else 's'})"
    return f"{seconds} s"


# How the "Saved" message names the fields ``update_client`` says changed.
FIELD_NAMES = {
    "redirect_uris": "redirect URIs",
    "post_logout_redirect_uris": "post-logout redirect URIs",
    "scopes": "scopes",
    "access_token_ttl": "access token lifetime",
    "refresh_idle_ttl": "refresh token idle lifetime",
    "refresh_absolute_ttl": "refresh token lifetime",
    "require_second_factor": "second factor",
    "require_pushed_authorization_requests": "pushed requests",
    "dpop_bound_access_tokens": "DPoP",
}


def _client_page(client_id: str, form: ClientForm | None = None) -> str:
    registration = _registration(client_id)
    config = runtime().config
    return render_template(
        "admin/client.html",
        client=registration,
        form=form or ClientForm.of(registration),
        server_lifetimes={name: _duration(getattr(config, name)) for name in LIFETIMES},
        cache_seconds=config.client_cache_seconds,
    )


@bp.get("/clients")
def clients_page() -> str:
    now = runtime().now()
    rows = [
        client_service.registration_fields(
            client_service.client_overview(db.session, client.client_id, now)
        )
        for client in client_service.list_clients(db.session)
    ]
    return render_template("admin/clients.html", clients=rows)


@bp.get("/clients/<client_id>")
def client_page(client_id: str) -> str:
    return _client_page(client_id)


@bp.post("/clients/<client_id>")
def update_client(client_id: str) -> Response | tuple[str, int]:
    """Save the edit form, if the registration is still the version it showed."""
    form = ClientForm.posted()
    client = client_service.lock_client(db.session, client_id)
    if form.version != version_of(_registration(client_id)):
        current = ClientForm.of(_registration(client_id))
        current.problem = (
            "Someone changed this client since you opened this page, so your change was not "
            "saved. The form now shows the client as it is: make your change again."
        )
        return _client_page(client_id, current), 409
    changes = form.changes(list(client.grant_types))
    if changes is None:
        return _client_page(client_id, form), 400
    try:
        changed = client_service.update_client(db.session, client_id, runtime().now(), **changes)
    except ValidationError as refused:
        form.problem = _sentence(refused.description)
        return _client_page(client_id, form), 400
    if changed:
        flash(f"Saved: {', '.join(FIELD_NAMES.get(name, name) for name in changed)}.", "status")
    else:
        flash("Nothing to save: the form was as the client is.", "status")
    return see_other(url_for(".client_page", client_id=client_id))


@bp.post("/clients/<client_id>/disable")
def disable_client(client_id: str) -> Response:
    """Refuse the client from now on: its refresh tokens are revoked, its access tokens
    recalled (``clients disable``)."""
    config = runtime().config
    if client_service.get_client(db.session, client_id).disabled:
        flash("The client is disabled already.", "error")
    else:
        families = client_service.disable_client(
            db.session,
            client_id,
            runtime().now(),
            stale_for=timedelta(seconds=config.client_cache_seconds),
            token_ttl=longest_access_token_ttl(db.session, config.access_token_ttl),
        )
        flash(
            f"The client is disabled; {families} refresh-token "
            f"famil{'y' if families == 1 else 'ies'} revoked.",
            "status",
        )
    return see_other(url_for(".client_page", client_id=client_id))


@bp.post("/clients/<client_id>/enable")
def enable_client(client_id: str) -> Response:
    try:
        client_service.enable_client(db.session, client_id, runtime().now())
    except ValidationError as refused:
        flash(_sentence(refused.description), "error")
    else:
        flash("The client is enabled.", "status")
    return see_other(url_for(".client_page", client_id=client_id))
