# The two README commands: `make demo` and `make test`. Both install what is
# missing (Debian packages, the virtualenv, npm packages) and are idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The suite in two processes (pytest-xdist), a test file to a process: most of its time is
# spent waiting on servers and subprocesses, so two files at once take ~0.65 of the time on
# 2 cores. Each process starts its own shared stack (free ports, its own temp dir).
# `make test PYTEST_ARGS=` runs it in one process.
PYTEST_ARGS ?= -n 2 --dist loadfile --durations=25

.PHONY: demo test lint chaos deps sysdeps pydeps nodedeps stack-up stack-down bench clean

deps: sysdeps pydeps nodedeps

# Debian/Ubuntu packages: gearmand, PostgreSQL server binaries, Node.js for kinesalite,
# venv support for the system Python, headless Chromium for the status web page's
# test (tests/integration/test_status_web.py), and PHP (php-cli, php-fpm) for the relay's
# PHP client test and benchmark (tests/integration/test_relay.py, bench/bench_relay.py).
# Only what is missing gets installed.
sysdeps:
	@missing=""; \
	command -v gearmand >/dev/null 2>&1 || [ -x /usr/sbin/gearmand ] || missing="$$missing gearman-job-server"; \
	command -v gearadmin >/dev/null 2>&1 || missing="$$missing gearman-tools"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	command -v runuser >/dev/null 2>&1 || missing="$$missing util-linux"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v php >/dev/null 2>&1 || missing="$$missing php-cli"; \
	ls /usr/sbin/php-fpm* >/dev/null 2>&1 || missing="$$missing php-fpm"; \
	$(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo ">> installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: setup.cfg pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

pydeps: $(VENV)/.installed

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

nodedeps: node_modules/.installed

# ruff, then mypy over the package under its real module names (scripts/typecheck.py), both
# held to the scope in pyproject.toml ([tool.shardline.lint]): the parts that are clean so far.
lint: pydeps
	$(VENV)/bin/ruff check $$($(PY) scripts/typecheck.py --print-scope)
	$(PY) scripts/typecheck.py --quiet-outside

# Lint first (seconds), then the suite (minutes).
test: deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

# `make demo KEEP=1` leaves the stack, the fleet and the status page running afterwards.
demo: deps
	$(PY) scripts/demo.py $(if $(filter-out 0,$(KEEP)),--keep)

stack-up: deps
	$(VENV)/bin/shardline devstack up

stack-down:
	-$(VENV)/bin/shardline devstack down

bench: deps
	$(PY) bench/run_all.py

# The reliability campaign (docs/reliability.md): `make chaos SEED=3 DURATION=600 EVENTS=500000`.
# Its modes: CHAOS_ARGS="--control postgres|dynamodb --warehouse postgres|redshift-like"
# (default postgres/postgres; `make test` runs the short one with dynamodb/redshift-like).
SEED ?= 1
DURATION ?= 120
EVENTS ?= 60000
CHAOS_ARGS ?=
chaos: deps
	$(PY) -m tests.chaos --seed $(SEED) --duration $(DURATION) --events $(EVENTS) $(CHAOS_ARGS)

clean: stack-down
	rm -rf $(VENV) node_modules .devstack .pytest_cache
