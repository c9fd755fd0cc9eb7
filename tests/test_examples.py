"""The examples that talk to a server run as their docstrings say, against a real `cueapi serve`
started as a process (the embedded quick start and the receivers have smoke tests of their own:
tests/test_docs.py, tests/test_receivers.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`cueapi serve` as a process (private targets allowed, a free port), and a key."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cueapi",
            "serve",
            "--db",
            str(tmp_path / "server.db"),
            "--port",
            "0",
            "--allow-private-targets",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        found = re.search(r"listening on (http://\S+)", proc.stderr.readline())
        assert found, "cueapi serve did not start"
        url = found.group(1)
        r = httpx.post(f"{url}/v1/auth/register", json={"email": "you@example.com"}, timeout=30)
        assert r.status_code == 201, r.text
        yield url, r.json()["api_key"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        if proc.stderr is not None:
            proc.stderr.close()


def test_remote_worker_example(served: tuple[str, str], tmp_path: Path) -> None:
    url, key = served
    work = tmp_path / "laptop"
    work.mkdir()
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "remote_worker.py"), "--base-url", url, "--seconds", "3.5"],
        cwd=work,
        env=dict(os.environ, CUEAPI_API_KEY=key),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert re.search(r"sync_customer_data\s+worker every\s+1s\s+runs=\d+ ok=100%", out.stdout), out.stdout
    assert "Synced 847 records batch_" in out.stdout
    assert "RuntimeError: upstream returned 503" in out.stdout or "flaky_report" in out.stdout
    assert not list(work.iterdir()), "a remote App wrote files (a database?)"
    history = httpx.get(
        f"{url}/v1/executions", params={"status": "success"}, headers={"Authorization": f"Bearer {key}"}
    ).json()
    assert history["total"] >= 2


def test_article_walkthrough_against_a_local_server(served: tuple[str, str], tmp_path: Path) -> None:
    """examples/article_monitoring.py as a program: it creates the article's cue pointing at its own
    Flask agent, fires it, and the agent verifies the delivery and reports the outcome with the
    article's evidence."""
    url, key = served
    auth = {"Authorization": f"Bearer {key}"}
    secret = httpx.get(f"{url}/v1/auth/webhook-secret", headers=auth).json()["webhook_secret"]
    env = dict(os.environ, CUEAPI_BASE_URL=url, CUEAPI_KEY=key, WEBHOOK_SECRET=secret, PYTHONUNBUFFERED="1")
    agent = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "article_monitoring.py"), "--port", "0", "--fire"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert agent.stdout is not None
        cue_id = agent.stdout.readline().split("Created cue: ")[1].strip()
        assert agent.stdout.readline().startswith("Agent listening on http://127.0.0.1:")
        fired = agent.stdout.readline().split("Fired: ")[1].strip()

        def reported() -> dict[str, object] | None:
            # The agent reports during the delivery; the delivery's 200 then settles the status.
            ex = httpx.get(f"{url}/v1/executions/{fired}", headers=auth).json()
            return ex if ex.get("outcome") and ex["status"] not in ("pending", "delivering") else None

        ex = wait_for(reported, timeout=30, what="the agent's outcome report and the delivery's answer")
        assert ex["cue_id"] == cue_id and ex["status"] == "success"
        outcome = ex["outcome"]
        assert isinstance(outcome, dict)
        assert outcome["result"] == "Synced 847 records" and outcome["external_id"] == "batch_20260324_002"
        assert outcome["result_type"] == "data_sync"
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
        if agent.stdout is not None:
            agent.stdout.close()
