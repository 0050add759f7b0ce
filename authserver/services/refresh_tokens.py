"""Refresh-token families: issue, rotate, detect reuse, revoke.

Model (RFC 9700 §4.14.2, refresh token rotation): each sign-in starts a family; every use of
its live token marks that token used and issues exactly one successor. Presenting a used token
again is treated as theft and revokes the family, with one exception: the immediate
predecessor of the live token, shown again within the grace window, gets the *same* successor
back, so a lost response or two racing tabs neither log the user out nor fork the family.

Only SHA-256 digests of tokens are stored. The successor kept for the grace window is sealed
with a key derived from its parent's plaintext, which only the client holds.
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import hmac
import math
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    ColumnElement,
    Exists,
    Select,
    Table,
    Update,
    bindparam,
    case,
    exists,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningUpdate

from authserver.db import execute_alone
from authserver.errors import (
    InvalidGrant,
    InvalidScope,
    RefreshTokenReused,
    TooManyAttempts,
)
from authserver.models import Client, RefreshFamily, RefreshToken, User
from authserver.services.audit import rotation_audit_row
from authserver.services.grants import check_resource_of_grant
from authserver.services.revocations import revoke_families

TOKEN_BYTES = 32  # 256 bits
_NONCE_BYTES = 12
_SUCCESSOR_KEY_LABEL = b"authserver refresh-token successor key v1"


class RevocationReason(enum.StrEnum):
    REUSE_DETECTED = "reuse_detected"
    USER_DISABLED = "user_disabled"
    LOGOUT = "logout"
    LOGOUT_EVERYWHERE = "logout_everywhere"
    PASSWORD_CHANGED = "password_changed"  # noqa: S105 (a reason, not a password)
    CODE_REPLAYED = "code_replayed"
    REVOKED_BY_CLIENT = "revoked_by_client"
    CLIENT_DISABLED = "client_disabled"
    # The operator set the password (``users set-password``), deleted the account or the client.
    PASSWORD_SET = "password_set"  # noqa: S105 (a reason, not a password)
    # The user chose a new password through a reset link (services/password_reset.py).
    PASSWORD_RESET = "password_reset"  # noqa: S105 (a reason, not a password)
    USER_DELETED = "user_deleted"
    CLIENT_DELETED = "client_deleted"


@dataclass(frozen=True)
class RotationBudget:
    """How many rotations a family may make in a window of time (a family's request budget,
    AUTHSERVER_RATELIMIT_PER_FAMILY), counted in its own row by the rotating statement."""

    rotations: int
    window: timedelta

    def counts(self, window_started_at: datetime | None, now: datetime) -> bool:
        """Whether a window that began at ``window_started_at`` still counts at ``now``; in
        SQL, ``_window_is_open``."""
        return window_started_at is not None and window_started_at > now - self.window


# What the statement compares with when no budget is set: no family ever reaches it.
_UNLIMITED_ROTATIONS = 2**31 - 1


@dataclass(frozen=True)
class RefreshPolicy:
    idle_ttl: timedelta
    absolute_ttl: timedelta
    reuse_grace: timedelta
    rotation_budget: RotationBudget | None = None

    @classmethod
    def for_client(
        cls,
        client: Client,
        *,
        idle_ttl: int,
        absolute_ttl: int,
        reuse_grace: int,
        rotation_budget: RotationBudget | None = None,
    ) -> RefreshPolicy:
        return cls(
            idle_ttl=timedelta(seconds=client.refresh_idle_ttl or idle_ttl),
            absolute_ttl=timedelta(seconds=client.refresh_absolute_ttl or absolute_ttl),
            reuse_grace=timedelta(seconds=reuse_grace),
            rotation_budget=rotation_budget,
        )

    def budget_params(self, now: datetime) -> dict[str, Any]:
        """The rotating statement's budget parameters: a window that began before
        ``window_start`` is over; within one, ``rotation_budget`` rotations are allowed."""
        budget = self.rotation_budget
        if budget is None:
            return {"window_start": now, "rotation_budget": _UNLIMITED_ROTATIONS}
        return {"window_start": now - budget.window, "rotation_budget": budget.rotations}


class FamilyBudgetSpent(TooManyAttempts):
    """The family made all the rotations its budget allows in this window; its token is left
    usable for when the window ends."""

    default_description = "This session refreshed too often; wait before refreshing again."


@dataclass(frozen=True)
class NewFamily:
    family: RefreshFamily
    token: str

    @property
    def family_id(self) -> uuid.UUID:
        return self.family.id


@dataclass(frozen=True)
class RotationAudit:
    """Who asked for a rotation, for a token_issued row written by the rotating statement
    itself (PostgreSQL's one-statement rotation; services/audit.rotation_audit_row)."""

    client_id: str
    user_agent: str | None


@dataclass(frozen=True)
class IssuedRefreshToken:
    """A rotation's result: the successor and what the access token needs of its family."""

    family_id: uuid.UUID
    user_id: uuid.UUID
    scope: str
    audience: str
    token: str
    # The family's sign-in (None for families from before it was kept): the access token's
    # auth_time and acr.
    auth_time: datetime | None = None
    amr: str | None = None
    # True when this answers a retry inside the grace window (the token was issued before).
    replayed: bool = False
    # True when the rotating statement also wrote the token_issued audit row.
    audited: bool = False

    @classmethod
    def of(cls, family: RefreshFamily, token: str, *, replayed: bool = False) -> IssuedRefreshToken:
        return cls(
            family.id,
            family.user_id,
            family.scope,
            family.audience,
            token,
            family.auth_time,
            family.amr,
            replayed,
        )


def digest_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


def _base64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# A refresh token is ``<family id>.<secret>``: the family's UUID and 256 random bits, each
# base64url without padding. The family id is no secret (access tokens carry it as ``sid``);
# it is there so that every statement on a token can name the family's row, the key by which
# a distributed database would place both tables (README "Past one primary"). The stored
# digest is the SHA-256 of the whole string, so a token naming another family is unknown.
# Tokens issued before carry no family part (and no dot, which base64url never holds); they
# are looked up by their digest alone until they are used or expire.
_FAMILY_PART_LENGTH = 22
_FAMILY_SEPARATOR = "."


def new_refresh_token(family_id: uuid.UUID) -> str:
    """A new token of the family (the bench's ceiling and floor make theirs with it too)."""
    secret = _base64url(secrets.token_bytes(TOKEN_BYTES))
    return f"{_base64url(family_id.bytes)}{_FAMILY_SEPARATOR}{secret}"


@dataclass(frozen=True)
class PresentedRefreshToken:
    """What a presented refresh token names: its digest, and the family it says it belongs to
    (None for a token issued before tokens carried their family)."""

    digest: bytes
    family_id: uuid.UUID | None

    def where_clause(self) -> list[ColumnElement[bool]]:
        """SQL: the refresh_tokens row this token is, by its family too when it names one."""
        found = [RefreshToken.token_digest == self.digest]
        if self.family_id is not None:
            found.append(RefreshToken.family_id == self.family_id)
        return found


def read_refresh_token(presented: str) -> PresentedRefreshToken | None:
    """The token's digest and family, or None when it cannot be one of this server's tokens
    (a family part that is no base64url UUID), which is refused like an unknown token."""
    family_part, separator, _secret = presented.partition(_FAMILY_SEPARATOR)
    if not separator:
        return PresentedRefreshToken(digest_token(presented), None)
    if len(family_part) != _FAMILY_PART_LENGTH:
        return None
    try:
        raw = base64.urlsafe_b64decode(family_part + "==")
    except ValueError:
        return None
    # Only the canonical spelling: base64 decoders accept other last characters for the same
    # bytes, and whatever decodes must spell the family id exactly as it was issued.
    if len(raw) != 16 or _base64url(raw) != family_part:
        return None
    return PresentedRefreshToken(digest_token(presented), uuid.UUID(bytes=raw))


def _successor_key(parent_token: str) -> bytes:
    # Keyed by the parent's plaintext: the stored digest is SHA-256(parent), a different
    # function, so the database alone cannot produce this key.
    return hmac.new(parent_token.encode(), _SUCCESSOR_KEY_LABEL, hashlib.sha256).digest()


def _seal_successor(parent_token: str, successor: str, parent_digest: bytes) -> bytes:
    # The parent's digest as associated data binds the ciphertext to its row: copied into
    # another token's row it does not open.
    nonce = secrets.token_bytes(_NONCE_BYTES)
    sealed = AESGCM(_successor_key(parent_token)).encrypt(nonce, successor.encode(), parent_digest)
    return nonce + sealed


def _open_successor(parent_token: str, ciphertext: bytes, parent_digest: bytes) -> str | None:
    nonce, sealed = ciphertext[:_NONCE_BYTES], ciphertext[_NONCE_BYTES:]
    try:
        plain = AESGCM(_successor_key(parent_token)).decrypt(nonce, sealed, parent_digest)
    except InvalidTag:
        return None
    return plain.decode()


def start_family(
    session: Session,
    *,
    user: User,
    client: Client,
    scope: str,
    audience: str,
    policy: RefreshPolicy,
    now: datetime,
    user_agent: str | None = None,
    ip_address: str | None = None,
    browser_session_id: uuid.UUID | None = None,
    auth_time: datetime | None = None,
    amr: str | None = None,
    dpop_jkt: str | None = None,
) -> NewFamily:
    """Begin a family for a fresh sign-in and issue its first token. ``auth_time`` and
    ``amr``: that sign-in's, for the access tokens of every later rotation. ``dpop_jkt``:
    the DPoP key every refresh of the family must prove it holds (RFC 9449 §5)."""
    expires_at = now + policy.absolute_ttl
    family = RefreshFamily(
        id=uuid.uuid4(),
        user_id=user.id,
        client_pk=client.id,
        scope=scope,
        audience=audience,
        created_at=now,
        last_used_at=now,
        expires_at=expires_at,
        idle_expires_at=min(now + policy.idle_ttl, expires_at),
        user_agent=(user_agent or None) and user_agent[:512],
        ip_address=ip_address,
        browser_session_id=browser_session_id,
        auth_time=auth_time,
        amr=amr,
        dpop_jkt=dpop_jkt,
    )
    session.add(family)
    token = new_refresh_token(family.id)
    session.add(
        RefreshToken(
            family_id=family.id,
            parent_id=None,
            token_digest=digest_token(token),
            generation=0,
            issued_at=now,
            expires_at=family.idle_expires_at,
        )
    )
    session.flush()
    family.user = user
    family.client = client
    return NewFamily(family=family, token=token)


def rotate_refresh_token(
    session: Session,
    *,
    presented: str,
    client: Client,
    requested_scope: str | None,
    policy: RefreshPolicy,
    now: datetime,
    requested_resources: Sequence[str] = (),
    ip_address: str | None = None,
    audit: RotationAudit | None = None,
    proof_jkt: str | None = None,
) -> IssuedRefreshToken:
    """Exchange a refresh token for its successor (RFC 6749 §6, RFC 9700 §4.14.2).

    The order of the checks is a rule of its own: an unknown token is refused; a token of a
    family bound to a DPoP key, used or not, is refused unless ``proof_jkt`` (the key the
    request proved it holds) is that key, and nothing else happens (``_check_key``); a used
    token is a retry inside the grace window or reuse *whatever else the request carries* (another
    client, a wider scope, another resource), and reuse revokes the family; only a live token
    is then checked against the request (its client, its family, ``requested_scope`` and
    ``requested_resources``), and those refusals leave it usable. So whoever holds a stolen,
    used token learns ``invalid_grant`` and nothing about whether its family is alive.

    With ``audit``, the rotation may write its token_issued audit row in the same statement
    (the result says whether it did; the caller records it otherwise).

    Exactly one caller wins a given token: the claim is a conditional
    ``UPDATE ... WHERE used_at IS NULL``, so concurrent requests serialise on the row and
    the losers see it used. Losers within the grace window get the winner's successor.
    """
    named = read_refresh_token(presented)
    if named is None:
        raise InvalidGrant()
    digest = named.digest
    if (
        named.family_id is not None
        and requested_scope is None
        and _claim_can_check(requested_resources)
    ):
        # The common case without ORM objects, in one statement on PostgreSQL (three on
        # SQLite): claim the token if it is live, its family usable by this client and
        # granted for the resource named (if one is), slide the family, insert the successor.
        # Anything else (unknown, used, refused, narrowed scope, a token from before tokens
        # named their family) takes the path below, which reads first and explains.
        fast = _claim_and_rotate(
            session,
            named.family_id,
            digest,
            presented,
            new_refresh_token(named.family_id),
            client,
            policy,
            now,
            ip_address,
            audit,
            requested_audience=requested_resources[0] if requested_resources else None,
            proof_jkt=proof_jkt,
        )
        if fast is not None:
            return fast

    token = session.scalars(select(RefreshToken).where(*named.where_clause())).one_or_none()
    if token is None:
        raise InvalidGrant()
    family = token.family
    _check_key(family, proof_jkt)
    if token.used_at is None:
        _check_family_usable(family, client, now)
        _check_within_grant(family, requested_scope, requested_resources)
        _check_rotation_budget(family, policy, now)
        successor = new_refresh_token(family.id)
        claimed = session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.family_id == token.family_id,
                RefreshToken.id == token.id,
                RefreshToken.used_at.is_(None),
            )
            .values(used_at=now, successor_ciphertext=_seal_successor(presented, successor, digest))
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            family.last_ip_address = ip_address
            _issue_successor(session, family, token, successor, policy, now)
            return IssuedRefreshToken.of(family, successor)
        # Another request claimed it first; read what it wrote. This request is now a
        # retry or a reuse like any other presentation of a used token.
        token = session.scalars(
            select(RefreshToken)
            .where(RefreshToken.family_id == token.family_id, RefreshToken.id == token.id)
            .execution_options(populate_existing=True)
        ).one()
    return _answer_used_token(
        session, token, presented, client, requested_scope, requested_resources, policy, now
    )


def _check_key(family: RefreshFamily, proof_jkt: str | None) -> None:
    """RFC 9449 §5: a family bound to a DPoP key is refreshed only by a request proving it
    holds that key. Whoever presents one of its tokens without the key is refused and
    nothing else happens, whether the token is live or used: no rotation, no grace-window
    retry, and no revocation. The presenter cannot use the token, so it is no thief to stop;
    revoking would let anyone who saw a token (in a log, a crash report) sign its owner out.
    A replay made *with* the key is reuse like any other, and revokes the family."""
    if family.dpop_jkt is not None and not (
        proof_jkt is not None and hmac.compare_digest(family.dpop_jkt, proof_jkt)
    ):
        raise InvalidGrant("The refresh token is bound to a DPoP key; prove you hold it.")


def _claim_can_check(requested_resources: Sequence[str]) -> bool:
    """Whether the one-statement claim can check the resources against the family: none, or
    one that could be an audience. An audience is a URI, so printable; anything else (NUL,
    which PostgreSQL text cannot even hold) must not reach the SQL, and is refused below."""
    return not requested_resources or (
        len(requested_resources) == 1 and requested_resources[0].isprintable()
    )


def _answer_used_token(
    session: Session,
    token: RefreshToken,
    presented: str,
    client: Client,
    requested_scope: str | None,
    requested_resources: Sequence[str],
    policy: RefreshPolicy,
    now: datetime,
) -> IssuedRefreshToken:
    """A used token: the same successor again if this is a retry, else reuse, which revokes
    the family (RFC 9700 §4.14.2) whatever else the request carries."""
    family = token.family
    # A retry comes from the family's own client. A used token shown by any other client has
    # left the client it was bound to (RFC 6749 §6): the lineage has leaked.
    retried = (
        _successor_for_retry(session, token, presented, policy, now)
        if family.client_pk == client.id
        else None
    )
    if retried is None:
        revoked_now = revoke_family(session, family, RevocationReason.REUSE_DETECTED, now)
        raise RefreshTokenReused(
            family.id,
            client.client_id,
            family.user_id,
            family.ip_address,
            family.last_ip_address,
            family_client_id=family.client.client_id,
            revoked_now=revoked_now,
        )
    session.refresh(family)
    # A retry is answered as the request it repeats would be answered now. Its presenter
    # holds the parent (the successor's key derives from it) and could have had the successor
    # by asking plainly, so refusing a dead family, a wider scope or another resource tells it
    # nothing new, and revoking would log out a client that merely retried. A family that
    # died since (signed out, expired, its user disabled) has nothing left to revoke.
    _check_family_usable(family, client, now)
    _check_within_grant(family, requested_scope, requested_resources)
    # The winner may have stamped a slightly later time than this loser's clock read.
    family.last_used_at = max(family.last_used_at, now)
    session.flush()
    return IssuedRefreshToken.of(family, retried, replayed=True)


def _check_rotation_budget(family: RefreshFamily, policy: RefreshPolicy, now: datetime) -> None:
    """Refuse, leaving the token usable, when the family spent its rotations for this window.
    The claim's WHERE clause says the same in SQL (``_within_budget``)."""
    budget = policy.rotation_budget
    started = family.rotation_window_started_at
    if budget is None or started is None or not budget.counts(started, now):
        return
    if family.rotations_in_window >= budget.rotations:
        wait = started + budget.window - now
        raise FamilyBudgetSpent(math.ceil(wait.total_seconds()))


def _check_within_grant(
    family: RefreshFamily, requested_scope: str | None, requested_resources: Sequence[str]
) -> None:
    """What a refresh may ask of its family: a narrower scope, and only the audience the
    original grant was for."""
    if requested_scope is not None and not set(requested_scope.split()) <= set(
        family.scope.split()
    ):
        # RFC 6749 §6: the scope can narrow, never widen.
        raise InvalidScope()
    check_resource_of_grant(requested_resources, family.audience)


_TOKENS = cast(Table, RefreshToken.__table__)
_FAMILIES = cast(Table, RefreshFamily.__table__)
_USERS = cast(Table, User.__table__)


# The rotation's statements, built once: building a statement costs as much CPU as running
# it. Their parameter names must differ from every column of refresh_tokens and
# refresh_families: SQLAlchemy adds a parameter naming a column of an UPDATE's table to its
# SET clause. The claim's WHERE clause is ``_check_family_usable`` in SQL, so a token that
# fails any of it is left untouched for the slow path to refuse (a refused request must not
# use the token up).
def live_family_exists(family_id: ColumnElement[Any], *also: ColumnElement[bool]) -> Exists:
    """SQL: the family is live at the ``now`` parameter (not revoked, its user enabled, before
    both expiries), and ``also`` holds. ``_check_family_usable`` and ``_family_live`` in
    token_status.py say the same in Python."""
    return exists(
        select(_FAMILIES.c.id)
        .join(_USERS, _USERS.c.id == _FAMILIES.c.user_id)
        .where(
            _FAMILIES.c.id == family_id,
            _FAMILIES.c.revoked_at.is_(None),
            _USERS.c.disabled.is_(False),
            _FAMILIES.c.expires_at > bindparam("now"),
            _FAMILIES.c.idle_expires_at > bindparam("now"),
            *also,
        )
    )


def _window_is_open() -> ColumnElement[bool]:
    """SQL: the family's budget window began after ``window_start``, so it still counts."""
    return _FAMILIES.c.rotation_window_started_at > bindparam("window_start")


def _within_budget() -> ColumnElement[bool]:
    """SQL: the family may rotate now: its window is over (or never began), or it made fewer
    than ``rotation_budget`` rotations in it. ``_check_rotation_budget`` in Python."""
    return or_(
        _FAMILIES.c.rotation_window_started_at.is_(None),
        ~_window_is_open(),
        _FAMILIES.c.rotations_in_window < bindparam("rotation_budget"),
    )


@functools.cache
def _claim_if_usable(for_audience: bool) -> ReturningUpdate[Any]:
    """The claim. ``for_audience``: the request named a resource, which must also be the
    family's audience (RFC 8707 §2.2), so a client that sends its resource on every refresh
    keeps the one-statement rotation."""
    also = [
        _FAMILIES.c.client_pk == bindparam("presenting_client"),
        _within_budget(),
        # ``_check_key``: unbound, or bound to the key the request proved it holds (a NULL
        # proof_jkt compares as unknown, so a bound family is left to the slow path).
        or_(_FAMILIES.c.dpop_jkt.is_(None), _FAMILIES.c.dpop_jkt == bindparam("proof_jkt")),
    ]
    if for_audience:
        also.append(_FAMILIES.c.audience == bindparam("requested_audience"))
    return (
        update(_TOKENS)
        .where(
            _TOKENS.c.family_id == bindparam("token_family"),
            _TOKENS.c.token_digest == bindparam("digest"),
            _TOKENS.c.used_at.is_(None),
            live_family_exists(_TOKENS.c.family_id, *also),
        )
        .values(used_at=bindparam("now"), successor_ciphertext=bindparam("sealed"))
        .returning(_TOKENS.c.id, _TOKENS.c.family_id, _TOKENS.c.generation)
    )


def _slide_family(which: ColumnElement[bool]) -> Update:
    # Idle expiry slides forward with use; the absolute expiry never moves.
    return (
        update(_FAMILIES)
        .where(which)
        .values(
            idle_expires_at=case(
                (_FAMILIES.c.expires_at < bindparam("idle_until"), _FAMILIES.c.expires_at),
                else_=bindparam("idle_until"),
            ),
            last_used_at=bindparam("now"),
            last_ip_address=bindparam("last_ip"),
            # The rotation spends one of the family's budget: in the open window, or as the
            # first of a new one.
            rotations_in_window=case(
                (_window_is_open(), _FAMILIES.c.rotations_in_window + 1), else_=1
            ),
            rotation_window_started_at=case(
                (_window_is_open(), _FAMILIES.c.rotation_window_started_at),
                else_=bindparam("now"),
            ),
        )
        .returning(
            _FAMILIES.c.user_id,
            _FAMILIES.c.scope,
            _FAMILIES.c.audience,
            _FAMILIES.c.idle_expires_at,
            _FAMILIES.c.auth_time,
            _FAMILIES.c.amr,
        )
    )


_SLIDE_FAMILY = _slide_family(_FAMILIES.c.id == bindparam("family_id"))
_INSERT_TOKEN = insert(_TOKENS)


@functools.cache
def _rotate_in_one_statement(audited: bool, for_audience: bool = False) -> Select[Any]:
    """PostgreSQL: the claim, the slide and the insert (and, if ``audited``, the token_issued
    audit row) as one statement of data-modifying CTEs, one round trip instead of three. The
    inserts read the slide, which reads the claim, so they happen in that order; a token that
    fails the claim's WHERE clause makes every part empty and the statement changes nothing."""
    claimed = _claim_if_usable(for_audience).cte("claimed")
    slid = (
        # The family by the parameter as well as through the claim: each part of the
        # statement names the one family it touches.
        _slide_family(
            (_FAMILIES.c.id == bindparam("token_family")) & (_FAMILIES.c.id == claimed.c.family_id)
        )
        .returning(claimed.c.id.label("parent_id"), claimed.c.generation, _FAMILIES.c.id)
        .cte("slid")
    )
    inserted = insert(_TOKENS).from_select(
        ["id", "family_id", "parent_id", "token_digest", "generation", "issued_at", "expires_at"],
        select(
            bindparam("successor_id", type_=_TOKENS.c.id.type),
            slid.c.id,
            slid.c.parent_id,
            bindparam("successor_digest", type_=_TOKENS.c.token_digest.type),
            slid.c.generation + 1,
            bindparam("now"),
            slid.c.idle_expires_at,
        ),
    )
    rotated = select(
        slid.c.id, slid.c.user_id, slid.c.scope, slid.c.audience, slid.c.auth_time, slid.c.amr
    ).add_cte(inserted.cte("inserted"))
    if audited:
        # The token_issued row too: it commits exactly when the rotation does.
        rotated = rotated.add_cte(rotation_audit_row(slid).cte("audited"))
    return rotated


def _claim_and_rotate(
    session: Session,
    family_id: uuid.UUID,
    digest: bytes,
    presented: str,
    successor: str,
    client: Client,
    policy: RefreshPolicy,
    now: datetime,
    ip_address: str | None,
    audit: RotationAudit | None,
    requested_audience: str | None,
    proof_jkt: str | None,
) -> IssuedRefreshToken | None:
    """Rotate a live token of a usable family (granted for ``requested_audience``, if given),
    or return None having changed nothing."""
    sealed = _seal_successor(presented, successor, digest)
    for_audience = requested_audience is not None
    audience_params = {"requested_audience": requested_audience} if for_audience else {}
    if session.get_bind().dialect.name == "postgresql":
        audit_params = (
            {"audit_client_id": audit.client_id, "audit_user_agent": audit.user_agent}
            if audit is not None
            else {}
        )
        # Committed on its own, before the access token is signed: if the response is then
        # lost, the client's retry is inside the grace window and gets this same successor.
        rows = execute_alone(
            session,
            _rotate_in_one_statement(audited=audit is not None, for_audience=for_audience),
            {
                **audit_params,
                **audience_params,
                **policy.budget_params(now),
                "token_family": family_id,
                "digest": digest,
                "presenting_client": client.id,
                "proof_jkt": proof_jkt,
                "now": now,
                "sealed": sealed,
                "idle_until": now + policy.idle_ttl,
                "last_ip": ip_address,
                "successor_id": uuid.uuid4(),
                "successor_digest": digest_token(successor),
            },
        )
        if not rows:
            return None
        rotated = rows[0]
        return IssuedRefreshToken(
            rotated.id,
            rotated.user_id,
            rotated.scope,
            rotated.audience,
            successor,
            rotated.auth_time,
            rotated.amr,
            audited=audit is not None,
        )
    claimed = session.execute(
        _claim_if_usable(for_audience),
        {
            **audience_params,
            **policy.budget_params(now),
            "token_family": family_id,
            "digest": digest,
            "presenting_client": client.id,
            "proof_jkt": proof_jkt,
            "now": now,
            "sealed": sealed,
        },
    ).one_or_none()
    if claimed is None:
        return None
    family = session.execute(
        _SLIDE_FAMILY,
        {
            **policy.budget_params(now),
            "family_id": claimed.family_id,
            "idle_until": now + policy.idle_ttl,
            "now": now,
            "last_ip": ip_address,
        },
    ).one()
    session.execute(
        _INSERT_TOKEN,
        {
            "id": uuid.uuid4(),
            "family_id": claimed.family_id,
            "parent_id": claimed.id,
            "token_digest": digest_token(successor),
            "generation": claimed.generation + 1,
            "issued_at": now,
            "used_at": None,
            "expires_at": family.idle_expires_at,
            "successor_ciphertext": None,
        },
    )
    return IssuedRefreshToken(
        claimed.family_id,
        family.user_id,
        family.scope,
        family.audience,
        successor,
        family.auth_time,
        family.amr,
    )


def _check_family_usable(family: RefreshFamily, client: Client, now: datetime) -> None:
    # A token of client A shown by client B is refused (RFC 6749 §6: "bound to the client").
    if family.client_pk != client.id:
        raise InvalidGrant()
    if family.revoked_at is not None or family.user.disabled:
        raise InvalidGrant()
    if now >= family.expires_at or now >= family.idle_expires_at:
        raise InvalidGrant()


def _issue_successor(
    session: Session,
    family: RefreshFamily,
    parent: RefreshToken,
    successor: str,
    policy: RefreshPolicy,
    now: datetime,
) -> None:
    # Idle expiry slides forward with use; the absolute expiry never moves.
    family.idle_expires_at = min(now + policy.idle_ttl, family.expires_at)
    family.last_used_at = now
    _spend_rotation(family, policy, now)
    session.add(
        RefreshToken(
            family_id=family.id,
            parent_id=parent.id,
            token_digest=digest_token(successor),
            generation=parent.generation + 1,
            issued_at=now,
            expires_at=family.idle_expires_at,
        )
    )
    session.flush()


def _spend_rotation(family: RefreshFamily, policy: RefreshPolicy, now: datetime) -> None:
    """The slide's budget columns, for a rotation made through the ORM (the slow path)."""
    budget = policy.rotation_budget
    if budget is not None and budget.counts(family.rotation_window_started_at, now):
        family.rotations_in_window += 1
    else:
        family.rotation_window_started_at = now
        family.rotations_in_window = 1


def _successor_for_retry(
    session: Session,
    parent: RefreshToken,
    presented: str,
    policy: RefreshPolicy,
    now: datetime,
) -> str | None:
    """The successor to hand out again, if this is a retry rather than a theft.

    A retry is: the grace window is on, the token was used at most that long ago, and its
    successor has not been used itself (so the presenter is still at the head of the family).
    """
    if policy.reuse_grace <= timedelta(0) or parent.used_at is None:
        return None
    if now - parent.used_at > policy.reuse_grace or parent.successor_ciphertext is None:
        return None
    child = session.scalars(
        select(RefreshToken).where(
            RefreshToken.family_id == parent.family_id, RefreshToken.parent_id == parent.id
        )
    ).one_or_none()
    if child is None or child.used_at is not None:
        return None
    successor = _open_successor(presented, parent.successor_ciphertext, parent.token_digest)
    if successor is None or not hmac.compare_digest(digest_token(successor), child.token_digest):
        return None
    return successor


def revoke_family(
    session: Session, family: RefreshFamily, reason: RevocationReason, now: datetime
) -> bool:
    """Revoke every token of the family. Returns False if it was already revoked."""
    revoked = revoke_families(session, [RefreshFamily.id == family.id], reason.value, now)
    session.refresh(family)
    return bool(revoked)


def revoke_user_families(
    session: Session, user_id: uuid.UUID, reason: RevocationReason, now: datetime
) -> int:
    """Revoke every live family of a user; returns how many were revoked."""
    return len(revoke_families(session, [RefreshFamily.user_id == user_id], reason.value, now))
