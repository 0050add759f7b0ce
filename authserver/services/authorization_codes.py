"""Authorization codes (RFC 6749 §4.1): issue, look up, redeem exactly once."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from authserver.db import update_loaded_row
from authserver.errors import InvalidGrant
from authserver.models import (
    AMR_PASSWORD,
    AuthorizationCode,
    BrowserSession,
    Client,
    RefreshFamily,
    User,
)
from authserver.services.backchannel_logout import record_signed_in_client
from authserver.services.refresh_tokens import RevocationReason, digest_token
from authserver.services.revocations import denylist_access_token, revoke_families

CODE_BYTES = 32  # 256 bits


def issue_code(
    db: Session,
    *,
    client: Client,
    user: User,
    browser_session: BrowserSession | None,
    redirect_uri: str,
    scope: str,
    audience: str,
    nonce: str | None,
    code_challenge: str | None,
    code_challenge_method: str | None,
    ttl: timedelta,
    now: datetime,
    dpop_jkt: str | None = None,
) -> str:
    code = secrets.token_urlsafe(CODE_BYTES)
    db.add(
        AuthorizationCode(
            code_digest=digest_token(code),
            client_pk=client.id,
            user_id=user.id,
            browser_session_id=browser_session.id if browser_session else None,
            redirect_uri=redirect_uri,
            scope=scope,
            audience=audience,
            nonce=nonce,
            code_challenge=code_challenge,
            code_challenge_method=code_challenge_method,
            dpop_jkt=dpop_jkt,
            auth_time=browser_session.auth_time if browser_session else now,
            amr=browser_session.amr if browser_session else AMR_PASSWORD,
            created_at=now,
            expires_at=now + ttl,
        )
    )
    if browser_session is not None:
        # The client signs in through this session: it is told when the session ends
        # (OpenID Connect Back-Channel Logout 1.0 §2.3).
        record_signed_in_client(db, browser_session, client, now)
    db.flush()
    return code


def find_code(db: Session, code: str, client: Client, now: datetime) -> AuthorizationCode:
    """The code, if this client may still redeem it.

    In this order: an unknown code is refused. A code of another client is refused and used
    up: it is bound to its client (RFC 6749 §4.1.3), so it has leaked, and it gets no second
    chance; what it issued is left alone. A used code shown again by its own client is a
    replay: the tokens issued from it are revoked (§4.1.2, RFC 9700 §4.2.4).
    """
    found = db.scalars(
        select(AuthorizationCode).where(AuthorizationCode.code_digest == digest_token(code))
    ).one_or_none()
    if found is None:
        raise InvalidGrant()
    if found.client_pk != client.id:
        # Revoking what the code issued is for its own client's replays only: codes leak
        # through the browser (history, Referer; RFC 9700 §4.2, §4.3) long after they were
        # redeemed, and anyone may name a public client, so another client's presentation
        # must not be a way to sign a user out of an app.
        _mark_used(db, found, now)
        raise InvalidGrant()
    if found.used_at is not None:
        revoke_tokens_of_code(db, found, now)
        raise InvalidGrant()
    if now >= found.expires_at:
        raise InvalidGrant()
    return found


def claim_code(db: Session, code: AuthorizationCode, now: datetime) -> None:
    """Mark the code used to redeem it. Of two parallel redemptions exactly one gets past this
    point; the other is treated as the replay it is."""
    if not _mark_used(db, code, now):
        _replayed(db, code, now)
        raise InvalidGrant()


def spend_code(db: Session, code: AuthorizationCode, now: datetime) -> None:
    """Use the code up without redeeming it: its client presented it and the request was
    refused (a wrong or missing PKCE verifier, another redirect URI). A code is spent by its
    first presentation at the token endpoint (RFC 6749 §10.5, RFC 9700 §4.2.4), so whoever
    holds a stolen code gets one guess at the verifier. If a parallel request redeemed it
    first, this presentation is a replay of it."""
    if not _mark_used(db, code, now):
        _replayed(db, code, now)


def _mark_used(db: Session, code: AuthorizationCode, now: datetime) -> bool:
    """Set ``used_at`` unless it is set; whether this call set it."""
    claimed = db.execute(
        update(AuthorizationCode)
        .where(*_this_code(code), AuthorizationCode.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    set_committed_value(code, "used_at", now)
    return True


def _this_code(code: AuthorizationCode) -> tuple[ColumnElement[bool], ...]:
    """SQL: the code's row, by the digest it is looked up by as well as its id. Every write
    to a code names its digest, the key a distributed database would place the table by
    (README "Past one primary"); the ORM's own writes name only the id, so none is left to it."""
    return (
        AuthorizationCode.code_digest == code.code_digest,
        AuthorizationCode.id == code.id,
    )


def _replayed(db: Session, code: AuthorizationCode, now: datetime) -> None:
    # The other request has committed (PostgreSQL's UPDATE waited for it; SQLite runs one
    # writer at a time), so this reads what it issued.
    db.scalars(
        select(AuthorizationCode).where(*_this_code(code)).execution_options(populate_existing=True)
    ).one()
    revoke_tokens_of_code(db, code, now)


def record_tokens_issued(
    db: Session,
    code: AuthorizationCode,
    *,
    family_id: uuid.UUID | None,
    access_token_jti: str,
    access_token_expires_at: datetime,
) -> None:
    """Remember what the code was exchanged for, so that a replay can revoke it."""
    issued = {
        "family_id": family_id,
        "access_token_jti": access_token_jti,
        "access_token_expires_at": access_token_expires_at,
    }
    update_loaded_row(db, code, _this_code(code), issued)


def revoke_tokens_of_code(db: Session, code: AuthorizationCode, now: datetime) -> None:
    """RFC 6749 §4.1.2, RFC 9700 §4.2.4: revoke every token issued from the code. Its family
    (and with it every access token carrying that ``sid``), and its access token by ``jti``,
    which also reaches a code that started no family (a client without offline access); both
    reach introspection, userinfo and the revocation feed."""
    if code.family_id is not None:
        revoke_families(
            db, [RefreshFamily.id == code.family_id], RevocationReason.CODE_REPLAYED.value, now
        )
    if code.access_token_jti is not None and code.access_token_expires_at is not None:
        denylist_access_token(db, code.access_token_jti, code.access_token_expires_at, now)
