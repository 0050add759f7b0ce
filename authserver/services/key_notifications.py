"""A signing-key change reaches every server process at once, on PostgreSQL.

Each process keeps its keys in memory (``keys.KeyRing``) and re-reads them every
AUTHSERVER_KEY_REFRESH_INTERVAL seconds. That is enough for a scheduled rotation, planned
minutes ahead; not for a withdrawn key (``authserver keys withdraw``), which must leave every
JWKS and stop signing now. So the transaction that changes the keys also says so
(``announce_key_change``: ``pg_notify``, delivered by PostgreSQL when, and only if, it
commits), and every server process listens (``KeyChangeListener``: a thread with a connection
of its own, ``LISTEN``) and re-reads its keys when told.

The interval stays the bound when a notification cannot arrive: the listener's connection is
down (it reconnects with backoff, and re-reads the keys each time it is back, for whatever it
missed meanwhile), or a pooler in transaction mode sits between the server and PostgreSQL
(LISTEN needs a session of its own; point AUTHSERVER_KEY_CHANGE_NOTIFICATIONS=0 there, or give
the listener a direct route). SQLite has no notifications: the development server is one
process anyway, and the CLI's changes reach it within the interval.

The thread starts with the first request a process serves (as the outbox sender does: a
gunicorn worker is forked after the app is built, and a thread does not survive a fork).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable

import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

CHANNEL = "authserver_signing_keys"
THREAD_NAME = "authserver-key-listener"
# How often the listener looks up from waiting, to notice close().
WAIT_SECONDS = 1.0
RECONNECT_MAX_SECONDS = 30.0
CLOSE_TIMEOUT_SECONDS = 10.0


def announce_key_change(session: Session) -> None:
    """Tell every listening process, when this transaction commits, to re-read its keys."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


class KeyChangeListener:
    """Calls ``on_change`` in this process when any process announces a key change."""

    def __init__(self, conninfo: str, on_change: Callable[[], object]) -> None:
        self._conninfo = conninfo
        self._on_change = on_change
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Set while LISTEN is in place (tests wait on it; so could a readiness check).
        self.listening = threading.Event()
        _reset_in_forked_children(self)

    def ensure_started(self) -> None:
        """Start this process's listener if it has none (a before_request hook)."""
        if self._pid == os.getpid() or self._closed:
            return
        with self._lock:
            if self._pid == os.getpid() or self._closed:
                return
            self._pid = os.getpid()
            self._stop = threading.Event()
            self.listening = threading.Event()
            self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
            self._thread.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._stop.set()
            thread = self._thread if self._pid == os.getpid() else None
        if thread is not None:
            thread.join(timeout=CLOSE_TIMEOUT_SECONDS)

    def _forget_thread(self) -> None:
        self._lock = threading.Lock()
        self._pid = None
        self._thread = None

    def _refresh(self) -> None:
        try:
            self._on_change()
        except Exception as exc:
            # The keys stay as they were; the interval refresh tries again.
            log.warning("signing keys not re-read after a change (%s)", type(exc).__name__)

    def _run(self) -> None:
        stop, listening = self._stop, self.listening
        backoff = 1.0
        failing = False
        while not stop.is_set():
            conn: psycopg.Connection[tuple[object, ...]] | None = None
            try:
                conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
                conn.execute(f"LISTEN {CHANNEL}")
                # Whatever changed while nobody listened.
                self._refresh()
                listening.set()
                if failing:
                    log.info("key-change listener: listening again")
                failing, backoff = False, 1.0
                while not stop.is_set():
                    if any(True for _ in conn.notifies(timeout=WAIT_SECONDS)):
                        self._refresh()
            except Exception as exc:
                listening.clear()
                if not failing:
                    # The type only: the message may name the host and the user.
                    log.warning(
                        "key-change listener: %s; keys are re-read every refresh interval "
                        "until it is back",
                        type(exc).__name__,
                    )
                failing = True
                stop.wait(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)
            finally:
                if conn is not None:
                    conn.close()
        listening.clear()


def _reset_in_forked_children(listener: KeyChangeListener) -> None:
    reference = weakref.ref(listener)

    def after_fork_in_child() -> None:
        alive = reference()
        if alive is not None:
            alive._forget_thread()

    os.register_at_fork(after_in_child=after_fork_in_child)
