"""The issuer's public signing keys, fetched from its JWKS and cached.

When the cache is fetched:

* the first time a key is needed (discovery of ``jwks_uri`` happens then too, not before);
* when the cached set is older than the ``Cache-Control: max-age`` it came with, as a
  conditional request (``If-None-Match``; a 304 keeps the keys and renews their age);
* when a token names a ``kid`` the cached set lacks: the issuer may have rotated.

Every fetch, whatever its reason, counts against ``min_refetch_interval``: at most one fetch
starts per interval, so a flood of tokens with made-up ``kid`` values, or an issuer that is
down, costs the issuer one request per interval and no more. A fetch that fails keeps the
cached keys; ``JWKSUnavailable`` is raised only when there have never been any.

Each key carries its algorithm: the JWK's ``alg``, which must be in the allow-list. A key
without one, or whose type does not fit it, is not used (RFC 8725 §3.1: never let the token
header choose the algorithm).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import weakref
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from .discovery import endpoint_of, fetch_server_metadata
from .errors import JWKSUnavailable, UnknownKey
from .transport import FetchFailed, HttpCall, call, json_object

log = logging.getLogger(__name__)

PublicKey = ECKey | RSAKey

# The signature algorithms this kit can verify, with the key each needs (RFC 7518 §3.1).
# Symmetric algorithms are absent on purpose: a resource server holds no shared secret.
KEY_TYPE_OF_ALGORITHM: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
}
# RFC 7518 §3.3: RSA keys of 2048 bits or larger.
MIN_RSA_BITS = 2048
# JWK members that exist only on private keys (RFC 7518 §6.2.2, §6.3.2); never imported.
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# When the JWKS response says nothing about caching.
DEFAULT_MAX_AGE_SECONDS = 300.0
# However long the issuer says, look again at least daily.
MAX_MAX_AGE_SECONDS = 86400.0


@dataclass(frozen=True)
class VerificationKey:
    kid: str
    algorithm: str
    key: PublicKey


def max_age_of(cache_control: str | None) -> float:
    """Seconds a response may be reused, from its Cache-Control header (RFC 9111 §5.2.2)."""
    if cache_control is None:
        return DEFAULT_MAX_AGE_SECONDS
    max_age: float | None = None
    for directive in cache_control.split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-store", "no-cache"):
            return 0.0
        if name == "max-age":
            digits = value.strip().strip('"')
            if digits.isdigit():
                max_age = float(digits)
    if max_age is None:
        return DEFAULT_MAX_AGE_SECONDS
    return min(max_age, MAX_MAX_AGE_SECONDS)


def import_public_key(jwk: Mapping[str, Any], algorithm: str) -> PublicKey | None:
    """The JWK as a public key fit for ``algorithm``, or None."""
    key_type, curve = KEY_TYPE_OF_ALGORITHM[algorithm]
    if jwk.get("kty") != key_type:
        return None
    public_members = {name: value for name, value in jwk.items() if name not in PRIVATE_JWK_MEMBERS}
    try:
        if key_type == "EC":
            ec_key = ECKey.import_key(public_members)
            return ec_key if ec_key.curve_name == curve else None
        rsa_key = RSAKey.import_key(public_members)
    except (JoseError, ValueError, TypeError):
        return None
    key_size: int = rsa_key.raw_value.key_size
    return rsa_key if key_size >= MIN_RSA_BITS else None


def parse_jwks(body: bytes, algorithms: Collection[str]) -> dict[str, VerificationKey]:
    """The usable signing keys of a JWK Set (RFC 7517 §5), by kid. A key that is unusable is
    left out, not fatal: one odd key must not hide the others."""
    document = json_object(body, "the JWKS")
    members = document.get("keys")
    if not isinstance(members, list):
        raise FetchFailed("the JWKS has no keys array")
    keys: dict[str, VerificationKey] = {}
    for jwk in members:
        if not isinstance(jwk, dict):
            continue
        kid, algorithm = jwk.get("kid"), jwk.get("alg")
        if not isinstance(kid, str) or not kid or kid in keys:
            continue
        # RFC 7517 §4.2: a key published for encryption does not verify signatures.
        if jwk.get("use", "sig") != "sig":
            continue
        if not isinstance(algorithm, str) or algorithm not in algorithms:
            continue
        key = import_public_key(jwk, algorithm)
        if key is None:
            log.warning("JWKS key %s is not a valid %s key; ignored", kid, algorithm)
            continue
        keys[kid] = VerificationKey(kid=kid, algorithm=algorithm, key=key)
    return keys


class JWKSCache:
    """The keys of one issuer; safe to share between threads."""

    def __init__(
        self,
        issuer: str,
        *,
        algorithms: Collection[str],
        min_refetch_interval: float,
        http: HttpCall,
        clock: Callable[[], float],
    ) -> None:
        self._issuer = issuer
        self._algorithms = frozenset(algorithms)
        self._min_refetch_interval = min_refetch_interval
        self._http = http
        self._clock = clock
        self._fetch_lock = threading.Lock()
        self._jwks_uri: str | None = None
        # None until a fetch has succeeded once; replaced whole, so readers need no lock.
        self._keys: dict[str, VerificationKey] | None = None
        self._etag: str | None = None
        self._fresh_until = -math.inf
        self._last_attempt = -math.inf
        reference = weakref.ref(self)

        def fresh_lock_in_forked_child() -> None:
            # A fetch in flight in another thread at fork time would leave the lock held
            # forever in the child. (Weak: the hook cannot be unregistered.)
            cache = reference()
            if cache is not None:
                cache._fetch_lock = threading.Lock()

        os.register_at_fork(after_in_child=fresh_lock_in_forked_child)

    def key_for(self, kid: str) -> VerificationKey:
        """The key named ``kid``; raises ``UnknownKey`` or ``JWKSUnavailable``."""
        now = self._clock()
        if self._keys is None:
            self._refetch(now, wait=True)
        elif now >= self._fresh_until:
            # Stale: whoever gets here first refreshes; the others go on with what is cached.
            self._refetch(now, wait=False)
        keys = self._keys
        if keys is None:
            raise JWKSUnavailable("the issuer's signing keys could not be fetched")
        key = keys.get(kid)
        if key is None:
            # Maybe a key rotation we have not seen yet: look once (rate-limited), then decide.
            self._refetch(now, wait=True)
            key = (self._keys or {}).get(kid)
        if key is None:
            raise UnknownKey()
        return key

    def _refetch(self, now: float, *, wait: bool) -> None:
        if not self._fetch_lock.acquire(blocking=wait):
            return
        try:
            # Checked under the lock: a thread that waited while another fetched finds the
            # attempt recorded and does not repeat it. (A clock that went back does not
            # block fetches until it has caught up again.)
            if 0 <= now - self._last_attempt < self._min_refetch_interval:
                return
            self._last_attempt = now
            try:
                self._fetch(now)
            except FetchFailed as exc:
                kept = "keeping the cached keys" if self._keys is not None else "no keys yet"
                log.warning("JWKS fetch for %s failed (%s); %s", self._issuer, exc, kept)
        finally:
            self._fetch_lock.release()

    def _fetch(self, now: float) -> None:
        if self._jwks_uri is None:
            metadata = fetch_server_metadata(self._issuer, self._http)
            self._jwks_uri = endpoint_of(metadata, "jwks_uri")
        headers = {"Accept": "application/jwk-set+json, application/json"}
        if self._keys is not None and self._etag is not None:
            headers["If-None-Match"] = self._etag
        status, response_headers, body = call(self._http, "GET", self._jwks_uri, headers)
        if status == 304 and self._keys is not None:
            self._fresh_until = now + max_age_of(response_headers.get("cache-control"))
            return
        if status != 200:
            raise FetchFailed(f"GET {self._jwks_uri}: HTTP {status}")
        self._keys = parse_jwks(body, self._algorithms)
        self._etag = response_headers.get("etag")
        self._fresh_until = now + max_age_of(response_headers.get("cache-control"))
