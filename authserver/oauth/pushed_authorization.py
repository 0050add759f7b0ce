"""The pushed authorization request endpoint (RFC 9126 §2): the client authenticates as at
the token endpoint, and its request is checked as the authorization endpoint would check
it, with authlib's grant, before it is kept (``services/pushed_requests.py``). A request that
would be refused there is refused here, in JSON (§2.3), with the same error code."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from flask import request

from authserver.db import db
from authserver.errors import AuthServerError, InvalidDPoPProofError
from authserver.models import Client
from authserver.oauth.grants import ALL_METHODS
from authserver.oauth.server import AuthorizationServer, PushedPayload, checked_proof
from authserver.runtime import runtime
from authserver.services.clients import resolve_audience
from authserver.services.pushed_requests import (
    NOT_PUSHABLE,
    PushedRequest,
    push_authorization_request,
)


class RequestRefused(Exception):
    """The pushed request would be refused by the authorization endpoint: ``error`` is what
    to answer (an OAuth2Error with no redirect: §2.3 answers in JSON)."""

    def __init__(self, error: OAuth2Error) -> None:
        super().__init__(error.error)
        # A JSON answer to the client itself: no redirect, and no state to echo (that is
        # for the redirect back through the browser, RFC 6749 §4.1.2.1).
        error.redirect_uri = None
        error.state = None
        self.error = error


def _pairs(client: Client) -> list[tuple[str, str]]:
    """The form's parameters, less the client's credentials; its client_id, if sent, must
    be the authenticated client's (§2.1), and is added if it was not (HTTP Basic)."""
    if "request_uri" in request.form:
        # RFC 9126 §2.1
        raise InvalidRequestError("A pushed request cannot carry a request_uri.")
    if request.form.get("client_id", client.client_id) != client.client_id:
        raise InvalidRequestError("The client_id is not the authenticated client's.")
    pairs = [
        (name, value)
        for name in request.form
        if name not in NOT_PUSHABLE
        for value in request.form.getlist(name)
    ]
    if "client_id" not in request.form:
        pairs.append(("client_id", client.client_id))
    return pairs


def _bound_to_key(pairs: list[tuple[str, str]], jkt: str) -> list[tuple[str, str]]:
    """RFC 9449 §10.1: a DPoP proof sent with the push binds the code to its key, as
    ``dpop_jkt`` would; both sent, they must name the same key."""
    named = [value for name, value in pairs if name == "dpop_jkt"]
    if not named:
        return [*pairs, ("dpop_jkt", jkt)]
    if named != [jkt]:
        raise InvalidDPoPProofError("The dpop_jkt is not the key of the DPoP proof.")
    return pairs


def push(
    server: AuthorizationServer, check_parameters: Callable[[Mapping[str, str]], None]
) -> PushedRequest:
    """Authenticate the client, check its request, keep it. ``check_parameters(mapping)``
    is the authorization endpoint's own check of what authlib does not know (``max_age``),
    raising an OAuth2Error. RequestRefused for a request the authorization endpoint would
    refuse; the client's authentication fails as at the token endpoint."""
    oauth_request = server.create_oauth2_request(None)
    client: Client = server.authenticate_client(oauth_request, ALL_METHODS, "pushed_authorization")
    rt = runtime()
    proof = checked_proof()
    try:
        pairs = _pairs(client)
        if proof is not None:
            pairs = _bound_to_key(pairs, proof.jkt)
        oauth_request.payload = PushedPayload([[name, value] for name, value in pairs])
        oauth_request.pushing = True
        grant = server.get_authorization_grant(oauth_request)
        grant.validate_no_multiple_request_parameter(oauth_request)
        grant.validate_consent_request()
        parameters: Mapping[str, str] = oauth_request.payload.data
        check_parameters(parameters)
        try:
            resolve_audience(
                client,
                [r for r in oauth_request.payload.datalist.get("resource", []) if r],
                default_audience=rt.config.default_audience,
                issuer=rt.config.issuer,
            )
        except AuthServerError as exc:
            raise OAuth2Error(error=exc.error, description=exc.description) from None
    except OAuth2Error as error:
        raise RequestRefused(error) from None
    return push_authorization_request(db.session, client, pairs, rt.now(), rt.config.par_ttl)
