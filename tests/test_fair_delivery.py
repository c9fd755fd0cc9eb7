"""Fair delivery (issue 11): a tenant whose endpoints hang fills its own delivery slots and waits
in its own queue; other tenants' webhooks go out at once; no delivery takes longer than the
server's maximum; /health says when the queue every tenant shares cannot drain."""

from __future__ import annotations

import contextlib
import itertools
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cueapi
import httpx
import pytest

from tests.conftest import Receiver, Server, start_server, wait_for

_names = itertools.count()


class Hanging:
    """A loopback TCP endpoint that accepts connections, reads what comes, and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        self.accepted = 0
        self.closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                if self.closed:
                    conn.close()
                    return
                self.open.append(conn)
                self.accepted += 1

    def held(self) -> int:
        """Connections open now (a client that gave up closed its end: that counts as gone)."""
        with self.lock:
            alive = []
            for c in self.open:
                c.setblocking(False)
                try:
                    gone = c.recv(65536) == b""
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                if gone:
                    c.close()
                else:
                    alive.append(c)
            self.open = alive
            return len(alive)

    def cut(self) -> None:
        """Closes the connections open now (their requests fail); new ones are still accepted."""
        with self.lock:
            for c in self.open:
                c.close()
            self.open = []

    def close(self) -> None:
        with self.lock:
            self.closed = True
            for c in self.open:
                c.close()
            self.open = []
        # close() alone does not wake a thread blocked in accept() on Linux; shutdown() does.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture
def hanging() -> Iterator[list[Hanging]]:
    made: list[Hanging] = []
    yield made
    for h in made:
        h.close()


def hang(made: list[Hanging]) -> Hanging:
    h = Hanging()
    made.append(h)
    return h


def webhook_cue(server: Server, url: str, key: str | bool = True, **fields: Any) -> str:
    spec: dict[str, Any] = {
        "name": f"fair-{next(_names)}",
        "schedule": {"type": "once", "at": "2099-01-01T00:00:00Z"},
        "callback": {"url": url},
        "overlap": "allow",
        "retry": {"max_attempts": 0},
        **fields,
    }
    r = server.call("POST", "/v1/cues", spec, key=key)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def fire(server: Server, cue_id: str, key: str | bool = True) -> str:
    r = server.call("POST", f"/v1/cues/{cue_id}/fire", key=key)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def deliveries(server: Server) -> tuple[int, dict[str, Any]]:
    r = server.call("GET", "/health", key=None)
    return r.status_code, r.json()["checks"]["deliveries"]


def test_a_tenant_with_dead_endpoints_does_not_delay_another(
    server: Server, receiver: Receiver, hanging: list[Hanging]
) -> None:
    dead = [hang(hanging) for _ in range(3)]
    # Tenant A: 515 cues spread over three endpoints that never answer; its tenant limit (64)
    # binds. Tenant C: 40 cues at one such endpoint; its destination limit (32) binds.
    a_cues = [webhook_cue(server, dead[i % 3].url, delivery={"timeout_seconds": 3600}) for i in range(515)]
    c_key, _ = server.register("c@example.com")
    one_place = hang(hanging)
    c_cues = [webhook_cue(server, one_place.url, key=c_key) for _ in range(40)]
    for cue in a_cues:
        fire(server, cue)
    for cue in c_cues:
        fire(server, cue, key=c_key)
    wait_for(lambda: sum(h.held() for h in dead) == 64 and one_place.held() == 32, what="64 + 32 held")
    assert all(h.held() <= 32 for h in dead)
    status, d = wait_for(
        lambda: (
            (s := deliveries(server))[1]["behind_tenant_limit"]["waiting"] == 515 - 64
            and s[1]["behind_destination_limit"]["waiting"] == 40 - 32
            and s
        ),
        what="A's backlog in A's own queue and C's in its destination's",
    )
    assert status == 200 and d["status"] == "ok"
    assert d["slots_busy"] == 96 and d["waiting"] == 0
    assert d["behind_destination_limit"]["waiting"] == 40 - 32

    # Tenant B's webhook goes out at once: none of A's or C's requests has ended meanwhile.
    b_key, _ = server.register("b@example.com")
    b_exec = fire(server, webhook_cue(server, receiver.url + "/b", key=b_key), key=b_key)
    (got,) = receiver.wait(1)
    assert got.json()["execution_id"] == b_exec
    assert sum(h.accepted for h in dead) == 64 and one_place.accepted == 32
    r = server.call("GET", f"/v1/executions/{b_exec}", key=b_key)
    wait_for(lambda: server.call("GET", f"/v1/executions/{b_exec}", key=b_key).json()["status"] == "success")
    assert r.status_code == 200

    metrics = server.call("GET", "/metrics", key=None).text
    assert "cueapi_delivery_slots 512" in metrics
    assert 'cueapi_deliveries_waiting{limit="tenant"} 451' in metrics


def test_a_destinations_backlog_waits_claimed_as_deep_as_its_slots(
    tmp_path: Path, hanging: list[Hanging]
) -> None:
    # Two slots per destination: two requests in flight, two more claimed and waiting for a slot
    # (each goes out the moment one frees, with no write in between), the rest pending and claimed
    # when their turn comes. Every attempt starts when its request goes out, not at its claim.
    server = start_server(tmp_path / "s.db", max_deliveries_per_destination=2)
    try:
        dead = hang(hanging)
        ids = [fire(server, webhook_cue(server, dead.url)) for _ in range(6)]

        def statuses() -> list[str]:
            return sorted(server.execution(e)["status"] for e in ids)

        def settled(held: int, delivering: int, pending: int, failed: int) -> bool:
            s = statuses()
            return dead.held() == held and s == sorted(
                ["delivering"] * delivering + ["pending"] * pending + ["failed"] * failed
            )

        wait_for(lambda: settled(2, 4, 2, 0), what="2 in flight, 2 waiting claimed, 2 pending")
        assert dead.accepted == 2
        dead.cut()
        # The two waiting unclaimed stay so: they are claimed when a slot frees for them.
        wait_for(lambda: settled(2, 2, 2, 2), what="the claimed two sent")
        dead.cut()
        wait_for(lambda: settled(2, 2, 0, 4), what="the last two sent")
        dead.cut()
        wait_for(lambda: statuses() == ["failed"] * 6, what="every request cut")
        assert dead.accepted == 6
        runs = [server.execution(e) for e in ids]
        assert all(len(r["attempt_log"]) == 1 for r in runs)
        attempts = sorted((r["attempt_log"][0] for r in runs), key=lambda a: a["started_at"])
        # Each pair started once a request of the pair before it ended (its slot freed then): no
        # attempt counts its wait.
        rounds = [attempts[0:2], attempts[2:4], attempts[4:6]]
        for before, after in itertools.pairwise(rounds):
            freed = min(a["finished_at"] for a in before)
            assert all(a["started_at"] >= freed for a in after), (before, after)
    finally:
        for h in hanging:
            h.close()
        server.app.close()


def test_closing_gives_back_the_claims_still_waiting_for_a_slot(
    tmp_path: Path, hanging: list[Hanging]
) -> None:
    # Two in flight to an endpoint that never answers, two claimed behind them. Closing waits for
    # the two in flight (each times out after the server's maximum of 5 s) and gives the two
    # waiting back unsent: pending, with no attempt, for the next open to send.
    server = start_server(tmp_path / "s.db", max_deliveries_per_destination=2, max_delivery_timeout_seconds=5)
    dead = hang(hanging)
    ids = [fire(server, webhook_cue(server, dead.url)) for _ in range(4)]
    wait_for(
        lambda: dead.held() == 2 and all(server.execution(e)["status"] == "delivering" for e in ids),
        what="two in flight, two claimed waiting",
    )
    server.app.close()
    with contextlib.closing(sqlite3.connect(server.db)) as db:
        rows = dict(db.execute("SELECT id, status || ' ' || attempts FROM executions").fetchall())
        attempts = db.execute("SELECT count(*) FROM attempts").fetchone()[0]
    assert sorted(rows[e] for e in ids) == ["failed 1", "failed 1", "pending 0", "pending 0"]
    assert attempts == 2 and dead.accepted == 2


def test_no_delivery_outlasts_the_servers_maximum(tmp_path: Path, hanging: list[Hanging]) -> None:
    server = start_server(tmp_path / "s.db", max_delivery_timeout_seconds=1)
    try:
        dead = hang(hanging)
        eid = fire(server, webhook_cue(server, dead.url, delivery={"timeout_seconds": 3600}))
        ex = wait_for(
            lambda: (e := server.execution(eid))["status"] == "failed" and e, timeout=20, what="the timeout"
        )
        (attempt,) = ex["attempt_log"]
        assert "timed out" in attempt["error"]
        assert 900 <= attempt["duration_ms"] < 3000
        # The cue still says what it asked for; the server's maximum is what applied.
        assert server.call("GET", f"/v1/cues/{ex['cue_id']}").json()["delivery"]["timeout_seconds"] == 3600
    finally:
        for h in hanging:
            h.close()
        server.app.close()


def test_health_says_when_the_shared_queue_cannot_drain(tmp_path: Path, hanging: list[Hanging]) -> None:
    # Four server slots, two per tenant; five tenants each fire four deliveries at an endpoint
    # that never answers, each held for the server's maximum of 1 s: the server's queue fills
    # faster than it drains, and a delivery waits longer than a delivery may take.
    server = start_server(
        tmp_path / "s.db",
        max_deliveries=4,
        max_deliveries_per_tenant=2,
        max_deliveries_per_destination=2,
        max_delivery_timeout_seconds=1,
    )
    try:
        dead = hang(hanging)
        keys = [server.key] + [server.register(f"t{i}@example.com")[0] for i in range(4)]
        runs = []
        for key in keys:
            for _ in range(4):
                runs.append((key, fire(server, webhook_cue(server, dead.url, key=key), key=key)))
        status, d = wait_for(lambda: (s := deliveries(server))[1]["status"] == "stuck" and s, what="stuck")
        assert status == 503
        assert d["slots"] == 4 and d["slots_busy"] == 4 and d["stuck_after_ms"] == 1000
        assert "cannot drain" in d["reason"] and "--max-deliveries" in d["reason"]
        body = server.call("GET", "/health", key=None).json()
        assert "deliveries" in body["failing"]
        s = server.call("GET", "/status", key=None)
        assert s.status_code in (200, 503)
        # Everything times out in its turn; the queue drains and /health is healthy again.
        for key, eid in runs:
            wait_for(
                lambda key=key, eid=eid: (
                    server.call("GET", f"/v1/executions/{eid}", key=key).json()["status"] == "failed"
                ),
                timeout=60,
                what=f"{eid} timed out",
            )
        status, d = deliveries(server)
        assert (status, d["status"], d["waiting"], d["slots_busy"]) == (200, "ok", 0, 0)
    finally:
        for h in hanging:
            h.close()
        server.app.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_deliveries": 0}, "max_deliveries must be an int between 1 and 65536"),
        ({"max_deliveries": True}, "max_deliveries must be an int"),
        (
            {"max_deliveries_per_tenant": 600},
            "max_deliveries_per_tenant (600) cannot exceed max_deliveries (512)",
        ),
        ({"max_deliveries_per_destination": 1.5}, "max_deliveries_per_destination must be an int"),
        ({"max_delivery_timeout_seconds": 0.5}, "between 1 and 3600"),
        ({"max_delivery_timeout_seconds": 3601}, "between 1 and 3600"),
        ({"max_delivery_timeout_seconds": float("nan")}, "between 1 and 3600"),
    ],
)
def test_bad_delivery_limits_are_refused(tmp_path: Path, settings: dict[str, Any], message: str) -> None:
    with cueapi.App(tmp_path / "x.db") as app:
        with pytest.raises(cueapi.ValidationError) as info:
            app.serve("127.0.0.1", 0, **settings)
        assert message in str(info.value)
        # Nothing was set: the same App serves with good limits, and they are the ones in force.
        url = app.serve("127.0.0.1", 0, max_deliveries=7)
        d = httpx.get(url + "/health", timeout=30).json()["checks"]["deliveries"]
        assert d["slots"] == 7
        # The tenant and destination defaults (64 and 32) shrink to the server's 7.
        assert app._native("limits").delivery_limits() == (7, 7, 7, 300_000)
