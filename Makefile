# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_PORT ?= 8000
EXAMPLE_ENV := DJANGO_SETTINGS_MODULE=exampleproject.settings

.PHONY: test lint docs bench soak demo venv services clean client client-build example-frontend

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,server]"
	touch $@

venv: $(VENV)/.installed

services:
	bash .ci/services.sh

client/node_modules/.installed: client/package.json client/package-lock.json
	bash .ci/node.sh
	cd client && npm install --no-audit --no-fund --loglevel=error
	touch $@

## The TypeScript client: install, type-check, unit tests, build (the Python tests use dist/).
client: client/node_modules/.installed
	cd client && npm run typecheck && npm test && npm run build

client-build: client/node_modules/.installed
	cd client && npm run build

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

## Run every test: lint, docs (broken links fail), the client's tests, then the suite on
## PostgreSQL, on SQLite (the embedded default; fewer random sequences, the same code
## paths), on PostgreSQL with the Redis backend (less the tests that choose their backend
## themselves: they ran in the first pass), and the example app in Chromium. The
## benchmark and soak harness smoke tests set up their own database, and the fault and
## memory tests are not about the database: only the first pass runs them.
test: venv services lint docs client example-frontend
	$(VENV)/bin/pytest
	RX_TEST_DB=sqlite RX_CONVERGENCE_EXAMPLES=6 RX_FUZZ_EXAMPLES=100 \
		$(VENV)/bin/pytest -q -m "not harness and not db_agnostic"
	RX_TEST_BACKEND=redis RX_FUZZ_EXAMPLES=100 $(VENV)/bin/pytest -q -m "not own_backend and not harness"
	$(VENV)/bin/pytest -q example/tests

example/frontend/node_modules/.installed: example/frontend/package.json example/frontend/package-lock.json client/node_modules/.installed
	cd example/frontend && npm install --no-audit --no-fund --loglevel=error
	touch $@

## Build the example's React app (client library, generated channels, Vite build).
example-frontend: venv client-build example/frontend/node_modules/.installed
	cd example && $(EXAMPLE_ENV) ../$(PY) manage.py makefrontend
	cd example/frontend && npm run build

## The example app (a team task board) on http://127.0.0.1:$(DEMO_PORT), embedded defaults.
demo: example-frontend
	cd example && $(EXAMPLE_ENV) ../$(PY) manage.py migrate -v 0
	cd example && $(EXAMPLE_ENV) ../$(PY) manage.py seed_example --url http://127.0.0.1:$(DEMO_PORT)/
	cd example && $(EXAMPLE_ENV) ../$(VENV)/bin/uvicorn exampleproject.asgi:application --host 127.0.0.1 --port $(DEMO_PORT) --ws-max-size 1048576

clean:
	rm -rf $(VENV) tests/test.sqlite3 .pytest_cache .ruff_cache client/node_modules client/dist
