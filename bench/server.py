"""The server benchmarks: `cueapi serve` over HTTP, in the shape of the reference server's figures.

    python bench/server.py serve DB                 # the server: prints "URL <base>"; "stop" ends it
    python bench/server.py receive                  # the webhook receiver: prints "PORT <n>"
    python bench/server.py PART cueapi PARAMS_JSON  # one measurement (bench/run.py starts it)

PART is ``server-precision``, ``server-burst``, ``server-api``, ``server-workers`` (pull workers:
``bench/wrk_worker.lua``, one wrk thread and connection per worker) or ``server-alerts`` (a failing
delivery to its alert webhook; the receiver answers 500 for the path ``/fail``); the last line on
stdout is ``RESULT <json>``. A measurement is an orchestrator that starts three kinds of process and shares
no interpreter with any of them: the server (``serve``: ``cueapi.App(db).serve(...)``, rate limiting off), the
receiver (``receive``: an asyncio Protocol HTTP/1.1 server with keep-alive that answers
``200 {"ok": true}`` and notes when each request arrived) and the load generator (``wrk`` with
``bench/wrk.lua``: 64 keep-alive connections). The orchestrator itself only polls (a few requests
per second at most) and reads CPU counters. Every wait is bounded; the processes it started are
stopped by their own pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import math
import os
import queue
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
WRK_LUA = HERE / "wrk.lua"
UTC = timezone.utc

# -- the server process ------------------------------------------------------------------------------


def serve_main(db: str) -> None:
    import logging

    import cueapi

    # What the engine meets on its own (a failed heartbeat, a lost partition...) goes to this
    # process's stderr file, with the time: the figures can then be read beside it.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = cueapi.App(db)
    # Rate limiting off: wrk sends tens of thousands of requests a minute on one key.
    url = app.serve("127.0.0.1", 0, allow_private_targets=True, rate_limit_per_minute=0)
    print("URL", url, flush=True)
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    app.close()
    print("CLOSED", flush=True)
    os._exit(0)


# -- the receiver process ----------------------------------------------------------------------------

RESPONSE = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"ok": true}'
# The path /fail is answered 500 (a delivery that fails, for the alert benchmark).
FAILED = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n"
    b'{"ok": false}'
)
RECORDS: list[tuple[float, bytes, bytes]] = []  # (arrival, request head, body)


class Hook(asyncio.Protocol):
    """HTTP/1.1 with keep-alive (and pipelining): every complete request is noted with the time
    its last bytes arrived and answered at once (``200 {"ok": true}``; 500 for ``/fail``)."""

    def __init__(self) -> None:
        self.tr: Any = None
        self.buf = b""

    def connection_made(self, transport: Any) -> None:
        self.tr = transport

    def data_received(self, data: bytes) -> None:
        t = time.time()
        requests, self.buf = split_requests(self.buf + data if self.buf else data)
        for head, body in requests:
            RECORDS.append((t, head, body))
            self.tr.write(FAILED if head.split(b" ", 2)[1:2] == [b"/fail"] else RESPONSE)


def split_requests(buf: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The complete HTTP/1.1 requests at the start of ``buf`` (head, body by Content-Length) and
    the bytes left over (the start of the next one)."""
    out = []
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            break
        head = buf[:end]
        low = head.lower()
        i = low.find(b"content-length:")
        n = 0
        if i >= 0:
            j = low.find(b"\r\n", i)
            n = int(low[i + 15 : j if j >= 0 else None])
        total = end + 4 + n
        if len(buf) < total:
            break
        out.append((head, buf[end + 4 : total]))
        buf = buf[total:]
    return out, buf


KEPT_HEADERS = (
    "x-cueapi-signature",
    "x-cueapi-timestamp",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-cueapi-alert-id",
    "x-cueapi-alert-type",
)


def _dump(path: str) -> int:
    with open(path, "w") as f:
        for t, head, body in RECORDS:
            headers = {}
            lines = head.split(b"\r\n")
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                name = k.strip().lower().decode("latin-1")
                if name in KEPT_HEADERS:
                    headers[name] = v.strip().decode("latin-1")
            path = [*lines[0].split(b" "), b"", b""][1].decode("latin-1")
            record = {"t": t, "path": path, "headers": headers, "body": body.decode("utf-8", "replace")}
            f.write(json.dumps(record) + "\n")
    return len(RECORDS)


def receive_main() -> None:
    """Commands, one a line on stdin: ``count`` (answers ``COUNT n last_arrival``), ``dump PATH``
    (the requests as JSON lines; ``DUMPED n``), ``reset`` (forgets them; ``RESET``). EOF ends it."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Hook, "127.0.0.1", 0, backlog=4096)
        print("PORT", server.sockets[0].getsockname()[1], flush=True)
        finished = loop.create_future()

        def command() -> None:
            line = sys.stdin.readline()
            if not line:
                loop.remove_reader(sys.stdin.fileno())
                finished.set_result(None)
                return
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "count":
                last = RECORDS[-1][0] if RECORDS else 0.0
                print(f"COUNT {len(RECORDS)} {last:.6f}", flush=True)
            elif cmd == "dump":
                print(f"DUMPED {_dump(arg)}", flush=True)
            elif cmd == "reset":
                RECORDS.clear()
                print("RESET", flush=True)

        loop.add_reader(sys.stdin.fileno(), command)
        await finished
        server.close()

    asyncio.run(main())
    os._exit(0)


# -- the orchestrator: processes ----------------------------------------------------------------------


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sleep_until(ts: float) -> None:
    while (left := ts - time.time()) > 0:
        time.sleep(min(left, 0.5))


class Child:
    """A process of ours with its stdout read line by line on a thread (so every read can time out)."""

    def __init__(self, cmd: list[str], stderr_path: Path, name: str) -> None:
        self.name = name
        self.stderr_path = stderr_path
        self._err = open(stderr_path, "w")  # noqa: SIM115 (closed in wait)
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, text=True, bufsize=1
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float) -> str:
        """The next line starting with ``prefix`` (others are skipped), less the prefix."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(
                    f"{self.name}: no {prefix!r} within {timeout:.0f} s{self.tail()}"
                ) from None
            if line is None:
                raise RuntimeError(f"{self.name} exited ({self.proc.wait()}){self.tail()}")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def tail(self) -> str:
        self._err.flush()
        text = self.stderr_path.read_text(errors="replace").strip()
        return f": {text[-1500:]}" if text else ""

    def wait(self, timeout: float) -> int:
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)
        finally:
            self._err.close()


class Server(Child):
    def __init__(self, db: str, tmp: Path) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "serve", db]
        super().__init__(cmd, tmp / "server.stderr", "server")
        self.db = db
        self.url = self.expect("URL ", 60)
        u = urlsplit(self.url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.ps = _psutil().Process(self.proc.pid)
        self.conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
        """One request from the orchestrator (setup and polling, never the measured load)."""
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = None if body is None else json.dumps(body)
        for tries in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self.conn.request(method, path, data, headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if tries == 2:
                    raise
        raise AssertionError("unreachable")

    def register(self) -> tuple[str, str]:
        status, user = self.call("POST", "/v1/auth/register", {"email": "bench@example.com"})
        if status != 201:
            raise RuntimeError(f"register answered {status}: {user}")
        return user["api_key"], user["webhook_secret"]

    def stop(self) -> dict[str, Any]:
        """Stops the server (the App closes its database) and says how it went."""
        if self.conn is not None:
            self.conn.close()
        t0 = time.time()
        self.send("stop")
        out: dict[str, Any] = {}
        try:
            self.expect("CLOSED", 120)
        except RuntimeError as exc:
            out["stop_error"] = str(exc)
        out["close_s"] = time.time() - t0
        out["exit_code"] = self.wait(30)
        return out


class Receiver(Child):
    def __init__(self, tmp: Path) -> None:
        super().__init__(
            [sys.executable, str(Path(__file__).resolve()), "receive"], tmp / "receiver.stderr", "receiver"
        )
        self.port = int(self.expect("PORT ", 30))
        self.tmp = tmp
        self.ps = _psutil().Process(self.proc.pid)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def count(self) -> tuple[int, float]:
        self.send("count")
        n, last = self.expect("COUNT ", 30).split()
        return int(n), float(last)

    def records(self) -> list[dict[str, Any]]:
        path = self.tmp / "received.jsonl"
        self.send(f"dump {path}")
        self.expect("DUMPED ", 300)
        with open(path) as f:
            out = [json.loads(line) for line in f]
        path.unlink()
        return out

    def reset(self) -> None:
        self.send("reset")
        self.expect("RESET", 30)


def _psutil() -> Any:
    import psutil

    return psutil


# -- the orchestrator: CPU accounting ----------------------------------------------------------------


def _thread_names(pid: int) -> dict[int, str]:
    names = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                names[int(tid)] = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    return names


class CpuWatch:
    """CPU time over a phase: per process, per thread of the server, the load generator's (wrk's
    rusage, as a child of this process), and the machine's busy time. ``pct`` is of one core."""

    def __init__(self, procs: dict[str, Any], server: Server | None) -> None:
        self.procs, self.server = procs, server
        psutil = _psutil()
        self.t0 = time.time()
        self.before = {k: self._cpu(p) for k, p in procs.items()}
        self.threads0 = self._threads()
        self.machine0 = psutil.cpu_times()
        self.children0 = resource.getrusage(resource.RUSAGE_CHILDREN)

    @staticmethod
    def _cpu(p: Any) -> float:
        try:
            t = p.cpu_times()
            return float(t.user + t.system)
        except Exception:  # the process is gone: counted as nothing more
            return math.nan

    def _threads(self) -> dict[int, float]:
        if self.server is None:
            return {}
        try:
            return {t.id: t.user_time + t.system_time for t in self.server.ps.threads()}
        except Exception:
            return {}

    def stop(self, span: float | None = None) -> dict[str, Any]:
        """CPU seconds since the start; percentages over ``span`` seconds (default: since the
        start), except the machine's, which is always over the whole watch."""
        psutil = _psutil()
        life = max(time.time() - self.t0, 1e-6)
        span = max(span if span is not None else life, 1e-6)
        out: dict[str, Any] = {"wall_s": span}

        def entry(cpu: float) -> dict[str, float]:
            return {"cpu_s": cpu, "pct": 100 * cpu / span}

        for k, p in self.procs.items():
            out[k] = entry(self._cpu(p) - self.before[k])
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        gen = (ch.ru_utime - self.children0.ru_utime) + (ch.ru_stime - self.children0.ru_stime)
        if gen > 0:
            out["generator"] = entry(gen)
        m0, m1 = self.machine0, psutil.cpu_times()
        idle = (m1.idle - m0.idle) + (getattr(m1, "iowait", 0) - getattr(m0, "iowait", 0))
        busy = (sum(m1) - sum(m0)) - idle - (getattr(m1, "guest", 0) - getattr(m0, "guest", 0))
        out["machine_busy_pct"] = 100 * busy / life  # of one core: 200 = both cores busy
        if self.server is not None:
            names = _thread_names(self.server.proc.pid)
            per: dict[str, float] = {}
            count: dict[str, int] = {}
            for tid, t in self._threads().items():
                name = names.get(tid, "?")
                per[name] = per.get(name, 0.0) + t - self.threads0.get(tid, 0.0)
                count[name] = count.get(name, 0) + 1
            top = sorted(per.items(), key=lambda kv: -kv[1])[:5]
            out["server_threads"] = [{"name": n, "threads": count[n], **entry(c)} for n, c in top if c > 0]
        return out


# -- the orchestrator: wrk -------------------------------------------------------------------------------


def wrk(
    url: str,
    method: str,
    path: str,
    body: str = "",
    *,
    key: str | None = None,
    limit: int = 0,
    ids: list[str] | None = None,
    capture: str | None = None,
    tag: str = "r",
    p: dict[str, Any],
    watch: dict[str, Any],
    server: Server | None,
    tmp: Path,
    bound_s: float | None = None,
) -> dict[str, Any]:
    """Sends ``limit`` requests in all (split over wrk's threads; with ``ids``, one per id) over
    ``p['connections']`` keep-alive connections and returns the rate, latencies and CPU. With
    ``capture``, the values it matched in 2xx bodies are in ``captured``. ``bound_s`` replaces the
    default bound on wrk's run (below) where a slower rate is expected."""
    threads = p["wrk_threads"]
    ids_file = "-"
    if ids is not None:
        ids_file = str(tmp / f"ids-{tag}.txt")
        Path(ids_file).write_text("\n".join(ids) + "\n")
        limit = len(ids)
    per_thread = 0 if ids is not None else math.ceil(limit / threads)
    prefix = str(tmp / f"captured-{tag}-")
    # wrk runs until -d unless every thread has its answers (then it is interrupted); a request lost
    # to a socket error would leave a thread short, so -d is a bound sized for >= 500 requests/s.
    most = int(bound_s) if bound_s is not None else min(int(p["timeout"]), 60 + limit // 500)
    cmd = ["wrk", "-t", str(threads), "-c", str(p["connections"]), "-d", f"{most}s"]
    cmd += ["--timeout", "30s", "-s", str(WRK_LUA), url.rstrip("/"), "--"]
    cmd += [method, path, body, key or "-", str(per_thread), ids_file, str(threads)]
    cmd += [capture or "-", prefix, tag]
    cpu = CpuWatch(watch, server)
    summary, err_lines = run_wrk(cmd, threads)
    th = summary["threads"]
    first = min(t["first"] for t in th if t["first"] > 0)
    last = max(t["last"] for t in th)
    ok = sum(t["ok"] for t in th)
    got = sum(t["got"] for t in th)
    wall = max(last - first, 1e-6)
    # CPU over wrk's life (a few ms more than the span measured), as a share of the span.
    usage = cpu.stop(wall)
    if got > sum(t["sent"] for t in th):
        raise RuntimeError("wrk sent requests the script did not count (see request() in wrk.lua)")
    lat = summary["latency_us"]
    out: dict[str, Any] = {
        "requests": got,
        "ok": ok,
        "non_2xx": got - ok,
        "socket_errors": {k: v for k, v in summary["errors"].items() if k != "status" and v},
        "seconds": wall,
        "per_s": ok / wall,
        # The span itself (wall clock), for rates over several wrk run at once (bench/cluster.py).
        "first": first,
        "last": last,
        "p50_ms": lat["p50"] / 1000,
        "p90_ms": lat["p90"] / 1000,
        "p99_ms": lat["p99"] / 1000,
        "max_ms": lat["max"] / 1000,
        "mean_ms": lat["mean"] / 1000,
        "connections": p["connections"],
        "wrk_threads": threads,
        "cpu": usage,
        "complete": got >= limit if limit else True,
    }
    if err_lines:
        out["wrk_stderr"] = "".join(err_lines)[-600:]
    if capture:
        captured: list[str] = []
        for i in range(threads):
            f = Path(prefix + str(i))
            if f.exists():
                captured += f.read_text().split()
                f.unlink()
        out["captured"] = captured
    return out


def webhook_like_body() -> str:
    """A request body the size and shape of a delivery, for the receiver's ceiling."""
    return json.dumps(
        {
            "attempt": 1,
            "cue_id": "cue_01m8hfd78f7zwnr691gvek2zr8",
            "execution_id": "exec_01m8hfd78jkcnkcq0vcdtx9vy4",
            "name": "{NAME}",
            "payload": {"i": 1, "task": "bench"},
            "scheduled_for": "2026-11-28T17:00:05+00:00",
        },
        sort_keys=True,
    )


def ceiling(receiver: Receiver, p: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """wrk against the receiver alone: the receiver's rate with this generator, the generator's
    rate with this receiver (whichever is at 100% of a core is the limit), with the same script,
    connections and a delivery-sized body."""
    r = wrk(
        f"http://127.0.0.1:{receiver.port}",
        "POST",
        "/hook",
        webhook_like_body(),
        limit=p["ceiling_n"],
        tag="ceiling",
        p=p,
        watch={"receiver": receiver.ps},
        server=None,
        tmp=tmp,
    )
    n, _ = receiver.count()
    r["receiver_counted"] = n
    receiver.reset()
    return r


# -- the orchestrator: results ---------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, float]:
    """p50 / p99 (nearest rank), max and mean, in milliseconds."""
    xs = sorted(values)
    if not xs:
        return {}

    def rank(q: float) -> float:
        return xs[max(0, math.ceil(q * len(xs)) - 1)] * 1000

    return {
        "p50_ms": rank(0.5),
        "p99_ms": rank(0.99),
        "max_ms": xs[-1] * 1000,
        "mean_ms": 1000 * sum(xs) / len(xs),
    }


def store_counts(db: str, names_like: str | None = None) -> dict[str, Any]:
    """Executions by status, read with Python's sqlite3 once the server process has ended (never
    while an engine in *this* process has the file open; here no engine runs in this process)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        where, args = "", ()
        if names_like:
            where, args = " WHERE c.name LIKE ?", (names_like,)
        joined = f"FROM executions e JOIN cues c ON c.id = e.cue_id{where}"
        q = f"SELECT e.status, count(*), count(DISTINCT e.id) {joined} GROUP BY e.status"
        rows = conn.execute(q, args).fetchall()
        out: dict[str, Any] = {"statuses": {s: n for s, n, _ in rows}}
        q = f"SELECT count(*), coalesce(max(e.attempts), 0) {joined}"
        n, max_attempts = conn.execute(q, args).fetchone()
        out["executions"], out["max_attempts"] = n, max_attempts
        return out
    finally:
        conn.close()


def parse_deliveries(
    records: list[dict[str, Any]], secret: str | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The deliveries' bodies and what the receiver saw: duplicates, distinct ids, signatures."""
    from cueapi.webhooks import verify_standard_webhook, verify_webhook

    out = []
    bad_sig = 0
    for r in records:
        b = json.loads(r["body"])
        h = r["headers"]
        if secret is not None:
            v1 = verify_webhook(r["body"], h.get("x-cueapi-signature"), secret, h.get("x-cueapi-timestamp"))
            std = verify_standard_webhook(
                r["body"],
                h.get("webhook-id", ""),
                h.get("webhook-timestamp", ""),
                h.get("webhook-signature", ""),
                secret,
            )
            bad_sig += not (v1 and std)
        out.append(
            {
                "t": r["t"],
                "execution_id": b["execution_id"],
                "scheduled": datetime.fromisoformat(b["scheduled_for"]).timestamp(),
                "attempt": b["attempt"],
                "webhook_id": h.get("webhook-id"),
            }
        )
    ids = [d["execution_id"] for d in out]
    wids = [d["webhook_id"] for d in out]
    check = {
        "received": len(out),
        "distinct_execution_ids": len(set(ids)),
        "duplicate_deliveries": len(ids) - len(set(ids)),
        "distinct_webhook_ids": len(set(wids) - {None}),
        "missing_webhook_id": sum(w is None for w in wids),
        "retried_attempts": sum(d["attempt"] != 1 for d in out),
    }
    if secret is not None:
        check["bad_signatures"] = bad_sig
    return out, check


def create_cues(
    server: Server,
    key: str,
    spec: dict[str, Any],
    n: int,
    tag: str,
    p: dict[str, Any],
    tmp: Path,
    watch: dict[str, Any],
) -> dict[str, Any]:
    """``n`` cues created over HTTP by wrk (unique names ``tag-thread-i``), ``spec`` being the JSON
    body without its name."""
    body = json.dumps({"name": "{NAME}", **spec})
    return wrk(
        server.url,
        "POST",
        "/v1/cues",
        body,
        key=key,
        limit=n,
        tag=tag,
        p=p,
        watch=watch,
        server=server,
        tmp=tmp,
    )


def _strip(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if k != "captured"}


def _setup(p: dict[str, Any]) -> tuple[Path, Receiver, Server]:
    tmp = Path(tempfile.mkdtemp(prefix="work-", dir=os.path.dirname(p["db"])))
    receiver = Receiver(tmp)
    server = Server(p["db"], tmp)
    return tmp, receiver, server


def _finish(out: dict[str, Any], receiver: Receiver, server: Server) -> None:
    out["server_stop"] = server.stop()
    receiver.wait(10)


# -- 1. fire precision over HTTP ------------------------------------------------------------------------


def create_every_second(nodes: list[Server], key: str, url: str, cues: int) -> float:
    """Creates ``cues`` webhook cues ``p0``, ``p1``, … on an every-second cron (6 fields, the 6th is
    seconds) posting to ``url``, through ``nodes`` in turn, one request at a time; returns the
    seconds it took."""
    t0 = time.time()
    for i in range(cues):
        spec = {
            "name": f"p{i}",
            "schedule": {"type": "recurring", "cron": "* * * * * *"},
            "callback": {"url": url},
            "payload": {"i": i},
        }
        status, body = nodes[i % len(nodes)].call("POST", "/v1/cues", spec, key)
        if status != 201:
            raise RuntimeError(f"creating a cue answered {status}: {body}")
    return time.time() - t0


def server_precision(p: dict[str, Any]) -> None:
    """``cues`` webhook cues on an every-second cron (6 fields, the 6th is seconds), all due at the
    same instant each second; lag = the receiver's arrival time - ``scheduled_for`` of the body."""
    cues, seconds, warmup = p["cues"], p["seconds"], p["warmup"]
    _, receiver, server = _setup(p)
    key, secret = server.register()
    out: dict[str, Any] = {"cues": cues, "seconds": seconds, "warmup": warmup}
    out["create_s"] = create_every_second([server], key, receiver.url, cues)
    first = math.floor(time.time()) + 1 + warmup
    last = first + seconds - 1
    sleep_until(first)
    cpu = CpuWatch({"server": server.ps, "receiver": receiver.ps}, server)
    sleep_until(last + 1)
    out["cpu"] = cpu.stop()
    sleep_until(last + 2.2)  # a late delivery is still seen; one that never comes is missing
    deliveries, check = parse_deliveries(receiver.records(), secret)
    out["server_rss_mb"] = server.ps.memory_info().rss / 2**20
    _finish(out, receiver, server)
    window = [d for d in deliveries if first <= d["scheduled"] < last + 1]
    lags = [d["t"] - d["scheduled"] for d in window]
    expected = cues * seconds
    out.update(
        {
            "deliveries": len(window),
            "expected": expected,
            "missing": expected - len({(d["execution_id"]) for d in window}),
            "duplicates": len(window) - len({d["execution_id"] for d in window}),
            "checks": check,
        }
    )
    out.update(percentiles(lags))
    out["store"] = store_counts(p["db"])
    emit(out)


# -- 2. a burst of one-shots due at the same second ----------------------------------------------------


def run_wrk(cmd: list[str], threads: int) -> tuple[dict[str, Any], list[str]]:
    """Runs wrk with one of our Lua scripts until each of its ``threads`` says ``DONE`` (then
    interrupts it: wrk would sleep out its -d otherwise); returns the script's ``WRK`` summary and
    what wrk wrote to stderr."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    err_lines: list[str] = []
    threading.Thread(target=lambda: err_lines.extend(proc.stderr or []), daemon=True).start()
    done = 0
    summary: dict[str, Any] | None = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("DONE "):
            done += 1
            if done == threads:
                proc.send_signal(signal.SIGINT)
        elif line.startswith("WRK "):
            summary = json.loads(line[4:])
    proc.wait()
    if summary is None:
        raise RuntimeError(f"wrk gave no summary (exit {proc.returncode}): {''.join(err_lines)[-1500:]}")
    return summary, err_lines


def _rss_sampler(server: Server, stop: threading.Event, peak: list[float]) -> None:
    while not stop.is_set():
        with contextlib.suppress(Exception):
            peak[0] = max(peak[0], server.ps.memory_info().rss)
        stop.wait(0.01)


def _vm_hwm_mb(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def await_burst(
    receiver: Receiver, server: Server, key: str, n: int, deadline: float
) -> tuple[int, float, float, int, float]:
    """Polls until the receiver has ``n`` deliveries, then until ``server`` counts ``n`` executions
    recorded as success (one small request per poll), or until ``deadline``. Returns the
    deliveries and the last one's arrival, when they were seen, the successes and when they were
    seen."""
    count, last_arrival = 0, 0.0
    while time.time() < deadline:  # deliveries at the receiver
        count, last_arrival = receiver.count()
        if count >= n:
            break
        time.sleep(0.02)
    t_delivered = time.time()
    recorded, t_recorded = 0, time.time()
    while time.time() < deadline:  # and recorded as success in the store
        status, page = server.call("GET", "/v1/executions?status=success&limit=1", key=key)
        recorded = int(page.get("total", 0)) if status == 200 and isinstance(page, dict) else 0
        t_recorded = time.time()
        if recorded >= n:
            break
        time.sleep(0.02)
    return count, last_arrival, t_delivered, recorded, t_recorded


def server_burst(p: dict[str, Any]) -> None:
    n, timeout = p["n"], p["timeout"]
    tmp, receiver, server = _setup(p)
    key, secret = server.register()
    out: dict[str, Any] = {"n": n}
    out["receiver_ceiling"] = ceiling(receiver, p, tmp)
    watch = {"server": server.ps}
    callback = {"url": receiver.url}
    # Pilot: how fast cues are created, so that the burst is due only after all of it exists.
    pilot_n = p["pilot_n"]
    far = iso(time.time() + 30 * 86400)
    pilot = create_cues(
        server,
        key,
        {"schedule": {"type": "once", "at": far}, "callback": callback},
        pilot_n,
        "pilot",
        p,
        tmp,
        watch,
    )
    rate = max(pilot["per_s"], 1.0)
    due = math.ceil(time.time() + 3 + 1.5 * n / rate)
    spec = {"schedule": {"type": "once", "at": iso(due)}, "callback": callback, "payload": {"burst": True}}
    created = create_cues(server, key, spec, n, "b", p, tmp, watch)
    out["pilot"] = _strip(pilot)
    out["create"] = _strip(created)
    ready = time.time()
    out["due_lead_s"] = due - ready
    if created["ok"] != n:
        out["error"] = f"only {created['ok']} of {n} cues were created"
    elif ready >= due:
        out["error"] = "creating the burst overran its due instant"
    stop, peak = threading.Event(), [0.0]
    sampler = threading.Thread(target=_rss_sampler, args=(server, stop, peak), daemon=True)
    rss_before = server.ps.memory_info().rss
    sampler.start()
    sleep_until(due)
    cpu = CpuWatch({"server": server.ps, "receiver": receiver.ps}, server)
    deadline = due + timeout
    count, last_arrival, t_delivered, recorded, t_recorded = await_burst(receiver, server, key, n, deadline)
    # Done = the last delivery arrived and every execution is recorded as success (the later of the
    # two; the recorded instant is known to within one poll, ~20 ms + the request).
    end = max(last_arrival if count else t_delivered, t_recorded)
    usage = cpu.stop(end - due)
    stop.set()
    sampler.join()
    deliveries, check = parse_deliveries(receiver.records(), secret)
    out["server_vm_hwm_mb"] = _vm_hwm_mb(server.proc.pid)
    _finish(out, receiver, server)
    arrivals = sorted(d["t"] for d in deliveries if d["scheduled"] == due)
    out.update(
        {
            "due": due,
            "received": count,
            "recorded": recorded,
            "first_arrival_s": arrivals[0] - due if arrivals else None,
            "last_arrival_s": last_arrival - due if count else None,
            "delivered_seen_s": t_delivered - due,
            "recorded_seen_s": t_recorded - due,
            "checks": check,
            "cpu": usage,
            "rss_before_mb": rss_before / 2**20,
            "peak_rss_mb": peak[0] / 2**20,
        }
    )
    out["done_s"] = end - due
    out["per_s"] = min(count, recorded) / out["done_s"] if out["done_s"] > 0 else None
    out["arrival_per_s"] = count / (last_arrival - due) if count and last_arrival > due else None
    lags = [d["t"] - d["scheduled"] for d in deliveries if d["scheduled"] == due]
    out["lag"] = percentiles(lags)
    out["store"] = store_counts(p["db"], "b-%")
    st = out["store"]["statuses"]
    out["complete"] = count == n and recorded == n and st.get("success") == n and len(st) == 1
    out["lost"] = n - check["distinct_execution_ids"]
    out["duplicated"] = check["duplicate_deliveries"]
    if not out["complete"] and "error" not in out:
        out["error"] = f"{count} received, {recorded} recorded as success of {n} (store: {st})"
    emit(out)


# -- 3. API rates --------------------------------------------------------------------------------------


def server_api(p: dict[str, Any]) -> None:
    n = p["n"]
    tmp, receiver, server = _setup(p)
    key, _ = server.register()
    out: dict[str, Any] = {"n": n}
    out["generator_ceiling"] = ceiling(receiver, p, tmp)
    watch = {"server": server.ps}
    # Cue creation: webhook cues (a callback each, checked by the SSRF guard) on a cron that does not
    # come due during the run.
    spec = {
        "schedule": {"type": "recurring", "cron": "0 0 1 1 *"},
        "callback": {"url": receiver.url},
        "payload": {"task": "bench"},
    }
    out["create"] = _strip(create_cues(server, key, spec, n, "c", p, tmp, watch))
    # Executions to report on: worker-transport cues fired by hand (they stay pending).
    exec_ids, seeding = seed_worker_executions(server, key, "w", n, p, tmp, watch)
    out["fire"] = seeding["fire"]
    out["fire"]["executions"] = len(exec_ids)
    out["worker_cues"] = seeding["cues"]["ok"]
    reported = wrk(
        server.url,
        "POST",
        "/v1/executions/{ID}/outcome",
        '{"success": true}',
        key=key,
        ids=exec_ids,
        tag="outcome",
        p=p,
        watch=watch,
        server=server,
        tmp=tmp,
    )
    out["outcome"] = _strip(reported)
    out["server_rss_mb"] = server.ps.memory_info().rss / 2**20
    _finish(out, receiver, server)
    out["store"] = store_counts(p["db"])
    errors = [
        f"{k}: {out[k]['non_2xx']} non-2xx of {out[k]['requests']}"
        for k in ("create", "fire", "outcome")
        if out[k]["non_2xx"] or not out[k]["complete"]
    ]
    if errors:
        out["error"] = "; ".join(errors)
    emit(out)


# -- 4. pull workers: claim -> outcome cycles -------------------------------------------------------

WRK_WORKER_LUA = HERE / "wrk_worker.lua"
WORKER_CUE = {
    "schedule": {"type": "recurring", "cron": "0 0 1 1 *"},
    "transport": "worker",
    "payload": {"task": "t"},
}


def seed_worker_executions(
    server: Server,
    key: str,
    tag: str,
    n: int,
    p: dict[str, Any],
    tmp: Path,
    watch: dict[str, Any],
    allow_short: bool = False,
) -> tuple[list[str], dict[str, Any]]:
    """``n`` pending executions waiting for a worker: ``p['worker_cues']`` worker cues (names
    ``tag-…``, payload ``{"task": "t"}``, a yearly cron that does not come due) fired by hand in
    turn by wrk (``POST /v1/cues/{id}/fire``). Returns their ids and how seeding went (with
    ``allow_short``, the ids of the fires that succeeded, however many)."""
    nw = p["worker_cues"]
    created = wrk(
        server.url,
        "POST",
        "/v1/cues",
        json.dumps({"name": "{NAME}", **WORKER_CUE}),
        key=key,
        limit=nw,
        capture='"id":"(cue_[%w_]+)"',
        tag=tag,
        p=p,
        watch=watch,
        server=server,
        tmp=tmp,
    )
    cue_ids = created["captured"]
    if len(cue_ids) < nw:
        raise RuntimeError(f"{len(cue_ids)} worker cues created, {nw} asked for")
    fired = wrk(
        server.url,
        "POST",
        "/v1/cues/{ID}/fire",
        "{}",
        key=key,
        ids=[cue_ids[i % nw] for i in range(n)],
        capture='"execution_id":"(exec_[%w_]+)"',
        tag=f"{tag}-fire",
        p=p,
        watch=watch,
        server=server,
        tmp=tmp,
    )
    ids = fired["captured"]
    if len(set(ids)) != len(ids) or (len(ids) != n and not allow_short):
        raise RuntimeError(f"seeding made {len(set(ids))} distinct executions of {n} ({_strip(fired)})")
    return ids, {"cues": _strip(created), "fire": _strip(fired)}


def _micros(samples: list[int]) -> dict[str, float]:
    return {**percentiles([us / 1e6 for us in samples]), "n": len(samples)}


def wrk_workers(
    server: Server, key: str, mode: str, seeded: list[str], p: dict[str, Any], tmp: Path
) -> dict[str, Any]:
    """``p['workers']`` pull workers (wrk threads, one keep-alive connection each, see
    ``bench/wrk_worker.lua``) claim and report until nothing is left to claim. The rate is
    completed cycles (claim won + outcome 2xx) / (last answer - first request)."""
    workers = p["workers"]
    prefix = str(tmp / f"worker-{mode}-")
    n = len(seeded)
    # A bound, not the expected time: wrk is interrupted once every worker has found nothing left.
    most = max(1, int(min(p["timeout"], p["drain_s"])))
    cmd = ["wrk", "-t", str(workers), "-c", str(workers), "-d", f"{most}s", "--timeout", "30s"]
    cmd += ["-s", str(WRK_WORKER_LUA), server.url.rstrip("/"), "--", key, mode, str(p["list_limit"]), prefix]
    stop, peak = threading.Event(), [0.0]
    sampler = threading.Thread(target=_rss_sampler, args=(server, stop, peak), daemon=True)
    sampler.start()
    cpu = CpuWatch({"server": server.ps}, server)
    try:
        summary, err_lines = run_wrk(cmd, workers)
    finally:
        stop.set()
        sampler.join()
    th = summary["threads"]
    first = min((t["first"] for t in th if t["first"] > 0), default=0.0)
    last = max(t["last"] for t in th)
    wall = max(last - first, 1e-6)
    usage = cpu.stop(wall)
    lat: dict[str, list[int]] = {}
    won: list[str] = []
    by_worker: dict[str, int] = {}
    for i in range(workers):
        f = Path(prefix + str(i))
        if not f.exists():
            continue
        mine = 0
        for line in f.read_text().split("\n"):
            a, _, b = line.partition(" ")
            if a == "won":
                won.append(b)
                mine += 1
            elif a:
                status, _, us = b.partition(" ")
                lat.setdefault(f"{a} {status}", []).append(int(us))
        by_worker[f"w{i}"] = mine
        f.unlink()
    cycles = sum(t["cycles"] for t in th)
    conflicts = sum(t["conflicts"] for t in th)
    lists = sum(len(v) for k, v in lat.items() if k.startswith("list "))
    out: dict[str, Any] = {
        "mode": mode,
        "workers": workers,
        "seeded": n,
        "cycles": cycles,
        "requests": sum(t["got"] for t in th),
        "seconds": wall,
        "per_s": cycles / wall,
        "claim": _micros(lat.get("claim 200", [])),
        "outcome": _micros([us for k, v in lat.items() if k.startswith("outcome 2") for us in v]),
        "claim_409": _micros(lat.get("claim 409", [])),
        "conflicts": conflicts,
        "conflicts_per_cycle": conflicts / cycles if cycles else None,
        "errors": sum(t["bad"] for t in th),
        "statuses": {k: len(v) for k, v in sorted(lat.items())},
        "socket_errors": {k: v for k, v in summary["errors"].items() if k != "status" and v},
        "workers_finished": sum(t["finished"] for t in th),
        "won_by_worker": by_worker,
        "won": won,
        "unexpected": len(set(won) - set(seeded)),
        "drain_bound_s": most,
        "cpu": usage,
        "server_peak_rss_mb": peak[0] / 2**20,
    }
    if mode == "list":
        out["list"] = _micros([us for k, v in lat.items() if k.startswith("list ") for us in v])
        out["lists_per_cycle"] = lists / cycles if cycles else None
    if err_lines:
        out["wrk_stderr"] = "".join(err_lines)[-600:]
    return out


def worker_store_check(db: str, names_like: str, seeded: list[str], won: list[str]) -> dict[str, Any]:
    """Each seeded execution as the store has it once the server has closed the database (read with
    ``sqlite3``): ``done`` (success, one attempt, one attempt row, itself success), ``waiting``
    (pending, never attempted: the drain ended first), ``in_flight`` (claimed once, no outcome yet:
    the drain ended while a worker held it), or ``wrong``. Lost = claims won that are not done or in
    flight, plus wrong ones; duplicated = claims won twice, plus executions attempted more than once."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute(
            "SELECT e.id, e.status, e.attempts, count(a.number), coalesce(sum(a.status = 'success'), 0) "
            "FROM executions e JOIN cues c ON c.id = e.cue_id LEFT JOIN attempts a ON a.execution_id = e.id "
            "WHERE c.name LIKE ? GROUP BY e.id",
            (names_like,),
        ).fetchall()
    finally:
        conn.close()
    kinds: dict[str, set[str]] = {"done": set(), "waiting": set(), "in_flight": set(), "wrong": set()}
    statuses: dict[str, int] = {}
    for eid, status, attempts, n_rows, ok in rows:
        statuses[status] = statuses.get(status, 0) + 1
        if status == "success" and attempts == 1 and n_rows == 1 and ok == 1:
            kinds["done"].add(eid)
        elif status == "pending" and attempts == 0 and n_rows == 0:
            kinds["waiting"].add(eid)
        elif status == "delivering" and attempts == 1 and n_rows == 1:
            kinds["in_flight"].add(eid)
        else:
            kinds["wrong"].add(eid)
    held = kinds["done"] | kinds["in_flight"]
    won_set = set(won)
    out: dict[str, Any] = {k: len(v) for k, v in kinds.items()}
    out.update(
        {
            "statuses": statuses,
            "executions": len(rows),
            "max_attempts": max((r[2] for r in rows), default=0),
            "not_seeded": len({r[0] for r in rows} - set(seeded)),
            "missing": len(set(seeded) - {r[0] for r in rows}),
            "lost": len(won_set - held) + len(kinds["wrong"]),
            "unclaimed_but_held": len(held - won_set),
            "duplicated": (len(won) - len(won_set)) + sum(1 for r in rows if r[2] > 1),
            "drained": not kinds["waiting"] and not kinds["in_flight"],
        }
    )
    return out


def server_workers(p: dict[str, Any]) -> None:
    """Pull workers end to end on loopback: executions seeded by hand-fired worker cues, then
    ``workers`` workers claim -> outcome until the queue is empty; first claiming the next one
    (``POST /v1/executions/claim``), then as the official cueapi-worker does (list claimable,
    claim by id)."""
    n, list_n = p["n"], p["list_n"]
    tmp = Path(tempfile.mkdtemp(prefix="work-", dir=os.path.dirname(p["db"])))
    server = Server(p["db"], tmp)
    watch = {"server": server.ps}
    out: dict[str, Any] = {"n": n, "list_n": list_n, "workers": p["workers"], "worker_cues": p["worker_cues"]}
    phases = [("next", "wn", n), ("list", "wl", list_n)]
    seeded_ids: dict[str, list[str]] = {}
    for mode, tag, count in phases:
        if count <= 0:
            continue
        # Each way has a user of its own, so that its queue (and the history its claims search) is
        # only its own.
        status, user = server.call("POST", "/v1/auth/register", {"email": f"bench-{mode}@example.com"})
        if status != 201:
            raise RuntimeError(f"register answered {status}: {user}")
        key = user["api_key"]
        # The workers announce themselves with the task they run, as the official daemon does
        # (claims then go through the handler filter).
        for i in range(p["workers"]):
            body = {"worker_id": f"w{i}", "handlers": ["t"]}
            status, answer = server.call("POST", "/v1/worker/heartbeat", body, key)
            if status != 200:
                raise RuntimeError(f"worker heartbeat answered {status}: {answer}")
        seeded, seeding = seed_worker_executions(server, key, tag, count, p, tmp, watch)
        seeded_ids[mode] = seeded
        r = wrk_workers(server, key, mode, seeded, p, tmp)
        r["seeding"] = seeding
        out[mode] = r
    out["server_rss_mb"] = server.ps.memory_info().rss / 2**20
    out["server_vm_hwm_mb"] = _vm_hwm_mb(server.proc.pid)
    out["server_stop"] = server.stop()
    errors = []
    for mode, tag, _ in phases:
        if mode not in out:
            continue
        r = out[mode]
        won = r.pop("won")
        r["store"] = st = worker_store_check(p["db"], f"{tag}-%", seeded_ids[mode], won)
        r["lost"], r["duplicated"], r["drained"] = st["lost"], st["duplicated"], st["drained"]
        # Stopped at its bound, a worker may have had a claim or an outcome in flight: its answer
        # is not counted, what the store did with it is.
        slack = 0 if r["drained"] else r["workers"]
        unseen = st["unclaimed_but_held"] > slack or not 0 <= st["done"] - r["cycles"] <= slack
        if r["lost"] or r["duplicated"] or r["unexpected"] or r["errors"] or unseen:
            errors.append(
                f"{mode}: {r['cycles']} cycles, lost {r['lost']}, duplicated {r['duplicated']}, "
                f"errors {r['errors']}, store {st}"
            )
        # A drain that hit its time bound is a figure (the rate over the bound), not an error.
    out["per_s"] = out.get("next", {}).get("per_s")
    if errors:
        out["error"] = "; ".join(errors)
    emit(out)


# -- 5. alerts: a failure to its alert webhook ------------------------------------------------------


def _alert_store(db: str, names_like: str) -> dict[str, Any]:
    """The alerts raised for the cues named ``names_like`` and their notifications: per execution,
    the alert's ``created_at`` and the alert webhook's ``sent_at`` (ms); counts by channel and
    status."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute(
            "SELECT a.execution_id, a.alert_type, a.created_at, n.channel, n.status, n.sent_at, n.attempts "
            "FROM alerts a JOIN cues c ON c.id = a.cue_id LEFT JOIN notifications n ON n.alert_id = a.id "
            "WHERE c.name LIKE ?",
            (names_like,),
        ).fetchall()
    finally:
        conn.close()
    created: dict[str, float] = {}
    sent: dict[str, float] = {}
    channels: dict[str, dict[str, int]] = {}
    types: dict[str, int] = {}
    alerts: set[tuple[str, str]] = set()
    for eid, kind, created_at, channel, status, sent_at, attempts in rows:
        alerts.add((eid, kind))
        created[eid] = created_at / 1000
        if channel:
            by = channels.setdefault(channel, {})
            by[status] = by.get(status, 0) + 1
            if channel == "alert_webhook" and sent_at is not None:
                sent[eid] = sent_at / 1000
            if attempts > 1:
                by["retried"] = by.get("retried", 0) + 1
    for _, kind in alerts:
        types[kind] = types.get(kind, 0) + 1
    return {
        "alerts": len(alerts),
        "types": types,
        "notifications": channels,
        "created": created,
        "sent": sent,
    }


def alert_phase(
    server: Server,
    receiver: Receiver,
    key: str,
    secrets: tuple[str, str],
    tag: str,
    times: list[float],
    rate: float,
    p: dict[str, Any],
    tmp: Path,
) -> tuple[dict[str, Any], dict[str, tuple[float, float]]]:
    """One webhook cue per instant of ``times`` (offsets in seconds from a start set after the
    cues exist), each a one-shot with no retries whose callback the receiver answers 500: each
    fails once and raises one alert, sent to the receiver's ``/alerts``. Returns the figures and,
    per execution, (failing delivery's arrival, alert's arrival)."""
    secret, alert_secret = secrets
    k = len(times)
    start = math.ceil(time.time() + 2 + 1.5 * k / rate)
    spec = {
        "name": "{NAME}",
        "schedule": {"type": "once", "at": "{ID}"},
        "callback": {"url": f"http://127.0.0.1:{receiver.port}/fail"},
        "retry": {"max_attempts": 0},
    }
    receiver.reset()
    created = wrk(
        server.url,
        "POST",
        "/v1/cues",
        json.dumps(spec),
        key=key,
        ids=[iso(start + t) for t in times],
        tag=tag,
        p=p,
        watch={"server": server.ps},
        server=server,
        tmp=tmp,
    )
    out: dict[str, Any] = {"cues": k, "create": _strip(created), "due_lead_s": start - time.time()}
    if created["ok"] != k:
        raise RuntimeError(f"only {created['ok']} of {k} alerting cues were created ({_strip(created)})")
    if time.time() >= start:
        raise RuntimeError("creating the alerting cues overran their first due instant")
    last_due = start + max(times)
    sleep_until(start)
    cpu = CpuWatch({"server": server.ps, "receiver": receiver.ps}, server)
    deadline = last_due + min(p["timeout"], 60.0)
    count, last_arrival = 0, 0.0
    while time.time() < deadline:  # k failing deliveries and k alerts at the receiver
        count, last_arrival = receiver.count()
        if count >= 2 * k:
            break
        time.sleep(0.05)
    out["cpu"] = cpu.stop(max(last_arrival - start, 1e-3))
    sleep_until(time.time() + 1.0)  # a duplicate or a late alert is still seen
    fails, alerts = [], []
    for r in receiver.records():
        (fails if r["path"] == "/fail" else alerts).append(r)
    deliveries, check = parse_deliveries(fails, secret)
    from cueapi.webhooks import verify_webhook

    delivered: dict[str, float] = {}
    for d in deliveries:
        delivered[d["execution_id"]] = min(d["t"], delivered.get(d["execution_id"], math.inf))
    arrived: dict[str, float] = {}
    bad_sig, types, extra = 0, {}, 0
    for a in alerts:
        h = a["headers"]
        bad_sig += not verify_webhook(
            a["body"], h.get("x-cueapi-signature"), alert_secret, h.get("x-cueapi-timestamp")
        )
        body = json.loads(a["body"])
        kind = body.get("alert_type", "?")
        types[kind] = types.get(kind, 0) + 1
        eid = body.get("execution_id")
        if eid in arrived or eid not in delivered:
            extra += 1
            continue
        arrived[eid] = a["t"]
        if h.get("x-cueapi-alert-type") != kind:
            bad_sig += 1
    pairs = {e: (delivered[e], t) for e, t in arrived.items()}
    out.update(
        {
            "deliveries": check,
            "delivery_lag": percentiles([d["t"] - d["scheduled"] for d in deliveries]),
            "alerts_received": len(alerts),
            "alert_types": types,
            "alerts_matched": len(pairs),
            "alerts_missing": k - len(pairs),
            "alerts_extra": extra,
            "alert_bad_signatures": bad_sig,
            "first_failure_s": min(delivered.values()) - start if delivered else None,
            "last_alert_s": max(arrived.values()) - start if arrived else None,
        }
    )
    out.update(percentiles([t - d for d, t in pairs.values()]))
    out["n"] = len(pairs)
    return out, pairs


def server_alerts(p: dict[str, Any]) -> None:
    """A failing delivery to its alert webhook: the user's alert webhook is the receiver's
    ``/alerts``; cues whose callback (the receiver's ``/fail``) answers 500 and that may not retry
    fail at their first attempt, each raising a ``retries_exhausted`` alert. Latency = the alert's
    arrival at the receiver - the failing delivery's arrival there (the body's ``execution_id``
    matches them). Once as a burst (all due the same instant), once at a steady rate."""
    tmp, receiver, server = _setup(p)
    key, secret = server.register()
    alert_url = f"http://127.0.0.1:{receiver.port}/alerts"
    status, body = server.call("PATCH", "/v1/auth/me", {"alert_webhook_url": alert_url}, key)
    if status != 200:
        raise RuntimeError(f"PATCH /v1/auth/me answered {status}: {body}")
    status, body = server.call("GET", "/v1/auth/alert-webhook-secret", key=key)
    if status != 200:
        raise RuntimeError(f"GET /v1/auth/alert-webhook-secret answered {status}: {body}")
    secrets = (secret, body["alert_webhook_secret"])
    out: dict[str, Any] = {
        "burst_n": p["burst_n"],
        "steady_rate": p["steady_rate"],
        "steady_n": p["steady_n"],
    }
    # Pilot: how fast such cues are created, so that each phase is due only after its cues exist.
    far = iso(time.time() + 30 * 86400)
    pilot_spec = {
        "schedule": {"type": "once", "at": far},
        "callback": {"url": f"http://127.0.0.1:{receiver.port}/fail"},
    }
    pilot = create_cues(server, key, pilot_spec, p["pilot_n"], "pilot", p, tmp, {"server": server.ps})
    out["pilot"] = _strip(pilot)
    rate = max(pilot["per_s"], 1.0)
    phases = {
        "burst": ("ab", [0.0] * p["burst_n"]),
        "steady": ("as", [i / p["steady_rate"] for i in range(p["steady_n"])]),
    }
    pairs: dict[str, dict[str, tuple[float, float]]] = {}
    for name, (tag, times) in phases.items():
        if times:
            out[name], pairs[name] = alert_phase(server, receiver, key, secrets, tag, times, rate, p, tmp)
    out["server_rss_mb"] = server.ps.memory_info().rss / 2**20
    out["server_vm_hwm_mb"] = _vm_hwm_mb(server.proc.pid)
    _finish(out, receiver, server)
    errors = []
    for name, (tag, times) in phases.items():
        if name not in out:
            continue
        r = out[name]
        st = _alert_store(p["db"], f"{tag}-%")
        created, sent = st.pop("created"), st.pop("sent")
        # Where the time goes, per alert: the failing answer back at the server (the alert's
        # created_at is the instant the server had the 500) and from there to the alert's arrival.
        r["stage_answer_back"] = percentiles(
            [created[e] - d for e, (d, _) in pairs[name].items() if e in created]
        )
        r["stage_to_alert"] = percentiles(
            [t - created[e] for e, (_, t) in pairs[name].items() if e in created]
        )
        r["stage_sent_recorded"] = percentiles(
            [sent[e] - t for e, (_, t) in pairs[name].items() if e in sent]
        )
        r["store"] = {**st, **store_counts(p["db"], f"{tag}-%")}
        k = len(times)
        c = r["deliveries"]
        r["complete"] = (
            r["alerts_matched"] == k
            and r["alerts_extra"] == 0
            and r["alert_bad_signatures"] == 0
            and c["distinct_execution_ids"] == k
            and c["duplicate_deliveries"] == 0
            and c.get("bad_signatures") == 0
            and r["store"]["statuses"] == {"failed": k}
        )
        if not r["complete"]:
            errors.append(
                f"{name}: {r['alerts_matched']} alerts matched of {k} ({r['alerts_extra']} extra, "
                f"{r['alert_bad_signatures']} bad signatures), {c['distinct_execution_ids']} deliveries, "
                f"store {r['store']['statuses']}"
            )
    if errors:
        out["error"] = "; ".join(errors)
    emit(out)


PARTS = {
    "server-precision": server_precision,
    "server-burst": server_burst,
    "server-api": server_api,
    "server-workers": server_workers,
    "server-alerts": server_alerts,
}

if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "serve":
        serve_main(sys.argv[2])
    elif role == "receive":
        receive_main()
    elif role in PARTS and len(sys.argv) == 4 and sys.argv[2] == "cueapi":
        try:
            PARTS[role](json.loads(sys.argv[3]))
        except Exception as exc:  # a failed measurement is a result that says why
            import traceback

            emit({"error": f"{type(exc).__name__}: {exc}", "stderr": traceback.format_exc()[-2000:]})
    else:
        raise SystemExit(__doc__)
