# One entry point: `make check` sets up .venv and runs every check and test; `make run` runs the
# example on the default ./cueapi.db; `make bench` runs the benchmarks (not part of the tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: check run bench develop lint test rust-test clean

$(VENV)/.installed: pyproject.toml Makefile
	@# The README's server quick start (run by a test) uses curl.
	@command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q 'maturin>=1.9,<2' 'pytest>=8' 'pytest-timeout>=2.3' 'croniter>=6' pytz 'hypothesis>=6' 'standardwebhooks>=1.1' 'ruff>=0.6' 'mypy>=1.11' 'httpx>=0.27' 'flask>=3' 'psutil>=5' 'prometheus-client>=0.20' 'aiosmtpd>=1.4.6,<2' 'trustme>=1.2' \
		'schemathesis==4.32.5' 'openapi-spec-validator==0.9.0'
	touch $@

# The official CueAPI SDK in a virtualenv of its own: its import name `cueapi` clashes with ours.
SDK_VENV := .venv-sdk
$(SDK_VENV)/.installed:
	$(PYTHON) -m venv $(SDK_VENV)
	$(SDK_VENV)/bin/python -m pip install -q 'cueapi-sdk==0.1.3'
	touch $@

# The official CueAPI CLI likewise: its distribution and import name are both `cueapi`.
CLI_VENV := .venv-cli
$(CLI_VENV)/.installed:
	$(PYTHON) -m venv $(CLI_VENV)
	$(CLI_VENV)/bin/python -m pip install -q 'cueapi==0.2.0'
	touch $@

# The official pull-worker daemon (`cueapi-worker`) likewise, run as a subprocess by the tests.
WORKER_VENV := .venv-worker
$(WORKER_VENV)/.installed:
	$(PYTHON) -m venv $(WORKER_VENV)
	$(WORKER_VENV)/bin/python -m pip install -q 'cueapi-worker==0.3.0'
	touch $@

develop: $(VENV)/.installed $(SDK_VENV)/.installed $(CLI_VENV)/.installed $(WORKER_VENV)/.installed
	maturin develop -q

lint: develop
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --no-default-features -- -D warnings
	ruff check python tests examples bench
	ruff format --check python tests examples bench
	mypy
	$(PY) -m mypy.stubtest cueapi._cueapi

rust-test:
	cargo test --no-default-features --features server

test: develop
	$(PY) -m pytest

check: lint rust-test test

run: develop
	$(PY) examples/quickstart.py

# Benchmarks in their own venv, with a release build installed as a wheel: `maturin develop` would
# write the extension into python/cueapi/, the tree the debug build in .venv imports from; a separate
# CARGO_TARGET_DIR keeps cargo from waiting on (or invalidating) the debug build's target/.
# BENCH_ARGS go to bench/run.py, e.g. `make bench BENCH_ARGS=--quick`. The server benchmarks drive
# `cueapi serve` with wrk (a Debian package).
bench:
	@set -e; B="$(abspath .venv-bench)"; \
	if ! command -v wrk >/dev/null; then apt-get update -qq && apt-get install -y -qq wrk >/dev/null; fi; \
	export VIRTUAL_ENV="$$B" PATH="$$B/bin:$$PATH" CARGO_TARGET_DIR="$$B/target"; \
	if [ ! -x "$$B/bin/python" ]; then $(PYTHON) -m venv "$$B"; printf '*\n' > "$$B/.gitignore"; fi; \
	if [ ! -f "$$B/.installed" ]; then \
		"$$B/bin/python" -m pip install -q --upgrade pip; \
		"$$B/bin/python" -m pip install -q 'maturin>=1.9,<2' 'apscheduler>=3.10,<4' 'sqlalchemy>=2' 'psutil>=5'; \
		touch "$$B/.installed"; fi; \
	rm -rf "$$B/wheels"; \
	export CUEAPI_BENCH_BUILD="$$(git rev-parse --short HEAD)$$(git status --porcelain -- src python Cargo.toml \
		Cargo.lock pyproject.toml | grep -q . && echo ' + uncommitted changes')"; \
	"$$B/bin/maturin" build --release -q -i "$$B/bin/python" -o "$$B/wheels"; \
	"$$B/bin/python" -m pip install -q --force-reinstall --no-deps "$$B"/wheels/cueapi-*.whl; \
	"$$B/bin/python" bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) target
