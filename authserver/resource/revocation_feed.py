"""Revocations pushed to the resource server ahead of token expiry, without a call per request.

A JWT access token verifies offline until it expires, even after its user signs out, is
disabled or has a refresh token replayed. The issuer's revocation feed closes most of that gap:

    GET {issuer}/oauth/revocations?since=<cursor>     (HTTP Basic client authentication)
    200 {"cursor": 1000000004711, "entries": [
            {"type": "sid", "value": "<refresh family id>", "expires_at": 1700000000},
            {"type": "jti", "value": "<token id>", "expires_at": 1700000000},
            {"type": "sub", "value": "<user id>", "not_before": 1699990000,
             "expires_at": 1700000000},
            {"type": "client", "value": "<client_id>", "not_before": 1699990000,
             "expires_at": 1700000000},
            {"type": "kid", "value": "<signing key id>", "expires_at": 1700000000}]}
    ETag: "1000000004711"; without ``since`` every live entry, with it every live entry that
    the poll which got ``since`` may not have had; 304 when there is none and
    ``If-None-Match`` names the ETag of the answer that gave ``since``.

The cursor is an opaque integer (on a PostgreSQL issuer it counts transactions, not entries;
see ``authserver/services/revocations.py``). Delivery is at least once: an entry may come in
two answers, never in none, so merging an entry is idempotent here. An answer whose cursor is
lower than the ``since`` sent means the issuer started over (a restore, or a cursor it did not
hand out), and its answer is then the full listing; the next poll asks for everything again.

Each type names what a token must not carry: ``sid`` a revoked refresh family (the token's
``sid`` claim), ``jti`` one revoked access token, ``sub`` a user signed out everywhere or
disabled (tokens issued before ``not_before``), ``client`` a disabled client (its tokens
issued before ``not_before``, client_credentials ones included), ``kid`` a withdrawn signing
key (every token it signed, whenever issued, even while the key is still in a JWKS cache).

A daemon thread polls the feed every ``poll_interval`` seconds and keeps, in memory, the
revoked ``sid``, ``jti`` and ``kid`` values and per-user and per-client ``not_before``
cut-offs; ``TokenVerifier.verify``
looks a token up there, so a revocation costs no request at verification time. An entry is
dropped at its ``expires_at``: by then every token it could match has expired anyway.

The trade-off: **the poll interval is the maximum revocation delay.** A token revoked just
after a poll keeps verifying until the next one, ``poll_interval`` seconds later (plus the
request's own latency). A shorter interval means more requests to the issuer, each cheap (a
304 when nothing changed). When the delay must be zero for an endpoint (changing a password,
moving money), check the token online there with ``IntrospectionClient`` as well.

When a poll fails, the last known state is kept and the next interval tries again: revocations
made during an issuer outage arrive when it recovers; tokens are not refused because the feed
is unreachable (the signature and expiry still are checked). ``RevocationState.last_success``
says how old the state is, for an alert. The first poll runs before the first verification
(``start()`` waits for it), so a resource server that starts after a revocation knows of it.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import urllib.parse
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .discovery import issuer_url
from .transport import FetchFailed, HttpCall, basic_authorization, call, json_object

log = logging.getLogger(__name__)

REVOCATIONS_PATH = "/oauth/revocations"
THREAD_NAME = "authserver-revocation-feed"
# How long close() waits for a poll in flight (bounded by the HTTP timeout anyway).
CLOSE_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class UserCutoff:
    """Tokens of this user issued before ``not_before`` are revoked (a sign-out everywhere, a
    disabled account); the entry is needed until ``expires_at``."""

    not_before: float
    expires_at: float


@dataclass(frozen=True)
class RevocationState:
    """What the feed has said so far. Immutable: a poll builds a new one and swaps it in, so
    a verification never sees half a page."""

    cursor: int | None = None
    etag: str | None = None
    revoked_sids: Mapping[str, float] = field(default_factory=dict)  # sid -> expires_at
    revoked_jtis: Mapping[str, float] = field(default_factory=dict)  # jti -> expires_at
    user_not_before: Mapping[str, UserCutoff] = field(default_factory=dict)  # sub -> cutoff
    # A disabled client: its tokens issued before not_before are revoked.
    client_not_before: Mapping[str, UserCutoff] = field(default_factory=dict)  # client_id ->
    # A withdrawn signing key: every token it signed is revoked.
    revoked_kids: Mapping[str, float] = field(default_factory=dict)  # kid -> expires_at
    # Clock time of the last poll that got an answer (200 or 304); None before the first.
    last_success: float | None = None

    def revokes(
        self,
        *,
        session_id: str | None,
        jti: str,
        subject: str,
        client_id: str,
        issued_at: float,
        now: float,
    ) -> bool:
        """Whether a token with these claims is revoked. Entries past their expires_at count
        for nothing even before the next poll prunes them."""
        if session_id is not None and self.revoked_sids.get(session_id, -math.inf) > now:
            return True
        if self.revoked_jtis.get(jti, -math.inf) > now:
            return True
        for cutoffs, key in ((self.user_not_before, subject), (self.client_not_before, client_id)):
            cutoff = cutoffs.get(key)
            if cutoff is not None and cutoff.expires_at > now and issued_at < cutoff.not_before:
                return True
        return False

    def revokes_key(self, kid: str, now: float) -> bool:
        """Whether every token signed with ``kid`` is revoked (a withdrawn key)."""
        return self.revoked_kids.get(kid, -math.inf) > now

    def pruned(self, now: float) -> RevocationState:
        return replace(
            self,
            revoked_sids={v: exp for v, exp in self.revoked_sids.items() if exp > now},
            revoked_jtis={v: exp for v, exp in self.revoked_jtis.items() if exp > now},
            user_not_before={
                sub: cut for sub, cut in self.user_not_before.items() if cut.expires_at > now
            },
            client_not_before={
                cid: cut for cid, cut in self.client_not_before.items() if cut.expires_at > now
            },
            revoked_kids={v: exp for v, exp in self.revoked_kids.items() if exp > now},
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _merge_page(
    state: RevocationState, page: dict[str, Any], etag: str | None, now: float
) -> RevocationState:
    cursor, entries = page.get("cursor"), page.get("entries")
    if not isinstance(cursor, int) or isinstance(cursor, bool) or not isinstance(entries, list):
        raise FetchFailed("the revocation feed answered without a cursor and entries")
    merged = _merge_entries(state, entries)
    if state.cursor is not None and cursor < state.cursor:
        # The feed went back (a restore, a new deployment): start over from a full listing
        # rather than wait for it to climb past the cursor we remember.
        log.warning("revocation feed cursor went back from %s to %s", state.cursor, cursor)
        next_cursor, etag = None, None
    else:
        next_cursor = cursor
    return replace(merged, cursor=next_cursor, etag=etag, last_success=now).pruned(now)


def _merge_entries(state: RevocationState, entries: list[Any]) -> RevocationState:
    """``state`` with feed entries added. An entry already known merges with it (the later
    expiry, the later not_before), so an entry that arrives twice changes nothing."""
    sids, jtis = dict(state.revoked_sids), dict(state.revoked_jtis)
    kids = dict(state.revoked_kids)
    cutoffs = {"sub": dict(state.user_not_before), "client": dict(state.client_not_before)}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kind, value, expires_at = entry.get("type"), entry.get("value"), entry.get("expires_at")
        if not isinstance(value, str) or not _is_number(expires_at):
            log.warning("revocation feed entry without value or expires_at ignored")
            continue
        assert isinstance(expires_at, int | float)
        # The feed may send an entry again: keeping the later expiry (and not_before) makes a
        # repeat change nothing, whatever order entries come in.
        if kind == "sid":
            sids[value] = max(expires_at, sids.get(value, -math.inf))
        elif kind == "jti":
            jtis[value] = max(expires_at, jtis.get(value, -math.inf))
        elif kind == "kid":
            kids[value] = max(expires_at, kids.get(value, -math.inf))
        elif isinstance(kind, str) and kind in cutoffs:
            not_before = entry.get("not_before")
            if not _is_number(not_before):
                log.warning("revocation feed %s entry without not_before ignored", kind)
                continue
            assert isinstance(not_before, int | float)
            known = cutoffs[kind].get(value)
            if known is not None:
                # Both cutoffs hold until the later expiry; the later not_before covers both.
                not_before = max(not_before, known.not_before)
                expires_at = max(expires_at, known.expires_at)
            cutoffs[kind][value] = UserCutoff(not_before=not_before, expires_at=expires_at)
        # Other types are for a newer client: skipping them keeps this one working.
    return replace(
        state,
        revoked_sids=sids,
        revoked_jtis=jtis,
        user_not_before=cutoffs["sub"],
        client_not_before=cutoffs["client"],
        revoked_kids=kids,
    )


def _reset_in_forked_children(feed: RevocationFeed) -> None:
    # A weak reference: the hook cannot be unregistered and must not keep the feed alive.
    reference = weakref.ref(feed)

    def after_fork_in_child() -> None:
        alive = reference()
        if alive is not None:
            alive._forget_threads()

    os.register_at_fork(after_in_child=after_fork_in_child)


class RevocationFeed:
    """Polls the issuer's revocation feed on a daemon thread and holds the result."""

    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str,
        *,
        poll_interval: float,
        http: HttpCall,
        clock: Callable[[], float],
    ) -> None:
        self._url = issuer_url(issuer, REVOCATIONS_PATH)
        self._authorization = basic_authorization(client_id, client_secret)
        self._poll_interval = poll_interval
        self._http = http
        self._clock = clock
        self._state = RevocationState()
        self._poll_lock = threading.Lock()
        self._lifecycle_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        _reset_in_forked_children(self)

    def _forget_threads(self) -> None:
        """In a child process after fork: the poller thread did not come along, and a lock
        it held would stay held forever. Start from fresh locks; the child's first
        ``verify`` starts its own poller (gunicorn --preload forks after the app is built)."""
        self._poll_lock = threading.Lock()
        self._lifecycle_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = None

    @property
    def state(self) -> RevocationState:
        return self._state

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def revokes(
        self, *, session_id: str | None, jti: str, subject: str, client_id: str, issued_at: float
    ) -> bool:
        return self._state.revokes(
            session_id=session_id,
            jti=jti,
            subject=subject,
            client_id=client_id,
            issued_at=issued_at,
            now=self._clock(),
        )

    def revokes_key(self, kid: str) -> bool:
        return self._state.revokes_key(kid, self._clock())

    def add_entries(self, entries: list[dict[str, Any]]) -> None:
        """Entries learnt another way than a poll (a pushed Security Event Token), in the
        feed's own shape. The cursor stays: the feed still lists them, and merging them again
        changes nothing."""
        with self._poll_lock:
            self._state = _merge_entries(self._state, list(entries)).pruned(self._clock())

    def ensure_started(self) -> None:
        if self._thread is None and not self._closed:
            self.start()

    def start(self) -> None:
        """Poll once now, then every ``poll_interval`` seconds on a daemon thread. Returns
        when the first poll has finished (or failed). Does nothing once started or closed."""
        with self._lifecycle_lock:
            if self._thread is not None or self._closed:
                return
            self.poll()
            self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop polling and wait for the thread to end. The state stays as it was."""
        with self._lifecycle_lock:
            self._closed = True
            self._stopping.set()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=CLOSE_TIMEOUT_SECONDS)

    def _run(self) -> None:
        while not self._stopping.wait(self._poll_interval):
            self.poll()

    def poll(self) -> bool:
        """Fetch what changed since the last poll; returns whether the feed answered."""
        with self._poll_lock:
            state = self._state
            url = self._url
            if state.cursor is not None:
                url += "?" + urllib.parse.urlencode({"since": state.cursor})
            headers = {"Authorization": self._authorization, "Accept": "application/json"}
            if state.etag is not None:
                headers["If-None-Match"] = state.etag
            try:
                status, response_headers, body = call(self._http, "GET", url, headers)
                now = self._clock()
                if status == 304:
                    self._state = replace(state.pruned(now), last_success=now)
                    return True
                if status != 200:
                    raise FetchFailed(f"GET {self._url}: HTTP {status}")
                page = json_object(body, "the revocation feed")
                self._state = _merge_page(state, page, response_headers.get("etag"), now)
            except FetchFailed as exc:
                log.warning("revocation feed poll failed (%s); keeping the last state", exc)
                return False
            return True
