"""Pull workers killed with SIGKILL while they hold claims.

``cueapi serve`` (with a 3-second lease and worker timeout) holds 600 worker cues — one-shot ``at``
times and crons with seconds and a year — due within a 12-second window. Two worker processes
(child.py: an App in remote mode, whose one handler runs every cue and appends each step of each
run to a side-effects file, fsynced, and sometimes raises) claim and run them. Each is killed at
seeded random points — at a random instant, in the middle of a handler, right after a handler
finished and before its outcome is reported, while a retry runs — and started again under a new
worker id; the server is killed once too, and comes back on its port after up to 1.5 s. The
claims of a killed worker must come back once its lease ran out and it stayed silent, be recorded
as abandoned and be claimed again; in the end every due occurrence has exactly one execution with
exactly one outcome, no claim of a live worker was taken back (but those the killed server
committed and never answered), and no execution was completed twice."""

from __future__ import annotations

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import cueapi
import httpx
import pytest

from tests.conftest import location, wait_for
from tests.crash.harness import (
    API_CATCH_UP,
    SEED,
    Child,
    Ledger,
    PlannedCue,
    Runs,
    Serve,
    Stored,
    effects,
    n,
    now_ms,
    plan_cues,
    poll,
    report,
    settled,
    trial_rng,
)

# Every test here runs on SQLite and on PostgreSQL.
STORES = ("sqlite", "postgres")

CHILD = Path(__file__).with_name("child.py")
CUES_ONCE = 400
CUES_CRON = 200
WINDOW_S = 12.0
LEASE_S = 3
RETRY = {"max_attempts": 5, "backoff_minutes": [0.02]}
RAISE_RATE = 0.05
KINDS = ("firing", "start", "done", "retry")
LABEL = {"start": "running", "done": "committing", "retry": "retrying"}


def create(url: str, key: str, plan: list[PlannedCue]) -> None:
    def some(part: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
            for cue in plan[part::4]:
                body = {
                    "name": cue.name,
                    "schedule": cue.schedule(),
                    "transport": "worker",
                    "retry": RETRY,
                    "catch_up": API_CATCH_UP[cue.catch_up],
                    "overlap": cue.overlap,
                }
                r = c.post("/v1/cues", json=body)
                assert r.status_code == 201, (body, r.text)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(some, range(4)))


def test_pull_workers_killed_while_holding_claims(tmp_path: Path, store: str) -> None:
    # The cues from one stream, the kills from another: where the window falls in a minute changes
    # how much randomness planning the crons takes, not the kills.
    cues_rng, rng = trial_rng("workers", 1), trial_rng("workers-kills", 1)
    db = location(tmp_path / "workers.db")
    out = tmp_path / "effects.jsonl"
    lease = str(LEASE_S)
    server = Serve(db, tmp_path, "--worker-lease", lease, "--worker-timeout", lease, same_port=True)
    workers: dict[str, Child] = {}
    killed: set[str] = set()  # worker ids
    server_kills: list[int] = []  # when (ms)
    try:
        url = server.listen()
        with httpx.Client(timeout=30) as c:
            key = c.post(f"{url}/v1/auth/register", json={"email": "crash@example.com"}).json()["api_key"]
        t0 = now_ms() + 3_000 + 2 * (CUES_ONCE + CUES_CRON)
        plan = plan_cues(cues_rng, "w", t0, WINDOW_S, CUES_ONCE, CUES_CRON)
        create(url, key, plan)
        assert now_ms() < t0 - 200, f"seed={SEED}: creating {len(plan)} cues took too long"

        # Each worker process is killed two or three times, then runs to the end.
        plans: dict[str, list[str]] = {}
        dies: dict[str, list[dict[str, Any] | None]] = {}
        for slot in ("a", "b"):
            plans[slot] = rng.sample(KINDS, rng.randint(2, 3))
            dies[slot] = [
                None if k == "firing" else {"at": k, "n": 1 if k == "retry" else rng.randint(1, 60)}
                for k in plans[slot]
            ] + [None]

        def command(slot: str, i: int) -> list[str]:
            config = tmp_path / f"worker-{slot}{i}.json"
            config.write_text(
                json.dumps(
                    {
                        "remote": url,
                        "api_key": key,
                        "worker_id": f"{slot}{i}",
                        "names": [c.name for c in plan],
                        "effects": str(out),
                        "seed": f"{SEED}:{slot}:{i}",
                        "raise_rate": RAISE_RATE,
                        "die": dies[slot][i],
                    }
                )
            )
            return [sys.executable, str(CHILD), str(config)]

        def run(slot: str) -> list[str]:
            """Kills as planned: a worker process two or three times, or the server once."""
            slot_rng = trial_rng(f"workers-{slot}", 1)
            if slot == "server":
                server.kill_at_random(slot_rng, "server")
                server_kills.append(now_ms())
                server.reap_killed(downtime=slot_rng.uniform(0.0, 1.5))
                server.listen()
                return ["server"]
            worker, done = workers[slot], []
            for i, kind in enumerate(plans[slot]):
                if kind == "firing":
                    done.append(worker.kill_at_random(slot_rng, "at random"))
                else:
                    done.append(worker.await_death(LABEL[kind]))  # the worker kills itself
                killed.add(f"{slot}{i}")
                worker.restart_after_kill()
            return done

        for slot in plans:
            workers[slot] = Child(f"worker-{slot}", tmp_path, partial(command, slot))
            workers[slot].start()
        poll(lambda: now_ms() >= t0, 30, "window", every=0.01)
        with ThreadPoolExecutor(len(workers) + 1) as pool:
            kills = [k for done in pool.map(run, [*workers, "server"]) for k in done]
        expected = sum(len(c.instants) for c in plan)
        try:
            poll(lambda: settled(db, expected), 60, "settling of every occurrence", every=0.2)
        finally:
            for worker in workers.values():
                code = worker.stop()
                assert code == 0, f"seed={SEED}: SIGTERM ended a worker with {code}:\n{worker.tail()}"
            code = server.stop()
        assert code == 0, f"seed={SEED}: SIGTERM ended the server with {code}:\n{server.tail()}"
    finally:
        for worker in workers.values():
            worker.close()
        server.close()

    stored = Stored.read(db)
    ledger = Ledger.check(plan, stored)
    runs = Runs.check(stored, effects(out), killed=killed, server_kills=server_kills)
    report(
        f"crash/workers on {store} trial 1 seed={SEED}: {n(len(plan))} cues, "
        f"{n(ledger.occurrences)} occurrences, "
        f"{n(ledger.executions)} executions ({ledger.statuses()}), {n(runs.starts)} handler runs, "
        f"{len(kills)} kills ({', '.join(kills)}), {n(runs.abandoned)} claims abandoned and taken "
        f"again ({runs.unanswered} never answered by the killed server), {n(runs.repeats)} repeats "
        f"(same id+key; {runs.rerun_after_done} after the work was done), {ledger.faults()}, "
        f"{len(runs.problems)} run problems"
    )
    ledger.assert_exact("workers trial")
    assert not runs.problems, f"seed={SEED}: {len(runs.problems)} problems: {runs.problems[:10]}"
    assert runs.abandoned > 0 and runs.repeats > 0, (kills, runs)


def test_a_report_lost_while_the_server_is_down_is_sent_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The server is killed while a remote App's handler runs and is still down when the handler
    returns: the report cannot get through. The worker stays alive (heard from every 30 s, within
    the default 180 s worker timeout), so the server keeps its claim however long the lease is
    over — the outcome must come from the worker, or the execution never ends. It sends the
    report again once the server is back: one attempt, one run, a success."""
    db = location(tmp_path / "lost.db")
    server = Serve(db, tmp_path, "--worker-lease", "1", same_port=True)
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []
    try:
        url = server.listen()
        with httpx.Client(base_url=url, timeout=30) as c:
            key = c.post("/v1/auth/register", json={"email": "crash@example.com"}).json()["api_key"]
            c.headers["Authorization"] = f"Bearer {key}"
            far = {"type": "once", "at": "2099-01-01T00:00:00Z"}
            cue = c.post("/v1/cues", json={"name": "job", "transport": "worker", "schedule": far}).json()
            eid = c.post(f"/v1/cues/{cue['id']}/fire").json()["id"]
        with cueapi.App(remote=url, api_key=key, worker_id="w1", workers=1, poll_interval=0.05) as app:

            @app.handle("job")
            def job(ctx: cueapi.Context) -> str:
                runs.append(ctx.attempt)
                started.set()
                release.wait(30)
                return "done"

            app.start()
            assert started.wait(30)
            assert server.kill()
            server.reap()
            release.set()
            wait_for(
                lambda: any(f"outcome of {eid}" in r.getMessage() for r in caplog.records),
                30,
                "the report to fail",
            )
            assert server.listen() == url

            def outcome() -> dict[str, Any]:
                with httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as c:
                    ex: dict[str, Any] = c.get(f"/v1/executions/{eid}").json()
                return ex if ex["status"] != "delivering" else {}

            ex = poll(outcome, 30, "the outcome", every=0.1)
        assert ex["status"] == "success" and ex["outcome"]["result"] == "done", ex
        assert [a["status"] for a in ex["attempt_log"]] == ["success"] and runs == [1], (ex, runs)
        assert server.stop() == 0
    finally:
        release.set()
        server.close()
