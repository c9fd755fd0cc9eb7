"""Reliability findings of issue 11 in the embedded App, each pinned by a test: a run waiting for
its retry is not running (later ticks go ahead under overlap=skip, after a failure or after a
crash); closing waits for the handlers it started, async ones included, and cancels rather than
destroys what outlives its timeout; a handler's exception is shown on the console."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
from datetime import timedelta
from pathlib import Path

import cueapi
import pytest

from tests.conftest import START, wait_for


def test_a_run_waiting_for_its_retry_does_not_make_later_ticks_skipped(
    app: cueapi.App, clock: cueapi.ManualClock
) -> None:
    runs: list[str] = []

    @app.cue(every="2s", retry={"max_attempts": 3, "backoff_minutes": [1]})
    def flaky(ctx: cueapi.Context) -> None:
        runs.append(ctx.execution_id)
        raise RuntimeError("upstream returned 503")

    app.start()
    for n in range(1, 6):
        clock.advance(2)
        wait_for(lambda n=n: len(set(runs)) >= n, what=f"tick {n} to run")  # type: ignore[misc]
    history = app.executions("flaky")
    assert [e.status for e in history if e.status == "skipped"] == []
    assert len({e.id for e in history if e.status == "retrying"}) == 5


def test_after_a_crash_the_tick_due_runs_beside_the_interrupted_retry(db: Path) -> None:
    clock = cueapi.ManualClock(START)
    release = threading.Event()
    started = threading.Event()
    first = cueapi.App(db, clock=clock, workers=1, grace=0)

    @first.cue(every="1m", retry={"max_attempts": 2, "backoff_minutes": [60]})
    def sync(ctx: cueapi.Context) -> None:
        started.set()
        release.wait(30)

    first.start()
    clock.advance(60)
    assert started.wait(10)
    first.close(timeout=0.1)  # the run is still going: the next open recovers it as interrupted
    try:
        clock.advance(5 * 60)
        with cueapi.App(db, clock=clock, workers=1, grace=0) as second:
            second.handle("sync")(lambda ctx: None)
            second.start()
            latest = START + timedelta(minutes=6)

            def the_latest_tick() -> cueapi.Execution | None:
                return next((e for e in second.executions("sync") if e.scheduled_for == latest), None)

            ex = wait_for(the_latest_tick, what="the tick due at the restart")
            assert ex.status != "skipped", ex.error_message
            wait_for(lambda: second.execution(ex.id).status == "success", what="it to run")
            interrupted = [
                e for e in second.executions("sync") if e.scheduled_for == START + timedelta(minutes=1)
            ]
            assert interrupted and interrupted[0].attempts >= 1 and interrupted[0].status != "skipped"
    finally:
        release.set()


CLOSE = textwrap.dedent(
    """
    import asyncio, sys
    import cueapi

    db, mode = sys.argv[1], sys.argv[2]
    app = cueapi.App(db, workers=2)

    @app.cue("0 0 1 1 *")
    async def slow(ctx):
        await asyncio.sleep(0.3 if mode == "short" else 3600)
        return "done"

    app.start()
    eid = app.fire("slow")
    while app.execution(eid).status != "delivering":  # running: claimed and handed to the loop
        pass
    app.close(timeout=5 if mode == "short" else 0.5)
    again = cueapi.App(db)
    (ex,) = again.executions("slow")
    print(ex.status, again._engine.interrupted_on_open)
    again.close()
    """
)


@pytest.mark.parametrize("mode", ["short", "hanging"])
def test_close_waits_for_async_handlers_and_never_destroys_a_pending_task(tmp_path: Path, mode: str) -> None:
    (tmp_path / "close.py").write_text(CLOSE)
    out = subprocess.run(
        [sys.executable, "close.py", str(tmp_path / "c.db"), mode],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "Task was destroyed but it is pending" not in out.stderr
    status, interrupted = out.stdout.split()
    if mode == "short":
        # A handler that ends within the close timeout is waited for: recorded, not interrupted.
        assert (status, interrupted) == ("success", "0")
    else:
        # One that outlives it is cancelled and recovered, as documented.
        assert (status, interrupted) == ("pending", "1")


def test_a_handlers_exception_is_shown_on_the_console(
    app: cueapi.App, clock: cueapi.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    @app.cue("0 0 1 1 *", retry={"max_attempts": 0})
    def broken(ctx: cueapi.Context) -> None:
        raise KeyError("customer 42")

    app.start()
    with caplog.at_level(logging.WARNING, logger="cueapi"):
        eid = app.fire("broken")
        wait_for(lambda: app.execution(eid).status == "failed", what="the failure")
    (record,) = [r for r in caplog.records if "raised KeyError" in r.getMessage()]
    assert "broken" in record.getMessage() and eid in record.getMessage()
    assert record.exc_info is not None
