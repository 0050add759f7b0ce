"""Security Event Tokens pushed (RFC 8935) from the real server through its outbox to a real
HTTP receiver running the kit's ``SecurityEventReceiver``: the revocation reaches the
resource server without a feed poll, survives the receiver being down, and stops at a
receiver that refuses it."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import requests
from flask import Flask, Response, request
from sqlalchemy import select

from authserver.db import db, utcnow
from authserver.models import AuditEvent, OutboundMessage
from authserver.resource import SecurityEventReceiver, TokenRevoked, TokenVerifier
from authserver.runtime import runtime
from authserver.services.clients import RegisteredClient, set_security_event_delivery
from authserver.services.outbox import DeliveryReport
from authserver.services.security_events import PUSH_CHANNEL
from examples.resource_server import create_resource_app
from tests.conftest import LiveServer, listening_socket, serving, url_of
from tests.helpers import (
    DEFAULT_AUDIENCE,
    HANG_SECONDS,
    PASSWORD,
    make_client,
    make_resource_server,
    make_user,
)
from tests.receivers import refusing_socket

HOUR = 3600.0


@dataclass(frozen=True)
class World:
    app_client: RegisteredClient
    resource_server: RegisteredClient


@pytest.fixture
def world(live_server: LiveServer) -> World:
    with db.transaction(live_server.app) as session:
        make_user(live_server.app, session)
        app_client = make_client(session)
        resource_server = make_resource_server(session)
    return World(app_client, resource_server)


@pytest.fixture
def kit(live_server: LiveServer, world: World) -> Iterator[TokenVerifier]:
    """The resource server's verifier: it polled the feed once at start and not again."""
    with TokenVerifier(
        live_server.url,
        DEFAULT_AUDIENCE,
        revocation_feed=True,
        client_id=world.resource_server.client.client_id,
        client_secret=world.resource_server.client_secret,
        poll_interval=HOUR,
    ) as verifier:
        yield verifier


class PushEndpoint:
    """A resource server's push endpoint, wired as the kit's docstring shows."""

    def __init__(self, receiver: SecurityEventReceiver) -> None:
        self.receiver = receiver
        self.answers: list[int] = []
        self.app = Flask(__name__)
        self.app.add_url_rule("/security-events", "events", self._receive, methods=["POST"])

    def _receive(self) -> Response:
        answer = self.receiver.receive_push(request.get_data(), request.content_type)
        self.answers.append(answer.status)
        return Response(answer.body or "", status=answer.status, headers=answer.headers)


@contextmanager
def push_endpoint(
    receiver: SecurityEventReceiver, listener: socket.socket | None = None
) -> Iterator[tuple[PushEndpoint, str]]:
    sock = listener if listener is not None else listening_socket()
    url = url_of(sock) + "/security-events"
    endpoint = PushEndpoint(receiver)
    with serving(endpoint.app, sock):
        yield endpoint, url


def register_push(live_server: LiveServer, world: World, url: str) -> None:
    with db.transaction(live_server.app) as session:
        set_security_event_delivery(
            session, world.resource_server.client.client_id, "push", url, utcnow()
        )


def sign_in_and_revoke(live_server: LiveServer, world: World) -> str:
    """A user's access token whose refresh family is then revoked (RFC 7009)."""
    auth = (world.app_client.client.client_id, world.app_client.client_secret)
    tokens = requests.post(
        live_server.url + "/oauth/token",
        data={"grant_type": "password", "username": "ann@example.com", "password": PASSWORD},
        auth=auth,
        timeout=10,
    ).json()
    revoked = requests.post(
        live_server.url + "/oauth/revoke",
        data={"token": tokens["refresh_token"]},
        auth=auth,
        timeout=10,
    )
    assert revoked.status_code == 200
    return str(tokens["access_token"])


def deliver(live_server: LiveServer) -> DeliveryReport:
    return runtime(live_server.app).deliver_outbox(db.state(live_server.app).session_factory)


def receiver_for(kit: TokenVerifier, world: World) -> SecurityEventReceiver:
    return SecurityEventReceiver(kit, audience=world.resource_server.client.client_id)


def test_a_pushed_revocation_reaches_the_example_resource_server_without_a_poll(
    live_server: LiveServer, world: World, kit: TokenVerifier
) -> None:
    api = create_resource_app(kit, receiver_for(kit, world))
    listener = listening_socket()
    base = url_of(listener)
    with serving(api, listener):
        register_push(live_server, world, base + "/security-events")
        token = sign_in_and_revoke(live_server, world)
        bearer = {"Authorization": f"Bearer {token}"}
        # No poll since start: the API does not know yet.
        assert requests.get(base + "/api/hello", headers=bearer, timeout=10).status_code == 200

        report = deliver(live_server)
        after = requests.get(base + "/api/hello", headers=bearer, timeout=10)

    assert report.delivered == 1
    assert after.status_code == 401
    assert 'error="invalid_token"' in after.headers["WWW-Authenticate"]
    with pytest.raises(TokenRevoked):
        kit.verify(token)
    state = kit.revocation_state
    assert state is not None
    assert state.last_success is not None  # only the start-up poll ever answered


def test_a_receiver_that_is_down_gets_the_set_when_it_comes_back(
    live_server: LiveServer, world: World, kit: TokenVerifier
) -> None:
    down = refusing_socket()
    register_push(live_server, world, url_of(down) + "/security-events")
    token = sign_in_and_revoke(live_server, world)

    first = deliver(live_server)
    assert (first.delivered, first.retrying) == (0, 1)

    down.listen()
    with push_endpoint(receiver_for(kit, world), down) as (endpoint, _):
        deadline = time.monotonic() + HANG_SECONDS
        while deliver(live_server).delivered == 0:
            assert time.monotonic() < deadline, "the SET never reached the receiver"
            time.sleep(0.2)

    assert endpoint.answers == [202]
    with pytest.raises(TokenRevoked):
        kit.verify(token)


def test_a_receiver_that_refuses_the_set_is_not_asked_again(
    live_server: LiveServer, world: World, kit: TokenVerifier
) -> None:
    # Registered under another client_id than the SETs' audience: it answers 400
    # invalid_audience, which no retry can change.
    wrong_audience = SecurityEventReceiver(kit, audience="someone-else")
    with push_endpoint(wrong_audience) as (endpoint, url):
        register_push(live_server, world, url)
        token = sign_in_and_revoke(live_server, world)

        report = deliver(live_server)
        again = deliver(live_server)

    assert (report.given_up, endpoint.answers) == (1, [400])
    assert again.attempted == 0
    assert kit.verify(token).subject  # nothing was applied
    with db.transaction(live_server.app) as session:
        message = session.scalars(
            select(OutboundMessage).where(OutboundMessage.channel == PUSH_CHANNEL)
        ).one()
        gave_up = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "outbox_gave_up")
        ).all()
    assert message.gave_up_at is not None
    assert message.last_error == "HTTP 400"
    assert len(gave_up) == 1


def test_a_set_delivered_twice_is_applied_once_and_answered_202_both_times(
    live_server: LiveServer, world: World, kit: TokenVerifier
) -> None:
    receiver = receiver_for(kit, world)
    with push_endpoint(receiver) as (endpoint, url):
        register_push(live_server, world, url)
        sign_in_and_revoke(live_server, world)
        with db.transaction(live_server.app) as session:
            message = session.scalars(select(OutboundMessage)).one()
            channel = runtime(live_server.app).outbox_channels[PUSH_CHANNEL]
            destination, payload = message.destination, dict(message.payload)

        # What a sender does when the first answer is lost: the same message again, signed
        # afresh with the same jti.
        first = channel.deliver(destination, payload)
        second = channel.deliver(destination, payload)

    assert (first.error, second.error) == (None, None)
    assert endpoint.answers == [202, 202]
    assert receiver._seen.keys() == {payload["jti"]}
