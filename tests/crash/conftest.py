"""The crash suite's summary: what each trial counted, after the run (with the seed that drew its
plan; CUEAPI_CRASH_SEED=<seed> draws the same plans again)."""

from __future__ import annotations

import pytest

from tests.crash import harness


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not harness.SUMMARY:
        return
    terminalreporter.section("crash trials")
    terminalreporter.write_line(f"seed {harness.SEED} (CUEAPI_CRASH_SEED={harness.SEED} repeats the plans)")
    for line in harness.SUMMARY:
        terminalreporter.write_line(line)
