"""The long-lived objects of one server process, built once by ``create_app``.

Flask views and the authlib glue reach them through ``runtime()``; services receive what they
need as arguments and never look here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import Flask, current_app
from sqlalchemy.orm import Session, sessionmaker

from authserver.config import Config, parse_rate_limit
from authserver.db import DatabaseState, utcnow
from authserver.models import Client, SigningKey
from authserver.services.access_tokens import AccessTokenIssuer
from authserver.services.audit import row_writer
from authserver.services.audit_queue import AuditQueue
from authserver.services.backchannel_logout import CHANNEL as BACKCHANNEL_LOGOUT
from authserver.services.backchannel_logout import BackchannelLogoutChannel
from authserver.services.client_cache import ClientCache
from authserver.services.dpop_proofs import DPoPNonces
from authserver.services.key_notifications import KeyChangeListener
from authserver.services.keys import (
    KeyCipher,
    KeyRing,
    KeySchedule,
    maintain_signing_keys,
    published_key_rows,
)
from authserver.services.mail import CHANNEL as MAIL
from authserver.services.mail import (
    ConsoleMailChannel,
    MailComposer,
    SmtpMailChannel,
    mail_templates,
)
from authserver.services.outbox import Channel, DeliveryReport, OutboxPolicy, deliver_due
from authserver.services.outbox_sender import OutboxSender
from authserver.services.password_policy import PasswordPolicy
from authserver.services.passwords import PasswordHasher
from authserver.services.refresh_tokens import RefreshPolicy, RotationBudget
from authserver.services.revocations import longest_access_token_ttl
from authserver.services.security_events import PUSH_CHANNEL as SECURITY_EVENT_PUSH
from authserver.services.security_events import SecurityEventPushChannel
from authserver.services.security_notices import SecurityNotices, security_notices
from authserver.services.sign_in_throttle import ThrottlePolicy

EXTENSION_KEY = "authserver.runtime"
# How often an idle in-process outbox sender looks for messages other processes wrote (and
# never less often than the longest retry interval).
OUTBOX_SWEEP_SECONDS = 5.0


@dataclass
class Runtime:
    config: Config
    hasher: PasswordHasher
    # What every new password must be (CLI, account page, later reset and sign-up).
    password_policy: PasswordPolicy
    key_cipher: KeyCipher
    keys: KeyRing
    access_tokens: AccessTokenIssuer
    clients: ClientCache
    # token_issued audit rows waiting to be written; None writes them in the request.
    audit_queue: AuditQueue | None = None
    # The time every request handler uses; tests replace it to move through expiries.
    clock: Callable[[], datetime] = utcnow
    # When a breach of each rate limit and caller was last audited (http/rate_limits.py).
    rate_limit_reports: dict[str, float] = field(default_factory=dict)
    # The outbox's channels by name (services/outbox.py): what each kind of message is
    # delivered by: back-channel logout, Security Event Token push, e-mail (only where this
    # process may send it). A new kind of message adds one here.
    outbox_channels: dict[str, Channel] = field(default_factory=dict)
    outbox_policy: OutboxPolicy | None = None
    # This process's sender thread (AUTHSERVER_OUTBOX_IN_PROCESS); None when it is off.
    outbox_sender: OutboxSender | None = None
    # Renders, seals and opens e-mail (services/mail.py); None only in hand-built runtimes.
    mail: MailComposer | None = None
    # PostgreSQL only: re-reads the keys when another process changes them.
    key_listener: KeyChangeListener | None = None
    # AUTHSERVER_DPOP_NONCE: the nonces DPoP proofs must carry (RFC 9449 §8); None: none.
    dpop_nonces: DPoPNonces | None = None

    def now(self) -> datetime:
        return self.clock()

    def refresh_policy(self, client: Client) -> RefreshPolicy:
        return RefreshPolicy.for_client(
            client,
            idle_ttl=self.config.refresh_idle_ttl,
            absolute_ttl=self.config.refresh_absolute_ttl,
            reuse_grace=self.config.refresh_reuse_grace,
            rotation_budget=self.rotation_budget,
        )

    @property
    def rotation_budget(self) -> RotationBudget | None:
        """A family's budget of rotations (AUTHSERVER_RATELIMIT_PER_FAMILY); None when rate
        limits are off."""
        if not self.config.ratelimit_enabled:
            return None
        rate = parse_rate_limit(self.config.ratelimit_per_family)
        return RotationBudget(rate.amount, timedelta(seconds=rate.get_expiry()))

    @property
    def composer(self) -> MailComposer:
        """The mail composer, for the pages and commands that mail (``mail`` is None only in
        hand-built runtimes)."""
        assert self.mail is not None  # every runtime create_app builds has one
        return self.mail

    @property
    def notices(self) -> SecurityNotices:
        """The security notices this server mails (services/security_notices.py)."""
        return security_notices(self.config, self.composer)

    @property
    def throttle_policy(self) -> ThrottlePolicy:
        return ThrottlePolicy(
            free_failures=self.config.signin_free_failures,
            failures_per_window=self.config.signin_failures_per_hour,
        )

    def access_token_ttl(self, client: Client) -> int:
        return client.access_token_ttl or self.config.access_token_ttl

    def deliver_outbox(
        self, session_factory: sessionmaker[Session], *, only: str | None = None
    ) -> DeliveryReport:
        """Deliver every outbox message that is due now, or only those of the channel
        ``only`` (the sender thread, `authserver outbox deliver`, `authserver mail deliver`,
        tests)."""
        assert self.outbox_policy is not None
        channels = self.outbox_channels
        if only is not None:
            channels = {only: channels[only]} if only in channels else {}
        return deliver_due(session_factory, channels, self.outbox_policy, clock=self.now)


def outbox_policy(config: Config) -> OutboxPolicy:
    return OutboxPolicy(
        retry_max=timedelta(seconds=config.outbox_retry_max_seconds),
        give_up_after=timedelta(seconds=config.outbox_give_up_seconds),
    )


def key_schedule(config: Config, longest_token_ttl: timedelta) -> KeySchedule:
    refresh = timedelta(seconds=config.key_refresh_interval)
    return KeySchedule(
        publish_delay=timedelta(seconds=config.jwks_max_age) + refresh,
        # A minute of slack for clocks that disagree across machines.
        retired_for=longest_token_ttl + refresh + timedelta(minutes=1),
        rotate_every=(
            timedelta(days=config.key_rotation_days) if config.key_rotation_days else None
        ),
    )


def _key_loader(
    db_state: DatabaseState, cipher: KeyCipher, config: Config
) -> Callable[[], list[SigningKey]]:
    def load_rows() -> list[SigningKey]:
        # Its own short transaction: never part of a request's unit of work.
        with db_state.session_factory() as session, session.begin():
            schedule = key_schedule(
                config, longest_access_token_ttl(session, config.access_token_ttl)
            )
            maintain_signing_keys(session, cipher, config.signing_alg, utcnow(), schedule)
            rows = published_key_rows(session)
            session.expunge_all()
            return rows

    return load_rows


def _mail_channel(config: Config, mail: MailComposer) -> Channel | None:
    """Who sends e-mail from this process (services/mail.py): the SMTP server when one is
    configured, in every mode; the console in development; nobody otherwise, which leaves
    mail to the processes that have AUTHSERVER_SMTP_URL (`authserver mail deliver`)."""
    server = config.smtp_server
    if server is not None:
        return SmtpMailChannel(server, mail, ca_file=config.smtp_ca_file or None)
    if not config.is_production:
        return ConsoleMailChannel(mail)
    return None


def build_runtime(config: Config, db_state: DatabaseState) -> Runtime:
    hasher = PasswordHasher(
        time_cost=config.argon2_time_cost,
        memory_cost_kib=config.argon2_memory_cost_kib,
        parallelism=config.argon2_parallelism,
        max_bytes=config.password_max_bytes,
        concurrency=config.hash_concurrency,
    )
    password_policy = PasswordPolicy.for_issuer(
        config.issuer,
        min_length=config.password_min_length,
        max_bytes=config.password_max_bytes,
        min_score=config.password_min_score,
    )
    cipher = KeyCipher(config.key_encryption_key)
    mail = MailComposer(
        config.product_name,
        config.mail_sender,
        config.key_encryption_key,
        templates=mail_templates(config.template_dir),
    )
    keys = KeyRing(_key_loader(db_state, cipher, config), cipher, config.key_refresh_interval)
    built = Runtime(
        config=config,
        hasher=hasher,
        password_policy=password_policy,
        key_cipher=cipher,
        keys=keys,
        access_tokens=AccessTokenIssuer(config.issuer, keys),
        clients=ClientCache(timedelta(seconds=config.client_cache_seconds)),
        audit_queue=(
            AuditQueue(row_writer(db_state.run_alone), config.token_audit_flush_ms / 1000)
            if config.token_audit_flush_ms
            else None
        ),
        outbox_channels={
            BACKCHANNEL_LOGOUT: BackchannelLogoutChannel(config.issuer, keys),
            SECURITY_EVENT_PUSH: SecurityEventPushChannel(config.issuer, keys),
        },
        outbox_policy=outbox_policy(config),
        mail=mail,
        dpop_nonces=DPoPNonces(config.secret_key) if config.dpop_nonce else None,
    )
    mail_channel = _mail_channel(config, mail)
    if mail_channel is not None:
        built.outbox_channels[MAIL] = mail_channel
    if config.key_change_notifications and db_state.engine.dialect.name == "postgresql":
        # A connection of its own, outside the pool: it stays in LISTEN for the process's life.
        conninfo = db_state.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        built.key_listener = KeyChangeListener(conninfo, keys.refresh)
    if config.outbox_in_process:
        built.outbox_sender = OutboxSender(
            # The factory is looked up at each round: tests swap it.
            lambda: built.deliver_outbox(db_state.session_factory),
            sweep_seconds=min(OUTBOX_SWEEP_SECONDS, config.outbox_retry_max_seconds),
            clock=built.now,
        )
    return built


def attach_runtime(app: Flask, runtime_: Runtime) -> None:
    app.extensions[EXTENSION_KEY] = runtime_


def runtime(app: Flask | None = None) -> Runtime:
    target = app if app is not None else current_app
    found: Runtime = target.extensions[EXTENSION_KEY]
    return found
