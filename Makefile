# The commands README.rst promises, for a fresh Debian/Ubuntu machine.
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# A virtualenv that sees only the built wheel, for test-wheel.
WHEEL_VENV ?= .venv-wheel
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT     := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get
PYTEST  := -m pytest -q -p no:cacheprovider
LINTED  := webapp2_sessions tests examples benchmarks tools
# Written after a successful install: deps re-runs only when packaging changes.
DEPS    := $(VENV)/.deps

.PHONY: run test test-all test-browser test-wheel dist lint bench load deps memcached postgresql chromium venv-module

$(BIN)/python: | venv-module
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(DEPS): setup.cfg setup.py pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,dev,browser,dist]'
	touch $@

deps: $(DEPS)

# Debian splits ensurepip out of its Pythons: without python3.X-venv, `-m venv` fails.
venv-module:
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { $(APT) update -q && \
	$(APT) install -y -q "python$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"; }

memcached:
	@command -v memcached >/dev/null || { $(APT) update -q && $(APT) install -y -q memcached; }

# Debian's PostgreSQL binaries (not on PATH): tests/postgres.py runs a throwaway cluster of its own.
# The package may start a system cluster on port 5432; the tests never use it.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(APT) update -q && $(APT) install -y -q postgresql; }

# Debian's Chromium: the browser tests drive /usr/bin/chromium, never a downloaded build.
chromium:
	@test -x /usr/bin/chromium || { $(APT) update -q && $(APT) install -y -q chromium; }

## run: the example app on http://127.0.0.1:8080/ (embedded store unless MEMCACHE_SERVERS is set)
run: $(DEPS)
	$(BIN)/python examples/app.py

## lint: ruff (lint and format) and mypy, once
lint: $(DEPS)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

## test: lint, type checks and every test (browser tests included) on $(PYTHON)
test: memcached postgresql chromium lint
	$(BIN)/python $(PYTEST)

## test-all: lint once, then every test on each CPython >= 3.11 found, in .venv-3.X
test-all: memcached postgresql chromium lint
	$(PYTHON) tools/test_all.py

## test-browser: only the headless-Chromium tests in tests/browser
test-browser: chromium $(DEPS)
	@if [ -d tests/browser ]; then $(BIN)/python $(PYTEST) tests/browser; \
	else echo "test-browser: tests/browser does not exist yet, nothing to run"; fi

## dist: sdist and wheel in dist/, checked by twine and check-manifest
dist: $(DEPS)
	rm -rf dist
	$(BIN)/python -m build -q
	$(BIN)/twine check --strict dist/*
	$(BIN)/check-manifest

## test-wheel: every test, from the unpacked sdist, against the built wheel in a fresh virtualenv
test-wheel: memcached postgresql chromium venv-module dist
	rm -rf $(WHEEL_VENV)
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/pip install -q --upgrade pip
	$(WHEEL_VENV)/bin/pip install -q "$$(echo dist/*.whl)[test,browser]"
	@set -eu; \
	python="$(CURDIR)/$(WHEEL_VENV)/bin/python"; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	tar xzf dist/*.tar.gz -C "$$tmp"; \
	src=$$(echo "$$tmp"/*/); \
	rm -rf "$$src/webapp2_sessions"; \
	site=$$("$$python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))'); \
	cd "$$src"; \
	file=$$("$$python" -c 'import webapp2_sessions; print(webapp2_sessions.__file__)'); \
	echo "test-wheel: $$("$$python" -V) imports webapp2_sessions from $$file"; \
	case "$$file" in "$$site"/*) ;; \
	*) echo "test-wheel: expected it under $$site" >&2; exit 1;; esac; \
	echo "+ (in the unpacked sdist) $$python $(PYTEST)"; \
	"$$python" $(PYTEST)

## bench: median request times and round trips, side by side with peer libraries
bench: memcached $(DEPS)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/bench.py

## bench-db: the durable tier on SQLite and a throwaway PostgreSQL, against Django's cached_db and Beaker
.PHONY: bench-db
bench-db: memcached postgresql $(DEPS)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/bench.py --database sqlite,postgresql

## load: sustained load on a three-node cluster (gunicorn + wrk)
load: memcached $(DEPS)
	@command -v wrk >/dev/null || { $(APT) update -q && $(APT) install -y -q wrk; }
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/load.py
