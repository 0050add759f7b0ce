"""Users: creation, sign-in by password, disabling and enabling, replacing the password,
verifying the address, listing and deleting accounts.

The operator's commands (``authserver users ...``) and, later, an HTTP admin API call these;
each rule is here once."""

from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from authserver.errors import NotFound, ValidationError
from authserver.models import User
from authserver.services import security_events
from authserver.services.account_links import LinkPurpose, invalidate_links
from authserver.services.audit import AuditEventType, record
from authserver.services.browser_sessions import Device, end_user_sessions, list_devices
from authserver.services.lookalikes import email_skeleton_digest, invisible_characters
from authserver.services.password_policy import PasswordPolicy
from authserver.services.passwords import PasswordHasher
from authserver.services.refresh_tokens import RevocationReason
from authserver.services.security_notices import PasswordChangedBy, SecurityNotices

MAX_EMAIL_LENGTH = 254  # RFC 5321 §4.5.3.1.3 path limit less the angle brackets
# Says nothing of which account: whoever creates accounts learns no more than that one exists.
LOOKALIKE_EXISTS = "an account with an address that looks the same already exists"


def normalize_email(raw: str) -> str:
    """One spelling per address: trimmed, NFKC-normalised, case-folded.

    Local parts are case-sensitive in theory (RFC 5321 §2.4) but not in any mailbox provider
    users meet; treating ``Ann@x`` and ``ann@x`` as two accounts only causes lock-outs.
    """
    email = unicodedata.normalize("NFKC", raw.strip()).casefold()
    local, sep, domain = email.rpartition("@")
    if (
        not sep
        or not local
        or "." not in domain
        or domain.startswith(".")
        or domain.endswith(".")
        or any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in email)
        or len(email) > MAX_EMAIL_LENGTH
    ):
        raise ValidationError(f"not a valid email address: {raw.strip()[:100]!r}")
    return email


def find_user_by_email(session: Session, email: str) -> User | None:
    try:
        normalized = normalize_email(email)
    except ValidationError:
        return None
    return session.scalars(select(User).where(User.email == normalized)).one_or_none()


def emails_of(session: Session, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The address of each of these accounts that still exists."""
    if not user_ids:
        return {}
    rows = session.execute(select(User.id, User.email).where(User.id.in_(user_ids)))
    return {row.id: row.email for row in rows}


def get_user_by_email(session: Session, email: str) -> User:
    """The account with this address, or NotFound in one line that names the address."""
    user = find_user_by_email(session, email)
    if user is None:
        raise NotFound(f"no user with the email {email.strip()[:100]!r}")
    return user


def new_account_email(raw: str) -> str:
    """The normalised address for a new account, refused if it has characters that do not
    show (``lookalikes.invisible_characters``).

    Only new addresses are held to this: sign-in looks addresses up with ``normalize_email``
    alone, so an account made before the rule keeps working. The skeleton would already stop
    ``al<U+200B>ice`` next to ``alice``, but an address is typed by people who cannot see such
    a character and read by operators who cannot either; refusing it outright keeps every
    stored address what it looks like. The zero-width joiners are refused too, although
    IDNA2008 (RFC 5892 Appendix A.1, A.2) allows them in some scripts' domain labels: the
    refusal names the code point, so such a case is seen for what it is.
    """
    normalized = normalize_email(raw)
    hidden = invisible_characters(normalized)
    if hidden:
        raise ValidationError(
            f"not a valid email address: it contains {', '.join(hidden[:3])}, "
            "a character that does not show"
        )
    return normalized


def create_user(
    session: Session,
    hasher: PasswordHasher,
    email: str,
    password: str,
    *,
    password_policy: PasswordPolicy | None = None,
) -> User:
    """Create an account, refusing an address that is taken or looks like one that is (UTS #39
    skeleton, ``services/lookalikes.py``) and a password the policy refuses: ``password_policy``,
    or else the running app's (a script inside ``app.app_context()`` gets the server's rules,
    never none)."""
    if password_policy is None:
        from authserver.runtime import runtime  # the runtime builds on this module

        password_policy = runtime().password_policy
    normalized = new_account_email(email)
    if session.scalars(select(User.id).where(User.email == normalized)).first() is not None:
        raise ValidationError(f"a user with the email {normalized!r} already exists")
    skeleton_digest = email_skeleton_digest(normalized)
    taken = select(User.id).where(User.email_skeleton_digest == skeleton_digest)
    if session.scalars(taken).first() is not None:
        raise ValidationError(LOOKALIKE_EXISTS)
    password_policy.check(password, email=normalized)
    user = User(
        email=normalized,
        email_skeleton_digest=skeleton_digest,
        password_hash=hasher.hash(password),
    )
    try:
        # A savepoint: if another transaction took this address or a look-alike since the
        # checks above, the unique indexes refuse the row and only the row is undone.
        with session.begin_nested():
            session.add(user)
    except IntegrityError:
        raise ValidationError(LOOKALIKE_EXISTS) from None
    record(session, AuditEventType.USER_CREATED, user.created_at, user_id=user.id)
    return user


@dataclass(frozen=True)
class PasswordCheck:
    """What one password attempt found: the account the email names (for the operator's audit
    trail only, never for the caller) and the user, if the password is right and the account
    enabled."""

    account: User | None
    user: User | None

    @property
    def failure_reason(self) -> str | None:
        if self.user is not None:
            return None
        if self.account is None:
            return "unknown_account"
        return "account_disabled" if self.account.disabled else "wrong_password"


def check_password(
    session: Session, hasher: PasswordHasher, email: str, password: str
) -> PasswordCheck:
    """Check a sign-in attempt.

    Unknown email, wrong password and disabled account cost one argon2 verification each, so
    neither the answer nor its timing tells them apart to the caller.
    """
    account = find_user_by_email(session, email)
    if account is None:
        hasher.verify_dummy(password)
        return PasswordCheck(account=None, user=None)
    if not hasher.verify(account.password_hash, password) or account.disabled:
        return PasswordCheck(account=account, user=None)
    if hasher.needs_rehash(account.password_hash):
        # The parameters were raised since this hash was made; the plaintext is at hand only
        # now, so upgrade it now.
        account.password_hash = hasher.rehash(password)
        session.flush()
    return PasswordCheck(account=account, user=account)


def disable_user(session: Session, email: str, now: datetime) -> User:
    """Disable the account and end everything of theirs: browser sessions and families."""
    user = get_user_by_email(session, email)
    user.disabled = True
    sessions, families = end_user_sessions(session, user.id, RevocationReason.USER_DISABLED, now)
    record(
        session,
        AuditEventType.USER_DISABLED,
        now,
        user_id=user.id,
        sessions_ended=sessions,
        families_revoked=families,
    )
    security_events.emit(session, [security_events.account_disabled(user.id)], now)
    session.flush()
    return user


def enable_user(session: Session, email: str, now: datetime) -> User:
    """Undo ``disable_user``: the account can sign in again. What disabling ended stays ended
    (sessions, refresh families, the revocation feed's entries): the user signs in afresh."""
    user = get_user_by_email(session, email)
    if not user.disabled:
        raise ValidationError(f"the user {user.email!r} is not disabled")
    user.disabled = False
    record(session, AuditEventType.USER_ENABLED, now, user_id=user.id)
    security_events.emit(session, [security_events.account_enabled(user.id)], now)
    session.flush()
    return user


def record_sign_in(user: User, now: datetime) -> None:
    """A password check succeeded (``services/sign_in.py``, for both ways of signing in).

    A sign-in changes nothing the user is: ``updated_at`` (userinfo's, OpenID Connect Core 1.0
    §5.1, "time the End-User's information was last updated") keeps its value. Naming it in
    the UPDATE with that value keeps its onupdate default from moving it."""
    user.last_sign_in_at = now
    flag_modified(user, "updated_at")


def mark_email_verified(session: Session, user: User, now: datetime, *, method: str) -> bool:
    """The address is known to reach the user: userinfo says ``email_verified: true`` from
    now on (OpenID Connect Core 1.0 §5.1). ``method`` says how it was shown, for the trail
    ("operator", "link", "password_reset"). False if it was verified already (nothing recorded)."""
    if user.email_verified:
        return False
    user.email_verified = True
    record(session, AuditEventType.EMAIL_VERIFIED, now, user_id=user.id, method=method)
    session.flush()
    return True


def set_password(
    session: Session,
    hasher: PasswordHasher,
    user: User,
    new_password: str,
    *,
    now: datetime,
    password_policy: PasswordPolicy,
    notices: SecurityNotices,
) -> tuple[int, int]:
    """The operator sets the password (no current password asked: the operator is not the
    user). The policy applies as for any new password, and the user is signed out everywhere
    like after a change, since whoever knew the old one may be signed in. Returns (sessions
    ended, families revoked)."""
    return replace_password(
        session,
        hasher,
        user,
        new_password,
        now,
        password_policy,
        notices,
        by=PasswordChangedBy.OPERATOR,
        initiating_entity="admin",
    )


def reset_password(
    session: Session,
    hasher: PasswordHasher,
    user: User,
    new_password: str,
    *,
    now: datetime,
    password_policy: PasswordPolicy,
    notices: SecurityNotices,
) -> tuple[int, int]:
    """The user set a new password through a reset link (``services/password_reset.py``
    checked and used the link). As after an operator's ``set_password``, everything signed in
    with the old password is signed out, this browser included: whoever asked for the reset
    may be recovering from a stolen password. Following the link proved control of the
    address, so it is verified too. Returns (sessions ended, families revoked)."""
    ended = replace_password(
        session,
        hasher,
        user,
        new_password,
        now,
        password_policy,
        notices,
        by=PasswordChangedBy.RESET_LINK,
    )
    mark_email_verified(session, user, now, method="password_reset")
    session.flush()
    return ended


# How each way of replacing a password ends what the old one signed in, and says so.
_REVOCATION_REASONS = {
    PasswordChangedBy.ACCOUNT_PAGE: RevocationReason.PASSWORD_CHANGED,
    PasswordChangedBy.OPERATOR: RevocationReason.PASSWORD_SET,
    PasswordChangedBy.RESET_LINK: RevocationReason.PASSWORD_RESET,
}


def replace_password(
    session: Session,
    hasher: PasswordHasher,
    user: User,
    new_password: str,
    now: datetime,
    password_policy: PasswordPolicy,
    notices: SecurityNotices,
    *,
    by: PasswordChangedBy,
    initiating_entity: str = "user",
    keep_session_id: uuid.UUID | None = None,
) -> tuple[int, int]:
    """The one place a password is replaced (the account page, the operator's set, a reset
    link): the policy, the new hash, the end of every unused reset link (a reset mail from
    before the change opens nothing after it), every session and app signed out (but
    ``keep_session_id``), the audit event, the credential-change SET and the "your password
    was changed" notice. Returns (sessions ended, families revoked)."""
    password_policy.check(new_password, email=user.email)
    user.password_hash = hasher.hash(new_password)
    invalidate_links(session, user.id, LinkPurpose.PASSWORD_RESET, now)
    sessions, families = end_user_sessions(
        session, user.id, _REVOCATION_REASONS[by], now, keep_session_id=keep_session_id
    )
    details: dict[str, Any] = {} if by is PasswordChangedBy.ACCOUNT_PAGE else {"method": by.value}
    record(
        session,
        AuditEventType.PASSWORD_CHANGED,
        now,
        user_id=user.id,
        sessions_ended=sessions,
        families_revoked=families,
        **details,
    )
    security_events.emit(
        session,
        [security_events.password_changed(user.id, now, initiating_entity=initiating_entity)],
        now,
    )
    notices.password_changed(session, user, now, by=by)
    session.flush()
    return sessions, families


def delete_user(
    session: Session, email: str, now: datetime, notices: SecurityNotices
) -> tuple[User, int, int]:
    """The operator deletes the account ``email`` names (``users delete``): see
    ``delete_account``. Returns the deleted user, sessions ended and families revoked."""
    user = get_user_by_email(session, email)
    sessions, families = delete_account(
        session, user, now, notices, reason=RevocationReason.USER_DELETED, by_owner=False
    )
    return user, sessions, families


def delete_account(
    session: Session,
    user: User,
    now: datetime,
    notices: SecurityNotices,
    *,
    reason: RevocationReason,
    by_owner: bool,
    ip_address: str | None = None,
    user_agent: str | None = None,
) -> tuple[int, int]:
    """Delete the account, by its owner (the account page) or an operator. Everything it held
    is revoked first, as ``disable_user`` does (the revocation feed, Security Event Tokens,
    back-channel logout tokens are written in this transaction and outlive the row: none of
    them refers to it by a foreign key), the address is told, then the row goes, and with it,
    by ON DELETE CASCADE, its browser sessions, refresh families and tokens, authorization
    codes, consents, mailed links, authenticator app and recovery codes. Its audit events
    stay, naming its id (``audit_events`` has no foreign keys); they age out with
    AUTHSERVER_AUDIT_RETENTION_DAYS.

    Returns (sessions ended, families revoked)."""
    sessions, families = end_user_sessions(session, user.id, reason, now)
    record(
        session,
        AuditEventType.USER_DELETED,
        now,
        user_id=user.id,
        ip_address=ip_address,
        user_agent=user_agent,
        email=user.email,
        method="account_page" if by_owner else "operator",
        sessions_ended=sessions,
        families_revoked=families,
    )
    security_events.emit(session, [security_events.account_purged(user.id)], now)
    notices.account_deleted(session, user.email, now, by_owner=by_owner)
    # Through the ORM, so this process forgets what it holds of the row (the client cache).
    session.delete(user)
    session.flush()
    return sessions, families


MAX_LIST_LIMIT = 1000


def list_users(
    session: Session, *, search: str | None = None, after: str | None = None, limit: int = 50
) -> list[User]:
    """Accounts in address order, ``limit`` at most, those after the address ``after`` (the
    last of the previous page): a page starts where the last one ended, so accounts created
    meanwhile neither shift a page nor repeat one. ``search``: addresses containing it
    (case-folded, as addresses are stored)."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValidationError(f"the limit must be 1 to {MAX_LIST_LIMIT}")
    query = select(User).order_by(User.email).limit(limit)
    if search:
        query = query.where(User.email.contains(_folded(search), autoescape=True))
    if after:
        query = query.where(User.email > _folded(after))
    return list(session.scalars(query))


def _folded(text: str) -> str:
    return unicodedata.normalize("NFKC", text.strip()).casefold()


@dataclass(frozen=True)
class UserOverview:
    user: User
    # Live browser sessions ("browser") and refresh families ("app", with the client's name).
    devices: list[Device]

    @property
    def browser_sessions(self) -> list[Device]:
        return [d for d in self.devices if d.kind == "browser"]

    @property
    def refresh_families(self) -> list[Device]:
        return [d for d in self.devices if d.kind == "app"]


def user_overview(session: Session, email: str, now: datetime) -> UserOverview:
    """The account and where it is signed in: what the user's own sessions page lists."""
    user = get_user_by_email(session, email)
    return UserOverview(user=user, devices=list_devices(session, user.id, now))
