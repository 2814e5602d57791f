# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_PORT ?= 8000

.PHONY: test lint demo venv services clean client

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,server]"
	touch $@

venv: $(VENV)/.installed

services:
	bash .ci/services.sh

client/node_modules/.installed: client/package.json client/package-lock.json
	cd client && npm install --no-audit --no-fund --loglevel=error
	touch $@

## The TypeScript client: install, type-check, unit tests, build (the Python tests use dist/).
client: client/node_modules/.installed
	cd client && npm run typecheck && npm test && npm run build

lint: venv
	$(VENV)/bin/ruff check rxdjango tests
	$(VENV)/bin/ruff format --check rxdjango tests

## Run every test: lint, then the suite on PostgreSQL, on SQLite (the embedded default),
## and on PostgreSQL with the Redis backend.
test: venv services lint client
	$(VENV)/bin/pytest
	RX_TEST_DB=sqlite $(VENV)/bin/pytest -q
	RX_TEST_BACKEND=redis $(VENV)/bin/pytest -q

## Serve the test project's channels on http://127.0.0.1:$(DEMO_PORT) with the embedded defaults.
demo: venv
	cd tests && RX_TEST_DB=sqlite DJANGO_SETTINGS_MODULE=testproject.settings ../$(PY) -m django migrate -v 0
	cd tests && RX_TEST_DB=sqlite DJANGO_SETTINGS_MODULE=testproject.settings ../$(PY) -m django seed_demo --port $(DEMO_PORT)
	cd tests && RX_TEST_DB=sqlite ../$(VENV)/bin/uvicorn testproject.asgi:application --host 127.0.0.1 --port $(DEMO_PORT)

clean:
	rm -rf $(VENV) tests/test.sqlite3 .pytest_cache .ruff_cache client/node_modules client/dist
