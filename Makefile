# One entry point: `make check` sets up .venv and runs every check and test; `make run` runs the
# example on the default ./cueapi.db (setting up only what that needs); `make bench` and
# `make bench-clients` run the benchmarks (not part of the tests); `make wheel` builds the
# manylinux wheel into dist/.
#
# PostgreSQL: `make check` runs its steps under `tools/pg run`, which starts one throw-away server
# for the whole run (installing Debian's postgresql package when missing), gives the tests its URL
# in CUEAPI_TEST_POSTGRES, and stops it at the end, tests failed or not. With CUEAPI_TEST_POSTGRES
# already set, the tests use that server (they create and drop databases of their own in it).
# `make rust-test` alone needs nothing: the Rust tests start a server with tools/pg themselves when
# CUEAPI_TEST_POSTGRES is unset.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: check run bench soak bench-clients wheel wheel-check develop lint test rust-test clean

# What running cueapi needs: the build tool and the package's own dependencies.
$(VENV)/.base: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q 'maturin>=1.9,<2' 'httpx>=0.27' 'pydantic>=2.7'
	touch $@

# What the checks and tests need besides.
$(VENV)/.installed: $(VENV)/.base
	@# The README's server quick start (run by a test) uses curl.
	@command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }
	$(PY) -m pip install -q 'pytest>=8' 'pytest-timeout>=2.3' 'croniter==7.0.0' pytz 'hypothesis>=6' 'standardwebhooks>=1.1' 'ruff>=0.6' 'mypy>=1.11' 'httpx>=0.27' 'pydantic>=2.7' 'flask>=3' 'fastapi>=0.110' 'uvicorn>=0.30' 'psutil>=5' 'prometheus-client>=0.20' 'aiosmtpd>=1.4.6,<2' 'trustme>=1.2' 'psycopg[binary]>=3.2,<4' \
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

check:
	tools/pg run $(MAKE) --no-print-directory lint rust-test test wheel-check

run: $(VENV)/.base
	maturin develop -q
	$(PY) examples/quickstart.py

# Benchmarks in their own venv, with a release build installed as a wheel: `maturin develop` would
# write the extension into python/cueapi/, the tree the debug build in .venv imports from; a separate
# CARGO_TARGET_DIR keeps cargo from waiting on (or invalidating) the debug build's target/.
# BENCH_ARGS go to bench/run.py (`make bench BENCH_ARGS=--quick`) or bench/clients.py. The server
# benchmarks drive `cueapi serve` with wrk (a Debian package); the cluster ones (bench/cluster.py)
# start PostgreSQL with tools/pg and read it with psycopg; bench/clients.py loads the official
# SDK's verifier from .venv-sdk.
BENCH_SETUP = set -e; B="$(abspath .venv-bench)"; \
	if ! command -v wrk >/dev/null; then apt-get update -qq && apt-get install -y -qq wrk >/dev/null; fi; \
	export VIRTUAL_ENV="$$B" PATH="$$B/bin:$$PATH" CARGO_TARGET_DIR="$$B/target"; \
	if [ ! -x "$$B/bin/python" ]; then $(PYTHON) -m venv "$$B"; printf '*\n' > "$$B/.gitignore"; fi; \
	if [ ! -f "$$B/.installed-3" ]; then \
		"$$B/bin/python" -m pip install -q --upgrade pip; \
		"$$B/bin/python" -m pip install -q 'maturin>=1.9,<2' 'apscheduler>=3.10,<4' 'sqlalchemy>=2' 'psutil>=5' \
			'httpx>=0.27' 'pydantic>=2.7' 'standardwebhooks>=1.1' 'psycopg[binary]>=3.2,<4'; \
		touch "$$B/.installed-3"; fi; \
	rm -rf "$$B/wheels"; \
	export CUEAPI_BENCH_BUILD="$$(git rev-parse --short HEAD)$$(git status --porcelain -- src python Cargo.toml \
		Cargo.lock pyproject.toml | grep -q . && echo ' + uncommitted changes')"; \
	"$$B/bin/maturin" build --release -q -i "$$B/bin/python" -o "$$B/wheels"; \
	"$$B/bin/python" -m pip install -q --force-reinstall --no-deps "$$B"/wheels/cueapi-*.whl

bench:
	@$(BENCH_SETUP); "$$B/bin/python" bench/run.py $(BENCH_ARGS)

# The soak: 30 minutes of mixed load on the release build; writes bench/soak.png and its block of
# bench/RESULTS.md (`make soak BENCH_ARGS="--minutes 2"` for a short look).
soak:
	@$(BENCH_SETUP); "$$B/bin/python" -m pip install -q 'matplotlib>=3.8'; "$$B/bin/python" bench/soak.py $(BENCH_ARGS)

bench-clients: $(SDK_VENV)/.installed
	@$(BENCH_SETUP); "$$B/bin/python" bench/clients.py $(BENCH_ARGS)

# The wheel users install: manylinux2014 (glibc 2.17), abi3 (CPython 3.10 and later), stripped,
# linked with zig (from PyPI) so that no old-glibc build image is needed.
wheel:
	@set -e; W="$(abspath .venv-wheel)"; \
	if [ ! -x "$$W/bin/maturin" ]; then $(PYTHON) -m venv "$$W"; printf '*\n' > "$$W/.gitignore"; \
		"$$W/bin/python" -m pip install -q 'maturin>=1.9,<2' 'ziglang>=0.13'; fi; \
	export PATH="$$W/bin:$$PATH" CARGO_TARGET_DIR="$$W/target"; \
	rm -rf dist; maturin build --release --zig --compatibility manylinux2014 --strip -q -o dist

# Installs that wheel into a fresh virtualenv and tries it there (tests/wheel_check.py).
wheel-check: wheel
	$(PYTHON) tests/wheel_check.py dist/cueapi-*.whl

clean:
	rm -rf $(VENV) target dist
