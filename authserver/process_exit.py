"""Work a process does on its way out, whichever way out it takes."""

from __future__ import annotations

import atexit
import multiprocessing.util
from collections.abc import Callable


def at_process_exit(callback: Callable[[], None]) -> None:
    """Run ``callback`` when this process ends normally; it must bear being run twice.

    Two ways out, two registrations: atexit runs when the interpreter ends (gunicorn's
    workers, the CLI); a worker process forked by multiprocessing (granian's) leaves through
    ``os._exit``, which skips atexit but runs multiprocessing's finalizers first. Both run
    the latest registered first, so work registered later (a flush that still uses the
    database) happens before work registered earlier (forgetting this process's gauges)."""
    atexit.register(callback)
    multiprocessing.util.Finalize(None, callback, exitpriority=10)
