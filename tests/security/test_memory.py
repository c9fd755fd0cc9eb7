"""Memory an unauthenticated client can make the server hold stays bounded: the echo endpoint keeps
what it counts."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import psutil
from serving import serve

MB = 1 << 20


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def test_echo_keeps_what_it_counts(tmp_path: Path) -> None:
    """70 posts of a 1 MB array of zeros, without a key: the echo cap (64 MiB) counts the raw bytes
    kept, so the server grows by about that — not by the ~15x a parsed JSON tree of them takes
    (it went from 33 MB to 1 GB when the trees were kept)."""
    zeros = ("[" + "0," * 499_998 + "0]").encode()
    assert len(zeros) == 999_999
    with serve(tmp_path / "echo.db", "--rate-limit", "0") as child, httpx.Client(timeout=60) as http:
        for i in range(3):  # warm up: the first requests grow the allocator's arenas
            http.post(
                f"{child.url}/v1/echo/warmup-{i:010d}",
                content=b"{}",
                headers={"Content-Type": "application/json"},
            )
        before = rss(child.proc.pid)
        for i in range(70):
            r = http.post(
                f"{child.url}/v1/echo/zeros-{i:010d}",
                content=zeros,
                headers={"Content-Type": "application/json"},
            )
            assert r.status_code == 200, r.text
        grown = rss(child.proc.pid) - before
        assert grown < 200 * MB, f"the server grew by {grown / MB:.0f} MB for at most 64 MiB kept"
        # What was kept is still there, as it came.
        key = child.register("owner@example.com").json()["api_key"]
        got = http.get(f"{child.url}/v1/echo/zeros-{69:010d}", headers={"Authorization": f"Bearer {key}"})
        assert got.json()["status"] == "delivered" and got.json()["payload"] == json.loads(zeros)
        assert rss(child.proc.pid) - before < 260 * MB
