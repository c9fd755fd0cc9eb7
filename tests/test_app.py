"""End-to-end behaviour of cueapi.App on a real SQLite file, with a manual clock."""

from __future__ import annotations

import asyncio
import itertools
import threading
from datetime import timedelta
from pathlib import Path

import cueapi
import pytest

from tests.conftest import START, wait_for


def executions(app: cueapi.App, cue: str | None = None, **kw: object) -> list[cueapi.Execution]:
    return app.executions(cue, limit=1000, **kw)  # type: ignore[arg-type]


def finished(app: cueapi.App, cue: str, n: int = 1) -> list[cueapi.Execution]:
    return wait_for(
        lambda: (
            [e for e in executions(app, cue) if e.status in ("success", "failed")]
            if len([e for e in executions(app, cue) if e.status in ("success", "failed")]) >= n
            else []
        ),
        what=f"{n} finished executions of {cue}",
    )


def test_success_with_evidence_is_recorded(app: cueapi.App, clock: cueapi.ManualClock) -> None:
    @app.cue("* * * * *", payload={"batch_size": 1000}, outcome_deadline=600)
    def sync_customer_data(ctx: cueapi.Context) -> cueapi.Outcome:
        n = ctx.payload["batch_size"] - 153
        return cueapi.Outcome(
            success=True,
            result=f"Synced {n} records",
            external_id="batch_1",
            result_type="data_sync",
            metadata={"records_synced": n},
        )

    app.start()
    clock.advance(60)
    (ex,) = finished(app, "sync_customer_data")
    assert ex.status == "success"
    assert ex.scheduled_for == START + timedelta(minutes=1)
    assert ex.triggered_by == "scheduled"
    assert ex.outcome is not None and ex.outcome.success
    assert ex.outcome.result == "Synced 847 records"
    assert ex.outcome.metadata == {"records_synced": 847}
    assert ex.outcome_state == "reported_success"
    assert ex.evidence is not None
    assert (ex.evidence.external_id, ex.evidence.result_type) == ("batch_1", "data_sync")
    assert ex.idempotency_key.startswith(ex.cue_id)
    assert ex.outcome_deadline_at == START + timedelta(minutes=1, seconds=600)
    assert [e.id for e in app.executions(has_evidence=True, result_type="data_sync")] == [ex.id]
    assert app.executions(has_evidence=False) == []
    assert app.executions(outcome_state="reported_failure") == []
    detail = app.execution(ex.id)
    assert detail.attempt_log is not None and [a.status for a in detail.attempt_log] == ["success"]
    cue = app.get_cue("sync_customer_data")
    assert (cue.run_count, cue.fired_count) == (1, 1)
    assert cue.next_run == START + timedelta(minutes=2)


def test_async_handler_on_the_apps_own_loop(app: cueapi.App, clock: cueapi.ManualClock) -> None:
    @app.cue(every="30s")
    async def ping(ctx: cueapi.Context) -> dict[str, object]:
        await asyncio.sleep(0)
        ctx.evidence(summary="answered", region="eu")
        return {"result": "pong", "external_id": f"p-{ctx.attempt}"}

    app.start()
    clock.advance(30)
    (ex,) = finished(app, "ping")
    assert ex.status == "success" and ex.outcome is not None
    assert ex.outcome.result == "pong"
    assert ex.outcome.metadata == {"region": "eu"}
    assert ex.evidence is not None and ex.evidence.summary == "answered"
    assert ex.evidence.external_id == "p-1"


def test_arun_runs_async_handlers_on_the_callers_loop(db: Path, clock: cueapi.ManualClock) -> None:
    app = cueapi.App(db, clock=clock, grace=0)
    seen: list[asyncio.AbstractEventLoop] = []

    @app.cue(every="10s")
    async def on_caller_loop(ctx: cueapi.Context) -> None:
        seen.append(asyncio.get_running_loop())
        app.stop()

    async def main() -> asyncio.AbstractEventLoop:
        runner = asyncio.create_task(app.arun())
        await asyncio.sleep(0)
        clock.advance(10)
        await asyncio.wait_for(runner, timeout=10)
        return asyncio.get_running_loop()

    loop = asyncio.run(main())
    assert seen == [loop]
    with cueapi.App(db) as again:
        assert [e.status for e in again.executions()] == ["success"]


def test_exception_becomes_failure_with_type_message_and_traceback(
    app: cueapi.App, clock: cueapi.ManualClock
) -> None:
    @app.cue(every="1m", retry={"max_attempts": 0})
    def broken(ctx: cueapi.Context) -> None:
        ctx.evidence(external_id="partial-1")
        raise KeyError("customer 42")

    app.start()
    clock.advance(60)
    (ex,) = finished(app, "broken")
    assert ex.status == "failed"
    assert ex.outcome is not None and not ex.outcome.success
    assert ex.outcome_state == "reported_failure"
    assert ex.outcome.error == "KeyError: 'customer 42'"
    meta = ex.outcome.metadata or {}
    assert meta["exception_type"] == "KeyError"
    assert meta["exception_message"] == "'customer 42'"
    assert 'raise KeyError("customer 42")' in meta["traceback"]
    assert ex.evidence is not None and ex.evidence.external_id == "partial-1"
    log = app.execution(ex.id).attempt_log
    assert log is not None and log[0].error_type == "KeyError"


def test_retry_ladder_follows_backoff_then_fails(app: cueapi.App, clock: cueapi.ManualClock) -> None:
    tries: list[int] = []

    @app.cue(every="1h", retry={"max_attempts": 3, "backoff_minutes": [1, 5, 15]})
    def flaky(ctx: cueapi.Context) -> cueapi.Outcome:
        tries.append(ctx.attempt)
        # A failed run (retry=True), not a verdict: the retry policy runs it again.
        return cueapi.Outcome(success=False, error=f"try {ctx.attempt} failed", retry=True)

    app.start()
    clock.advance(3600)
    due = START + timedelta(hours=1)
    for attempt, wait in ((1, 1), (2, 5), (3, 15)):
        ex = wait_for(
            lambda a=attempt: next(
                (e for e in executions(app, "flaky") if e.attempts == a and e.status == "retrying"), None
            ),
            what=f"retry after attempt {attempt}",
        )
        assert ex.next_retry == clock.now() + timedelta(minutes=wait)
        assert ex.error_message == f"try {attempt} failed"
        assert ex.outcome is None
        clock.advance(wait * 60)
    (ex,) = finished(app, "flaky")
    assert ex.status == "failed" and ex.attempts == 4 and tries == [1, 2, 3, 4]
    assert ex.scheduled_for == due
    log = app.execution(ex.id).attempt_log
    assert log is not None
    assert [a.status for a in log] == ["failed"] * 4
    gaps = [(b.started_at - a.started_at) for a, b in itertools.pairwise(log)]
    assert gaps == [timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15)]


def test_retry_then_success(app: cueapi.App, clock: cueapi.ManualClock) -> None:
    @app.cue(every="1h", retry={"max_attempts": 2, "backoff_minutes": [2]})
    def second_time_lucky(ctx: cueapi.Context) -> None:
        if ctx.attempt == 1:
            raise ConnectionError("the first try loses its connection")

    app.start()
    clock.advance(3600)
    wait_for(lambda: [e for e in executions(app) if e.status == "retrying"], what="retrying")
    clock.advance(120)
    (ex,) = finished(app, "second_time_lucky")
    assert (ex.status, ex.attempts, ex.outcome_state) == ("success", 2, "reported_success")


def test_outcome_deadline_marks_outcome_timeout(app: cueapi.App, clock: cueapi.ManualClock) -> None:
    release = threading.Event()
    started = threading.Event()

    @app.cue(every="1h", outcome_deadline=10)
    def slow(ctx: cueapi.Context) -> str:
        started.set()
        release.wait(10)
        return "late"

    app.start()
    clock.advance(3600)
    assert started.wait(10)
    clock.advance(10)
    ex = wait_for(
        lambda: next((e for e in executions(app, "slow") if e.outcome_state == "outcome_timeout"), None),
        what="outcome_timeout",
    )
    assert ex.outcome_timeout_at == START + timedelta(hours=1, seconds=10)
    assert ex.status == "delivering" and ex.outcome is None
    release.set()
    (done,) = finished(app, "slow")
    # The late report is kept as evidence, and the state still says it missed its deadline.
    assert done.outcome is not None and done.outcome.result == "late"
    assert done.outcome_state == "outcome_timeout"


def test_overlap_skip_records_the_skipped_tick(app: cueapi.App, clock: cueapi.ManualClock) -> None:
    release = threading.Event()
    started = threading.Event()

    @app.cue(every="1m")
    def long_job(ctx: cueapi.Context) -> None:
        started.set()
        release.wait(10)

    app.start()
    clock.advance(60)
    assert started.wait(10)
    clock.advance(60)
    skipped = wait_for(lambda: executions(app, "long_job", status="skipped"), what="skipped tick")
    assert skipped[0].scheduled_for == START + timedelta(minutes=2)
    assert "still running" in (skipped[0].error_message or "")
    release.set()
    finished(app, "long_job")


def test_overlap_allow_runs_concurrently(app: cueapi.App, clock: cueapi.ManualClock) -> None:
    release = threading.Event()
    running: list[int] = []

    @app.cue(every="1m", overlap="allow")
    def parallel(ctx: cueapi.Context) -> None:
        running.append(ctx.attempt)
        release.wait(10)

    app.start()
    clock.advance(60)
    wait_for(lambda: len(running) == 1, what="first run")
    clock.advance(60)
    wait_for(lambda: len(running) == 2, what="second run alongside the first")
    release.set()
    finished(app, "parallel", 2)


def test_pause_and_resume_record_the_ticks_in_between(app: cueapi.App, clock: cueapi.ManualClock) -> None:
    @app.cue(every="1m")
    def paused_job(ctx: cueapi.Context) -> None:
        return None

    app.start()
    app.pause("paused_job")
    assert app.get_cue("paused_job").status == "paused"
    clock.advance(180)
    app.resume("paused_job")
    missed = executions(app, "paused_job", status="missed")
    assert [m.scheduled_for for m in reversed(missed)] == [START + timedelta(minutes=i) for i in (1, 2, 3)]
    assert all("paused" in (m.error_message or "") for m in missed)
    assert app.get_cue("paused_job").next_run == START + timedelta(minutes=4)
    clock.advance(60)
    (ex,) = finished(app, "paused_job")
    assert ex.scheduled_for == START + timedelta(minutes=4)


def test_fire_replay_and_delete(app: cueapi.App, clock: cueapi.ManualClock) -> None:
    payloads: list[dict[str, object]] = []

    @app.cue("0 3 * * *", payload={"kind": "nightly"})
    def nightly(ctx: cueapi.Context) -> None:
        payloads.append(ctx.payload)

    app.start()
    first = app.fire("nightly", payload={"kind": "manual"})
    wait_for(lambda: app.execution(first).status == "success", what="manual fire")
    again = app.replay(first)
    wait_for(lambda: app.execution(again).status == "success", what="replay")
    assert payloads == [{"kind": "manual"}, {"kind": "manual"}]
    assert app.execution(first).triggered_by == "manual_fire"
    replayed = app.execution(again)
    assert (replayed.triggered_by, replayed.replay_of) == ("replay", first)
    assert app.get_cue("nightly").fired_count == 0  # manual runs are not schedule ticks
    app.delete("nightly")
    with pytest.raises(cueapi.CueNotFoundError):
        app.get_cue("nightly")
    with pytest.raises(cueapi.ExecutionNotFoundError):
        app.execution(first)


def test_one_shot_runs_once_and_completes(db: Path, clock: cueapi.ManualClock) -> None:
    at = START + timedelta(minutes=5)
    app = cueapi.App(db, clock=clock, grace=0)
    calls: list[str] = []

    @app.once(at=at.isoformat())
    def launch(ctx: cueapi.Context) -> None:
        calls.append(ctx.execution_id)

    app.start()
    clock.advance(300)
    finished(app, "launch")
    assert app.get_cue("launch").status == "completed"
    clock.advance(3600)
    app.close()
    # Declaring the same one-shot again after it ran is fine and does not run it again...
    again = cueapi.App(db, clock=clock, grace=0)
    again.once(at=at.isoformat())(launch)
    assert again.get_cue("launch").status == "completed"
    # ...but a new one-shot in the past is refused.
    with pytest.raises(cueapi.InvalidScheduleError, match="in the past"):
        again.once(at=START.isoformat(), name="too_late")(launch)
    again.close()
    assert len(calls) == 1


def test_naive_one_shot_is_wall_time_in_its_zone(app: cueapi.App) -> None:
    @app.once(at="2026-07-01T09:30:00", timezone="Europe/Paris")
    def paris_morning(ctx: cueapi.Context) -> None:
        return None

    assert app.get_cue("paris_morning").next_run == START.replace(month=7, day=1, hour=7, minute=30)


def test_handler_return_values(app: cueapi.App, clock: cueapi.ManualClock) -> None:
    results: dict[str, object] = {
        "none": None,
        "true": True,
        "false": False,
        "text": "did it",
        "dict": {"success": False, "error": "nope"},
        "unknown": {"sucess": True},
        "number": 42,
        "bad type": {"result": 5},
        "too long": {"summary": "x" * 501},
    }
    for name, value in results.items():
        app.cue(every="1m", name=name, retry={"max_attempts": 0})(lambda ctx, v=value: v)
    app.start()
    clock.advance(60)
    got = {n: finished(app, n)[0] for n in results}
    assert {n: e.status for n, e in got.items()} == {
        "none": "success",
        "true": "success",
        "false": "failed",
        "text": "success",
        "dict": "failed",
        "unknown": "failed",
        "number": "failed",
        "bad type": "failed",
        "too long": "failed",
    }
    assert got["text"].outcome is not None and got["text"].outcome.result == "did it"
    assert "unknown keys ['sucess']" in (got["unknown"].error_message or "")
    assert "int" in (got["number"].error_message or "")
    assert "outcome was rejected: outcome: result: invalid type" in (got["bad type"].error_message or "")
    assert "rejected: invalid summary: is longer than 500" in (got["too long"].error_message or "")


def test_redeclaring_updates_the_cue_in_place(db: Path, clock: cueapi.ManualClock) -> None:
    def job(ctx: cueapi.Context) -> None:
        return None

    with cueapi.App(db, clock=clock) as app:
        app.cue("0 * * * *")(job)
        first = app.get_cue("job")
    with cueapi.App(db, clock=clock) as app:
        app.cue("0 * * * *")(job)
        assert app.get_cue("job").updated_at == first.updated_at  # unchanged: untouched
        app.cue("30 * * * *", timezone="Asia/Tokyo", payload={"v": 2})(job)
        (cue,) = app.cues()
    assert cue.id == first.id
    assert (cue.cron, cue.timezone, cue.payload) == ("30 * * * *", "Asia/Tokyo", {"v": 2})
    assert cue.next_run == START + timedelta(minutes=30)


def test_no_handler_in_this_process_is_recorded(
    db: Path, clock: cueapi.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    with cueapi.App(db, clock=clock) as app:
        app.cue(every="1m", retry={"max_attempts": 0})(lambda ctx: None)  # named "<lambda>"
    app = cueapi.App(db, clock=clock, grace=0)
    with caplog.at_level("WARNING", logger="cueapi"):
        app.start()
    assert "'<lambda>' have no handler in this program" in caplog.text
    clock.advance(60)
    (ex,) = finished(app, "<lambda>")
    assert ex.status == "failed" and "no handler" in (ex.error_message or "")
    app.close()


def test_stats(app: cueapi.App, clock: cueapi.ManualClock) -> None:
    @app.cue(every="1m", retry={"max_attempts": 0})
    def half(ctx: cueapi.Context) -> bool:
        return ctx.scheduled_for.minute % 2 == 0

    app.start()
    for n in range(1, 5):
        clock.advance(60)
        finished(app, "half", n)
    s = app.stats("half", days=1)
    assert s.total == 4 and s.counts == {"success": 2, "failed": 2}
    assert s.success_rate == 0.5
    assert s.duration_ms_p50 == 0 and s.duration_ms_p95 == 0  # the manual clock does not move during a run


def test_second_app_on_the_same_file_is_refused(app: cueapi.App, db: Path) -> None:
    with pytest.raises(cueapi.DatabaseLockedError):
        cueapi.App(db)


def test_newer_schema_is_refused(db: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {cueapi.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(cueapi.SchemaVersionError):
        cueapi.App(db)


def test_closed_app_refuses_work(db: Path) -> None:
    app = cueapi.App(db)
    app.close()
    app.close()  # idempotent
    with pytest.raises(cueapi.EngineClosedError):
        app.start()


def test_one_shot_paused_past_its_time_is_recorded_missed_and_failed(
    app: cueapi.App, clock: cueapi.ManualClock
) -> None:
    @app.once(at=START + timedelta(minutes=1))
    def once_paused(ctx: cueapi.Context) -> None:
        return None

    app.start()
    app.pause("once_paused")
    clock.advance(120)
    app.resume("once_paused")
    (ex,) = executions(app, "once_paused")
    assert (ex.status, ex.error_message) == ("missed", "missed: the cue was paused")
    cue = app.get_cue("once_paused")
    assert (cue.status, cue.next_run) == ("failed", None)


def test_close_from_a_handler_is_refused_and_stop_works(app: cueapi.App, clock: cueapi.ManualClock) -> None:
    errors: list[str] = []

    @app.cue(every="1m")
    def closer(ctx: cueapi.Context) -> None:
        try:
            app.close()
        except cueapi.CueAPIError as exc:
            errors.append(str(exc))
        app.stop()

    app.start()
    clock.advance(60)
    wait_for(lambda: errors, what="close() refused inside a handler")
    assert "call app.stop() there instead" in errors[0]


def test_engine_problems_reach_python_logging(
    db: Path, clock: cueapi.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    import sqlite3

    with cueapi.App(db, clock=clock) as app:
        app.cue("* * * * *", name="broken_row")(lambda ctx: None)
    # Damage the stored row while no App has the file open (a second SQLite in the same process
    # must not touch a database an App holds).
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE cues SET schedule_cron = '61 * * * *' WHERE name = 'broken_row'")
    conn.close()
    app = cueapi.App(db, clock=clock, grace=0)
    with caplog.at_level("ERROR", logger="cueapi"):
        app.start()
        clock.advance(60)
        wait_for(lambda: "retrying in 1 s" in caplog.text, what="the engine's problem in the log")
        app.close()
    assert "cueapi engine: Cue cue_" in caplog.text and "invalid cron expression" in caplog.text


def test_bulk_created_cues_run_with_a_handler_registered_by_name(
    app: cueapi.App, clock: cueapi.ManualClock
) -> None:
    names = [f"bulk_{i}" for i in range(50)]
    at = (START + timedelta(minutes=1)).isoformat()
    app.create_cues([{"name": n, "at": at, "payload": {"i": i}} for i, n in enumerate(names)])
    seen: list[int] = []
    app.handle(*names)(lambda ctx: seen.append(ctx.payload["i"]))
    app.start()
    clock.advance(60)
    wait_for(lambda: len(app.executions(status="success", limit=100)) == 50, what="50 bulk runs")
    assert sorted(seen) == list(range(50))
    with pytest.raises(cueapi.ValidationError):
        app.handle()
