"""Flask integration: protect a view with a bearer access token (RFC 6750).

    verifier = TokenVerifier("https://auth.example.com", "https://api.example.com")

    @app.get("/api/things")
    @require_token(verifier, scope="read")
    def things():
        return {"owner": g.access_token.subject}

Answers, per RFC 6750 §3:

* no bearer token at all: 401, ``WWW-Authenticate: Bearer`` and no error code (§3.1);
* a token that is refused: 401, ``Bearer error="invalid_token", error_description="..."``;
* a valid token without the scope: 403, ``Bearer error="insufficient_scope", scope="read"``;
* a token from too weak or too old a sign-in (``acr=``, ``max_age=``): 401,
  ``Bearer error="insufficient_user_authentication", acr_values="...", max_age="..."``
  (RFC 9470 §3);
* an ``Authorization: Bearer`` header with no token in it: 400 ``invalid_request``;
* keys or introspection unreachable: 503; the token was not judged, so it is not a 401 that
  would make the client throw it away.

Only the Authorization header is read (RFC 6750 §2.1); a token in the query string is not
looked for (RFC 9700 §4.3.2 forbids sending one there). Every body is JSON.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import ParamSpec

from flask import Response, g, jsonify, request
from flask.typing import ResponseReturnValue

from .authentication import acr_satisfies, signed_in_within, token_acr
from .errors import IntrospectionFailed, InvalidToken, JWKSUnavailable, TokenRevoked
from .introspection import IntrospectionClient
from .verifier import TokenVerifier, VerifiedToken

log = logging.getLogger(__name__)

P = ParamSpec("P")
View = Callable[P, ResponseReturnValue]

NO_TOKEN_DESCRIPTION = "A bearer access token is required."  # noqa: S105 (a message)
# RFC 6750 §3: error_description and scope values are limited to these characters.
_NOT_ALLOWED_IN_ATTRIBUTE = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


def _quoted(value: str) -> str:
    return '"' + _NOT_ALLOWED_IN_ATTRIBUTE.sub("", value) + '"'


def bearer_challenge(
    status: int,
    description: str,
    error: str | None = None,
    scope: str | None = None,
    *,
    acr_values: str | None = None,
    max_age: int | None = None,
) -> Response:
    """A JSON error response with the RFC 6750 §3 ``WWW-Authenticate`` challenge (and RFC
    9470 §3's ``acr_values`` and ``max_age`` when a stronger or fresher sign-in is needed)."""
    attributes: list[str] = []
    body: dict[str, str] = {"error_description": description}
    if error is not None:
        attributes += [f"error={_quoted(error)}", f"error_description={_quoted(description)}"]
        body = {"error": error, **body}
    if scope is not None:
        attributes.append(f"scope={_quoted(scope)}")
        body["scope"] = scope
    if acr_values is not None:
        attributes.append(f"acr_values={_quoted(acr_values)}")
        body["acr_values"] = acr_values
    if max_age is not None:
        attributes.append(f'max_age="{max_age}"')
        body["max_age"] = str(max_age)
    response = jsonify(body)
    response.status_code = status
    # RFC 6750 §3: auth-param list after the scheme; none at all when there was no token.
    challenge = "Bearer " + ", ".join(attributes) if attributes else "Bearer"
    response.headers["WWW-Authenticate"] = challenge
    response.headers["Cache-Control"] = "no-store"
    return response


def _unavailable() -> Response:
    response = jsonify(
        error="temporarily_unavailable",
        error_description="The access token cannot be checked right now; try again later.",
    )
    response.status_code = 503
    response.headers["Cache-Control"] = "no-store"
    return response


class _MalformedAuthorization(Exception):
    pass


def _bearer_token() -> str | None:
    """The token of ``Authorization: Bearer <token>`` (RFC 6750 §2.1); None when the request
    carries no bearer credentials at all (no header, or another scheme)."""
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = credentials.strip()
    if not token or " " in token:
        raise _MalformedAuthorization()
    return token


def current_access_token() -> VerifiedToken:
    """``g.access_token`` with its type, for views behind ``require_token``."""
    token = g.get("access_token")
    if not isinstance(token, VerifiedToken):
        raise RuntimeError("current_access_token() is only available behind @require_token")
    return token


def require_token(
    verifier: TokenVerifier,
    scope: str | None = None,
    *,
    introspect: IntrospectionClient | None = None,
    acr: str | None = None,
    max_age: int | None = None,
) -> Callable[[View[P]], View[P]]:
    """Decorate a view so it runs only for a valid access token holding every scope named in
    ``scope`` (space-separated). The token is then ``flask.g.access_token``.

    With ``introspect``, a token that verifies offline is also checked online, each request
    (RFC 7662): an inactive one is refused as revoked.

    With ``acr`` (an authentication context class, e.g. ``urn:authserver:acr:mfa``) or
    ``max_age`` (seconds since the user signed in), a token whose ``acr`` is weaker or whose
    ``auth_time`` is older is refused the RFC 9470 way: 401 ``insufficient_user_authentication``
    with ``acr_values`` and ``max_age`` in the challenge, for the client to send the user
    back to authserver with them and come again with a new token.
    """
    required_scopes = tuple(dict.fromkeys(scope.split())) if scope else ()
    if max_age is not None and max_age < 0:
        raise ValueError("max_age must be 0 or more seconds")

    def decorator(view: View[P]) -> View[P]:
        @functools.wraps(view)
        def protected_view(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
            try:
                token = _bearer_token()
            except _MalformedAuthorization:
                return bearer_challenge(
                    400, "The Authorization header is malformed.", error="invalid_request"
                )
            if token is None:
                return bearer_challenge(401, NO_TOKEN_DESCRIPTION)
            try:
                verified = verifier.verify(token)
                if introspect is not None and not introspect.is_active(token):
                    raise TokenRevoked()
            except InvalidToken as exc:
                log.info("access token refused: %s", type(exc).__name__)
                return bearer_challenge(401, exc.description, error=exc.error)
            except (JWKSUnavailable, IntrospectionFailed) as exc:
                log.warning("access token not checked: %s: %s", type(exc).__name__, exc)
                return _unavailable()
            if not verified.has_scope(*required_scopes):
                needed = " ".join(required_scopes)
                return bearer_challenge(
                    403,
                    f"The access token lacks the scope this resource needs: {needed}.",
                    error="insufficient_scope",
                    scope=needed,
                )
            weak = acr is not None and not acr_satisfies(token_acr(verified), acr)
            stale = max_age is not None and not signed_in_within(verified, max_age, verifier.now())
            if weak or stale:
                # RFC 9470 §3: the same values go in the challenge whichever fell short, so
                # the new sign-in satisfies both.
                return bearer_challenge(
                    401,
                    "A stronger or more recent sign-in is required."
                    if weak
                    else "A more recent sign-in is required.",
                    error="insufficient_user_authentication",
                    acr_values=acr,
                    max_age=max_age,
                )
            g.access_token = verified
            return view(*args, **kwargs)

        return protected_view

    return decorator
