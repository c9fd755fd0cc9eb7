"""A disk that fills up under a running ``cueapi serve`` while cues fire every second, simulated
without privileges: the server's largest file size is capped with RLIMIT_FSIZE at the size its
database has (SIGXFSZ ignored), so every write that needs more room fails as on a full disk, then
the cap is lifted. While the disk is full ``/health`` says so (503, the store failing) and keeps
saying so, API writes answer 503 ``storage_unavailable``, and the log says it once per kind of
problem rather than thirty times a second. Nothing committed is lost, and when space returns
everything resumes: health 200, cues fire again, and the deliveries that went out while their
results could not be written are recorded. The embedded App likewise keeps the outcomes of runs
that finish while the disk is full and writes them when space returns."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.conftest import Receiver, wait_for
from tests.faults.harness import MB, RssSampler, Serve, instant

EVERY_SECOND = {"type": "recurring", "cron": "* * * * * *"}
OPEN = ("pending", "delivering", "retrying")
# What a full disk may add to the process's resident memory at its peak (what cannot be written
# is kept to be written again, within a cap). Measured on a debug build: a few MB.
RSS_BOUND = 32 * MB


def _ignore_sigxfsz() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def executions(serve: Serve, **params: Any) -> list[dict[str, Any]]:
    """Every execution (all statuses), paging through the list."""
    out: list[dict[str, Any]] = []
    while True:
        page = serve.call(
            "GET", "/v1/executions", params={"status": "all", "limit": 100, "offset": len(out), **params}
        ).json()
        out += page["executions"]
        if len(out) >= page["total"] or not page["executions"]:
            return out


def total(serve: Serve) -> int:
    return int(serve.call("GET", "/v1/executions", params={"status": "all", "limit": 1}).json()["total"])


def problem_kind(line: str) -> str:
    """A log line with its ids and numbers masked: the engine tells each kind once a minute."""
    return re.sub(r"\d+", "", re.sub(r"\b(exec|cue)_\w+", "…", line))


def test_a_full_disk_shows_on_health_and_in_one_log_line_and_recovers(tmp_path: Path) -> None:
    db = tmp_path / "full.db"
    receiver = Receiver()
    try:
        with Serve.start(db, preexec_fn=_ignore_sigxfsz) as serve:
            # Ticks every second, each writing an execution: worker cues (waiting for a claim) and
            # webhook cues (delivered, their results written after the answer).
            workers = {
                serve.cue(name=f"tick-{i}", transport="worker", payload={"task": "t"}, schedule=EVERY_SECOND)[
                    "id"
                ]
                for i in range(10)
            }
            hooks = {
                serve.cue(
                    name=f"hook-{i}",
                    callback={"url": receiver.url + "/hook"},
                    retry={"max_attempts": 3, "backoff_minutes": [0.01]},
                    schedule=EVERY_SECOND,
                )["id"]
                for i in range(10)
            }
            wait_for(lambda: len(receiver.requests) >= 20, 15, "ticks delivered")
            before = {e["id"]: e for e in executions(serve)}

            # No file may grow past the size the database has now.
            rss = RssSampler(serve.proc.pid)
            limit = os.path.getsize(db)
            resource.prlimit(serve.proc.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            try:
                health = wait_for(
                    lambda: (r := serve.health()).status_code == 503 and r,
                    30,
                    "/health to report the store failing",
                )
                assert health.json()["failing"] == ["store"], health.text
                assert "disk I/O error" in health.json()["checks"]["store"]["error"], health.text
                refused = serve.call(
                    "POST",
                    "/v1/cues",
                    {
                        "name": "x",
                        "transport": "worker",
                        "schedule": {"type": "once", "at": "2099-01-01T00:00:00Z"},
                        "payload": {"pad": "p" * 100_000},
                    },
                )
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"]["code"] == "storage_unavailable"
                # Three seconds of ticks failing to be written (a window to count log lines in and
                # to watch /health over, not synchronisation): /health does not flap to healthy.
                window_end = time.monotonic() + 3
                answers = []
                while time.monotonic() < window_end:
                    answers.append(serve.health().status_code)
                assert set(answers) == {503}, answers
            finally:
                resource.prlimit(
                    serve.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
                )
            space_back = time.time()
            wait_for(lambda: serve.health().status_code == 200, 30, "/health to recover")
            count = total(serve)
            wait_for(lambda: total(serve) > count + 20, 15, "ticks to be written again")

            # Every webhook execution of the full-disk window settles: none is left delivering
            # because its result could not be written when it came back.
            def stuck() -> list[dict[str, Any]]:
                return [
                    e
                    for e in executions(serve, status__in=",".join(OPEN))
                    if e["cue_id"] in hooks and instant(e["scheduled_for"]) < space_back
                ]

            try:
                wait_for(lambda: not stuck(), 15, "the full disk's deliveries to settle")
            except AssertionError:
                raise AssertionError(f"still open: {stuck()}\n{serve.log()[-3000:]}") from None

            # Nothing committed was lost: every execution is there, none gone back to an earlier state.
            after = {e["id"]: e for e in executions(serve)}
            assert set(before) <= set(after)
            for eid, was in before.items():
                if was["status"] not in OPEN:
                    assert after[eid]["status"] == was["status"], (was, after[eid])
            cues = serve.call("GET", "/v1/cues", params={"limit": 100}).json()["cues"]
            assert {c["id"] for c in cues} == workers | hooks
            grown = rss.stop()
            assert grown < RSS_BOUND, f"the server's memory grew by {grown / MB:.1f} MB"
            print(f"full disk: peak RSS +{grown / MB:.1f} MB")
            log = serve.log()
    finally:
        receiver.close()
    problems = [line for line in log.splitlines() if "disk i/o" in line.lower()]
    kinds = [problem_kind(line) for line in problems]
    # One line per kind of problem a minute (with a count of the rest), not dozens a second.
    assert problems, log[-3000:]
    assert len(kinds) == len(set(kinds)) and len(problems) <= 6, log[-3000:]


# An embedded App in a process of its own, driven over stdin: cues every second, one of which
# ("slow") holds its first run until told to finish. It prints "running <execution id>" when that
# run starts, and answers "report" with its executions as JSON.
EMBEDDED = """
import json, logging, sys, threading
import cueapi

logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
app = cueapi.App(sys.argv[1], workers=4)
release = threading.Event()
held = []


def slow(ctx):
    if not held:
        held.append(ctx.execution_id)
        print("running", ctx.execution_id, flush=True)
        release.wait()
    return cueapi.Outcome(success=True, result="slow done")


app.cue("* * * * * *", name="slow")(slow)
for i in range(4):
    app.cue("* * * * * *", name=f"fast-{i}")(lambda ctx: True)
app.start()
print("started", flush=True)
for line in sys.stdin:
    if line.strip() == "release":
        release.set()
    elif line.strip() == "report":
        runs = app.executions(limit=10000)
        rows = [[e.id, e.cue_name, e.status, e.scheduled_for.timestamp()] for e in runs]
        print("report", json.dumps(rows), flush=True)
    elif line.strip() == "stop":
        break
app.close()
"""


class Child:
    """A process speaking the line protocol above; its stdout lines are read by a thread."""

    def __init__(self, script: Path, db: Path, log: Path) -> None:
        with log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), str(db)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                preexec_fn=_ignore_sigxfsz,
            )
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.strip())
                self.cond.notify_all()

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def expect(self, prefix: str, after: int = 0, timeout: float = 15) -> tuple[int, str]:
        """The first line from index ``after`` on that starts with ``prefix``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i, line in enumerate(self.lines[after:], start=after):
                    if line.startswith(prefix):
                        return i, line
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"no {prefix!r} line; got {self.lines[-5:]}")
                self.cond.wait(min(left, 0.5))

    def report(self) -> list[list[Any]]:
        with self.cond:
            n = len(self.lines)
        self.send("report")
        _, line = self.expect("report ", after=n)
        return list(json.loads(line.removeprefix("report ")))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.send("stop")
        try:
            code = self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.close()
            self.reader.join(10)
            self.proc.stdout.close()
        return code


def test_an_embedded_app_on_a_full_disk_keeps_outcomes_and_resumes(tmp_path: Path) -> None:
    """A run that finishes while the disk is full: its outcome cannot be written. It is kept and
    written when space returns, so its execution does not stay running until the next start
    (and its cue, which skips overlapping runs, does not skip every tick until then)."""
    script, db, log = tmp_path / "embedded.py", tmp_path / "app.db", tmp_path / "app.log"
    script.write_text(EMBEDDED)
    child = Child(script, db, log)
    try:
        child.expect("started")
        _, running = child.expect("running ")
        held = running.split()[1]
        wait_for(lambda: len(child.report()) >= 20, 15, "ticks recorded")
        rss = RssSampler(child.proc.pid)
        resource.prlimit(child.proc.pid, resource.RLIMIT_FSIZE, (os.path.getsize(db), resource.RLIM_INFINITY))
        try:
            # The disk is full once ticks fail to be written; then the held run finishes.
            wait_for(lambda: "disk I/O error" in log.read_text(), 15, "a write to fail")
            child.send("release")
            wait_for(lambda: "outcome(s) failed" in log.read_text(), 15, "the outcome to fail to be written")
        finally:
            resource.prlimit(
                child.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            )
        space_back = time.time()

        def slow_runs() -> dict[str, list[Any]]:
            return {r[0]: r for r in child.report() if r[1] == "slow"}

        # The held run is recorded, and its cue runs again (ticks after it are not all skipped).
        wait_for(lambda: slow_runs()[held][2] == "success", 15, "the held run's outcome to be written")
        wait_for(
            lambda: any(r[2] == "success" and r[3] > space_back for r in slow_runs().values()),
            15,
            "the slow cue to run again",
        )
        grown = rss.stop()
        assert grown < RSS_BOUND, f"the App's memory grew by {grown / MB:.1f} MB"
        print(f"embedded full disk: peak RSS +{grown / MB:.1f} MB")
        assert child.stop() == 0
    finally:
        if child.proc.poll() is None:
            child.stop()
    text = log.read_text()
    assert "Traceback" not in text, text
    problems = [line for line in text.splitlines() if "disk i/o" in line.lower()]
    kinds = [problem_kind(line) for line in problems]
    assert len(kinds) == len(set(kinds)) and len(problems) <= 6, text
