"""Passkeys: WebAuthn public-key credentials (W3C Web Authentication Level 3), registered
from the account page, signing in without a password and serving as the second step after
one. The ceremonies' cryptography is py_webauthn's; what is decided here:

- *Relying party*: the RP ID is the issuer's host (WebAuthn §5.1.3), the RP name the product's
  name, and the only origin accepted is the issuer's (scheme, host, port). A credential
  registered for another host, or an assertion made on another origin, is refused.
- *User handle*: the account's id (16 bytes of a random UUID). It names no person (§14.6.1),
  it never changes with the address, and a discoverable credential hands it back, so a
  passwordless sign-in can check that the credential is still the account's it was made for.
- *User verification*: required to register (a passkey is meant to sign in on its own) and to
  sign in without a password (then the passkey is two factors: the device and the PIN or
  biometric that unlocks it); only preferred at the second step, where the password is the
  other factor.
- *Discoverable*: resident key required at registration, so "Sign in with a passkey" and the
  browser's autofill (conditional mediation) need no address first: allowCredentials is empty.
  At the second step it lists the account's passkeys.
- *Challenges* (``PasskeyChallenge``): 32 random bytes, five minutes, only their SHA-256 kept,
  bound to a purpose (registration, sign-in, second step) and, but for a passwordless
  sign-in, to the user; used once: the row is found and removed by one ``DELETE ... RETURNING``
  keyed by the challenge the browser signed (from clientDataJSON), so of two requests with
  one challenge exactly one gets it.
- *Signature counter* (§6.1.1 step 17, §6.1.3): when the stored or the new counter is not zero
  and the new one is not greater, the authenticator may have been cloned. The signature is
  checked first (a counter alone proves nothing), then the sign-in is refused, audited
  ``passkey_clone_suspected``, the passkey marked and, the first time, the user mailed; the
  passkey keeps working for the authenticator whose counter moves on, and the owner decides
  on the account page whether to remove it.
- *amr* (RFC 8176): ``hwk`` for a credential bound to one device (not backup eligible),
  ``swk`` for a synced one; a passwordless sign-in (user verified) is ``hwk mfa`` / ``swk
  mfa``, after the password ``pwd hwk mfa`` / ``pwd swk mfa``.
"""

from __future__ import annotations

import enum
import hashlib
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlsplit

from sqlalchemy import Table, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    parse_authentication_credential_json,
    parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticationCredential,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    RegistrationCredential,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from authserver.config import Config
from authserver.errors import NotFound, TooManyAttempts, ValidationError
from authserver.models import BrowserSession, Passkey, PasskeyChallenge, User
from authserver.services.account_links import LinkPurpose, redeem_link
from authserver.services.audit import AuditEventType, record
from authserver.services.browser_sessions import SessionPolicy, StartedSession
from authserver.services.second_factor_enrolment import require_full_recent_sign_in
from authserver.services.second_factors import (
    SecondStepExpired,
    second_factor_throttle_account,
    user_of_second_step,
)
from authserver.services.security_notices import SecondFactorChange, SecurityNotices
from authserver.services.sign_in import PASSWORD_FORM, RequestContext, finish_browser_sign_in
from authserver.services.sign_in_throttle import (
    ThrottlePolicy,
    record_failure,
    record_success,
    seconds_to_wait,
)

CHALLENGE_TTL = timedelta(minutes=5)
CHALLENGE_BYTES = 32
# What the browser is told to wait for the user (WebAuthn "timeout", a hint), the challenge's
# lifetime: past it, the answer would be refused anyway.
TIMEOUT_MS = int(CHALLENGE_TTL.total_seconds() * 1000)
MAX_NAME_LENGTH = 64
DEFAULT_NAME = "Passkey"
# A credential id is at most 1023 bytes (WebAuthn §4); a JSON body past this is not a
# WebAuthn response (the views refuse bigger bodies before parsing).
MAX_CREDENTIAL_JSON = 64 * 1024

# Passwordless failures have no account to count under before the credential is known: they
# are counted per address under this key, the per-address delay only (an "everywhere" cap on
# one key shared by every account would let anyone stop everyone's passkey sign-ins).
PASSWORDLESS_THROTTLE = "passkey:"
PASSWORDLESS = "passkey"
SECOND_STEP_METHOD = f"{PASSWORD_FORM}+passkey"

# Anything a hostile or broken browser can make py_webauthn's parsers and verifiers raise.
_MALFORMED = (
    WebAuthnException,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
)
_CHALLENGES = cast(Table, PasskeyChallenge.__table__)


class ChallengePurpose(enum.StrEnum):
    REGISTRATION = "registration"
    SIGN_IN = "sign_in"
    SECOND_FACTOR = "second_factor"


@dataclass(frozen=True)
class RelyingParty:
    """Who the credentials are for: derived from the issuer, never from the request."""

    rp_id: str
    name: str
    origin: str


def relying_party(config: Config) -> RelyingParty:
    parts = urlsplit(config.issuer)
    return RelyingParty(
        rp_id=parts.hostname or "",
        name=config.product_name,
        origin=f"{parts.scheme}://{parts.netloc}",
    )


class PasskeyRefused(ValidationError):
    """The browser's answer was not accepted (malformed, wrong origin or RP ID, bad
    signature, user not verified): nothing changed."""

    default_description = "The passkey could not be checked. Try again."


class ChallengeExpired(PasskeyRefused):
    default_description = "That took too long, or the request was already used. Try again."


class UnknownPasskey(PasskeyRefused):
    """No such credential here (never registered, or removed), or not this account's."""

    default_description = "This passkey is not registered here. It may have been removed."


class PasskeyCloneSuspected(PasskeyRefused):
    default_description = (
        "This passkey was refused: its signature counter went backwards, a sign that it "
        "may have been copied. Sign in another way and check your passkeys."
    )


class PasskeyAlreadyRegistered(PasskeyRefused):
    default_description = "This passkey is already registered."


class PasskeyThrottled(TooManyAttempts):
    """Too many refused passkeys from here: refused before anything is checked."""


# -- challenges ----------------------------------------------------------------------------


def _digest(challenge: bytes) -> bytes:
    return hashlib.sha256(challenge).digest()


def _issue_challenge(
    session: Session, purpose: ChallengePurpose, user_id: uuid.UUID | None, now: datetime
) -> bytes:
    challenge = secrets.token_bytes(CHALLENGE_BYTES)
    session.add(
        PasskeyChallenge(
            challenge_digest=_digest(challenge),
            purpose=purpose.value,
            user_id=user_id,
            created_at=now,
            expires_at=now + CHALLENGE_TTL,
        )
    )
    session.flush()
    return challenge


def _consume_challenge(
    session: Session,
    challenge: bytes,
    purpose: ChallengePurpose,
    user_id: uuid.UUID | None,
    now: datetime,
) -> None:
    """Use up the challenge the browser signed: it must be ours, of this purpose, for this
    user (None: a passwordless sign-in's, which names nobody) and alive; ChallengeExpired.
    One statement, so a challenge is accepted at most once."""
    condition = (
        _CHALLENGES.c.user_id.is_(None) if user_id is None else (_CHALLENGES.c.user_id == user_id)
    )
    taken = session.execute(
        delete(_CHALLENGES)
        .where(
            _CHALLENGES.c.challenge_digest == _digest(challenge),
            _CHALLENGES.c.purpose == purpose.value,
            _CHALLENGES.c.expires_at > now,
            condition,
        )
        .returning(_CHALLENGES.c.id)
    ).first()
    if taken is None:
        raise ChallengeExpired()


def _signed_challenge(client_data_json: bytes) -> bytes:
    try:
        challenge = parse_client_data_json(client_data_json).challenge
    except _MALFORMED as exc:
        raise PasskeyRefused() from exc
    if not isinstance(challenge, bytes) or not challenge:
        raise PasskeyRefused()
    return challenge


def _as_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise PasskeyRefused()
    return body


# -- registration --------------------------------------------------------------------------


def user_handle(user: User) -> bytes:
    return user.id.bytes


def registration_options(
    session: Session, rp: RelyingParty, browser_session: BrowserSession, now: datetime
) -> str:
    """The options for ``navigator.credentials.create()``, as JSON. Like every change of
    factors: a sign-in from the last five minutes, with the account's second factor if it
    has one (SignInTooOld, SecondFactorNeeded)."""
    require_full_recent_sign_in(session, browser_session, now)
    user = browser_session.user
    challenge = _issue_challenge(session, ChallengePurpose.REGISTRATION, user.id, now)
    options = generate_registration_options(
        rp_id=rp.rp_id,
        rp_name=rp.name,
        user_name=user.email,
        user_id=user_handle(user),
        user_display_name=user.email,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            require_resident_key=True,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        # §5.4.3: the authenticators that already hold one of the account's passkeys decline,
        # so one device does not end up listed twice.
        exclude_credentials=[_descriptor(p) for p in list_passkeys(session, user)],
    )
    return options_to_json(options)


def clean_name(raw: str | None) -> str:
    """A passkey's name as the user typed it: one line, trimmed, at most 64 characters."""
    text = " ".join((raw or "").split())[:MAX_NAME_LENGTH].strip()
    return text or DEFAULT_NAME


def register_passkey(
    session: Session,
    rp: RelyingParty,
    notices: SecurityNotices,
    browser_session: BrowserSession,
    credential: Any,
    name: str | None,
    context: RequestContext,
) -> Passkey:
    """Verify the browser's answer to the registration options (§7.1) and keep the passkey;
    SignInTooOld, SecondFactorNeeded, PasskeyRefused (ChallengeExpired,
    PasskeyAlreadyRegistered)."""
    require_full_recent_sign_in(session, browser_session, context.now)
    user = browser_session.user
    try:
        parsed: RegistrationCredential = parse_registration_credential_json(_as_object(credential))
    except _MALFORMED as exc:
        raise PasskeyRefused() from exc
    challenge = _signed_challenge(parsed.response.client_data_json)
    _consume_challenge(session, challenge, ChallengePurpose.REGISTRATION, user.id, context.now)
    try:
        verified = verify_registration_response(
            credential=parsed,
            expected_challenge=challenge,
            expected_rp_id=rp.rp_id,
            expected_origin=rp.origin,
            require_user_verification=True,
        )
    except _MALFORMED as exc:
        raise PasskeyRefused() from exc
    transports = parsed.response.transports or []
    passkey = Passkey(
        user_id=user.id,
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        transports=",".join(t.value for t in transports),
        aaguid=verified.aaguid,
        backup_eligible=verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
        backed_up=verified.credential_backed_up,
        name=clean_name(name),
        created_at=context.now,
    )
    try:
        # A savepoint: the same credential registered twice at once (two tabs) fails one
        # insert on the unique credential id, not the request.
        with session.begin_nested():
            session.add(passkey)
    except IntegrityError as exc:
        raise PasskeyAlreadyRegistered() from exc
    _audit(session, AuditEventType.PASSKEY_ADDED, user.id, context, passkey_id=passkey.id)
    notices.second_factor_changed(
        session, user, context.now, change=SecondFactorChange.PASSKEY_ADDED, name=passkey.name
    )
    return passkey


# -- authentication ------------------------------------------------------------------------


def sign_in_options(session: Session, rp: RelyingParty, now: datetime) -> str:
    """Options for ``navigator.credentials.get()`` signing in without a password (a button
    or the browser's autofill): no allowCredentials, so the authenticator offers the
    discoverable credentials it holds for this RP; user verification required."""
    challenge = _issue_challenge(session, ChallengePurpose.SIGN_IN, None, now)
    options = generate_authentication_options(
        rp_id=rp.rp_id,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return options_to_json(options)


def second_step_options(session: Session, rp: RelyingParty, token: str, now: datetime) -> str:
    """Options for the second step after the password of the half-done sign-in ``token``:
    the account's passkeys only (SecondStepExpired)."""
    user = user_of_second_step(session, token, now)
    challenge = _issue_challenge(session, ChallengePurpose.SECOND_FACTOR, user.id, now)
    options = generate_authentication_options(
        rp_id=rp.rp_id,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        allow_credentials=[_descriptor(p) for p in list_passkeys(session, user)],
        user_verification=UserVerificationRequirement.PREFERRED,
    )
    return options_to_json(options)


def _descriptor(passkey: Passkey) -> PublicKeyCredentialDescriptor:
    transports = []
    for value in filter(None, passkey.transports.split(",")):
        try:
            transports.append(AuthenticatorTransport(value))
        except ValueError:
            continue  # a transport this library does not know yet: leave it out
    return PublicKeyCredentialDescriptor(id=passkey.credential_id, transports=transports or None)


def _verify_assertion(
    session: Session,
    rp: RelyingParty,
    notices: SecurityNotices,
    credential: Any,
    purpose: ChallengePurpose,
    user_id: uuid.UUID | None,
    context: RequestContext,
) -> Passkey:
    """§7.2 for one assertion: the challenge (used up), the credential (registered here and,
    with ``user_id``, that user's), origin, RP ID, signature, user verification when signing
    in without a password, then the counter. The passkey, updated; PasskeyRefused."""
    try:
        parsed: AuthenticationCredential = parse_authentication_credential_json(
            _as_object(credential)
        )
    except _MALFORMED as exc:
        raise PasskeyRefused() from exc
    challenge = _signed_challenge(parsed.response.client_data_json)
    _consume_challenge(session, challenge, purpose, user_id, context.now)
    passkey = _find(session, parsed.raw_id)
    if passkey is None or (user_id is not None and passkey.user_id != user_id):
        raise UnknownPasskey()
    handle = parsed.response.user_handle
    if handle is not None and handle != passkey.user_id.bytes:
        # §7.2 step 6: the user handle the authenticator holds must be the account's.
        raise UnknownPasskey()
    try:
        # The stored counter is not given to the library: it compares counters before it
        # checks the signature, and a lower counter on a forged answer proves nothing. The
        # counter is judged below, once the signature is known good.
        verified = verify_authentication_response(
            credential=parsed,
            expected_challenge=challenge,
            expected_rp_id=rp.rp_id,
            expected_origin=rp.origin,
            credential_public_key=passkey.public_key,
            credential_current_sign_count=0,
            require_user_verification=purpose is ChallengePurpose.SIGN_IN,
        )
    except _MALFORMED as exc:
        raise PasskeyRefused() from exc
    new_count = verified.new_sign_count
    if (new_count or passkey.sign_count) and not _advance_counter(
        session, passkey, new_count, verified.credential_backed_up, context.now
    ):
        first_time = passkey.clone_suspected_at is None
        passkey.clone_suspected_at = passkey.clone_suspected_at or context.now
        _audit(
            session,
            AuditEventType.PASSKEY_CLONE_SUSPECTED,
            passkey.user_id,
            context,
            passkey_id=passkey.id,
            sign_count=new_count,
            stored_sign_count=passkey.sign_count,
        )
        user = session.get(User, passkey.user_id)
        if first_time and user is not None:
            notices.second_factor_changed(
                session,
                user,
                context.now,
                change=SecondFactorChange.PASSKEY_CLONE_SUSPECTED,
                name=passkey.name,
            )
        session.flush()
        raise PasskeyCloneSuspected()
    if not new_count:
        # An authenticator that keeps no counter (§6.1.1 allows it: it always reports 0).
        passkey.backed_up = verified.credential_backed_up
        passkey.last_used_at = context.now
        session.flush()
    return passkey


def _advance_counter(
    session: Session, passkey: Passkey, new_count: int, backed_up: bool, now: datetime
) -> bool:
    """WebAuthn §7.2 step 22: the signature counter must move past the stored one. It moves
    in one conditional UPDATE, not a read then a write: two answers carrying the same counter
    (an authenticator and its clone, at the same moment) both pass a check made on what each
    read, while the second UPDATE, once the first commits, finds the counter no longer below
    its own and changes nothing. False when the counter did not move (a clone)."""
    moved = session.execute(
        update(Passkey)
        .where(Passkey.id == passkey.id, Passkey.sign_count < new_count)
        .values(sign_count=new_count, backed_up=backed_up, last_used_at=now)
        .returning(Passkey.sign_count)
    ).first()
    if moved is None:
        session.refresh(passkey)  # the counter another answer stored, for the audit event
        return False
    return True


def amr_of(passkey: Passkey, *, after_password: bool) -> str:
    """RFC 8176 §2: ``hwk`` (bound to one device) or ``swk`` (synced), as the session's and
    the ID tokens' ``amr``."""
    key = "swk" if passkey.backup_eligible else "hwk"
    return f"pwd {key} mfa" if after_password else f"{key} mfa"


def sign_in_with_passkey(
    session: Session,
    rp: RelyingParty,
    policy: ThrottlePolicy,
    sessions: SessionPolicy,
    notices: SecurityNotices,
    credential: Any,
    *,
    context: RequestContext,
    is_trusted_device: Callable[[str], bool],
    previous: BrowserSession | None,
) -> StartedSession:
    """ "Sign in with a passkey" (or the browser's autofill): the assertion checked, the
    session started with ``amr`` "hwk mfa" / "swk mfa". Refusals count per address in the
    sign-in throttle, like wrong passwords (PasskeyThrottled before anything is checked);
    ``is_trusted_device(address)`` says whether this browser holds the account's device
    cookie (for new-device notices)."""
    ip_address = context.ip_address or "-"
    wait = seconds_to_wait(
        session, PASSWORDLESS_THROTTLE, ip_address, context.now, policy, trusted_device=True
    )
    if wait:
        _audit(session, AuditEventType.RATE_LIMIT_HIT, None, context, endpoint="passkey_throttle")
        raise PasskeyThrottled(wait)
    try:
        passkey = _verify_assertion(
            session, rp, notices, credential, ChallengePurpose.SIGN_IN, None, context
        )
        user = session.get(User, passkey.user_id)
        if user is None or user.disabled:
            raise UnknownPasskey()
    except PasskeyRefused as refused:
        record_failure(session, PASSWORDLESS_THROTTLE, ip_address, context.now, policy)
        _audit(
            session,
            AuditEventType.SIGNIN_FAILED,
            None,
            context,
            method=PASSWORDLESS,
            reason=_reason(refused),
        )
        raise
    record_success(session, PASSWORDLESS_THROTTLE, ip_address)
    return finish_browser_sign_in(
        session,
        sessions,
        notices,
        user,
        amr=amr_of(passkey, after_password=False),
        method=PASSWORDLESS,
        context=context,
        trusted_device=is_trusted_device(user.email),
        previous=previous,
    )


def complete_second_step_with_passkey(
    session: Session,
    rp: RelyingParty,
    policy: ThrottlePolicy,
    sessions: SessionPolicy,
    notices: SecurityNotices,
    credential: Any,
    *,
    token: str,
    context: RequestContext,
    trusted_device: bool,
    previous: BrowserSession | None,
) -> StartedSession:
    """The code's page's "Use a passkey": one of the account's passkeys instead of a code,
    counted in the same throttle as codes; then the half-done sign-in is used up and the
    session starts, ``amr`` "pwd hwk mfa" / "pwd swk mfa". SecondStepExpired,
    PasskeyThrottled, PasskeyRefused (the half-done sign-in stays usable)."""
    user = user_of_second_step(session, token, context.now)
    account = second_factor_throttle_account(user.email)
    ip_address = context.ip_address or "-"
    wait = seconds_to_wait(
        session, account, ip_address, context.now, policy, trusted_device=trusted_device
    )
    if wait:
        _audit(
            session, AuditEventType.RATE_LIMIT_HIT, user.id, context, endpoint="passkey_throttle"
        )
        raise PasskeyThrottled(wait)
    try:
        passkey = _verify_assertion(
            session, rp, notices, credential, ChallengePurpose.SECOND_FACTOR, user.id, context
        )
    except PasskeyRefused as refused:
        record_failure(session, account, ip_address, context.now, policy)
        _audit(
            session,
            AuditEventType.SECOND_FACTOR_FAILED,
            user.id,
            context,
            method=PASSWORDLESS,
            reason=_reason(refused),
        )
        raise
    record_success(session, account, ip_address)
    link = redeem_link(session, token, LinkPurpose.SECOND_FACTOR, context.now)
    if link is None or link.user_id != user.id:
        raise SecondStepExpired("Sign in again.")
    return finish_browser_sign_in(
        session,
        sessions,
        notices,
        user,
        amr=amr_of(passkey, after_password=True),
        method=SECOND_STEP_METHOD,
        context=context,
        trusted_device=trusted_device,
        previous=previous,
    )


def _reason(refused: PasskeyRefused) -> str:
    if isinstance(refused, PasskeyCloneSuspected):
        return "clone_suspected"
    if isinstance(refused, UnknownPasskey):
        return "unknown_passkey"
    if isinstance(refused, ChallengeExpired):
        return "challenge_expired"
    return "invalid_response"


# -- the account page ----------------------------------------------------------------------


def _find(session: Session, credential_id: bytes) -> Passkey | None:
    return session.scalars(select(Passkey).where(Passkey.credential_id == credential_id)).first()


def list_passkeys(session: Session, user: User) -> list[Passkey]:
    return list(
        session.scalars(
            select(Passkey)
            .where(Passkey.user_id == user.id)
            .order_by(Passkey.created_at, Passkey.id)
        )
    )


def _own_passkey(session: Session, user: User, passkey_id: uuid.UUID) -> Passkey:
    passkey = session.get(Passkey, passkey_id)
    if passkey is None or passkey.user_id != user.id:
        raise NotFound("No such passkey.")
    return passkey


def rename_passkey(
    session: Session,
    browser_session: BrowserSession,
    passkey_id: uuid.UUID,
    name: str | None,
    context: RequestContext,
) -> Passkey:
    """SignInTooOld, SecondFactorNeeded, NotFound (another account's is as unknown as
    none)."""
    require_full_recent_sign_in(session, browser_session, context.now)
    passkey = _own_passkey(session, browser_session.user, passkey_id)
    passkey.name = clean_name(name)
    session.flush()
    _audit(
        session,
        AuditEventType.PASSKEY_RENAMED,
        browser_session.user_id,
        context,
        passkey_id=passkey.id,
    )
    return passkey


def remove_passkey(
    session: Session,
    notices: SecurityNotices,
    browser_session: BrowserSession,
    passkey_id: uuid.UUID,
    context: RequestContext,
) -> None:
    """Remove one passkey: it signs nobody in from now on. SignInTooOld, SecondFactorNeeded,
    NotFound."""
    require_full_recent_sign_in(session, browser_session, context.now)
    user = browser_session.user
    passkey = _own_passkey(session, user, passkey_id)
    name = passkey.name
    session.delete(passkey)
    session.flush()
    _audit(
        session,
        AuditEventType.PASSKEY_REMOVED,
        user.id,
        context,
        passkey_id=passkey_id,
        method="account_page",
    )
    notices.second_factor_changed(
        session, user, context.now, change=SecondFactorChange.PASSKEY_REMOVED, name=name
    )


def _audit(
    session: Session,
    event_type: AuditEventType,
    user_id: uuid.UUID | None,
    context: RequestContext,
    **details: Any,
) -> None:
    record(
        session,
        event_type,
        context.now,
        user_id=user_id,
        ip_address=context.ip_address,
        user_agent=context.user_agent,
        **details,
    )


def parse_body(raw: bytes) -> Any:
    """A ceremony endpoint's JSON body; PasskeyRefused for anything that is not JSON."""
    if len(raw) > MAX_CREDENTIAL_JSON:
        raise PasskeyRefused()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise PasskeyRefused() from exc
