"""Verification of authserver's JWT access tokens (RFC 9068 §4) by a resource server, as
bearer tokens (``verify``) or as DPoP-bound tokens with their proof (``verify_dpop``, RFC 9449
§7)."""

from __future__ import annotations

import binascii
import hmac
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jws import JWSRegistry

from .dpop import (
    DPOP_ALGORITHMS,
    InvalidDPoPProof,
    MemoryReplayCache,
    ReplayCache,
    check_proof,
)
from .errors import (
    BadSignature,
    DPoPBoundToken,
    MalformedToken,
    NotDPoPBound,
    TokenExpired,
    TokenNotYetValid,
    TokenRevoked,
    UnknownKey,
    WrongAudience,
    WrongIssuer,
    WrongType,
)
from .jwks import KEY_TYPE_OF_ALGORITHM, JWKSCache
from .jws_parts import COMPACT_JWS, decode_segment, json_object, numeric_date
from .revocation_feed import RevocationFeed, RevocationState
from .transport import HttpCall, make_urllib_http

# authserver's tokens are well under 1 KiB. Anything past this is refused before any decoding,
# so a huge header cannot cost CPU or memory.
MAX_TOKEN_LENGTH = 8 * 1024
# RFC 9068 §2.1: "at+jwt"; §4 also names the full media type. Compared case-insensitively
# (RFC 7515 §4.1.9: media type names are case-insensitive).
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})


@dataclass(frozen=True)
class VerifiedToken:
    """An access token that passed every check. Times are unix seconds."""

    subject: str
    client_id: str
    scope: frozenset[str]
    audience: tuple[str, ...]
    expires_at: int
    issued_at: int
    jti: str
    # The ``sid`` claim: the refresh-token family the token was issued from, if any.
    session_id: str | None
    # The ``cnf.jkt`` claim (RFC 9449 §6.1): the RFC 7638 thumbprint of the key the token is
    # bound to. Never None on a token ``verify_dpop`` returns, always None from ``verify``.
    dpop_jkt: str | None
    claims: dict[str, Any] = field(hash=False, compare=False, repr=False)

    def has_scope(self, *scopes: str) -> bool:
        return all(scope in self.scope for scope in scopes)


def _required_string(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise MalformedToken(f"The access token has no {name} claim.")
    return value


def _bound_key(claims: dict[str, Any]) -> str | None:
    """The thumbprint in ``cnf.jkt`` (RFC 9449 §6.1), None without ``cnf``. A ``cnf`` that
    names no DPoP key (another confirmation method of RFC 7800 §3.1, or none) is refused:
    the token is bound to something this kit cannot check, so it is no bearer token."""
    confirmation = claims.get("cnf")
    if confirmation is None:
        return None
    jkt = confirmation.get("jkt") if isinstance(confirmation, dict) else None
    if not isinstance(jkt, str) or not jkt:
        raise MalformedToken("The access token's cnf claim names no DPoP key.")
    return jkt


class TokenVerifier:
    """Verifies access tokens from one issuer for one audience.

    Create one per process and share it between threads: it holds the JWKS cache (and, with
    ``revocation_feed=True``, the revocation poller, which a forked worker restarts for
    itself on its first ``verify``). Nothing is fetched until the first ``verify``.

    ``http`` and ``clock`` are seams: an ``HttpCall`` (see ``transport``) and a
    ``() -> float`` returning unix time; the clock serves both expiry checks and cache ages.

    DPoP (RFC 9449): ``dpop_algorithms`` are those a proof may be signed with (a challenge's
    ``algs``); ``dpop_replay_cache`` remembers the proofs ``verify_dpop`` accepted, by
    default in this process only (``dpop.MemoryReplayCache``). Processes serving one API
    must share one (any ``dpop.ReplayCache``), or a proof replayed to another process is
    accepted there once.
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        leeway: float = 30,
        algorithms: Collection[str] = ("ES256", "RS256"),
        min_refetch_interval: float = 30.0,
        http: HttpCall | None = None,
        clock: Callable[[], float] | None = None,
        revocation_feed: bool = False,
        client_id: str | None = None,
        client_secret: str | None = None,
        poll_interval: float = 5.0,
        dpop_algorithms: Collection[str] = DPOP_ALGORITHMS,
        dpop_replay_cache: ReplayCache | None = None,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("issuer and audience are required")
        unsupported = set(algorithms) - set(KEY_TYPE_OF_ALGORITHM)
        if unsupported or not algorithms:
            raise ValueError(
                f"algorithms must be asymmetric signature algorithms from "
                f"{sorted(KEY_TYPE_OF_ALGORITHM)}; got {sorted(unsupported) or 'none'}"
            )
        unsupported_dpop = set(dpop_algorithms) - set(DPOP_ALGORITHMS)
        if unsupported_dpop or not dpop_algorithms:
            raise ValueError(
                f"dpop_algorithms must be asymmetric signature algorithms from "
                f"{list(DPOP_ALGORITHMS)}; got {sorted(unsupported_dpop) or 'none'}"
            )
        if leeway < 0 or min_refetch_interval < 0 or poll_interval <= 0:
            raise ValueError("leeway and min_refetch_interval must be >= 0, poll_interval > 0")
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.algorithms = frozenset(algorithms)
        # In the order given: the order of a challenge's algs (RFC 9449 §7.1).
        self.dpop_algorithms = tuple(dict.fromkeys(dpop_algorithms))
        self._clock = clock or time.time
        self._dpop_replay_cache: ReplayCache = dpop_replay_cache or MemoryReplayCache(
            clock=self._clock
        )
        self._http = http or make_urllib_http()
        self._keys = JWKSCache(
            issuer,
            algorithms=self.algorithms,
            min_refetch_interval=min_refetch_interval,
            http=self._http,
            clock=self._clock,
        )
        # One registry per algorithm: a key verifies with its own algorithm and no other.
        self._registries = {
            algorithm: JWSRegistry(algorithms=[algorithm], strict_check_header=False)
            for algorithm in self.algorithms
        }
        self._feed: RevocationFeed | None = None
        if revocation_feed:
            if not client_id or not client_secret:
                raise ValueError("revocation_feed=True needs client_id and client_secret")
            self._feed = RevocationFeed(
                issuer,
                client_id,
                client_secret,
                poll_interval=poll_interval,
                http=self._http,
                clock=self._clock,
            )

    # -- lifecycle (only does something with revocation_feed=True) --------------------------

    def start(self) -> None:
        """Start the revocation poller now rather than on the first ``verify``."""
        if self._feed is not None:
            self._feed.start()

    def close(self) -> None:
        """Stop the revocation poller. Verification keeps working with the last state."""
        if self._feed is not None:
            self._feed.close()

    def __enter__(self) -> TokenVerifier:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def poll_revocations(self) -> bool:
        """Poll the revocation feed now, not at the next interval (an application told out of
        band that something was revoked). Returns whether the feed answered; False without
        a feed."""
        if self._feed is None:
            return False
        self._feed.ensure_started()
        return self._feed.poll()

    def add_revocations(self, entries: list[dict[str, Any]]) -> None:
        """Revocations learnt without a poll (``security_events.SecurityEventReceiver``), as
        revocation-feed entries; they count from the next ``verify``."""
        if self._feed is None:
            raise RuntimeError("add_revocations needs a verifier with revocation_feed=True")
        self._feed.add_entries(entries)

    @property
    def revocation_state(self) -> RevocationState | None:
        """What the revocation feed has said so far; None without a feed."""
        return self._feed.state if self._feed is not None else None

    @property
    def revocation_feed_running(self) -> bool:
        return self._feed is not None and self._feed.running

    # -- verification -----------------------------------------------------------------------

    def now(self) -> float:
        """The verifier's time (unix seconds): its clock, for checks made beside ``verify``."""
        return self._clock()

    def verify(self, token: str) -> VerifiedToken:
        """The verified bearer token, or an ``InvalidToken`` subclass saying why not. A token
        bound to a DPoP key is refused (``DPoPBoundToken``): it is taken only with a proof,
        by ``verify_dpop`` (RFC 9449 §7.1).

        Raises ``JWKSUnavailable`` when no signing keys could be had at all.
        """
        verified = self._verified(token)
        if verified.dpop_jkt is not None:
            raise DPoPBoundToken()
        return verified

    def verify_dpop(self, token: str, proof: str, *, method: str, url: str) -> VerifiedToken:
        """The verified DPoP-bound token presented with ``proof`` (the request's one ``DPoP``
        header) in a ``method`` request to ``url`` (RFC 9449 §7.1), or an ``InvalidToken``
        subclass: the token's own refusals, ``NotDPoPBound`` for a token bound to no key,
        and ``InvalidDPoPProof`` (error ``invalid_dpop_proof``) for a proof that fails a
        check of §4.3, names another token (``ath``), is signed with another key than the
        token's ``cnf.jkt``, or was accepted before.

        ``url``: the URL the client sent the request to, as the client knows it (behind a
        proxy, the public one); its query and fragment are ignored. A proof is recorded in
        the replay cache only once everything else has passed, so only a holder of the key
        and a token bound to it can fill the cache.
        """
        verified = self._verified(token)
        if verified.dpop_jkt is None:
            raise NotDPoPBound()
        proof_checked = check_proof(
            proof,
            method=method,
            url=url,
            algorithms=self.dpop_algorithms,
            now=self._clock(),
            access_token=token,
        )
        # RFC 9449 §7.1: the proof's key is the one the token is bound to.
        if not hmac.compare_digest(proof_checked.jkt, verified.dpop_jkt):
            raise InvalidDPoPProof("The DPoP proof is signed with another key than the token's.")
        # RFC 9449 §11.1: a proof is accepted once.
        if not self._dpop_replay_cache.first_use(
            proof_checked.replay_key, proof_checked.acceptable_until
        ):
            raise InvalidDPoPProof("The DPoP proof was used before.")
        return verified

    def _verified(self, token: str) -> VerifiedToken:
        # RFC 9068 §4: the resource server MUST check typ, so an ID token or any other JWT
        # from the same issuer and keys cannot pass as an access token.
        claims = self.signed_claims(token, ACCESS_TOKEN_TYPES)
        verified = self._check_claims(claims)
        self._check_revocation(verified)
        return verified

    def signed_claims(self, token: str, types: Collection[str]) -> dict[str, Any]:
        """The claims of a compact JWS the issuer signed with a key it publishes (and has not
        withdrawn), whose header ``typ`` is one of ``types`` (lower case); nothing about the
        claims themselves is checked. Raises an ``InvalidToken`` subclass otherwise."""
        if not isinstance(token, str):
            raise MalformedToken()
        if len(token) > MAX_TOKEN_LENGTH:
            raise MalformedToken("The token is too large.")
        if not COMPACT_JWS.fullmatch(token):
            raise MalformedToken("The token is not a signed JWT.")
        header = self._header_of(token, types)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise UnknownKey("The token names no signing key.")
        # Before the key is looked up: a withdrawn key's tokens are refused even while the
        # JWKS cache still holds it, and never make the cache fetch the JWKS.
        self._check_key_withdrawn(kid)
        key = self._keys.key_for(kid)
        # RFC 8725 §3.1: the algorithm is the key's. A header naming another one is refused
        # rather than believed (RS256 on an EC key, HS256 with the public key as secret).
        if header.get("alg") != key.algorithm:
            raise BadSignature("The token's algorithm does not match its key.")
        try:
            signed = jws.deserialize_compact(
                token, key.key, registry=self._registries[key.algorithm]
            )
        except (JoseError, ValueError) as exc:
            raise BadSignature() from exc
        claims = json_object(signed.payload)
        if claims is None:
            raise MalformedToken("The token's claims are not a JSON object.")
        return claims

    def _header_of(self, token: str, types: Collection[str]) -> dict[str, Any]:
        try:
            header = json_object(decode_segment(token.split(".", 1)[0]))
        except (binascii.Error, ValueError):
            header = None
        if header is None:
            raise MalformedToken("The token's header is not a JSON object.")
        # RFC 7515 §4.1.9: media type names compare case-insensitively.
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in types:
            raise WrongType()
        # RFC 7515 §4.1.11: extensions marked critical must be understood; we know none.
        if "crit" in header:
            raise MalformedToken("The token has critical header extensions.")
        # jku, x5u, jwk and x5c are never read: keys come only from the issuer's jwks_uri
        # (RFC 8725 §3.10). Nothing here looks at them, so nothing fetches or trusts them.
        return header

    def _check_claims(self, claims: dict[str, Any]) -> VerifiedToken:
        """RFC 9068 §4 and RFC 7519 §4.1."""
        if claims.get("iss") != self.issuer:
            raise WrongIssuer()
        aud = claims.get("aud")
        audiences = (aud,) if isinstance(aud, str) else aud
        if not isinstance(audiences, list | tuple) or not all(
            isinstance(a, str) for a in audiences
        ):
            raise WrongAudience()
        if self.audience not in audiences:
            raise WrongAudience()
        now = self._clock()
        exp = numeric_date(claims, "exp")
        if exp is None:
            raise MalformedToken("The access token has no exp claim.")
        # RFC 7519 §4.1.4: valid only while now is before exp.
        if now >= exp + self.leeway:
            raise TokenExpired()
        nbf = numeric_date(claims, "nbf")
        if nbf is not None and now + self.leeway < nbf:
            raise TokenNotYetValid()
        iat = numeric_date(claims, "iat")
        if iat is None:
            raise MalformedToken("The access token has no iat claim.")
        if now + self.leeway < iat:
            # Issued in our future: the issuer's clock or the token is wrong.
            raise TokenNotYetValid()
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise MalformedToken("The access token's scope claim is not a string.")
        session_id = claims.get("sid")
        if session_id is not None and not isinstance(session_id, str):
            raise MalformedToken("The access token's sid claim is not a string.")
        return VerifiedToken(
            subject=_required_string(claims, "sub"),
            client_id=_required_string(claims, "client_id"),
            scope=frozenset(scope.split()),
            audience=tuple(audiences),
            expires_at=int(exp),
            issued_at=int(iat),
            jti=_required_string(claims, "jti"),
            session_id=session_id,
            dpop_jkt=_bound_key(claims),
            claims=claims,
        )

    def _check_key_withdrawn(self, kid: str) -> None:
        if self._feed is None:
            return
        self._feed.ensure_started()
        if self._feed.revokes_key(kid):
            raise TokenRevoked("The token's signing key was withdrawn.")

    def _check_revocation(self, token: VerifiedToken) -> None:
        if self._feed is None:
            return
        if self._feed.revokes(
            session_id=token.session_id,
            jti=token.jti,
            subject=token.subject,
            client_id=token.client_id,
            issued_at=token.claims["iat"],
        ):
            raise TokenRevoked()
