"""The soak benchmark: `cueapi serve` under mixed load for a long while (30 minutes by default),
to show that nothing drifts — memory, fire lag and database growth over time.

    python bench/soak.py [--minutes 30] [--webhooks 100] [--workers 10] [--reads 10]
    python bench/soak.py receive          # the webhook receiver (started by the orchestrator)
    python bench/soak.py --render FILE    # measure nothing: redraw the plot and the RESULTS block

The load, all of it at once for the whole run:

* ``--webhooks`` webhook cues due every second (``* * * * * *``), each delivered to a receiver
  in its own process that answers 500 to 5 % of requests (picked at random, seeded) and 200 to
  the rest; failed attempts are retried a minute later (one retry);
* ``--workers`` worker-transport cues due every second, claimed by a pull worker (a thread of the
  orchestrator: ``GET /v1/executions/claimable``, ``POST .../claim``, ``POST .../outcome`` with
  evidence) — the outcome reports;
* ``--reads`` API reads a second, round robin over ``GET /v1/cues``, ``GET /v1/executions?limit=50``,
  ``GET /v1/executions/{id}``, ``GET /v1/cues/{id}``, ``GET /health``.

Sampled every 5 s: the server's RSS (psutil), the database's size (file + WAL), the receiver's
per-window fire lag (arrival minus ``scheduled_for`` of first attempts, p50/p99/max per 10 s window).
At the end: the store's counts by status, occurrences lost (every second of every cue must have
an execution), the result lines for bench/RESULTS.md (between its ``soak`` markers) and a PNG
plot (bench/soak.png). The server is the release build `make soak` installs into .venv-bench.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from server import Child, Server, _psutil, iso, sleep_until, split_requests  # noqa: E402

UTC = timezone.utc
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"ok": true}'
FAIL = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n"
    b'{"ok": false}'
)
WINDOW_S = 10
BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"

# -- the receiver process -----------------------------------------------------------------------------


def _scheduled(body: bytes) -> tuple[float, int] | None:
    """``scheduled_for`` (Unix seconds) and ``attempt`` of a delivery body."""
    try:
        d = json.loads(body)
        at = datetime.fromisoformat(d["scheduled_for"].replace("Z", "+00:00")).timestamp()
        return at, int(d.get("attempt", 1))
    except (ValueError, KeyError, TypeError):
        return None


def receive_main(fail_share: float, seed: int) -> None:
    """Answers deliveries (500 to ``fail_share`` of them) and prints, every window, ``WINDOW
    <json>``: requests, failures answered, first attempts, retries, and the lags of first
    attempts (p50, p99, max, in ms) of deliveries *scheduled* in that window."""
    rng = random.Random(seed)
    lags: dict[int, list[float]] = {}
    counts: dict[int, dict[str, int]] = {}

    class Hook(asyncio.Protocol):
        def __init__(self) -> None:
            self.tr: Any = None
            self.buf = b""

        def connection_made(self, transport: Any) -> None:
            self.tr = transport

        def data_received(self, data: bytes) -> None:
            t = time.time()
            requests, self.buf = split_requests(self.buf + data if self.buf else data)
            for _head, body in requests:
                fail = rng.random() < fail_share
                self.tr.write(FAIL if fail else OK)
                s = _scheduled(body)
                if s is None:
                    continue
                at, attempt = s
                w = int(at // WINDOW_S)
                c = counts.setdefault(w, {"requests": 0, "failed": 0, "first": 0, "retries": 0})
                c["requests"] += 1
                c["failed"] += fail
                if attempt == 1:
                    c["first"] += 1
                    lags.setdefault(w, []).append((t - at) * 1000)
                else:
                    c["retries"] += 1

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Hook, "127.0.0.1", 0, backlog=4096)
        print("PORT", server.sockets[0].getsockname()[1], flush=True)
        done = loop.create_future()

        def command() -> None:
            line = sys.stdin.readline()
            if not line:
                loop.remove_reader(sys.stdin.fileno())
                done.set_result(None)
                return
            if line.strip() == "flush":
                # Every window that ended more than 2 windows ago (late first attempts are in).
                edge = int(time.time() // WINDOW_S) - 2
                for w in sorted(k for k in counts if k <= edge):
                    ls = sorted(lags.pop(w, []))
                    out = {"window": w * WINDOW_S, **counts.pop(w)}
                    if ls:
                        out.update(p50=_pct(ls, 50), p99=_pct(ls, 99), max=ls[-1])
                    print("WINDOW", json.dumps(out), flush=True)
                print("FLUSHED", flush=True)

        loop.add_reader(sys.stdin.fileno(), command)
        await done
        server.close()

    asyncio.run(main())
    os._exit(0)


def _pct(sorted_values: list[float], p: float) -> float:
    k = (len(sorted_values) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


class Receiver(Child):
    def __init__(self, tmp: Path, fail_share: float, seed: int) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "receive", str(fail_share), str(seed)]
        super().__init__(cmd, tmp / "receiver.stderr", "receiver")
        self.port = int(self.expect("PORT ", 30))
        self.ps = _psutil().Process(self.proc.pid)

    def windows(self) -> list[dict[str, Any]]:
        self.send("flush")
        out = []
        while True:
            line = self.expect("", 30)
            if line == "FLUSHED":
                return out
            if line.startswith("WINDOW "):
                out.append(json.loads(line[7:]))


# -- the orchestrator ----------------------------------------------------------------------------------


class Api:
    """A keep-alive HTTP client of its own (one per thread)."""

    def __init__(self, url: str, key: str) -> None:
        import httpx

        self.c = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> tuple[int, Any]:
        r = self.c.request(method, path, json=body, params=params or None)
        return r.status_code, (r.json() if r.content else None)

    def close(self) -> None:
        self.c.close()


def pull_worker(url: str, key: str, stop: threading.Event, stats: dict[str, int]) -> None:
    """Claims worker executions and reports their outcomes with evidence, until ``stop``."""
    api = Api(url, key)
    n = 0
    try:
        while not stop.is_set():
            status, body = api.call("GET", "/v1/executions/claimable", task="soak")
            ids = [e["execution_id"] for e in (body or {}).get("executions", [])] if status == 200 else []
            if not ids:
                stats["empty_polls"] += 1
                stop.wait(0.2)
                continue
            for eid in ids:
                status, _ = api.call("POST", f"/v1/executions/{eid}/claim", {"worker_id": "soak-worker"})
                if status != 200:
                    stats["claim_lost"] += 1
                    continue
                n += 1
                report = {
                    "success": n % 50 != 0,
                    "result": "processed",
                    "external_id": f"job-{n}",
                    "result_type": "soak",
                    "summary": "one unit of soak work",
                    "metadata": {"n": n},
                }
                status, _ = api.call("POST", f"/v1/executions/{eid}/outcome", report)
                stats["outcomes" if status == 200 else "outcome_errors"] += 1
    finally:
        api.close()


def reader(url: str, key: str, per_second: float, stop: threading.Event, stats: dict[str, int]) -> None:
    api = Api(url, key)
    i = 0
    ids: list[str] = []
    next_at = time.monotonic()
    try:
        while not stop.is_set():
            kind = i % 5
            if kind == 0:
                status, _ = api.call("GET", "/v1/cues", limit=100)
            elif kind == 1:
                status, body = api.call("GET", "/v1/executions", limit=50)
                ids = [e["id"] for e in (body or {}).get("executions", [])]
            elif kind == 2 and ids:
                status, _ = api.call("GET", f"/v1/executions/{ids[i % len(ids)]}")
            elif kind == 3:
                status, body = api.call("GET", "/v1/cues", limit=1)
                cues = (body or {}).get("cues", [])
                if cues:
                    status, _ = api.call("GET", f"/v1/cues/{cues[0]['id']}")
            else:
                status, _ = api.call("GET", "/health")
            stats["reads" if status < 500 else "read_errors"] += 1
            i += 1
            next_at += 1 / per_second
            stop.wait(max(0.0, next_at - time.monotonic()))
    finally:
        api.close()


def db_size_mb(db: str) -> float:
    return sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p)) / 2**20


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="cueapi-soak-"))
    db = str(tmp / "soak.db")
    receiver = Receiver(tmp, args.fail_share, args.seed)
    server = Server(db, tmp)
    key, _ = server.register()
    url = server.url
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    retry = {"max_attempts": 1, "backoff_minutes": [1]}
    for i in range(args.webhooks):
        spec = {
            "name": f"soak-hook-{i}",
            "schedule": {"type": "recurring", "cron": "* * * * * *"},
            "callback": {"url": hook},
            "payload": {"i": i},
            "retry": retry,
        }
        status, body = server.call("POST", "/v1/cues", spec, key)
        if status != 201:
            raise RuntimeError(f"creating a cue answered {status}: {body}")
    for i in range(args.workers):
        spec = {
            "name": f"soak-worker-{i}",
            "schedule": {"type": "recurring", "cron": "* * * * * *"},
            "transport": "worker",
            "payload": {"task": "soak", "i": i},
        }
        status, body = server.call("POST", "/v1/cues", spec, key)
        if status != 201:
            raise RuntimeError(f"creating a worker cue answered {status}: {body}")

    stop = threading.Event()
    names = ("outcomes", "outcome_errors", "claim_lost", "empty_polls", "reads", "read_errors")
    stats = dict.fromkeys(names, 0)
    threads = [
        threading.Thread(target=pull_worker, args=(url, key, stop, stats), daemon=True),
        threading.Thread(target=reader, args=(url, key, args.reads, stop, stats), daemon=True),
    ]
    for t in threads:
        t.start()
    start = math.floor(time.time()) + 2
    end = start + args.minutes * 60
    samples: list[dict[str, Any]] = []
    windows: list[dict[str, Any]] = []
    next_sample = start
    print(f"soak: {args.minutes} min from {iso(start)}; databases under {tmp}", flush=True)
    while (now := time.time()) < end:
        sleep_until(next_sample)
        with contextlib.suppress(Exception):
            samples.append(
                {
                    "t": time.time() - start,
                    "rss_mb": server.ps.memory_info().rss / 2**20,
                    "db_mb": db_size_mb(db),
                    "server_cpu_s": sum(server.ps.cpu_times()[:2]),
                }
            )
        if len(samples) % 12 == 0:
            windows.extend(receiver.windows())
            last = samples[-1] if samples else {}
            lag = windows[-1].get("p99") if windows else None
            print(
                f"  {last.get('t', 0) / 60:5.1f} min  rss {last.get('rss_mb', 0):6.1f} MB  "
                f"db {last.get('db_mb', 0):7.1f} MB  lag p99 {lag if lag is None else round(lag, 1)} ms  "
                f"outcomes {stats['outcomes']}  reads {stats['reads']}",
                flush=True,
            )
        next_sample += 5
        del now
    stop.set()
    for t in threads:
        t.join(60)
    # Let the last windows' late deliveries arrive, then read them.
    sleep_until(time.time() + 2 * WINDOW_S + 2)
    windows.extend(receiver.windows())
    out = server.stop()
    receiver.wait(30)
    store = store_check(db, start, end, args.webhooks + args.workers)
    windows = [w for w in merge_windows(windows) if start <= w["window"] and w["window"] + WINDOW_S <= end]
    result = {
        "params": vars(args),
        "start": start,
        "samples": samples,
        "windows": windows,
        "load": stats,
        "store": store,
        "server_stop": out,
        "build": os.environ.get("CUEAPI_BENCH_BUILD", "?"),
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return result


def merge_windows(windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per window: a window's retries arrive a minute after it was first reported, and
    are reported again under the same window."""
    merged: dict[int, dict[str, Any]] = {}
    for w in windows:
        m = merged.setdefault(
            w["window"], {"window": w["window"], "requests": 0, "failed": 0, "first": 0, "retries": 0}
        )
        for k in ("requests", "failed", "first", "retries"):
            m[k] += w[k]
        for k in ("p50", "p99", "max"):
            if k in w:
                m[k] = w[k]
    return [merged[k] for k in sorted(merged)]


def store_check(db: str, start: float, end: float, cues: int) -> dict[str, Any]:
    """Counts by status, and occurrences missing or doubled in [start, end): one execution per cue
    per second is due."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        by_status = dict(conn.execute("SELECT status, count(*) FROM executions GROUP BY status").fetchall())
        lo, hi = int(start * 1000), int(end * 1000)
        per = conn.execute(
            "SELECT count(*), count(DISTINCT cue_id || '@' || scheduled_for) FROM executions "
            "WHERE scheduled_for >= ? AND scheduled_for < ?",
            (lo, hi),
        ).fetchone()
        attempts = conn.execute("SELECT count(*) FROM attempts").fetchone()[0]
    finally:
        conn.close()
    expected = cues * int(end - start)
    return {
        "by_status": by_status,
        "expected": expected,
        "executions_in_window": per[0],
        "distinct_occurrences": per[1],
        "missing": expected - per[1],
        "doubled": per[0] - per[1],
        "attempts": attempts,
        "db_mb": db_size_mb(db),
    }


# -- the report ----------------------------------------------------------------------------------------


def summary(r: dict[str, Any]) -> dict[str, Any]:
    s, w = r["samples"], r["windows"]
    minutes = r["params"]["minutes"]
    first = [x for x in s if x["t"] >= 60] or s
    rss = [x["rss_mb"] for x in first]
    p99 = [x["p99"] for x in w if "p99" in x]
    tail = [x for x in s if x["t"] >= s[-1]["t"] - 300] if s else []
    head = [x for x in s if 60 <= x["t"] < 360]
    growth = None
    if s and s[-1]["t"] > 0:
        growth = (s[-1]["db_mb"] - s[0]["db_mb"]) / (s[-1]["t"] / 3600)
    # Where memory levels off: the first sample within 5 % of the last five minutes' mean, and the
    # spread of every sample after it.
    level = None
    if tail:
        mean = sum(x["rss_mb"] for x in tail) / len(tail)
        at = next((i for i, x in enumerate(s) if x["rss_mb"] >= 0.95 * mean), None)
        if at is not None:
            rest = [x["rss_mb"] for x in s[at:]]
            level = {"from_min": s[at]["t"] / 60, "low_mb": min(rest), "high_mb": max(rest)}
    return {
        "rss_level": level,
        "minutes": minutes,
        "rss_first_min_mb": rss[0] if rss else None,
        "rss_end_mb": rss[-1] if rss else None,
        "rss_max_mb": max(rss) if rss else None,
        "rss_head_mean": sum(x["rss_mb"] for x in head) / len(head) if head else None,
        "rss_tail_mean": sum(x["rss_mb"] for x in tail) / len(tail) if tail else None,
        "lag_p99_worst_window": max(p99) if p99 else None,
        "lag_p99_median_window": sorted(p99)[len(p99) // 2] if p99 else None,
        "lag_max": max((x.get("max", 0) for x in w), default=None),
        "windows": len(w),
        "requests": sum(x["requests"] for x in w),
        "failed_answers": sum(x["failed"] for x in w),
        "retries": sum(x["retries"] for x in w),
        "db_end_mb": s[-1]["db_mb"] if s else None,
        "db_growth_mb_per_h": growth,
        "server_cpu_share": (s[-1]["server_cpu_s"] - s[0]["server_cpu_s"]) / max(1e-9, s[-1]["t"] - s[0]["t"])
        if len(s) > 1
        else None,
    }


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, w = r["samples"], r["windows"]
    start = r["start"]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    axes[0].plot([x["t"] / 60 for x in s], [x["rss_mb"] for x in s], color="tab:blue")
    axes[0].set_ylabel("server RSS (MB)")
    axes[0].set_ylim(bottom=0)
    xs = [(x["window"] + WINDOW_S / 2 - start) / 60 for x in w if "p99" in x]
    axes[1].plot(xs, [x["p99"] for x in w if "p99" in x], color="tab:red", label="p99")
    axes[1].plot(xs, [x["p50"] for x in w if "p50" in x], color="tab:orange", label="p50")
    axes[1].set_ylabel(f"fire lag per {WINDOW_S} s (ms)")
    axes[1].set_ylim(bottom=0)
    axes[1].legend(loc="upper right")
    axes[2].plot([x["t"] / 60 for x in s], [x["db_mb"] for x in s], color="tab:green")
    axes[2].set_ylabel("database + WAL (MB)")
    axes[2].set_xlabel("minutes")
    axes[2].set_ylim(bottom=0)
    p = r["params"]
    fig.suptitle(
        f"cueapi serve soak: {p['webhooks']} webhook cues/s ({p['fail_share']:.0%} failing), "
        f"{p['workers']} worker cues/s with outcomes, {p['reads']} reads/s"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def level_cells(level: dict[str, float] | None) -> str:
    if not level:
        return "— |"
    return f"{level['from_min']:,.1f} / {level['low_mb']:,.1f} / {level['high_mb']:,.1f} MB |"


def markdown(r: dict[str, Any], png: str) -> str:
    m = summary(r)
    st, p, load = r["store"], r["params"], r["load"]

    def f(x: Any, d: int = 1) -> str:
        return "—" if x is None else f"{x:,.{d}f}"

    lines = [
        BEGIN,
        "",
        f"Command: `make soak` (= `python bench/soak.py --minutes {p['minutes']}` with the release build), "
        f"build {r['build']}, run {r['run_at']}. Plot: [{png}]({png}).",
        "",
        f"Load for {p['minutes']} minutes: {p['webhooks']} webhook cues due every second "
        f"(the receiver answers 500 to {p['fail_share']:.0%} at random, one retry a minute later), "
        f"{p['workers']} worker cues due every second claimed by a pull worker that reports each "
        f"outcome with evidence (every 50th a failure), {p['reads']} API reads a second.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| server RSS: after the first minute / mean of minutes 1 to 6 / mean of the last 5 minutes / max "
        f"| {f(m['rss_first_min_mb'])} / {f(m['rss_head_mean'])} / {f(m['rss_tail_mean'])} / "
        f"{f(m['rss_max_mb'])} MB |",
        "| server RSS levels off: from minute / lowest / highest after that | " + level_cells(m["rss_level"]),
        f"| fire lag p99 per {WINDOW_S} s window: median window / worst window; worst single delivery "
        f"| {f(m['lag_p99_median_window'])} / {f(m['lag_p99_worst_window'])} ms; {f(m['lag_max'])} ms |",
        f"| database + WAL at the end; growth | {f(m['db_end_mb'])} MB; {f(m['db_growth_mb_per_h'])} MB/h |",
        f"| webhook requests / answered 500 / retries | {m['requests']:,} / {m['failed_answers']:,} / "
        f"{m['retries']:,} |",
        f"| outcome reports / refused | {load['outcomes']:,} / {load['outcome_errors']:,} |",
        f"| API reads / 5xx | {load['reads']:,} / {load['read_errors']:,} |",
        f"| occurrences due / missing / doubled | {st['expected']:,} / {st['missing']:,} / "
        f"{st['doubled']:,} |",
        "| executions by status at the end | "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(st["by_status"].items()))
        + " |",
        f"| server CPU (share of one core) | {f(m['server_cpu_share'], 2)} |",
        "",
        *([p["note"], ""] if p.get("note") else []),
        "There is no peer row: the soak measures our own server's drift over time (what a peer would "
        "add is its own drift, which no peer publishes for this load).",
        "",
        END,
    ]
    return "\n".join(lines)


def write_results(r: dict[str, Any], results_md: Path, png: Path) -> None:
    block = markdown(r, png.name)
    text = results_md.read_text() if results_md.exists() else ""
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        _, after = rest.split(END, 1)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n## Soak (bench/soak.py)\n\n" + block + "\n"
    results_md.write_text(text)


def main(argv: list[str]) -> int:
    if argv[:1] == ["receive"]:
        receive_main(float(argv[1]), int(argv[2]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--webhooks", type=int, default=100, help="webhook cues due every second")
    ap.add_argument("--workers", type=int, default=10, help="worker cues due every second")
    ap.add_argument("--reads", type=float, default=10.0, help="API reads a second")
    ap.add_argument("--fail-share", type=float, default=0.05, help="share of webhook requests answered 500")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--png", default=str(HERE / "soak.png"))
    ap.add_argument("--json", default=str(HERE / "soak.json"))
    ap.add_argument("--render", metavar="JSON", help="measure nothing: redraw from a saved run")
    ap.add_argument("--note", default="", help="a sentence on the conditions of the run, kept with it")
    args = ap.parse_args(argv)
    if args.render:
        r = json.loads(Path(args.render).read_text())
        r["windows"] = merge_windows(r["windows"])
        if args.note:
            r["params"]["note"] = args.note
    else:
        r = run(args)
        Path(args.json).write_text(json.dumps(r))
    plot(r, Path(args.png))
    write_results(r, Path(args.out), Path(args.png))
    m = summary(r)
    print(json.dumps({"summary": m, "store": r["store"], "load": r["load"]}, indent=1))
    st = r["store"]
    return 0 if st["missing"] == 0 and st["doubled"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
