"""gunicorn settings for authserver: `gunicorn -c gunicorn.conf.py 'authserver:create_app()'`.

Each worker is a process with a few threads: password hashing and signing release the GIL in
C, and the threads overlap database round trips.
"""

from __future__ import annotations

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
# One worker per core by default: argon2 hashing is CPU-bound, so more processes than cores
# only queue inside the CPU.
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count()))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 30
graceful_timeout = 20
keepalive = 5
# Access log without the query string: a mistaken client may put a token there.
accesslog = "-"
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms "%(a)s"'
errorlog = "-"
# Refuse oversized request lines and headers early (the app caps bodies at 64 KiB).
limit_request_line = 8190
limit_request_fields = 100
