"""Three ``cueapi serve`` nodes on one PostgreSQL database while thousands of cues come due: one
node is SIGKILLed while deliveries are in flight, another is cut off from the database (its packets
dropped, as a network partition does, not refused) and later reconnected.

The cues are created through all three nodes, so most of them are timed by a node other than the
one that created them. Afterwards the database must hold exactly one execution for every due
occurrence — delivered, or failed, missed or skipped with its reason — every delivery the receiver
saw must belong to a recorded attempt of a recorded execution, and no attempt may have gone out
twice: the only repeats allowed are new attempts (same execution id and idempotency key) of an
attempt cut off mid-flight. The survivors must take the dead node's partitions within the lease
(3 s by default) plus a beat."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import location
from tests.crash.harness import (
    SEED,
    Serve,
    n,
    now_ms,
    partition,
    plan_cues,
    poll,
    query,
    report,
    settled,
    trial_rng,
)
from tests.crash.test_server import Chaos, CrashReceiver, Decision, Delivery, Tally, create

# Several nodes need a database they can share.
STORES = ("postgres",)

CUES_ONCE = 1_400
CUES_CRON = 600
WINDOW_S = 15.0
LEASE_S = 3.0


class Cuttable:
    """A TCP proxy from a free loopback port to the database. ``cut`` turns it into a black hole:
    bytes either way are dropped and new connections are accepted and never answered, while every
    socket stays open (the node sees silence, not an error, as in a network partition). ``heal``
    closes every connection it held and forwards new ones again."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.listener = socket.create_server(("127.0.0.1", 0))
        port = self.listener.getsockname()[1]
        netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
        self.url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.cut_off = False
        self.closed = False
        self.threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.sockets.append(client)
                if self.cut_off:
                    continue  # held open, never answered
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            # Without this, Nagle's algorithm and delayed acknowledgements hold PostgreSQL's small
            # messages back for tens of milliseconds a round trip.
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.sockets.append(upstream)
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                return
            with self.lock:
                dropped = self.cut_off
            if dropped:
                continue
            try:
                dst.sendall(data)
            except OSError:
                return

    def cut(self) -> None:
        with self.lock:
            self.cut_off = True

    def heal(self) -> None:
        with self.lock:
            self.cut_off = False
            held, self.sockets = self.sockets, []
        for s in held:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.listener.close()
        self.heal()


class Targeted(Chaos):
    """Chaos whose kill is armed only by deliveries of the cues one node holds: that node then
    dies with one of its own attempts waiting for its answer."""

    def __init__(self, trial: int) -> None:
        super().__init__(trial)
        self.victim_parts: set[int] = set()

    def decide(self, d: Delivery) -> Decision:
        if partition(d.cue_id) not in self.victim_parts:
            armed, self.armed = self.armed, None
            try:
                return super().decide(d)
            finally:
                self.armed = armed
        return super().decide(d)


def health(url: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/health", timeout=20)
    body: dict[str, Any] = r.json()
    return body


def cluster(url: str) -> dict[str, Any]:
    """A node's view of the cluster, or an empty one while it does not answer."""
    try:
        c: dict[str, Any] = health(url)["cluster"]
        return c
    except (httpx.HTTPError, KeyError, ValueError):
        return {}


def test_three_nodes_share_a_burst_while_one_is_killed_and_one_cut_off(tmp_path: Path, store: str) -> None:
    cues_rng, rng = trial_rng("cluster", 1), trial_rng("cluster-events", 1)
    db = str(location(tmp_path / "cluster.db"))
    proxy = Cuttable(db)
    logs = [tmp_path / f"node{i}" for i in range(3)]
    for d in logs:
        d.mkdir()
    nodes = [Serve(db, logs[0]), Serve(db, logs[1]), Serve(proxy.url, logs[2])]
    chaos = Targeted(1)
    receiver = CrashReceiver(chaos.decide, nodes[1].kill)
    events: list[str] = []
    try:
        urls = [node.listen() for node in nodes]
        with httpx.Client(timeout=30) as c:
            made = c.post(f"{urls[0]}/v1/auth/register", json={"email": "cluster@example.com"}).json()
        key, secret = made["api_key"], made["webhook_secret"]

        # Every node sees the three, and the 60 partitions are shared 20 each.
        def shared_evenly() -> bool:
            views = [cluster(u) for u in urls]
            return all(len(v.get("nodes", [])) == 3 and v.get("partitions_held") == 20 for v in views)

        poll(shared_evenly, 30, "three nodes sharing the partitions", every=0.1)
        victim = cluster(urls[1])["node"]
        held = query(db, "SELECT part FROM cueapi_partitions WHERE holder = ?", (victim,))
        chaos.victim_parts = {int(p) for (p,) in held}
        assert len(chaos.victim_parts) == 20, held

        begun = now_ms()
        chaos.t0 = begun + 4_000 + 6 * (CUES_ONCE + CUES_CRON)
        plan = plan_cues(cues_rng, "c1", chaos.t0, WINDOW_S, CUES_ONCE, CUES_CRON)
        # Each node creates a third of the cues: two thirds of those are timed by another node.
        with ThreadPoolExecutor(3) as pool:
            parts = pool.map(lambda k: create(urls[k], key, receiver.url, plan[k::3]), range(3))
            for names in parts:
                chaos.names.update(names)
        took = (now_ms() - begun) / 1000
        assert now_ms() < chaos.t0 - 200, f"seed={SEED}: creating {len(plan)} cues took {took:.1f} s"
        poll(lambda: now_ms() >= chaos.t0 + rng.uniform(1_000, 3_000), 30, "window", every=0.01)

        # Node 1 dies of SIGKILL while one of the burst's deliveries waits for its answer.
        with receiver.lock:
            chaos.armed = ("delivering", rng.randint(1, 40))
        events.append(nodes[1].await_death("node 1 killed while delivering"))
        with receiver.lock:
            chaos.armed = None
        killed = time.monotonic()
        nodes[1].reap_killed()

        def taken_over() -> bool:
            views = [cluster(urls[0]), cluster(urls[2])]
            return sum(v.get("partitions_held", 0) for v in views) == 60 and all(
                len(v.get("nodes", [])) == 2 for v in views
            )

        poll(taken_over, 30, "the survivors taking node 1's partitions", every=0.05)
        failover = time.monotonic() - killed
        events.append(f"its partitions taken over in {failover:.1f} s")

        # Node 2 is cut off from the database: node 0 takes everything once its lease runs out.
        proxy.cut()
        cut = time.monotonic()

        def alone() -> bool:
            v = cluster(urls[0])
            return v.get("partitions_held") == 60 and len(v.get("nodes", [])) == 1

        poll(alone, 30, "node 0 taking the partitions of the node cut off", every=0.05)
        took = time.monotonic() - cut
        events.append(f"node 2 cut off from the database; node 0 held every partition {took:.1f} s later")
        # Node 2 knows it lost its lease and fires nothing meanwhile.
        poll(lambda: cluster(urls[2]).get("partitions_held") == 0, 30, "node 2 giving up its partitions")
        proxy.heal()
        healed = time.monotonic()

        def back() -> bool:
            views = [cluster(urls[0]), cluster(urls[2])]
            return all(v.get("partitions_held") == 30 and len(v.get("nodes", [])) == 2 for v in views)

        poll(back, 60, "node 2 back with half the partitions", every=0.1)
        events.append(f"reconnected; sharing 30/30 again {time.monotonic() - healed:.1f} s later")

        expected = sum(len(c.instants) for c in plan)
        poll(lambda: settled(db, expected), 120, "settling of every occurrence", every=0.2)
        fired = {i: cluster(urls[i]).get("nodes", []) for i in (0, 2)}
        for i in (0, 2):
            code = nodes[i].stop()
            assert code == 0, f"seed={SEED}: SIGTERM ended node {i} with {code}:\n{nodes[i].tail()}"
    finally:
        for node in nodes:
            node.close()
        receiver.close()
        proxy.close()

    t = Tally.of(db, plan, receiver.deliveries, secret)
    ledger = t.ledger
    shares = ", ".join(f"{v['id'][-6:]} fired {v['fired']}" for v in fired[0])
    report(
        f"crash/cluster (3 nodes on postgres) seed={SEED}: {n(len(plan))} cues, "
        f"{n(ledger.occurrences)} occurrences, {n(ledger.executions)} executions ({ledger.statuses()}), "
        f"{n(len(t.deliveries))} deliveries, {'; '.join(events)}; {n(t.interrupted)} interrupted attempts, "
        f"{n(t.repeats)} repeats (same id+key), {ledger.faults()}, {len(t.problems)} delivery problems; "
        f"ticks fired by the survivors: {shares}"
    )
    ledger.assert_exact("three nodes")
    assert not t.problems, f"seed={SEED}: {len(t.problems)} problems: {t.problems[:10]}"
    assert t.interrupted > 0, "the node killed while delivering left no attempt to take over"
    assert failover <= 2 * LEASE_S, f"failover took {failover:.1f} s"
    assert ledger.by_status.get("success", 0) > 0.9 * ledger.occurrences, ledger.statuses()
