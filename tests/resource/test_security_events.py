"""The kit's receiver of pushed Security Event Tokens (RFC 8935), against a fake issuer that
publishes keys and a revocation feed (``tests/resource/support.py``). Every SET here is signed
by hand the way authserver signs them (``services/security_events.py``); the real server's
SETs are checked end to end in tests/flows/test_security_events.py."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from joserfc import jwt

from authserver.resource import SecurityEventReceiver, TokenRevoked, TokenVerifier
from tests.resource.support import (
    AUDIENCE,
    FEED_CLIENT_ID,
    FEED_CLIENT_SECRET,
    FakeClock,
    FakeIssuer,
    IssuerKey,
    ec_key,
    mint,
)

SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
KEY_WITHDRAWN = "urn:authserver:secevent:event-type:signing-key-withdrawn"
CREDENTIAL_CHANGE = "https://schemas.openid.net/secevent/caep/event-type/credential-change"
RECEIVER = "orders-api"
SET_TYPE = "application/secevent+jwt"
HOUR = 3600


@pytest.fixture
def kit(issuer: FakeIssuer, clock: FakeClock) -> Iterator[TokenVerifier]:
    """A verifier whose feed polled once at start and not again for an hour: whatever it
    learns after that came by push."""
    verifier = TokenVerifier(
        issuer.url,
        AUDIENCE,
        clock=clock,
        revocation_feed=True,
        client_id=FEED_CLIENT_ID,
        client_secret=FEED_CLIENT_SECRET,
        poll_interval=HOUR,
    )
    verifier.start()
    yield verifier
    verifier.close()


@pytest.fixture
def receiver(kit: TokenVerifier, clock: FakeClock) -> SecurityEventReceiver:
    return SecurityEventReceiver(kit, audience=RECEIVER, clock=clock)


def security_event(
    key: IssuerKey,
    issuer: str,
    now: float,
    sub_id: dict[str, Any],
    event: dict[str, Any],
    *,
    typ: str = "secevent+jwt",
    **overrides: Any,
) -> str:
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": RECEIVER,
        "iat": int(now),
        "jti": secrets.token_urlsafe(32),
        "sub_id": sub_id,
        "events": event,
    }
    claims.update(overrides)
    claims = {name: value for name, value in claims.items() if value is not None}
    header = {"typ": typ, "alg": key.alg, "kid": key.kid}
    return jwt.encode(header, claims, key.private, [key.alg])


def session_revoked(session_id: str, at: float) -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        {"format": "complex", "session": {"format": "opaque", "id": session_id}},
        {SESSION_REVOKED: {"event_timestamp": int(at), "initiating_entity": "user"}},
    )


def push(receiver: SecurityEventReceiver, token: str, content_type: str = SET_TYPE) -> Any:
    answer = receiver.receive_push(token.encode(), content_type)
    body = json.loads(answer.body) if answer.body else None
    return answer.status, body


def test_a_pushed_session_revocation_refuses_its_tokens_without_a_poll(
    kit: TokenVerifier,
    receiver: SecurityEventReceiver,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
    clock: FakeClock,
) -> None:
    token = mint(signing_key, issuer.url, clock(), sid="family-1")
    assert kit.verify(token).session_id == "family-1"
    polls = len(issuer.requests_to("/oauth/revocations"))

    status, _ = push(
        receiver,
        security_event(signing_key, issuer.url, clock(), *session_revoked("family-1", clock())),
    )

    assert status == 202
    with pytest.raises(TokenRevoked):
        kit.verify(token)
    assert kit.verify(mint(signing_key, issuer.url, clock(), sid="family-2")).session_id
    assert len(issuer.requests_to("/oauth/revocations")) == polls


@pytest.mark.parametrize(
    ("sub_id", "payload", "token_claims"),
    [
        (
            {"format": "iss_sub", "iss": "ISSUER", "sub": "user-1"},
            {SESSION_REVOKED: {"event_timestamp": "NOW"}},
            {"sub": "user-1", "sid": None, "iat": "BEFORE"},
        ),
        (
            {"format": "jwt_id", "iss": "ISSUER", "jti": "token-7"},
            {SESSION_REVOKED: {"event_timestamp": "NOW"}},
            {"jti": "token-7", "sid": None},
        ),
        (
            {"format": "complex", "application": {"format": "opaque", "id": "app-1"}},
            {SESSION_REVOKED: {"event_timestamp": "NOW"}},
            {"client_id": "app-1", "sub": "app-1", "sid": None, "iat": "BEFORE"},
        ),
    ],
    ids=["user signed out everywhere", "one access token", "disabled client"],
)
def test_each_kind_of_pushed_revocation_refuses_what_the_feed_entry_would(
    kit: TokenVerifier,
    receiver: SecurityEventReceiver,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
    clock: FakeClock,
    sub_id: dict[str, Any],
    payload: dict[str, Any],
    token_claims: dict[str, Any],
) -> None:
    now = int(clock())

    def filled(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: filled(v) for k, v in value.items()}
        return {"ISSUER": issuer.url, "NOW": now, "BEFORE": now - 1}.get(value, value)

    token = mint(signing_key, issuer.url, clock(), **filled(token_claims))
    assert kit.verify(token)

    status, _ = push(
        receiver, security_event(signing_key, issuer.url, now, filled(sub_id), filled(payload))
    )

    assert status == 202
    with pytest.raises(TokenRevoked):
        kit.verify(token)


def test_a_pushed_key_withdrawal_refuses_every_token_of_that_key(
    kit: TokenVerifier,
    receiver: SecurityEventReceiver,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
    clock: FakeClock,
) -> None:
    other_key = ec_key()
    issuer.publish(other_key)
    withdrawn = mint(signing_key, issuer.url, clock())
    kept = mint(other_key, issuer.url, clock())
    assert kit.verify(withdrawn)

    # Signed by the other key: a SET signed with the withdrawn key would be refused itself.
    event = security_event(
        other_key,
        issuer.url,
        clock(),
        {"format": "opaque", "id": signing_key.kid},
        {KEY_WITHDRAWN: {"event_timestamp": int(clock())}},
    )
    assert push(receiver, event)[0] == 202

    with pytest.raises(TokenRevoked, match="withdrawn"):
        kit.verify(withdrawn)
    assert kit.verify(kept)
    refused_by_withdrawn_key = security_event(
        signing_key, issuer.url, clock(), *session_revoked("family-9", clock())
    )
    assert push(receiver, refused_by_withdrawn_key) == (
        400,
        {"err": "invalid_key", "description": "The token's signing key was withdrawn."},
    )


def test_a_set_signed_with_a_key_not_yet_fetched_is_answered_503_so_it_is_sent_again(
    kit: TokenVerifier,
    receiver: SecurityEventReceiver,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
    clock: FakeClock,
) -> None:
    rotated = ec_key()
    event = security_event(rotated, issuer.url, clock(), *session_revoked("family-1", clock()))
    assert push(receiver, event)[0] == 503  # not in the JWKS: cannot be judged, not refused

    issuer.publish(rotated)
    clock.advance(31)  # past TokenVerifier's default min_refetch_interval (30 s)

    assert push(receiver, event)[0] == 202
    with pytest.raises(TokenRevoked):
        kit.verify(mint(signing_key, issuer.url, clock(), sid="family-1"))


def test_events_the_kit_does_not_act_on_are_accepted_and_change_nothing(
    kit: TokenVerifier,
    receiver: SecurityEventReceiver,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
    clock: FakeClock,
) -> None:
    before = kit.revocation_state
    event = security_event(
        signing_key,
        issuer.url,
        clock(),
        {"format": "iss_sub", "iss": issuer.url, "sub": "user-1"},
        {CREDENTIAL_CHANGE: {"credential_type": "password", "change_type": "update"}},
    )

    assert push(receiver, event)[0] == 202
    assert kit.revocation_state == before


def test_a_replayed_set_is_accepted_once_and_an_old_one_is_refused(
    kit: TokenVerifier,
    receiver: SecurityEventReceiver,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
    clock: FakeClock,
) -> None:
    event = security_event(signing_key, issuer.url, clock(), *session_revoked("family-1", clock()))
    assert receiver.accept(event) is True

    # The issuer re-sends after a lost answer: 202 again, applied once.
    assert receiver.accept(event) is False
    assert push(receiver, event)[0] == 202

    # Someone who captured it replays it later: refused by its iat, whatever the memory holds.
    clock.advance(receiver.max_age + kit.leeway + 1)
    assert push(receiver, event) == (
        400,
        {"err": "invalid_request", "description": "The SET is too old."},
    )


@pytest.mark.parametrize(
    ("overrides", "err"),
    [
        ({"iss": "https://other.example"}, "invalid_issuer"),
        ({"aud": "another-receiver"}, "invalid_audience"),
        ({"jti": None}, "invalid_request"),
        ({"iat": None}, "invalid_request"),
        ({"iat": "FUTURE"}, "invalid_request"),
        ({"events": {}}, "invalid_request"),
        ({"sub_id": "NONE"}, "invalid_request"),
    ],
    ids=["issuer", "audience", "no jti", "no iat", "future iat", "no event", "no subject"],
)
def test_sets_that_are_not_for_this_receiver_or_incomplete_are_refused(
    receiver: SecurityEventReceiver,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
    clock: FakeClock,
    overrides: dict[str, Any],
    err: str,
) -> None:
    sub_id, event = session_revoked("family-1", clock())
    overrides = dict(overrides)
    if overrides.get("iat") == "FUTURE":
        overrides = {"iat": int(clock()) + HOUR}
    if overrides.pop("sub_id", None) == "NONE":
        sub_id = {}
    token = security_event(signing_key, issuer.url, clock(), sub_id, event, **overrides)

    status, body = push(receiver, token)

    assert (status, body["err"]) == (400, err)


def test_other_tokens_of_the_issuer_never_pass_as_a_set(
    kit: TokenVerifier,
    receiver: SecurityEventReceiver,
    issuer: FakeIssuer,
    signing_key: IssuerKey,
    clock: FakeClock,
) -> None:
    sub_id, event = session_revoked("family-1", clock())
    as_access_token = security_event(signing_key, issuer.url, clock(), sub_id, event, typ="at+jwt")
    as_id_token = security_event(signing_key, issuer.url, clock(), sub_id, event, typ="JWT")
    impostor = IssuerKey(private=ec_key().private, kid=signing_key.kid, alg="ES256")
    forged = security_event(impostor, issuer.url, clock(), sub_id, event)

    assert push(receiver, as_access_token)[1]["err"] == "invalid_request"
    assert push(receiver, as_id_token)[1]["err"] == "invalid_request"
    assert push(receiver, forged)[1]["err"] == "invalid_key"
    valid = security_event(signing_key, issuer.url, clock(), sub_id, event)
    assert push(receiver, valid, content_type="application/jwt")[1]["err"] == "invalid_request"
    assert push(receiver, "not a jws")[1]["err"] == "invalid_request"
    # Nothing refused was applied.
    assert kit.verify(mint(signing_key, issuer.url, clock(), sid="family-1")).session_id
