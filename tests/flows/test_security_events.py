"""Security Event Tokens (RFC 8417) about revocations: what each revocation emits, and RFC 8936
poll delivery at ``POST /oauth/security-events``."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.db import utcnow
from authserver.models import SecurityEvent
from authserver.runtime import runtime
from authserver.services import keys as key_service
from authserver.services import users as user_service
from authserver.services.browser_sessions import end_user_sessions
from authserver.services.clients import (
    RegisteredClient,
    disable_client,
    set_security_event_delivery,
    set_served_audiences,
)
from authserver.services.own_account import Confirmation, change_own_password
from authserver.services.refresh_tokens import RevocationReason
from authserver.services.revocations import longest_access_token_ttl
from authserver.services.sign_in import RequestContext
from tests.helpers import (
    PASSWORD,
    basic_auth,
    make_client,
    make_resource_server,
    make_user,
    password_login,
)

POLL = "/oauth/security-events"
SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
CREDENTIAL_CHANGE = "https://schemas.openid.net/secevent/caep/event-type/credential-change"
ACCOUNT_DISABLED = "https://schemas.openid.net/secevent/risc/event-type/account-disabled"
KEY_WITHDRAWN = "urn:authserver:secevent:event-type:signing-key-withdrawn"


def poll_receiver(session: Session, **overrides: Any) -> RegisteredClient:
    registered = make_resource_server(session, **overrides)
    set_security_event_delivery(session, registered.client.client_id, "poll", None, utcnow())
    return registered


def poll(http: FlaskClient, receiver: RegisteredClient, **body: Any) -> Any:
    response = http.post(POLL, json=body, headers=basic_auth(receiver))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json


def decoded(app: Flask, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a SET, its signature checked against the server's JWKS."""
    keys = KeySet.import_key_set(json.loads(runtime(app).keys.snapshot().jwks_body))
    verified = jwt.decode(token, keys)
    return dict(verified.header), dict(verified.claims)


def signed_in(app: Flask, session: Session, http: FlaskClient) -> tuple[RegisteredClient, Any]:
    make_user(app, session)
    registered = make_client(session)
    tokens = password_login(http, registered).json
    assert tokens is not None
    return registered, tokens


def revoke(http: FlaskClient, registered: RegisteredClient, tokens: Any) -> None:
    """RFC 7009 on the refresh token: its family is revoked, one session-revoked SET."""
    response = http.post(
        "/oauth/revoke", data={"token": tokens["refresh_token"]}, headers=basic_auth(registered)
    )
    assert response.status_code == 200


def signed_in_and_revoked(
    app: Flask, session: Session, http: FlaskClient
) -> tuple[RegisteredClient, Any]:
    registered, tokens = signed_in(app, session, http)
    revoke(http, registered, tokens)
    return registered, tokens


def sid_of(access_token: str) -> str:
    payload = access_token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sid"])


def test_a_revoked_family_reaches_a_polling_receiver_as_a_signed_session_revoked_set(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    receiver = poll_receiver(session)
    registered, tokens = signed_in(app, session, client)

    revoke(client, registered, tokens)
    answer = poll(client, receiver)

    assert "moreAvailable" not in answer
    ((jti, token),) = answer["sets"].items()
    header, claims = decoded(app, token)
    assert header["typ"] == "secevent+jwt"
    assert claims["jti"] == jti
    assert claims["iss"] == runtime(app).config.issuer
    assert claims["aud"] == receiver.client.client_id
    assert "exp" not in claims
    assert "sub" not in claims
    assert claims["sub_id"] == {
        "format": "complex",
        "session": {"format": "opaque", "id": sid_of(tokens["access_token"])},
        "user": {"format": "iss_sub", "iss": claims["iss"], "sub": claims["sub_id"]["user"]["sub"]},
    }
    event = claims["events"][SESSION_REVOKED]
    assert event["initiating_entity"] == "user"
    assert event["reason_admin"] == {"en": "revoked_by_client"}


def test_a_set_is_handed_out_until_acknowledged_with_the_same_jti(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    receiver = poll_receiver(session)
    signed_in_and_revoked(app, session, client)

    first = poll(client, receiver)["sets"]
    again = poll(client, receiver)["sets"]
    acknowledged = poll(client, receiver, ack=list(first))["sets"]

    assert list(again) == list(first)  # the answer was lost: the same event comes back
    assert acknowledged == {}
    row = session.scalars(select(SecurityEvent)).one()
    assert row.acknowledged_at is not None


def test_max_events_pages_and_says_more_are_available(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    receiver = poll_receiver(session)
    registered, _ = signed_in(app, session, client)
    for _ in range(3):
        tokens = password_login(client, registered).json
        assert tokens is not None
        revoke(client, registered, tokens)

    page = poll(client, receiver, maxEvents=2)
    rest = poll(client, receiver, ack=list(page["sets"]), maxEvents=2)
    only_ack = poll(client, receiver, ack=list(rest["sets"]), maxEvents=0)

    assert (len(page["sets"]), page["moreAvailable"]) == (2, True)
    assert (len(rest["sets"]), "moreAvailable" in rest) == (1, False)
    assert only_ack == {"sets": {}}
    assert poll(client, receiver)["sets"] == {}


def test_a_receiver_cannot_acknowledge_or_read_another_receivers_sets(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    mine = poll_receiver(session)
    theirs = poll_receiver(session, name="Billing API")
    signed_in_and_revoked(app, session, client)
    their_sets = poll(client, theirs)["sets"]

    my_sets = poll(client, mine, ack=list(their_sets))["sets"]

    assert set(my_sets).isdisjoint(their_sets)
    assert list(poll(client, theirs)["sets"]) == list(their_sets)
    _, claims = decoded(app, next(iter(my_sets.values())))
    assert claims["aud"] == mine.client.client_id


def test_only_clients_registered_to_poll_may_poll(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    resource_server = make_resource_server(session)  # reads the feed, receives no SETs
    poller = poll_receiver(session, name="Billing API")

    not_registered = client.post(POLL, json={}, headers=basic_auth(resource_server))
    anonymous = client.post(POLL, json={})
    wrong_secret = client.post(
        POLL,
        json={},
        headers={
            "Authorization": "Basic "
            + base64.b64encode(f"{poller.client.client_id}:x".encode()).decode()
        },
    )

    assert (not_registered.status_code, not_registered.json["error"]) == (
        403,
        "unauthorized_client",
    )
    assert (anonymous.status_code, anonymous.json["error"]) == (401, "invalid_client")
    assert (wrong_secret.status_code, wrong_secret.json["error"]) == (401, "invalid_client")


def test_a_receiver_that_no_longer_serves_an_audience_hears_nothing_and_may_not_poll(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    receiver = poll_receiver(session)
    set_served_audiences(session, receiver.client.client_id, [], utcnow())

    signed_in_and_revoked(app, session, client)
    refused = client.post(POLL, json={}, headers=basic_auth(receiver))

    assert (refused.status_code, refused.json["error"]) == (403, "unauthorized_client")
    assert session.scalars(select(SecurityEvent)).all() == []


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        [],
        {"ack": "abc"},
        {"ack": [1]},
        {"ack": ["x" * 65]},
        {"setErrs": []},
        {"maxEvents": -1},
        {"maxEvents": True},
        {"maxEvents": 1.5},
        {"returnImmediately": "yes"},
        {"ack": [f"j{i}" for i in range(1001)]},
    ],
    ids=[
        "not json",
        "not an object",
        "ack not a list",
        "ack not strings",
        "ack too long",
        "setErrs not an object",
        "negative maxEvents",
        "boolean maxEvents",
        "fractional maxEvents",
        "returnImmediately not a boolean",
        "too many acks",
    ],
)
def test_a_malformed_poll_is_invalid_request_and_changes_nothing(
    app: Flask, session: Session, client: FlaskClient, body: Any
) -> None:
    receiver = poll_receiver(session)
    signed_in_and_revoked(app, session, client)
    if body == "not json":
        response = client.post(
            POLL, data="{", content_type="application/json", headers=basic_auth(receiver)
        )
    else:
        response = client.post(POLL, json=body, headers=basic_auth(receiver))

    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"
    assert len(poll(client, receiver)["sets"]) == 1


def test_set_errors_count_as_acknowledged(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    receiver = poll_receiver(session)
    signed_in_and_revoked(app, session, client)
    (jti,) = poll(client, receiver)["sets"]

    answer = poll(client, receiver, setErrs={jti: {"err": "invalid_key", "description": "?"}})

    assert answer["sets"] == {}


def events_of(app: Flask, client: FlaskClient, receiver: RegisteredClient) -> list[dict[str, Any]]:
    sets = poll(client, receiver)["sets"]
    return [decoded(app, token)[1] for token in sets.values()]


def test_signing_out_everywhere_emits_a_user_session_revoked_with_its_cut_off(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    receiver = poll_receiver(session)
    user = make_user(app, session)
    now = utcnow()

    end_user_sessions(session, user.id, RevocationReason.LOGOUT_EVERYWHERE, now)

    (claims,) = events_of(app, client, receiver)
    assert claims["sub_id"] == {"format": "iss_sub", "iss": claims["iss"], "sub": str(user.id)}
    assert claims["events"][SESSION_REVOKED]["event_timestamp"] == int(now.timestamp())


def test_disabling_a_user_emits_account_disabled_and_the_session_cut_off(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    receiver = poll_receiver(session)
    user = make_user(app, session)

    user_service.disable_user(session, user.email, utcnow())

    kinds = {next(iter(claims["events"])) for claims in events_of(app, client, receiver)}
    assert kinds == {SESSION_REVOKED, ACCOUNT_DISABLED}


def test_a_password_change_emits_credential_change(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    receiver = poll_receiver(session)
    user = make_user(app, session)
    rt = runtime(app)

    change_own_password(
        session,
        user,
        Confirmation(rt.hasher, rt.throttle_policy, RequestContext("192.0.2.1", None, utcnow())),
        rt.notices,
        current_password=PASSWORD,
        new_password="a different long passphrase 2026",
        password_policy=rt.password_policy,
    )

    changes = [c for c in events_of(app, client, receiver) if CREDENTIAL_CHANGE in c["events"]]
    assert len(changes) == 1
    assert changes[0]["events"][CREDENTIAL_CHANGE]["credential_type"] == "password"
    assert changes[0]["sub_id"]["sub"] == str(user.id)


def test_disabling_a_client_and_withdrawing_a_key_emit_their_events(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    receiver = poll_receiver(session)
    app_client = make_client(session)
    rt = runtime(app)
    ttl = longest_access_token_ttl(session, rt.config.access_token_ttl)
    now = utcnow()
    signing = rt.keys.refresh().signing
    assert signing is not None

    disable_client(
        session, app_client.client.client_id, now, stale_for=timedelta(seconds=5), token_ttl=ttl
    )
    key_service.withdraw_signing_key(
        session,
        rt.key_cipher,
        rt.config.signing_alg,
        signing.kid,
        now,
        stale_for=timedelta(seconds=5),
        token_ttl=ttl,
    )

    by_type = {next(iter(c["events"])): c for c in events_of(app, client, receiver)}
    disabled = by_type[SESSION_REVOKED]
    assert disabled["sub_id"] == {
        "format": "complex",
        "application": {"format": "opaque", "id": app_client.client.client_id},
    }
    assert disabled["events"][SESSION_REVOKED]["event_timestamp"] > int(now.timestamp()) + 5
    assert by_type[KEY_WITHDRAWN]["sub_id"] == {"format": "opaque", "id": signing.kid}


def test_a_rolled_back_revocation_emits_nothing(
    app: Flask, session: Session, client: FlaskClient
) -> None:
    receiver = poll_receiver(session)
    user = make_user(app, session)
    session.commit()
    savepoint = session.begin_nested()
    end_user_sessions(session, user.id, RevocationReason.LOGOUT_EVERYWHERE, utcnow())
    savepoint.rollback()

    assert poll(client, receiver)["sets"] == {}


def test_ssf_configuration_names_the_delivery_methods_and_the_keys(
    app: Flask, client: FlaskClient
) -> None:
    response = client.get("/.well-known/ssf-configuration")

    issuer = runtime(app).config.issuer
    assert response.status_code == 200
    assert response.json == {
        "spec_version": "1_0",
        "issuer": issuer,
        "jwks_uri": issuer + "/.well-known/jwks.json",
        "delivery_methods_supported": ["urn:ietf:rfc:8935", "urn:ietf:rfc:8936"],
        "default_subjects": "ALL",
        "poll_endpoint": issuer + POLL,
    }
