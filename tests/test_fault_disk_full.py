"""A disk that fills up under a running `cueapi serve` (simulated without privileges: the server's
largest file size is capped with RLIMIT_FSIZE, SIGXFSZ ignored, so writes fail as on a full disk,
then the cap is lifted): `/health` says so (503, the store failing) instead of "store ok", API
writes answer 503 `storage_unavailable`, the log says it once rather than thirty times a second,
nothing committed is lost, and everything recovers when space returns."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import wait_for


def _ignore_sigxfsz() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_a_full_disk_shows_on_health_and_in_one_log_line_and_recovers(tmp_path: Path) -> None:
    db = tmp_path / "full.db"
    errors = tmp_path / "stderr.txt"
    with (
        errors.open("w") as err,
        subprocess.Popen(
            [sys.executable, "-m", "cueapi", "serve", "--db", str(db), "--port", "0", "--rate-limit", "0"],
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_ignore_sigxfsz,
        ) as proc,
        contextlib.ExitStack() as stack,  # left first: the client closed, the server killed
    ):
        stack.callback(proc.kill)  # a failed assertion must not leave the server running
        assert proc.stderr is not None
        found = re.search(r"listening on (http://\S+)", proc.stderr.readline())
        assert found
        url = found.group(1)
        http = stack.enter_context(httpx.Client(base_url=url, timeout=30))
        key = http.post("/v1/auth/register", json={"email": "full@example.com"}).json()["api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        # Worker cues firing every second: each tick writes an execution.
        made = [
            http.post(
                "/v1/cues",
                headers=auth,
                json={
                    "name": f"tick-{i}",
                    "transport": "worker",
                    "payload": {"task": "t"},
                    "schedule": {"type": "recurring", "cron": "* * * * * *"},
                },
            ).json()["id"]
            for i in range(20)
        ]
        wait_for(lambda: http.get("/v1/executions", headers=auth).json()["total"] >= 40, what="ticks")
        before = http.get("/v1/executions", headers=auth, params={"limit": 1}).json()["total"]
        try:
            # Writes at offsets past the smallest file fail: the WAL (reset by a checkpoint or not)
            # and the database both reach that quickly, as on a disk with no block left.
            smallest = min(os.path.getsize(p) for p in tmp_path.glob("full.db*") if os.path.getsize(p))
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (smallest, resource.RLIM_INFINITY))

            def degraded() -> httpx.Response | None:
                r = http.get("/health")
                return r if r.status_code == 503 else None

            health = wait_for(degraded, timeout=30, what="/health to report the store failing")
            assert health.json()["failing"] == ["store"]
            refused = http.post(
                "/v1/cues",
                headers=auth,
                json={
                    "name": "x",
                    "transport": "worker",
                    "schedule": {"type": "once", "at": "2099-01-01T00:00:00Z"},
                    "payload": {"pad": "p" * 100_000},
                },
            )
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "storage_unavailable"
            # Several seconds of ticks failing to be written: the log does not flood.
            time.sleep(3)  # a window of failures to count, not synchronisation
        finally:
            resource.prlimit(
                proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            )
        wait_for(lambda: http.get("/health").status_code == 200, timeout=30, what="/health to recover")
        wait_for(
            lambda: http.get("/v1/executions", headers=auth, params={"limit": 1}).json()["total"] > before,
            what="ticks to be written again",
        )
        after = http.get("/v1/cues", headers=auth, params={"limit": 100}).json()
        assert {c["id"] for c in after["cues"]} == set(made)  # nothing committed was lost
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=30) == 0
        err.write(rest)
    problem_lines = [line for line in rest.splitlines() if "disk" in line.lower() or "i/o" in line.lower()]
    # One line per kind of problem a minute (with a count of the rest), not dozens a second.
    assert 1 <= len(problem_lines) <= 4, rest[-3000:]
