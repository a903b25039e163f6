# The two commands README.rst promises, for a fresh Debian/Ubuntu machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint bench load deps memcached

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

deps: $(BIN)/python
	$(BIN)/pip install -q -e '.[test,dev]'

memcached:
	@command -v memcached >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q memcached; }

## run: the example app on http://127.0.0.1:8080/ (embedded store unless MEMCACHE_SERVERS is set)
run: deps
	$(BIN)/python examples/app.py

## test: every test, against real memcached servers, plus lint and type checks
test: memcached deps
	$(BIN)/ruff check webapp2_sessions tests examples benchmarks
	$(BIN)/ruff format --check webapp2_sessions tests examples benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: deps
	$(BIN)/ruff check webapp2_sessions tests examples benchmarks
	$(BIN)/mypy

## bench: median request times and round trips, side by side with peer libraries
bench: memcached deps
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/bench.py

## load: sustained load on a three-node cluster (gunicorn + wrk)
load: memcached deps
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q wrk; }
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/load.py
