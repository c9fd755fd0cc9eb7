"""The README's examples and examples/ run as documented."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
from conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def block(lang: str, containing: str) -> str:
    """The README's one ``lang`` block that contains ``containing``."""
    found = [
        b
        for b in re.findall(rf"```{lang}\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
        if containing in b
    ]
    assert len(found) == 1, f"{len(found)} {lang} blocks contain {containing!r}"
    return found[0]


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
    declare, history = block("python", "app.run()"), block("python", "app.executions(")
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
    signing = block("python", "verify_webhook_headers")
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


def test_readme_server_quick_start(tmp_path: Path) -> None:
    """The README's server quick start, as written: register, create a cue calling the Flask
    receiver, fire it; the receiver verifies the signature and reports the outcome."""
    shell = block("sh", "cueapi serve")
    receiver_code = block("python", "from flask import")
    lines = shell.splitlines()
    assert lines[0].startswith("cueapi serve --db cueapi.db --allow-private-targets &")
    cue_at = next(i for i, line in enumerate(lines) if line.startswith("CUE="))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cueapi.cli",
            "serve",
            "--db",
            "cueapi.db",
            "--allow-private-targets",
            "--port",
            "0",
        ],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    flask: subprocess.Popen[str] | None = None
    try:
        assert server.stderr is not None
        url = re.search(r"listening on (http://\S+)", server.stderr.readline())
        assert url
        part_a = "\n".join(lines[1:cue_at]).replace("http://127.0.0.1:8000", url.group(1))
        got = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", part_a + '\necho "$URL $KEY $SECRET"'],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=env,
        )
        assert got.returncode == 0, got.stderr
        base, key, secret = got.stdout.split()
        (tmp_path / "receiver.py").write_text(receiver_code.replace("app.run(port=5000)", "app.run(port=0)"))
        flask = subprocess.Popen(
            [sys.executable, "receiver.py"],
            cwd=tmp_path,
            env=dict(env, URL=base, KEY=key, SECRET=secret),
            stderr=subprocess.PIPE,
            text=True,
        )
        assert flask.stderr is not None
        port = None
        for _ in range(50):
            m = re.search(r"Running on http://127\.0\.0\.1:(\d+)", flask.stderr.readline())
            if m:
                port = m.group(1)
                break
        assert port, "the receiver did not start"
        part_b = "\n".join(lines[cue_at:]).replace("http://127.0.0.1:5000", f"http://127.0.0.1:{port}")
        got = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", part_b + '\necho "CUE=$CUE"'],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=dict(env, URL=base, KEY=key),
        )
        assert got.returncode == 0, got.stderr
        cue = re.search(r"CUE=(cue_\w+)", got.stdout)
        assert cue and '"triggered_by":"manual_fire"' in got.stdout.replace(" ", "")
        auth = {"Authorization": f"Bearer {key}"}

        def reported() -> object:
            r = httpx.get(f"{base}/v1/cues/{cue.group(1)}/executions", headers=auth, timeout=30).json()
            outcomes = [e.get("outcome", {}) for e in r["data"]]
            return outcomes and outcomes[0].get("success") and outcomes[0]

        outcome = wait_for(reported, timeout=30, what="the receiver's outcome report")
        assert isinstance(outcome, dict)
        assert outcome["external_id"] == "batch_20260324_002" and outcome["result"] == "Synced 847 records"
    finally:
        for proc in (flask, server):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
                if proc.stderr is not None:
                    proc.stderr.close()
