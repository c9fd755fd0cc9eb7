"""Several ``cueapi serve`` nodes on one PostgreSQL database (three Apps serving in this process,
each its own node): they share the partitions evenly, a cue created on one node is fired by the
node that holds it as soon as it is due, worker claims raced through different nodes never hand
out an execution twice, an alert is sent once, and a node that leaves hands its partitions over.
SIGKILL and a network cut are in tests/crash/test_cluster.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cueapi
import httpx
import psycopg
import pytest

from tests.conftest import NO_THROTTLE, Receiver, Server, location, start_server, wait_for
from tests.crash.harness import partition

# Several nodes need a database they can share.
STORES = ("postgres",)

FAR = {"type": "once", "at": "2099-01-01T00:00:00Z"}


def join(db: Path, first: Server) -> Server:
    """Another node on the first node's database, serving the same user."""
    app = cueapi.App(location(db), workers=2)
    url = app.serve("127.0.0.1", 0, allow_private_targets=True, rate_limit_per_minute=NO_THROTTLE)
    return Server(app, url, first.key, first.secret, db)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[Server]]:
    db = tmp_path / "cluster.db"
    first = start_server(db)
    up = [first, join(db, first), join(db, first)]
    try:
        wait_for(lambda: all(shares(s) == (3, 20) for s in up), 30, "three nodes sharing the partitions")
        yield up
    finally:
        for s in up:
            s.app.close()


def cluster(s: Server) -> dict[str, Any]:
    body: dict[str, Any] = s.call("GET", "/health").json()["cluster"]
    return body


def shares(s: Server) -> tuple[int, int]:
    """(live nodes, partitions held) as the node sees them."""
    c = cluster(s)
    return len(c["nodes"]), int(c["partitions_held"])


def soon(seconds: float) -> str:
    at = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_the_nodes_share_the_partitions_and_health_and_metrics_show_it(nodes: list[Server]) -> None:
    views = [cluster(s) for s in nodes]
    ids = {v["node"] for v in views}
    assert len(ids) == 3
    for v in views:
        assert v["shared"] is True and v["partitions"] == 60 and v["partitions_held"] == 20
        assert {n["id"] for n in v["nodes"]} == ids
        assert [n["id"] for n in v["nodes"] if n["this"]] == [v["node"]]
        assert all(n["pid"] and n["started_at"] and n["seen_at"] for n in v["nodes"])
    text = nodes[0].call("GET", "/metrics").text
    assert "cueapi_node_partitions_held 20" in text
    assert "cueapi_cluster_nodes_live 3" in text
    for node in ids:
        assert f'cueapi_cluster_node_ticks_fired{{node="{node}"}}' in text


def test_a_cue_created_on_one_node_is_fired_by_the_node_holding_it_when_due(
    nodes: list[Server], receiver: Receiver
) -> None:
    # Created through one node only: about two thirds are held, and fired, by the other two.
    made = [
        nodes[0].cue(
            name=f"soon-{i}",
            schedule={"type": "once", "at": soon(1.5)},
            callback={"url": f"{receiver.url}/hook/{i}"},
        )
        for i in range(30)
    ]
    # Well inside the 30 s after which a node reloads its partitions anyway: each was heard of.
    got = receiver.wait(len(made), timeout=10)
    assert sorted(r.path for r in got) == sorted(f"/hook/{i}" for i in range(len(made)))
    fired = {s.url: 0 for s in nodes}

    def counted() -> bool:
        for s in nodes:
            fired[s.url] = sum(n["fired"] or 0 for n in cluster(s)["nodes"] if n["this"])
        return sum(fired.values()) >= len(made)

    wait_for(counted, 15, "every node's count of ticks fired")
    assert sum(1 for v in fired.values() if v > 0) >= 2, fired


def test_worker_claims_raced_through_three_nodes_hand_out_each_execution_once(nodes: list[Server]) -> None:
    cue = nodes[0].cue(name="work", transport="worker", schedule=FAR, overlap="allow", payload={"task": "a"})
    created = []
    for i in range(150):
        r = nodes[i % 3].call("POST", f"/v1/cues/{cue['id']}/fire", {})
        assert r.status_code == 200, r.text
        created.append(r.json()["id"])
    names = [f"racer-{i}" for i in range(12)]
    got: dict[str, list[str]] = {name: [] for name in names}
    errors: list[str] = []
    start = threading.Barrier(len(names))

    def racer(i: int, name: str) -> None:
        node = nodes[i % 3]
        try:
            with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {node.key}"}) as http:
                r = http.post(node.url + "/v1/worker/heartbeat", json={"worker_id": name, "handlers": ["a"]})
                assert r.status_code == 200, r.text
                start.wait(30)
                for _ in range(len(created) + 1):
                    r = http.post(node.url + "/v1/executions/claim", json={"worker_id": name})
                    if r.status_code == 409 and r.json()["error"]["code"] == "claim_failed":
                        return
                    if r.status_code != 200:
                        errors.append(f"{name}: {r.status_code} {r.text}")
                        return
                    got[name].append(r.json()["execution_id"])
                errors.append(f"{name}: never ran out")
        except Exception as e:  # reported below, not lost in the thread
            errors.append(f"{name}: {e!r}")

    threads = [threading.Thread(target=racer, args=(i, name)) for i, name in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a claimer hung"
    assert errors == []
    won = [eid for name in names for eid in got[name]]
    assert len(won) == len(set(won)) == len(created), "an execution was claimed twice or lost"
    assert set(won) == set(created)
    assert sum(1 for name in names if got[name]) > 3, {k: len(v) for k, v in got.items()}


def test_an_alert_is_sent_once_whichever_node_raises_it(nodes: list[Server], receiver: Receiver) -> None:
    r = nodes[0].call("PATCH", "/v1/auth/me", {"alert_webhook_url": receiver.url + "/alerts"})
    assert r.status_code == 200, r.text
    receiver.answer = lambda req: (
        (500 if req.path == "/hook" else 200),
        {"Content-Type": "application/json"},
        b"{}",
        0.0,
    )
    cue = nodes[1].cue(
        name="failing",
        schedule=FAR,
        callback={"url": receiver.url + "/hook"},
        retry={"max_attempts": 0, "backoff_minutes": [1]},
    )
    r = nodes[2].call("POST", f"/v1/cues/{cue['id']}/fire", {})
    assert r.status_code == 200, r.text

    def alerts_in(path: str) -> list[Any]:
        return [q for q in receiver.requests if q.path == path]

    wait_for(lambda: len(alerts_in("/alerts")) >= 1, 20, "the alert webhook")
    # Once the notification is recorded as sent, no node will send it again.
    with psycopg.connect(str(location(nodes[0].db)), autocommit=True) as pg:

        def recorded() -> list[tuple[Any, ...]]:
            sql = "SELECT status, attempts FROM notifications WHERE channel = 'alert_webhook'"
            return pg.execute(sql).fetchall()

        wait_for(lambda: recorded() == [("sent", 1)], 20, "the notification recorded")
    assert len(alerts_in("/hook")) == 1
    assert len(alerts_in("/alerts")) == 1, alerts_in("/alerts")


def test_a_node_that_closes_hands_its_partitions_over_at_once(nodes: list[Server]) -> None:
    leaving = nodes.pop()
    leaving.app.close()
    # It left the cluster as it closed: no lease to wait out.
    wait_for(lambda: all(shares(s) == (2, 30) for s in nodes), 5, "the two left sharing 30 each")


def test_a_node_joining_takes_partitions_without_cutting_off_the_deliveries_in_flight(
    tmp_path: Path, receiver: Receiver
) -> None:
    db = tmp_path / "cluster.db"
    first = start_server(db)
    up = [first, join(db, first)]
    try:
        wait_for(lambda: all(shares(s) == (2, 30) for s in up), 30, "two nodes sharing the partitions")
        # Each delivery is answered only after the third node has joined and the shares moved.
        joined, arrived = threading.Event(), threading.Semaphore(0)

        def answer(_req: Any) -> tuple[int, dict[str, str], bytes, float]:
            arrived.release()
            return 200 if joined.wait(60) else 500, {"Content-Type": "application/json"}, b"{}", 0.0

        receiver.answer = answer
        cues = [
            first.cue(name=f"slow-{i}", schedule=FAR, callback={"url": f"{receiver.url}/hook/{i}"})
            for i in range(20)
        ]
        fired = [first.call("POST", f"/v1/cues/{c['id']}/fire", {}).json()["id"] for c in cues]
        for _ in fired:  # every one is in flight, held by its node
            assert arrived.acquire(timeout=30), "a delivery never arrived"
        with psycopg.connect(str(location(db)), autocommit=True) as pg:

            def holders() -> dict[int, str]:
                return dict(pg.execute("SELECT part, holder FROM cueapi_partitions").fetchall())

            before = holders()
            up.append(join(db, first))
            wait_for(lambda: all(shares(s) == (3, 20) for s in up), 30, "three nodes sharing the partitions")
            after = holders()
        moved = {p for p in before if before[p] != after[p]}
        assert any(partition(c["id"]) in moved for c in cues), (
            "no delivery in flight was in a moved partition"
        )
        joined.set()
        for eid in fired:
            wait_for(lambda eid=eid: up[0].execution(eid)["status"] == "success", 30, f"{eid} recorded")
        for eid in fired:
            ex = up[0].execution(eid)
            assert ex["attempts"] == 1 and len(ex["attempt_log"]) == 1, ex
            # The attempt names the node that sent it.
            assert ex["attempt_log"][0]["claimed_by"] in {cluster(s)["node"] for s in up[:2]}, ex
        assert len(receiver.requests) == len(fired), "a delivery went out twice"
    finally:
        for s in up:
            s.app.close()
