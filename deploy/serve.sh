#!/bin/sh
# authserver's production HTTP server: granian serving the WSGI app, one process per core.
# Chosen by measurement over gunicorn's worker classes (docs/PERFORMANCE.md, "The WSGI
# server"). The Dockerfile, docker-compose.yml and `make bench` start authserver with this
# script. Each setting below is a default: set the GRANIAN_* variable to change it
# (`granian --help` lists them all). Arguments replace the app target, e.g.
# `deploy/serve.sh bench.floor_app:create_app`.
set -eu

export GRANIAN_INTERFACE=wsgi
# The target is a factory: each worker process builds its own app.
export GRANIAN_FACTORY=true
export GRANIAN_HOST="${GRANIAN_HOST:-0.0.0.0}"
export GRANIAN_PORT="${GRANIAN_PORT:-8000}"
# One worker per core: argon2 hashing and ES256 signing are CPU-bound, so more processes than
# cores only queue inside the CPU.
export GRANIAN_WORKERS="${GRANIAN_WORKERS:-$(nproc)}"
# Threads that run requests in each worker: while one waits on PostgreSQL the other computes.
# More threads than two measured slower on every token endpoint (they contend for the GIL).
export GRANIAN_BLOCKING_THREADS="${GRANIAN_BLOCKING_THREADS:-2}"
# No access log by default: every token issued, sign-in and refusal is already an audit line
# (address, client, user agent), and writing the line was a fifth of a worker's time on
# client_credentials (docs/PERFORMANCE.md).
# GRANIAN_LOG_ACCESS_ENABLED=true turns it on, in this format: the path without its query
# string (granian's %(path)s has none), where a mistaken client may put a token.
export GRANIAN_LOG_ACCESS_ENABLED="${GRANIAN_LOG_ACCESS_ENABLED:-false}"
export GRANIAN_LOG_ACCESS_FMT="${GRANIAN_LOG_ACCESS_FMT:-[%(time)s] %(addr)s \"%(method)s %(path)s\" %(status)d %(dt_ms).1fms}"
# A stop (SIGTERM) or a rolling restart (SIGHUP) lets requests in flight finish for this
# long; a worker still busy after it is killed.
export GRANIAN_WORKERS_KILL_TIMEOUT="${GRANIAN_WORKERS_KILL_TIMEOUT:-20}"
# A rolling restart (SIGHUP) starts each new worker this long before it stops the old one:
# long enough for the new one to build its app, so that one of them is always serving
# (granian does not wait for the new worker to be ready; its default, 3.5 s, dropped requests
# on a busy machine).
export GRANIAN_RESPAWN_INTERVAL="${GRANIAN_RESPAWN_INTERVAL:-10}"
# A worker that dies (out of memory, a crash in C) is started again.
export GRANIAN_RESPAWN_FAILED_WORKERS="${GRANIAN_RESPAWN_FAILED_WORKERS:-true}"

if [ "$#" -eq 0 ]; then
  set -- authserver:create_app
fi
exec granian "$@"
