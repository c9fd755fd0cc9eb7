"""An embedded ``cueapi.App`` killed with SIGKILL again and again while its cues come due.

The App runs in a child process (child.py) on a SQLite file, with 1,000 cues — one-shot ``at``
times and crons with seconds and a year — due within a 12-second window, and 30 intervals due
every 1 to 3 seconds from their creation to the end; one handler for all of them appends every
step of every run to a side-effects file (fsynced) and sometimes raises (so retries are pending).
The child is killed at seeded random points: at a random instant (firing), in the middle of a
handler (running), right after a handler finished and before its outcome is recorded
(committing), and while a retry runs (retrying); each time it stays down up to 2.5 s — longer than
its 1 s grace, so the catch-up policies decide the ticks due meanwhile — and starts again on the
same file. Once everything is settled: exactly one execution for every due occurrence, each a
success whose last attempt ran to its end, or recorded with its reason (the overlap or catch-up
policy of its cue named); every run the side effects show belongs to a recorded attempt, with the
execution's id and idempotency key; a run cut off by a kill is recorded as interrupted, with its
reason, and run again; the intervals fired to the end and nothing was left running."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import location
from tests.crash.harness import (
    SEED,
    Child,
    Ledger,
    PlannedCue,
    Runs,
    Stored,
    effects,
    n,
    now_ms,
    plan_cues,
    plan_every,
    poll,
    report,
    resolve_every,
    scalar,
    settled,
    trial_rng,
)

# Every trial runs on SQLite and on PostgreSQL.
STORES = ("sqlite", "postgres")

CHILD = Path(__file__).with_name("child.py")
CUES_ONCE = 600
CUES_CRON = 400
CUES_EVERY = 30  # intervals: due from their creation until the end
WINDOW_S = 12.0
RETRY = {"max_attempts": 3, "backoff_minutes": [0.02]}  # retried 1.2 s after a failed run
RAISE_RATE = 0.08
KINDS = ("firing", "start", "done", "retry")
LABEL = {"start": "running", "done": "committing", "retry": "retrying"}
BOUNDED = "schedule_type != 'interval'"  # the cues that end (intervals run until the App stops)
# How late a tick may run before its catch-up policy decides. The App stays down up to 2.5 s
# after a kill: the ticks due meanwhile are missed, folded into one run or all run, by policy.
GRACE_S = 1.0


def declared(plan: list[PlannedCue]) -> list[dict[str, Any]]:
    """The App's declarations of the planned cues (``create_cues``)."""
    return [
        {
            "name": c.name,
            "cron": c.cron,
            "at": c.at,
            "every": None if c.every_s is None else f"{c.every_s}s",
            "timezone": c.timezone,
            "retry": RETRY,
            "catch_up": c.catch_up,
            "overlap": c.overlap,
        }
        for c in plan
    ]


@pytest.mark.parametrize("trial", [1])
def test_embedded_app_killed_mid_burst(tmp_path: Path, store: str, trial: int) -> None:
    # The cues from one stream, the kills from another: where the window falls in a minute changes
    # how much randomness planning the crons takes, not the kills.
    cues_rng, rng = trial_rng("app", trial), trial_rng("app-kills", trial)
    db = location(tmp_path / "app.db")
    out = tmp_path / "effects.jsonl"
    t0 = now_ms() + 3_000 + 2 * (CUES_ONCE + CUES_CRON)
    plan = plan_cues(cues_rng, f"a{trial}", t0, WINDOW_S, CUES_ONCE, CUES_CRON)
    plan += plan_every(cues_rng, f"a{trial}", CUES_EVERY)
    specs = declared(plan)
    kinds = list(KINDS) + rng.sample(KINDS, rng.randint(0, 1))
    rng.shuffle(kinds)
    dies: list[dict[str, Any] | None] = []
    for kind in kinds:
        if kind == "firing":
            dies.append(None)
        else:
            dies.append({"at": kind, "n": 1 if kind == "retry" else rng.randint(1, 120)})
    dies.append(None)  # the last one runs to the end

    def command(i: int) -> list[str]:
        config = tmp_path / f"child-{i}.json"
        config.write_text(
            json.dumps(
                {
                    "db": str(db),
                    "names": [c.name for c in plan],
                    "specs": specs,
                    "effects": str(out),
                    "seed": f"{SEED}:{trial}:{i}",
                    "raise_rate": RAISE_RATE,
                    "grace": GRACE_S,
                    "die": dies[i],
                }
            )
        )
        return [sys.executable, str(CHILD), str(config)]

    app = Child("app", tmp_path, command)
    kills: list[str] = []
    try:
        app.start()
        poll(lambda: scalar(db, "SELECT count(*) FROM cues") == len(plan), 60, "declared cues", every=0.05)
        assert now_ms() < t0 - 200, f"seed={SEED}: declaring {len(plan)} cues took too long"
        poll(lambda: now_ms() >= t0, 30, "window", every=0.01)
        for kind in kinds:
            if kind == "firing":
                kills.append(app.kill_at_random(rng, kind))
            else:
                kills.append(app.await_death(LABEL[kind]))  # the child kills itself
            app.restart_after_kill(downtime=rng.uniform(0.0, 2.5))
        expected = sum(len(c.instants) for c in plan)
        try:
            poll(lambda: settled(db, expected, BOUNDED), 60, "settling of every occurrence", every=0.2)
        finally:
            asked = now_ms()
            code = app.stop()
            stopping = (asked, now_ms())
        assert code == 0, f"seed={SEED}: SIGTERM ended the App with {code}:\n{app.tail()}"
    finally:
        app.close()

    stored = Stored.read(db)
    plan = resolve_every(plan, stored, stopping)
    ledger = Ledger.check(plan, stored)
    runs = Runs.check(stored, effects(out))
    report(
        f"crash/app on {store} trial {trial} seed={SEED}: {n(len(plan))} cues, "
        f"{n(ledger.occurrences)} occurrences, "
        f"{n(ledger.executions)} executions ({ledger.statuses()}), {n(runs.starts)} handler runs, "
        f"{len(kills)} kills ({', '.join(kills)}), {n(runs.interrupted)} interrupted attempts, "
        f"{n(runs.repeats)} repeats (same id+key; {runs.rerun_after_done} after the work was done), "
        f"{ledger.faults()}, {len(runs.problems)} run problems"
    )
    ledger.assert_exact(f"app trial {trial}")
    assert not runs.problems, f"seed={SEED}: {len(runs.problems)} problems: {runs.problems[:10]}"
    assert runs.interrupted > 0 and runs.repeats > 0, (kills, runs)


@pytest.mark.stores("postgres")
def test_two_copies_of_an_app_on_postgres_run_each_tick_once_and_one_takes_over(
    tmp_path: Path, store: str
) -> None:
    """Two copies of the same decorated program on one PostgreSQL database share the ticks; one is
    killed in the middle of a handler and the survivor takes over its cues and its cut-off run."""
    cues_rng, rng = trial_rng("apps", 1), trial_rng("apps-kills", 1)
    db = location(tmp_path / "apps.db")
    out = tmp_path / "effects.jsonl"
    t0 = now_ms() + 4_000 + 3 * (CUES_ONCE + CUES_CRON)
    plan = plan_cues(cues_rng, "two", t0, WINDOW_S, CUES_ONCE, CUES_CRON)
    plan += plan_every(cues_rng, "two", CUES_EVERY)
    specs = declared(plan)

    def command(copy: str, die: dict[str, Any] | None) -> Any:
        def made(i: int) -> list[str]:
            config = tmp_path / f"{copy}-{i}.json"
            settings: dict[str, Any] = {
                "db": str(db),
                "names": [c.name for c in plan],
                "effects": str(out),
                "seed": f"{SEED}:{copy}:{i}",
                "raise_rate": RAISE_RATE,
                # Longer than a takeover (the 3 s node lease and a beat): every tick still runs.
                "grace": 10.0,
                "die": die,
            }
            if copy == "a":
                settings["specs"] = specs  # one copy declares the cues, as a deploy step would
            config.write_text(json.dumps(settings))
            return [sys.executable, str(CHILD), str(config)]

        return made

    kill_at = {"at": "start", "n": rng.randint(60, 200)}
    a = Child("app-a", tmp_path, command("a", kill_at))
    b = Child("app-b", tmp_path, command("b", None))
    try:
        a.start()
        poll(lambda: scalar(db, "SELECT count(*) FROM cues") == len(plan), 60, "declared cues", every=0.05)
        b.start()
        assert now_ms() < t0 - 200, f"seed={SEED}: declaring {len(plan)} cues took too long"
        poll(lambda: now_ms() >= t0, 30, "window", every=0.01)
        killed = a.await_death("copy a killed in the middle of a handler", seconds=WINDOW_S)
        a.reap_killed()
        expected = sum(len(c.instants) for c in plan)
        try:
            poll(lambda: settled(db, expected, BOUNDED), 90, "settling of every occurrence", every=0.2)
        finally:
            asked = now_ms()
            code = b.stop()
            stopping = (asked, now_ms())
        assert code == 0, f"seed={SEED}: SIGTERM ended copy b with {code}:\n{b.tail()}"
    finally:
        a.close()
        b.close()

    stored = Stored.read(db)
    plan = resolve_every(plan, stored, stopping)
    ledger = Ledger.check(plan, stored)
    found = effects(out)
    runs = Runs.check(stored, found)
    by_copy: dict[str, int] = {}
    for e in found:
        if e.event == "start":
            by_copy[e.worker] = by_copy.get(e.worker, 0) + 1
    report(
        f"crash/app, two copies on postgres, seed={SEED}: {n(len(plan))} cues, "
        f"{n(ledger.occurrences)} occurrences, {n(ledger.executions)} executions ({ledger.statuses()}), "
        f"{n(runs.starts)} handler runs ({', '.join(f'{n(v)} by one copy' for v in by_copy.values())}), "
        f"{killed}, {n(runs.interrupted)} interrupted attempts, {n(runs.repeats)} repeats (same id+key), "
        f"{ledger.faults()}, {len(runs.problems)} run problems"
    )
    ledger.assert_exact("two copies")
    assert not runs.problems, f"seed={SEED}: {len(runs.problems)} problems: {runs.problems[:10]}"
    assert len(by_copy) == 2, f"both copies ran handlers: {by_copy}"
    assert runs.interrupted > 0, "the copy killed mid-handler left no run to take over"
