"""DPoP proofs (RFC 9449): checking that whoever presents a token holds the key it is bound to.

A DPoP proof is a JWT the client signs, for one HTTP request, with a private key it keeps;
the public key travels in the proof's header (``jwk``). The authorization server binds the
tokens it issues to that key's RFC 7638 thumbprint (``cnf.jkt``); a resource server then
accepts such a token only with a fresh proof signed by the same key, for this request, that
names the token (``ath``). A stolen token without the key is useless.

``check_proof`` makes every check of RFC 9449 §4.3 that needs no memory: shape, ``typ``,
algorithm, the public key and the signature, ``htm``, ``htu``, ``iat``, and, when given,
``nonce`` and ``ath``. Whether the proof was seen before (§11.1) needs memory shared by every
process that checks proofs: the caller records ``DPoPProof.replay_key`` in a ``ReplayCache``
(``MemoryReplayCache`` for one process; the server uses its database).

Both authserver (token endpoint, userinfo, account and admin APIs) and resource servers using
this kit (``TokenVerifier.verify_dpop``) call this one function. Like the rest of the kit it
needs only the standard library and joserfc.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jws import JWSRegistry

from .errors import InvalidToken, MalformedToken
from .jwks import KEY_TYPE_OF_ALGORITHM, PRIVATE_JWK_MEMBERS, import_public_key
from .jws_parts import COMPACT_JWS, decode_segment, json_object, numeric_date

# RFC 9449 §4.2: the proof's media type.
DPOP_PROOF_TYPE = "dpop+jwt"
# Every asymmetric algorithm the kit verifies; a server lists these as
# ``dpop_signing_alg_values_supported`` (RFC 9449 §5.1).
DPOP_ALGORITHMS = tuple(KEY_TYPE_OF_ALGORITHM)
# A proof carries a public key: an RSA key of 4096 bits is about 700 characters of JWK. Twice
# that is plenty, and nothing larger is decoded.
MAX_PROOF_LENGTH = 4096
# A proof's header is flat but for the jwk object; its claims are flat. Deeper is refused.
MAX_PROOF_NESTING = 2
# RFC 9449 §11.1 leaves the jti's form to the client (a UUID or 96 random bits are typical);
# anything longer than this is not a nonce a client made.
MAX_JTI_LENGTH = 256
# RFC 9449 §4.3 step 11: "within an acceptable window". A proof is made just before its
# request, so a minute covers slow networks; the future allowance covers clocks slightly
# ahead of ours. The replay cache must remember a proof at least this long.
DEFAULT_MAX_AGE = 60.0
DEFAULT_FUTURE_LEEWAY = 10.0


class InvalidDPoPProof(InvalidToken):
    """RFC 9449 §5 / §7.1 ``invalid_dpop_proof``. The description is a fixed sentence, never
    built from the proof, so it is safe in a ``WWW-Authenticate`` header and in logs.

    An ``InvalidToken``, so that a resource server catching ``InvalidToken`` refuses a bad
    proof as it refuses a bad token, with this class's own ``error`` code."""

    error = "invalid_dpop_proof"
    default_description = "The DPoP proof is invalid."


class UseDPoPNonce(InvalidDPoPProof):
    """RFC 9449 §8: the proof must carry the server's current nonce (``DPoP-Nonce``)."""

    error = "use_dpop_nonce"
    default_description = "The DPoP proof must carry the server's current nonce."


@dataclass(frozen=True)
class DPoPProof:
    """A proof that passed ``check_proof``."""

    # RFC 7638 SHA-256 thumbprint of the proof's public key: what ``cnf.jkt`` holds.
    jkt: str
    jti: str
    issued_at: float
    # Until when the proof could be accepted (its iat plus the window): how long a replay
    # cache must remember it.
    acceptable_until: float

    @property
    def replay_key(self) -> str:
        """What identifies this proof in a replay cache: its jti, scoped to its key so that
        two clients choosing the same jti do not collide (and hashed, so a cache holds no
        text a client chose)."""
        digest = hashlib.sha256(f"{self.jkt}.{self.jti}".encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def access_token_hash(access_token: str) -> str:
    """RFC 9449 §4.2 ``ath``: base64url of the SHA-256 of the token's ASCII text."""
    digest = hashlib.sha256(access_token.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def web_origin(url: str) -> str | None:
    """The origin of an http(s) URL as a browser serialises it (scheme and host in lower
    case, the scheme's default port dropped: RFC 3986 §6.2.2.1, §6.2.3; RFC 6454 §6.2), or
    None if it is not an absolute http(s) URL (a native app's private-use scheme, a bad
    port)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal loses its brackets in .hostname
    if port is not None and port != (443 if scheme == "https" else 80):
        host = f"{host}:{port}"
    return f"{scheme}://{host}"


def normalized_htu(url: str) -> str | None:
    """``url`` as RFC 9449 §4.3 step 9 compares it: its origin (``web_origin``) and path,
    without query and fragment; None if it is not an absolute http(s) URI."""
    origin = web_origin(url)
    if origin is None:
        return None
    return origin + (urlsplit(url).path or "/")


def check_proof(
    proof: str,
    *,
    method: str,
    url: str,
    algorithms: Collection[str] = DPOP_ALGORITHMS,
    now: float,
    max_age: float = DEFAULT_MAX_AGE,
    future_leeway: float = DEFAULT_FUTURE_LEEWAY,
    access_token: str | None = None,
    nonce_is_current: Callable[[str], bool] | None = None,
) -> DPoPProof:
    """The proof, if it is one for a ``method`` request to ``url`` made now (RFC 9449 §4.3),
    else ``InvalidDPoPProof`` (``UseDPoPNonce`` when only the nonce is missing or stale).

    ``access_token``: the token presented with the proof to a protected resource, which the
    proof must name (``ath``, §7.1). ``nonce_is_current``: when given, the proof must carry
    a nonce it accepts (§8, §9). Replay is the caller's to check, with ``replay_key``.
    """
    # Step 2: a well-formed compact JWS, small enough to consider.
    if not isinstance(proof, str) or len(proof) > MAX_PROOF_LENGTH:
        raise InvalidDPoPProof("The DPoP proof is malformed.")
    if not COMPACT_JWS.fullmatch(proof):
        raise InvalidDPoPProof("The DPoP proof is malformed.")
    header = _segment_object(proof.split(".", 1)[0])
    # Step 4: typ (media types compare case-insensitively, RFC 7515 §4.1.9).
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() != DPOP_PROOF_TYPE:
        raise InvalidDPoPProof("The DPoP proof's typ is not dpop+jwt.")
    if "crit" in header:
        raise InvalidDPoPProof("The DPoP proof has critical header extensions.")
    # Step 5: an asymmetric algorithm this verifier supports ("none" and MACs never are).
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in algorithms:
        raise InvalidDPoPProof("The DPoP proof's algorithm is not supported.")
    # Step 7: a public key, and nothing private.
    jwk = header.get("jwk")
    if not isinstance(jwk, Mapping) or PRIVATE_JWK_MEMBERS & jwk.keys():
        raise InvalidDPoPProof("The DPoP proof's jwk is not a public key.")
    key = import_public_key(jwk, algorithm)
    if key is None:
        raise InvalidDPoPProof("The DPoP proof's jwk does not fit its algorithm.")
    # Step 6: the signature, with that key and that algorithm only.
    try:
        signed = jws.deserialize_compact(proof, key, registry=_registry(algorithm))
    except (JoseError, ValueError) as exc:
        raise InvalidDPoPProof("The DPoP proof's signature is invalid.") from exc
    claims = json_object(signed.payload)
    if claims is None:
        raise InvalidDPoPProof("The DPoP proof's claims are not a JSON object.")
    # Step 3: the claims every proof carries.
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        raise InvalidDPoPProof("The DPoP proof has no usable jti.")
    # Step 8: the method, compared exactly (RFC 9110 §9.1: methods are case-sensitive).
    if claims.get("htm") != method:
        raise InvalidDPoPProof("The DPoP proof is for another HTTP method.")
    # Step 9: the URI, without query and fragment.
    htu = claims.get("htu")
    if not isinstance(htu, str) or normalized_htu(htu) != normalized_htu(url):
        raise InvalidDPoPProof("The DPoP proof is for another URI.")
    # Step 11: made just now.
    try:
        issued_at = numeric_date(claims, "iat")
    except MalformedToken:  # a claim that is no number
        issued_at = None
    if issued_at is None:
        raise InvalidDPoPProof("The DPoP proof has no iat.")
    if issued_at > now + future_leeway or issued_at < now - max_age:
        raise InvalidDPoPProof("The DPoP proof is too old or from the future.")
    # Step 10: the server's nonce, when it asks for one.
    if nonce_is_current is not None:
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not nonce_is_current(nonce):
            raise UseDPoPNonce()
    # Step 12 (presented with an access token): the proof names that token.
    if access_token is not None:
        ath = claims.get("ath")
        if not isinstance(ath, str) or not hmac.compare_digest(
            ath, access_token_hash(access_token)
        ):
            raise InvalidDPoPProof("The DPoP proof does not name this access token.")
    return DPoPProof(
        jkt=key.thumbprint(),
        jti=jti,
        issued_at=issued_at,
        acceptable_until=issued_at + max_age + future_leeway,
    )


class _ProofRegistry(JWSRegistry):
    # A proof's header carries its public key, larger than joserfc's default of 512 bytes
    # for a header (an RSA key's modulus alone is 342 characters); MAX_PROOF_LENGTH bounds
    # the whole proof already.
    max_header_length = MAX_PROOF_LENGTH


@functools.cache
def _registry(algorithm: str) -> JWSRegistry:
    """A registry for one algorithm: the proof's key verifies with its own and no other."""
    return _ProofRegistry(algorithms=[algorithm], strict_check_header=False)


def _segment_object(segment: str) -> dict[str, Any]:
    try:
        value = json_object(decode_segment(segment), MAX_PROOF_NESTING)
    except (binascii.Error, ValueError):
        value = None
    if value is None:
        raise InvalidDPoPProof("The DPoP proof is malformed.")
    return value


class ReplayCache(Protocol):
    """Remembers the proofs already accepted (RFC 9449 §11.1)."""

    def first_use(self, key: str, until: float) -> bool:
        """Record ``key`` until unix time ``until``; False if it was recorded before."""
        ...


class MemoryReplayCache:
    """A replay cache for one process, bounded in time (each key is forgotten once its proof
    could no longer be accepted) and in size (``max_entries``).

    Resource servers running several processes behind one address need a cache the processes
    share (any store with an atomic "set if absent, with expiry", such as Redis's ``SET NX
    EX``), passed as ``TokenVerifier(..., dpop_replay_cache=...)``: with one cache per
    process, a proof replayed to another process is accepted once there.

    When full of live keys, the oldest is forgotten first: it is the nearest to expiry, and a
    replay of it must still carry a token bound to its key, so only a holder of the key (or
    the token and a proof made with it) fills the cache.
    """

    def __init__(
        self, max_entries: int = 100_000, clock: Callable[[], float] | None = None
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._clock = clock or time.time
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_use(self, key: str, until: float) -> bool:
        now = self._clock()
        with self._lock:
            self._forget_expired(now)
            expires = self._seen.get(key)
            if expires is not None and expires > now:
                return False
            self._seen[key] = until
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)
            return True

    def _forget_expired(self, now: float) -> None:
        # Keys arrive in roughly the order they expire (every proof has the same window), so
        # the expired ones are at the front.
        while self._seen:
            key, expires = next(iter(self._seen.items()))
            if expires > now:
                break
            del self._seen[key]

    def __len__(self) -> int:
        return len(self._seen)
