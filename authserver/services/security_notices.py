"""Security notices: the mail that tells a user something happened to their account that
they may not have done themselves (OWASP ASVS 5.0 6.3.7 and 6.2.x "notify the user"; NIST SP
800-63B §6.1.2.2 asks that a subscriber be notified of events such as a password change).

- *password changed*: on the account page, by a reset link, or by an operator
  (``users set-password``); said differently for each, since what the owner should do if it
  was not them differs;
- *refresh token reused*: a replayed refresh token revoked one of the user's app sign-ins
  (RFC 9700 §4.14.2): which app, which device signed in with it, from where, and the address
  the replay came from. Sent when the family is revoked by the replay, not for every later
  replay of a family already revoked, so an attacker replaying a token in a loop cannot fill
  the user's mailbox;
- *new device* (AUTHSERVER_NEW_DEVICE_NOTICES=1, off by default): a sign-in on the sign-in
  page from a browser that has not signed in to this account before (it carries no device
  cookie for it, ``http/rate_limits.remember_device``), except the account's first sign-in;
- *account deleted*: after the account page's "Delete account" or ``users delete``;
- *second factor*: an authenticator app added or removed, new recovery codes, a recovery code
  used to sign in (how many are left), a passkey added or removed, a passkey refused as a
  possible copy (the first time), the factors reset by an operator.

(The address change notices live with the change, ``services/email_change.py``.)

Every notice is written to the outbox in the transaction of the change it reports (a change
rolled back announces nothing) and carries no secret: no link token, no session id; its
links are the plain pages (account, sign-in, "Forgot password?"). A device is named by its
user agent, clipped, as the account page's device list names it.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from authserver.config import Config
from authserver.models import RefreshFamily, User
from authserver.services.mail import MailComposer, enqueue_mail

ACCOUNT_PATH = "/account"
SIGN_IN_PATH = "/login"
FORGOT_PATH = "/password/forgot"

PASSWORD_CHANGED = "password_changed"  # noqa: S105 (a template name)
REFRESH_REUSED = "refresh_token_reused"
NEW_DEVICE = "new_device_sign_in"
ACCOUNT_DELETED = "account_deleted"
SECOND_FACTOR = "second_factor"

# A user agent can be any length; a notice names the device, it does not reproduce the header.
MAX_DEVICE_LENGTH = 160


class PasswordChangedBy(enum.StrEnum):
    """Who replaced the password; the notice tells the owner what to do if it was not them."""

    ACCOUNT_PAGE = "account_page"
    RESET_LINK = "reset_link"
    OPERATOR = "operator"


class SecondFactorChange(enum.StrEnum):
    """What happened to the account's second factor (the ``second_factor`` notice)."""

    TOTP_ADDED = "totp_added"
    TOTP_REMOVED = "totp_removed"
    RECOVERY_CODES_REGENERATED = "recovery_codes_regenerated"
    RECOVERY_CODE_USED = "recovery_code_used"
    RESET_BY_OPERATOR = "reset_by_operator"
    PASSKEY_ADDED = "passkey_added"
    PASSKEY_REMOVED = "passkey_removed"
    # A sign-in with a passkey was refused: its counter went backwards (a copy may exist).
    PASSKEY_CLONE_SUSPECTED = "passkey_clone_suspected"


@dataclass(frozen=True)
class SecurityNotices:
    """What a notice needs: the composer, the absolute URLs its links point to, and whether
    new-device notices are on. Built from the configuration (``security_notices``), so a CLI
    command mails what a request would."""

    composer: MailComposer
    account_url: str
    sign_in_url: str
    forgot_url: str
    new_device_notices: bool = False

    def _send(
        self, session: Session, to: str, template: str, now: datetime, **context: Any
    ) -> None:
        enqueue_mail(
            session,
            self.composer,
            to=to,
            template=template,
            context={
                "account_url": self.account_url,
                "sign_in_url": self.sign_in_url,
                "forgot_url": self.forgot_url,
                **context,
            },
            now=now,
            user_id=context.get("user_id"),
        )

    def password_changed(
        self, session: Session, user: User, now: datetime, *, by: PasswordChangedBy
    ) -> None:
        self._send(session, user.email, PASSWORD_CHANGED, now, user_id=user.id, by=by.value)

    def refresh_token_reused(
        self,
        session: Session,
        family_id: uuid.UUID,
        now: datetime,
        *,
        replayed_from: str | None,
    ) -> bool:
        """Tell the family's user that a replay revoked it. False (nothing sent) when the
        family or its user is gone."""
        family = session.get(RefreshFamily, family_id)
        user = session.get(User, family.user_id) if family is not None else None
        if family is None or user is None:
            return False
        self._send(
            session,
            user.email,
            REFRESH_REUSED,
            now,
            user_id=user.id,
            app=family.client.name,
            device=device_name(family.user_agent),
            signed_in_at=family.created_at,
            signed_in_from=family.ip_address or "an unknown address",
            last_used_from=family.last_ip_address or family.ip_address or "an unknown address",
            replayed_from=replayed_from or "an unknown address",
            when=now,
        )
        return True

    def new_device_sign_in(
        self,
        session: Session,
        user: User,
        now: datetime,
        *,
        user_agent: str | None,
        ip_address: str | None,
    ) -> None:
        self._send(
            session,
            user.email,
            NEW_DEVICE,
            now,
            user_id=user.id,
            device=device_name(user_agent),
            address=ip_address or "an unknown address",
            when=now,
        )

    def second_factor_changed(
        self,
        session: Session,
        user: User,
        now: datetime,
        *,
        change: SecondFactorChange,
        name: str = "",
    ) -> None:
        """``name``: the passkey's, for the passkey changes."""
        self._send(
            session,
            user.email,
            SECOND_FACTOR,
            now,
            user_id=user.id,
            change=change.value,
            left=0,
            passkey=name,
        )

    def recovery_code_used(self, session: Session, user: User, now: datetime, *, left: int) -> None:
        self._send(
            session,
            user.email,
            SECOND_FACTOR,
            now,
            user_id=user.id,
            change=SecondFactorChange.RECOVERY_CODE_USED.value,
            left=left,
        )

    def account_deleted(
        self, session: Session, email: str, now: datetime, *, by_owner: bool
    ) -> None:
        # The account's row is gone by the time this is sent: the message names no user id.
        self._send(session, email, ACCOUNT_DELETED, now, by_owner=by_owner, when=now)


def device_name(user_agent: str | None) -> str:
    if not user_agent or not user_agent.strip():
        return "an unknown device"
    text = " ".join(user_agent.split())
    return text if len(text) <= MAX_DEVICE_LENGTH else text[: MAX_DEVICE_LENGTH - 1] + "…"


def security_notices(config: Config, composer: MailComposer) -> SecurityNotices:
    return SecurityNotices(
        composer=composer,
        account_url=config.issuer + ACCOUNT_PATH,
        sign_in_url=config.issuer + SIGN_IN_PATH,
        forgot_url=config.issuer + FORGOT_PATH,
        new_device_notices=bool(config.new_device_notices),
    )
