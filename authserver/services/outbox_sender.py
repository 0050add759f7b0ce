"""The outbox's sender inside a server process (``AUTHSERVER_OUTBOX_IN_PROCESS=1``).

A daemon thread runs one delivery (``services.outbox.deliver_due``) when it is woken, right
after a request whose transaction enqueued a message has committed (``wake_after_commit``),
so a logout reaches the apps within moments; and otherwise when the next pending message is
due, or at least every ``sweep_seconds``, for retries and for messages other processes wrote
(a CLI command, another worker that died). Every sender may deliver any message; the leases
of ``services/outbox.py`` keep them apart.

The thread starts with the first request a process serves, not when the app is built:
gunicorn builds the app and then forks, and a thread does not survive a fork; and a CLI
command builds the app too, but exits as soon as it is done and must not leave a delivery
half made (it would wait out its lease). A commit wakes only a sender that has started.

A process that exits while a delivery is under way leaves that message claimed; another
sender delivers it when the lease ends (at least once, see ``services/outbox.py``).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from authserver.services.outbox import ENQUEUED, DeliveryReport

log = logging.getLogger(__name__)

THREAD_NAME = "authserver-outbox-sender"
# The shortest wait between two rounds: a message that stays due (claimed by another sender
# that has not committed yet) must not make the thread spin.
MIN_WAIT_SECONDS = 0.05
CLOSE_TIMEOUT_SECONDS = 10.0


class OutboxSender:
    """Runs ``deliver`` on a daemon thread of this process; see the module docstring."""

    def __init__(
        self,
        deliver: Callable[[], DeliveryReport],
        *,
        sweep_seconds: float,
        clock: Callable[[], datetime],
    ) -> None:
        self._deliver = deliver
        self._sweep = sweep_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._failing = False
        _reset_in_forked_children(self)

    @property
    def running(self) -> bool:
        thread = self._thread
        return self._pid == os.getpid() and thread is not None and thread.is_alive()

    def ensure_started(self) -> None:
        """Start this process's thread if it has none (a before_request hook: cheap after the
        first time)."""
        if self._pid == os.getpid() or self._closed:
            return
        with self._lock:
            if self._pid == os.getpid() or self._closed:
                return
            self._pid = os.getpid()
            self._wake = threading.Event()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Deliver now, if this process's thread has started (see the module docstring)."""
        if self._pid == os.getpid():
            self._wake.set()

    def close(self) -> None:
        """Stop the thread after the round under way, and wait for it."""
        with self._lock:
            self._closed = True
            self._stop.set()
            self._wake.set()
            thread = self._thread if self._pid == os.getpid() else None
        if thread is not None:
            thread.join(timeout=CLOSE_TIMEOUT_SECONDS)

    def _forget_thread(self) -> None:
        # In a forked child: the parent's thread did not come along, and a lock it held
        # would stay held. The child's first request starts its own.
        self._lock = threading.Lock()
        self._pid = None
        self._thread = None

    def _run(self) -> None:
        stop, wake = self._stop, self._wake
        while not stop.is_set():
            wake.clear()
            wait = self._sweep
            try:
                report = self._deliver()
            except Exception as exc:
                # The database is away, most likely; the next sweep tries again. Said once
                # per outage, not once per sweep. The type only: the message may quote SQL.
                if not self._failing:
                    log.warning(
                        "outbox sender: delivery failed (%s); trying again every %g s",
                        type(exc).__name__,
                        self._sweep,
                    )
                self._failing = True
            else:
                if self._failing:
                    log.info("outbox sender: delivering again")
                self._failing = False
                if report.next_attempt_at is not None:
                    until_due = (report.next_attempt_at - self._clock()).total_seconds()
                    wait = min(wait, max(until_due, MIN_WAIT_SECONDS))
            wake.wait(wait)


def _reset_in_forked_children(sender: OutboxSender) -> None:
    # A weak reference: the hook cannot be unregistered and must not keep the sender alive.
    reference = weakref.ref(sender)

    def after_fork_in_child() -> None:
        alive = reference()
        if alive is not None:
            alive._forget_thread()

    os.register_at_fork(after_in_child=after_fork_in_child)


def wake_after_commit(factory: sessionmaker[Session], wake: Callable[[], None]) -> None:
    """Call ``wake`` after every commit of a session from ``factory`` that enqueued a
    message (``services.outbox.enqueue`` marks the session)."""

    @event.listens_for(factory, "after_commit")
    def _after_commit(session: Session) -> None:
        if session.info.pop(ENQUEUED, False):
            wake()

    @event.listens_for(factory, "after_rollback")
    def _after_rollback(session: Session) -> None:
        session.info.pop(ENQUEUED, None)
