"""Ticks missed while the process was down follow each cue's catch-up policy, and every tick that
did not run is written down with the reason."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import cueapi
import pytest

from tests.conftest import START, wait_for


def declare(app: cueapi.App) -> None:
    for policy in ("skip", "once", "all"):
        app.cue(every="1m", name=f"catch_{policy}", catch_up=policy, catch_up_max=3)(lambda ctx: None)


def ticks(app: cueapi.App, name: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for e in app.executions(name, limit=1000):
        minute = int((e.scheduled_for - START) / timedelta(minutes=1))
        out.setdefault(e.status, []).append(minute)
    return {k: sorted(v) for k, v in out.items()}


def test_policies_after_ten_minutes_down(db: Path) -> None:
    with cueapi.App(db, clock=cueapi.ManualClock(START)) as app:
        declare(app)
    # Down from 12:00 to 12:10:30: ticks at minutes 1..10 were missed.
    later = cueapi.ManualClock(START + timedelta(minutes=10, seconds=30))
    app = cueapi.App(db, clock=later, grace=0)
    declare(app)
    app.start()
    wait_for(lambda: sum(len(v) for v in ticks(app, "catch_all").values()) == 10, what="catch_all rows")
    wait_for(lambda: len(app.executions("catch_all", status="success")) == 3, what="catch_all runs")
    wait_for(lambda: len(app.executions("catch_once", status="success")) == 1, what="catch_once run")
    app.close()

    with cueapi.App(db, clock=later) as app:
        assert ticks(app, "catch_skip") == {"missed": list(range(1, 11))}
        assert ticks(app, "catch_once") == {"missed": list(range(1, 10)), "success": [10]}
        assert ticks(app, "catch_all") == {"missed": list(range(1, 8)), "success": [8, 9, 10]}
        reasons = {e.error_message for e in app.executions("catch_skip", limit=100)}
        assert reasons == {"missed: cueapi was not running at this time (catch_up=skip)"}
        (once_reason,) = {e.error_message for e in app.executions("catch_once", status="missed", limit=100)}
        assert once_reason is not None and "folded into one catch-up run" in once_reason
        (all_reason,) = {e.error_message for e in app.executions("catch_all", status="missed", limit=100)}
        assert all_reason is not None and "catch_up_max=3" in all_reason
        for name in ("catch_skip", "catch_once", "catch_all"):
            assert app.get_cue(name).next_run == START + timedelta(minutes=11)


def test_ticks_within_grace_are_on_time(db: Path) -> None:
    with cueapi.App(db, clock=cueapi.ManualClock(START)) as app:
        app.cue(every="1m", name="graceful", catch_up="skip")(lambda ctx: None)
    later = cueapi.ManualClock(START + timedelta(minutes=1, seconds=20))
    app = cueapi.App(db, clock=later, grace=30)
    app.cue(every="1m", name="graceful", catch_up="skip")(lambda ctx: None)
    app.start()
    wait_for(lambda: app.executions("graceful", status="success"), what="a late but on-time run")
    app.close()


@pytest.mark.parametrize("hours", [30])
def test_long_downtime_is_summarised_not_lost(db: Path, hours: int) -> None:
    with cueapi.App(db, clock=cueapi.ManualClock(START)) as app:
        app.cue(every="1s", name="chatty", catch_up="skip")(lambda ctx: None)
    down = hours * 3600
    later = cueapi.ManualClock(START + timedelta(seconds=down, milliseconds=500))
    app = cueapi.App(db, clock=later, grace=0)
    app.cue(every="1s", name="chatty", catch_up="skip")(lambda ctx: None)
    app.start()
    wait_for(lambda: app.get_cue("chatty").next_run == START + timedelta(seconds=down + 1), what="advance")
    rows = app.executions("chatty", limit=10_000)
    app.close()
    # 1,000 rows one by one, then one row that counts the rest: every tick is accounted for.
    assert len(rows) == 1001
    summary = [r for r in rows if "missed ticks" in (r.error_message or "")]
    assert len(summary) == 1
    assert f"stands for {down - 1000} missed ticks" in (summary[0].error_message or "")
