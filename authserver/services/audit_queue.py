"""token_issued audit rows written in batches off the request path: an operator's choice.

By default (``AUTHSERVER_TOKEN_AUDIT_FLUSH_MS=0``) a token's audit row commits before the
token is handed out; for client_credentials that row is the request's only database work, so
while the database is down the grant answers 503 like every other token request (issue 5's
rule), and each such request pays for one INSERT and the commit's wait for the WAL flush.

With ``AUTHSERVER_TOKEN_AUDIT_FLUSH_MS`` above 0, rows of ``token_issued`` events (one per
token, nearly all of the trail's volume) are queued in memory and written by a background
thread that often, many rows per INSERT: client_credentials stops touching the database
(about 1.4x the requests per second in `make bench`, docs/PERFORMANCE.md). Every other event
is still written in its request's transaction: it records a change that transaction makes (a
revocation, a sign-out, a failed sign-in) and must commit or fail with it.

What the queue trades: the JSON log line of every event is still written at once, but a
token_issued row reaches ``audit_events`` up to that long after its token was issued; rows
still queued when a process is killed outright (SIGKILL, out of memory) never reach it (their
log lines did); a normal exit (gunicorn's graceful stop, SIGTERM) writes the queue out first.
client_credentials keeps issuing tokens while the database is unreachable, from cached client
rows and keys; those rows wait and are retried on each flush, and past ``MAX_QUEUED_ROWS`` the
oldest are dropped, counted in a metric and in a warning.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from authserver.metrics import AUDIT_ROWS_DROPPED

log = logging.getLogger(__name__)

# About a minute of a busy server's token requests: enough to ride out a database restart.
MAX_QUEUED_ROWS = 50_000

WriteRows = Callable[[list[dict[str, Any]]], None]


class AuditQueue:
    """Rows waiting for ``write``; a daemon thread calls ``flush`` every ``interval`` seconds.

    The thread starts with the first row a process queues, not when the queue is built:
    gunicorn builds the app and then forks, and a thread does not survive a fork.
    """

    def __init__(self, write: WriteRows, interval: float, max_rows: int = MAX_QUEUED_ROWS) -> None:
        self._write = write
        self._interval = interval
        self._max_rows = max_rows
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        # One flush at a time, so rows put back after a failure keep their order.
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        self._thread_pid: int | None = None

    def put(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._rows.append(row)
            if self._thread_pid != os.getpid():
                self._start_thread()

    def pending(self) -> int:
        with self._lock:
            return len(self._rows)

    def flush(self) -> int:
        """Write every queued row now; return how many were written (0 if the write failed,
        in which case the rows stay queued)."""
        with self._flushing:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return 0
            try:
                self._write(rows)
            except Exception as exc:
                self._put_back(rows)
                # The exception's text may quote SQL parameters; its type is enough here.
                log.warning(
                    "audit rows not written yet (%s); %d queued, retrying",
                    type(exc).__name__,
                    self.pending(),
                )
                return 0
            return len(rows)

    def close(self) -> None:
        """Stop the thread after one last flush (at process exit)."""
        self._wake.set()
        self.flush()

    def _put_back(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            merged = rows + self._rows
            dropped = len(merged) - self._max_rows
            if dropped > 0:
                merged = merged[dropped:]
                AUDIT_ROWS_DROPPED.inc(dropped)
                log.warning("audit queue full: %d oldest token_issued rows dropped", dropped)
            self._rows = merged

    def _start_thread(self) -> None:
        # Called with self._lock held.
        self._thread_pid = os.getpid()
        self._wake = threading.Event()
        thread = threading.Thread(target=self._run, name="authserver-audit-queue", daemon=True)
        thread.start()
        atexit.register(self.close)

    def _run(self) -> None:
        wake = self._wake
        while not wake.wait(self._interval):
            try:
                self.flush()
            except Exception:  # never let the writer thread die
                log.exception("audit queue flush failed")
