"""E-mail: messages to people, written to the outbox in the transaction of the change that
causes them and sent afterwards over SMTP, at least once (``services/outbox.py``).

**Sending one**: ``enqueue_mail(db, composer, to=..., template=..., context=..., now=...)``
renders the template (``templates/mail/<template>.subject.txt``, ``.txt`` and ``.html``, the
product name given to each as ``product``), seals what it rendered and adds it to the outbox
(flush only: the caller's commit sends it, its rollback sends nothing). Rendering at enqueue
means a broken template fails the request that asked, not a sender an hour later, and every
attempt sends the same bytes.

**Nothing secret at rest**: mail will carry bearer secrets (a password-reset link). The
outbox row stores the rendered subject and bodies sealed with AES-256-GCM under a key
derived from ``AUTHSERVER_KEY_ENCRYPTION_KEY`` (HKDF-SHA256, its own ``info``, so it is not
the signing keys' key), with the recipient and the Message-ID as associated data: a sealed
body moved to another row does not open. In the clear are only the recipient, the template's
name, the Message-ID, the date and the user's id, for operators and audit. A row whose seal
does not open (the key encryption key changed) is given up, audited.

**At least once, recognisably**: the Message-ID (RFC 5322 §3.6.4) and the Date are fixed at
enqueue, so a message sent twice (a sender died after the server took it, see the outbox) is
the same message twice, and mail clients and servers show or drop the copy as such.

**Who sends** (``runtime.build_runtime``): with ``AUTHSERVER_SMTP_URL``, ``SmtpMailChannel``,
in every mode. Without it, in development, ``ConsoleMailChannel``: the message is written to
the log (link included: it is development) and stays readable at ``/dev/mail`` while its
outbox row lasts. Without it in production, no channel: the process leaves mail to one that
has the setting (the outbox's rule for channels it does not know), so web processes need not
hold the SMTP password.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import secrets
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
    select_autoescape,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.config import SmtpServer, parse_mail_address
from authserver.errors import ValidationError
from authserver.models import OutboundMessage
from authserver.services.outbox import DELIVERED, Attempt, AuditSubject, Outcome, enqueue

log = logging.getLogger(__name__)

# The outbox channel of e-mail.
CHANNEL = "mail"
# The whole SMTP exchange (connect, TLS, EHLO, AUTH, MAIL, RCPT, DATA, QUIT) ends within this,
# well inside the outbox's 30 s lease, so two senders never send one message at once.
DEFAULT_DEADLINE_SECONDS = 20.0
_NONCE_BYTES = 12
_SEAL_INFO = b"authserver outbox mail v1"


class MailUnreadable(Exception):
    """A stored message whose seal does not open (the key encryption key changed)."""


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class StoredMail:
    """One message as the outbox holds it, opened: what a channel sends."""

    to: str
    template: str
    message_id: str
    date: datetime
    user_id: uuid.UUID | None
    content: RenderedMail


def mail_templates(override_dir: str) -> BaseLoader:
    """The package's templates/mail, behind ``override_dir``/mail when AUTHSERVER_TEMPLATE_DIR
    names a folder: a template found there is used instead of the package's."""
    package = PackageLoader("authserver", "templates/mail")
    if not override_dir:
        return package
    return ChoiceLoader([FileSystemLoader(str(Path(override_dir) / "mail")), package])


class MailComposer:
    """Renders the mail templates and seals and opens what they rendered (one per process,
    ``Runtime.mail``)."""

    def __init__(
        self,
        product_name: str,
        sender: Address,
        key_encryption_key: str,
        *,
        templates: BaseLoader | None = None,
    ) -> None:
        self.product_name = product_name
        # The package's templates/mail; tests bring their own.
        self._loader = templates or PackageLoader("authserver", "templates/mail")
        self.sender = sender
        self._aead = AESGCM(
            HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL_INFO).derive(
                key_encryption_key.encode()
            )
        )

    @cached_property
    def _templates(self) -> Environment:
        return Environment(
            loader=self._loader,
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            # A context that lacks a value the template uses is a programming error, found
            # at enqueue, not a message with a hole in it.
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )

    def render(self, template: str, context: Mapping[str, Any]) -> RenderedMail:
        values = {**context, "product": self.product_name}
        subject = self._templates.get_template(f"{template}.subject.txt").render(values)
        return RenderedMail(
            subject=" ".join(subject.split()),
            text=self._templates.get_template(f"{template}.txt").render(values),
            html=self._templates.get_template(f"{template}.html").render(values),
        )

    def new_message_id(self) -> str:
        # RFC 5322 §3.6.4: unique, the right side a domain of ours.
        return f"<{secrets.token_hex(16)}@{self.sender.domain}>"

    def seal(self, content: RenderedMail, to: str, message_id: str) -> str:
        plaintext = json.dumps(
            {"subject": content.subject, "text": content.text, "html": content.html}
        ).encode()
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, plaintext, _bound_to(to, message_id))
        return base64.urlsafe_b64encode(sealed).decode()

    def open(self, to: str, payload: Mapping[str, Any]) -> StoredMail:
        """The stored message; MailUnreadable if its seal does not open."""
        try:
            message_id = str(payload["message_id"])
            sealed = base64.urlsafe_b64decode(str(payload["sealed"]))
            plaintext = self._aead.decrypt(
                sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _bound_to(to, message_id)
            )
            content = json.loads(plaintext)
            user_id = payload.get("user_id")
            return StoredMail(
                to=to,
                template=str(payload["template"]),
                message_id=message_id,
                date=datetime.fromisoformat(str(payload["date"])),
                user_id=uuid.UUID(user_id) if user_id else None,
                content=RenderedMail(content["subject"], content["text"], content["html"]),
            )
        except (InvalidTag, KeyError, ValueError, TypeError) as exc:
            raise MailUnreadable(
                f"the stored message does not open ({type(exc).__name__})"
            ) from exc

    def email_message(self, stored: StoredMail) -> EmailMessage:
        """What goes over the wire: multipart/alternative, text first (RFC 2046 §5.1.4: the
        richest last), with the Message-ID and Date fixed at enqueue."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = stored.to
        message["Subject"] = stored.content.subject
        message["Date"] = format_datetime(stored.date)
        message["Message-ID"] = stored.message_id
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834 §5: no auto-replies, please
        message.set_content(stored.content.text)
        message.add_alternative(stored.content.html, subtype="html")
        return message


def _bound_to(to: str, message_id: str) -> bytes:
    return f"{to}\n{message_id}".encode()


def enqueue_mail(
    db: Session,
    composer: MailComposer,
    *,
    to: str,
    template: str,
    context: Mapping[str, Any],
    now: datetime,
    user_id: uuid.UUID | None = None,
) -> OutboundMessage:
    """Render ``template`` for ``to`` and add it to the outbox in the caller's transaction
    (flushes, never commits). ``context`` may carry secrets (a link with a token): they are
    stored sealed only. ValidationError if ``to`` is not one address."""
    try:
        address = parse_mail_address(to)
    except ValueError:
        raise ValidationError("The recipient must be one e-mail address.") from None
    recipient = address.addr_spec
    content = composer.render(template, context)
    message_id = composer.new_message_id()
    payload = {
        "template": template,
        "message_id": message_id,
        "date": now.isoformat(),
        "user_id": str(user_id) if user_id else None,
        "sealed": composer.seal(content, recipient, message_id),
    }
    return enqueue(db, CHANNEL, recipient, payload, now)


def _audit_subject(payload: Mapping[str, Any]) -> AuditSubject:
    user_id = payload.get("user_id")
    return AuditSubject(user_id=uuid.UUID(user_id) if user_id else None)


# -- SMTP --------------------------------------------------------------------------------------


class _SMTP(smtplib.SMTP):
    """smtplib's client with one deadline for the whole exchange: every socket operation
    waits at most until it (smtplib's own timeout is per operation)."""

    def __init__(self, deadline: float) -> None:
        self._ends_at = time.monotonic() + deadline
        super().__init__(timeout=deadline)

    def _remaining(self) -> float:
        left = self._ends_at - time.monotonic()
        if left <= 0:
            raise TimeoutError("SMTP exchange deadline passed")
        return left

    def connect(
        self, host: str = "localhost", port: int = 0, source_address: Any = None
    ) -> tuple[int, bytes]:
        self.timeout = self._remaining()
        # smtplib remembers the host (STARTTLS checks the certificate against it) only when
        # it is given to the constructor.
        self._host = host
        return super().connect(host, port, source_address)

    def send(self, s: Any) -> None:
        if self.sock is not None:
            self.sock.settimeout(self._remaining())
        super().send(s)

    def getreply(self) -> tuple[int, bytes]:
        if self.sock is not None:
            self.sock.settimeout(self._remaining())
        return super().getreply()


class _SMTPS(_SMTP):
    """Implicit TLS (RFC 8314 §3.3): TLS from the first byte."""

    def __init__(self, deadline: float, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__(deadline)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        plain = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        return self._context.wrap_socket(plain, server_hostname=host)


def attempt_of_smtp_code(code: int, what: str) -> Attempt:
    """RFC 5321 §4.2.1: a 4yz reply is a transient failure (try again later), a 5yz reply a
    permanent one (sending the same again will fail again)."""
    error = f"SMTP {code} {what}"
    if 500 <= code < 600:
        return Attempt(Outcome.GIVE_UP, error)
    return Attempt(Outcome.RETRY, error)


class SmtpMailChannel:
    """The outbox channel that sends mail over SMTP (``AUTHSERVER_SMTP_URL``): plain,
    STARTTLS (RFC 3207) or implicit TLS (RFC 8314), the server's certificate always verified
    (against ``ca_file`` if given), AUTH when the URL carries a user.

    What a failure means: a refusal of this message (a 5yz reply to MAIL, RCPT or DATA) is
    given up; a 4yz reply, a refused or dropped connection, a timeout, a TLS failure and a
    failed login are retried, since they say nothing about the message and an operator or
    the server can mend them. ``last_error`` names the reply code and the step, never the
    server's text (it may quote the message) nor the URL."""

    def __init__(
        self,
        server: SmtpServer,
        composer: MailComposer,
        *,
        ca_file: str | None = None,
        deadline: float = DEFAULT_DEADLINE_SECONDS,
    ) -> None:
        self._server = server
        self._composer = composer
        self._ca_file = ca_file or None
        self._deadline = deadline

    @cached_property
    def _tls(self) -> ssl.SSLContext:
        # Certificate and host name checks on, as for every https call; only the anchors
        # may be the operator's own.
        return ssl.create_default_context(cafile=self._ca_file)

    def deliver(self, destination: str, payload: Mapping[str, Any]) -> Attempt:
        try:
            stored = self._composer.open(destination, payload)
        except MailUnreadable as exc:
            return Attempt(Outcome.GIVE_UP, str(exc))
        message = self._composer.email_message(stored)
        try:
            smtp = self._connect()
        except smtplib.SMTPAuthenticationError as exc:
            return Attempt(Outcome.RETRY, f"SMTP {exc.smtp_code} login refused")
        except smtplib.SMTPNotSupportedError:
            return Attempt(Outcome.RETRY, "SMTP server offers no STARTTLS or AUTH")
        except smtplib.SMTPResponseException as exc:
            # A greeting, EHLO or STARTTLS refused: the server's state, not this message's.
            return Attempt(Outcome.RETRY, f"SMTP {exc.smtp_code} refused the session")
        except (smtplib.SMTPException, OSError) as exc:
            return Attempt(Outcome.RETRY, _connection_error(exc))
        try:
            smtp.send_message(
                message, from_addr=self._composer.sender.addr_spec, to_addrs=[destination]
            )
        except smtplib.SMTPRecipientsRefused as exc:
            code = next(iter(exc.recipients.values()))[0]
            return attempt_of_smtp_code(code, "recipient refused")
        except smtplib.SMTPSenderRefused as exc:
            return attempt_of_smtp_code(exc.smtp_code, "sender refused")
        except smtplib.SMTPDataError as exc:
            return attempt_of_smtp_code(exc.smtp_code, "message refused")
        except smtplib.SMTPNotSupportedError:
            # An address that needs SMTPUTF8 (RFC 6531) and a server without it: for good.
            return Attempt(Outcome.GIVE_UP, "SMTP server cannot take this address (SMTPUTF8)")
        except (smtplib.SMTPException, OSError) as exc:
            return Attempt(Outcome.RETRY, _connection_error(exc))
        else:
            # The server took the message; how it says goodbye is no matter.
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()
            return DELIVERED
        finally:
            smtp.close()

    def _connect(self) -> smtplib.SMTP:
        server = self._server
        smtp: smtplib.SMTP
        smtp = _SMTPS(self._deadline, self._tls) if server.implicit_tls else _SMTP(self._deadline)
        try:
            smtp.connect(server.host, server.port)
            smtp.ehlo()
            if server.starttls:
                smtp.starttls(context=self._tls)
                smtp.ehlo()
            if server.username:
                smtp.login(server.username, server.password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def audit_subject(self, payload: Mapping[str, Any]) -> AuditSubject:
        return _audit_subject(payload)


def _connection_error(exc: BaseException) -> str:
    # smtplib turns a socket error while reading a reply into SMTPServerDisconnected.
    if isinstance(exc, smtplib.SMTPServerDisconnected) and isinstance(exc.__context__, OSError):
        exc = exc.__context__
    if isinstance(exc, ConnectionRefusedError):
        return "SMTP connection refused"
    if isinstance(exc, TimeoutError):
        return "SMTP server did not answer in time"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "SMTP server's TLS certificate is not trusted"
    if isinstance(exc, ssl.SSLError):
        return "TLS with the SMTP server failed"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return "SMTP server closed the connection"
    return f"SMTP: {type(exc).__name__}"


# -- development ---------------------------------------------------------------------------


class ConsoleMailChannel:
    """Development without ``AUTHSERVER_SMTP_URL``: "sends" a message by writing it to the
    log, body and links included (the only place a body is ever logged, and never in
    production), and leaves it in the outbox for ``/dev/mail``."""

    def __init__(self, composer: MailComposer) -> None:
        self._composer = composer

    def deliver(self, destination: str, payload: Mapping[str, Any]) -> Attempt:
        try:
            stored = self._composer.open(destination, payload)
        except MailUnreadable as exc:
            return Attempt(Outcome.GIVE_UP, str(exc))
        log.warning(
            "development mail (AUTHSERVER_SMTP_URL is not set; also at /dev/mail)\n"
            "To: %s\nSubject: %s\nMessage-ID: %s\n\n%s",
            destination,
            stored.content.subject,
            stored.message_id,
            stored.content.text.rstrip(),
        )
        return DELIVERED

    def audit_subject(self, payload: Mapping[str, Any]) -> AuditSubject:
        return _audit_subject(payload)


@dataclass(frozen=True)
class MailboxEntry:
    """One message at /dev/mail."""

    id: int
    to: str
    status: str
    created_at: datetime
    message_id: str
    subject: str
    text: str
    html: str


def _entry(composer: MailComposer, row: OutboundMessage) -> MailboxEntry | None:
    try:
        stored = composer.open(row.destination, row.payload)
    except MailUnreadable:
        return None
    return MailboxEntry(
        id=row.id,
        to=row.destination,
        status="sent" if row.delivered_at else "given up" if row.gave_up_at else "pending",
        created_at=row.created_at,
        message_id=stored.message_id,
        subject=stored.content.subject,
        text=stored.content.text,
        html=stored.content.html,
    )


def recent_mail(db: Session, composer: MailComposer, limit: int = 50) -> list[MailboxEntry]:
    """The newest messages in the outbox, opened (development's /dev/mail; purge removes
    them a day after they were sent)."""
    rows = db.scalars(
        select(OutboundMessage)
        .where(OutboundMessage.channel == CHANNEL)
        .order_by(OutboundMessage.id.desc())
        .limit(limit)
    ).all()
    return [entry for row in rows if (entry := _entry(composer, row)) is not None]


def mailbox_entry(db: Session, composer: MailComposer, message_id: int) -> MailboxEntry | None:
    row = db.get(OutboundMessage, message_id)
    if row is None or row.channel != CHANNEL:
        return None
    return _entry(composer, row)
