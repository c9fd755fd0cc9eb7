"""Job bodies shared by both systems, and the state they record into.

APScheduler's SQLAlchemy job store keeps jobs by textual reference (``bench_jobs:noop``), so these
are module-level functions of a module that every worker process can import. Each takes any
arguments: cueapi passes a ``Context``, APScheduler passes nothing.
"""

from __future__ import annotations

import threading
import time

# -- precision: each run records when it started --------------------------------------------------

PRECISION_STARTS: list[float] = []


PRECISION_STARTS_BY_JOB: list[tuple[int, float]] = []


def precision_tick(*_: object) -> None:
    PRECISION_STARTS.append(time.time())


def precision_tick_job(job: int) -> None:
    PRECISION_STARTS_BY_JOB.append((job, time.time()))


# -- throughput: count completions, note when the last one of the burst finished --------------------

_burst_lock = threading.Lock()
_burst = {"target": 0, "done": 0}
BURST_DONE = threading.Event()
BURST_DONE_AT: list[float] = []


def burst_setup(n: int) -> None:
    _burst["target"] = n


def burst_completed() -> int:
    return _burst["done"]


def burst_noop(*_: object) -> None:
    with _burst_lock:
        _burst["done"] += 1
        last = _burst["done"] == _burst["target"]
    if last:
        BURST_DONE_AT.append(time.time())
        BURST_DONE.set()


# -- scale: the many jobs that never come due, and the one that does -------------------------------

DUE = threading.Event()
DUE_AT: list[float] = []


def noop(*_: object) -> None:
    pass


def due_tick(*_: object) -> None:
    if not DUE.is_set():
        DUE_AT.append(time.time())
        DUE.set()
