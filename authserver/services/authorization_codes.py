"""Authorization codes (RFC 6749 §4.1): issue, look up, redeem exactly once."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from authserver.errors import InvalidGrant
from authserver.models import AuthorizationCode, BrowserSession, Client, RefreshFamily, User
from authserver.services.refresh_tokens import RevocationReason, digest_token
from authserver.services.revocations import revoke_families

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
            auth_time=browser_session.auth_time if browser_session else now,
            created_at=now,
            expires_at=now + ttl,
        )
    )
    db.flush()
    return code


def find_code(db: Session, code: str, client: Client, now: datetime) -> AuthorizationCode:
    """The code, if this client may still redeem it. A code shown a second time is a replay:
    the tokens issued from it are revoked (RFC 6749 §4.1.2)."""
    found = db.scalars(
        select(AuthorizationCode).where(AuthorizationCode.code_digest == digest_token(code))
    ).one_or_none()
    # Bound to its client (§4.1.3): another client's code is simply invalid.
    if found is None or found.client_pk != client.id:
        raise InvalidGrant()
    if found.used_at is not None:
        revoke_tokens_of_code(db, found, now)
        raise InvalidGrant()
    if now >= found.expires_at:
        raise InvalidGrant()
    return found


def claim_code(db: Session, code: AuthorizationCode, now: datetime) -> None:
    """Mark the code used. Of two parallel redemptions exactly one gets past this point;
    the other is treated as the replay it is."""
    claimed = db.execute(
        update(AuthorizationCode)
        .where(AuthorizationCode.id == code.id, AuthorizationCode.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        db.refresh(code)
        revoke_tokens_of_code(db, code, now)
        raise InvalidGrant()
    code.used_at = now


def record_family(db: Session, code: AuthorizationCode, family_id: uuid.UUID) -> None:
    code.family_id = family_id
    db.flush()


def revoke_tokens_of_code(db: Session, code: AuthorizationCode, now: datetime) -> None:
    if code.family_id is None:
        return
    revoke_families(
        db, [RefreshFamily.id == code.family_id], RevocationReason.CODE_REPLAYED.value, now
    )
