"""The one boundary of the APIs this server protects itself with bearer tokens (RFC 6750):
userinfo and the account API (``require_user_token``), and the admin API
(``require_admin_token``).

``require_user_token(api)`` verifies the request's access token and hands the view a typed
``UserCaller``, never raw claims. In order, each refusal with its RFC 6750 §3 answer:

1. no bearer token, or one this server did not sign or that expired: 401 ``invalid_token``;
2. a token for another audience (``own_apis``: the account API takes only ``{issuer}/account``):
   401 ``invalid_token`` — a photo app's token for its own API cannot reach the account API;
3. a token that names no user (client_credentials: ``sub`` is the client): 401 ``invalid_token``;
4. a token revoked since (its family, its ``jti``, its user signed out everywhere or
   disabled): 401 ``invalid_token``;
5. its refresh family's request budget spent (``AUTHSERVER_RATELIMIT_PER_FAMILY``): 429;
6. a token without the API's scope: 403 ``insufficient_scope``, naming the scope.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from typing import Any

from flask import request

from authserver.db import db
from authserver.errors import BEARER, DPOP, BearerError
from authserver.http.dpop import current_nonce, presented_proof
from authserver.http.rate_limits import spend_family_budget
from authserver.own_apis import OwnApi, admin_audience
from authserver.resource.dpop import InvalidDPoPProof, UseDPoPNonce
from authserver.runtime import runtime
from authserver.services.browser_sessions import browser_session_of_family
from authserver.services.clients import find_client
from authserver.services.token_status import access_token_still_granted
from authserver.services.token_verification import OwnToken, TokenRejected, verify_own_token


@dataclass(frozen=True)
class UserCaller:
    """Who called an API that acts for a user: what the views may rely on."""

    user_id: uuid.UUID
    client_id: str
    # The refresh family the token came from (its ``sid``), if any.
    family_id: uuid.UUID | None
    scopes: frozenset[str]

    def browser_session_id(self) -> uuid.UUID | None:
        """The browser session the caller's family was issued through, if any: one query,
        made only by the views that tell the caller's own session apart."""
        if self.family_id is None:
            return None
        return browser_session_of_family(db.session, self.family_id)


def _invalid(description: str, scheme: str = BEARER) -> BearerError:
    return BearerError(401, "invalid_token", description, scheme=scheme)


def _authorization() -> tuple[str, str]:
    """The scheme (``Bearer`` or ``DPoP``, RFC 9449 §7.1) and token of the request's
    Authorization header."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    for known in (BEARER, DPOP):
        # RFC 9110 §11.1: scheme names are case-insensitive.
        if scheme.lower() == known.lower() and token.strip():
            return known, token.strip()
    raise _invalid("A bearer access token is required.")


def _user_of(claims: dict[str, Any]) -> uuid.UUID:
    subject = claims.get("sub")
    # RFC 9068 §2.2: a client acting for itself is its own subject; such a token acts for no
    # user and opens no user's data.
    if not isinstance(subject, str) or subject == claims.get("client_id"):
        raise _invalid("The access token does not act for a user.", _scheme_of(claims))
    try:
        return uuid.UUID(subject)
    except ValueError:
        raise _invalid("The access token does not act for a user.", _scheme_of(claims)) from None


def _scheme_of(claims: dict[str, Any]) -> str:
    """The scheme a verified token came with: refusals made after it was accepted answer
    with that scheme's challenge (RFC 9449 §7.1)."""
    return DPOP if "cnf" in claims else BEARER


def _presented_access_token(now: int) -> OwnToken:
    """The request's access token, if this server signed it as an access token, it has not
    expired, and, if it is bound to a DPoP key, it came as RFC 9449 §7.1 requires: with
    the ``DPoP`` scheme and a proof signed with that key for this request; else a 401."""
    rt = runtime()
    scheme, presented = _authorization()
    try:
        token = verify_own_token(rt.keys, presented, issuer=rt.config.issuer, typ="at+jwt", now=now)
    except TokenRejected:
        raise _invalid("The access token is invalid.", scheme) from None
    _check_sender(token, scheme, presented)
    return token


def _check_sender(token: OwnToken, scheme: str, presented: str) -> None:
    """RFC 9449 §7: a token bound to a key (``cnf.jkt``) is refused as a bearer token, and
    taken with the DPoP scheme only beside a fresh proof, for this request, naming this
    token and signed with that key. A bearer token sent with the DPoP scheme is refused too:
    it is not bound to the proof's key."""
    confirmation = token.claims.get("cnf")
    bound_key = confirmation.get("jkt") if isinstance(confirmation, dict) else None
    if scheme == BEARER:
        if bound_key is not None:
            raise _invalid("This access token is bound to a DPoP key; use the DPoP scheme.", DPOP)
        return
    if not isinstance(bound_key, str):
        raise _invalid("This access token is not bound to a DPoP key.", DPOP)
    try:
        proof = presented_proof(access_token=presented)
    except UseDPoPNonce:
        raise BearerError(
            401, UseDPoPNonce.error, UseDPoPNonce().description, scheme=DPOP, nonce=current_nonce()
        ) from None
    except InvalidDPoPProof as refused:
        raise BearerError(401, refused.error, refused.description, scheme=DPOP) from None
    if proof is None:
        raise BearerError(401, InvalidDPoPProof.error, "A DPoP proof is required.", scheme=DPOP)
    if not hmac.compare_digest(proof.jkt, bound_key):
        raise BearerError(
            401,
            InvalidDPoPProof.error,
            "The DPoP proof is signed with another key than the token's.",
            scheme=DPOP,
        )


def require_user_token(api: OwnApi) -> UserCaller:
    """The caller of ``api``, from the request's bearer token, or a BearerError."""
    rt = runtime()
    now = rt.now()
    token = _presented_access_token(int(now.timestamp()))
    claims = token.claims
    audience = api.audience(rt.config.issuer)
    if audience is not None and claims.get("aud") != audience:
        raise _invalid("The access token is not meant for this API.", _scheme_of(claims))
    user_id = _user_of(claims)
    if not access_token_still_granted(db.session, token, now):
        raise _invalid("The access token was revoked.", _scheme_of(claims))
    family_id = _family_of(claims)
    # Only a live token of this API spends from its family's budget: nobody else can.
    spend_family_budget(str(family_id) if family_id else None, str(claims.get("jti", "")))
    scopes = frozenset(str(claims.get("scope", "")).split())
    if api.scope not in scopes:
        raise BearerError(
            403,
            "insufficient_scope",
            f"The '{api.scope}' scope is needed.",
            scope=api.scope,
            scheme=_scheme_of(claims),
        )
    return UserCaller(
        user_id=user_id,
        client_id=str(claims.get("client_id", "")),
        family_id=family_id,
        scopes=scopes,
    )


def _family_of(claims: dict[str, Any]) -> uuid.UUID | None:
    sid = claims.get("sid")
    if sid is None:
        return None
    # Granted above, so the sid named a live family: it is a UUID this server wrote.
    return uuid.UUID(str(sid))


@dataclass(frozen=True)
class AdminCaller:
    """Who called the admin API: an admin client acting for itself."""

    client_id: str
    scopes: frozenset[str]


def require_admin_token(scope: str) -> AdminCaller:
    """The admin client calling, from the request's bearer token, or a BearerError.

    Refused with 401 ``invalid_token``: no token, one this server did not sign or that
    expired or was revoked; a token whose audience is not exactly the admin API
    (``{issuer}/admin/v1``: the issuer's own audience, a user's API, a client's API never
    reach it); a token that acts for a user. Refused with 403 ``insufficient_scope`` (RFC
    6750 §3.1), naming ``scope``: a token without it, or whose client no longer holds it as
    an admin scope, is disabled or is gone (read from the database, not the token, so that
    taking a scope away works at once)."""
    rt = runtime()
    now = rt.now()
    token = _presented_access_token(int(now.timestamp()))
    claims = token.claims
    if claims.get("aud") != admin_audience(rt.config.issuer):
        raise _invalid("The access token is not meant for this API.", _scheme_of(claims))
    client_id = claims.get("client_id")
    if not isinstance(client_id, str) or claims.get("sub") != client_id:
        raise _invalid("The access token acts for a user, not an admin client.", _scheme_of(claims))
    if not access_token_still_granted(db.session, token, now):
        raise _invalid("The access token was revoked.", _scheme_of(claims))
    scopes = frozenset(str(claims.get("scope", "")).split())
    client = find_client(db.session, client_id)
    held = scopes & frozenset(client.admin_scopes) if client and not client.disabled else set()
    if scope not in held:
        raise BearerError(
            403,
            "insufficient_scope",
            f"The '{scope}' scope is needed.",
            scope=scope,
            scheme=_scheme_of(claims),
        )
    return AdminCaller(client_id=client_id, scopes=frozenset(held))
