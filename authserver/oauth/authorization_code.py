"""The authorization code grant (RFC 6749 §4.1) with PKCE (RFC 7636) and OpenID Connect.

authlib validates the authorization request (client, exact redirect URI, response type,
scope) and the token request (client authentication, redirect URI, PKCE verifier); these
subclasses store codes, use up a code whose redemption is refused, and issue tokens through
services/.
"""

from __future__ import annotations

import hmac
import re
from datetime import timedelta
from typing import Any

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import AccessDeniedError, InvalidRequestError, OAuth2Error
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import g

from authserver.db import db
from authserver.errors import AuthServerError, InvalidGrant
from authserver.http.dpop import token_request_key
from authserver.models import AuthorizationCode, Client, User
from authserver.oauth.grants import ALL_METHODS, resources_of
from authserver.oauth.user_tokens import issue_user_tokens
from authserver.runtime import runtime
from authserver.services.authorization_codes import (
    claim_code,
    find_code,
    issue_code,
    record_tokens_issued,
    spend_code,
)
from authserver.services.clients import resolve_audience
from authserver.services.grants import check_resource_of_grant


class S256CodeChallenge(CodeChallenge):
    """PKCE is required of every client, and only with S256 (RFC 9700 §2.1.1): ``plain``
    would send the verifier itself through the browser."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 (authlib's class attribute)
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send 'code_challenge'.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("Only 'code_challenge_method=S256' is supported.")
        super().validate_code_challenge(grant, redirect_uri)


# RFC 9449 §10: a JWK SHA-256 thumbprint, base64url without padding.
DPOP_JKT = re.compile(r"[A-Za-z0-9_-]{43}")


def _check_code_key(code: AuthorizationCode) -> None:
    """RFC 9449 §10: a code bound to a key is redeemed only with a proof of that key."""
    if code.dpop_jkt is None:
        return
    proven = token_request_key()
    if proven is None or not hmac.compare_digest(proven, code.dpop_jkt):
        raise InvalidGrant("The code is bound to a DPoP key; prove you hold it.")


def _as_oauth_error(exc: AuthServerError, redirect_uri: str) -> OAuth2Error:
    return OAuth2Error(
        error=exc.error,
        description=exc.description,
        redirect_uri=redirect_uri,
        status_code=exc.status_code,
    )


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_METHODS

    @staticmethod
    def validate_authorization_redirect_uri(request: Any, client: Client) -> str:
        """Exact match (RFC 9700 §4.1.3). The message never repeats the URI: it is the
        caller's input and may hold characters an error description must not carry."""
        requested = request.payload.redirect_uri
        if requested:
            if not client.check_redirect_uri(requested):
                raise InvalidRequestError("The redirect_uri is not registered for this client.")
            return str(requested)
        default = client.get_default_redirect_uri()
        if not default:
            raise InvalidRequestError("Missing 'redirect_uri'.")
        return default

    # -- authorization endpoint ----------------------------------------------------------

    def validate_authorization_request(self) -> str:
        """authlib's checks, then RFC 9449 §10's ``dpop_jkt``: a key thumbprint (the
        base64url SHA-256 of RFC 7638, 43 characters) the code will be bound to."""
        redirect_uri: str = super().validate_authorization_request()
        dpop_jkt = self.request.payload.data.get("dpop_jkt")
        if dpop_jkt is not None and not DPOP_JKT.fullmatch(str(dpop_jkt)):
            raise InvalidRequestError(
                "The dpop_jkt is not a JWK SHA-256 thumbprint.",
                redirect_uri=redirect_uri,
                state=self.request.payload.state,
            )
        return redirect_uri

    def create_authorization_response(
        self, redirect_uri: str, grant_user: User | None
    ) -> tuple[int, str, list[tuple[str, str]]]:
        if grant_user is None:
            raise AccessDeniedError(redirect_uri=redirect_uri)
        rt = runtime()
        client: Client = self.request.client
        data = self.request.payload.data
        try:
            audience = resolve_audience(
                client,
                # The request's own (a pushed request's, RFC 9126 §4), not the URL's.
                [r for r in self.request.payload.datalist.get("resource", []) if r],
                default_audience=rt.config.default_audience,
                issuer=rt.config.issuer,
            )
        except AuthServerError as exc:
            raise _as_oauth_error(exc, redirect_uri) from None
        code = issue_code(
            db.session,
            client=client,
            user=grant_user,
            browser_session=g.get("browser_session"),
            # Stored as requested: §4.1.3 wants the token request to repeat it if it was sent.
            redirect_uri=self.request.payload.redirect_uri or "",
            scope=self.request.scope,
            audience=audience,
            nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            ttl=timedelta(seconds=rt.config.authorization_code_ttl),
            now=runtime().now(),
            dpop_jkt=data.get("dpop_jkt"),
        )
        params = [("code", code)]
        if self.request.payload.state:
            params.append(("state", self.request.payload.state))
        # RFC 9207: name the issuer, so a client talking to several servers is not mixed up.
        params.append(("iss", rt.config.issuer))
        return 302, "", [("Location", add_params_to_uri(redirect_uri, params))]

    def save_authorization_code(self, code: str, request: Any) -> None:
        raise NotImplementedError("codes are issued by create_authorization_response")

    # -- token endpoint ------------------------------------------------------------------

    def validate_token_request(self) -> None:
        """authlib's checks (client, code, redirect URI) and then the PKCE verifier (its
        ``after_validate_token_request`` hook). A code that was found but fails any of the
        later ones is used up: a code is spent by its first presentation (RFC 6749 §10.5,
        RFC 9700 §4.2.4), so a thief gets one guess at the verifier, and a probe without one
        learns nothing it could try again with. Error responses commit, so the code stays
        spent."""
        self.presented_code: AuthorizationCode | None = None
        try:
            super().validate_token_request()
            # RFC 8707 §2.2: a resource here may only name the audience the code was for.
            check_resource_of_grant(
                resources_of(self.request.form), self.request.authorization_code.audience
            )
            _check_code_key(self.request.authorization_code)
        except (OAuth2Error, AuthServerError):
            if self.presented_code is not None:
                spend_code(db.session, self.presented_code, runtime().now())
            raise

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode:
        self.presented_code = find_code(db.session, code, client, runtime().now())
        return self.presented_code

    def authenticate_user(self, authorization_code: AuthorizationCode) -> User:
        return authorization_code.user

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Codes are marked used, not deleted: a replay must still find them (§4.1.2)."""

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        client: Client = self.request.client
        code: AuthorizationCode = self.request.authorization_code
        now = runtime().now()
        claim_code(db.session, code, now)
        user = code.user
        if user.disabled:
            raise InvalidGrant()
        issued = issue_user_tokens(
            client,
            user,
            grant_type=self.GRANT_TYPE,
            scope=code.scope,
            audience=code.audience,
            auth_time=code.auth_time,
            amr=code.amr,
            browser_session_id=code.browser_session_id,
            nonce=code.nonce,
            now=now,
        )
        record_tokens_issued(
            db.session,
            code,
            family_id=issued.family_id,
            access_token_jti=issued.access.jti,
            access_token_expires_at=issued.access.expires_at,
        )
        body = issued.body
        return 200, body, self.TOKEN_RESPONSE_HEADER
