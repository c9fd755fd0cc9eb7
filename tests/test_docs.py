"""The README's examples and examples/ run as documented."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conftest import start_server, wait_for

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
    declare, history = block("python", "# embedded engine, SQLite file"), block("python", "app.executions(")
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


def history(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cueapi.cli", "history", "--db", str(db), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def sections(stdout: str) -> dict[str, list[str]]:
    """``history``'s output on a server database: each ``== title ==`` line and the lines under it."""
    out: dict[str, list[str]] = {}
    current: list[str] = []
    for line in stdout.splitlines():
        if line.startswith("== "):
            current = out.setdefault(line, [])
        elif line.strip():
            current.append(line)
    return out


def test_history_of_a_server_database_shows_each_users_cues_under_their_email(tmp_path: Path) -> None:
    import cueapi

    db = tmp_path / "server.db"
    s = start_server(db)  # its user is owner@example.com
    try:
        other, _ = s.register("other@example.com")
        s.register("idle@example.com")
        worker = {"transport": "worker", "schedule": {"type": "recurring", "cron": "0 3 * * *"}}
        mine = s.cue(name="nightly-report", **worker)
        theirs = s.call("POST", "/v1/cues", {"name": "their-sync", **worker}, key=other).json()
        assert s.call("POST", f"/v1/cues/{mine['id']}/fire").status_code == 200
        assert s.call("POST", f"/v1/cues/{theirs['id']}/fire", key=other).status_code == 200
        # While the server holds the database, the command says why it cannot read it, and how else.
        busy = history(db)
        assert busy.returncode == 2 and busy.stdout == "", busy
        assert "cannot read the history" in busy.stderr and "cueapi executions list" in busy.stderr
    finally:
        s.app.close()
    with cueapi.App(db) as app:  # an embedded App's own cue in the same file
        app.cue("0 4 * * *", name="local-job")(lambda ctx: None)
        app.fire("local-job")

    out = history(db)
    assert out.returncode == 0, out.stderr
    got = sections(out.stdout)
    assert list(got) == [
        "== idle@example.com: 0 cues ==",
        "== other@example.com: 1 cue ==",
        "== owner@example.com: 1 cue ==",
        "== local (cues of an embedded App, no server user): 1 cue ==",
    ]
    assert got["== idle@example.com: 0 cues =="] == []
    for title, name in [
        ("== other@example.com: 1 cue ==", "their-sync"),
        ("== owner@example.com: 1 cue ==", "nightly-report"),
        ("== local (cues of an embedded App, no server user): 1 cue ==", "local-job"),
    ]:
        cue_line, run_line = got[title]
        assert cue_line.startswith(name) and " active " in cue_line, got
        assert f" {name} " in run_line and " pending " in run_line and "tries 0" in run_line, got

    only = history(db, "--cue", "their-sync")
    assert only.returncode == 0, only.stderr
    assert list(sections(only.stdout)) == ["== other@example.com: 1 cue =="]
    assert history(db, "--cue", theirs["id"]).stdout == only.stdout
    missing = history(db, "--cue", "nope")
    assert missing.returncode == 2 and "cue not found: nope" in missing.stderr and missing.stdout == ""


def free_port() -> int:
    """A port nothing listens on now (the README's blocks name fixed ports; tests may not)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_readme_server_quick_start(tmp_path: Path) -> None:
    """The README's server quick start, as written, as one script (only its two ports are swapped
    for free ones): the server, a key, the Flask receiver of `cueapi.flask`, a cue calling it, a
    fire, and the outcome the receiver answered with in the history."""
    shell = block("sh", "cueapi serve --db cueapi.db")
    receiver = block("python", "from cueapi.flask import webhook")
    assert shell.splitlines()[0].startswith("cueapi serve --db cueapi.db --allow-private-targets &")
    api, agent = free_port(), free_port()
    (tmp_path / "receiver.py").write_text(receiver.replace("port=5000", f"port={agent}"))
    script = (
        shell.replace("--allow-private-targets &", f"--allow-private-targets --port {api} &", 1)
        .replace("127.0.0.1:8000", f"127.0.0.1:{api}")
        .replace("127.0.0.1:5000", f"127.0.0.1:{agent}")
    )
    # `cueapi` and `python` as after `source .venv/bin/activate`.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = dict(os.environ, PYTHONUNBUFFERED="1", PATH=path)
    # The background jobs are stopped when the script ends, however it ends.
    wrapped = (
        "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n"
        + script
        + '\necho\necho "KEY=$KEY RUN=$RUN"\n'
    )
    got = subprocess.run(
        ["bash", "-c", wrapped], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )
    assert got.returncode == 0, got.stdout + got.stderr
    history = json.loads(got.stdout.splitlines()[-2])
    (run,) = history["executions"]
    assert got.stdout.splitlines()[-1].endswith(f"RUN={run['id']}")
    assert run["status"] == "success" and run["triggered_by"] == "manual_fire"
    outcome = run["outcome"]
    assert outcome["external_id"] == "batch_20260324_002" and outcome["result"] == "Synced 847 records"
    assert outcome["metadata"] == {"records_synced": 847}


def test_readme_client_block(tmp_path: Path) -> None:
    server = start_server(tmp_path / "client.db")
    try:
        code = block("python", "cueapi.CueAPI(base_url=").replace("http://127.0.0.1:8000", server.url)
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, CUEAPI_API_KEY=server.key),
        )
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert re.match(r"cue_\w+ 2\d\d\d-\d\d-\d\d 0[67]:00:00\+00:00$", lines[0]), lines
        assert re.search(r" success reported_success rpt_42$", lines[1]), lines
        assert lines[-1] == "404 cue_not_found"
    finally:
        server.app.close()


def test_readme_remote_block(tmp_path: Path) -> None:
    server = start_server(tmp_path / "remote.db")
    try:
        code = block("python", 'cueapi.App(remote="http://127.0.0.1:8000")').replace(
            "http://127.0.0.1:8000", server.url
        )
        (tmp_path / "remote_app.py").write_text(code)
        env = dict(os.environ, CUEAPI_API_KEY=server.key, PYTHONUNBUFFERED="1")
        with subprocess.Popen(
            [sys.executable, "remote_app.py"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
        ) as proc:
            assert proc.stderr is not None
            try:
                assert f"running 1 cue handler(s) for {server.url}" in proc.stderr.readline()
                (cue,) = server.call("GET", "/v1/cues").json()["cues"]
                assert cue["name"] == "sync_customer_data" and cue["transport"] == "worker"
                run = server.call("POST", f"/v1/cues/{cue['id']}/fire").json()["id"]
                done = wait_for(lambda: server.execution(run).get("outcome"), timeout=30, what="the outcome")
                assert done["result"] == "Synced 847 records"
            finally:
                proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 0
    finally:
        server.app.close()


def test_readme_fastapi_block(tmp_path: Path) -> None:
    """The FastAPI receiver as written, served by uvicorn, takes a real delivery and answers with
    its outcome; a forged request gets 401 with the reason."""
    (tmp_path / "fastapi_receiver.py").write_text(block("python", "cueapi.fastapi.install(FastAPI())"))
    server = start_server(tmp_path / "fastapi.db")
    port = free_port()
    env = dict(os.environ, CUEAPI_WEBHOOK_SECRET=server.secret)
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "fastapi_receiver:app", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            assert proc.stderr is not None
            try:
                while "Uvicorn running on" not in (line := proc.stderr.readline()):
                    assert line, "uvicorn did not start"
                forged = server.http.post(f"http://127.0.0.1:{port}/sync", json={"execution_id": "exec_x"})
                assert forged.status_code == 401
                assert forged.json()["error"]["reason"] == "missing_signature"
                cue = server.cue(
                    name="fastapi-sync",
                    schedule={"type": "recurring", "cron": "0 2 * * *"},
                    callback={"url": f"http://127.0.0.1:{port}/sync"},
                    payload={"batch_size": 1000},
                )
                run = server.call("POST", f"/v1/cues/{cue['id']}/fire").json()["id"]
                done = wait_for(lambda: server.execution(run).get("outcome"), timeout=30, what="the outcome")
                assert done["result"] == "Synced 1000 records" and done["external_id"].startswith(cue["id"])
            finally:
                proc.terminate()
    finally:
        server.app.close()


def test_readme_command_line_block(tmp_path: Path) -> None:
    """The command-line block as written, after the server quick start (which set KEY)."""
    server = start_server(tmp_path / "cli.db")
    try:
        script = block("sh", "cueapi login --api-key").replace("http://127.0.0.1:8000", server.url)
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        env = dict(os.environ, KEY=server.key, PATH=path, XDG_CONFIG_HOME=str(tmp_path / "config"))
        for name in ("CUEAPI_API_KEY", "CUEAPI_API_BASE", "CUEAPI_BASE_URL", "CUEAPI_PROFILE"):
            env.pop(name, None)
        got = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=120, env=env
        )
        assert got.returncode == 0, got.stdout + got.stderr
        (cue,) = server.call("GET", "/v1/cues").json()["cues"]
        assert cue["name"] == "nightly" and cue["schedule"]["timezone"] == "America/New_York"
        runs = server.call("GET", "/v1/executions", params={"cue_id": cue["id"]}).json()["executions"]
        assert [r["payload"] for r in runs] == [{"dry_run": True}]
        assert got.stdout.strip().endswith(cue["next_run"]), got.stdout
        assert "nightly" in got.stdout and cue["id"] in got.stdout
        assert (tmp_path / "config" / "cueapi" / "credentials.json").stat().st_mode & 0o777 == 0o600
    finally:
        server.app.close()


def test_readme_several_nodes_block(tmp_path: Path) -> None:
    """The two-node block as written (on free ports): it starts its own PostgreSQL with tools/pg,
    two nodes on it, and prints the first node's view of the cluster."""
    script = block("sh", "cueapi serve --port 8001 &")
    one, two = free_port(), free_port()
    # Not under tmp_path, whose parents only root may enter: tools/pg hands this directory to the
    # postgres user when run as root.
    pgdir = Path(tempfile.mkdtemp(prefix="cueapi-readme-pg-"))
    assert "PGDIR=$(mktemp -d)" in script
    script = script.replace("8001", str(one)).replace("8002", str(two)).replace("$(mktemp -d)", str(pgdir))
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = dict(os.environ, PYTHONUNBUFFERED="1", PATH=path)
    env.pop("CUEAPI_DB", None)
    # The servers are stopped when the script ends, however it ends, and so is PostgreSQL.
    wrapped = (
        "set -euo pipefail\n"
        f"trap 'kill $(jobs -p) 2>/dev/null; wait; tools/pg stop {pgdir} >/dev/null' EXIT\n"
        + script
        + '\necho "DB=$CUEAPI_DB"\n'
    )
    got = subprocess.run(
        ["bash", "-c", wrapped], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env
    )
    shutil.rmtree(pgdir, ignore_errors=True)
    assert got.returncode == 0, got.stdout + got.stderr
    lines = got.stdout.splitlines()
    assert lines[-1].startswith("DB=postgresql://"), got.stdout
    view = lines[-2]
    assert "'shared': True" in view and "'partitions': 60" in view, view
