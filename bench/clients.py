"""The Python faces against their peers, in one process and one run:

- ``verify``: webhook verification per call on a 1 KiB canonical delivery body — ``cueapi.verify_webhook``
  against the official SDK's ``verify_webhook`` (loaded from its own file, since its import name is
  ours), the ``standardwebhooks`` library and a bare stdlib ``hmac`` three-liner, over valid and
  invalid inputs;
- ``client``: time per call of ``cueapi.CueAPI`` against plain ``httpx`` on the same
  ``cueapi serve`` (a subprocess on loopback), the difference being the client's overhead.

    python bench/clients.py                       # both parts; prints Markdown, writes bench/clients.json
    python bench/clients.py --parts verify --quick

Needs the official SDK installed somewhere (``--sdk-site``, default ``.venv-sdk``'s site-packages)
and ``standardwebhooks``. Run it with a release build (``make bench-clients``).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import hmac
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import cueapi
import httpx
import standardwebhooks
from cueapi import _cueapi

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SECRET = "whsec_" + "5f" * 32


def load_sdk_webhook(site: str) -> ModuleType:
    """The official SDK's webhook module, loaded from its file under another name."""
    path = Path(site) / "cueapi" / "webhook.py"
    spec = importlib.util.spec_from_file_location("official_sdk_webhook", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"the official SDK is not at {path} (pass --sdk-site)")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def delivery_body(size: int = 1024) -> bytes:
    """A delivery as ``cueapi serve`` sends it (canonical JSON), its payload padded to ``size``."""
    body = {
        "attempt": 1,
        "cue_id": "cue_01m94by6nazv1epjs5awm2hcte",
        "execution_id": "exec_01m94by6p02x0wj8mptq10zsbs",
        "name": "data-sync-agent",
        "payload": {"batch_size": 1000, "source": "crm", "task": "sync_customer_data", "note": ""},
        "scheduled_for": "2026-12-06T07:00:00.000Z",
    }
    raw = json.dumps(body, sort_keys=True).encode()
    body["payload"]["note"] = "x" * (size - len(raw))  # type: ignore[index]
    raw = json.dumps(body, sort_keys=True).encode()
    assert len(raw) == size, len(raw)
    return raw


def per_call_ns(fn: Callable[[], object], seconds: float) -> float:
    """The median of several timed batches, in nanoseconds per call."""
    n, t = 1, 0.0
    while t < 0.05:
        n *= 2
        t = timeit.timeit(fn, number=n)
    batches = max(5, int(seconds / max(t, 1e-9)))
    samples = [timeit.timeit(fn, number=n) / n * 1e9 for _ in range(min(batches, 40))]
    return statistics.median(samples)


def bench_verify(args: argparse.Namespace) -> dict[str, Any]:
    sdk = load_sdk_webhook(args.sdk_site)
    body = delivery_body(1024)
    ts = str(int(time.time()))
    v1 = _cueapi.sign_v1(SECRET, int(ts), body)
    msg_id = "cue_01m94by6nazv1epjs5awm2hcte:1796518037659"
    std_headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": ts,
        "webhook-signature": _cueapi.sign_standard(SECRET, msg_id, int(ts), body),
    }
    std = standardwebhooks.Webhook(SECRET)
    key = SECRET.encode()

    def stdlib(payload: bytes, signature: str, stamp: str) -> bool:
        expected = "v1=" + hmac.new(key, stamp.encode() + b"." + payload, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature)

    def standard(payload: bytes, headers: dict[str, str]) -> bool:
        try:
            std.verify(payload, headers)
        except standardwebhooks.webhooks.WebhookVerificationError:
            return False
        return True

    tampered = body.replace(b'"batch_size": 1000', b'"batch_size": 9000')
    compact = json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False).encode()
    stale = str(int(ts) - 3600)
    stale_sig = _cueapi.sign_v1(SECRET, int(stale), body)
    wrong = "v1=" + "0" * 64
    cases: dict[str, tuple[bytes, str, str, dict[str, str], bool]] = {
        # name: (body, v1 signature, timestamp, standard headers, expected)
        "valid, canonical body": (body, v1, ts, std_headers, True),
        "tampered body": (tampered, v1, ts, std_headers, False),
        "wrong signature": (body, wrong, ts, {**std_headers, "webhook-signature": "v1," + "A" * 44}, False),
        "stale timestamp": (body, stale_sig, stale, {**std_headers, "webhook-timestamp": stale}, False),
        "re-encoded body (compact, valid)": (compact, v1, ts, std_headers, True),
    }
    seconds = 0.3 if args.quick else 2.0
    rows: dict[str, dict[str, Any]] = {}
    for name, (payload, sig, stamp, headers, expected) in cases.items():
        impls: dict[str, Callable[[], bool]] = {
            "cueapi": lambda p=payload, s=sig, t=stamp: cueapi.verify_webhook(p, s, SECRET, t),
            "official SDK": lambda p=payload, s=sig, t=stamp: sdk.verify_webhook(p, s, SECRET, t),
            "standardwebhooks": lambda p=payload, h=headers: standard(p, h),
            "stdlib hmac": lambda p=payload, s=sig, t=stamp: stdlib(p, s, t),
        }
        row: dict[str, Any] = {}
        for impl, fn in impls.items():
            row[impl] = {"ns": per_call_ns(fn, seconds), "answer": bool(fn()), "expected": expected}
        rows[name] = row
    return {"body_bytes": len(body), "cases": rows}


def start_server(tmp: Path) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cueapi",
            "serve",
            "--db",
            str(tmp / "b.db"),
            "--port",
            "0",
            "--rate-limit",
            "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    url = line.split("listening on ", 1)[1].split()[0]
    key = httpx.post(f"{url}/v1/auth/register", json={"email": "bench@example.com"}).json()["api_key"]
    return proc, url, key


def summary(times: list[int]) -> dict[str, float]:
    times = sorted(times)
    return {
        "mean_us": statistics.fmean(times) / 1000,
        "p50_us": times[len(times) // 2] / 1000,
        "p99_us": times[int(len(times) * 0.99)] / 1000,
    }


def paired(ours: Callable[[], object], theirs: Callable[[], object], n: int) -> dict[str, dict[str, float]]:
    """Both calls, alternately, ``n`` times each (after a warm-up): a drift of the machine or the
    server hits both alike."""
    for _ in range(min(200, n)):
        ours()
        theirs()
    a: list[int] = []
    b: list[int] = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        ours()
        t1 = time.perf_counter_ns()
        theirs()
        t2 = time.perf_counter_ns()
        a.append(t1 - t0)
        b.append(t2 - t1)
    return {"cueapi": summary(a), "httpx": summary(b)}


def bench_client(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    n = 500 if args.quick else 5000
    with tempfile.TemporaryDirectory() as d:
        proc, url, key = start_server(Path(d))
        try:
            auth = {"Authorization": f"Bearer {key}"}
            client = cueapi.CueAPI(key, base_url=url)
            plain = httpx.Client(base_url=url, headers=auth)
            cue = client.cues.create("bench", cron="0 2 * * *", transport="worker", payload={"task": "t"})
            execution = client.cues.fire(cue.id)
            eid = execution["id"]
            calls: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
                "get a cue (ours returns a Cue model)": (
                    lambda: client.cues.get(cue.id),
                    lambda: plain.get(f"/v1/cues/{cue.id}").json(),
                ),
                "get an execution (a dict)": (
                    lambda: client.executions.get(eid),
                    lambda: plain.get(f"/v1/executions/{eid}").json(),
                ),
                "list 20 cues (a CueList)": (
                    lambda: client.cues.list(),
                    lambda: plain.get("/v1/cues", params={"limit": 20, "offset": 0}).json(),
                ),
                "usage (a dict)": (
                    lambda: client.usage.get(),
                    lambda: plain.get("/v1/usage").json(),
                ),
            }
            out: dict[str, Any] = {}
            for name, (ours, theirs) in calls.items():
                out[name] = paired(ours, theirs, n)
            client.close()
            plain.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            if proc.stderr is not None:
                proc.stderr.close()
    return {"n": n, "calls": out}


def markdown(results: dict[str, Any]) -> str:
    lines = []
    if "verify" in results:
        v = results["verify"]
        impls = ["cueapi", "official SDK", "standardwebhooks", "stdlib hmac"]
        lines.append(
            f"Webhook verification, {v['body_bytes']}-byte canonical delivery body, per call (median):\n"
        )
        lines.append("| input | " + " | ".join(impls) + " | cueapi / stdlib |")
        lines.append("|---|" + "---|" * (len(impls) + 1))
        for case, row in v["cases"].items():
            cells = []
            for impl in impls:
                r = row[impl]
                mark = "" if r["answer"] == r["expected"] else " (wrong answer)"
                cells.append(f"{r['ns'] / 1000:.2f} µs{mark}")
            ratio = row["cueapi"]["ns"] / row["stdlib hmac"]["ns"]
            lines.append(f"| {case} | " + " | ".join(cells) + f" | {ratio:.2f} |")
        lines.append("")
    if "client" in results:
        c = results["client"]
        lines.append(f"Client time per call on loopback, {c['n']} calls each (mean / p50 / p99, µs):\n")
        lines.append("| call | cueapi.CueAPI | plain httpx | overhead (mean) |")
        lines.append("|---|---|---|---|")
        for name, r in c["calls"].items():
            a, b = r["cueapi"], r["httpx"]
            lines.append(
                f"| {name} | {a['mean_us']:.0f} / {a['p50_us']:.0f} / {a['p99_us']:.0f} | "
                f"{b['mean_us']:.0f} / {b['p50_us']:.0f} / {b['p99_us']:.0f} | "
                f"{a['mean_us'] - b['mean_us']:+.0f} µs ({a['mean_us'] / b['mean_us'] - 1:+.0%}) |"
            )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="verify,client")
    ap.add_argument("--quick", action="store_true")
    default_site = next(iter(glob.glob(str(ROOT / ".venv-sdk" / "lib" / "python*" / "site-packages"))), "")
    ap.add_argument("--sdk-site", default=default_site, help="site-packages holding the official SDK")
    ap.add_argument("--out", default=str(HERE / "clients.json"))
    args = ap.parse_args(argv)
    results: dict[str, Any] = {
        "build": os.environ.get("CUEAPI_BENCH_BUILD", "unknown"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    parts = [p for p in args.parts.split(",") if p]
    if "verify" in parts:
        results["verify"] = bench_verify(args)
    if "client" in parts:
        results["client"] = bench_client(args)
    if not args.quick:
        Path(args.out).write_text(json.dumps(results, indent=2))
    print(markdown(results))
    wrong = [
        (case, impl)
        for case, row in results.get("verify", {}).get("cases", {}).items()
        for impl, r in row.items()
        if impl == "cueapi" and r["answer"] != r["expected"]
    ]
    if wrong:
        print(f"cueapi answered wrongly for: {wrong}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
