"""What a presented token is and whether it is still good: the logic behind revocation
(RFC 7009) and introspection (RFC 7662)."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Table, and_, bindparam, exists, select
from sqlalchemy.orm import Session

from authserver.db import execute_alone
from authserver.models import Client, RefreshFamily, RefreshToken, Revocation, User
from authserver.services.keys import KeyRing
from authserver.services.refresh_tokens import (
    RevocationReason,
    live_family_exists,
    read_refresh_token,
    revoke_family,
)
from authserver.services.revocations import CLIENT, JTI, KID, SUB, denylist_access_token
from authserver.services.token_verification import OwnToken, TokenRejected, verify_own_token

ACCESS_TOKEN = "access_token"  # noqa: S105 (RFC 7009 token type names)
REFRESH_TOKEN = "refresh_token"  # noqa: S105


@dataclass(frozen=True)
class PresentedToken:
    """A token this server issued: a refresh token row or a verified access token's claims."""

    kind: str
    client_id: str
    refresh: RefreshToken | None = None
    access: OwnToken | None = None

    @property
    def claims(self) -> dict[str, Any] | None:
        return self.access.claims if self.access is not None else None

    def check_client(self, client: Client) -> bool:
        return self.client_id == client.client_id

    def is_for_audience_of(self, client: Client) -> bool:
        """An access token whose audience ``client`` serves as a resource server."""
        if self.claims is None:
            return False
        audience = self.claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        return any(isinstance(a, str) and a in client.served_audiences for a in audiences)


def find_presented_token(
    db: Session, keys: KeyRing, issuer: str, token: str, hint: str | None, now: datetime
) -> PresentedToken | None:
    """The token, if this server issued it; None for anything else. The hint only orders the
    look-ups (RFC 7009 §2.1): a wrong hint still finds the token."""
    order = (REFRESH_TOKEN, ACCESS_TOKEN) if hint != ACCESS_TOKEN else (ACCESS_TOKEN, REFRESH_TOKEN)
    for kind in order:
        found = (
            _find_refresh(db, token)
            if kind == REFRESH_TOKEN
            else _find_access(keys, issuer, token, now)
        )
        if found is not None:
            return found
    return None


def _find_refresh(db: Session, token: str) -> PresentedToken | None:
    if not token or len(token) > 200:
        return None
    named = read_refresh_token(token)
    if named is None:
        return None
    row = db.scalars(select(RefreshToken).where(*named.where_clause())).one_or_none()
    if row is None:
        return None
    return PresentedToken(kind=REFRESH_TOKEN, client_id=row.family.client.client_id, refresh=row)


def _find_access(keys: KeyRing, issuer: str, token: str, now: datetime) -> PresentedToken | None:
    try:
        verified = verify_own_token(
            keys, token, issuer=issuer, typ="at+jwt", now=int(now.timestamp()), check_expiry=False
        )
    except TokenRejected:
        return None
    client_id = verified.claims.get("client_id")
    if not isinstance(client_id, str):
        return None
    return PresentedToken(kind=ACCESS_TOKEN, client_id=client_id, access=verified)


def revoke_presented_token(db: Session, token: PresentedToken, now: datetime) -> None:
    """RFC 7009 §2.1: a refresh token takes its whole family with it (and so every access
    token carrying that ``sid``); an access token is denylisted by jti until its exp."""
    if token.refresh is not None:
        revoke_family(db, token.refresh.family, RevocationReason.REVOKED_BY_CLIENT, now)
        return
    assert token.claims is not None
    denylist_access_token(
        db,
        str(token.claims.get("jti", "")),
        datetime.fromtimestamp(int(token.claims["exp"]), UTC),
        now,
    )


INACTIVE: dict[str, Any] = {"active": False}


def introspect_presented_token(
    db: Session, token: PresentedToken | None, issuer: str, now: datetime
) -> dict[str, Any]:
    """RFC 7662 §2.2: the token's claims if it is active, else only ``active: false``."""
    if token is None:
        return dict(INACTIVE)
    if token.refresh is not None:
        return _introspect_refresh(token.refresh, issuer, now)
    assert token.access is not None
    return _introspect_access(db, token.access, now)


def _family_live(family: RefreshFamily, now: datetime) -> bool:
    return (
        family.revoked_at is None
        and not family.user.disabled
        and now < family.expires_at
        and now < family.idle_expires_at
    )


def _introspect_refresh(row: RefreshToken, issuer: str, now: datetime) -> dict[str, Any]:
    family = row.family
    if row.used_at is not None or now >= row.expires_at or not _family_live(family, now):
        return dict(INACTIVE)
    return {
        "active": True,
        "token_type": REFRESH_TOKEN,
        "scope": family.scope,
        "client_id": family.client.client_id,
        "sub": str(family.user_id),
        "iss": issuer,
        "iat": int(row.issued_at.timestamp()),
        "exp": int(min(row.expires_at, family.expires_at).timestamp()),
        "sid": str(family.id),
    }


def access_token_still_granted(db: Session, token: OwnToken, now: datetime) -> bool:
    """Whether what a verified access token stands for still holds: not expired, not
    denylisted, its family (``sid``) not revoked, its user enabled and not signed out
    everywhere since, its client not disabled since, its signing key not withdrawn.
    Introspection and the endpoints this server protects itself (userinfo, the account API)
    ask this one question, answered in one query: the same entries the revocation feed hands
    resource servers, read at once rather than at the next poll."""
    claims = token.claims
    if int(claims["exp"]) <= int(now.timestamp()):
        return False
    sid = claims.get("sid")
    subject = str(claims.get("sub", ""))
    users_token = subject != claims.get("client_id")  # a user's token, not a client's own
    params: dict[str, Any] = {
        "jti": str(claims.get("jti", ""))[:64],
        "client_id": str(claims.get("client_id", ""))[:64],
        "kid": token.key_id[:64],
        "issued_at": datetime.fromtimestamp(int(claims.get("iat", 0)), UTC),
        "now": now,
    }
    try:
        if sid is not None:
            params["sid"] = uuid.UUID(str(sid))
        if users_token:
            params["user_id"] = uuid.UUID(subject)
    except ValueError:
        return False
    if users_token:
        params["subject"] = subject
    # Usually the request's only statement: on its own it needs no BEGIN and COMMIT.
    rows = execute_alone(db, _still_granted_query(sid is not None, users_token), params)
    return bool(rows[0][0])


_REVOCATIONS = cast(Table, Revocation.__table__)
_USERS = cast(Table, User.__table__)


def _cut_off(kind: str, value: str) -> ColumnElement[bool]:
    """An entry of ``kind`` for ``value`` recalling tokens issued before its not_before."""
    return (
        (_REVOCATIONS.c.kind == kind)
        & (_REVOCATIONS.c.value == bindparam(value))
        & (_REVOCATIONS.c.not_before > bindparam("issued_at"))
    )


@functools.cache
def _still_granted_query(has_family: bool, users_token: bool) -> Select[tuple[bool]]:
    """One SELECT of one boolean, built once per shape of token."""
    revoked = (
        ((_REVOCATIONS.c.kind == JTI) & (_REVOCATIONS.c.value == bindparam("jti")))
        | ((_REVOCATIONS.c.kind == KID) & (_REVOCATIONS.c.value == bindparam("kid")))
        | _cut_off(CLIENT, "client_id")
    )
    if users_token:
        # Signed out everywhere after this token was issued.
        revoked = revoked | _cut_off(SUB, "subject")
    conditions = [~exists(select(_REVOCATIONS.c.id).where(revoked))]
    if has_family:
        conditions.append(live_family_exists(bindparam("sid")))
    if users_token:
        conditions.append(
            exists(
                select(_USERS.c.id).where(
                    _USERS.c.id == bindparam("user_id"), _USERS.c.disabled.is_(False)
                )
            )
        )
    return select(and_(*conditions))


def _introspect_access(db: Session, token: OwnToken, now: datetime) -> dict[str, Any]:
    if not access_token_still_granted(db, token, now):
        return dict(INACTIVE)
    payload = {k: v for k, v in token.claims.items() if k in INTROSPECTED_CLAIMS}
    # RFC 9449 §6.2: a DPoP-bound token says so, and names its key in cnf.jkt, for the
    # resource server to check the proof against.
    token_type = "DPoP" if "cnf" in token.claims else "Bearer"
    payload.update(active=True, token_type=token_type)
    return payload


INTROSPECTED_CLAIMS = frozenset(
    {"scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti", "sid", "cnf"}
)
