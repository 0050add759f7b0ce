"""What a grant that ends a user's authorization issues: a refresh family when the user
granted offline access (or the client is the operator's own), the access token, and with
``openid`` an ID token; audited. The authorization code grant and the device grant both end
this way, with the authorization they redeemed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import request

from authserver.db import db
from authserver.http.audit import audit
from authserver.http.dpop import family_key, token_request_key
from authserver.models import Client, User
from authserver.oauth.grants import token_body
from authserver.runtime import runtime
from authserver.services.access_tokens import IssuedAccessToken
from authserver.services.audit import AuditEventType
from authserver.services.id_tokens import issue_id_token
from authserver.services.refresh_tokens import start_family

OFFLINE_ACCESS = "offline_access"
OPENID = "openid"


@dataclass(frozen=True)
class UserTokens:
    body: dict[str, Any]
    access: IssuedAccessToken
    family_id: uuid.UUID | None


def issue_user_tokens(
    client: Client,
    user: User,
    *,
    grant_type: str,
    scope: str,
    audience: str,
    auth_time: datetime,
    amr: str,
    browser_session_id: uuid.UUID | None,
    nonce: str | None,
    now: datetime,
) -> UserTokens:
    rt = runtime()
    scopes = scope.split()
    refresh = None
    # A refresh token is issued when the user granted offline access, or the client is
    # the operator's own (its sessions are the operator's policy to set).
    if client.check_grant_type("refresh_token") and (
        OFFLINE_ACCESS in scopes or client.is_first_party
    ):
        refresh = start_family(
            db.session,
            user=user,
            client=client,
            scope=scope,
            audience=audience,
            policy=rt.refresh_policy(client),
            now=now,
            user_agent=request.user_agent.string,
            ip_address=request.remote_addr,
            browser_session_id=browser_session_id,
            auth_time=auth_time,
            amr=amr,
            dpop_jkt=family_key(client),
        )
    family_id = refresh.family.id if refresh else None
    access = rt.access_tokens.issue(
        subject=str(user.id),
        client_id=client.client_id,
        audience=audience,
        scope=scope,
        ttl=rt.access_token_ttl(client),
        now=now,
        family_id=family_id,
        auth_time=auth_time,
        amr=amr,
        dpop_jkt=token_request_key(),
    )
    body = token_body(access, scope, refresh.token if refresh else None)
    if OPENID in scopes:
        body["id_token"] = issue_id_token(
            rt.keys,
            issuer=rt.config.issuer,
            subject=str(user.id),
            client_id=client.client_id,
            auth_time=auth_time,
            amr=amr,
            ttl=rt.access_token_ttl(client),
            now=now,
            nonce=nonce,
            access_token=access.token,
            session_id=str(browser_session_id) if browser_session_id else None,
        )
    audit(
        AuditEventType.TOKEN_ISSUED,
        user_id=user.id,
        client_id=client.client_id,
        grant_type=grant_type,
        scope=scope,
        family_id=family_id,
    )
    return UserTokens(body=body, access=access, family_id=family_id)
