"""The in-process outbox sender (``AUTHSERVER_OUTBOX_IN_PROCESS=1``): a sign-out reaches the
apps with nobody running `authserver outbox deliver`, right after the request that ended the
session; a receiver that is down gets it once it is up again; a process that serves no
request (a CLI command) starts no sender.

The app runs on committed data (its commits are real, the sender thread reads them), with
retries at most a second apart; receivers are real HTTP servers on 127.0.0.1. Tests wait for
what the receiver saw, never for a stretch of time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from authserver import create_app
from authserver.config import Config
from authserver.db import db, utcnow
from authserver.models import OutboundMessage
from authserver.runtime import runtime
from authserver.services.backchannel_logout import CHANNEL
from authserver.services.outbox import enqueue
from tests.browser_helpers import csrf_token_of, sign_in, tokens_through_browser, web_client
from tests.conftest import stop_outbox_sender, truncate_all
from tests.helpers import make_user, wait_until
from tests.receivers import Receiver, receiving, refusing_socket


@pytest.fixture
def sending_app(engine: Engine, config: Config) -> Iterator[Flask]:
    application = create_app(replace(config, outbox_in_process=1, outbox_retry_max_seconds=1))
    yield application
    stop_outbox_sender(application)
    db.state(application).engine.dispose()
    truncate_all(engine)


def _signed_in_to_an_app(app: Flask, backchannel_logout_uri: str) -> FlaskClient:
    browser = app.test_client()
    with db.transaction(app) as session:
        make_user(app, session)
        photos = web_client(session, backchannel_logout_uri=backchannel_logout_uri)
    assert sign_in(browser).status_code == 303
    tokens_through_browser(browser, photos)
    return browser


def _sign_out(browser: FlaskClient) -> None:
    page = browser.get("/logout")
    assert browser.post("/logout", data={"csrf_token": csrf_token_of(page)}).status_code == 303


def _messages(app: Flask) -> list[OutboundMessage]:
    with db.transaction(app) as session:
        return list(session.scalars(select(OutboundMessage)))


def test_a_sign_out_reaches_the_app_without_anyone_delivering(sending_app: Flask) -> None:
    with receiving() as (receiver, base):
        browser = _signed_in_to_an_app(sending_app, base + "/bcl")

        _sign_out(browser)

        wait_until(lambda: receiver.count() == 1, "the logout token at the app")
    wait_until(
        lambda: all(m.delivered_at is not None for m in _messages(sending_app)),
        "the message marked delivered",
    )


def test_an_app_that_is_down_gets_the_logout_when_it_is_up_again(sending_app: Flask) -> None:
    closed = refusing_socket()
    try:
        base = "http://{}:{}".format(*closed.getsockname())
        browser = _signed_in_to_an_app(sending_app, base + "/bcl")
        _sign_out(browser)

        wait_until(
            lambda: _messages(sending_app)[0].attempts >= 3,
            "three attempts at the app that is down",
        )
        (waiting,) = _messages(sending_app)
        assert waiting.last_error == "connection refused"
        assert waiting.delivered_at is None

        closed.listen()
        receiver: Receiver
        with receiving(closed) as (receiver, _):
            wait_until(lambda: receiver.count() == 1, "the logout token once the app is up")
    finally:
        closed.close()
    wait_until(
        lambda: _messages(sending_app)[0].delivered_at is not None, "the message marked delivered"
    )


def test_a_process_that_serves_no_request_starts_no_sender(sending_app: Flask) -> None:
    # A CLI command builds the app and commits, and must not leave a delivery half made.
    with db.transaction(sending_app) as session:
        enqueue(session, CHANNEL, "https://rp.example.test/bcl", {}, utcnow())

    sender = runtime(sending_app).outbox_sender
    assert sender is not None
    assert not sender.running
    (pending,) = _messages(sending_app)
    assert pending.attempts == 0


def test_the_first_request_starts_the_sender_and_close_stops_it(sending_app: Flask) -> None:
    sender = runtime(sending_app).outbox_sender
    assert sender is not None

    assert sending_app.test_client().get("/healthz").status_code == 200
    assert sender.running

    sender.close()
    assert not sender.running


def test_a_sender_whose_database_is_away_says_so_and_keeps_trying(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = replace(
        config,
        database_url="postgresql+psycopg://postgres@127.0.0.1:1/none",
        outbox_in_process=1,
        outbox_retry_max_seconds=1,
    )
    application = create_app(unreachable)
    sender = runtime(application).outbox_sender
    assert sender is not None
    try:
        assert application.test_client().get("/healthz").status_code == 200

        wait_until(
            lambda: "outbox sender: delivery failed (OperationalError)" in caplog.text,
            "the sender to say the database is away",
        )
        assert sender.running
    finally:
        sender.close()
        db.state(application).engine.dispose()
    # The type of the failure only: never the driver's message, which may quote SQL.
    assert "127.0.0.1:1" not in caplog.text.split("outbox sender:")[1].splitlines()[0]


def test_without_the_in_process_sender_nothing_is_delivered_by_the_server(
    committed_app: Flask,
) -> None:
    assert runtime(committed_app).outbox_sender is None
    with receiving() as (receiver, base):
        browser = _signed_in_to_an_app(committed_app, base + "/bcl")
        _sign_out(browser)

        (pending,) = _messages(committed_app)
        assert pending.attempts == 0
        runtime(committed_app).deliver_outbox(db.state(committed_app).session_factory)
        assert receiver.count() == 1
