"""A real SMTP server on 127.0.0.1 for the mail tests (aiosmtpd on an event loop of its own
thread): plain, STARTTLS or implicit TLS, with or without AUTH, refusing what a test tells
it to; and a certificate authority of the test's own that the client is told to trust.

What it received is parsed as a mail client parses it: ``email.message_from_bytes`` with the
default policy.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import listening_socket
from tests.helpers import HANG_SECONDS

USER = "mailer"
PASSWORD = "s3cret-smtp-password"


@dataclass
class Mailbox:
    """The server's handler: keeps every message it accepted, and answers RCPT and DATA
    with the replies queued in ``rcpt_replies`` and ``data_replies`` first (then 250).
    ``offered``: every message it was sent, accepted or not."""

    rcpt_replies: list[str] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    received: list[EmailMessage] = field(default_factory=list)
    offered: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook names)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.arrived:
            self.offered.append(message)
            if self.data_replies:
                return self.data_replies.pop(0)
            self.received.append(message)
            self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
            self.arrived.notify_all()
        return "250 Message accepted for delivery"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = data.login.decode() == USER and data.password.decode() == PASSWORD
        if ok:
            self.logins.append(data.login.decode())
        return AuthResult(success=ok, handled=False)


@contextmanager
def smtp_server(
    mailbox: Mailbox,
    *,
    sock: socket.socket | None = None,
    starttls: ssl.SSLContext | None = None,
    implicit_tls: ssl.SSLContext | None = None,
    auth: bool = False,
) -> Iterator[int]:
    """Serve ``mailbox`` on ``sock`` (a fresh listening socket by default); yields the port."""
    listener = sock if sock is not None else listening_socket()
    if sock is not None:
        listener.listen(16)
    port: int = listener.getsockname()[1]
    loop = asyncio.new_event_loop()

    def protocol() -> SMTP:
        with warnings.catch_warnings():
            # "Requiring AUTH while not requiring TLS": aiosmtpd knows only STARTTLS, and
            # over implicit TLS the connection is encrypted from the first byte.
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return _smtp()

    def _smtp() -> SMTP:
        return SMTP(
            mailbox,
            hostname="mail.test",
            tls_context=starttls,
            require_starttls=starttls is not None,
            authenticator=mailbox.authenticate if auth else None,
            auth_required=auth,
            # Over implicit TLS the connection is already encrypted; aiosmtpd only knows
            # STARTTLS.
            auth_require_tls=implicit_tls is None,
            loop=loop,
        )

    thread = threading.Thread(target=loop.run_forever, daemon=True, name="test-smtp-server")
    thread.start()
    server = asyncio.run_coroutine_threadsafe(
        loop.create_server(protocol, sock=listener, ssl=implicit_tls), loop
    ).result(HANG_SECONDS)
    try:
        yield port
    finally:

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(HANG_SECONDS)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(HANG_SECONDS)
        loop.close()


@dataclass(frozen=True)
class LocalAuthority:
    """A CA made for one test, and a server certificate it signed for 127.0.0.1."""

    ca_file: Path
    server_context: ssl.SSLContext


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_authority(folder: Path) -> LocalAuthority:
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("authserver test CA"))
        .issuer_name(_name("authserver test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file = folder / "server.pem"
    cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_file = folder / "server.key"
    key_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return LocalAuthority(ca_file=ca_file, server_context=context)
