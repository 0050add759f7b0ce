"""E-mail (``services/mail.py``): written to the outbox with the change that causes it, sent
over SMTP to a real server on 127.0.0.1 (``tests/smtp_servers.py``: plain, STARTTLS, implicit
TLS) and read back as a mail client reads it; retried while the server is down or busy, given
up when it refuses for good; never two senders on one message; no link token at rest; in
development, the console and /dev/mail instead of a server.
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path

import pytest
from flask import Flask
from jinja2 import DictLoader
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from authserver.app import create_app
from authserver.config import Config, ConfigError, parse_smtp_url
from authserver.db import db, utcnow
from authserver.errors import ValidationError
from authserver.models import AuditEvent, OutboundMessage
from authserver.runtime import runtime
from authserver.services.mail import (
    CHANNEL,
    ConsoleMailChannel,
    MailComposer,
    SmtpMailChannel,
    enqueue_mail,
)
from authserver.services.outbox import DeliveryReport, OutboxPolicy, deliver_due
from tests.helpers import HANG_SECONDS, Clock
from tests.receivers import refusing_socket
from tests.smtp_servers import PASSWORD, USER, LocalAuthority, Mailbox, make_authority, smtp_server

# A bearer secret as a reset link will carry one (issue 14, part 2): it must reach the
# recipient and nowhere else.
LINK_TOKEN = "rst_" + "Q7m2Xk9vLpN4wT8sYb3cHf6jRd1aZe5u"
LINK = f"https://login.example.test/reset?token={LINK_TOKEN}"
TEMPLATES = DictLoader(
    {
        "base.txt": "{% block body %}{% endblock %}-- \n{{ product }}\n",
        "base.html": "<p>{{ product }}</p>{% block body %}{% endblock %}",
        "reset.subject.txt": "Reset your {{ product }} password\n",
        "reset.txt": '{% extends "base.txt" %}{% block body %}Open {{ link }}\n{% endblock %}',
        "reset.html": (
            '{% extends "base.html" %}{% block body %}'
            '<a href="{{ link }}">Choose a new password</a>{% endblock %}'
        ),
    }
)


@pytest.fixture
def clock(app: Flask) -> Clock:
    controlled = Clock(utcnow())
    runtime(app).clock = controlled
    return controlled


def composer(app: Flask) -> MailComposer:
    """The app's composer with the test's templates: the same key, sender and product."""
    own = runtime(app).mail
    assert own is not None
    config = runtime(app).config
    return MailComposer(
        own.product_name, own.sender, config.key_encryption_key, templates=TEMPLATES
    )


def send_through(
    app: Flask, port: int, scheme: str = "smtp", *, ca_file: Path | None = None, user: str = ""
) -> None:
    """Point the app's mail channel at the test server (what AUTHSERVER_SMTP_URL and
    AUTHSERVER_SMTP_CA_FILE do at start-up)."""
    credentials = f"{user}:{PASSWORD}@" if user else ""
    server = parse_smtp_url(f"{scheme}://{credentials}127.0.0.1:{port}")
    mail = runtime(app).mail
    assert mail is not None
    runtime(app).outbox_channels[CHANNEL] = SmtpMailChannel(
        server, mail, ca_file=str(ca_file) if ca_file else None
    )


def enqueue_reset(app: Flask, session: Session, to: str = "ada@example.test") -> OutboundMessage:
    message = enqueue_mail(
        session,
        composer(app),
        to=to,
        template="reset",
        context={"link": LINK},
        now=runtime(app).now(),
        user_id=uuid.uuid4(),
    )
    session.commit()
    return message


def deliver(app: Flask) -> DeliveryReport:
    return runtime(app).deliver_outbox(db.state(app).session_factory)


def reread(session: Session, message: OutboundMessage) -> OutboundMessage:
    session.expire_all()
    found = session.get(OutboundMessage, message.id)
    assert found is not None
    return found


def parts(message: EmailMessage) -> dict[str, str]:
    """The bodies a mail client offers, by type."""
    return {
        part.get_content_type(): part.get_content()
        for part in message.iter_parts()
        if isinstance(part, EmailMessage)
    }


@pytest.fixture
def authority(tmp_path: Path) -> LocalAuthority:
    return make_authority(tmp_path / "tls")


# -- what arrives ---------------------------------------------------------------------------


def test_a_message_arrives_as_text_and_html_alternatives_from_the_product(
    app: Flask, session: Session, clock: Clock
) -> None:
    mailbox = Mailbox()
    with smtp_server(mailbox) as port:
        send_through(app, port)
        message = enqueue_reset(app, session)
        assert deliver(app).delivered == 1

    (received,) = mailbox.received
    assert mailbox.envelopes == [("no-reply@localhost", ["ada@example.test"])]
    assert received["To"] == "ada@example.test"
    assert received["From"] == "authserver <no-reply@localhost>"
    assert received["Subject"] == "Reset your authserver password"
    assert received["Message-ID"] == message.payload["message_id"]
    assert received["Message-ID"].endswith("@localhost>")
    assert received["Date"].datetime.timestamp() == int(clock.now.timestamp())
    assert received["Auto-Submitted"] == "auto-generated"
    assert received.get_content_type() == "multipart/alternative"
    bodies = parts(received)
    assert list(bodies) == ["text/plain", "text/html"]
    assert f"Open {LINK}" in bodies["text/plain"]
    assert f'<a href="{LINK}">' in bodies["text/html"]
    assert reread(session, message).delivered_at == clock.now
    (event,) = session.scalars(
        select(AuditEvent).where(AuditEvent.event_type == "outbox_delivered")
    ).all()
    assert event.details["channel"] == CHANNEL
    assert str(event.user_id) == message.payload["user_id"]


def test_the_product_name_setting_names_the_sender_subject_and_bodies(
    app: Flask, session: Session, clock: Clock
) -> None:
    config = replace(runtime(app).config, product_name="Example ID", mail_from="id@example.test")
    named = MailComposer(config.product_name, config.mail_sender, config.key_encryption_key)
    runtime(app).mail = named
    mailbox = Mailbox()
    with smtp_server(mailbox) as port:
        send_through(app, port)
        enqueue_mail(
            session, named, to="ada@example.test", template="test", context={}, now=clock.now
        )
        session.commit()
        deliver(app)

    (received,) = mailbox.received
    assert received["From"] == "Example ID <id@example.test>"
    assert received["Subject"] == "Example ID: test message"
    assert all("Example ID" in body for body in parts(received).values())


def test_a_message_enqueued_in_a_transaction_that_rolls_back_is_never_sent(
    app: Flask, session: Session, clock: Clock
) -> None:
    mailbox = Mailbox()
    with smtp_server(mailbox) as port:
        send_through(app, port)
        enqueue_mail(
            session, composer(app), to="ada@example.test", template="reset",
            context={"link": LINK}, now=clock.now,
        )  # fmt: skip
        session.rollback()
        assert deliver(app).attempted == 0
    assert mailbox.offered == []


def test_a_recipient_that_is_not_one_address_is_refused_at_enqueue(
    app: Flask, session: Session, clock: Clock
) -> None:
    for bad in ("ada", "ada@example.test, eve@example.test", "ada@example.test\nBcc: eve@x"):
        with pytest.raises(ValidationError):
            enqueue_mail(
                session, composer(app), to=bad, template="reset",
                context={"link": LINK}, now=clock.now,
            )  # fmt: skip
    assert session.scalars(select(OutboundMessage)).all() == []


# -- nothing secret at rest -------------------------------------------------------------------


def test_the_link_token_is_never_stored_in_the_clear(
    app: Flask, session: Session, clock: Clock
) -> None:
    mailbox = Mailbox()
    with smtp_server(mailbox) as port:
        send_through(app, port)
        message = enqueue_reset(app, session)
        at_rest = session.execute(
            text("SELECT CAST(payload AS TEXT) || destination FROM outbound_messages")
        ).scalar_one()
        deliver(app)

    assert LINK_TOKEN not in at_rest
    assert "Reset your" not in at_rest  # the subject is sealed with the bodies
    assert message.payload["template"] == "reset"
    # ...and it reached the recipient.
    assert LINK_TOKEN in parts(mailbox.received[0])["text/plain"]
    after = session.execute(
        text("SELECT CAST(payload AS TEXT) || coalesce(last_error, '') FROM outbound_messages")
    ).scalar_one()
    assert LINK_TOKEN not in after
    audited = session.execute(text("SELECT CAST(details AS TEXT) FROM audit_events")).scalars()
    assert all(LINK_TOKEN not in details for details in audited)


def test_a_sealed_message_moved_to_another_recipient_does_not_open_and_is_given_up(
    app: Flask, session: Session, clock: Clock
) -> None:
    message = enqueue_reset(app, session, to="ada@example.test")
    session.execute(
        text("UPDATE outbound_messages SET destination = 'eve@example.test' WHERE id = :id"),
        {"id": message.id},
    )
    session.commit()
    mailbox = Mailbox()
    with smtp_server(mailbox) as port:
        send_through(app, port)
        assert deliver(app).given_up == 1
    assert mailbox.offered == []
    assert reread(session, message).last_error == "the stored message does not open (InvalidTag)"


# -- retries and refusals ---------------------------------------------------------------------


def test_mail_written_while_the_smtp_server_is_down_is_sent_when_it_is_back(
    app: Flask, session: Session, clock: Clock
) -> None:
    closed = refusing_socket()
    port = closed.getsockname()[1]
    send_through(app, port)
    message = enqueue_reset(app, session)
    # Down for an hour: attempt after attempt, each refused.
    for _ in range(61):
        report = deliver(app)
        assert (report.retrying, report.delivered) == (1, 0)
        clock.now = reread(session, message).next_attempt_at
    assert reread(session, message).last_error == "SMTP connection refused"

    mailbox = Mailbox()
    with smtp_server(mailbox, sock=closed):
        assert deliver(app).delivered == 1
    (received,) = mailbox.received
    assert received["Message-ID"] == message.payload["message_id"]
    assert reread(session, message).attempts == 62


def test_a_busy_server_gets_the_same_message_again_with_the_same_message_id(
    app: Flask, session: Session, clock: Clock
) -> None:
    mailbox = Mailbox(data_replies=["451 4.3.0 Try again later"])
    with smtp_server(mailbox) as port:
        send_through(app, port)
        message = enqueue_reset(app, session)
        assert deliver(app).retrying == 1
        assert reread(session, message).last_error == "SMTP 451 message refused"
        clock.now = reread(session, message).next_attempt_at
        assert deliver(app).delivered == 1

    first, second = mailbox.offered
    assert first["Message-ID"] == second["Message-ID"] == message.payload["message_id"]
    assert first["Date"] == second["Date"]
    assert parts(first) == parts(second)


def test_a_recipient_deferred_with_a_4xx_reply_is_tried_again(
    app: Flask, session: Session, clock: Clock
) -> None:
    mailbox = Mailbox(rcpt_replies=["450 4.2.1 Mailbox busy"])
    with smtp_server(mailbox) as port:
        send_through(app, port)
        message = enqueue_reset(app, session)
        assert deliver(app).retrying == 1
        clock.now = reread(session, message).next_attempt_at
        assert deliver(app).delivered == 1
    assert len(mailbox.received) == 1


def test_a_recipient_refused_for_good_is_given_up_and_audited_without_another_attempt(
    app: Flask, session: Session, clock: Clock
) -> None:
    mailbox = Mailbox(rcpt_replies=["550 5.1.1 No such user here"])
    with smtp_server(mailbox) as port:
        send_through(app, port)
        message = enqueue_reset(app, session)
        report = deliver(app)
        clock.advance(hours=1)
        again = deliver(app)

    assert (report.given_up, again.attempted) == (1, 0)
    assert mailbox.offered == []
    given_up = reread(session, message)
    assert given_up.gave_up_at is not None
    assert given_up.last_error == "SMTP 550 recipient refused"
    (event,) = session.scalars(
        select(AuditEvent).where(AuditEvent.event_type == "outbox_gave_up")
    ).all()
    assert event.details["reason"] == "SMTP 550 recipient refused"
    assert event.details["channel"] == CHANNEL
    assert str(event.user_id) == message.payload["user_id"]


def test_a_server_that_never_answers_is_cut_off_at_the_deadline(
    app: Flask, session: Session, clock: Clock
) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts connections (the kernel does) and never says a word
    try:
        mail = runtime(app).mail
        assert mail is not None
        server = parse_smtp_url(f"smtp://127.0.0.1:{silent.getsockname()[1]}")
        runtime(app).outbox_channels[CHANNEL] = SmtpMailChannel(server, mail, deadline=0.5)
        message = enqueue_reset(app, session)
        assert deliver(app).retrying == 1
    finally:
        silent.close()
    assert reread(session, message).last_error == "SMTP server did not answer in time"


# -- TLS and login ----------------------------------------------------------------------------


def test_starttls_with_login_sends_to_a_server_the_configured_ca_vouches_for(
    app: Flask, session: Session, clock: Clock, authority: LocalAuthority
) -> None:
    mailbox = Mailbox()
    with smtp_server(mailbox, starttls=authority.server_context, auth=True) as port:
        send_through(app, port, "smtp+starttls", ca_file=authority.ca_file, user=USER)
        enqueue_reset(app, session)
        assert deliver(app).delivered == 1
    assert mailbox.logins == [USER]
    assert LINK_TOKEN in parts(mailbox.received[0])["text/plain"]


def test_implicit_tls_sends_to_a_server_the_configured_ca_vouches_for(
    app: Flask, session: Session, clock: Clock, authority: LocalAuthority
) -> None:
    mailbox = Mailbox()
    with smtp_server(mailbox, implicit_tls=authority.server_context, auth=True) as port:
        send_through(app, port, "smtps", ca_file=authority.ca_file, user=USER)
        enqueue_reset(app, session)
        assert deliver(app).delivered == 1
    assert mailbox.logins == [USER]
    assert len(mailbox.received) == 1


@pytest.mark.parametrize("scheme", ["smtp+starttls", "smtps"])
def test_a_server_whose_certificate_nobody_vouches_for_gets_nothing(
    app: Flask, session: Session, clock: Clock, authority: LocalAuthority, scheme: str
) -> None:
    mailbox = Mailbox()
    tls = {"starttls" if scheme == "smtp+starttls" else "implicit_tls": authority.server_context}
    with smtp_server(mailbox, auth=True, **tls) as port:  # type: ignore[arg-type]
        send_through(app, port, scheme, user=USER)  # the system's CAs only
        message = enqueue_reset(app, session)
        assert deliver(app).retrying == 1
    assert mailbox.logins == []
    assert mailbox.offered == []
    assert reread(session, message).last_error == "SMTP server's TLS certificate is not trusted"


def test_a_wrong_password_is_retried_not_given_up_and_never_written_down(
    app: Flask, session: Session, clock: Clock, authority: LocalAuthority
) -> None:
    mailbox = Mailbox()
    with smtp_server(mailbox, starttls=authority.server_context, auth=True) as port:
        mail = runtime(app).mail
        assert mail is not None
        server = parse_smtp_url(f"smtp+starttls://{USER}:wrong-password@127.0.0.1:{port}")
        runtime(app).outbox_channels[CHANNEL] = SmtpMailChannel(
            server, mail, ca_file=str(authority.ca_file)
        )
        message = enqueue_reset(app, session)
        assert deliver(app).retrying == 1
    error = reread(session, message).last_error
    assert error == "SMTP 535 login refused"
    assert "wrong-password" not in repr(server)


# -- two senders ------------------------------------------------------------------------------


@pytest.mark.postgres_only
def test_two_senders_at_once_send_every_message_exactly_once(committed_app: Flask) -> None:
    factory = db.state(committed_app).session_factory
    mailbox = Mailbox()
    with smtp_server(mailbox) as port:
        send_through(committed_app, port)
        with factory() as setup, setup.begin():
            ids = [
                enqueue_mail(
                    setup, composer(committed_app), to=f"user{n}@example.test",
                    template="reset", context={"link": LINK}, now=utcnow(),
                ).payload["message_id"]
                for n in range(30)
            ]  # fmt: skip
        channels = {CHANNEL: runtime(committed_app).outbox_channels[CHANNEL]}
        policy = OutboxPolicy(
            retry_max=runtime(committed_app).outbox_policy.retry_max,  # type: ignore[union-attr]
            give_up_after=runtime(committed_app).outbox_policy.give_up_after,  # type: ignore[union-attr]
            batch_size=4,
        )
        start = threading.Barrier(2)
        reports: list[DeliveryReport] = []

        def sender() -> None:
            start.wait()
            reports.append(deliver_due(factory, channels, policy, clock=utcnow))

        senders = [threading.Thread(target=sender) for _ in range(2)]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(HANG_SECONDS)

    assert sorted(m["Message-ID"] for m in mailbox.offered) == sorted(ids)
    assert sum(r.delivered for r in reports) == 30
    with factory() as check:
        assert check.scalars(select(OutboundMessage.attempts)).all() == [1] * 30


# -- development: the console and /dev/mail ------------------------------------------------


def test_development_without_smtp_prints_each_message_to_the_console(
    app: Flask, session: Session, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    assert isinstance(runtime(app).outbox_channels[CHANNEL], ConsoleMailChannel)
    message = enqueue_reset(app, session)
    with caplog.at_level(logging.INFO, logger="authserver.services.mail"):
        assert deliver(app).delivered == 1
    (line,) = [r.getMessage() for r in caplog.records if r.name == "authserver.services.mail"]
    assert "To: ada@example.test" in line
    assert "Subject: Reset your authserver password" in line
    assert f"Message-ID: {message.payload['message_id']}" in line
    assert f"Open {LINK}" in line


def test_dev_mail_lists_what_development_sent(app: Flask, session: Session, clock: Clock) -> None:
    message = enqueue_reset(app, session)
    deliver(app)
    http = app.test_client()

    page = http.get("/dev/mail")

    assert page.status_code == 200
    assert page.mimetype == "text/html"
    body = page.get_data(as_text=True)
    assert "Reset your authserver password" in body
    assert "ada@example.test" in body
    assert LINK in body
    assert "sent" in body
    html_part = http.get(f"/dev/mail/{message.id}/html")
    assert html_part.status_code == 200
    assert f'<a href="{LINK}">' in html_part.get_data(as_text=True)
    policy = html_part.headers["Content-Security-Policy"]
    assert "sandbox" in policy
    assert "script-src" not in policy
    assert "default-src 'none'" in policy
    assert http.get(f"/dev/mail/{message.id + 1000}/html").status_code == 404


@pytest.mark.parametrize(
    "settings",
    [{"env": "production"}, {"smtp_url": "smtp://127.0.0.1:2525"}],
    ids=["production", "smtp configured"],
)
def test_dev_mail_does_not_exist_in_production_or_with_an_smtp_server(
    app: Flask, session: Session, clock: Clock, settings: dict[str, str]
) -> None:
    message = enqueue_reset(app, session)
    runtime(app).config = replace(runtime(app).config, **settings)  # type: ignore[arg-type]
    http = app.test_client()

    assert http.get("/dev/mail").status_code == 404
    assert http.get(f"/dev/mail/{message.id}/html").status_code == 404


# -- who sends, and the settings -----------------------------------------------------------


def test_each_mode_has_the_sender_its_settings_say(config: Config) -> None:
    def channel_of(**settings: str) -> object:
        app = create_app(replace(config, **settings))  # type: ignore[arg-type]
        try:
            return runtime(app).outbox_channels.get(CHANNEL)
        finally:
            db.state(app).engine.dispose()

    assert isinstance(channel_of(), ConsoleMailChannel)
    assert isinstance(channel_of(smtp_url="smtp://127.0.0.1:2525"), SmtpMailChannel)
    production = {"env": "production", "issuer": "https://login.example.test"}
    assert channel_of(**production) is None  # mail is left to a process that has the server
    assert isinstance(
        channel_of(**production, smtp_url="smtp://127.0.0.1:2525", mail_from="id@example.test"),
        SmtpMailChannel,
    )


def _problems(**environ: str) -> list[str]:
    try:
        Config.from_env(environ)
    except ConfigError as exc:
        return exc.problems
    return []


def test_a_bad_smtp_url_is_one_line_that_never_shows_the_password() -> None:
    for url in (
        "http://user:hunter2-secret@mail.example.test",
        "smtp://user:hunter2-secret@mail.example.test:99999",
        "smtp://user:hunter2-secret@:25",
    ):
        (problem,) = _problems(AUTHSERVER_SMTP_URL=url)
        assert problem.startswith("AUTHSERVER_SMTP_URL ")
        assert "hunter2" not in problem
    config = Config.from_env({"AUTHSERVER_SMTP_URL": "smtps://u:hunter2-secret@mail.test"})
    assert "hunter2" not in repr(config)
    assert "hunter2" not in repr(config.smtp_server)


def test_a_password_over_plain_smtp_to_another_host_is_refused() -> None:
    (problem,) = _problems(AUTHSERVER_SMTP_URL="smtp://u:pw@mail.example.test")
    assert "smtp+starttls:// or smtps://" in problem
    assert _problems(AUTHSERVER_SMTP_URL="smtp://u:pw@127.0.0.1:1025") == []
    assert _problems(AUTHSERVER_SMTP_URL="smtp+starttls://u:pw@mail.example.test") == []


def test_the_from_address_is_checked_and_required_in_production_with_smtp() -> None:
    (problem,) = _problems(AUTHSERVER_MAIL_FROM="no-reply@example.test, eve@example.test")
    assert problem.startswith("AUTHSERVER_MAIL_FROM must be one address")
    production = {
        "AUTHSERVER_ENV": "production",
        "AUTHSERVER_ISSUER": "https://login.example.test",
        "AUTHSERVER_SECRET_KEY": "s" * 40,
        "AUTHSERVER_KEY_ENCRYPTION_KEY": "k" * 40,
        "DATABASE_URL": "postgresql+psycopg://db.example.test/authserver",
    }
    assert _problems(**production) == []
    assert _problems(**production, AUTHSERVER_SMTP_URL="smtps://mail.example.test") == [
        "AUTHSERVER_MAIL_FROM must be set when AUTHSERVER_SMTP_URL is"
    ]
    assert (
        _problems(
            **production,
            AUTHSERVER_SMTP_URL="smtps://mail.example.test",
            AUTHSERVER_MAIL_FROM="Example <id@example.test>",
        )
        == []
    )
