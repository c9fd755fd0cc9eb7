"""kill -9 in the middle of a burst of due runs, then a restart: every due occurrence is accounted
for (run, retried, or recorded as missed/skipped with a reason), none is lost, none has two
executions, and the interrupted attempts are recorded."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import cueapi

from tests.conftest import wait_for

CHILD = textwrap.dedent(
    """
    import sys, time
    import cueapi

    db, n = sys.argv[1], int(sys.argv[2])
    app = cueapi.App(db, workers=4)
    for i in range(n):
        app.cue(every="1s", name=f"burst_{i}", retry={"max_attempts": 2, "backoff_minutes": [0]})(
            lambda ctx: time.sleep(0.2)
        )
    app.run()
    """
)

N = 40


def query(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def count(db: Path, where: str) -> int:
    if not db.exists():
        return 0
    try:
        return int(query(db, f"SELECT count(*) FROM executions WHERE {where}")[0][0])  # type: ignore[call-overload]
    except sqlite3.OperationalError:
        return 0  # schema not created yet


def spawn(script: Path, db: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(script), str(db), str(N)], env=env)


def test_kill_9_mid_burst_then_restart(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    db = tmp_path / "burst.db"

    child = spawn(script, db)
    wait_for(lambda: count(db, "1") >= 3 * N, timeout=60, what="a burst of executions")
    wait_for(lambda: count(db, "status = 'delivering'") > 0, timeout=30, what="runs in flight")
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    in_flight_at_kill = count(db, "status = 'delivering'")
    assert in_flight_at_kill > 0
    before = count(db, "1")

    child = spawn(script, db)
    wait_for(lambda: count(db, "1") >= before + 2 * N, timeout=60, what="the restarted process firing")
    wait_for(
        lambda: query(db, "SELECT count(*) FROM attempts WHERE status = 'interrupted'")[0][0],
        timeout=30,
        what="interrupted attempts recorded",
    )
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == 0

    interrupted = query(db, "SELECT execution_id, number FROM attempts WHERE status = 'interrupted'")
    assert len(interrupted) == in_flight_at_kill
    with cueapi.App(db) as app:
        for exec_id, number in interrupted:
            ex = app.execution(str(exec_id))
            assert ex.attempt_log is not None
            assert "exited before it finished" in (ex.attempt_log[int(number) - 1].error or "")  # type: ignore[call-overload]
            # Retried: a later attempt ran, or the retry waits in the queue for the next start.
            assert ex.attempts > int(number) or ex.status == "pending", ex  # type: ignore[call-overload]
        for cue in app.cues():
            rows = app.executions(cue.name, limit=10_000)
            ticks = sorted(int(r.scheduled_for.timestamp() * 1000) for r in rows)
            assert len(ticks) == len(set(ticks)), f"{cue.name}: an occurrence with two executions"
            gaps = {b - a for a, b in itertools.pairwise(ticks)}
            assert gaps <= {1000}, f"{cue.name}: occurrences lost between {ticks[0]} and {ticks[-1]}: {gaps}"
            assert len(ticks) == cue.fired_count + sum(r.status in ("missed", "skipped") for r in rows)
            for r in rows:
                assert r.status in ("pending", "retrying", "success", "failed", "missed", "skipped"), r
                if r.status in ("missed", "skipped"):
                    assert r.error_message, r
            next_run = cue.next_run
            assert next_run is not None and int(next_run.timestamp() * 1000) == ticks[-1] + 1000
        assert not app.executions(status="delivering"), "a graceful stop leaves nothing running"
