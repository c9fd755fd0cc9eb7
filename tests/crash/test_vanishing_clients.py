"""A client killed (or timed out) while the server carries out its request: the connection closes
under the request, and the write it asked for may be committed all the same. What follows that
write in memory — a claim's lease on the timer, a new cue's first tick — must happen too, or the
server holds state nothing looks at again: a claim never released, a cue that never fires (found
by the workers trial: a worker killed mid-claim left its execution running for good)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from tests.conftest import Server, start_server, wait_for

FAR = {"type": "once", "at": "2099-01-01T00:00:00Z"}
TRIES = 10  # the client goes away at a slightly different point each time


def send_and_vanish(s: Server, path: str, body: dict[str, Any]) -> None:
    """POSTs ``body`` and closes the connection at once, without reading the answer."""
    host, port = s.url.removeprefix("http://").rsplit(":", 1)
    raw = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {s.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + raw)


def test_a_claim_whose_worker_vanished_mid_request_is_released(tmp_path: Path) -> None:
    s = start_server(tmp_path / "claims.db", worker_lease_seconds=1.0, worker_timeout_seconds=1.0)
    try:
        ids = []
        for i in range(TRIES):
            cue = s.cue(name=f"job-{i}", transport="worker", schedule=FAR)
            ids.append(s.call("POST", f"/v1/cues/{cue['id']}/fire").json()["id"])
            send_and_vanish(s, f"/v1/executions/{ids[-1]}/claim", {"worker_id": "gone"})

        def states() -> list[tuple[str, list[str]]]:
            out = []
            for eid in ids:
                ex = s.execution(eid)
                out.append((ex["status"], [a["status"] for a in ex.get("attempt_log") or []]))
            return out

        # A claim made is released once its lease (1 s) ran out with its worker silent (1 s).
        try:
            wait_for(lambda: all(st == "pending" for st, _ in states()), timeout=15, what="releases")
        except AssertionError:
            raise AssertionError(f"claims never released: {states()}") from None
        final = states()
        assert all(log in ([], ["abandoned"]) for _, log in final), final
        assert any(log for _, log in final), "no claim was made: the test proved nothing"
    finally:
        s.app.close()


def test_a_cue_created_by_a_client_that_vanished_fires(tmp_path: Path) -> None:
    s = start_server(tmp_path / "cues.db")
    try:
        due = time.time() + 2
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(due)) + f".{int(due % 1 * 1000):03d}Z"
        for i in range(TRIES):
            body = {"name": f"soon-{i}", "transport": "worker", "schedule": {"type": "once", "at": at}}
            send_and_vanish(s, "/v1/cues", body)
        s.cue(name="answered", transport="worker", schedule={"type": "once", "at": at})  # a control
        wait_for(lambda: time.time() > due + 0.5, timeout=10, what="the instant")

        def unfired() -> list[str]:
            cues = s.call("GET", "/v1/cues", params={"limit": 100}).json()["cues"]
            runs = s.call("GET", "/v1/executions", params={"status": "all", "limit": 100}).json()
            fired = {e["cue_id"] for e in runs["executions"]}
            return [c["name"] for c in cues if c["id"] not in fired]

        created = len(s.call("GET", "/v1/cues", params={"limit": 100}).json()["cues"])
        assert created > 0, "no cue was created: the test proved nothing"
        try:
            wait_for(lambda: not unfired(), timeout=10, what="every cue created to fire")
        except AssertionError:
            raise AssertionError(f"created, never fired: {unfired()}") from None
    finally:
        s.app.close()
