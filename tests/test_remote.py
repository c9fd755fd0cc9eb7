"""Remote mode: the same decorated program works for a `cueapi serve` instead of a database —
its cues declared on the server as worker cues, their executions claimed, run and reported with
the outcome, evidence and exceptions the embedded App records; a process killed mid-run loses
nothing, another takes the work over when the lease ends."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cueapi
import pytest

from tests.conftest import Server, start_server, wait_for


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Server]:
    """A server on the real clock, with short worker leases and timeouts (takeover tests)."""
    s = start_server(tmp_path / "live.db", worker_lease_seconds=1.0, worker_timeout_seconds=1.0)
    yield s
    s.app.close()


def remote(s: Server, **kw: Any) -> cueapi.App:
    return cueapi.App(remote=s.url, api_key=s.key, workers=kw.pop("workers", 2), poll_interval=0.05, **kw)


def server_cue(s: Server, name: str) -> dict[str, Any]:
    cues = s.call("GET", "/v1/cues", params={"limit": 100}).json()["cues"]
    (cue,) = [c for c in cues if c["name"] == name]
    return dict(cue)


def finished(s: Server, cue_id: str, n: int = 1, timeout: float = 20.0) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        got = s.call("GET", "/v1/executions", params={"cue_id": cue_id, "status": "all", "limit": 100}).json()
        final = [e for e in got["executions"] if e["status"] in ("success", "failed")]
        return final if len(final) >= n else None

    return wait_for(done, timeout=timeout, what=f"{n} finished execution(s) of {cue_id}")


def test_declaring_creates_worker_cues_once(live: Server) -> None:
    with remote(live) as app:

        @app.cue(
            "0 2 * * *", timezone="America/New_York", payload={"batch_size": 1000}, pause_on_failure=True
        )
        def sync_customer_data(ctx: cueapi.Context) -> None:
            return None

        @app.cue(every="5m", name="poll", retry={"max_attempts": 1, "backoff_minutes": [2]})
        def poll(ctx: cueapi.Context) -> None:
            return None

    cue = server_cue(live, "sync_customer_data")
    assert cue["transport"] == "worker" and cue["callback"]["url"] is None
    assert cue["schedule"] == {"type": "recurring", "cron": "0 2 * * *", "timezone": "America/New_York"}
    assert cue["payload"] == {"batch_size": 1000, "task": "sync_customer_data"}
    assert cue["on_failure"]["pause"] is True
    poll_cue = server_cue(live, "poll")
    assert poll_cue["schedule"]["type"] == "interval" and poll_cue["retry"]["max_attempts"] == 1

    # The same program again changes nothing on the server; another definition is applied.
    with remote(live) as again:

        @again.cue(
            "0 2 * * *", timezone="America/New_York", payload={"batch_size": 1000}, pause_on_failure=True
        )
        def sync_customer_data(ctx: cueapi.Context) -> None:
            return None

        assert server_cue(live, "sync_customer_data")["updated_at"] == cue["updated_at"]

    with remote(live) as changed_app:

        @changed_app.cue("30 3 * * *", timezone="Europe/Paris", payload={"batch_size": 10})
        def sync_customer_data(ctx: cueapi.Context) -> None:
            return None

    changed = server_cue(live, "sync_customer_data")
    assert changed["id"] == cue["id"]
    assert changed["schedule"] == {"type": "recurring", "cron": "30 3 * * *", "timezone": "Europe/Paris"}
    assert changed["payload"] == {"batch_size": 10, "task": "sync_customer_data"}
    assert changed["on_failure"]["pause"] is False
    total = live.call("GET", "/v1/cues").json()["total"]
    assert total == 2


def test_runs_report_outcomes_evidence_and_exceptions(live: Server) -> None:
    seen: list[cueapi.Context] = []
    with remote(live) as app:

        @app.cue("0 2 * * *", payload={"batch_size": 1000})
        def sync_customer_data(ctx: cueapi.Context) -> cueapi.Outcome:
            seen.append(ctx)
            ctx.evidence(summary="synced", records=847)
            return cueapi.Outcome(
                success=True, result="Synced 847 records", external_id="batch_1", result_type="data_sync"
            )

        @app.cue("0 3 * * *", retry={"max_attempts": 0, "backoff_minutes": [1]})
        def flaky(ctx: cueapi.Context) -> None:
            raise RuntimeError("upstream returned 503")

        @app.cue("0 4 * * *")
        async def checked(ctx: cueapi.Context) -> bool:
            await asyncio.sleep(0)
            return True

        app.start()
        ids = {name: app.fire(name) for name in ("sync_customer_data", "flaky", "checked")}
        for name in ids:
            finished(live, app.get_cue(name).id)

        ok = app.execution(ids["sync_customer_data"])
        assert ok.status == "success" and ok.outcome_state == "reported_success"
        assert ok.outcome is not None and ok.outcome.result == "Synced 847 records"
        assert ok.evidence is not None and ok.evidence.external_id == "batch_1"
        assert ok.evidence.summary == "synced" and ok.outcome.metadata == {"records": 847}
        assert ok.attempt_log is not None and ok.attempt_log[0].claimed_by
        (ctx,) = seen
        assert ctx.payload == {"batch_size": 1000}  # the routing task is not the handler's business
        assert ctx.triggered_by == "manual_fire" and ctx.attempt == 1 and ctx.idempotency_key

        bad = app.execution(ids["flaky"])
        assert bad.status == "failed"
        last = (bad.attempt_log or [])[-1].outcome or {}
        meta = (bad.outcome.metadata if bad.outcome else None) or last.get("metadata") or {}
        assert meta["exception_type"] == "RuntimeError"
        assert "upstream returned 503" in meta["exception_message"] and "Traceback" in meta["traceback"]

        assert app.execution(ids["checked"]).status == "success"

        listed = app.executions("sync_customer_data", days=1)
        assert [e.id for e in listed] == [ids["sync_customer_data"]]
        stats = app.stats("sync_customer_data")
        assert stats.total == 1 and stats.success_rate == 1.0


def test_history_and_control_act_on_the_server(live: Server) -> None:
    with remote(live) as app:

        @app.cue("0 2 * * *")
        def nightly(ctx: cueapi.Context) -> str:
            return f"ran {ctx.payload.get('mode', 'normal')}"

        app.start()
        first = app.fire("nightly", payload={"mode": "manual"})
        cue_id = app.get_cue("nightly").id
        finished(live, cue_id)
        assert app.execution(first).outcome.result == "ran manual"  # type: ignore[union-attr]
        again = app.replay(first)
        finished(live, cue_id, 2)
        assert app.execution(again).triggered_by == "replay"
        app.pause("nightly")
        assert server_cue(live, "nightly")["status"] == "paused"
        app.resume("nightly")
        assert app.get_cue(cue_id).status == "active"
        assert [c.name for c in app.cues()] == ["nightly"]
        app.delete("nightly")
    assert live.call("GET", "/v1/cues").json()["total"] == 0


def test_each_execution_goes_to_one_of_two_processes(live: Server) -> None:
    runs: list[tuple[str, str]] = []
    lock = threading.Lock()

    def program(label: str) -> cueapi.App:
        app = remote(live, workers=4)

        @app.cue("0 2 * * *", name="shared")
        def shared(ctx: cueapi.Context) -> None:
            with lock:
                runs.append((label, ctx.execution_id))

        return app

    a, b = program("a"), program("b")
    try:
        a.start()
        b.start()
        fired = [a.fire("shared") for _ in range(20)]
        finished(live, a.get_cue("shared").id, 20)
    finally:
        a.close()
        b.close()
    assert sorted(e for _, e in runs) == sorted(fired)  # each once
    assert {label for label, _ in runs} <= {"a", "b"}


WORKER = """
import os, sys, time
import cueapi

app = cueapi.App(remote=os.environ["URL"], api_key=os.environ["KEY"], poll_interval=0.05)

@app.cue("0 2 * * *", name="long_job")
def long_job(ctx):
    if os.environ.get("HANG") == "1":
        print("started", ctx.execution_id, flush=True)
        time.sleep(3600)
    return f"done by {os.environ['WHO']} on attempt {ctx.attempt}"

if __name__ == "__main__":
    print("ready", flush=True)
    app.run()
"""


def test_a_process_killed_mid_run_loses_nothing(live: Server, tmp_path: Path) -> None:
    (tmp_path / "jobs.py").write_text(textwrap.dedent(WORKER))
    env = dict(os.environ, URL=live.url, KEY=live.key, PYTHONUNBUFFERED="1")
    hang = dict(env, HANG="1", WHO="a")
    with subprocess.Popen(
        [sys.executable, "jobs.py"], cwd=tmp_path, env=hang, stdout=subprocess.PIPE, text=True
    ) as a:
        try:
            assert a.stdout is not None and a.stdout.readline().strip() == "ready"
            cue_id = server_cue(live, "long_job")["id"]
            fired = live.call("POST", f"/v1/cues/{cue_id}/fire").json()["id"]
            assert a.stdout.readline().split() == ["started", fired]
        finally:
            a.send_signal(signal.SIGKILL)
    with subprocess.Popen(
        [sys.executable, "jobs.py"], cwd=tmp_path, env=dict(env, WHO="b"), stdout=subprocess.PIPE, text=True
    ) as b:
        try:
            assert b.stdout is not None and b.stdout.readline().strip() == "ready"
            (done,) = finished(live, cue_id, timeout=60)
            assert done["id"] == fired and done["status"] == "success"
            assert done["outcome"]["result"] == "done by b on attempt 2"
            log = live.execution(fired)["attempt_log"]
            assert [x["status"] for x in log] == ["abandoned", "success"]
        finally:
            b.send_signal(signal.SIGTERM)


def test_worker_command_runs_a_program_against_a_server(live: Server, tmp_path: Path) -> None:
    """`cueapi worker module:app` binds an App the program makes for a database to the server."""
    (tmp_path / "nightly.py").write_text(
        textwrap.dedent(
            """
            import cueapi

            app = cueapi.App("cueapi.db")

            @app.cue("0 2 * * *")
            def nightly(ctx):
                return "ran remotely"
            """
        )
    )
    env = dict(os.environ, CUEAPI_API_KEY=live.key, PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "cueapi", "worker", "nightly:app", "--base-url", live.url]
    with subprocess.Popen(
        [*command, "--poll-interval", "0.05"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stderr is not None
        try:
            lines = [proc.stderr.readline()]
            while "running" not in lines[-1] and lines[-1] and len(lines) < 20:
                lines.append(proc.stderr.readline())
            assert f"running 1 cue handler(s) for {live.url} as worker" in lines[-1], lines
            cue_id = server_cue(live, "nightly")["id"]
            live.call("POST", f"/v1/cues/{cue_id}/fire")
            (done,) = finished(live, cue_id)
            assert done["outcome"]["result"] == "ran remotely"
            assert not (tmp_path / "cueapi.db").exists()
        finally:
            proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0


def test_remote_arguments_are_checked(live: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUEAPI_API_KEY", raising=False)
    with pytest.raises(cueapi.ValidationError, match="no API key"):
        cueapi.App(remote=live.url)
    with pytest.raises(cueapi.ValidationError, match="base_url"):
        cueapi.App(remote="ftp://example.com", api_key=live.key)
    with pytest.raises(cueapi.ValidationError, match="clock"):
        cueapi.App(remote=live.url, api_key=live.key, clock=cueapi.ManualClock(0))
    with pytest.raises(cueapi.ValidationError, match="remote"):
        cueapi.App("x.db", api_key=live.key)
    with remote(live) as app:
        with pytest.raises(cueapi.CueAPIError, match="embedded"):
            app.serve("127.0.0.1", 0)
        with pytest.raises(cueapi.InvalidScheduleError):
            app.cue("61 * * * *")(lambda ctx: None)
        with pytest.raises(cueapi.CueNotFoundError):
            app.get_cue("nope")
    assert live.call("GET", "/v1/cues").json()["total"] == 0
    bad = cueapi.App(remote=live.url, api_key="cue_sk_" + "0" * 32)
    with pytest.raises(cueapi.AuthenticationError):
        bad.cue("0 2 * * *", name="x")(lambda ctx: None)
    bad.close()
