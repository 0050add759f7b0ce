# authserver: the two commands that always work on a fresh machine are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000
# pytest-xdist workers for `make test`, each with a database of its own (tests/conftest.py).
# TEST_WORKERS=0 runs the suite in one process; so does -n 0 in PYTEST_ARGS (the last -n wins).
TEST_WORKERS ?= 3
# axe-core, the accessibility checker the end-to-end tests run in Chromium
# (tests/e2e/screenshots.py): fetched from the npm registry at this version and checked against
# this digest of its tarball, into a git-ignored folder. Without npm the checks are skipped,
# except in CI (.ci/run).
AXE_VERSION := 4.14.1
AXE_SHA256  := e6b0ce02b84d892e2e33e403485e7f3d6c29e2be6df65daf44d89ba564139745
AXE_DIR     := test-tools/axe-core-$(AXE_VERSION)
AXE_JS      := $(AXE_DIR)/axe.min.js

.PHONY: run test lint format install clean help bench bench-revocation examples axe translations

help:
	@echo "make run    - start the server on http://$(HOST):$(PORT) with an embedded SQLite database"
	@echo "make test   - install everything and run the test suite (TEST_WORKERS=$(TEST_WORKERS) in parallel)"
	@echo "make axe    - fetch axe-core $(AXE_VERSION) (npm) for the accessibility checks into $(AXE_DIR)"
	@echo "make lint   - ruff check, ruff format --check, mypy"
	@echo "make format - apply ruff's formatting and fixes"
	@echo "make translations - extract the pages' strings, update each language's catalog, compile them"
	@echo "make bench  - benchmark under gunicorn + PostgreSQL with wrk (see docs/PERFORMANCE.md)"
	@echo "make bench-revocation - how long a revocation takes to reach a resource server, by path"
	@echo "make examples - npm ci for the Node resource-server example (its tests skip without it)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(AXE_JS):
	@if ! command -v npm >/dev/null 2>&1; then \
	  echo "npm is missing: the accessibility checks will be skipped (apt-get install npm)"; \
	else \
	  set -e; rm -rf $(AXE_DIR).tmp; mkdir -p $(AXE_DIR).tmp; \
	  npm pack --silent --pack-destination $(AXE_DIR).tmp axe-core@$(AXE_VERSION) >/dev/null; \
	  echo "$(AXE_SHA256)  $(AXE_DIR).tmp/axe-core-$(AXE_VERSION).tgz" | sha256sum --check --quiet; \
	  tar -xzf $(AXE_DIR).tmp/axe-core-$(AXE_VERSION).tgz -C $(AXE_DIR).tmp; \
	  rm -rf $(AXE_DIR); mv $(AXE_DIR).tmp/package $(AXE_DIR); rm -rf $(AXE_DIR).tmp; \
	fi

axe: $(AXE_JS)

# The issuer follows HOST and PORT (`make run PORT=8123`) unless AUTHSERVER_ISSUER is set.
run: export AUTHSERVER_ISSUER ?= http://$(HOST):$(PORT)
run: $(STAMP)
	$(BIN)/authserver db upgrade
	$(BIN)/authserver dev seed
	$(BIN)/authserver serve --host $(HOST) --port $(PORT)

# The OAuth clients nobody on the project wrote that the tests drive (tests/node_clients),
# from their lock file. `make test` installs them when npm is there and the install works, and
# goes on without them otherwise: their tests then skip, saying why (.ci/run requires them).
NODE_CLIENTS := tests/node_clients
NODE_STAMP   := $(NODE_CLIENTS)/node_modules/.installed

$(NODE_STAMP): $(NODE_CLIENTS)/package.json $(NODE_CLIENTS)/package-lock.json
	@if ! command -v npm >/dev/null 2>&1; then \
	  echo "npm not found: the tests against the Node OAuth clients will be skipped"; \
	elif npm ci --prefix $(NODE_CLIENTS) --no-audit --no-fund; then touch $@; \
	else echo "npm ci failed: the tests against the Node OAuth clients will be skipped"; fi

test: export AUTHSERVER_TEST_AXE_JS ?= $(CURDIR)/$(AXE_JS)
test: $(STAMP) $(NODE_STAMP) $(AXE_JS)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check authserver tests migrations examples bench gunicorn.conf.py
	$(BIN)/ruff format --check authserver tests migrations examples bench gunicorn.conf.py
	$(BIN)/mypy authserver

format: $(STAMP)
	$(BIN)/ruff check --fix authserver tests migrations examples bench gunicorn.conf.py
	$(BIN)/ruff format authserver tests migrations examples bench gunicorn.conf.py

# The pages' words (babel.cfg says where they are) into messages.pot, each language's
# messages.po brought up to date with it (new strings empty, changed ones fuzzy: translate
# them and drop the fuzzy mark), then compiled into the messages.mo the server reads. The .mo
# files are committed, so a fresh checkout and a pip install have them;
# tests/test_translations.py fails while one is stale, a string is untranslated or fuzzy, or
# a translation's placeholders differ from its English.
TRANSLATIONS := authserver/translations
translations: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k lazy_gettext --no-location --sort-output \
	  --project=authserver --copyright-holder="authserver contributors" -o $(TRANSLATIONS)/messages.pot .
	$(BIN)/pybabel update -i $(TRANSLATIONS)/messages.pot -d $(TRANSLATIONS) --ignore-obsolete --previous
	$(BIN)/pybabel compile -d $(TRANSLATIONS) --statistics

# Not part of `make test`: a benchmark reports figures, it does not pass or fail.
bench: $(STAMP)
	$(BIN)/python bench/run.py

bench-revocation: $(STAMP)
	$(BIN)/python bench/revocation_latency.py

# Not part of `make test`, which asks the npm registry for axe-core alone (above): the Node
# example's pinned packages (package-lock.json). Its tests skip without them; .ci/run requires them.
examples:
	cd examples/node-resource-server && npm ci --no-audit --no-fund

clean:
	rm -rf $(VENV) instance .pytest_cache .mypy_cache .ruff_cache examples/node-resource-server/node_modules \
	  $(NODE_CLIENTS)/node_modules test-tools test-artifacts
