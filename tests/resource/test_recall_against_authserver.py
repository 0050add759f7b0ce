"""Recalls that reach every verifier: a withdrawn signing key and a disabled client, from the
real server's CLI-level services through its feed, introspection and own APIs, to the kit."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import select

from authserver.db import db, utcnow
from authserver.models import AuditEvent, KeyState, Revocation, SigningKey
from authserver.resource import IntrospectionClient, TokenRevoked, TokenVerifier
from authserver.runtime import runtime
from authserver.services import keys as key_service
from authserver.services.clients import RegisteredClient, disable_client
from authserver.services.revocations import longest_access_token_ttl
from tests.conftest import LiveServer
from tests.helpers import DEFAULT_AUDIENCE, PASSWORD, make_client, make_resource_server, make_user

HOUR = 3600.0


@dataclass(frozen=True)
class Parties:
    app: RegisteredClient  # signs users in and holds its own client_credentials tokens
    resource_server: RegisteredClient  # serves DEFAULT_AUDIENCE: feed and introspection


@pytest.fixture
def parties(live_server: LiveServer) -> Parties:
    with db.transaction(live_server.app) as session:
        make_user(live_server.app, session)
        app = make_client(session, grant_types=["password", "refresh_token", "client_credentials"])
        resource_server = make_resource_server(session)
    return Parties(app, resource_server)


def _auth(registered: RegisteredClient) -> tuple[str, str]:
    assert registered.client_secret is not None
    return registered.client.client_id, registered.client_secret


def _token(live_server: LiveServer, registered: RegisteredClient, **form: str) -> str:
    response = requests.post(
        live_server.url + "/oauth/token", data=form, auth=_auth(registered), timeout=10
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def user_token(live_server: LiveServer, parties: Parties) -> str:
    return _token(
        live_server,
        parties.app,
        grant_type="password",
        username="ann@example.com",
        password=PASSWORD,
        scope="read",
    )


def client_token(live_server: LiveServer, parties: Parties) -> str:
    return _token(live_server, parties.app, grant_type="client_credentials")


def kid_of(token: str) -> str:
    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


@pytest.fixture
def verifier(live_server: LiveServer, parties: Parties) -> Iterator[TokenVerifier]:
    """A resource server's kit that polls only when told (its next timed poll is an hour
    away), so "after one poll" means exactly one."""
    with TokenVerifier(
        live_server.url,
        DEFAULT_AUDIENCE,
        revocation_feed=True,
        client_id=parties.resource_server.client.client_id,
        client_secret=parties.resource_server.client_secret,
        poll_interval=HOUR,
    ) as kit:
        yield kit


def introspect(live_server: LiveServer, parties: Parties, token: str) -> dict[str, Any]:
    rs = parties.resource_server
    assert rs.client_secret is not None
    return IntrospectionClient(live_server.url, rs.client.client_id, rs.client_secret).introspect(
        token
    )


def withdraw(live_server: LiveServer, kid: str) -> key_service.Withdrawal:
    rt = runtime(live_server.app)
    with db.transaction(live_server.app) as session:
        return key_service.withdraw_signing_key(
            session,
            rt.key_cipher,
            rt.config.signing_alg,
            kid,
            utcnow(),
            stale_for=timedelta(seconds=rt.config.key_refresh_interval),
            token_ttl=longest_access_token_ttl(session, rt.config.access_token_ttl),
        )


def published_kids(live_server: LiveServer) -> set[str]:
    response = requests.get(live_server.url + "/.well-known/jwks.json", timeout=10)
    assert response.status_code == 200
    return {key["kid"] for key in response.json()["keys"]}


def feed_entries(live_server: LiveServer, parties: Parties) -> list[dict[str, Any]]:
    response = requests.get(
        live_server.url + "/oauth/revocations", auth=_auth(parties.resource_server), timeout=10
    )
    assert response.status_code == 200, response.text
    return list(response.json()["entries"])


# -- a withdrawn key ---------------------------------------------------------------------------


def test_withdrawn_key_is_refused_by_a_warm_kit_after_one_poll(
    live_server: LiveServer, parties: Parties, verifier: TokenVerifier
) -> None:
    token = user_token(live_server, parties)
    assert verifier.verify(token).subject  # the kit's JWKS cache holds the key from here on
    kid = kid_of(token)

    withdraw(live_server, kid)
    assert verifier.verify(token).subject  # nothing polled yet: the kit cannot know
    assert verifier.poll_revocations() is True

    with pytest.raises(TokenRevoked, match="signing key was withdrawn"):
        verifier.verify(token)
    state = verifier.revocation_state
    assert state is not None
    assert kid in state.revoked_kids


def test_withdrawn_key_is_inactive_at_introspection_and_userinfo_at_once(
    live_server: LiveServer, parties: Parties
) -> None:
    token = user_token(live_server, parties)
    assert introspect(live_server, parties, token)["active"] is True

    withdraw(live_server, kid_of(token))

    # The server process still holds the key in its key ring (its refresh interval has not
    # passed): the answer comes from the revocation entry, read with the token's status.
    assert kid_of(token) in runtime(live_server.app).keys.snapshot().by_kid
    assert introspect(live_server, parties, token) == {"active": False}
    userinfo = requests.get(
        live_server.url + "/oauth/userinfo",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert userinfo.status_code == 401


def test_withdrawing_the_current_key_replaces_it_and_it_leaves_the_jwks(
    live_server: LiveServer, parties: Parties
) -> None:
    old = user_token(live_server, parties)
    old_kid = kid_of(old)

    withdrawal = withdraw(live_server, old_kid)
    runtime(live_server.app).keys.refresh()  # what every process does within its interval

    assert withdrawal.replacement is not None
    assert published_kids(live_server) == {withdrawal.replacement.kid}
    fresh = user_token(live_server, parties)
    assert kid_of(fresh) == withdrawal.replacement.kid
    assert introspect(live_server, parties, fresh)["active"] is True
    assert introspect(live_server, parties, old) == {"active": False}
    entries = [e for e in feed_entries(live_server, parties) if e["type"] == "kid"]
    assert [e["value"] for e in entries] == [old_kid]
    with db.transaction(live_server.app) as session:
        audited = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "key_withdrawn")
        ).one()
    assert audited.details == {"kid": old_kid, "state": "current"}  # what it was when withdrawn


def test_withdrawing_a_retired_key_keeps_the_current_one(
    live_server: LiveServer, parties: Parties
) -> None:
    rt = runtime(live_server.app)
    signed_by_retired = user_token(live_server, parties)
    with db.transaction(live_server.app) as session:
        current = key_service.create_signing_key(
            session, rt.key_cipher, rt.config.signing_alg, utcnow()
        )
    rt.keys.refresh()
    signed_by_current = user_token(live_server, parties)
    assert kid_of(signed_by_current) == current.kid

    withdrawal = withdraw(live_server, kid_of(signed_by_retired))
    rt.keys.refresh()

    assert withdrawal.replacement is None
    assert published_kids(live_server) == {current.kid}
    assert introspect(live_server, parties, signed_by_retired) == {"active": False}
    assert introspect(live_server, parties, signed_by_current)["active"] is True


def test_a_withdrawn_next_key_never_becomes_current(
    live_server: LiveServer, parties: Parties
) -> None:
    rt = runtime(live_server.app)
    now = utcnow()
    with db.transaction(live_server.app) as session:
        pending = key_service.add_next_signing_key(
            session, rt.key_cipher, rt.config.signing_alg, now
        )
    withdraw(live_server, pending.kid)

    schedule = key_service.KeySchedule(
        publish_delay=timedelta(seconds=1), retired_for=timedelta(hours=1)
    )
    with db.transaction(live_server.app) as session:
        # Long past the time it was due to take over.
        key_service.maintain_signing_keys(
            session, rt.key_cipher, rt.config.signing_alg, now + timedelta(days=1), schedule
        )
        state = session.scalar(select(SigningKey.state).where(SigningKey.kid == pending.kid))
    rt.keys.refresh()

    assert state == KeyState.WITHDRAWN
    assert pending.kid not in published_kids(live_server)
    assert kid_of(user_token(live_server, parties)) != pending.kid


def test_emergency_rotation_discards_a_pending_next_key(
    live_server: LiveServer, parties: Parties
) -> None:
    rt = runtime(live_server.app)
    now = utcnow()
    with db.transaction(live_server.app) as session:
        pending = key_service.add_next_signing_key(
            session, rt.key_cipher, rt.config.signing_alg, now
        )
        emergency = key_service.create_signing_key(
            session, rt.key_cipher, rt.config.signing_alg, now
        )
    schedule = key_service.KeySchedule(
        publish_delay=timedelta(seconds=1), retired_for=timedelta(hours=1)
    )
    with db.transaction(live_server.app) as session:
        key_service.maintain_signing_keys(
            session, rt.key_cipher, rt.config.signing_alg, now + timedelta(minutes=5), schedule
        )
        rows = session.execute(select(SigningKey.kid, SigningKey.state)).all()
        states: dict[str, KeyState] = {row.kid: row.state for row in rows}
    rt.keys.refresh()

    assert states[pending.kid] == KeyState.REMOVED
    assert states[emergency.kid] == KeyState.CURRENT
    assert pending.kid not in published_kids(live_server)
    assert kid_of(user_token(live_server, parties)) == emergency.kid


def test_a_key_cannot_be_withdrawn_twice_or_unknown(live_server: LiveServer) -> None:
    kid = runtime(live_server.app).keys.refresh().signing
    assert kid is not None
    withdraw(live_server, kid.kid)

    with pytest.raises(key_service.KeyAlreadyGone):
        withdraw(live_server, kid.kid)
    with pytest.raises(key_service.UnknownSigningKey):
        withdraw(live_server, "no-such-kid")
    with db.transaction(live_server.app) as session:
        entries = session.scalars(select(Revocation).where(Revocation.kind == "kid")).all()
    assert [entry.value for entry in entries] == [kid.kid]


# -- a disabled client ---------------------------------------------------------------------------


def disable(live_server: LiveServer, parties: Parties) -> None:
    rt = runtime(live_server.app)
    with db.transaction(live_server.app) as session:
        disable_client(
            session,
            parties.app.client.client_id,
            utcnow(),
            stale_for=timedelta(seconds=rt.config.client_cache_seconds),
            token_ttl=longest_access_token_ttl(session, rt.config.access_token_ttl),
        )


def test_a_disabled_clients_own_tokens_are_recalled_everywhere(
    live_server: LiveServer, parties: Parties, verifier: TokenVerifier
) -> None:
    own = client_token(live_server, parties)
    verified = verifier.verify(own)
    assert verified.session_id is None  # no family: only the client entry can recall it

    disable(live_server, parties)

    assert introspect(live_server, parties, own) == {"active": False}
    assert verifier.poll_revocations() is True
    with pytest.raises(TokenRevoked):
        verifier.verify(own)


def test_the_client_entry_covers_tokens_issued_while_servers_still_knew_the_client(
    live_server: LiveServer, parties: Parties
) -> None:
    disabled_at = utcnow()
    disable(live_server, parties)

    entries = [e for e in feed_entries(live_server, parties) if e["type"] == "client"]

    assert [e["value"] for e in entries] == [parties.app.client.client_id]
    cache = runtime(live_server.app).config.client_cache_seconds
    # A server that still had the client in memory may have issued a token with an iat up
    # to ``cache`` seconds later: not_before is past that.
    assert entries[0]["not_before"] > disabled_at.timestamp() + cache
    assert entries[0]["expires_at"] >= entries[0]["not_before"] + 60
