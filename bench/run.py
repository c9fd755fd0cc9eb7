"""cueapi against APScheduler 3.x, side by side: fire precision, throughput, scale.

    python bench/run.py            # the full figures (about 15 minutes); writes bench/RESULTS.md
    python bench/run.py --quick    # small sizes, validates the harness in under a minute

Every measurement runs in a process of its own (one system at a time, on a database in a fresh
temporary directory), started by this script with a time limit. Results go to the generated
block of RESULTS.md (text outside the block is kept) and to results.json beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
import report
import report_workers_alerts

HERE = Path(__file__).resolve().parent
SYSTEMS = ("cueapi", "aps-memory", "aps-sqlalchemy")
PARTS = ("precision", "throughput", "scale")
# cueapi serve only (bench/server.py); the last two are rendered by bench/report_workers_alerts.py.
SERVER_PARTS = ("server-precision", "server-burst", "server-api", "server-workers", "server-alerts")
# Several serve nodes on one PostgreSQL database beside one on SQLite (bench/cluster.py, issue 12);
# rendered by bench/report_cluster.py.
CLUSTER_PARTS = ("cluster-precision", "cluster-burst", "cluster-api", "cluster-failover")


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--parts",
        default=",".join(PARTS + SERVER_PARTS + CLUSTER_PARTS),
        help=f"comma-separated, of {', '.join(PARTS + SERVER_PARTS + CLUSTER_PARTS)} (default: %(default)s)",
    )
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of %(default)s")
    ap.add_argument("--quick", action="store_true", help="small sizes: checks the harness, not the figures")
    ap.add_argument("--workers", type=int, default=8, help="handler threads, both systems (cueapi's default)")
    ap.add_argument("--precision-jobs", type=int, default=50, help="jobs, each firing every second")
    ap.add_argument("--precision-seconds", type=int, default=24, help="seconds of ticks measured")
    ap.add_argument("--precision-warmup", type=int, default=2, help="seconds of ticks ignored after start")
    ap.add_argument("--throughput-n", type=int, default=20_000, help="one-shot jobs due at the same instant")
    ap.add_argument("--scale-n", type=int, default=1_000_000, help="cues for cueapi")
    ap.add_argument(
        "--scale-memory-n", type=int, help="jobs for APScheduler's memory store (default: --scale-n)"
    )
    ap.add_argument(
        "--scale-sql-n",
        type=int,
        default=100_000,
        help="jobs for APScheduler's SQLAlchemy store (its add time is extrapolated to --scale-n)",
    )
    ap.add_argument("--chunk", type=int, default=10_000, help="cues per create_cues call")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measured")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds after the first tick before that")
    ap.add_argument("--server-precision-cues", type=int, default=50, help="webhook cues, each every second")
    ap.add_argument("--server-precision-seconds", type=int, default=20, help="seconds of deliveries measured")
    ap.add_argument("--server-precision-warmup", type=int, default=2, help="seconds ignored after creation")
    ap.add_argument("--server-burst-n", type=int, default=10_000, help="one-shot webhook cues due together")
    ap.add_argument("--server-api-n", type=int, default=50_000, help="requests per measured API call")
    ap.add_argument("--server-worker-cues", type=int, default=100, help="worker cues the fires go to")
    ap.add_argument("--server-ceiling-n", type=int, default=60_000, help="requests of the wrk → receiver run")
    ap.add_argument(
        "--server-workers-n", type=int, default=20_000, help="claim → outcome cycles (claiming the next one)"
    )
    ap.add_argument(
        "--server-workers-list-n",
        type=int,
        default=10_000,
        help="cycles the official worker's way: list claimable, claim by id (0: not measured)",
    )
    ap.add_argument(
        "--server-workers", type=int, default=8, help="concurrent pull workers (one connection each)"
    )
    ap.add_argument("--server-workers-list-limit", type=int, default=50, help="claimable listed per poll")
    ap.add_argument(
        "--server-workers-seconds",
        type=float,
        default=60.0,
        help="bound on each drain; one that does not finish is reported with the rate over the bound",
    )
    ap.add_argument("--server-alerts-n", type=int, default=500, help="failing cues due at the same instant")
    ap.add_argument(
        "--server-alerts-rate", type=int, default=50, help="failing cues per second, steady phase"
    )
    ap.add_argument(
        "--server-alerts-steady-n", type=int, default=500, help="failing cues of the steady phase (0: none)"
    )
    ap.add_argument(
        "--cluster-api-n",
        type=int,
        default=20_000,
        help="requests per measured API call of cluster-api (each setup makes its own cues)",
    )
    ap.add_argument(
        "--cluster-failover-cues",
        type=int,
        nargs="+",
        default=[300, 50],
        help="every-second cues while a node is killed: one cluster per number, in turn",
    )
    ap.add_argument("--cluster-failover-repeats", type=int, default=3, help="nodes killed, one after another")
    ap.add_argument(
        "--cluster-failover-after",
        type=int,
        default=3,
        help="seconds of ticks measured after the survivors hold every partition",
    )
    ap.add_argument("--connections", type=int, default=64, help="wrk's keep-alive connections")
    ap.add_argument("--wrk-threads", type=int, default=1, help="wrk's threads")
    ap.add_argument("--timeout", type=float, default=900.0, help="limit for any one wait, seconds")
    ap.add_argument("--tmpdir", help="where the temporary databases go (default: the system's)")
    ap.add_argument("--out", help="Markdown results (default: bench/RESULTS.md; with --quick, a temp file)")
    ap.add_argument(
        "--render", metavar="RESULTS_JSON", help="measure nothing: rewrite --out from saved results"
    )
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="keep no part from the results already beside --out (default: parts not measured now are "
        "kept, marked with the run that measured them)",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.precision_jobs, args.precision_seconds, args.precision_warmup = 10, 2, 0
        args.throughput_n, args.scale_n, args.scale_sql_n = 500, 10_000, 500
        args.chunk, args.idle, args.settle, args.timeout = 5_000, 1.0, 0.5, 120.0
        args.server_precision_cues, args.server_precision_seconds, args.server_precision_warmup = 10, 3, 1
        args.server_burst_n, args.server_api_n, args.server_ceiling_n = 500, 1_000, 5_000
        args.server_worker_cues = 10
        args.server_workers_n, args.server_workers_list_n, args.server_workers_seconds = 1_000, 500, 20.0
        args.server_alerts_n, args.server_alerts_rate, args.server_alerts_steady_n = 100, 20, 60
        args.cluster_api_n, args.cluster_failover_cues, args.cluster_failover_repeats = 1_000, [30, 10], 1
        args.cluster_failover_after = 1
    args.scale_memory_n = args.scale_memory_n or args.scale_n
    args.parts = [p for p in args.parts.split(",") if p]
    args.systems = [s for s in args.systems.split(",") if s]
    for p in args.parts:
        if p not in PARTS + SERVER_PARTS + CLUSTER_PARTS:
            ap.error(f"unknown part {p!r}")
    for s in args.systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r}")
    return args


SNAPSHOT_S = 0.3


def load_snapshot(seconds: float | None = None) -> dict[str, Any]:
    """The load average, and other processes busy over ``seconds`` (they disturb the figures)."""
    me = os.getpid()
    procs = []
    for proc in psutil.process_iter(["pid", "name"]):
        if proc.info["pid"] == me:
            continue
        try:
            proc.cpu_percent(None)
            procs.append(proc)
        except psutil.Error:
            pass
    time.sleep(SNAPSHOT_S if seconds is None else seconds)
    busy = []
    for proc in procs:
        try:
            pct = proc.cpu_percent(None)
        except psutil.Error:
            continue
        if pct >= 10:
            busy.append(f"{proc.info['name']} {pct:.0f}%")
    return {"loadavg": os.getloadavg()[0], "busy": busy}


def _busy_cpu_s() -> float:
    t = psutil.cpu_times()
    return (
        sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    )


def run_worker(
    part: str, system: str, params: dict[str, Any], timeout: float, script: str = "workers.py"
) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / script), part, system, json.dumps(params)]
    before = load_snapshot()
    print(f"  {part:<16} {system:<15}", end="", flush=True)
    t0, busy0, mine0 = time.time(), _busy_cpu_s(), os.times()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed the worker
        result: dict[str, Any] = {
            "error": f"worker exceeded {timeout:.0f} s",
            "stderr": str(exc.stderr)[-2000:],
        }
    else:
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
        if done.returncode == 0 and lines:
            result = json.loads(lines[-1][len("RESULT ") :])
        else:
            result = {"error": f"worker exited {done.returncode}", "stderr": done.stderr[-2000:]}
        if done.stderr.strip() and "stderr" not in result:
            result["stderr_tail"] = done.stderr.strip()[-500:]
    mine1, busy1 = os.times(), _busy_cpu_s()
    result["wall_s"] = time.time() - t0
    # CPU the rest of the machine used meanwhile: all busy CPU time less this script's and its
    # children's, and that of the servers the worker started that are not its children (the
    # cluster parts' PostgreSQL, which the worker measures itself: daemon_cpu_s).
    daemon = result.get("daemon_cpu_s", 0.0)
    ours = sum(mine1[:4]) - sum(mine0[:4]) + daemon
    result["worker_cpu_s"] = (
        (mine1.children_user + mine1.children_system) - (mine0.children_user + mine0.children_system) + daemon
    )
    result["other_cpu_s"] = max(0.0, (busy1 - busy0) - ours)
    result["load_before"] = before
    result["load_after"] = load_snapshot()
    status = "ERROR: " + result["error"] if "error" in result else "ok"
    other = f"other processes used {result['other_cpu_s']:.1f} CPU s"
    print(f" {result['wall_s']:7.1f} s  {status}  ({other})", flush=True)
    return result


def scale_hours() -> list[int]:
    """Hours of the day (UTC) for the scale jobs: none in the next few hours, so none comes due."""
    now = datetime.now(timezone.utc).hour
    near = {(now + k) % 24 for k in range(-1, 4)}
    return [h for h in range(24) if h not in near]


def carry_over(results: dict[str, Any], old: dict[str, Any]) -> None:
    """Keeps the parts of ``old`` that this run did not measure, each with the run it came from,
    so that measuring some parts does not erase the others from RESULTS.md."""
    kept = {k: v for k, v in old.get("parts", {}).items() if k not in results["parts"]}
    if not kept:
        return
    carried = results.setdefault("carried", {})
    for key in kept:
        origin = old.get("carried", {}).get(key) or {
            "command": old.get("command"),
            "started": old.get("started"),
            "finished": old.get("finished"),
            "git": old.get("machine", {}).get("git"),
            "build": old.get("machine", {}).get("build", "release"),
            "args": old.get("args", {}),
            "machine": old.get("machine", {}),
        }
        carried[key] = origin
    order = ["precision", "precision-spread", "throughput", "scale", *SERVER_PARTS, *CLUSTER_PARTS]
    merged = {**kept, **results["parts"]}
    results["parts"] = {
        k: merged[k] for k in sorted(merged, key=lambda k: order.index(k) if k in order else 99)
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.render:
        out = Path(args.out) if args.out else HERE / "RESULTS.md"
        report_workers_alerts.write(out, json.loads(Path(args.render).read_text()))
        print(f"results: {out}")
        return 0
    global SNAPSHOT_S
    SNAPSHOT_S = 0.1 if args.quick else SNAPSHOT_S
    base = Path(tempfile.mkdtemp(prefix="cueapi-bench-", dir=args.tmpdir))
    results: dict[str, Any] = {
        "command": "python bench/run.py " + shlex.join(argv) if argv else "python bench/run.py",
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": report.machine(),
        "args": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "parts": {},
    }
    print(f"cueapi benchmark, databases under {base}")
    print(f"  load before: {load_snapshot()}")

    def db(part: str, system: str) -> str:
        d = base / f"{part}-{system}"
        d.mkdir(parents=True, exist_ok=True)
        return str(d / ("cueapi.db" if system == "cueapi" else "aps.db"))

    if "precision" in args.parts:
        for mode in ("burst", "spread"):
            params = {
                "jobs": args.precision_jobs,
                "seconds": args.precision_seconds,
                "warmup": args.precision_warmup,
                "workers": args.workers,
                "spread": mode == "spread",
            }
            key = "precision" if mode == "burst" else "precision-spread"
            results["parts"][key] = {
                s: run_worker("precision", s, {**params, "db": db(key, s)}, args.timeout)
                for s in args.systems
            }
    if "throughput" in args.parts:
        params = {
            "n": args.throughput_n,
            "workers": args.workers,
            "chunk": args.chunk,
            "timeout": args.timeout,
        }
        results["parts"]["throughput"] = {
            s: run_worker("throughput", s, {**params, "db": db("throughput", s)}, 3 * args.timeout)
            for s in args.systems
        }
    if "scale" in args.parts:
        hours = scale_hours()
        common = {"workers": args.workers, "chunk": args.chunk, "hours": hours, "timeout": args.timeout}
        common.update({"idle": args.idle, "settle": args.settle})
        scale: dict[str, Any] = {}
        for s in args.systems:
            n = {"cueapi": args.scale_n, "aps-memory": args.scale_memory_n}.get(s, args.scale_sql_n)
            params = {**common, "n": n, "db": db("scale", s)}
            if s == "aps-memory":
                scale[s] = {"start": run_worker("scale-start", s, params, 3 * args.timeout)}
                continue
            created = run_worker("scale-create", s, params, 3 * args.timeout)
            entry = {"create": created}
            if "error" not in created:
                time.sleep(max(0.0, created["due_at"] - time.time()) + 0.5)  # the due cue is overdue at start
                entry["start"] = run_worker("scale-start", s, params, args.timeout)
            scale[s] = entry
            for suffix in ("", "-wal", "-shm"):  # a million rows: free the disk before the next system
                Path(params["db"] + suffix).unlink(missing_ok=True)
        results["parts"]["scale"] = scale
    server_common = {
        "connections": args.connections,
        "wrk_threads": args.wrk_threads,
        "ceiling_n": args.server_ceiling_n,
        "timeout": args.timeout,
    }
    server_params = {
        "server-precision": {
            "cues": args.server_precision_cues,
            "seconds": args.server_precision_seconds,
            "warmup": args.server_precision_warmup,
        },
        "server-burst": {"n": args.server_burst_n, "pilot_n": max(200, args.server_burst_n // 20)},
        "server-api": {"n": args.server_api_n, "worker_cues": args.server_worker_cues},
        "server-workers": {
            "n": args.server_workers_n,
            "list_n": args.server_workers_list_n,
            "workers": args.server_workers,
            "list_limit": args.server_workers_list_limit,
            "drain_s": args.server_workers_seconds,
            "worker_cues": args.server_worker_cues,
        },
        "server-alerts": {
            "burst_n": args.server_alerts_n,
            "steady_rate": args.server_alerts_rate,
            "steady_n": args.server_alerts_steady_n,
            "pilot_n": 200,
        },
    }
    for part in SERVER_PARTS:
        if part in args.parts and "cueapi" in args.systems:
            params = {**server_common, **server_params[part], "db": db(part, "cueapi")}
            results["parts"][part] = {
                "cueapi": run_worker(part, "cueapi", params, 3 * args.timeout, script="server.py")
            }
    # Each part measures its setups side by side: SQLite with one node, PostgreSQL with 1, 2, 3.
    cluster_params = {
        "cluster-precision": {
            "setups": ["sqlite", "pg1", "pg3"],
            "cues": args.server_precision_cues,
            "seconds": args.server_precision_seconds,
            "warmup": args.server_precision_warmup,
        },
        "cluster-burst": {
            "setups": ["sqlite", "pg1", "pg2", "pg3"],
            "n": args.server_burst_n,
            "pilot_n": max(200, args.server_burst_n // 20),
        },
        "cluster-api": {
            "setups": ["sqlite", "pg1", "pg3"],
            "n": args.cluster_api_n,
            "worker_cues": args.server_worker_cues,
        },
        "cluster-failover": {
            "setups": ["pg3"],
            "cue_counts": args.cluster_failover_cues,
            "repeats": args.cluster_failover_repeats,
            "after": args.cluster_failover_after,
        },
    }
    for part in CLUSTER_PARTS:
        if part in args.parts and "cueapi" in args.systems:
            params = {**server_common, **cluster_params[part], "db": db(part, "cueapi")}
            results["parts"][part] = {
                "cueapi": run_worker(part, "cueapi", params, 3 * args.timeout, script="cluster.py")
            }

    results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out = Path(args.out) if args.out else (base / "RESULTS.md" if args.quick else HERE / "RESULTS.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    saved = out.with_name(out.stem.replace("RESULTS", "results") + ".json")
    if not args.fresh and saved.exists():
        carry_over(results, json.loads(saved.read_text()))
    saved.write_text(json.dumps(results, indent=2))
    report_workers_alerts.write(out, results)
    print(f"results: {out}")
    errors = [
        f"{part}/{system}"
        for part, by_system in results["parts"].items()
        for system, r in by_system.items()
        for x in (r.values() if part == "scale" else [r])
        if "error" in x
    ]
    if errors:
        print("errors in: " + ", ".join(errors))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
