"""``cueapi serve`` as an operator runs it: flags and environment, the startup line, how to get a
key on a fresh database, clean shutdown on SIGINT/SIGTERM with nothing lost, ``cueapi keys``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cueapi
import httpx
import pytest

from tests import pg
from tests.conftest import Receiver, wait_for


@contextmanager
def serve(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """Runs ``cueapi serve`` in a child process; yields (process, base URL, startup text)."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    with subprocess.Popen(
        [sys.executable, "-m", "cueapi.cli", "serve", *args],
        env=full_env,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        lines = []
        try:
            while True:
                line = proc.stderr.readline()
                assert line, f"cueapi serve exited early: {''.join(lines)}"
                lines.append(line)
                if "listening on" in line:
                    break
            url = re.search(r"listening on (http://\S+)", lines[-1])
            assert url, lines
            # The fresh-database hint follows the startup line when there are no users.
            yield proc, url.group(1), "".join(lines)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stderr.close()


def stop(proc: subprocess.Popen[str], sig: int) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=60)


def register(url: str, email: str = "ops@example.com") -> httpx.Response:
    return httpx.post(url + "/v1/auth/register", json={"email": email}, timeout=30)


def deliver_one(url: str, key: str, receiver: Receiver) -> tuple[dict[str, Any], dict[str, Any]]:
    """Creates the cue ``nightly`` with a callback to ``receiver``, fires it and waits until its
    delivery is recorded; returns the cue and the fire."""
    auth = {"Authorization": f"Bearer {key}"}
    cue = httpx.post(
        url + "/v1/cues",
        json={
            "name": "nightly",
            "schedule": {"type": "recurring", "cron": "0 2 * * *", "timezone": "America/New_York"},
            "callback": {"url": receiver.url + "/hook"},
        },
        headers=auth,
        timeout=30,
    ).json()
    fired = httpx.post(url + f"/v1/cues/{cue['id']}/fire", json={}, headers=auth, timeout=30).json()
    receiver.wait(1)
    execution = url + f"/v1/executions/{fired['id']}"
    wait_for(
        lambda: httpx.get(execution, headers=auth, timeout=30).json()["status"] == "success",
        what="the delivery recorded",
    )
    return cue, fired


def test_serve_listens_explains_keys_and_stops_cleanly_on_sigterm(tmp_path: Path, receiver: Receiver) -> None:
    db = tmp_path / "ops.db"
    with serve("--db", str(db), "--port", "0", "--allow-private-targets") as (proc, url, startup):
        assert url.startswith("http://127.0.0.1:")
        assert "registration open" in startup
        assert "PRIVATE TARGETS ALLOWED" in startup
        assert proc.stderr is not None
        hint = proc.stderr.readline() + proc.stderr.readline() + proc.stderr.readline()
        assert "no users yet" in hint and "/v1/auth/register" in hint and "cueapi keys create" in hint
        r = register(url)
        assert r.status_code == 201
        key = r.json()["api_key"]
        cue, fired = deliver_one(url, key, receiver)
        assert stop(proc, signal.SIGTERM) == 0
    # Nothing lost: a new server on the same file has the user, the cue and the execution.
    with serve("--db", str(db), "--port", "0") as (proc, url, startup):
        assert "PRIVATE TARGETS" not in startup
        auth = {"Authorization": f"Bearer {key}"}
        got = httpx.get(url + f"/v1/executions/{fired['id']}", headers=auth, timeout=30).json()
        assert got["status"] == "success" and got["cue_id"] == cue["id"]
        assert httpx.get(url + "/v1/cues", headers=auth, timeout=30).json()["total"] == 1
        assert stop(proc, signal.SIGINT) == 0


def test_serve_on_postgresql_hides_the_password_keeps_everything_and_shares_the_database(
    tmp_path: Path, receiver: Receiver
) -> None:
    """`cueapi serve --db postgresql://…`: the startup line names the database with its password
    hidden; what was served survives a restart; a second node and the offline commands use the
    same database while it runs, and each node lists both."""
    url = pg.database_for(tmp_path / "served.db")
    # The test server trusts local connections, so any password is accepted: only its display is
    # under test.
    db = url.replace("postgresql://postgres@", "postgresql://postgres:s3cret-pw@", 1)
    assert "s3cret-pw" in db
    try:
        with serve("--db", db, "--port", "0", "--allow-private-targets") as (proc, base, startup):
            assert "postgres:***@" in startup and "s3cret-pw" not in startup
            key = register(base).json()["api_key"]
            cue, fired = deliver_one(base, key, receiver)
            other = subprocess.run(
                [sys.executable, "-m", "cueapi.cli", "keys", "create", "x@example.com", "--db", db],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert other.returncode == 0, other.stderr
            assert "s3cret-pw" not in other.stderr + other.stdout
            with serve("--db", db, "--port", "0", "--node-lease", "1.5") as (second, base2, _):

                def nodes(at: str) -> int:
                    view = httpx.get(at + "/health", timeout=30).json()["cluster"]
                    assert view["shared"] is True
                    return len(view["nodes"])

                wait_for(lambda: nodes(base) == 2 and nodes(base2) == 2, 30, "both nodes listing both")
                assert httpx.get(base2 + "/health", timeout=30).json()["cluster"]["node_lease_ms"] == 1500
                assert stop(second, signal.SIGTERM) == 0
            assert stop(proc, signal.SIGTERM) == 0
        with serve("--db", db, "--port", "0") as (proc, base, _):
            auth = {"Authorization": f"Bearer {key}"}
            got = httpx.get(base + f"/v1/executions/{fired['id']}", headers=auth, timeout=30).json()
            assert got["status"] == "success" and got["cue_id"] == cue["id"]
            assert stop(proc, signal.SIGINT) == 0
        history = subprocess.run(
            [sys.executable, "-m", "cueapi.cli", "history", "--db", db],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert history.returncode == 0, history.stderr
        assert "nightly" in history.stdout and "ops@example.com" in history.stdout
    finally:
        pg.drop_all()


def test_environment_variables_and_closed_registration(tmp_path: Path) -> None:
    db = tmp_path / "env.db"
    env = {"CUEAPI_DB": str(db), "CUEAPI_PORT": "0", "CUEAPI_ALLOW_REGISTER": "false"}
    with serve(env=env) as (proc, url, startup):
        assert "registration closed" in startup
        assert str(db) in startup
        r = register(url)
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "registration_closed"
        assert stop(proc, signal.SIGTERM) == 0
    assert db.exists()


def test_bad_settings_are_refused_with_a_message(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cueapi.cli", "serve", "--db", str(tmp_path / "x.db")],
        env=dict(os.environ, CUEAPI_PORT="eighty"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "CUEAPI_PORT" in out.stderr
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cueapi.cli",
            "serve",
            "--db",
            str(tmp_path / "x.db"),
            "--host",
            "203.0.113.7",
        ],
        env=dict(os.environ, CUEAPI_PORT="0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "cannot listen on 203.0.113.7" in out.stderr
    for flag, env_value in ((["--node-lease", "0.1"], None), ([], "forever")):
        env = dict(os.environ, CUEAPI_PORT="0")
        if env_value is not None:
            env["CUEAPI_NODE_LEASE_SECONDS"] = env_value
        out = subprocess.run(
            [sys.executable, "-m", "cueapi.cli", "serve", "--db", str(tmp_path / "x.db"), *flag],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode != 0, out.stderr
        said = "--node-lease must be between 0.3 and 600" if flag else "CUEAPI_NODE_LEASE_SECONDS"
        assert said in out.stderr


def test_keys_create_offline_and_refused_while_the_server_runs(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    out = subprocess.run(
        [sys.executable, "-m", "cueapi.cli", "keys", "create", "dev@example.com", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    key = re.search(r"api key:\s+(cue_sk_[0-9a-f]{32})", out.stdout)
    assert key and re.search(r"webhook secret:\s+whsec_[0-9a-f]{64}", out.stdout)
    with serve("--db", str(db), "--port", "0") as (proc, url, _):
        me = httpx.get(url + "/v1/auth/me", headers={"Authorization": f"Bearer {key.group(1)}"}, timeout=30)
        assert me.status_code == 200 and me.json()["email"] == "dev@example.com"
        busy = subprocess.run(
            [sys.executable, "-m", "cueapi.cli", "keys", "create", "x@example.com", "--db", str(db)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert busy.returncode == 2 and "open in another process" in busy.stderr
        assert stop(proc, signal.SIGTERM) == 0


def test_one_process_serves_http_and_runs_decorated_functions(tmp_path: Path, receiver: Receiver) -> None:
    app = cueapi.App(tmp_path / "both.db", workers=2)
    ran: list[str] = []

    @app.cue("0 3 * * *", name="local-job")
    def local_job(ctx: cueapi.Context) -> str:
        ran.append(ctx.execution_id)
        return "done"

    url = app.serve("127.0.0.1", 0, allow_private_targets=True)
    try:
        key = register(url).json()["api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        cue = httpx.post(
            url + "/v1/cues",
            json={"name": "remote", "schedule": {"cron": "0 3 * * *"}, "callback": {"url": receiver.url}},
            headers=auth,
            timeout=30,
        ).json()
        httpx.post(url + f"/v1/cues/{cue['id']}/fire", headers=auth, timeout=30)
        local_exec = app.fire("local-job")
        receiver.wait(1)
        wait_for(lambda: app.execution(local_exec).status == "success", what="the local run")
        assert ran == [local_exec]
        # The API's users do not see the embedded program's cues, and the reverse.
        names = [c["name"] for c in httpx.get(url + "/v1/cues", headers=auth, timeout=30).json()["cues"]]
        assert names == ["remote"]
        assert [c.name for c in app.cues()] == ["local-job"]
    finally:
        app.close()


@pytest.mark.parametrize("port", [-1, 70000])
def test_serve_rejects_bad_ports(tmp_path: Path, port: int) -> None:
    with cueapi.App(tmp_path / "p.db") as app, pytest.raises(cueapi.ValidationError):
        app.serve("127.0.0.1", port)
