"""SIGTERM ends `cueapi serve` within one grace period (8 s) even with a delivery hanging — it took
20 s when the server's wait and the engine's were taken one after the other — and the hanging
delivery is recovered at the next start, not lost."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import Answer, Received, Receiver, start_server, wait_for


def test_sigterm_with_a_hanging_delivery_exits_within_the_grace_period(
    tmp_path: Path, receiver: Receiver
) -> None:
    arrived, released = threading.Event(), threading.Event()

    def hang(_req: Received) -> Answer:
        arrived.set()
        released.wait(60)
        return 200, {}, b"", 0.0

    receiver.answer = hang
    db = tmp_path / "s.db"
    with subprocess.Popen(
        [sys.executable, "-m", "cueapi", "serve", "--db", str(db), "--port", "0", "--allow-private-targets"],
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        found = re.search(r"listening on (http://\S+)", proc.stderr.readline())
        assert found
        url = found.group(1)
        key = httpx.post(f"{url}/v1/auth/register", json={"email": "s@example.com"}).json()["api_key"]
        auth = {"Authorization": f"Bearer {key}"}
        cue = httpx.post(
            f"{url}/v1/cues",
            headers=auth,
            json={
                "name": "hang",
                "schedule": {"type": "once", "at": "2099-01-01T00:00:00Z"},
                "callback": {"url": receiver.url + "/hook"},
            },
        ).json()
        eid = httpx.post(f"{url}/v1/cues/{cue['id']}/fire", headers=auth).json()["id"]
        try:
            assert arrived.wait(30), "the delivery never arrived"  # in flight now, and hanging
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        finally:
            released.set()
            if proc.poll() is None:
                proc.kill()
        took = time.monotonic() - began
    assert code == 0
    assert took < 9.5, f"SIGTERM took {took:.1f} s"
    # The interrupted delivery is recorded as such when the database is next opened, and retried.
    server = start_server(db)
    try:
        ex = wait_for(
            lambda: (
                (e := server.call("GET", f"/v1/executions/{eid}", key=key).json()).get("attempt_log") and e
            )
        )
        assert ex["attempt_log"][0]["status"] == "interrupted"
    finally:
        server.app.close()
