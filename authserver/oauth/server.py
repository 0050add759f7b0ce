"""The authlib AuthorizationServer, wired to our models and services."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from authlib.common.urls import add_params_to_uri
from authlib.integrations.flask_oauth2 import AuthorizationServer as FlaskAuthorizationServer
from authlib.oauth2.rfc6749.errors import InvalidClientError as AuthlibInvalidClientError
from authlib.oauth2.rfc6749.errors import InvalidRequestError, UnsupportedResponseTypeError
from authlib.oauth2.rfc6749.requests import OAuth2Payload
from authlib.oauth2.rfc9101.errors import InvalidRequestUriError
from flask import Flask, Response, current_app, g, request

from authserver.db import db
from authserver.errors import (
    InvalidClient,
    InvalidDPoPProofError,
    InvalidRequest,
    UseDPoPNonceError,
)
from authserver.http.dpop import (
    NONCE_HEADER,
    current_nonce,
    presented_proof,
    remember_token_request_proof,
    token_request_key,
)
from authserver.models import Client
from authserver.oauth.authorization_code import AuthorizationCodeGrant, S256CodeChallenge
from authserver.oauth.client_auth import CLIENT_AUTH_METHODS
from authserver.oauth.device_code import DeviceCodeGrant
from authserver.oauth.grants import ClientCredentialsGrant, PasswordGrant, RefreshTokenGrant
from authserver.oauth.token_management import IntrospectionEndpoint, RevocationEndpoint
from authserver.resource.dpop import DPoPProof, InvalidDPoPProof, UseDPoPNonce
from authserver.runtime import runtime
from authserver.services.pushed_requests import find_pushed_request

EXTENSION_KEY = "authserver.oauth"
PLAIN_PARAMETER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Grant types the token endpoint answers, in the order discovery lists them.
TOKEN_GRANTS = (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    PasswordGrant,
    RefreshTokenGrant,
    DeviceCodeGrant,
)


def _query_client(client_id: str) -> Client | None:
    rt = runtime()
    client = rt.clients.lookup(db.session, client_id, rt.now())
    # A disabled client is no client: no consent page, no code, no token.
    return None if client is None or client.disabled else client


class PushedPayload(OAuth2Payload):
    """The parameters of a pushed request, as authlib reads a request's (``resource`` may
    repeat, RFC 8707 §2)."""

    def __init__(self, pairs: list[list[str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for name, value in pairs:
            self._datalist[name].append(value)
        self._data = {name: values[0] for name, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


def _save_token(_token: dict[str, Any], _request: Any) -> None:
    """Tokens are persisted by the services that issue them; nothing is left to save."""


class AuthorizationServer(FlaskAuthorizationServer):
    def init_app(self, app: Flask, *_args: Any, **_kwargs: Any) -> None:
        super().init_app(app, query_client=_query_client, save_token=_save_token)
        for method, func in CLIENT_AUTH_METHODS.items():
            self.register_client_auth_method(method, func)
        self.register_grant(AuthorizationCodeGrant, [S256CodeChallenge(required=True)])
        for grant in TOKEN_GRANTS[1:]:
            self.register_grant(grant)
        self.register_endpoint(RevocationEndpoint)
        self.register_endpoint(IntrospectionEndpoint)
        app.extensions[EXTENSION_KEY] = self

    def authenticate_client(self, request: Any, methods: list[str], endpoint: str = "token") -> Any:
        try:
            client = super().authenticate_client(request, methods, endpoint)
        except AuthlibInvalidClientError:
            # One answer for unknown client, wrong secret and wrong method (RFC 6749 §5.2).
            raise InvalidClient() from None
        if endpoint == "token" and client.dpop_bound_access_tokens and token_request_key() is None:
            # RFC 9449 §5.2: such a client's token requests without a proof are refused,
            # before any grant is looked at, so a code is not spent by the refusal.
            raise InvalidRequest("This client must send a DPoP proof with its token requests.")
        return client

    def handle_error_response(self, request: Any, error: Any) -> Response:
        redirect_uri = getattr(error, "redirect_uri", None)
        if redirect_uri:
            # RFC 9207: error responses to the client carry iss too.
            params = [*error.get_body(), ("iss", runtime().config.issuer)]
            location = add_params_to_uri(redirect_uri, params, error.redirect_fragment)
            response: Response = self.handle_response(302, "", [("Location", location)])
            return response
        response = super().handle_error_response(request, error)
        return response

    def get_authorization_grant(self, request: Any) -> Any:
        """The request's grant, once a pushed request (RFC 9126 §4) has replaced what the
        URL carries. authlib's own refusal of a response_type repeats it in the error
        description, which fails for characters a description may not hold; refuse with a
        fixed sentence."""
        if not getattr(request, "pushing", False):
            self._resolve_pushed_request(request)
        if request.payload.response_type == "code":
            return super().get_authorization_grant(request)
        redirect_uri = None
        client = self.query_client(request.payload.client_id or "")
        if client is not None:
            requested = request.payload.redirect_uri
            if requested:
                redirect_uri = requested if client.check_redirect_uri(requested) else None
            else:
                redirect_uri = client.get_default_redirect_uri()
        raise UnsupportedResponseTypeError(
            "",
            "Only response_type=code is supported.",
            redirect_uri=redirect_uri,
            state=request.payload.state,
        )

    def _resolve_pushed_request(self, request: Any) -> None:
        """RFC 9126 §4: with ``request_uri``, the request is the one the client pushed, and
        nothing else the URL carries counts; without it, a client (or a server) that requires
        pushed requests is refused. Both refusals are a page, never a redirect: nothing in
        the URL has been checked."""
        client = self.query_client(request.payload.client_id or "")
        request_uri = request.payload.data.get("request_uri")
        if request_uri is None:
            if client is not None and (
                runtime().config.require_par or client.require_pushed_authorization_requests
            ):
                raise InvalidRequestError(
                    "This client must push its authorization requests first (RFC 9126)."
                )
            return
        pushed = (
            find_pushed_request(db.session, str(request_uri), client, runtime().now())
            if client is not None
            else None
        )
        if pushed is None:
            raise InvalidRequestUriError(
                description="The request_uri is unknown, expired, used, or not this client's."
            )
        request.payload = PushedPayload(pushed.parameters)
        g.pushed_request = pushed

    def authenticate_feed_client(self) -> Client:
        """The revocation feed is a GET: HTTP Basic is the one way a client can authenticate."""
        client: Client = self.authenticate_client(
            self.create_oauth2_request(None), ["client_secret_basic"], "revocation_feed"
        )
        return client

    def create_token_response(self, request: Any = None) -> Response:
        check_token_request_shape()
        remember_token_request_proof(checked_proof())
        response: Response = super().create_token_response(request)
        nonce = current_nonce()
        if nonce is not None:
            # RFC 9449 §8.2: the nonce for the client's next proof.
            response.headers[NONCE_HEADER] = nonce
        return response


def checked_proof() -> DPoPProof | None:
    """The request's DPoP proof (RFC 9449 §5, §10.1), or its refusal as an OAuth error."""
    try:
        return presented_proof()
    except UseDPoPNonce:
        raise UseDPoPNonceError(current_nonce() or "") from None
    except InvalidDPoPProof as refused:
        raise InvalidDPoPProofError(refused.description) from None


def check_token_request_shape() -> None:
    """Refuse token requests RFC 6749 forbids before any grant looks at them."""
    check_form_shape()
    if not request.form.get("grant_type"):
        raise InvalidRequest("Missing 'grant_type'.")


def check_form_shape() -> None:
    """What every client-authenticated POST endpoint refuses.

    RFC 6749 §3.2: parameters go in the POST body; a token or secret in the query string
    would end up in access logs. §3.1/§3.2: no parameter may repeat (``resource`` may, RFC
    8707 §2). §2.3: a client uses one authentication method, not Basic and a body secret.
    """
    if request.args:
        raise InvalidRequest("Parameters belong in the POST body.")
    for name in request.form:
        if name != "resource" and len(request.form.getlist(name)) > 1:
            # Name it only if it is a plain name: the caller's text must not reach an
            # error_description unchecked (RFC 6749 §5.2 limits its characters).
            if PLAIN_PARAMETER_NAME.fullmatch(name):
                raise InvalidRequest(f"Parameter '{name}' is repeated.")
            raise InvalidRequest("A parameter is repeated.")
    authorization = request.headers.get("Authorization", "")
    if authorization.lower().startswith("basic ") and "client_secret" in request.form:
        raise InvalidRequest("Use one client authentication method, not two.")


def authorization_server() -> AuthorizationServer:
    server: AuthorizationServer = current_app.extensions[EXTENSION_KEY]
    return server


def supported_grant_types() -> list[str]:
    return [grant.GRANT_TYPE for grant in TOKEN_GRANTS]
