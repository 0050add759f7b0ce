"""Client registration rules, secrets at rest, and the per-client scope and audience rules."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.db import utcnow
from authserver.errors import InvalidScope, InvalidTarget, NotFound, ValidationError
from authserver.models import Client
from authserver.services import clients as clients_module
from authserver.services.audit import recent_events
from authserver.services.clients import (
    RegisteredClient,
    create_client,
    find_client,
    new_client_id,
    resolve_audience,
    resolve_scope,
    set_served_audiences,
)

DEFAULT_AUDIENCE = "https://default.example.test"
ISSUER = "https://login.example.test"
ACCOUNT_AUDIENCE = ISSUER + "/account"


def audience_for(client: Client, resources: list[str], *, for_user: bool = True) -> str:
    return resolve_audience(
        client, resources, default_audience=DEFAULT_AUDIENCE, issuer=ISSUER, for_user=for_user
    )


def register(session: Session, **overrides: Any) -> RegisteredClient:
    options: dict[str, Any] = {
        "name": "Test app",
        "grant_types": ["client_credentials", "refresh_token"],
        "scopes": ["read", "write"],
        "audiences": ["https://api.example.test", "https://other.example.test"],
    }
    options.update(overrides)
    return create_client(session, **options)


def _secret(registered: RegisteredClient) -> str:
    assert registered.client_secret is not None
    return registered.client_secret


def _row_bytes(session: Session, client: Client) -> bytes:
    """Every stored column of the client's row, as the database returns it."""
    session.expire_all()
    row = session.execute(select(Client.__table__).where(Client.id == client.id)).one()
    parts = [v if isinstance(v, bytes) else json.dumps(v, default=str).encode() for v in row]
    return b"\x00".join(parts)


# -- secrets ---------------------------------------------------------------------------------


def test_confidential_client_gets_a_256_bit_url_safe_secret(session: Session) -> None:
    secret = _secret(register(session))

    assert len(secret) == 43
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32


def test_each_client_gets_a_different_secret_and_client_id(session: Session) -> None:
    first = register(session)
    second = register(session)

    assert first.client_secret != second.client_secret
    assert first.client.client_id != second.client.client_id


def test_only_the_sha256_digest_of_the_secret_is_stored(session: Session) -> None:
    registered = register(session)
    secret = _secret(registered)

    stored = _row_bytes(session, registered.client)

    assert secret.encode() not in stored
    assert base64.urlsafe_b64decode(secret + "=") not in stored
    assert registered.client.secret_digest == hashlib.sha256(secret.encode()).digest()


def test_check_client_secret_accepts_the_issued_secret(session: Session) -> None:
    registered = register(session)
    client = find_client(session, registered.client.client_id)

    assert client is not None
    assert client.check_client_secret(_secret(registered), utcnow()) is True


def test_check_client_secret_refuses_a_wrong_secret(session: Session) -> None:
    registered = register(session)
    other = register(session)

    assert registered.client.check_client_secret(_secret(other), utcnow()) is False
    assert registered.client.check_client_secret("", utcnow()) is False


def test_public_client_has_no_secret_and_accepts_none(session: Session) -> None:
    registered = register(
        session,
        public=True,
        grant_types=["authorization_code", "refresh_token"],
        redirect_uris=["https://app.example.test/callback"],
    )

    assert registered.client_secret is None
    assert registered.client.secret_digest is None
    assert registered.client.check_client_secret("", utcnow()) is False


# -- registration refusals -------------------------------------------------------------------


def test_unknown_grant_type_is_refused(session: Session) -> None:
    with pytest.raises(ValidationError, match="unsupported grant type 'implicit'"):
        register(session, grant_types=["implicit"])


def test_public_client_with_client_credentials_is_refused(session: Session) -> None:
    with pytest.raises(ValidationError, match="public client cannot use client_credentials"):
        register(session, public=True, grant_types=["client_credentials"])


def test_password_grant_for_a_third_party_client_is_refused(session: Session) -> None:
    with pytest.raises(ValidationError, match="only a first-party client may use the password"):
        register(session, grant_types=["password"], first_party=False)


def test_password_grant_for_a_first_party_client_is_accepted(session: Session) -> None:
    registered = register(session, grant_types=["password"], first_party=True)

    assert registered.client.grant_types == ["password"]


def test_authorization_code_without_redirect_uri_is_refused(session: Session) -> None:
    with pytest.raises(ValidationError, match="authorization_code needs at least one redirect"):
        register(session, grant_types=["authorization_code"])


def test_redirect_uri_with_fragment_is_refused(session: Session) -> None:
    with pytest.raises(ValidationError, match="without fragment"):
        register(
            session,
            grant_types=["authorization_code"],
            redirect_uris=["https://app.example.test/callback#done"],
        )


def test_http_redirect_uri_on_a_non_loopback_host_is_refused(session: Session) -> None:
    with pytest.raises(ValidationError, match="must use https"):
        register(
            session,
            grant_types=["authorization_code"],
            redirect_uris=["http://app.example.test/callback"],
        )


@pytest.mark.parametrize(
    "uri",
    ["http://127.0.0.1:8765/callback", "http://[::1]:8765/callback", "http://localhost/cb"],
)
def test_http_redirect_uri_on_loopback_is_accepted(session: Session, uri: str) -> None:
    registered = register(session, grant_types=["authorization_code"], redirect_uris=[uri])

    assert registered.client.redirect_uris == [uri]


@pytest.mark.parametrize("scope", ["read write", 'say"hi', "back\\slash", ""])
def test_bad_scope_token_is_refused(session: Session, scope: str) -> None:
    with pytest.raises(ValidationError, match="not a valid scope token"):
        register(session, scopes=["read", scope])


@pytest.mark.parametrize("audience", ["api.example.test", "/relative/path", ""])
def test_audience_that_is_not_an_absolute_uri_is_refused(session: Session, audience: str) -> None:
    with pytest.raises(ValidationError, match="audience must be an absolute URI"):
        register(session, audiences=[audience])


def test_audience_with_fragment_is_refused(session: Session) -> None:
    with pytest.raises(ValidationError, match="audience must be an absolute URI"):
        register(session, audiences=["https://api.example.test/#v1"])


def test_audience_with_an_empty_fragment_is_refused(session: Session) -> None:
    with pytest.raises(ValidationError, match="audience must be an absolute URI"):
        register(session, audiences=["https://api.example.test/#"])


@pytest.mark.parametrize(
    "uri", ["javascript:alert(1)", "data:text/html,<script>x</script>", "file:///etc/passwd"]
)
def test_redirect_uri_with_a_script_or_local_scheme_is_refused(session: Session, uri: str) -> None:
    with pytest.raises(ValidationError, match="is not allowed"):
        register(session, redirect_uris=[uri], grant_types=["authorization_code"])


def test_redirect_uri_with_user_information_is_refused(session: Session) -> None:
    with pytest.raises(ValidationError, match="user information"):
        register(
            session,
            redirect_uris=["https://app.example.test@evil.example/cb"],
            grant_types=["authorization_code"],
        )


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example.test/cb\x00",
        "https://app.example.test/c b",
        "https://app.example.test/cb\n",
        "https://app.example.test/\u202ebc",  # RIGHT-TO-LEFT OVERRIDE: reads as another path
        "https://app.example\u200b.test/cb",  # ZERO WIDTH SPACE
    ],
)
def test_redirect_uri_with_a_space_control_or_invisible_character_is_refused(
    session: Session, uri: str
) -> None:
    with pytest.raises(ValidationError, match="spaces, control or invisible characters"):
        register(session, redirect_uris=[uri], grant_types=["authorization_code"])


def test_refused_registration_stores_nothing(session: Session) -> None:
    with pytest.raises(ValidationError):
        register(session, grant_types=["implicit"])

    assert session.scalars(select(Client)).all() == []


# -- scope -----------------------------------------------------------------------------------


def test_omitted_scope_resolves_to_every_registered_scope(session: Session) -> None:
    client = register(session).client

    assert resolve_scope(client, None) == "read write"
    assert resolve_scope(client, "  ") == "read write"


def test_scope_subset_is_granted_as_requested(session: Session) -> None:
    client = register(session).client

    assert resolve_scope(client, "write") == "write"
    assert resolve_scope(client, "write read write") == "write read"


def test_scope_outside_the_registration_is_invalid_scope(session: Session) -> None:
    client = register(session).client

    with pytest.raises(InvalidScope):
        resolve_scope(client, "read admin")


# -- audience (RFC 8707) ---------------------------------------------------------------------


def test_registered_resource_becomes_the_audience(session: Session) -> None:
    client = register(session).client

    audience = audience_for(client, ["https://other.example.test"])

    assert audience == "https://other.example.test"


def test_unregistered_resource_is_invalid_target(session: Session) -> None:
    client = register(session).client

    with pytest.raises(InvalidTarget):
        audience_for(client, ["https://evil.example.test"])


def test_two_resources_are_invalid_target(session: Session) -> None:
    client = register(session).client

    with pytest.raises(InvalidTarget):
        audience_for(client, ["https://api.example.test", "https://other.example.test"])


def test_no_resource_resolves_to_the_first_registered_audience(session: Session) -> None:
    client = register(session).client

    assert audience_for(client, []) == "https://api.example.test"


def test_no_resource_and_no_registered_audience_resolves_to_the_default(
    session: Session,
) -> None:
    client = register(session, audiences=[]).client

    assert audience_for(client, []) == DEFAULT_AUDIENCE


def test_no_resource_no_registered_audience_and_no_default_resolves_to_the_issuer(
    session: Session,
) -> None:
    client = register(session, audiences=[]).client

    assert resolve_audience(client, [], default_audience="", issuer=ISSUER) == ISSUER


# -- the server's own APIs (own_apis.py) -------------------------------------------------------


def test_a_first_party_client_may_ask_for_the_account_api_by_name(session: Session) -> None:
    client = register(session, first_party=True).client

    assert audience_for(client, [ACCOUNT_AUDIENCE]) == ACCOUNT_AUDIENCE


def test_a_third_party_client_may_not_ask_for_the_account_api(session: Session) -> None:
    client = register(session).client

    with pytest.raises(InvalidTarget):
        audience_for(client, [ACCOUNT_AUDIENCE])


def test_a_third_party_client_registered_for_the_account_api_may_ask_for_it(
    session: Session,
) -> None:
    client = register(session, audiences=["https://api.example.test", ACCOUNT_AUDIENCE]).client

    assert audience_for(client, [ACCOUNT_AUDIENCE]) == ACCOUNT_AUDIENCE


def test_the_account_api_is_never_reached_without_a_user(session: Session) -> None:
    client = register(session, first_party=True, audiences=[ACCOUNT_AUDIENCE]).client

    with pytest.raises(InvalidTarget):
        audience_for(client, [ACCOUNT_AUDIENCE], for_user=False)


def test_an_own_api_registered_first_is_never_the_default_audience(session: Session) -> None:
    first_own = register(session, audiences=[ACCOUNT_AUDIENCE, "https://api.example.test"]).client
    only_own = register(session, audiences=[ACCOUNT_AUDIENCE]).client

    assert audience_for(first_own, []) == "https://api.example.test"
    assert audience_for(only_own, []) == DEFAULT_AUDIENCE


def test_a_first_party_client_may_ask_for_the_account_scope_without_registering_it(
    session: Session,
) -> None:
    client = register(session, first_party=True).client

    assert resolve_scope(client, "account") == "account"


def test_the_account_scope_is_never_part_of_a_default_grant(session: Session) -> None:
    client = register(session, first_party=True).client

    assert "account" not in resolve_scope(client, None).split()


def test_a_third_party_client_may_not_ask_for_the_account_scope_unless_registered(
    session: Session,
) -> None:
    unregistered = register(session).client
    registered = register(session, scopes=["read", "account"]).client

    with pytest.raises(InvalidScope):
        resolve_scope(unregistered, "account")
    assert resolve_scope(registered, "account") == "account"


@pytest.mark.parametrize("scope", ["openid", "email", "profile", "offline_access", "account"])
def test_a_client_acting_for_itself_is_never_granted_a_user_scope(
    session: Session, scope: str
) -> None:
    client = register(session, first_party=True, scopes=["read", scope]).client

    with pytest.raises(InvalidScope):
        resolve_scope(client, f"read {scope}", for_user=False)
    assert resolve_scope(client, None, for_user=False) == "read"


# -- resource servers (served audiences) -------------------------------------------------------


def test_a_client_registered_as_a_resource_server_keeps_its_served_audiences(
    session: Session,
) -> None:
    client = register(session, served_audiences=["https://api.example.test"]).client

    assert client.served_audiences == ["https://api.example.test"]


def test_a_served_audience_must_be_an_absolute_uri(session: Session) -> None:
    with pytest.raises(ValidationError):
        register(session, served_audiences=["orders"])


def test_set_served_audiences_replaces_the_list_and_is_audited(session: Session) -> None:
    client = register(session, served_audiences=["https://api.example.test"]).client

    set_served_audiences(session, client.client_id, ["https://billing.example.test"], utcnow())

    assert find_client(session, client.client_id, fresh=True).served_audiences == [  # type: ignore[union-attr]
        "https://billing.example.test"
    ]
    (event,) = recent_events(session, event_type="client_updated")
    assert event.client_id == client.client_id
    assert event.details["served_audiences"] == ["https://billing.example.test"]


def test_set_served_audiences_of_an_unknown_client_is_not_found(session: Session) -> None:
    with pytest.raises(NotFound):
        set_served_audiences(session, "no-such-client", [], utcnow())


def test_a_new_client_id_never_begins_with_a_dash_which_the_command_line_reads_as_an_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn = iter(["-starts-with-a-dash-xyz", "AfterTheDash-xyz"])
    monkeypatch.setattr(clients_module.secrets, "token_urlsafe", lambda _n: next(drawn))

    assert new_client_id() == "AfterTheDash-xyz"
