"""The cluster benchmarks (issue 12): `cueapi serve` nodes on one PostgreSQL database, beside one
node on SQLite, measured the way bench/server.py measures one server.

    python bench/cluster.py PART cueapi PARAMS_JSON   # one measurement (bench/run.py starts it)
    python bench/cluster.py pg-guard DIR              # stops the PostgreSQL server in DIR at EOF

PART is ``cluster-precision`` (webhook cues on an every-second cron: fire lag, per node),
``cluster-burst`` (one-shots due the same second), ``cluster-api`` (cue creations and outcome
reports per second) or ``cluster-failover`` (a node SIGKILLed: time until a survivor fires its
cues' ticks); the last line on stdout is ``RESULT <json>``. Each part measures its setups in turn
(SQLite with one node; PostgreSQL with 1, 2 or 3 nodes), each on a database of its own: a SQLite
file, or a fresh database on one throw-away PostgreSQL server (``tools/pg``) that the part starts
and that a guard process stops however the part ends (even SIGKILLed by bench/run.py's time
limit). The nodes are bench/server.py's ``Server`` processes (``cueapi.App(db).serve(...)``, one
process each, default node lease), the receiver and the load generator are its ``Receiver`` and
``wrk``. Besides CPU per process group (the nodes, PostgreSQL's processes, the receiver, wrk),
each phase samples what the database's client backends are doing (``pg_stat_activity``: on CPU,
waiting for a lock, for I/O, or idle inside a transaction waiting for the node's next statement,
i.e. a round trip), counts its statements (``pg_stat_statements``), and follows the nodes' beats
and the partitions' holders (``cueapi_nodes``, ``cueapi_partitions``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from server import (
    CpuWatch,
    Receiver,
    Server,
    _strip,
    await_burst,
    create_cues,
    create_every_second,
    emit,
    iso,
    parse_deliveries,
    percentiles,
    seed_worker_executions,
    sleep_until,
    store_counts,
    wrk,
)

HERE = Path(__file__).resolve().parent
TOOLS_PG = HERE.parent / "tools" / "pg"
PARTITIONS = 60  # src/store/cluster.rs::PARTITIONS
POLL_S = 0.05

# -- partitions ---------------------------------------------------------------------------------------


def partition(cue_id: str) -> int:
    """The partition of a cue, as ``partition()`` in src/store/cluster.rs: FNV-1a (64-bit) of its
    id, mod 60."""
    h = 0xCBF29CE484222325
    for b in cue_id.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h % PARTITIONS


def fair_share(index: int, n: int) -> int:
    """src/store/cluster.rs::fair_share."""
    return PARTITIONS // n + (index < PARTITIONS % n)


# -- PostgreSQL --------------------------------------------------------------------------------------


def guard_main(directory: str) -> None:
    """Waits for EOF on stdin (the part closed it, or ended however it ended), then stops the
    server in ``directory`` and removes its files."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of the run must not skip the stop
    sys.stdin.read()
    subprocess.run([str(TOOLS_PG), "stop", directory], capture_output=True, timeout=120, check=False)
    shutil.rmtree(directory, ignore_errors=True)


class Postgres:
    """One throw-away PostgreSQL server for a part. Its directory is a fresh one under the system's
    temporary directory, not under the harness's: tools/pg, run as root, hands it to the
    ``postgres`` user, who could not enter a 0700 parent of root's."""

    def __init__(self) -> None:
        import psutil
        import psycopg

        self.dir = Path(tempfile.mkdtemp(prefix="cueapi-bench-pg-"))
        # Started first, so that the server is stopped whatever happens from here on.
        self.guard = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "pg-guard", str(self.dir)],
            stdin=subprocess.PIPE,
        )
        done = subprocess.run(
            [str(TOOLS_PG), "start", str(self.dir)], capture_output=True, text=True, timeout=600, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"tools/pg start failed ({done.returncode}): {done.stderr[-1500:]}")
        url = done.stdout.strip().splitlines()[-1]
        # pg_stat_statements counts every statement as it ends (the cumulative statistics views
        # hear of a backend's transactions up to 10 s late): it is loaded at start, so the server
        # is restarted once with it (on a new free port).
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            # The database's name on each line of the server's log, to tell the setups' errors apart.
            conn.execute("ALTER SYSTEM SET log_line_prefix = '%m [%p] %d '")
        for cmd in ("stop", "start"):
            done = subprocess.run(
                [str(TOOLS_PG), cmd, str(self.dir)], capture_output=True, text=True, timeout=300, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(f"tools/pg {cmd} failed ({done.returncode}): {done.stderr[-1500:]}")
        self.url = done.stdout.strip().splitlines()[-1]
        self.admin = psycopg.connect(self.url, autocommit=True)
        # Its view, here, shows every database's statements.
        self.admin.execute("CREATE EXTENSION pg_stat_statements")
        self.version = str(self.admin.execute("SHOW server_version").fetchall()[0][0])
        self.settings: dict[str, str] = dict(
            self.admin.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', "
                "'max_connections', 'shared_buffers', 'default_transaction_isolation')"
            ).fetchall()
        )
        pid = int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        self.postmaster = psutil.Process(pid)
        self.cpu0 = self.cpu()
        self.used_cpu_s = 0.0

    def database(self, name: str) -> str:
        """A fresh database ``name`` and its URL."""
        self.admin.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + "/" + name

    def errors(self, name: str) -> dict[str, int]:
        """The errors the server logged in database ``name``, by message (numbers elided), the
        most frequent first."""
        counts: dict[str, int] = {}
        for line in (self.dir / "log").read_text(errors="replace").splitlines():
            head, sep, msg = line.partition(" ERROR:  ")
            if sep and head.endswith(f" {name}"):
                key = re.sub(r"\d+", "N", msg.strip())[:200]
                counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:6])

    def cpu(self) -> float:
        """CPU seconds of the server's processes so far: the postmaster, with its children that
        have ended (backends of closed connections), and every live child."""
        t = self.postmaster.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in self.postmaster.children(recursive=True):
            with contextlib.suppress(Exception):  # ended meanwhile: its time is in children_*
                c = child.cpu_times()
                total += c.user + c.system
        return float(total)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.used_cpu_s = self.cpu() - self.cpu0
        with contextlib.suppress(Exception):
            self.admin.close()
        assert self.guard.stdin is not None
        self.guard.stdin.close()
        self.guard.wait(180)


class PgPhase:
    """What a database did over a phase: its statements (``pg_stat_statements``, counted as each
    ends: every statement is a round trip between a node and the server), the commits and
    rollbacks among them and the server's time executing them, and what its client backends were
    doing, sampled every ``POLL_S`` s on a connection of its own."""

    def __init__(self, pg: Postgres, url: str) -> None:
        import psycopg

        self.name = url.rsplit("/", 1)[1]
        self.conn = psycopg.connect(pg.url, autocommit=True)
        # The nodes' beats and the partitions' holders, read in the measured database itself (its
        # statements, marked, are left out of the counts).
        self.tables = psycopg.connect(url, autocommit=True)
        self.before = self._statements()
        self.t0 = time.time()
        self.samples = 0
        self.states: dict[str, int] = {}
        self.events: dict[str, int] = {}
        self.seen: dict[str, list[int]] = {}
        self.holders: dict[int, str | None] = {}
        self.moves: list[tuple[float, str | None, str | None]] = []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _statements(self) -> dict[int, tuple[str, float, float]]:
        rows = self.conn.execute(
            "SELECT queryid, query, calls, total_exec_time FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s AND s.query NOT LIKE '/* bench */%%'",
            (self.name,),
        ).fetchall()
        return {qid: (q, float(calls), float(ms)) for qid, q, calls, ms in rows}

    def _sample(self) -> None:
        q = (
            "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
            "WHERE datname = %s AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        while not self.stop_flag.wait(POLL_S):
            try:
                rows = self.conn.execute(q, (self.name,)).fetchall()
            except Exception:
                return
            self._cluster_tables()
            self.samples += 1
            for state, wtype, event in rows:
                kind = _backend_kind(state, wtype)
                self.states[kind] = self.states.get(kind, 0) + 1
                if kind != "idle" and wtype:
                    label = f"{wtype}:{event}"
                    self.events[label] = self.events.get(label, 0) + 1

    def _cluster_tables(self) -> None:
        """Notes each node's new beats (``seen_at``, the database's clock) and each partition that
        changed holder."""
        now = time.time() - self.t0
        for node, seen in self.tables.execute("/* bench */ SELECT id, seen_at FROM cueapi_nodes").fetchall():
            beats = self.seen.setdefault(node, [])
            if not beats or beats[-1] != seen:
                beats.append(seen)
        for part, holder in self.tables.execute("/* bench */ SELECT part, holder FROM cueapi_partitions"):
            if part in self.holders and self.holders[part] != holder:
                self.moves.append((now, self.holders[part], holder))
            self.holders[part] = holder

    def stop(self, span: float) -> dict[str, Any]:
        self.stop_flag.set()
        self.thread.join()
        after = self._statements()
        self.conn.close()
        self.tables.close()
        # Beats a node made over the phase, and the longest time between two of them (the lease
        # runs out, and the others take its partitions, after 3 s without one).
        beats = {
            node: {
                "beats": len(seen),
                "max_gap_s": max((b - a for a, b in itertools.pairwise(seen)), default=0) / 1000,
            }
            for node, seen in self.seen.items()
        }
        moved: dict[str, int] = {}
        for _, a, b in self.moves:
            key = f"{a or 'free'} -> {b or 'free'}"
            moved[key] = moved.get(key, 0) + 1
        span = max(span, 1e-6)
        n = max(self.samples, 1)
        delta = []
        for qid, (q, calls, ms) in after.items():
            _, calls0, ms0 = self.before.get(qid, (q, 0.0, 0.0))
            if calls > calls0:
                delta.append((q, calls - calls0, ms - ms0))
        delta.sort(key=lambda x: -x[1])

        def calls_of(word: str) -> float:
            return sum(c for q, c, _ in delta if q.strip().upper().startswith(word))

        top = sorted(self.events.items(), key=lambda kv: -kv[1])[:4]
        return {
            "span_s": span,
            "samples": self.samples,
            # Mean number of the database's client backends in each state over the samples.
            "backends": {k: v / n for k, v in sorted(self.states.items())},
            "waits": {k: v / n for k, v in top},
            "statements": sum(c for _, c, _ in delta),
            "commits": calls_of("COMMIT"),
            "rollbacks": calls_of("ROLLBACK"),
            "exec_ms": sum(ms for _, _, ms in delta),
            "beats": beats,
            "partition_moves": moved,
            "first_move_s": self.moves[0][0] if self.moves else None,
            "top": [
                {"query": " ".join(q.split())[:160], "calls": c, "mean_ms": ms / c} for q, c, ms in delta[:6]
            ],
        }


def _backend_kind(state: str | None, wait_type: str | None) -> str:
    if state is None or state == "idle":
        return "idle"
    if state.startswith("idle in transaction"):
        return "in_transaction_waiting_for_node"
    if wait_type is None:
        return "on_cpu"
    return {"Lock": "lock", "LWLock": "lwlock", "IO": "io", "Client": "client_io"}.get(
        wait_type, "other_wait"
    )


# -- the nodes ---------------------------------------------------------------------------------------


class Cluster:
    """``k`` nodes serving one database, started one after the other (the first creates the
    schema), each a bench/server.py ``Server`` with a directory of its own for its stderr."""

    def __init__(self, db: str, k: int, tmp: Path, shared: bool) -> None:
        self.db, self.tmp, self.shared = db, tmp, shared
        self.started = 0
        self.nodes: list[Server] = []
        try:
            for _ in range(k):
                self.nodes.append(self.start())
        except BaseException:
            self.stop()
            raise
        self.ids = [self.health(n)["cluster"]["node"] for n in self.nodes]

    def start(self) -> Server:
        d = self.tmp / f"node-{self.started}"
        self.started += 1
        d.mkdir(parents=True)
        return Server(self.db, d)

    def replace(self, i: int) -> None:
        """A new node in place of node ``i`` (which has ended)."""
        self.nodes[i] = self.start()
        self.ids[i] = self.health(self.nodes[i])["cluster"]["node"]

    @staticmethod
    def health(node: Server) -> dict[str, Any]:
        status, body = node.call("GET", "/health")
        if not isinstance(body, dict) or "cluster" not in body:
            raise RuntimeError(f"GET /health answered {status}: {body}")
        return body

    def held(self, alive: list[int] | None = None) -> list[int]:
        """Partitions held, per node (of ``alive``: default every node), as each says."""
        idx = range(len(self.nodes)) if alive is None else alive
        return [self.health(self.nodes[i])["cluster"]["partitions_held"] for i in idx]

    def fired(self) -> list[int | None]:
        """Ticks each node has released so far (its own count, in /health)."""
        out: list[int | None] = []
        for node in self.nodes:
            mine = [n for n in self.health(node)["cluster"].get("nodes", []) if n.get("this")]
            out.append(mine[0]["fired"] if mine else None)
        return out

    def wait_even(self, timeout: float) -> float:
        """Polls until the nodes hold fair shares of the partitions, each sees exactly them live,
        and the table agrees; returns the seconds it took."""
        if not self.shared:
            return 0.0
        k = len(self.nodes)
        t0 = time.time()
        want = sorted(fair_share(i, k) for i in range(k))
        while True:
            views = [self.health(n)["cluster"] for n in self.nodes]
            live_ok = all(len(v.get("nodes", [])) == k for v in views)
            shares = sorted(v["partitions_held"] for v in views)
            if live_ok and shares == want and sorted(self.holders_count().values()) == want:
                return time.time() - t0
            if time.time() - t0 > timeout:
                raise RuntimeError(f"shares not even within {timeout:.0f} s: {views}")
            time.sleep(POLL_S)

    def holders_count(self) -> dict[str, int]:
        rows = _pg_rows(self.db, "SELECT coalesce(holder, ''), count(*) FROM cueapi_partitions GROUP BY 1")
        return {h: int(c) for h, c in rows}

    def holders(self) -> dict[int, int]:
        """Partition -> index of the node holding it (-1: no node of ours), from the table."""
        if not self.shared:
            return dict.fromkeys(range(PARTITIONS), 0)
        rows = _pg_rows(self.db, "SELECT part, holder FROM cueapi_partitions")
        return {int(part): self.ids.index(h) if h in self.ids else -1 for part, h in rows}

    def stop(self) -> list[dict[str, Any]]:
        return [n.stop() for n in self.nodes if n.proc.poll() is None]

    def problems(self) -> dict[str, int]:
        """What the engines logged (every node, killed ones included), by message (ids and
        numbers elided), the most frequent first."""
        counts: dict[str, int] = {}
        for f in sorted(self.tmp.glob("node-*/server.stderr")):
            for line in f.read_text(errors="replace").splitlines():
                _, sep, msg = line.partition("cueapi engine: ")
                if sep:
                    key = re.sub(r"\b(cue|exec|engine)_\w+|\d+", "…", msg)[:200]
                    counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:6])


def _pg_rows(url: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def store_counts_any(db: str, names_like: str) -> dict[str, Any]:
    """bench/server.py's ``store_counts`` for either store (PostgreSQL: read over SQL)."""
    if not db.startswith("postgresql://"):
        return store_counts(db, names_like)
    joined = "FROM executions e JOIN cues c ON c.id = e.cue_id WHERE c.name LIKE %s"
    rows = _pg_rows(db, f"SELECT e.status, count(*) {joined} GROUP BY e.status", (names_like,))
    totals = _pg_rows(db, f"SELECT count(*), coalesce(max(e.attempts), 0) {joined}", (names_like,))
    n, max_attempts = totals[0]
    return {"statuses": {s: int(c) for s, c in rows}, "executions": int(n), "max_attempts": int(max_attempts)}


# -- CPU per process group -----------------------------------------------------------------------------


class Phase:
    """CPU over a phase per process group (each node with its busiest threads, the nodes together,
    PostgreSQL's processes, the receiver, wrk, the machine; % of one core, 2 cores = 200%) and,
    on PostgreSQL, what the database did (``PgPhase``)."""

    def __init__(self, nodes: list[Server], receiver: Receiver | None, pg: Postgres | None, db: str) -> None:
        self.db = PgPhase(pg, db) if pg else None
        self.node_watches = [CpuWatch({"node": n.ps}, n) for n in nodes]
        self.rest = CpuWatch({"receiver": receiver.ps} if receiver else {}, None)
        self.pg = pg
        self.pg0 = pg.cpu() if pg else 0.0

    def stop(self, span: float) -> dict[str, Any]:
        span = max(span, 1e-6)
        per_node = []
        for w in self.node_watches:
            r = w.stop(span)
            per_node.append({**r["node"], "threads": r.get("server_threads", [])})
        pg_cpu = self.pg.cpu() - self.pg0 if self.pg else None
        out = self.rest.stop(span)
        total = sum(n["cpu_s"] for n in per_node if not math.isnan(n["cpu_s"]))
        out["nodes"] = {"cpu_s": total, "pct": 100 * total / span, "each": per_node}
        if pg_cpu is not None:
            out["postgres"] = {"cpu_s": pg_cpu, "pct": 100 * pg_cpu / span}
        ours = sum(out[k]["pct"] for k in ("nodes", "postgres", "receiver", "generator") if k in out)
        out["everything_else_pct"] = max(0.0, out["machine_busy_pct"] - ours)
        if self.db is not None:
            out["db"] = self.db.stop(span)
        return out


# -- shared steps -------------------------------------------------------------------------------------


SETUPS = {"sqlite": ("sqlite", 1), "pg1": ("pg", 1), "pg2": ("pg", 2), "pg3": ("pg", 3)}


def with_setup(
    name: str, p: dict[str, Any], pg: Postgres | None, work: Any, tmp_base: Path, names_like: str
) -> dict[str, Any]:
    """Starts the nodes of setup ``name`` on a database of their own, runs ``work(cluster, pg, tmp)``
    and stops them, then reads the executions of the cues named ``names_like`` from the store; a
    failure is this setup's result (with why), not the part's end."""
    kind, k = SETUPS[name]
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp_base))
    if kind == "sqlite":
        db, shared, pg = str(tmp / "cueapi.db"), False, None
    else:
        assert pg is not None
        db, shared = pg.database(f"{p['tag']}_{name}"), True
    out: dict[str, Any] = {"setup": name, "store": kind, "nodes": k}
    cl: Cluster | None = None
    try:
        cl = Cluster(db, k, tmp, shared)
        out["even_s"] = cl.wait_even(60)
        out.update(work(cl, pg, tmp))
    except Exception as exc:
        import traceback

        out["error"] = f"{type(exc).__name__}: {exc}"
        out["stderr"] = traceback.format_exc()[-2000:]
    finally:
        if cl is not None:
            out["node_stop"] = cl.stop()
            out["node_problems"] = cl.problems()
        if pg is not None:
            out["pg_errors"] = pg.errors(db.rsplit("/", 1)[1])
    if "error" not in out:
        out["store_check"] = store_counts_any(db, names_like)
    return out


def attribute(deliveries: list[dict[str, Any]], holders: dict[int, int]) -> None:
    """Each delivery's node: the one holding its cue's partition."""
    for d in deliveries:
        d["node"] = holders.get(partition(d["cue_id"]), -1)


def deliveries_with_cues(
    records: list[dict[str, Any]], secret: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """bench/server.py's ``parse_deliveries``, each with its body's ``cue_id``."""
    deliveries, check = parse_deliveries(records, secret)
    for d, r in zip(deliveries, records, strict=True):
        d["cue_id"] = json.loads(r["body"])["cue_id"]
    return deliveries, check


def per_node(deliveries: list[dict[str, Any]], cl: Cluster, holders: dict[int, int]) -> list[dict[str, Any]]:
    out = []
    for i, node_id in enumerate(cl.ids):
        mine = [d for d in deliveries if d["node"] == i]
        parts = sum(1 for h in holders.values() if h == i)
        out.append(
            {
                "node": node_id,
                "partitions": parts,
                "cues": len({d["cue_id"] for d in mine}),
                "deliveries": len(mine),
                **percentiles([d["t"] - d["scheduled"] for d in mine]),
            }
        )
    return out


def create_spread(
    cl: Cluster, key: str, spec: dict[str, Any], n: int, tag: str, p: dict[str, Any], tmp: Path
) -> dict[str, Any]:
    """``n`` cues created with wrk through every node in turn (node i creates its ``n / k``, named
    ``<tag><i>-…``), one node at a time; the rate is over the sum of the runs' spans."""
    k = len(cl.nodes)
    runs = []
    for i, node in enumerate(cl.nodes):
        share = n // k + (i < n % k)
        runs.append(_strip(create_cues(node, key, spec, share, f"{tag}{i}", p, tmp, {"server": node.ps})))
    ok = sum(r["ok"] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    return {
        "n": n,
        "ok": ok,
        "requests": sum(r["requests"] for r in runs),
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "seconds": seconds,
        "per_s": ok / max(seconds, 1e-6),
        "by_node": [{k_: r[k_] for k_ in ("ok", "per_s", "p50_ms", "p99_ms", "cpu")} for r in runs],
    }


def wrk_together(
    cl: Cluster,
    pg: Postgres | None,
    method: str,
    path: str,
    body: str,
    key: str,
    ids: list[str] | None,
    limit: int,
    tag: str,
    p: dict[str, Any],
    tmp: Path,
) -> dict[str, Any]:
    """One wrk per node, all at once, the ``p['connections']`` connections split between them (the
    same offered concurrency whatever the number of nodes); node i takes ids i, i + k, … (or its
    share of ``limit``). The rate is every 2xx answer / (last answer - first request), over all."""
    k = len(cl.nodes)
    conns = max(1, p["connections"] // k)
    results: list[dict[str, Any] | BaseException | None] = [None] * k

    def one(i: int) -> None:
        node = cl.nodes[i]
        sub = tmp / f"{tag}-{i}"
        sub.mkdir(exist_ok=True)
        mine = ids[i::k] if ids is not None else None
        share = 0 if ids is not None else limit // k + (i < limit % k)
        try:
            results[i] = wrk(
                node.url,
                method,
                path,
                body,
                key=key,
                limit=share,
                ids=mine,
                tag=f"{tag}{i}",
                p={**p, "connections": conns},
                watch={"server": node.ps},
                server=node,
                tmp=sub,
                # PostgreSQL runs some of these below wrk's default bound (>= 500 requests/s): a
                # run that reaches its bound ends short of its requests.
                bound_s=p["timeout"],
            )
        except BaseException as exc:  # re-raised below, in the caller's thread
            results[i] = exc

    phase = Phase(cl.nodes, None, pg, cl.db)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    runs: list[dict[str, Any]] = [r for r in results if isinstance(r, dict)]
    first, last = min(r["first"] for r in runs), max(r["last"] for r in runs)
    wall = max(last - first, 1e-6)
    ok = sum(r["ok"] for r in runs)
    # wrk's own CPU figure is every wrk that ended during its run: the phase's is the one to read.
    out: dict[str, Any] = {
        "requests": sum(r["requests"] for r in runs),
        "ok": ok,
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "complete": all(r["complete"] for r in runs),
        "seconds": wall,
        "per_s": ok / wall,
        "connections": conns * k,
        "p50_ms": max(r["p50_ms"] for r in runs),
        "p99_ms": max(r["p99_ms"] for r in runs),
        "by_node": [
            {k_: r[k_] for k_ in ("requests", "ok", "per_s", "p50_ms", "p99_ms", "socket_errors", "seconds")}
            for r in runs
        ],
        "cpu": phase.stop(wall),
    }
    said = "".join(r.get("wrk_stderr", "") for r in runs)
    if said:
        out["wrk_stderr"] = said[-600:]
    return out


# -- 1. fire precision ---------------------------------------------------------------------------------


def cluster_precision(p: dict[str, Any], pg: Postgres | None) -> dict[str, Any]:
    """``cues`` webhook cues on an every-second cron (as server-precision), created through the
    nodes in turn; lag = arrival at the receiver - the body's ``scheduled_for``, overall and per
    node (the node holding the cue's partition, from ``cueapi_partitions``)."""
    cues, seconds, warmup = p["cues"], p["seconds"], p["warmup"]
    base = Path(tempfile.mkdtemp(prefix="work-", dir=os.path.dirname(p["db"])))
    receiver = Receiver(base)

    def work(cl: Cluster, pg_: Postgres | None, tmp: Path) -> dict[str, Any]:
        receiver.reset()
        key, secret = cl.nodes[0].register()
        out: dict[str, Any] = {"cues": cues, "seconds": seconds, "warmup": warmup}
        out["create_s"] = create_every_second(cl.nodes, key, receiver.url, cues)
        first = math.floor(time.time()) + 1 + warmup
        last = first + seconds - 1
        holders0 = cl.holders()
        # Ticks are released at whole seconds: between two, each node's count of released ticks
        # is still, and its growth over the window says how many ticks it fired.
        sleep_until(first - 0.5)
        fired0 = cl.fired()
        sleep_until(first)
        phase = Phase(cl.nodes, receiver, pg_, cl.db)
        sleep_until(last + 0.5)
        fired1 = cl.fired()
        sleep_until(last + 1)
        out["cpu"] = phase.stop(seconds)
        holders1 = cl.holders()
        held1 = cl.held()
        sleep_until(last + 2.2)  # a late delivery is still seen; one that never comes is missing
        deliveries, check = deliveries_with_cues(receiver.records(), secret)
        window = [d for d in deliveries if first <= d["scheduled"] < last + 1]
        attribute(window, holders0)
        expected = cues * seconds
        ids = [d["execution_id"] for d in window]
        out.update(
            {
                "deliveries": len(window),
                "expected": expected,
                "missing": expected - len(set(ids)),
                "duplicates": len(ids) - len(set(ids)),
                "checks": check,
                **percentiles([d["t"] - d["scheduled"] for d in window]),
            }
        )
        nodes = per_node(window, cl, holders0)
        for i, r in enumerate(nodes):
            a, b = fired0[i], fired1[i]
            r["fired_in_window"] = None if a is None or b is None else b - a
            r["ticks_attributed"] = r["cues"] * seconds
        out["per_node"] = nodes
        # The attribution holds if the assignment did not move and each node released exactly the
        # ticks of the cues its partitions hold.
        out["assignment_stable"] = holders0 == holders1 and held1 == [r["partitions"] for r in nodes]
        out["attribution_checked"] = (
            all(r["fired_in_window"] == r["ticks_attributed"] for r in nodes) if cl.shared else None
        )
        return out

    out: dict[str, Any] = {"cues": cues, "seconds": seconds, "warmup": warmup, "setups": {}}
    for name in p["setups"]:
        out["setups"][name] = with_setup(name, p, pg, work, base, "p%")
    receiver.wait(10)
    return out


# -- 2. a burst of one-shots due the same second --------------------------------------------------------


def cluster_burst(p: dict[str, Any], pg: Postgres | None) -> dict[str, Any]:
    """``n`` one-shot webhook cues due the same second (as server-burst), created through the nodes
    in turn; done = the later of the last arrival and the first poll that finds every execution
    recorded as success."""
    n, timeout = p["n"], p["timeout"]
    base = Path(tempfile.mkdtemp(prefix="work-", dir=os.path.dirname(p["db"])))
    receiver = Receiver(base)

    def work(cl: Cluster, pg_: Postgres | None, tmp: Path) -> dict[str, Any]:
        receiver.reset()
        key, secret = cl.nodes[0].register()
        callback = {"url": receiver.url}
        out: dict[str, Any] = {"n": n}
        # Pilot: how fast cues are created this way, so that the burst is due only after all exist.
        far = iso(time.time() + 30 * 86400)
        pilot_spec = {"schedule": {"type": "once", "at": far}, "callback": callback}
        pilot = create_spread(cl, key, pilot_spec, p["pilot_n"], "pilot", p, tmp)
        due = math.ceil(time.time() + 3 + 1.5 * n / max(pilot["per_s"], 1.0))
        spec = {
            "schedule": {"type": "once", "at": iso(due)},
            "callback": callback,
            "payload": {"burst": True},
        }
        created = create_spread(cl, key, spec, n, "b", p, tmp)
        out["pilot"], out["create"] = pilot, created
        out["due_lead_s"] = due - time.time()
        if created["ok"] != n:
            raise RuntimeError(f"only {created['ok']} of {n} cues were created")
        if time.time() >= due:
            raise RuntimeError("creating the burst overran its due instant")
        holders0 = cl.holders()
        sleep_until(due)
        phase = Phase(cl.nodes, receiver, pg_, cl.db)
        deadline = due + timeout
        count, last_arrival, t_delivered, recorded, t_recorded = await_burst(
            receiver, cl.nodes[0], key, n, deadline
        )
        end = max(last_arrival if count else t_delivered, t_recorded)
        out["cpu"] = phase.stop(end - due)
        holders1 = cl.holders()
        deliveries, check = deliveries_with_cues(receiver.records(), secret)
        burst = [d for d in deliveries if d["scheduled"] == due]
        attribute(burst, holders0)
        arrivals = sorted(d["t"] for d in burst)
        out.update(
            {
                "due": due,
                "received": count,
                "recorded": recorded,
                "first_arrival_s": arrivals[0] - due if arrivals else None,
                "last_arrival_s": last_arrival - due if count else None,
                "recorded_seen_s": t_recorded - due,
                "checks": check,
                "done_s": end - due,
                "lag": percentiles([d["t"] - d["scheduled"] for d in burst]),
                "per_node": per_node(burst, cl, holders0),
                "assignment_stable": holders0 == holders1,
            }
        )
        out["per_s"] = min(count, recorded) / out["done_s"] if out["done_s"] > 0 else None
        out["lost"] = n - check["distinct_execution_ids"]
        out["duplicated"] = check["duplicate_deliveries"]
        return out

    out: dict[str, Any] = {"n": n, "setups": {}}
    for name in p["setups"]:
        r = out["setups"][name] = with_setup(name, p, pg, work, base, "b%")
        if "error" not in r:
            st = r["store_check"]
            r["complete"] = (
                r["received"] == n
                and r["recorded"] == n
                and st["statuses"] == {"success": n}
                and st["max_attempts"] == 1
                and r["lost"] == 0
                and r["duplicated"] == 0
                and r["checks"].get("bad_signatures") == 0
            )
            if not r["complete"]:
                r["error"] = (
                    f"{r['received']} received, {r['recorded']} recorded as success of {n}, "
                    f"{r['lost']} lost, {r['duplicated']} duplicated (store: {st})"
                )
    receiver.wait(10)
    return out


# -- 3. API rates ---------------------------------------------------------------------------------------


def cluster_api(p: dict[str, Any], pg: Postgres | None) -> dict[str, Any]:
    """Cue creations and outcome reports per second, as server-api measures them (the same wrk
    script and request bodies), with one wrk per node at once."""
    n = p["n"]
    base = Path(tempfile.mkdtemp(prefix="work-", dir=os.path.dirname(p["db"])))
    receiver = Receiver(base)  # the cues' callback; never called: they do not come due in the run

    def work(cl: Cluster, pg_: Postgres | None, tmp: Path) -> dict[str, Any]:
        key, _ = cl.nodes[0].register()
        out: dict[str, Any] = {"n": n}
        spec = {
            "name": "{NAME}",
            "schedule": {"type": "recurring", "cron": "0 0 1 1 *"},
            "callback": {"url": receiver.url},
            "payload": {"task": "bench"},
        }
        out["create"] = wrk_together(cl, pg_, "POST", "/v1/cues", json.dumps(spec), key, None, n, "c", p, tmp)
        # Executions to report on: worker-transport cues fired by hand through the first node.
        node = cl.nodes[0]
        # A fire refused under load (the seeding's errors are this setup's) still leaves the others
        # to report on.
        exec_ids, seeding = seed_worker_executions(
            node, key, "w", n, p, tmp, {"server": node.ps}, allow_short=True
        )
        out["fire"] = seeding["fire"]
        out["outcome_n"] = len(exec_ids)
        out["outcome"] = wrk_together(
            cl, pg_, "POST", "/v1/executions/{ID}/outcome", '{"success": true}', key, exec_ids, 0, "o", p, tmp
        )
        return out

    out: dict[str, Any] = {"n": n, "worker_cues": p["worker_cues"], "setups": {}}
    for name in p["setups"]:
        r = out["setups"][name] = with_setup(name, p, pg, work, base, "w%")
        if "error" not in r:
            bad = [
                f"{k}: {r[k]['non_2xx']} non-2xx, {r[k]['ok']} ok of {r[k]['requests']:,}"
                + (f" ({r[k]['wrk_stderr'][:300]})" if r[k].get("wrk_stderr") else "")
                for k in ("create", "fire", "outcome")
                if r[k]["non_2xx"] or not r[k]["complete"]
            ]
            if r["store_check"]["statuses"] != {"success": r["outcome_n"]}:
                bad.append(f"store: {r['store_check']['statuses']}")
            if bad:
                r["error"] = "; ".join(bad)
    receiver.wait(10)
    return out


# -- 4. failover ----------------------------------------------------------------------------------------


def cluster_failover(p: dict[str, Any], pg: Postgres | None) -> dict[str, Any]:
    """Three nodes, ``cues`` every-second webhook cues; one node is SIGKILLed (at a different
    fraction of a second each time), and failover = the kill -> the first arrival of a tick,
    scheduled after the kill, of a cue in one of the partitions the dead node held. Then the
    node is started again and the shares even out before the next kill. Measured with each number
    of cues of ``cue_counts`` in turn (each on a cluster and database of its own): with many, the
    survivors also work through a backlog; with few, what is left is the takeover itself."""
    reps = p["repeats"]
    base = Path(tempfile.mkdtemp(prefix="work-", dir=os.path.dirname(p["db"])))
    receiver = Receiver(base)

    def work(cues: int, cl: Cluster, pg_: Postgres | None, tmp: Path) -> dict[str, Any]:
        key, secret = cl.nodes[0].register()
        spec = {
            "schedule": {"type": "recurring", "cron": "* * * * * *"},
            "callback": {"url": receiver.url},
        }
        out: dict[str, Any] = {"cues": cues, "create": create_spread(cl, key, spec, cues, "f", p, tmp)}
        all_cues = [c for (c,) in _pg_rows(cl.db, "SELECT id FROM cues WHERE name LIKE 'f%%'")]
        k = len(cl.nodes)
        kills: list[dict[str, Any]] = []
        out["kills"] = kills
        for rep in range(reps):
            try:
                kills.append(kill_one(rep, cues, all_cues, cl, pg_, secret))
                cl.replace(rep % k)
                kills[-1]["even_again_s"] = cl.wait_even(60)
            except Exception as exc:  # the kills before stand; this one says why it went no further
                out["error"] = f"kill {rep + 1}: {type(exc).__name__}: {exc}"[:3000]
                break
        done = [x["failover_s"] for x in kills if x["failover_s"] is not None]
        out["failover_max_s"] = max(done) if done and len(done) == len(kills) == reps else None
        return out

    def kill_one(
        rep: int, cues: int, all_cues: list[str], cl: Cluster, pg_: Postgres | None, secret: str
    ) -> dict[str, Any]:
        k = len(cl.nodes)
        victim = rep % k
        survivors = [i for i in range(k) if i != victim]
        receiver.reset()
        dead_parts = {part for part, h in cl.holders().items() if h == victim}
        dead_id, pid = cl.ids[victim], cl.nodes[victim].proc.pid
        # Two whole seconds of ticks before the kill (the lag then, for comparison), and a kill
        # at a different point of the second each time: the first tick it can delay is the
        # next whole second.
        kill_at = math.floor(time.time()) + 2 + (rep + 1) / (reps + 1)
        sleep_until(kill_at)
        phase = Phase([cl.nodes[i] for i in survivors], receiver, pg_, cl.db)
        t_kill = time.time()
        os.kill(pid, signal.SIGKILL)
        # The survivors' view: polled until they hold every partition between them.
        t_taken = None
        while time.time() - t_kill < p["timeout"]:
            if sum(cl.held(survivors)) == PARTITIONS:
                t_taken = time.time()
                break
            time.sleep(POLL_S)
        if t_taken is None:
            raise RuntimeError(f"the survivors did not take the dead node's partitions: {cl.held(survivors)}")
        # Ticks after the takeover, so that the catch-up of every late tick is seen.
        end = math.floor(t_taken) + 1 + p["after"]
        sleep_until(end + 0.1)
        cpu = phase.stop(end - t_kill)
        cl.nodes[victim].wait(10)
        seconds = range(math.floor(t_kill) + 1, end + 1)
        finished, wait_s = wait_finished(cl.db, t_kill, end, cues * len(seconds), p["timeout"])
        dead_cues = {c for c in all_cues if partition(c) in dead_parts}
        rows = _pg_rows(
            cl.db,
            "SELECT cue_id, scheduled_for, status FROM executions WHERE scheduled_for > %s AND "
            "scheduled_for <= %s",
            (t_kill * 1000, end * 1000),
        )
        fired = {(c, at // 1000): st for c, at, st in rows if c in dead_cues}
        statuses: dict[str, int] = {}
        for st in fired.values():
            statuses[st] = statuses.get(st, 0) + 1
        deliveries, check = deliveries_with_cues(receiver.records(), secret)
        after = [d for d in deliveries if d["cue_id"] in dead_cues and t_kill < d["scheduled"] <= end]
        first = min((d["t"] for d in after), default=None)
        got = {(d["cue_id"], round(d["scheduled"])) for d in after}
        # Each of the dead node's ticks that did not arrive: recorded as not run by the cue's
        # policies (``skipped``: its previous run still going, overlap=skip; ``missed``: folded
        # into a later run, catch_up=once), recorded in another state, or not in the store at all
        # (by the second after the kill it was due).
        not_run: dict[str, int] = {}
        lost: dict[str, int] = {}
        for c in dead_cues:
            for sec in seconds:
                st = fired.get((c, sec))
                if (c, sec) in got:
                    continue
                if st in ("skipped", "missed"):
                    not_run[st] = not_run.get(st, 0) + 1
                else:
                    why = st or f"not in the store (due {sec - math.floor(t_kill)} s after the kill)"
                    lost[why] = lost.get(why, 0) + 1
        live = [d for d in deliveries if d["cue_id"] not in dead_cues and t_kill < d["scheduled"] <= end]
        lags = [d["t"] - d["scheduled"] for d in after]
        expected = len(dead_cues) * len(seconds)
        return {
            "victim": dead_id,
            "partitions": len(dead_parts),
            "cues": len(dead_cues),
            "kill_fraction": t_kill % 1,
            "failover_s": None if first is None else first - t_kill,
            "takeover_seen_s": t_taken - t_kill,
            "window_s": end - t_kill,
            "finished_wait_s": wait_s,
            "finished": finished,
            "ticks": len(after),
            "ticks_expected": expected,
            "ticks_not_run_by_policy": not_run,
            "ticks_lost": sum(lost.values()),
            "lost_why": lost,
            "statuses": statuses,
            "ticks_duplicated": len(after) - len({d["execution_id"] for d in after}),
            "late_100ms": sum(x > 0.1 for x in lags),
            "late_lag": percentiles([x for x in lags if x > 0.1]),
            "dead_lag": percentiles(lags),
            "survivors_lag": percentiles([d["t"] - d["scheduled"] for d in live]),
            "retried_attempts": check["retried_attempts"],
            "bad_signatures": check.get("bad_signatures"),
            "cpu": cpu,
        }

    out: dict[str, Any] = {"cue_counts": p["cue_counts"], "repeats": reps, "setups": {}}
    for cues in p["cue_counts"]:
        name = p["setups"][0]
        sub = {**p, "tag": f"{p['tag']}_{cues}"}
        r = out["setups"][f"{name}/{cues}"] = with_setup(
            name, sub, pg, lambda *a, cues=cues: work(cues, *a), base, "f%"
        )
        if "kills" in r:
            bad = [
                f"kill {i + 1}: "
                + (
                    "no tick of the dead node's cues arrived"
                    if x["failover_s"] is None
                    else f"{x['ticks_lost']} ticks lost ({x['lost_why']}), {x['ticks_duplicated']} duplicated"
                )
                for i, x in enumerate(r["kills"])
                if x["failover_s"] is None or x["ticks_lost"] or x["ticks_duplicated"]
            ]
            if bad:
                r["error"] = "; ".join([r["error"], *bad] if "error" in r else bad)
    receiver.wait(10)
    return out


def wait_finished(db: str, after: float, end: int, expected: int, timeout: float) -> tuple[int, float]:
    """Polls until every cue's ticks in (``after``, ``end``] have finished executions (``expected``
    of them), or their number has not grown for 5 s; returns it and the seconds waited."""
    q = (
        "SELECT count(*) FROM executions WHERE scheduled_for > %s AND scheduled_for <= %s "
        "AND status IN ('success', 'failed')"
    )
    t0 = time.time()
    last, since = -1, t0
    while True:
        n = int(_pg_rows(db, q, (after * 1000, end * 1000))[0][0])
        now = time.time()
        if n != last:
            last, since = n, now
        if n >= expected or now - since >= 5 or now - t0 >= timeout:
            return n, now - t0
        time.sleep(0.2)


PARTS = {
    "cluster-precision": cluster_precision,
    "cluster-burst": cluster_burst,
    "cluster-api": cluster_api,
    "cluster-failover": cluster_failover,
}


def run_part(part: str, p: dict[str, Any]) -> dict[str, Any]:
    pg = Postgres() if any(SETUPS[s][0] == "pg" for s in p["setups"]) else None
    try:
        out = PARTS[part]({**p, "tag": part.replace("-", "_")}, pg)
        if pg is not None:
            out["postgres"] = {"version": pg.version, "settings": pg.settings}
    finally:
        if pg is not None:
            pg.close()
    if pg is not None:
        # The server is no child of this process (pg_ctl detaches it): bench/run.py counts its CPU
        # as the benchmark's own with this, not as other work on the machine.
        out["daemon_cpu_s"] = pg.used_cpu_s
    errors = [f"{name}: {r['error']}" for name, r in out["setups"].items() if "error" in r]
    if errors:
        out["error"] = "; ".join(errors)
    return out


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "pg-guard" and len(sys.argv) == 3:
        guard_main(sys.argv[2])
    elif role in PARTS and len(sys.argv) == 4 and sys.argv[2] == "cueapi":
        try:
            result = run_part(role, json.loads(sys.argv[3]))
        except Exception as exc:  # a failed measurement is a result that says why
            import traceback

            result = {"error": f"{type(exc).__name__}: {exc}", "stderr": traceback.format_exc()[-2000:]}
        emit(result)
    else:
        raise SystemExit(__doc__)
