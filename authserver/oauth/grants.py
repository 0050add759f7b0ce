"""authlib grant subclasses. Their hooks call services/; they hold no domain logic.

Authlib authenticates the client and checks that it may use the grant type; the services do
the rest. Errors raised here are ``authserver.errors`` types, rendered in ``errors.py``.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import grants
from flask import request as flask_request

from authserver.db import db
from authserver.errors import (
    InvalidRequest,
    RefreshTokenReused,
    UnauthorizedClient,
)
from authserver.http.audit import audit
from authserver.http.dpop import family_key, token_request_key
from authserver.models import AMR_PASSWORD, Client, User
from authserver.own_apis import admin_audience
from authserver.request_context import request_context
from authserver.runtime import runtime
from authserver.services.access_tokens import IssuedAccessToken
from authserver.services.audit import AuditEventType, clip_user_agent
from authserver.services.clients import resolve_admin_grant, resolve_audience, resolve_scope
from authserver.services.refresh_tokens import RotationAudit, rotate_refresh_token, start_family
from authserver.services.sign_in import sign_in_for_token

CONFIDENTIAL_METHODS = ["client_secret_basic", "client_secret_post"]
ALL_METHODS = [*CONFIDENTIAL_METHODS, "none"]


def resources_of(values: Any) -> list[str]:
    """RFC 8707 ``resource`` parameters of a request's form (or values)."""
    return [r for r in values.getlist("resource") if r]


def token_body(
    access: IssuedAccessToken, scope: str, refresh_token: str | None = None
) -> dict[str, Any]:
    # RFC 6749 §5.1
    body: dict[str, Any] = {
        "access_token": access.token,
        "token_type": access.token_type,
        "expires_in": access.expires_in,
    }
    if scope:
        body["scope"] = scope
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    return body


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    """RFC 6749 §4.4: a confidential client acting on its own behalf."""

    TOKEN_ENDPOINT_AUTH_METHODS = CONFIDENTIAL_METHODS
    # Set when the request is for the admin API: its audience, not the client's.
    granted_admin_audience: str | None = None

    def validate_requested_scope(self) -> None:
        issuer = runtime().config.issuer
        admin_scope = resolve_admin_grant(
            self.request.client,
            self.request.payload.scope,
            resources_of(self.request.form),
            issuer=issuer,
        )
        if admin_scope is not None:
            self.request.scope = admin_scope
            self.granted_admin_audience = admin_audience(issuer)
            return
        # No user: scopes that only mean something for a signed-in user are never granted.
        self.request.scope = resolve_scope(
            self.request.client, self.request.payload.scope, for_user=False
        )

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        rt = runtime()
        client: Client = self.request.client
        audience = self.granted_admin_audience or resolve_audience(
            client,
            resources_of(self.request.form),
            default_audience=rt.config.default_audience,
            issuer=rt.config.issuer,
            for_user=False,
        )
        # RFC 9068 §2.2: with no resource owner, sub is the client itself.
        access = rt.access_tokens.issue(
            subject=client.client_id,
            client_id=client.client_id,
            audience=audience,
            scope=self.request.scope,
            ttl=rt.access_token_ttl(client),
            now=runtime().now(),
            dpop_jkt=token_request_key(),
        )
        audit(
            AuditEventType.TOKEN_ISSUED,
            client_id=client.client_id,
            grant_type=self.GRANT_TYPE,
            scope=self.request.scope,
            # The token changes no state: its row may follow it (AUTHSERVER_TOKEN_AUDIT_FLUSH_MS).
            queued=True,
        )
        return 200, token_body(access, self.request.scope), self.TOKEN_RESPONSE_HEADER


class PasswordGrant(grants.ResourceOwnerPasswordCredentialsGrant):
    """RFC 6749 §4.3, legacy: only for first-party clients explicitly allowed it, because it
    hands the user's password to the client (RFC 9700 §2.4)."""

    TOKEN_ENDPOINT_AUTH_METHODS = ALL_METHODS

    def validate_token_request(self) -> None:
        client: Client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE) or not client.is_first_party:
            raise UnauthorizedClient()
        rt = runtime()
        if rt.config.require_second_factor or client.require_second_factor:
            # The grant cannot ask for a second factor, and this client's users must give one.
            raise UnauthorizedClient(
                "This client's users sign in with two factors: use the authorization code flow."
            )
        self.request.client = client
        username = self.request.form.get("username")
        password = self.request.form.get("password")
        if not username or password is None:
            raise InvalidRequest("Missing 'username' or 'password'.")
        # Cheap checks first: a bad scope must not cost a password hash.
        self.request.scope = resolve_scope(client, self.request.payload.scope)
        user = sign_in_for_token(
            db.session,
            rt.hasher,
            rt.throttle_policy,
            email=username,
            password=password,
            client_id=client.client_id,
            context=request_context(),
        )
        self.request.user = user

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        rt = runtime()
        client: Client = self.request.client
        user: User = self.request.user
        now = runtime().now()
        scope = self.request.scope
        audience = resolve_audience(
            client,
            resources_of(self.request.form),
            default_audience=rt.config.default_audience,
            issuer=rt.config.issuer,
        )
        refresh = None
        if client.check_grant_type("refresh_token"):
            refresh = start_family(
                db.session,
                user=user,
                client=client,
                scope=scope,
                audience=audience,
                policy=rt.refresh_policy(client),
                now=now,
                user_agent=flask_request.user_agent.string,
                ip_address=flask_request.remote_addr,
                # The password was checked just now, and it is the only factor.
                auth_time=now,
                amr=AMR_PASSWORD,
                dpop_jkt=family_key(client),
            )
        access = rt.access_tokens.issue(
            subject=str(user.id),
            client_id=client.client_id,
            audience=audience,
            scope=scope,
            ttl=rt.access_token_ttl(client),
            now=now,
            family_id=refresh.family.id if refresh else None,
            auth_time=now,
            amr=AMR_PASSWORD,
            dpop_jkt=token_request_key(),
        )
        audit(
            AuditEventType.TOKEN_ISSUED,
            user_id=user.id,
            client_id=client.client_id,
            grant_type=self.GRANT_TYPE,
            scope=scope,
            family_id=refresh.family.id if refresh else None,
        )
        body = token_body(access, scope, refresh.token if refresh else None)
        return 200, body, self.TOKEN_RESPONSE_HEADER


class RefreshTokenGrant(grants.RefreshTokenGrant):
    """RFC 6749 §6 with rotation and reuse detection (RFC 9700 §4.14.2)."""

    TOKEN_ENDPOINT_AUTH_METHODS = ALL_METHODS

    def validate_token_request(self) -> None:
        self.request.client = self._validate_request_client()
        if not self.request.form.get("refresh_token"):
            raise InvalidRequest("Missing 'refresh_token'.")

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        rt = runtime()
        client: Client = self.request.client
        now = runtime().now()
        requested_scope = (self.request.payload.scope or "").strip() or None
        try:
            # The scope and resource are checked by the rotation, after it has looked at the
            # token: a used token is reuse whatever the request asks for.
            rotated = rotate_refresh_token(
                db.session,
                presented=self.request.form["refresh_token"],
                client=client,
                requested_scope=requested_scope,
                requested_resources=resources_of(self.request.form),
                policy=rt.refresh_policy(client),
                now=now,
                ip_address=flask_request.remote_addr,
                # The rotation's statement writes its token_issued row: it commits anyway.
                audit=RotationAudit(
                    client.client_id, clip_user_agent(flask_request.user_agent.string)
                ),
                proof_jkt=token_request_key(),
            )
        except RefreshTokenReused as reuse:
            # Someone else holds a token of this family: the caller's address, and where the
            # family signed in and was last refreshed from, tell who; a presenting client
            # other than the family's tells where the token leaked to.
            leaked_to_another_client: dict[str, Any] = (
                {"family_client_id": reuse.family_client_id}
                if reuse.family_client_id != reuse.client_id
                else {}
            )
            audit(
                AuditEventType.REFRESH_REUSE_DETECTED,
                user_id=reuse.user_id,
                client_id=reuse.client_id,
                family_id=reuse.family_id,
                first_ip_address=reuse.first_ip_address,
                last_ip_address=reuse.last_ip_address,
                **leaked_to_another_client,
            )
            if reuse.revoked_now:
                rt.notices.refresh_token_reused(
                    db.session, reuse.family_id, now, replayed_from=flask_request.remote_addr
                )
            raise
        scope = (
            " ".join(dict.fromkeys(requested_scope.split())) if requested_scope else rotated.scope
        )
        access = rt.access_tokens.issue(
            subject=str(rotated.user_id),
            client_id=client.client_id,
            # The family's: a resource at refresh may only name it (RFC 8707 §2.2).
            audience=rotated.audience,
            scope=scope,
            ttl=rt.access_token_ttl(client),
            now=now,
            family_id=rotated.family_id,
            auth_time=rotated.auth_time,
            amr=rotated.amr,
            dpop_jkt=token_request_key(),
        )
        audit(
            AuditEventType.TOKEN_ISSUED,
            user_id=rotated.user_id,
            client_id=client.client_id,
            grant_type=self.GRANT_TYPE,
            scope=scope,
            family_id=rotated.family_id,
            row_written=rotated.audited,
        )
        return 200, token_body(access, scope, rotated.token), self.TOKEN_RESPONSE_HEADER
