# One entry point: `make check` sets up .venv and runs every check and test; `make run` runs the
# example on the default ./cueapi.db; `make bench` runs the benchmarks (not part of the tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: check run bench develop lint test rust-test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q 'maturin>=1.9,<2' 'pytest>=8' 'pytest-timeout>=2.3' 'croniter>=6' pytz 'ruff>=0.6' 'mypy>=1.11'
	touch $@

develop: $(VENV)/.installed
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
	cargo test --no-default-features

test: develop
	$(PY) -m pytest

check: lint rust-test test

run: develop
	$(PY) examples/quickstart.py

bench: $(VENV)/.installed
	$(PY) -m pip install -q 'apscheduler>=3.10,<4' 'sqlalchemy>=2' psutil
	maturin develop -q --release
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) target
