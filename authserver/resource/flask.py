"""Flask integration: protect a view with an access token, a bearer token (RFC 6750) or a
DPoP-bound token with its proof (RFC 9449 §7).

    verifier = TokenVerifier("https://auth.example.com", "https://api.example.com")

    @app.get("/api/things")
    @require_token(verifier, scope="read", public_url="https://api.example.com")
    def things():
        return {"owner": g.access_token.subject}

``Authorization: Bearer <token>`` is checked with ``verifier.verify``, which refuses a token
bound to a DPoP key; ``Authorization: DPoP <token>`` with its proof in the one ``DPoP``
header, with ``verifier.verify_dpop``, for this request's method and URL. Answers, per RFC
6750 §3 and RFC 9449 §7.1, with the challenge in the scheme the request used:

* no token at all: 401, ``WWW-Authenticate: Bearer, DPoP algs="..."`` and no error code (RFC
  6750 §3.1; RFC 9449 §7.2: both schemes are offered);
* a token that is refused: 401, ``Bearer error="invalid_token", error_description="..."``;
  with the DPoP scheme, or a DPoP-bound token sent as a bearer token, ``DPoP
  error="invalid_token", ..., algs="..."``;
* a DPoP proof that is missing, sent twice, invalid, for another request, signed with
  another key than the token's, or replayed: 401, ``DPoP error="invalid_dpop_proof", ...``;
* a valid token without the scope: 403, ``Bearer error="insufficient_scope", scope="read"``;
* a token from too weak or too old a sign-in (``acr=``, ``max_age=``): 401,
  ``Bearer error="insufficient_user_authentication", acr_values="...", max_age="..."``
  (RFC 9470 §3);
* an ``Authorization: Bearer`` (or ``DPoP``) header with no token in it: 400
  ``invalid_request``;
* keys or introspection unreachable: 503; the token was not judged, so it is not a 401 that
  would make the client throw it away.

Only the Authorization header is read (RFC 6750 §2.1); a token in the query string is not
looked for (RFC 9700 §4.3.2 forbids sending one there). Every body is JSON.

The URL a DPoP proof must name (``htu``) is the one the client called. Behind a proxy that
is not the one Flask sees: give ``public_url``, the public URL of the application's root
(``https://api.example.com``), and ``htu`` is checked against it plus the request's path.
Without it, the URL is rebuilt from the request, from its ``Host`` header and scheme, which
a client chooses; use that only when the application is reached directly, or behind
werkzeug's ``ProxyFix`` set for the proxies in front of it.
"""

from __future__ import annotations

import functools
import logging
import re
import urllib.parse
from collections.abc import Callable, Collection
from typing import Any, ParamSpec

from flask import Response, g, jsonify, request
from flask.typing import ResponseReturnValue

from .authentication import acr_satisfies, signed_in_within, token_acr
from .dpop import InvalidDPoPProof, normalized_htu
from .errors import (
    BindingMismatch,
    DPoPBoundToken,
    IntrospectionFailed,
    InvalidToken,
    JWKSUnavailable,
    TokenRevoked,
)
from .introspection import IntrospectionClient
from .verifier import TokenVerifier, VerifiedToken

log = logging.getLogger(__name__)

P = ParamSpec("P")
View = Callable[P, ResponseReturnValue]

NO_TOKEN_DESCRIPTION = "An access token is required."  # noqa: S105 (a message)
# The authentication schemes of RFC 6750 and RFC 9449 §7.1, as challenges name them.
BEARER = "Bearer"
DPOP = "DPoP"
# RFC 9449 §4.1: the request header carrying the proof.
DPOP_HEADER = "DPoP"
# RFC 6750 §3: error_description and scope values are limited to these characters.
_NOT_ALLOWED_IN_ATTRIBUTE = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


def _quoted(value: str) -> str:
    return '"' + _NOT_ALLOWED_IN_ATTRIBUTE.sub("", value) + '"'


def token_challenge(
    status: int,
    description: str,
    error: str | None = None,
    scope: str | None = None,
    *,
    scheme: str = BEARER,
    dpop_algorithms: Collection[str] = (),
    acr_values: str | None = None,
    max_age: int | None = None,
) -> Response:
    """A JSON error response with the ``WWW-Authenticate`` challenge of RFC 6750 §3 (scheme
    ``Bearer``) or RFC 9449 §7.1 (scheme ``DPoP``, with ``algs``: ``dpop_algorithms``), and
    RFC 9470 §3's ``acr_values`` and ``max_age`` when a stronger or fresher sign-in is
    needed. Without ``error`` (no token was sent), both schemes are offered when
    ``dpop_algorithms`` are given (RFC 9449 §7.2)."""
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
    algs = f"algs={_quoted(' '.join(dpop_algorithms))}" if dpop_algorithms else None
    if scheme == DPOP and algs is not None:
        attributes.append(algs)
    response = jsonify(body)
    response.status_code = status
    # RFC 6750 §3: auth-param list after the scheme; none at all when there was no token.
    challenge = f"{scheme} " + ", ".join(attributes) if attributes else scheme
    if error is None and scheme == BEARER and algs is not None:
        challenge += f", {DPOP} {algs}"
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
    def __init__(self, scheme: str) -> None:
        super().__init__(scheme)
        self.scheme = scheme


def _presented_token() -> tuple[str, str] | None:
    """The scheme (``Bearer`` or ``DPoP``) and token of ``Authorization: Bearer <token>``
    (RFC 6750 §2.1) or ``Authorization: DPoP <token>`` (RFC 9449 §7.1); None when the
    request carries no such credentials at all (no header, or another scheme)."""
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    # RFC 9110 §11.1: scheme names are case-insensitive.
    known = {BEARER.lower(): BEARER, DPOP.lower(): DPOP}.get(scheme.lower())
    if known is None:
        return None
    token = credentials.strip()
    if not token or " " in token:
        raise _MalformedAuthorization(known)
    return known, token


def _presented_proof() -> str:
    """The request's one DPoP proof (RFC 9449 §4.3 step 1)."""
    proofs = request.headers.getlist(DPOP_HEADER)
    if not proofs:
        raise InvalidDPoPProof("A DPoP proof is required.")
    # WSGI hands repeated headers over as one, joined by commas; a compact JWS has none.
    if len(proofs) > 1 or "," in proofs[0]:
        raise InvalidDPoPProof("Send one DPoP proof, not several.")
    return proofs[0]


def _request_url(public_url: str | None) -> str:
    """The URL the client called, as a proof's ``htu`` names it (RFC 9449 §4.3 step 9)."""
    if public_url is None:
        return request.base_url
    # The path as it travels in a request line: percent-encoded, "/" kept (RFC 3986 §3.3).
    return public_url.rstrip("/") + urllib.parse.quote(request.path, safe="/!$&'()*+,;=:@")


def _check_online(introspect: IntrospectionClient, token: str, verified: VerifiedToken) -> None:
    """RFC 7662: the issuer still holds the token active and (RFC 9449 §6.2) binds it to the
    key the token names, or to none as the token says."""
    answer = introspect.introspect(token)
    if answer["active"] is not True:
        raise TokenRevoked()
    confirmation: Any = answer.get("cnf")
    bound_key = confirmation.get("jkt") if isinstance(confirmation, dict) else None
    if bound_key != verified.dpop_jkt:
        raise BindingMismatch()


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
    public_url: str | None = None,
) -> Callable[[View[P]], View[P]]:
    """Decorate a view so it runs only for a valid access token holding every scope named in
    ``scope`` (space-separated). The token is then ``flask.g.access_token``; for a
    DPoP-bound token, its ``dpop_jkt`` names the key the request was signed with.

    With ``introspect``, a token that verifies offline is also checked online, each request
    (RFC 7662): an inactive one is refused as revoked, and one the issuer binds to another
    DPoP key than the token names (RFC 9449 §6.2), or to none, is refused.

    ``public_url``: the public URL of the application's root, against which DPoP proofs'
    ``htu`` is checked (see the module's docstring); without it, the request's own URL.

    With ``acr`` (an authentication context class, e.g. ``urn:authserver:acr:mfa``) or
    ``max_age`` (seconds since the user signed in), a token whose ``acr`` is weaker or whose
    ``auth_time`` is older is refused the RFC 9470 way: 401 ``insufficient_user_authentication``
    with ``acr_values`` and ``max_age`` in the challenge, for the client to send the user
    back to authserver with them and come again with a new token.
    """
    required_scopes = tuple(dict.fromkeys(scope.split())) if scope else ()
    if max_age is not None and max_age < 0:
        raise ValueError("max_age must be 0 or more seconds")
    if public_url is not None and normalized_htu(public_url) is None:
        raise ValueError("public_url must be an absolute http(s) URL")
    if public_url is not None and urllib.parse.urlsplit(public_url)[3:] != ("", ""):
        raise ValueError("public_url must have no query or fragment")
    algorithms = verifier.dpop_algorithms

    def decorator(view: View[P]) -> View[P]:
        @functools.wraps(view)
        def protected_view(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
            try:
                presented = _presented_token()
            except _MalformedAuthorization as malformed:
                return token_challenge(
                    400,
                    "The Authorization header is malformed.",
                    error="invalid_request",
                    scheme=malformed.scheme,
                    dpop_algorithms=algorithms,
                )
            if presented is None:
                return token_challenge(401, NO_TOKEN_DESCRIPTION, dpop_algorithms=algorithms)
            scheme, token = presented
            try:
                if scheme == DPOP:
                    verified = verifier.verify_dpop(
                        token,
                        _presented_proof(),
                        method=request.method,
                        url=_request_url(public_url),
                    )
                else:
                    verified = verifier.verify(token)
                if introspect is not None:
                    _check_online(introspect, token, verified)
            except InvalidToken as exc:
                log.info("access token refused: %s", type(exc).__name__)
                # RFC 9449 §7.1: a DPoP-bound token is told which scheme it needs.
                answer_scheme = DPOP if isinstance(exc, DPoPBoundToken) else scheme
                return token_challenge(
                    401,
                    exc.description,
                    error=exc.error,
                    scheme=answer_scheme,
                    dpop_algorithms=algorithms,
                )
            except (JWKSUnavailable, IntrospectionFailed) as exc:
                log.warning("access token not checked: %s: %s", type(exc).__name__, exc)
                return _unavailable()
            if not verified.has_scope(*required_scopes):
                needed = " ".join(required_scopes)
                return token_challenge(
                    403,
                    f"The access token lacks the scope this resource needs: {needed}.",
                    error="insufficient_scope",
                    scope=needed,
                    scheme=scheme,
                    dpop_algorithms=algorithms,
                )
            weak = acr is not None and not acr_satisfies(token_acr(verified), acr)
            stale = max_age is not None and not signed_in_within(verified, max_age, verifier.now())
            if weak or stale:
                # RFC 9470 §3: the same values go in the challenge whichever fell short, so
                # the new sign-in satisfies both.
                return token_challenge(
                    401,
                    "A stronger or more recent sign-in is required."
                    if weak
                    else "A more recent sign-in is required.",
                    error="insufficient_user_authentication",
                    scheme=scheme,
                    dpop_algorithms=algorithms,
                    acr_values=acr,
                    max_age=max_age,
                )
            g.access_token = verified
            return view(*args, **kwargs)

        return protected_view

    return decorator
