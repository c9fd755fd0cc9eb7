from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import cueapi
import pytest

T = TypeVar("T")

# A fixed start for manual clocks: a Monday, far from any DST transition.
START = datetime(2026, 6, 1, 12, 0, 0, tzinfo=timezone.utc)


def wait_for(probe: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Polls ``probe`` until it returns something truthy, or fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value {value!r}")
        time.sleep(0.005)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cueapi.db"


@pytest.fixture
def clock() -> cueapi.ManualClock:
    return cueapi.ManualClock(START)


@pytest.fixture
def app(db: Path, clock: cueapi.ManualClock) -> Iterator[cueapi.App]:
    a = cueapi.App(db, clock=clock, workers=4, grace=0)
    yield a
    a.close()
