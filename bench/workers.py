"""One measurement of one system, in a process of its own.

    python bench/workers.py PART SYSTEM PARAMS_JSON

PART is ``precision``, ``throughput``, ``scale-create`` or ``scale-start``; SYSTEM is ``cueapi``,
``aps-memory`` or ``aps-sqlalchemy``. The last line on stdout is ``RESULT <json>``. Every wait is
bounded; the process ends with ``os._exit`` so that no scheduler thread can keep it alive.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import bench_jobs
import psutil

UTC = timezone.utc
SYSTEMS = ("cueapi", "aps-memory", "aps-sqlalchemy")


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def iso(ts: float) -> str:
    """An ISO-8601 instant with its offset (+00:00), millisecond precision."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def sleep_until(ts: float) -> None:
    while (left := ts - time.time()) > 0:
        time.sleep(min(left, 0.5))


def memory() -> dict[str, float]:
    rss = psutil.Process().memory_info().rss
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rss_mb": rss / 2**20, "peak_rss_mb": peak_kib / 1024}


def idle_cpu(seconds: float) -> dict[str, float]:
    """CPU seconds this process uses (all threads, user + system) over ``seconds`` of wall time."""
    proc = psutil.Process()
    before, t0 = proc.cpu_times(), time.monotonic()
    time.sleep(seconds)
    after, wall = proc.cpu_times(), time.monotonic() - t0
    cpu = (after.user - before.user) + (after.system - before.system)
    return {"idle_wall_s": wall, "idle_cpu_s": cpu, "idle_cpu_pct": 100 * cpu / wall}


def percentiles(values: list[float]) -> dict[str, float]:
    """p50 / p99 (nearest rank) and max, in milliseconds."""
    xs = sorted(values)
    if not xs:
        return {}

    def rank(p: float) -> float:
        return xs[max(0, math.ceil(p * len(xs)) - 1)] * 1000

    return {
        "p50_ms": rank(0.50),
        "p99_ms": rank(0.99),
        "max_ms": xs[-1] * 1000,
        "mean_ms": 1000 * sum(xs) / len(xs),
    }


# -- cueapi -----------------------------------------------------------------------------------------


def cueapi_app(db: str, workers: int, **kw: Any) -> Any:
    import cueapi

    return cueapi.App(db, workers=workers, **kw)


def any_name_handlers(app: Any, default: Callable[..., Any], named: dict[str, Callable[..., Any]]) -> None:
    """BENCH SHIM: uses private members of cueapi.App (``_handlers``, ``_Registered``).

    cueapi has no public way to give one handler to many cues created with ``create_cues``: the
    decorators register a handler *and* upsert its cue (one store round trip per cue), and handlers
    are found by cue name at run time in ``App._handlers``. This shim makes that lookup answer
    ``default`` for every name not in ``named``. ``App.start`` checks stored cues against the
    registered names only, so its one "cue(s) have no handler" warning is dropped here. The engine
    itself is untouched.
    """
    from cueapi.app import _Registered

    class AnyName(dict):  # type: ignore[type-arg]
        def __missing__(self, key: str) -> Any:
            return _Registered(key, default, False)

        def get(self, key: str, fallback: Any = None) -> Any:
            return self[key]

    table = AnyName()
    for name, func in named.items():
        table[name] = _Registered(name, func, False)
    app._handlers = table
    logging.getLogger("cueapi").addFilter(
        lambda rec: "have no handler in this program" not in rec.getMessage()
    )


def poll_success(system: str, p: dict[str, Any]) -> None:
    """Run as a process of its own: once told "go" on stdin, counts the executions recorded as
    success every 5 ms until there are ``n``; prints the count and when it was seen.

    Never read a cueapi database with Python's ``sqlite3`` inside the process that runs the engine:
    that is a second SQLite library on the same file, and POSIX locks do not conflict within one
    process, so it takes itself for the only connection and truncates the ``-shm`` file the engine
    has mapped (SIGBUS). A reader in another process is safe.
    """
    conn = sqlite3.connect(f"file:{p['db']}?mode=ro", uri=True, timeout=5)
    sys.stdin.readline()
    deadline = time.time() + p["timeout"]
    query = "SELECT count(*) FROM executions WHERE status = 'success'"
    while True:
        count = int(conn.execute(query).fetchone()[0])
        if count >= p["n"] or time.time() > deadline:
            break
        time.sleep(0.005)
    emit({"count": count, "at": time.time()})


def statuses(db: str) -> dict[str, int]:
    """Executions by status; only once the App is closed (see poll_success)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return dict(conn.execute("SELECT status, count(*) FROM executions GROUP BY status").fetchall())
    finally:
        conn.close()


# -- APScheduler ------------------------------------------------------------------------------------


def aps_scheduler(system: str, db: str, workers: int, **job_defaults: Any) -> Any:
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler

    store: Any
    if system == "aps-memory":
        from apscheduler.jobstores.memory import MemoryJobStore

        store = MemoryJobStore()
    else:
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

        store = SQLAlchemyJobStore(url=f"sqlite:///{db}")
    return BackgroundScheduler(
        jobstores={"default": store},
        executors={"default": ThreadPoolExecutor(workers)},
        job_defaults=job_defaults,
        timezone=UTC,
    )


def aps_shutdown(sched: Any) -> None:
    try:
        sched.shutdown(wait=False)
    except Exception as exc:  # a benchmark reports; it does not die on the peer's shutdown
        print(f"shutdown: {exc!r}", file=sys.stderr)


# -- 1. fire precision --------------------------------------------------------------------------------


def precision(system: str, p: dict[str, Any]) -> None:
    """``burst``: every job on an every-second cron, so they all come due at the same instant.
    ``spread``: every job on a 1 s interval, started at its own sub-second offset (1 s / jobs apart),
    so no two come due together."""
    jobs, seconds, warmup, workers, spread = p["jobs"], p["seconds"], p["warmup"], p["workers"], p["spread"]
    samples: list[tuple[float, float]] = []  # (handler start, scheduled instant)
    app = sched = None
    base = math.floor(time.time()) + 1.0  # spread: job i is due at base + i * gap (+ whole seconds)
    gap = 1.0 / jobs
    if system == "cueapi":

        def tick(ctx: Any) -> None:
            samples.append((time.time(), ctx.scheduled_for.timestamp()))

        app = cueapi_app(p["db"], workers)
        for i in range(jobs):
            if spread:  # an interval's first tick is one interval after the cue is declared
                sleep_until(base + i * gap)
                app.cue(every="1s", name=f"p{i}")(tick)
            else:
                app.cue("* * * * * *", name=f"p{i}")(tick)
        app.start()
    else:
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        defaults = {"misfire_grace_time": 60, "coalesce": False, "max_instances": 1}
        sched = aps_scheduler(system, p["db"], workers, **defaults)
        for i in range(jobs):
            if spread:
                start = datetime.fromtimestamp(base + 1 + i * gap, UTC)
                trigger = IntervalTrigger(seconds=1, start_date=start, timezone=UTC)
                sched.add_job(bench_jobs.precision_tick_job, trigger, args=[i], id=f"p{i}")
            else:
                trigger = CronTrigger(second="*", timezone=UTC)
                sched.add_job(bench_jobs.precision_tick, trigger, id=f"p{i}")
        sched.start()
    # Measured: runs scheduled in [first, last + 1); the run goes on 1.2 s past that so that a late run
    # is still seen (a run that does not come is reported as missing, not silently dropped).
    first = math.floor(time.time()) + 1 + warmup
    last = first + seconds - 1
    sleep_until(last + 2.2)
    if app is not None:
        app.close()
    else:
        aps_shutdown(sched)
        # APScheduler does not tell a job its scheduled instant; it is the latest due instant of that job
        # at or before the start (assumes lag < 1 s: a later run would show as a missing one).
        if spread:
            for i, t in bench_jobs.PRECISION_STARTS_BY_JOB:
                offset = (base + i * gap) % 1.0
                samples.append((t, math.floor(t - offset) + offset))
        else:
            samples = [(t, float(math.floor(t))) for t in bench_jobs.PRECISION_STARTS]
    lags = [t - s for t, s in samples if first <= s < last + 1]
    expected = jobs * seconds
    out: dict[str, Any] = {"runs": len(lags), "expected_runs": expected, "missing_runs": expected - len(lags)}
    out.update(percentiles(lags))
    if system == "cueapi":
        out["statuses"] = statuses(p["db"])
    emit(out)


# -- 2. throughput -----------------------------------------------------------------------------------


def _burst_cueapi(db: str, n: int, at: float, chunk: int, workers: int) -> tuple[Any, float]:
    app = cueapi_app(db, workers)
    t0 = time.time()
    when = iso(at)
    for lo in range(0, n, chunk):
        app.create_cues([{"name": f"n{i}", "at": when} for i in range(lo, min(n, lo + chunk))])
    app.handle(*(f"n{i}" for i in range(n)))(bench_jobs.burst_noop)
    return app, time.time() - t0


def _burst_aps(system: str, db: str, n: int, at: float, workers: int) -> tuple[Any, float]:
    from apscheduler.triggers.date import DateTrigger

    # misfire_grace_time=None: run however late (APScheduler's default, 1 s, would drop late runs).
    sched = aps_scheduler(system, db, workers, misfire_grace_time=None, coalesce=False, max_instances=1)
    run_date = datetime.fromtimestamp(at, UTC)
    t0 = time.time()
    for i in range(n):
        sched.add_job(bench_jobs.burst_noop, DateTrigger(run_date=run_date), id=f"n{i}")
    sched.start(paused=True)  # stores the jobs added before start
    return sched, time.time() - t0


def throughput(system: str, p: dict[str, Any]) -> None:
    n, workers, chunk, timeout = p["n"], p["workers"], p["chunk"], p["timeout"]
    # Pilot on a throwaway database: how long does adding the burst take, so that it is due after.
    pilot_n = max(200, n // 50)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(p["db"])) as tmp:
        far = time.time() + 86400
        if system == "cueapi":
            pilot, took = _burst_cueapi(os.path.join(tmp, "pilot.db"), pilot_n, far, chunk, workers)
            pilot.close()
        else:
            pilot, took = _burst_aps(system, os.path.join(tmp, "pilot.db"), pilot_n, far, workers)
            aps_shutdown(pilot)
    estimate = took * n / pilot_n
    due = math.ceil(time.time() + 3 + 1.3 * estimate)
    bench_jobs.burst_setup(n)
    app = sched = None
    if system == "cueapi":
        app, add_s = _burst_cueapi(p["db"], n, due, chunk, workers)
        app.start()
    else:
        sched, add_s = _burst_aps(system, p["db"], n, due, workers)
        sched.resume()
    ready_at = time.time()
    out: dict[str, Any] = {"n": n, "add_s": add_s, "add_estimate_s": estimate, "due_lead_s": due - ready_at}
    if ready_at >= due:
        out["error"] = "adding the burst overran its due instant"
    if system == "cueapi":
        poll = {"db": p["db"], "n": n, "timeout": timeout}
        cmd = [sys.executable, __file__, "poll-success", system, json.dumps(poll)]
        poller = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sleep_until(due)
    handlers_done = bench_jobs.BURST_DONE.wait(timeout)
    t_handlers = bench_jobs.BURST_DONE_AT[0] if handlers_done else time.time()
    out["handlers_done"] = bench_jobs.burst_completed()
    out["handlers_s"] = t_handlers - due
    if system == "cueapi":
        # Recorded = committed as success in the database, seen by a reader in another process (a second
        # SQLite library in this process would break the engine's locks on the same file: see poll_success).
        poller.stdin.write("go\n")
        poller.stdin.flush()
        try:
            polled, _ = poller.communicate(timeout=timeout + 30)
            seen = json.loads(polled.splitlines()[-1][len("RESULT ") :])
        except (subprocess.TimeoutExpired, IndexError, ValueError) as exc:
            poller.kill()
            seen = {"count": 0, "at": time.time(), "error": repr(exc)}
        out["recorded"] = seen["count"]
        out["recorded_s"] = seen["at"] - due
        out["per_s"] = seen["count"] / out["recorded_s"]
        out["handlers_per_s"] = out["handlers_done"] / out["handlers_s"]
        app.close()
        out["statuses"] = statuses(p["db"])
    else:
        out["recorded"] = None  # APScheduler records no outcome
        out["per_s"] = out["handlers_done"] / out["handlers_s"]
        out["handlers_per_s"] = out["per_s"]
    out["complete"] = out["handlers_done"] == n and (system != "cueapi" or out["recorded"] == n)
    out.update(memory())
    emit(out)


# -- 3. scale ----------------------------------------------------------------------------------------


def scale_slots(n: int, hours: list[int]) -> Iterator[tuple[int, int, int]]:
    """(i, hour, minute) for n daily jobs spread evenly over the allowed hours' minutes, in time
    order (so that APScheduler's memory store appends rather than inserts into its sorted list)."""
    slots = [(h, m) for h in sorted(hours) for m in range(60)]
    for i in range(n):
        h, m = slots[i * len(slots) // n]
        yield i, h, m


def scale_create(system: str, p: dict[str, Any]) -> None:
    n, chunk, hours, workers = p["n"], p["chunk"], p["hours"], p["workers"]
    out: dict[str, Any] = {"n": n}
    if system == "cueapi":
        app = cueapi_app(p["db"], workers)
        t0 = time.time()
        batch: list[dict[str, Any]] = []
        for i, h, m in scale_slots(n, hours):
            batch.append({"name": f"s{i:07d}", "cron": f"{m} {h} * * *"})
            if len(batch) == chunk:
                app.create_cues(batch)
                batch = []
        if batch:
            app.create_cues(batch)
        out["add_s"] = time.time() - t0
        due = time.time() + 1.5
        app.create_cues([{"name": "due", "at": iso(due)}])
        t1 = time.time()
        app.close()
        out["close_s"] = time.time() - t1
    elif system == "aps-sqlalchemy":
        sched = aps_scheduler(system, p["db"], workers)
        t0 = time.time()
        for i, h, m in scale_slots(n, hours):
            sched.add_job(bench_jobs.noop, "cron", hour=h, minute=m, id=f"s{i:07d}")
        sched.start(paused=True)  # stores the jobs added before start, one transaction each
        out["add_s"] = time.time() - t0
        due = time.time() + 1.5
        sched.add_job(
            bench_jobs.due_tick,
            "date",
            run_date=datetime.fromtimestamp(due, UTC),
            id="due",
            misfire_grace_time=None,
        )
        aps_shutdown(sched)
    else:
        raise SystemExit("aps-memory keeps nothing between processes: use scale-start alone")
    out["due_at"] = due
    out["db_mb"] = (
        sum(os.path.getsize(p["db"] + s) for s in ("", "-wal", "-shm") if os.path.exists(p["db"] + s)) / 2**20
    )
    out.update(memory())
    out["rate_per_s"] = n / out["add_s"]
    emit(out)


def scale_start(system: str, p: dict[str, Any]) -> None:
    workers, timeout = p["workers"], p["timeout"]
    out: dict[str, Any] = {}
    t0 = time.time()
    app = sched = None
    if system == "cueapi":
        app = cueapi_app(p["db"], workers, grace=3600)
        out["open_s"] = time.time() - t0
        any_name_handlers(app, bench_jobs.noop, {"due": bench_jobs.due_tick})
        t1 = time.time()
        app.start()
        out["start_call_s"] = time.time() - t1
    elif system == "aps-sqlalchemy":
        sched = aps_scheduler(system, p["db"], workers)
        out["open_s"] = time.time() - t0
        t1 = time.time()
        sched.start()
        out["start_call_s"] = time.time() - t1
    else:
        # No persistence: a restart re-adds every job, so that is part of the start.
        n, hours = p["n"], p["hours"]
        sched = aps_scheduler(system, "", workers)
        for i, h, m in scale_slots(n, hours):
            sched.add_job(bench_jobs.noop, "cron", hour=h, minute=m, id=f"s{i:07d}")
        sched.add_job(
            bench_jobs.due_tick,
            "date",
            run_date=datetime.fromtimestamp(t0, UTC),
            id="due",
            misfire_grace_time=None,
        )
        out["n"] = n
        out["open_s"] = time.time() - t0
        t1 = time.time()
        sched.start()
        out["start_call_s"] = time.time() - t1
        out["add_s"] = time.time() - t0
        out["rate_per_s"] = n / out["add_s"]
    if bench_jobs.DUE.wait(timeout):
        out["first_tick_s"] = bench_jobs.DUE_AT[0] - t0
    else:
        out["error"] = f"the due job did not run within {timeout} s"
    out["after_start"] = memory()
    time.sleep(p["settle"])
    out.update(idle_cpu(p["idle"]))
    out.update(memory())
    out["threads"] = psutil.Process().num_threads()
    t2 = time.time()
    if app is not None:
        app.close()
    else:
        aps_shutdown(sched)
    out["close_s"] = time.time() - t2
    emit(out)


PARTS: dict[str, Callable[[str, dict[str, Any]], None]] = {
    "precision": precision,
    "throughput": throughput,
    "scale-create": scale_create,
    "scale-start": scale_start,
    "poll-success": poll_success,
}

if __name__ == "__main__":
    part, system, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    if part not in PARTS or system not in SYSTEMS:
        raise SystemExit(__doc__)
    PARTS[part](system, params)
