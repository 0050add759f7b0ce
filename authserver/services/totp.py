"""An authenticator app as a second factor: time-based one-time passwords (RFC 6238).

- *Enrolment*: ``begin_enrolment`` draws a 160-bit secret (RFC 4226 §4 R6) and returns it
  twice, as the manual key (base32) and as an ``otpauth://`` URI for a QR code; the app is
  not trusted until ``confirm_enrolment`` is given a code it made, so a mistyped key never
  locks anyone out. Beginning again replaces an enrolment that was not confirmed; a confirmed
  app must be removed (``remove_totp``) before another is enrolled.
- *At rest*: the secret is sealed with the signing keys' cipher (``keys.KeyCipher``,
  AES-256-GCM under AUTHSERVER_KEY_ENCRYPTION_KEY) with "totp:<user id>" as associated data,
  so a copy of the table, or a ciphertext moved to another user's row, yields no secret.
- *Codes*: 6 digits, HMAC-SHA-1, 30-second steps: the defaults every authenticator app
  supports (RFC 6238 §4, §5.2). The current step and one on either side are accepted, for
  the phone's clock drift and the time it takes to type (§5.2: "at most one time step").
- *Once*: the step of the last accepted code is kept, and a code of that step or an earlier
  one is refused (§5.2: "the verifier MUST NOT accept the second attempt of the same OTP").
  Recording it is one conditional UPDATE, so of two requests racing with one code exactly one
  gets in.

Guessing is throttled by the caller, ``services/second_factors.py``, like passwords.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import pyotp
from sqlalchemy import Table, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from authserver.errors import KeyDecryptionError, ValidationError
from authserver.models import RecoveryCode, TotpCredential, User
from authserver.services.audit import AuditEventType, record
from authserver.services.keys import KeyCipher

SECRET_BYTES = 20  # 160 bits, RFC 4226 §4 requirement R6's recommended length
CODE_DIGITS = 6
STEP_SECONDS = 30
# RFC 6238 §5.2: accept codes of the previous and next step, and no further.
DRIFT_STEPS = 1
# What a typed code may look like: six ASCII digits, spaces allowed ("123 456", as many apps
# show it). Anything else is refused before the database is asked.
_CODE = re.compile(r"[0-9]{6}")
# Longer input is not a code with spaces in it; not even scanned.
MAX_CODE_INPUT = 16
_CREDENTIALS = cast(Table, TotpCredential.__table__)


class TotpAlreadyEnrolled(ValidationError):
    default_description = (
        "An authenticator app is already set up for this account; remove it first."
    )


class NoTotpEnrolment(ValidationError):
    default_description = "There is no authenticator app being set up for this account."


class TotpSecretUnreadable(Exception):
    """A stored secret does not open: AUTHSERVER_KEY_ENCRYPTION_KEY changed, or the row's
    ciphertext is not its own (copied from another user's row)."""


@dataclass(frozen=True)
class TotpEnrolment:
    """What the enrolment page shows, once: the key to type and the URI to scan."""

    secret: str  # base32 (RFC 4648), no padding: the manual key
    uri: str  # otpauth://totp/<issuer>:<email>?secret=...&issuer=...


def time_step(now: datetime) -> int:
    """RFC 6238 §4.2: T = floor((Unix time - T0) / X), T0 = 0, X = 30 seconds."""
    return int(now.timestamp()) // STEP_SECONDS


def normalize_code(code: str) -> str | None:
    """The six digits of a typed code, or None for anything that is not one (letters, other
    lengths, non-ASCII digits such as "١٢٣٤٥٦", megabytes)."""
    if len(code) > MAX_CODE_INPUT:
        return None
    cleaned = code.strip().replace(" ", "")
    return cleaned if _CODE.fullmatch(cleaned) else None


def _associated_data(user_id: uuid.UUID) -> str:
    # One credential per user, so the user binds the ciphertext to its row; the prefix keeps
    # it apart from the signing keys' kids under the same cipher.
    return f"totp:{user_id}"


def _open_secret(cipher: KeyCipher, credential: TotpCredential) -> bytes:
    try:
        return cipher.open(credential.secret_ciphertext, _associated_data(credential.user_id))
    except KeyDecryptionError as exc:
        raise TotpSecretUnreadable(
            f"the TOTP secret of user {credential.user_id} does not decrypt with "
            "AUTHSERVER_KEY_ENCRYPTION_KEY"
        ) from exc


def _authenticator(manual_key: str) -> pyotp.TOTP:
    # HMAC-SHA-1: RFC 6238's default and the one algorithm every authenticator app supports
    # (HOTP's security rests on HMAC, not on SHA-1's collision resistance; RFC 4226 App. A).
    return pyotp.TOTP(manual_key, digits=CODE_DIGITS, digest=hashlib.sha1, interval=STEP_SECONDS)


def _code_at(secret: bytes, step: int) -> str:
    return _authenticator(base64.b32encode(secret).decode()).generate_otp(step)


def _matching_step(secret: bytes, code: str, now: datetime, after: int | None) -> int | None:
    """The step within the drift window, later than ``after``, whose code is ``code``."""
    current = time_step(now)
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if after is not None and step <= after:
            continue
        if hmac.compare_digest(_code_at(secret, step), code):
            return step
    return None


def _credential(session: Session, user: User) -> TotpCredential | None:
    # populate_existing: the statements below change rows behind the ORM's back.
    return session.scalars(
        select(TotpCredential)
        .where(TotpCredential.user_id == user.id)
        .execution_options(populate_existing=True)
    ).one_or_none()


def _store_secret(session: Session, user: User, sealed: bytes, now: datetime) -> None:
    existing = _credential(session, user)
    if existing is None:
        try:
            # A savepoint: of two enrolments begun at once (two tabs), the second waits on
            # the unique index, fails here, and replaces the first's secret below.
            with session.begin_nested():
                session.add(
                    TotpCredential(user_id=user.id, secret_ciphertext=sealed, created_at=now)
                )
            return
        except IntegrityError:
            existing = _credential(session, user)
            assert existing is not None  # the row that made the insert fail
    # Conditional: an app confirmed meanwhile keeps its secret.
    replaced = session.execute(
        update(_CREDENTIALS)
        .where(_CREDENTIALS.c.id == existing.id, _CREDENTIALS.c.confirmed_at.is_(None))
        .values(secret_ciphertext=sealed, created_at=now, last_used_step=None)
        .returning(_CREDENTIALS.c.id)
    ).scalar_one_or_none()
    if replaced is None:
        raise TotpAlreadyEnrolled()


def begin_enrolment(
    session: Session, cipher: KeyCipher, user: User, now: datetime, *, issuer: str
) -> TotpEnrolment:
    """A new secret for ``user``, replacing one not yet confirmed; TotpAlreadyEnrolled when
    an app is confirmed. ``issuer``: the product's name, which the app shows beside the
    account's address."""
    secret = secrets.token_bytes(SECRET_BYTES)
    _store_secret(session, user, cipher.seal(secret, _associated_data(user.id)), now)
    manual_key = base64.b32encode(secret).decode()
    uri = _authenticator(manual_key).provisioning_uri(name=user.email, issuer_name=issuer)
    return TotpEnrolment(secret=manual_key, uri=uri)


def confirm_enrolment(
    session: Session,
    cipher: KeyCipher,
    user: User,
    code: str,
    now: datetime,
    *,
    ip_address: str | None = None,
    user_agent: str | None = None,
) -> bool:
    """Confirm the enrolment with a code from the app: True, and from now on the app is a
    second factor (and this code is spent). False for a wrong code: the enrolment stays
    unconfirmed. NoTotpEnrolment when nothing is being enrolled (or it is confirmed already)."""
    credential = _credential(session, user)
    if credential is None or credential.confirmed_at is not None:
        raise NoTotpEnrolment()
    typed = normalize_code(code)
    if typed is None:
        return False
    step = _matching_step(_open_secret(cipher, credential), typed, now, after=None)
    if step is None:
        return False
    # Only the secret this code was checked against, and only if still unconfirmed: an
    # enrolment begun again meanwhile (another tab) is not confirmed by the old app's code.
    confirmed = session.execute(
        update(_CREDENTIALS)
        .where(
            _CREDENTIALS.c.id == credential.id,
            _CREDENTIALS.c.confirmed_at.is_(None),
            _CREDENTIALS.c.secret_ciphertext == credential.secret_ciphertext,
        )
        .values(confirmed_at=now, last_used_step=step)
        .returning(_CREDENTIALS.c.id)
    ).scalar_one_or_none()
    if confirmed is None:
        return False
    record(
        session,
        AuditEventType.TOTP_ENROLLED,
        now,
        user_id=user.id,
        ip_address=ip_address,
        user_agent=user_agent,
    )
    return True


def has_confirmed_totp(session: Session, user: User) -> bool:
    """Whether signing in to this account takes a code from an authenticator app."""
    return (
        session.scalar(
            select(TotpCredential.id).where(
                TotpCredential.user_id == user.id, TotpCredential.confirmed_at.is_not(None)
            )
        )
        is not None
    )


def verify_code(session: Session, cipher: KeyCipher, user: User, code: str, now: datetime) -> bool:
    """Whether ``code`` is a code of the user's confirmed app that has not been used, and
    spend it. Not throttled here: sign-in goes through ``second_factors.check_second_factor``.

    False, without a query, for anything that is not six digits; False for an unconfirmed
    enrolment, a code outside the drift window, and a code of a step no later than the last
    accepted one (the same code again, or an older one after a newer)."""
    typed = normalize_code(code)
    if typed is None:
        return False
    credential = _credential(session, user)
    if credential is None or credential.confirmed_at is None:
        return False
    step = _matching_step(
        _open_secret(cipher, credential), typed, now, after=credential.last_used_step
    )
    if step is None:
        return False
    # The check that counts is this statement's: of two requests with one code, the second
    # waits on the first's row lock, then finds last_used_step = step and updates nothing.
    spent = session.execute(
        update(_CREDENTIALS)
        .where(
            _CREDENTIALS.c.id == credential.id,
            _CREDENTIALS.c.confirmed_at.is_not(None),
            or_(_CREDENTIALS.c.last_used_step.is_(None), _CREDENTIALS.c.last_used_step < step),
        )
        .values(last_used_step=step)
        .returning(_CREDENTIALS.c.id)
    ).scalar_one_or_none()
    return spent is not None


def remove_totp(
    session: Session,
    user: User,
    now: datetime,
    *,
    by_operator: bool = False,
    ip_address: str | None = None,
    user_agent: str | None = None,
) -> bool:
    """Turn the second factor off: the app (confirmed or not) and the recovery codes, which
    back up nothing without it (left behind, they would come back to life with the next
    app). True if there was an app."""
    removed = session.execute(
        delete(_CREDENTIALS)
        .where(_CREDENTIALS.c.user_id == user.id)
        .returning(_CREDENTIALS.c.confirmed_at)
    ).all()
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    if not removed:
        return False
    if removed[0].confirmed_at is not None:
        record(
            session,
            AuditEventType.TOTP_REMOVED,
            now,
            user_id=user.id,
            ip_address=ip_address,
            user_agent=user_agent,
            method="operator" if by_operator else "account_page",
        )
    return True


def pending_enrolment(
    session: Session, cipher: KeyCipher, user: User, *, issuer: str
) -> TotpEnrolment | None:
    """The enrolment being set up (begun, not confirmed), to show its key again after a
    wrong confirmation code; None when there is none."""
    credential = _credential(session, user)
    if credential is None or credential.confirmed_at is not None:
        return None
    manual_key = base64.b32encode(_open_secret(cipher, credential)).decode()
    uri = pyotp.TOTP(manual_key, digits=CODE_DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=user.email, issuer_name=issuer
    )
    return TotpEnrolment(secret=manual_key, uri=uri)
