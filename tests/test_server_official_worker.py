"""`cueapi serve` against the official pull-worker daemon as `pip install cueapi-worker` gives it
(0.3.0, in .venv-worker): the real `cueapi-worker start` in a subprocess, configured by a YAML file
whose `api_base` is our server's root URL, with short poll and heartbeat intervals. It lists what
is claimable, claims what its handlers can run, runs each handler as a shell command and reports
the outcome (with the evidence a handler wrote to `$CUEAPI_OUTCOME_FILE`).

The daemon sends worker heartbeats only, never execution heartbeats: a job that outlives its lease
is safe only because the server keeps the claims of a worker it keeps hearing from. The server here
has a 2 s lease and a 3 s worker timeout, so that is seen in seconds."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cueapi
import pytest

from tests.conftest import Server, wait_for
from tests.test_server_delivery import instant, settled
from tests.test_server_workers import serve_with

ROOT = Path(__file__).resolve().parent.parent
WORKER_BIN = ROOT / ".venv-worker" / "bin" / "cueapi-worker"
SCRIPTS = Path(__file__).resolve().parent / "worker_scripts"
FAR = {"type": "once", "at": "2099-01-01T00:00:00Z"}
LEASE, TIMEOUT = 2, 3
# Handler commands: shell text, or {"cmd": ..., "timeout": ...} as the daemon's YAML allows.
Handlers = dict[str, Any]


def yaml_text(config: dict[str, Any]) -> str:
    """The daemon's YAML config, written in block style (scalars as JSON, which YAML reads)."""
    lines = []
    for key, value in config.items():
        if isinstance(value, dict):
            lines.append(f"{key}:")
            for name, handler in value.items():
                if isinstance(handler, dict):
                    lines.append(f"  {json.dumps(name)}:")
                    lines.extend(f"    {k}: {json.dumps(v)}" for k, v in handler.items())
                else:
                    lines.append(f"  {json.dumps(name)}: {json.dumps(handler)}")
        else:
            lines.append(f"{key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


@dataclass
class Daemon:
    worker_id: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL to the daemon and the handlers it started (its own process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


Start = Callable[..., Daemon]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Server]:
    """A server on the real clock with a short lease and worker timeout."""
    s = serve_with(tmp_path / "live.db", None, worker_lease_seconds=LEASE, worker_timeout_seconds=TIMEOUT)
    yield s
    s.app.close()


@pytest.fixture
def daemon(live: Server, tmp_path: Path) -> Iterator[Start]:
    """``daemon(worker_id, handlers, server=live, **config)`` starts `cueapi-worker start` against
    ``server`` (``config`` replaces settings of its YAML); every daemon (and any handler still
    running) is killed at teardown, and its log printed."""
    assert WORKER_BIN.exists(), "run `make develop`: it installs the official worker into .venv-worker"
    home = tmp_path / "worker-home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        "PYTHONUTF8": "1",
        "LC_ALL": "C.UTF-8",
    }
    started: list[Daemon] = []

    def start(worker_id: str, handlers: Handlers, server: Server | None = None, **settings: Any) -> Daemon:
        s = server or live
        config = {
            "api_key": s.key,
            "api_base": s.url,
            "worker_id": worker_id,
            "poll_interval": 0.2,
            "heartbeat_interval": 0.5,
            "max_concurrent": 4,
            "handler_timeout": 60,
            "handlers": handlers,
            **settings,
        }
        path = tmp_path / f"{worker_id}.yaml"
        path.write_text(yaml_text(config))
        log = tmp_path / f"{worker_id}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(WORKER_BIN), "start", "-c", str(path)],
                cwd=tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        d = Daemon(worker_id, proc, log)
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()
        print(f"--- {d.worker_id} (exit {d.proc.returncode}) ---\n{d.output()}")


def worker_cue(s: Server, name: str, payload: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return s.cue(name=name, transport="worker", schedule=FAR, payload=payload, **fields)


def fire(s: Server, cue: dict[str, Any]) -> str:
    r = s.call("POST", f"/v1/cues/{cue['id']}/fire")
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def attempts(ex: dict[str, Any]) -> list[tuple[int, str]]:
    return [(a["number"], a["status"]) for a in ex["attempt_log"]]


def listed_worker(s: Server, worker_id: str) -> dict[str, Any] | None:
    r = s.call("GET", "/v1/workers")
    assert r.status_code == 200, r.text
    return next((w for w in r.json()["workers"] if w["worker_id"] == worker_id), None)


def listed_when(
    s: Server, worker_id: str, ok: Callable[[dict[str, Any]], bool], what: str, timeout: float = 10.0
) -> dict[str, Any]:
    """Waits until ``GET /v1/workers`` lists the worker in a state ``ok`` accepts; returns it."""

    def probe() -> dict[str, Any] | None:
        w = listed_worker(s, worker_id)
        return w if w is not None and ok(w) else None

    found = wait_for(probe, timeout, what)
    assert found is not None
    return found


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- the tests -------------------------------------------------------------------------------------


def test_a_shell_handler_runs_and_its_output_is_the_result(live: Server, daemon: Start) -> None:
    payload = {"task": "hello", "who": "Zo\u00eb"}
    ignored = fire(live, worker_cue(live, "nobody-runs-this", {"task": "unknown"}))
    greet = worker_cue(live, "greet", payload)
    eid = fire(live, greet)
    d = daemon(
        "w-shell",
        {
            "hello": 'echo "hi {{ payload.who }} from $CUEAPI_CUE_NAME '
            '($CUEAPI_EXECUTION_ID on $CUEAPI_WORKER_ID)"; echo "payload $CUEAPI_PAYLOAD" >&2',
            "spare": "true",
        },
    )
    ex = settled(live, eid, "success", "failed")
    assert ex["status"] == "success", (ex, d.output())
    o = ex["outcome"]
    assert o["success"] is True
    # stdout, the daemon's separator, stderr: the handler saw the claimable item's fields.
    assert o["result"] == (
        f"hi Zo\u00eb from greet ({eid} on w-shell)\n\n--- stderr ---\npayload {json.dumps(payload)}\n"
    )
    assert ex["outcome_state"] == "reported_success"
    assert ex["attempts"] == 1 and attempts(ex) == [(1, "success")]
    # The daemon saw the older execution first, and left it: it has no handler for that task.
    skipped = live.execution(ignored)
    assert skipped["status"] == "pending" and skipped["attempts"] == 0
    assert d.proc.poll() is None, d.output()


def test_output_over_the_result_limit_is_cut_not_lost(live: Server, daemon: Start) -> None:
    """The daemon sends up to 4096 characters of output as `result`; the reference server refuses
    more than 2000 with a 422, and the daemon never retries an outcome, so the run would stay
    claimed until its lease ran out. Ours cuts it to 2000 (ending in "…") and records the run."""
    eid = fire(live, worker_cue(live, "chatty", {"task": "chatty"}))
    d = daemon("w-chatty", {"chatty": "head -c 3000 /dev/zero | tr '\\0' x"})
    ex = settled(live, eid, "success", "failed")
    assert ex["status"] == "success", (ex, d.output())
    assert ex["outcome"]["result"] == "x" * 1999 + "\u2026"
    assert attempts(ex) == [(1, "success")]


def test_evidence_from_the_outcome_file_lands_on_the_execution(live: Server, daemon: Start) -> None:
    evidence = {
        "external_id": "INV-2026-0042",
        "result_url": "https://example.com/invoices/42",
        "result_ref": "s3://invoices/42.pdf",
        "result_type": "invoice",
        "summary": "Invoice 42 sent to ACME",
        "artifacts": [{"type": "pdf", "name": "42.pdf"}, "mail.log"],
    }
    sent = worker_cue(
        live,
        "invoice",
        {
            "task": "invoice",
            "outcome": {**evidence, "result": "sent", "metadata": {"amount_cents": 1250}, "bogus": 1},
        },
        verification={"mode": "require_external_id"},
    )
    # Exit 0, but the file says it failed: the file wins, and its evidence is still forwarded.
    declined = worker_cue(
        live,
        "declined",
        {"task": "invoice", "outcome": {"success": False, "error": "card declined", "external_id": "INV-43"}},
        retry={"max_attempts": 0},
    )
    e1, e2 = fire(live, sent), fire(live, declined)
    handler = f"{shlex.quote(sys.executable)} {shlex.quote(str(SCRIPTS / 'write_outcome.py'))}"
    d = daemon("w-evidence", {"invoice": handler})

    ex = settled(live, e1, "success", "failed")
    assert ex["status"] == "success", (ex, d.output())
    o = ex["outcome"]
    assert o["success"] is True and o["result"] == "sent"
    for k, v in evidence.items():
        assert o[k] == v, (k, o)
    # The daemon drops fields it does not know and says so under metadata._cueapi_worker.
    assert o["metadata"] == {
        "amount_cents": 1250,
        "_cueapi_worker": {"outcome_file_dropped_fields": ["bogus"]},
    }
    assert ex["outcome_state"] == "verified_success"

    ex = settled(live, e2, "failed", "success")
    assert ex["status"] == "failed", (ex, d.output())
    o = ex["outcome"]
    assert o["success"] is False and o["error"] == "card declined" and o["external_id"] == "INV-43"
    assert ex["outcome_state"] == "reported_failure"
    assert attempts(ex) == [(1, "failed")]


def test_heartbeats_keep_the_worker_listed_as_active(live: Server, daemon: Start) -> None:
    d = daemon("w-beat", {"report": "true", "sync": {"cmd": "true", "timeout": 30}})
    w = listed_when(live, "w-beat", lambda _w: True, "the daemon's first heartbeat")
    assert w["handlers"] == ["report", "sync"]
    assert w["heartbeat_status"] == "active"
    first = instant(w["last_heartbeat"])
    # It keeps beating (every 0.5 s here).
    listed_when(live, "w-beat", lambda x: instant(x["last_heartbeat"]) > first, "a second heartbeat")
    # SIGTERM: a clean stop; the server then sees it fall silent.
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(30) == 0, d.output()
    w = listed_when(
        live,
        "w-beat",
        lambda x: x["heartbeat_status"] == "stale",
        "the stopped worker to be stale",
        TIMEOUT + 10,
    )
    assert w["seconds_since_heartbeat"] >= TIMEOUT


def test_a_failing_handler_is_final_unless_its_cue_retries_reported_failures(
    live: Server, daemon: Start, tmp_path: Path
) -> None:
    """The daemon reports a handler's non-zero exit as `success: false`: the handler's verdict,
    final (as the official clients and the reference server have it) even with retries left; a cue
    that sets `retry.retry_reported_failures` has it retried."""
    marker = shlex.quote(str(tmp_path / "flaky.marker"))
    retrying = {"max_attempts": 1, "backoff_minutes": [0.02], "retry_reported_failures": True}
    flaky = worker_cue(live, "flaky", {"task": "flaky"}, retry=retrying)
    final = {"max_attempts": 1, "backoff_minutes": [0.02]}
    broken = worker_cue(live, "broken", {"task": "broken"}, retry=final)
    e1, e2 = fire(live, flaky), fire(live, broken)
    d = daemon(
        "w-retry",
        {
            "flaky": f"if [ -e {marker} ]; then echo recovered; "
            f"else touch {marker}; echo boom >&2; exit 1; fi",
            "broken": 'echo "disk full" >&2; exit 3',
        },
    )

    ex = settled(live, e2, "failed", "success")
    assert ex["status"] == "failed", (ex, d.output())
    assert ex["outcome"]["success"] is False and "disk full" in ex["outcome"]["error"]
    assert "disk full" in (ex["error_message"] or "")
    assert attempts(ex) == [(1, "failed")] and ex["next_retry"] is None

    # Attempt 1 fails, the retry comes due 1.2 s later, the daemon claims it as attempt 2.
    ex = settled(live, e1, "success", "failed")
    assert ex["status"] == "success", (ex, d.output())
    assert ex["attempts"] == 2 and attempts(ex) == [(1, "failed"), (2, "success")]
    assert "boom" in ex["attempt_log"][0]["error"]
    assert ex["outcome"]["success"] is True and ex["outcome"]["result"] == "recovered\n"
    gap = instant(ex["attempt_log"][1]["started_at"]) - instant(ex["attempt_log"][0]["finished_at"])
    assert gap.total_seconds() >= 1.2


def test_a_job_longer_than_the_lease_runs_exactly_once(live: Server, daemon: Start, tmp_path: Path) -> None:
    runs = tmp_path / "runs.txt"
    eid = fire(live, worker_cue(live, "long", {"task": "long"}))
    log = shlex.quote(str(runs))
    d = daemon("w-long", {"long": f"echo start >> {log}; sleep 6; echo end >> {log}; echo finished"})
    listed_when(live, "w-long", lambda w: w["claims"] in (1, [eid]), "the worker to hold the claim")
    ex = settled(live, eid, "success", "failed", timeout=30)
    assert ex["status"] == "success", (ex, d.output())
    assert lines(runs) == ["start", "end"], d.output()
    assert ex["attempts"] == 1 and attempts(ex) == [(1, "success")]
    assert ex["outcome"]["result"] == "finished\n"
    (attempt,) = ex["attempt_log"]
    took = instant(attempt["finished_at"]) - instant(attempt["started_at"])
    assert took.total_seconds() > LEASE + TIMEOUT  # it outlived lease and timeout together


def test_a_killed_worker_s_job_goes_to_another_worker(live: Server, daemon: Start, tmp_path: Path) -> None:
    runs = tmp_path / "runs.txt"
    log = shlex.quote(str(runs))
    eid = fire(live, worker_cue(live, "resilient", {"task": "job"}))
    first = daemon(
        "w-first", {"job": f'echo "start $CUEAPI_WORKER_ID" >> {log}; sleep 60; echo end >> {log}'}
    )
    wait_for(lambda: lines(runs) == ["start w-first"], what="the first worker to start the job")
    assert live.execution(eid)["status"] == "delivering"
    first.kill()  # mid-job, with its handler: no outcome, no more heartbeats

    second = daemon(
        "w-second", {"job": f'echo "start $CUEAPI_WORKER_ID" >> {log}; echo "done by $CUEAPI_WORKER_ID"'}
    )
    ex = settled(live, eid, "success", "failed", timeout=30)
    assert ex["status"] == "success", (ex, second.output())
    assert attempts(ex) == [(1, "abandoned"), (2, "success")] and ex["attempts"] == 2
    assert ex["attempt_log"][0]["error"]
    assert ex["outcome"]["result"] == "done by w-second\n"
    assert lines(runs) == ["start w-first", "start w-second"]
    # Released no earlier than the lease allowed.
    held_for = instant(ex["attempt_log"][1]["started_at"]) - instant(ex["attempt_log"][0]["started_at"])
    assert held_for.total_seconds() >= LEASE
    gone = listed_worker(live, "w-first")
    assert gone is not None and gone["heartbeat_status"] != "active" and gone["claims"] in (0, [])


def test_its_own_task_is_claimed_within_a_poll_whatever_else_is_queued(live: Server, daemon: Start) -> None:
    """The daemon lists `GET /v1/executions/claimable` without a filter, reads the first page (50)
    and skips tasks it has no handler for. 60 executions of a task nobody runs, queued first,
    would hide its own execution for good; the server lists the tasks of its live workers first,
    so its own is claimed at the next poll and done within about one poll interval of being due."""
    poll = 2.0
    d = daemon("w-own", {"mine": "echo mine"}, poll_interval=poll)
    listed_when(live, "w-own", lambda w: w["handlers"] == ["mine"], "the daemon's first heartbeat")
    foreign = worker_cue(live, "foreign", {"task": "theirs"}, overlap="allow")
    queued = [fire(live, foreign) for _ in range(60)]
    eid = fire(live, worker_cue(live, "own", {"task": "mine"}))
    ex = live.execution(eid)
    due = instant(ex["scheduled_for"])

    ex = settled(live, eid, "success", "failed", timeout=poll * 3 + 10)
    assert ex["status"] == "success" and ex["outcome"]["result"] == "mine\n", (ex, d.output())
    assert ex["claimed_by_worker"] == "w-own"
    # Claimed at its first poll after it was due (a poll, a claim: well under a second on top) ...
    waited = instant(ex["claimed_at"]) - due
    assert waited.total_seconds() <= poll + 1.0, (waited, d.output())
    # ... and done soon after (a shell, an echo, one report).
    took = instant(ex["outcome"]["recorded_at"]) - due
    assert took.total_seconds() <= poll + 2.5, (took, d.output())
    # The others wait as they were: nobody claimed them, and they are all still listed.
    r = live.call("GET", "/v1/executions/claimable", params={"limit": 100})
    assert sorted(e["execution_id"] for e in r.json()["executions"]) == sorted(queued)
    assert d.proc.poll() is None, d.output()


def test_every_outcome_is_recorded_under_a_tiny_rate_limit(tmp_path: Path, daemon: Start) -> None:
    """The daemon drops a request refused with 429 and never sends an outcome again. Outcomes,
    execution heartbeats and worker heartbeats are never refused (nor counted) for a valid key:
    with an allowance of 10 requests (the clock stands still, so none comes back), spent on the
    setup, the daemon's first poll and its four claims, every outcome is still recorded while its
    later polls are refused."""
    clock = cueapi.ManualClock(datetime.now(timezone.utc).replace(microsecond=0))
    app = cueapi.App(tmp_path / "tight.db", clock=clock, workers=2)
    url = app.serve("127.0.0.1", 0, allow_private_targets=True, rate_limit_per_minute=10)
    key, secret = app.create_user("owner@example.com")
    s = Server(app, url, key, secret, tmp_path / "tight.db")
    try:
        cue = worker_cue(s, "tight", {"task": "job"}, overlap="allow")
        ids = [fire(s, cue) for _ in range(4)]  # 5 requests spent
        d = daemon("w-tight", {"job": "echo ok"}, server=s, max_concurrent=4)

        def metric(pattern: str) -> int:
            text = s.call("GET", "/metrics", key=None).text  # never limited
            m = re.search(pattern, text, re.M)
            return int(m.group(1)) if m else 0

        wait_for(
            lambda: metric(r'^cueapi_outcomes_total\{state="reported_success"\} (\d+)$') == 4,
            30,
            "4 outcomes",
        )
        # The limit does bite: the daemon's next poll is refused (and it waits the Retry-After).
        wait_for(lambda: "Rate limited (get_claimable)" in d.output(), 30, "a refused poll")
        assert metric(r"^cueapi_rate_limited_total (\d+)$") >= 1
        assert s.call("GET", "/v1/cues").status_code == 429
        # Heartbeats too, while everything else is refused.
        beat = s.call("POST", "/v1/worker/heartbeat", {"worker_id": "w-other", "handlers": ["x"]})
        assert beat.status_code == 200, beat.text
        clock.advance(60)  # a whole allowance again, to read what was recorded
        for eid in ids:
            ex = s.execution(eid)
            assert (ex["status"], ex["outcome"]["result"], ex["claimed_by_worker"]) == (
                "success",
                "ok\n",
                "w-tight",
            )
        assert d.proc.poll() is None, d.output()
    finally:
        app.close()
