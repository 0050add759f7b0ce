"""`services/outbox.py`: messages delivered at least once, with retries that back off up to a
bound, given up on a refusal or when too old, and never delivered by two senders at once.

Deliveries go over real HTTP to receivers on 127.0.0.1 (``tests/receivers.py``), through the
back-channel logout channel; the clock the outbox schedules by is moved by hand
(``runtime(app).clock``), the logout tokens are signed with the wall clock.
"""

from __future__ import annotations

import random
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import jwt
import pytest
from flask import Flask
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from authserver.db import db, utcnow
from authserver.models import AuditEvent, OutboundMessage
from authserver.runtime import runtime
from authserver.services import outbound_http
from authserver.services.backchannel_logout import CHANNEL
from authserver.services.outbox import (
    Attempt,
    AuditSubject,
    Channel,
    DeliveryReport,
    OutboxPolicy,
    Outcome,
    attempt_of_http_status,
    claim_due,
    deliver_due,
    enqueue,
    next_attempt_at,
    retry_delay,
    settle,
)
from tests.helpers import HANG_SECONDS, Clock
from tests.receivers import Receiver, receiving, refusing_socket, verified_logout_token

ISSUER = "http://127.0.0.1:8000"  # the `config` fixture's issuer
CLIENT_ID = "photos-client"
POLICY = OutboxPolicy(retry_max=timedelta(seconds=60), give_up_after=timedelta(hours=24))


@pytest.fixture
def clock(app: Flask) -> Clock:
    controlled = Clock(utcnow())
    runtime(app).clock = controlled
    return controlled


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    with receiving() as served:
        yield served


@pytest.fixture
def closed_port() -> Iterator[tuple[socket.socket, str]]:
    """A port that refuses connections, and the base URL of a receiver there."""
    sock = refusing_socket()
    try:
        yield sock, "http://{}:{}".format(*sock.getsockname())
    finally:
        sock.close()


def logout_payload() -> dict[str, Any]:
    return {
        "aud": CLIENT_ID,
        "sub": str(uuid.uuid4()),
        "sid": str(uuid.uuid4()),
        "jti": uuid.uuid4().hex,
    }


def enqueue_logout(session: Session, destination: str, now: datetime) -> OutboundMessage:
    message = enqueue(session, CHANNEL, destination, logout_payload(), now)
    session.commit()
    return message


def deliver(app: Flask) -> DeliveryReport:
    return runtime(app).deliver_outbox(db.state(app).session_factory)


def reread(session: Session, message: OutboundMessage) -> OutboundMessage:
    session.expire_all()
    found = session.get(OutboundMessage, message.id)
    assert found is not None
    return found


def jwks(app: Flask) -> dict[str, Any]:
    keys: dict[str, Any] = app.test_client().get("/.well-known/jwks.json").json
    return keys


# -- backoff ---------------------------------------------------------------------------------


def test_retry_delay_doubles_with_jitter_and_never_passes_the_maximum() -> None:
    rng = random.Random(7)
    for attempts in range(1, 80):
        step = min(60.0, 2.0 ** (attempts - 1))
        delay = retry_delay(attempts, POLICY, rng).total_seconds()
        assert step / 2 <= delay <= step
        assert delay <= POLICY.retry_max.total_seconds()


def test_a_policy_whose_maximum_is_below_its_first_step_is_refused() -> None:
    with pytest.raises(ValueError, match="retry_max"):
        OutboxPolicy(retry_max=timedelta(milliseconds=500), give_up_after=timedelta(hours=1))


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (202, Outcome.DELIVERED),
        (400, Outcome.GIVE_UP),
        (401, Outcome.GIVE_UP),
        (404, Outcome.GIVE_UP),
        (410, Outcome.GIVE_UP),
        (408, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
        (302, Outcome.RETRY),
    ],
)
def test_what_an_http_answer_means(status: int, outcome: Outcome) -> None:
    assert attempt_of_http_status(status).outcome is outcome


# -- writing -----------------------------------------------------------------------------------


def test_a_message_is_written_in_the_callers_transaction_and_gone_with_its_rollback(
    session: Session,
) -> None:
    enqueue(session, CHANNEL, "https://rp.example.test/bcl", logout_payload(), utcnow())
    assert session.scalars(select(OutboundMessage)).all()

    session.rollback()

    assert session.scalars(select(OutboundMessage)).all() == []


# -- retries -----------------------------------------------------------------------------------


def test_a_receiver_that_is_down_gets_the_message_once_it_is_up_again(
    app: Flask, session: Session, clock: Clock, closed_port: tuple[socket.socket, str]
) -> None:
    closed, base = closed_port
    message = enqueue_logout(session, base + "/bcl", clock.now)

    first = deliver(app)
    assert (first.delivered, first.retrying) == (0, 1)
    waiting = reread(session, message)
    assert waiting.last_error == "connection refused"
    assert waiting.attempts == 1
    assert first.next_attempt_at == waiting.next_attempt_at
    # The first retry comes after about a second, and not before it is due.
    assert timedelta(0) < waiting.next_attempt_at - clock.now <= timedelta(seconds=1)
    assert deliver(app).attempted == 0

    # Down for many attempts: the wait grows, but never past the maximum.
    for _ in range(10):
        clock.now = reread(session, message).next_attempt_at
        assert deliver(app).retrying == 1
        assert reread(session, message).next_attempt_at - clock.now <= POLICY.retry_max
    assert reread(session, message).attempts == 11

    closed.listen()
    with receiving(closed) as (receiver, _):
        clock.now = reread(session, message).next_attempt_at
        assert deliver(app).delivered == 1

        (received,) = receiver.received
    # Signed at this attempt, so fresh, and about the same logout as every earlier attempt.
    claims = verified_logout_token(
        received.logout_token, jwks(app), issuer=ISSUER, client_id=CLIENT_ID
    )
    assert claims["jti"] == message.payload["jti"]
    delivered = reread(session, message)
    assert delivered.delivered_at == clock.now
    assert delivered.attempts == 12
    assert delivered.last_error is None
    assert deliver(app).attempted == 0


def test_every_attempt_signs_a_fresh_token_with_the_same_jti(
    app: Flask, session: Session, clock: Clock, receiver: tuple[Receiver, str]
) -> None:
    listener, base = receiver
    listener.status = 503
    message = enqueue_logout(session, base + "/bcl", clock.now)
    deliver(app)
    clock.now = reread(session, message).next_attempt_at
    deliver(app)

    first, second = (
        jwt.decode(r.logout_token, options={"verify_signature": False}) for r in listener.received
    )
    assert first["jti"] == second["jti"] == message.payload["jti"]
    assert listener.received[0].logout_token != listener.received[1].logout_token


def test_a_receiver_that_refuses_the_message_is_not_asked_again(
    app: Flask, session: Session, clock: Clock, receiver: tuple[Receiver, str]
) -> None:
    listener, base = receiver
    listener.status = 400
    message = enqueue_logout(session, base + "/bcl", clock.now)

    report = deliver(app)

    assert report.given_up == 1
    refused = reread(session, message)
    assert refused.gave_up_at == clock.now
    assert refused.last_error == "HTTP 400"
    (event,) = session.scalars(
        select(AuditEvent).where(AuditEvent.event_type == "outbox_gave_up")
    ).all()
    assert event.client_id == CLIENT_ID
    assert event.details["reason"] == "HTTP 400"
    assert event.details["browser_session_id"] == message.payload["sid"]
    clock.advance(days=1)
    listener.status = 200
    assert deliver(app).attempted == 0
    assert listener.count() == 1


@pytest.mark.parametrize("status", [408, 429, 500, 503, 302])
def test_a_receiver_that_is_busy_failing_or_moving_is_asked_again_later(
    app: Flask, session: Session, clock: Clock, receiver: tuple[Receiver, str], status: int
) -> None:
    listener, base = receiver
    listener.status = status
    listener.location = base + "/elsewhere"  # a redirect is not followed
    message = enqueue_logout(session, base + "/bcl", clock.now)

    assert deliver(app).retrying == 1

    assert reread(session, message).last_error == f"HTTP {status}"
    assert [r.path for r in listener.received] == ["/bcl"]
    listener.status, listener.location = 200, None
    clock.now = reread(session, message).next_attempt_at
    assert deliver(app).delivered == 1
    assert [r.path for r in listener.received] == ["/bcl", "/bcl"]


def test_a_message_undelivered_for_too_long_is_given_up_and_audited(
    app: Flask, session: Session, clock: Clock, closed_port: tuple[socket.socket, str]
) -> None:
    message = enqueue_logout(session, closed_port[1] + "/bcl", clock.now)
    deliver(app)

    clock.advance(hours=24)
    report = deliver(app)

    assert report.given_up == 1
    given_up = reread(session, message)
    assert given_up.gave_up_at == clock.now
    assert given_up.last_error == "undelivered after 86400 s; last: connection refused"
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.event_type == "outbox_gave_up")
    ).all()
    assert [e.details["attempts"] for e in events] == [2]
    assert report.next_attempt_at is None


def test_a_receiver_that_never_answers_is_cut_off_at_the_deadline(
    app: Flask, session: Session, clock: Clock
) -> None:
    # Listening, never accepting: the connection is made and the request sent, no answer.
    silent = refusing_socket()
    silent.listen()
    try:
        status_or_error: list[object] = []
        url = "http://{}:{}/bcl".format(*silent.getsockname())

        def call() -> None:
            try:
                status_or_error.append(outbound_http.post(url, b"x", "text/plain", timeout=0.5))
            except outbound_http.NoAnswer as exc:
                status_or_error.append(str(exc))

        caller = threading.Thread(target=call)
        caller.start()
        caller.join(HANG_SECONDS)
        assert status_or_error == ["no answer within 0.5 s"]
    finally:
        silent.close()


# -- leases: two senders never deliver one message at once ----------------------------------


class Recording:
    """A channel of the test's own: it records what it is given and answers ``attempt``."""

    def __init__(self, attempt: Attempt | Exception) -> None:
        self.attempt = attempt
        self.delivered: list[str] = []
        self._lock = threading.Lock()

    def deliver(self, destination: str, payload: Mapping[str, Any]) -> Attempt:
        with self._lock:
            self.delivered.append(str(payload["jti"]))
        if isinstance(self.attempt, Exception):
            raise self.attempt
        return self.attempt

    def audit_subject(self, payload: Mapping[str, Any]) -> AuditSubject:
        return AuditSubject(client_id=str(payload["aud"]))


def _factory(app: Flask) -> sessionmaker[Session]:
    return db.state(app).session_factory


def test_a_claimed_message_is_not_claimed_again_until_its_lease_ends(
    app: Flask, session: Session, clock: Clock
) -> None:
    channels: dict[str, Channel] = {CHANNEL: Recording(Attempt(Outcome.DELIVERED))}
    message = enqueue_logout(session, "https://rp.example.test/bcl", clock.now)

    (claimed,) = claim_due(session, channels, clock.now, POLICY)
    session.commit()
    assert (
        claim_due(session, channels, clock.now + POLICY.lease - timedelta(seconds=1), POLICY) == []
    )

    clock.advance(seconds=POLICY.lease.total_seconds())
    (again,) = claim_due(session, channels, clock.now, POLICY)
    session.commit()

    assert again.id == claimed.id == message.id
    assert again.attempts == 2
    # The sender whose lease ran out writes nothing; the one holding it now does.
    assert (
        settle(session, claimed, Attempt(Outcome.DELIVERED), clock.now, POLICY, AuditSubject())
        == "lost"
    )
    assert reread(session, message).delivered_at is None
    assert (
        settle(session, again, Attempt(Outcome.DELIVERED), clock.now, POLICY, AuditSubject())
        == "delivered"
    )


def test_a_sender_that_died_mid_delivery_leaves_the_message_to_the_next_after_the_lease(
    app: Flask, session: Session, clock: Clock, receiver: tuple[Receiver, str]
) -> None:
    listener, base = receiver
    message = enqueue_logout(session, base + "/bcl", clock.now)
    # A sender claims it and dies before settling (the receiver may or may not have it).
    claim_due(session, runtime(app).outbox_channels, clock.now, POLICY)
    session.commit()

    assert deliver(app).attempted == 0
    clock.advance(seconds=POLICY.lease.total_seconds())
    assert deliver(app).delivered == 1
    assert listener.count() == 1
    assert reread(session, message).attempts == 2


def test_messages_of_a_channel_this_process_does_not_know_are_left_alone(
    app: Flask, session: Session, clock: Clock
) -> None:
    message = enqueue(session, "set_push", "https://rp.example.test/events", {}, clock.now)
    session.commit()

    report = deliver(app)

    assert report.attempted == 0
    assert report.next_attempt_at is None
    assert reread(session, message).attempts == 0
    assert next_attempt_at(session, {"set_push": Recording(Attempt(Outcome.DELIVERED))})


def test_a_channel_that_fails_unexpectedly_is_retried_like_a_receiver_that_is_down(
    app: Flask, session: Session, clock: Clock
) -> None:
    message = enqueue_logout(session, "https://rp.example.test/bcl", clock.now)
    channels: dict[str, Channel] = {CHANNEL: Recording(RuntimeError("boom"))}

    report = deliver_due(_factory(app), channels, POLICY, clock=clock)

    assert report.retrying == 1
    assert reread(session, message).last_error == "RuntimeError in the sender"


def test_a_round_delivers_every_due_message_in_batches(
    app: Flask, session: Session, clock: Clock
) -> None:
    for _ in range(20):
        enqueue(session, CHANNEL, "https://rp.example.test/bcl", logout_payload(), clock.now)
    enqueue(
        session,
        CHANNEL,
        "https://rp.example.test/bcl",
        logout_payload(),
        clock.now + timedelta(minutes=1),
    )
    session.commit()
    recording = Recording(Attempt(Outcome.DELIVERED))

    report = deliver_due(_factory(app), {CHANNEL: recording}, POLICY, clock=clock)

    assert report.delivered == 20
    assert len(set(recording.delivered)) == 20
    assert report.next_attempt_at == clock.now + timedelta(minutes=1)


# -- two senders at once (PostgreSQL: row locks; SQLite has one writer at a time) -----------


@pytest.mark.postgres_only
def test_two_claims_at_once_take_different_messages_without_waiting(
    committed_app: Flask,
) -> None:
    factory = _factory(committed_app)
    now = utcnow()
    with factory() as setup, setup.begin():
        for _ in range(6):
            enqueue(setup, CHANNEL, "https://rp.example.test/bcl", logout_payload(), now)
    channels: dict[str, Channel] = {CHANNEL: Recording(Attempt(Outcome.DELIVERED))}
    small = OutboxPolicy(
        retry_max=timedelta(seconds=60), give_up_after=timedelta(hours=1), batch_size=3
    )

    with factory() as first, factory() as second:
        first.begin()
        taken_first = claim_due(first, channels, now, small)  # rows locked, not committed
        second.begin()
        # Waiting on the first claim's locks would never end (this thread holds them): make
        # such a wait an error instead of a hang.
        second.execute(text(f"SET LOCAL lock_timeout = '{int(HANG_SECONDS)}s'"))
        taken_second = claim_due(second, channels, now, replace(small, batch_size=10))
        second.commit()
        first.commit()

    assert len(taken_first) == 3
    assert len(taken_second) == 3
    assert {m.id for m in taken_first}.isdisjoint({m.id for m in taken_second})


@pytest.mark.postgres_only
def test_two_senders_at_once_deliver_every_message_exactly_once(committed_app: Flask) -> None:
    factory = _factory(committed_app)
    now = utcnow()
    with receiving() as (listener, base), factory() as setup:
        with setup.begin():
            messages = [
                enqueue(setup, CHANNEL, base + "/bcl", logout_payload(), now) for _ in range(40)
            ]
        channels = runtime(committed_app).outbox_channels
        start = threading.Barrier(2)
        reports: list[DeliveryReport] = []

        def sender() -> None:
            start.wait()
            reports.append(deliver_due(factory, channels, POLICY, clock=utcnow))

        senders = [threading.Thread(target=sender) for _ in range(2)]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(HANG_SECONDS)

        jtis = [
            jwt.decode(r.logout_token, options={"verify_signature": False})["jti"]
            for r in listener.received
        ]
    assert sorted(jtis) == sorted(m.payload["jti"] for m in messages)
    assert sum(r.delivered for r in reports) == 40
    with factory() as check:
        assert check.scalars(select(OutboundMessage.attempts)).all() == [1] * 40


def test_when_the_next_message_is_due_counts_leases_and_retries(
    session: Session, clock: Clock
) -> None:
    channels: dict[str, Channel] = {CHANNEL: Recording(Attempt(Outcome.DELIVERED))}
    assert next_attempt_at(session, channels) is None
    enqueue_logout(session, "https://rp.example.test/bcl", clock.now)
    claim_due(session, channels, clock.now, POLICY)
    session.commit()

    assert next_attempt_at(session, channels) == clock.now + POLICY.lease
