"""The device authorization grant at the token endpoint (RFC 8628 §3.4): the device polls
with its device code until the user has decided; the answer to each poll comes from
``services/device_authorization.poll``. An approved request ends like an authorization code
(``user_tokens.issue_user_tokens``), with the approving browser session's sign-in."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from authlib.oauth2.rfc6749 import grants
from flask import request

from authserver.db import db
from authserver.errors import InvalidGrant, InvalidRequest, UnauthorizedClient
from authserver.models import Client, DeviceAuthorization, User
from authserver.oauth.grants import ALL_METHODS, resources_of
from authserver.oauth.user_tokens import issue_user_tokens
from authserver.runtime import runtime
from authserver.services.clients import resolve_audience, resolve_scope
from authserver.services.device_authorization import (
    DEVICE_CODE_GRANT,
    DEVICE_PAGE_PATH,
    poll,
    start_device_authorization,
)


class DeviceCodeGrant(grants.BaseGrant, grants.TokenEndpointMixin):
    GRANT_TYPE = DEVICE_CODE_GRANT
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_METHODS

    def validate_token_request(self) -> None:
        device_code = self.request.payload.data.get("device_code")
        if not device_code:
            raise InvalidRequest("Missing 'device_code'.")
        client: Client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClient()
        self.request.client = client
        self.authorization: DeviceAuthorization = poll(
            db.session, str(device_code), client, runtime().now()
        )

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        client: Client = self.request.client
        authorization = self.authorization
        user = db.session.get(User, authorization.user_id)
        if user is None or user.disabled or authorization.auth_time is None:
            raise InvalidGrant()
        issued = issue_user_tokens(
            client,
            user,
            grant_type=self.GRANT_TYPE,
            scope=authorization.scope,
            audience=authorization.audience,
            auth_time=authorization.auth_time,
            amr=authorization.amr or "pwd",
            browser_session_id=authorization.browser_session_id,
            nonce=None,
            now=runtime().now(),
        )
        return 200, issued.body, self.TOKEN_RESPONSE_HEADER


def start(server: Any) -> dict[str, Any]:
    """The device authorization endpoint (RFC 8628 §3.1, §3.2): the client authenticates as
    at the token endpoint (public clients send ``client_id`` alone) and must be registered
    for the grant; the scope and audience are resolved as for any grant now, so the user
    approves exactly what the tokens will carry."""
    client: Client = server.authenticate_client(
        server.create_oauth2_request(None), ALL_METHODS, "device_authorization"
    )
    if not client.check_grant_type(DEVICE_CODE_GRANT):
        raise UnauthorizedClient()
    rt = runtime()
    scope = resolve_scope(client, request.form.get("scope"))
    audience = resolve_audience(
        client,
        resources_of(request.form),
        default_audience=rt.config.default_audience,
        issuer=rt.config.issuer,
    )
    started = start_device_authorization(
        db.session,
        client,
        scope=scope,
        audience=audience,
        now=rt.now(),
        ttl=rt.config.device_code_ttl,
        interval=rt.config.device_poll_interval,
    )
    verification_uri = rt.config.issuer + DEVICE_PAGE_PATH
    complete = f"{verification_uri}?{urlencode({'user_code': started.user_code})}"
    return {
        "device_code": started.device_code,
        "user_code": started.user_code,
        "verification_uri": verification_uri,
        "verification_uri_complete": complete,
        "expires_in": started.expires_in,
        "interval": started.interval,
    }
