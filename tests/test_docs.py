"""The README's examples and examples/ run as documented."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def stored_cues(db: Path) -> list[tuple[str, str]]:
    if not db.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT name, schedule_timezone FROM cues").fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return []


def test_readme_example_runs_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    declare, history, _ = python_blocks()
    (tmp_path / "declare.py").write_text(declare)
    (tmp_path / "history.py").write_text(history)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with subprocess.Popen(
        [sys.executable, "declare.py"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stderr is not None
        banner = proc.stderr.readline()
        assert "running 1 cue handler(s) from cueapi.db; Ctrl-C to stop" in banner
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    db = tmp_path / "cueapi.db"
    assert stored_cues(db) == [("sync_customer_data", "America/New_York")]
    out = subprocess.run(
        [sys.executable, "history.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "Stats(cue_id='cue_" in out.stdout


def test_readme_signing_example() -> None:
    signing = python_blocks()[2]
    out = subprocess.run([sys.executable, "-c", signing], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_quickstart_example(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "quickstart.py"),
            "--db",
            str(tmp_path / "q.db"),
            "--seconds",
            "3.5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "sync_customer_data" in out.stdout
    assert "Synced 847 records" in out.stdout
    assert "RuntimeError: upstream returned 503" in out.stdout or "flaky_report" in out.stdout


def test_history_command(tmp_path: Path) -> None:
    import cueapi

    db = tmp_path / "h.db"
    with cueapi.App(db) as app:
        app.cue("0 2 * * *", name="nightly")(lambda ctx: None)
        app.fire("nightly")
    out = subprocess.run(
        [sys.executable, "-m", "cueapi.cli", "history", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "nightly" in out.stdout and "pending" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "cueapi.cli", "history", "--db", str(db), "--cue", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "cue not found" in bad.stderr
