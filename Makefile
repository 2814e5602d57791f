# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# `make help` lists every target.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DIST ?= dist
DEMO_HOST ?= 127.0.0.1
DEMO_PORT ?= 8000
EXAMPLE_ENV := DJANGO_SETTINGS_MODULE=exampleproject.settings
CLIENT_SOURCES := $(shell find client/src -type f) client/package.json client/tsup.config.ts
EXAMPLE_FRONTEND_SOURCES = $(shell find example/frontend/src -type f) \
	example/frontend/index.html example/frontend/vite.config.ts example/frontend/package.json

.PHONY: help test lint docs bench soak demo dist venv demo-venv services clean client \
	client-build example-frontend

## List the targets and what they do.
help:
	@awk '/^## /{doc = doc substr($$0, 4) " "; next} \
		/^[a-z][a-z-]*:/{if (doc) {end = index(doc, ". "); if (end) doc = substr(doc, 1, end); \
			split($$0, t, ":"); printf "  %-17s %s\n", t[1], doc}} \
		{doc = ""}' $(MAKEFILE_LIST)

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.created
	$(PY) -m pip install -q -e ".[test,server,dev]"
	touch $@ $(VENV)/.demo-installed

$(VENV)/.demo-installed: pyproject.toml $(VENV)/.created
	$(PY) -m pip install -q -e ".[server]"
	touch $@

## The virtualenv in .venv: the library (editable), its test tools and servers.
venv: $(VENV)/.installed

## The virtualenv with only what the demo needs (the library and uvicorn).
demo-venv: $(VENV)/.demo-installed

## Start PostgreSQL and Redis (installed first if missing), as the tests need them.
services:
	bash .ci/services.sh

client/node_modules/.installed: client/package.json client/package-lock.json
	bash .ci/node.sh
	cd client && npm install --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

client/dist/index.js: client/node_modules/.installed $(CLIENT_SOURCES)
	cd client && npm run build

## The TypeScript client: install, type-check, unit tests, build (the Python tests use dist/).
client: client/node_modules/.installed
	cd client && npm run typecheck && npm test && npm run build

## Build the client's dist/ if its sources changed.
client-build: client/dist/index.js

## ruff, the import layers (import-linter) and mypy.
lint: venv
	$(VENV)/bin/ruff check rxdjango tests example bench
	$(VENV)/bin/ruff format --check rxdjango tests example bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

## RxDjango beside DCRF, a DRF endpoint and a raw-WebSocket floor; one table, one JSON file.
bench: venv services client-build
	$(PY) bench/run.py

## Long reliability runs. The load run: 1,000 churning clients on one server process
## for 5 minutes, changes flowing; fails on any error, a client that does not converge,
## or RSS growth (flags through SOAK_ARGS, e.g. `make soak SOAK_ARGS="--duration 120"`).
## Then the convergence and fuzz tests with many more examples than make test runs.
soak: venv services
	$(PY) bench/soak.py $(SOAK_ARGS)
	RX_CONVERGENCE_EXAMPLES=300 RX_FUZZ_EXAMPLES=3000 $(VENV)/bin/pytest -q -s \
		tests/test_convergence.py tests/test_hostile_input.py

## The documentation site; --strict fails on broken links.
docs: venv
	$(VENV)/bin/mkdocs build --strict -q -d site

# The slowest tests of each pass, listed after it (the suite must stay under 45 min).
DURATIONS ?= --durations=12 --durations-min=5

# What also runs on a local Redis Cluster (three masters, three replicas) in the last
# Redis pass: propagation, loading, privacy, reconnection, writes and convergence.
CLUSTER_TESTS = test_live_updates.py test_loading.py test_load_consistency.py \
	test_privacy.py test_reconnect.py test_writes.py test_list_channel.py test_access.py \
	test_anchor_concurrency.py test_convergence.py

## Run every test: lint, docs (broken links fail), the client's tests, then the suite on
## PostgreSQL, on SQLite (the embedded default; fewer random sequences, the same code
## paths), on PostgreSQL with the Redis backend (less the tests that choose their backend
## themselves: they ran in the first pass), part of it again on a Redis Cluster, and the
## example app in Chromium. The benchmark and soak harness smoke tests set up their own
## database, and the fault and memory tests are not about the database: only the first
## pass runs them.
test: venv services lint docs client example-frontend
	$(VENV)/bin/pytest $(DURATIONS)
	RX_TEST_DB=sqlite RX_CONVERGENCE_EXAMPLES=6 RX_FUZZ_EXAMPLES=100 \
		$(VENV)/bin/pytest -q $(DURATIONS) -m "not harness and not db_agnostic and not postgresql_only"
	RX_TEST_BACKEND=redis RX_FUZZ_EXAMPLES=100 \
		$(VENV)/bin/pytest -q $(DURATIONS) -m "not own_backend and not harness"
	RX_TEST_BACKEND=redis RX_CONVERGENCE_EXAMPLES=6 $(VENV)/bin/python tests/redis_cluster.py \
		$(VENV)/bin/pytest -q $(DURATIONS) $(addprefix tests/,$(CLUSTER_TESTS))
	$(VENV)/bin/pytest -q example/tests

example/frontend/node_modules/.installed: example/frontend/package.json example/frontend/package-lock.json client/node_modules/.installed
	bash .ci/node.sh
	cd example/frontend && npm install --no-audit --no-fund --loglevel=error
	touch $@

example/frontend/dist/index.html: client/dist/index.js example/frontend/node_modules/.installed \
		$(EXAMPLE_FRONTEND_SOURCES)
	cd example/frontend && npm run build

## Build the example's React app (client library, generated channels, Vite build), each
## step only if its inputs changed.
example-frontend: demo-venv client-build example/frontend/node_modules/.installed
	cd example && $(EXAMPLE_ENV) ../$(PY) manage.py makefrontend -v 0
	$(MAKE) --no-print-directory example/frontend/dist/index.html

## The example app (a team task board) on DEMO_HOST:DEMO_PORT (127.0.0.1:8000) with the
## embedded defaults. DEMO_HOST=0.0.0.0 serves other machines too.
demo: example-frontend
	cd example && $(EXAMPLE_ENV) ../$(PY) manage.py migrate -v 0
	cd example && $(EXAMPLE_ENV) ../$(PY) manage.py seed_example --url http://$(DEMO_HOST):$(DEMO_PORT)/
	cd example && $(EXAMPLE_ENV) EXAMPLE_ALLOWED_HOSTS=$(DEMO_HOST) ../$(VENV)/bin/uvicorn \
		exampleproject.asgi:application --host $(DEMO_HOST) --port $(DEMO_PORT) \
		--ws-max-size 1048576 --lifespan off

## The wheel and sdist of the library and the client's npm tarball, in dist/ (DIST=...).
dist: venv client-build
	rm -rf $(DIST) && mkdir -p $(DIST)
	$(PY) -m build --outdir $(abspath $(DIST)) .
	cd client && npm pack --ignore-scripts --pack-destination $(abspath $(DIST))

## Remove the virtualenv, caches and builds.
clean:
	rm -rf $(VENV) dist tests/test.sqlite3 .pytest_cache .ruff_cache client/node_modules client/dist
