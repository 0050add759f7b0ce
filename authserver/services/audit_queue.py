"""The token_issued rows of client_credentials tokens, written in batches off the request path.

A client_credentials token changes no state: the grant's only database work would be its
audit row, and committing that row before answering (an INSERT and a wait for the WAL flush)
was most of the grant's cost. So by default (``AUTHSERVER_TOKEN_AUDIT_FLUSH_MS=200``) those
rows are queued in memory and a background thread writes them every 200 ms, many rows per
INSERT (docs/PERFORMANCE.md has the figures). Every other event is written in its request's
transaction, including the token_issued rows of user tokens: each records or accompanies a
change that transaction makes (a rotation, a new family, a sign-in, a revocation, anything an
operator or admin does) and must commit or fail with it.

What the queue trades, exactly: the JSON log line of every event is still written at once, but
a queued row reaches ``audit_events`` up to one interval after its token was issued. Rows still
queued when a process is killed outright (SIGKILL, out of memory) never reach the table: at
most one interval's client_credentials rows per process (their log lines were written). A
normal exit (a graceful stop, SIGTERM) writes the queue out first. While the database is
unreachable, client_credentials keeps issuing tokens from cached client rows and keys; their
rows wait and are retried on each flush, and past ``MAX_QUEUED_ROWS`` the oldest are dropped,
counted in a metric and in a warning. ``AUTHSERVER_TOKEN_AUDIT_FLUSH_MS=0`` turns the queue
off: each row commits before its token leaves, and the grant answers 503 during an outage.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from authserver.metrics import AUDIT_ROWS_DROPPED
from authserver.process_exit import at_process_exit

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
        # A normal exit writes the queue out.
        at_process_exit(self.close)

    def _run(self) -> None:
        wake = self._wake
        while not wake.wait(self._interval):
            try:
                self.flush()
            except Exception:  # never let the writer thread die
                log.exception("audit queue flush failed")
