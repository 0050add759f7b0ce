"""Typed errors and the one place where they become HTTP responses.

Domain code raises the exceptions below; ``register_error_handlers`` turns them, and any
other failure, into RFC 6749 §5.2 JSON, or, under the admin API (``/admin/v1``), into
RFC 9457 problem details, or, for a browser (``Accept`` preferring text/html) on a page or an
address nothing is routed to, into an HTML page with a way forward (``error_page.html``). A
4xx says what the client did wrong and nothing about our internals; a 5xx says nothing at all
beyond its code (node-oidc-provider does the same).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import ClassVar

from flask import Flask, Response, g, has_request_context, jsonify, render_template, request
from flask_babel import gettext, lazy_gettext
from flask_babel.speaklater import LazyString
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.exceptions import NotFound as NoRoute
from werkzeug.http import HTTP_STATUS_CODES

from authserver.db import commit_request_session, discard_request_session
from authserver.own_apis import ADMIN_API_PATH
from authserver.resource.dpop import DPOP_ALGORITHMS

ADMIN_METADATA_SUFFIX = ".well-known/oauth-protected-resource" + ADMIN_API_PATH

log = logging.getLogger(__name__)

# RFC 6749 §5.1: token responses, and their errors, must not be cached.
NO_STORE_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}
RETRY_AFTER_SECONDS = 2


class AuthServerError(Exception):
    """Base of every error the server means to show to a caller."""

    error: ClassVar[str] = "server_error"
    status_code: ClassVar[int] = 400
    default_description: ClassVar[str] = ""

    def __init__(self, description: str | None = None) -> None:
        self.description = description or self.default_description
        super().__init__(self.description or self.error)


class InvalidRequest(AuthServerError):
    error = "invalid_request"
    default_description = "The request is malformed."


class InvalidClient(AuthServerError):
    error = "invalid_client"
    status_code = 401
    default_description = "Client authentication failed."


class InvalidGrant(AuthServerError):
    """RFC 6749 §5.2: the grant or refresh token is invalid, expired, revoked, or not this
    client's. The description never says which, so a caller learns nothing by probing."""

    error = "invalid_grant"
    default_description = "The grant is invalid, expired or revoked."


class RefreshTokenReused(InvalidGrant):
    """A used refresh token was presented again, not as a retry inside the grace window; its
    family is revoked. ``client_id`` is the presenting client, ``family_client_id`` the one
    the family belongs to (they differ when the token leaked to another client)."""

    def __init__(
        self,
        family_id: uuid.UUID,
        client_id: str,
        user_id: uuid.UUID,
        first_ip_address: str | None,
        last_ip_address: str | None,
        *,
        family_client_id: str,
        revoked_now: bool,
    ) -> None:
        super().__init__()
        # Whether this presentation revoked the family (False: it was revoked before, by an
        # earlier replay or a sign-out); the user is told once, not once per replay.
        self.revoked_now = revoked_now
        # Identifiers and addresses only, for the security trail; never the token.
        self.family_id = family_id
        self.client_id = client_id
        self.family_client_id = family_client_id
        self.user_id = user_id
        self.first_ip_address = first_ip_address
        self.last_ip_address = last_ip_address


class UnauthorizedClient(AuthServerError):
    error = "unauthorized_client"
    default_description = "The client is not allowed to use this grant type."


class NotAResourceServer(AuthServerError):
    """The client authenticated, but what it asked for is only for clients registered as
    resource servers (``clients.served_audiences``): the revocation feed names families and
    users who signed out."""

    error = "unauthorized_client"
    status_code = 403
    default_description = "Only clients registered as resource servers may read this."


class NotASecurityEventReceiver(AuthServerError):
    """The client authenticated but is not registered to poll for Security Event Tokens
    (``authserver clients events CLIENT_ID --poll``)."""

    error = "unauthorized_client"
    status_code = 403
    default_description = "Only clients registered to poll for security events may poll."


class InvalidScope(AuthServerError):
    error = "invalid_scope"
    default_description = "The requested scope is invalid or exceeds what was granted."


class InvalidTarget(AuthServerError):
    """RFC 8707 §2: the requested resource is not one this client may get tokens for."""

    error = "invalid_target"
    default_description = "The requested resource is not allowed for this client."


class AuthorizationPending(AuthServerError):
    """RFC 8628 §3.5: the user has not decided yet; poll again after the interval."""

    error = "authorization_pending"
    default_description = "The user has not approved the device yet."


class SlowDown(AuthServerError):
    """RFC 8628 §3.5: polled faster than the interval, which grows by 5 seconds."""

    error = "slow_down"
    default_description = "Poll more slowly."


class ExpiredDeviceCode(AuthServerError):
    """RFC 8628 §3.5 ``expired_token``: the device code expired; start again."""

    error = "expired_token"
    default_description = "The device code has expired."


class AccessDenied(AuthServerError):
    """RFC 8628 §3.5 (RFC 6749 §4.1.2.1): the user refused."""

    error = "access_denied"
    default_description = "The user denied the request."


class InvalidDPoPProofError(AuthServerError):
    """RFC 9449 §5: the token request's DPoP proof is missing where it must be, malformed,
    for another request, too old, replayed, or signed with a key the grant is not bound to.
    The description is one of ``authserver.resource.dpop``'s fixed sentences."""

    error = "invalid_dpop_proof"
    default_description = "The DPoP proof is invalid."


class UseDPoPNonceError(InvalidDPoPProofError):
    """RFC 9449 §8: the proof must carry the server's nonce, sent back in ``DPoP-Nonce``."""

    error = "use_dpop_nonce"
    default_description = "The DPoP proof must carry the server's current nonce."

    def __init__(self, nonce: str) -> None:
        super().__init__()
        self.nonce = nonce


class KeyDecryptionError(Exception):
    """A stored secret (a private signing key, an authenticator app's secret, a queued mail)
    does not open with the configured AUTHSERVER_KEY_ENCRYPTION_KEY."""


class TemporarilyUnavailable(AuthServerError):
    error = "temporarily_unavailable"
    status_code = 503
    default_description = "The server is temporarily unavailable; retry shortly."


class TooManyAttempts(AuthServerError):
    """Refused before any work: too many attempts (RFC 6585 §4). ``retry_after`` seconds."""

    error = "temporarily_unavailable"
    status_code = 429
    default_description = "Too many attempts; wait before trying again."

    def __init__(self, retry_after: int, description: str | None = None) -> None:
        super().__init__(description)
        self.retry_after = max(1, retry_after)


class ValidationError(AuthServerError):
    """Input to a service (from the CLI or an API) that breaks a rule; the message says which."""

    error = "invalid_request"


# RFC 6749 §5.2: what an error_description may hold (printable ASCII but '"' and '\').
_NOT_DESCRIBABLE = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


class InvalidClientMetadata(AuthServerError):
    """RFC 7591 §3.2.2: a client registration (or its RFC 7592 replacement) asks for
    metadata this server does not accept; the description says which rule it breaks. It may
    echo what the caller sent, so it is cut to 300 characters and every character RFC 6749
    §5.2 does not allow in a description becomes "?"."""

    error = "invalid_client_metadata"
    default_description = "The client metadata is invalid."

    def __init__(self, description: str | None = None) -> None:
        super().__init__(_NOT_DESCRIBABLE.sub("?", description)[:300] if description else None)


class InvalidRedirectUri(InvalidClientMetadata):
    """RFC 7591 §3.2.2: a registration's redirect URIs break the rules."""

    error = "invalid_redirect_uri"
    default_description = "The redirect URIs are invalid."


class NotFound(AuthServerError):
    error = "not_found"
    status_code = 404


class Conflict(AuthServerError):
    """The request is valid but the resource's state refuses it (RFC 9110 §15.5.10)."""

    error = "conflict"
    status_code = 409


class PreconditionFailed(AuthServerError):
    """RFC 9110 §13.1.1: the ``If-Match`` ETag is not the resource's current one: someone
    changed it since the caller read it."""

    error = "precondition_failed"
    status_code = 412
    default_description = "The resource changed since it was read; read it again."


class PreconditionRequired(AuthServerError):
    """RFC 6585 §3: a change that must say which version it was made against did not."""

    error = "precondition_required"
    status_code = 428
    default_description = "Send If-Match with the ETag of the resource as read."


# The authentication schemes of the APIs this server protects: RFC 6750 and RFC 9449 §7.1.
BEARER = "Bearer"
DPOP = "DPoP"


class BearerError(Exception):
    """A request to an API protected with an access token is refused: ``invalid_token``
    (401), ``insufficient_scope`` (403, naming the ``scope`` needed), or a DPoP proof's
    ``invalid_dpop_proof`` / ``use_dpop_nonce`` (401, RFC 9449 §7.1, §9). ``scheme``: the
    challenge's, ``DPoP`` where the token is (or was presented as) DPoP-bound; ``nonce``:
    the DPoP nonce the next proof must carry."""

    def __init__(
        self,
        status: int,
        error: str,
        description: str,
        *,
        scope: str | None = None,
        scheme: str = BEARER,
        nonce: str | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.scope = scope
        self.scheme = scheme
        self.nonce = nonce


def _answers_with_problem_details() -> bool:
    """The admin API answers errors as RFC 9457 problem details; the OAuth endpoints as
    RFC 6749 §5.2 JSON, which their clients expect."""
    return has_request_context() and (
        request.path == ADMIN_API_PATH or request.path.startswith(ADMIN_API_PATH + "/")
    )


def _problem(error: str, description: str | None, status: int) -> Response:
    # RFC 9457 §4.2.1: "about:blank" with the status phrase as title; the OAuth-style code
    # stays as an extension member (§3.2), for callers that branch on it.
    body: dict[str, object] = {
        "type": "about:blank",
        "title": HTTP_STATUS_CODES.get(status, "Error"),
        "status": status,
        "error": error,
    }
    if description:
        body["detail"] = description
    response = Response(json.dumps(body), status=status, mimetype="application/problem+json")
    return response


def _answers_with_a_page() -> bool:
    """A person's browser asked (RFC 9110 §12.5.1: ``Accept`` puts text/html before JSON)
    for a page, or for an address where nothing is; the OAuth endpoints, the JSON APIs and
    the admin API keep their JSON whatever is accepted, since their clients parse it."""
    if not has_request_context() or _answers_with_problem_details():
        return False
    # Imported here: http/web.py's helpers import the services, which import this module.
    from authserver.http.web import is_page

    routed_nowhere = isinstance(request.routing_exception, NoRoute)
    if not (is_page(request.path) or routed_nowhere):
        return False
    accepted = request.accept_mimetypes
    return accepted.best_match(["application/json", "text/html"]) == "text/html" and (
        accepted["text/html"] > accepted["application/json"]
    )


# What each refusal is called on the page, and what the person can do next (translated when
# the page is rendered: http/locale.py).
_PAGE_WORDS: dict[int, tuple[LazyString, LazyString]] = {
    400: (
        lazy_gettext("That did not work"),
        lazy_gettext("The request could not be handled. Go back and try again."),
    ),
    403: (lazy_gettext("Not allowed"), lazy_gettext("You cannot open this page.")),
    404: (
        lazy_gettext("Page not found"),
        lazy_gettext("There is no page at this address. Check the link you followed."),
    ),
    405: (
        lazy_gettext("That did not work"),
        lazy_gettext("This page cannot be opened that way. Go back and try again."),
    ),
    413: (
        lazy_gettext("Too much to send"),
        lazy_gettext("What you sent is too large. Go back and send less."),
    ),
    429: (lazy_gettext("Too many attempts"), lazy_gettext("Wait a little, then try again.")),
    500: (
        lazy_gettext("Something went wrong"),
        lazy_gettext("It is not your fault: we could not finish this. Try again in a moment."),
    ),
    503: (
        lazy_gettext("Temporarily unavailable"),
        lazy_gettext("We cannot answer right now. Try again in a moment."),
    ),
}


def _error_page(status: int) -> Response | None:
    """The page a browser is shown for ``status``; None if it cannot be rendered (then the
    JSON answer goes out). Never the description: it is written for API clients."""
    words = _PAGE_WORDS.get(status, _PAGE_WORDS[500 if status >= 500 else 400])
    retry_after = g.get("retry_after") if status == 429 else None
    try:
        title, message = str(words[0]), str(words[1])
        if retry_after:
            message = gettext("Wait %(seconds)s seconds, then try again.", seconds=retry_after)
        page = render_template("error_page.html", title=title, message=message, status=status)
    except Exception:
        log.exception("the error page could not be rendered")
        return None
    return Response(page, status=status, mimetype="text/html")


def error_response(
    error: str,
    description: str | None,
    status: int,
    headers: dict[str, str] | None = None,
) -> Response:
    page = _error_page(status) if _answers_with_a_page() else None
    if page is not None:
        response = page
    elif _answers_with_problem_details():
        response = _problem(error, description, status)
    else:
        body = {"error": error}
        if description:
            body["error_description"] = description
        response = jsonify(body)
        response.status_code = status
    response.headers.update(NO_STORE_HEADERS)
    if headers:
        response.headers.update(headers)
    return response


def _unavailable() -> Response:
    return error_response(
        TemporarilyUnavailable.error,
        TemporarilyUnavailable.default_description,
        503,
        {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _is_database_outage(exc: BaseException | None) -> bool:
    if isinstance(exc, PoolTimeoutError | OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def handle_auth_server_error(exc: AuthServerError) -> Response:
    headers: dict[str, str] = {}
    if isinstance(exc, InvalidClient):
        # RFC 6749 §5.2: a 401 names the authentication scheme the client should use.
        headers["WWW-Authenticate"] = f'Basic error="{exc.error}"'
    if isinstance(exc, TemporarilyUnavailable):
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if isinstance(exc, TooManyAttempts):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, UseDPoPNonceError):
        headers["DPoP-Nonce"] = exc.nonce
    return error_response(exc.error, exc.description, exc.status_code, headers)


def handle_bearer_error(exc: BearerError) -> Response:
    # RFC 6750 §3: say how to authenticate, what was wrong, and (§3.1) which scope the
    # resource needs when the token lacks it.
    challenge = f'{exc.scheme} error="{exc.error}", error_description="{exc.description}"'
    if exc.scope:
        challenge += f', scope="{exc.scope}"'
    if exc.scheme == DPOP:
        # RFC 9449 §7.1: the algorithms a proof may be signed with.
        challenge += f', algs="{" ".join(DPOP_ALGORITHMS)}"'
    if _answers_with_problem_details():
        # RFC 9728 §5.1: where the admin API's metadata is, relative to this server.
        challenge += f', resource_metadata="{request.host_url}{ADMIN_METADATA_SUFFIX}"'
        response = _problem(exc.error, exc.description, exc.status)
    else:
        response = jsonify(error=exc.error, error_description=exc.description)
        response.status_code = exc.status
    response.headers["WWW-Authenticate"] = challenge
    response.headers["Cache-Control"] = "no-store"
    if exc.nonce is not None:
        response.headers["DPoP-Nonce"] = exc.nonce
    return response


def handle_http_exception(exc: HTTPException) -> Response:
    if isinstance(exc, InternalServerError):
        return handle_unexpected(exc.original_exception or exc)
    code = exc.code or 500
    name = (exc.name or "error").lower().replace(" ", "_")
    # Keep what the exception says about itself, e.g. 405's Allow (RFC 9110 §15.5.6).
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    if code == 429:
        # A rate limit (Flask-Limiter): say it the way OAuth clients already understand, and
        # when to come back (RFC 6585 §4).
        name = TooManyAttempts.error
        headers["Retry-After"] = str(g.get("retry_after", 60))
    return error_response(name, exc.description, code, headers)


def handle_unexpected(exc: BaseException) -> Response:
    discard_request_session()
    if _is_database_outage(exc):
        log.warning("database unavailable: %s", type(exc).__name__)
        return _unavailable()
    # The traceback goes to the server log only; the caller gets the code and nothing else.
    log.error("unhandled error", exc_info=exc)
    return error_response("server_error", None, 500)


def handle_undecryptable_keys(_exc: KeyDecryptionError) -> Response:
    """The stored keys do not open with AUTHSERVER_KEY_ENCRYPTION_KEY (a restore with another
    key, a mistyped secret): nothing can be signed or verified until the operator fixes it.
    503, so a load balancer's readiness check takes this process out, and one line that says
    what to do (never the key, nor what failed to open)."""
    discard_request_session()
    log.error(
        "signing keys cannot be decrypted: AUTHSERVER_KEY_ENCRYPTION_KEY is not the key "
        "they were stored with (docs/DEPLOYMENT.md, backups)"
    )
    return _unavailable()


def commit_or_answer_unavailable(response: Response) -> Response:
    """The request boundary: commit, and if the database is gone, answer 503 instead of what
    the view said. Registered last so it runs before every other after-request hook: they
    (metrics, security headers) then see the answer that really leaves."""
    try:
        return commit_request_session(response)
    except Exception as exc:
        if not _is_database_outage(exc):
            raise
        log.warning("commit failed, database unavailable: %s", type(exc).__name__)
        return _unavailable()


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(AuthServerError, handle_auth_server_error)
    app.register_error_handler(BearerError, handle_bearer_error)
    app.register_error_handler(KeyDecryptionError, handle_undecryptable_keys)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
