"""Connections before authentication: trickled headers, idle keep-alives, bodies held open without a
key and idle floods under a low open-file limit are dropped or bounded, and ``/health`` keeps
answering through each. Raw sockets against a ``cueapi serve`` child process; every wait is a poll
with a generous bound that only proves a timeout exists."""

from __future__ import annotations

import resource
import selectors
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
from serving import Child, serve

from tests.conftest import wait_for

MB = 1 << 20
# Roomy caps for the tests that want every connection of a flood let in, to watch what the
# timeouts do to them.
ROOMY = ("--max-connections", "2000", "--max-connections-per-address", "2000")


def healthy(child: Child) -> bool:
    r = httpx.get(child.url + "/health", timeout=10)
    return r.status_code == 200 and r.json()["status"] == "healthy"


def closed(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (end of stream or reset; what it said before is
    read and dropped)."""
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def wait_all_closed(socks: list[socket.socket], timeout: float, what: str) -> float:
    """Polls until the server closed every socket; returns the seconds it took."""
    start = time.monotonic()
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    open_ = set(socks)
    try:
        while open_:
            left = start + timeout - time.monotonic()
            assert left > 0, f"{len(open_)} of {len(socks)} {what} still open after {timeout} s"
            for key, _ in sel.select(min(left, 1.0)):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                if closed(s):
                    sel.unregister(s)
                    open_.discard(s)
    finally:
        sel.close()
    return time.monotonic() - start


@contextmanager
def sockets(child: Child, n: int, source: str | None = None) -> Iterator[list[socket.socket]]:
    socks = [child.connect(source) for _ in range(n)]
    try:
        yield socks
    finally:
        for s in socks:
            s.close()


def test_trickled_headers_are_dropped_and_health_answers(tmp_path: Path) -> None:
    """500 connections trickling header bytes (one byte each, round after round) are closed when
    the header timeout runs out, counted from the connection's start, not reset by each byte."""
    with (
        serve(tmp_path / "trickle.db", "--header-timeout", "2", *ROOMY) as child,
        sockets(child, 500) as socks,
    ):
        for s in socks:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        open_ = set(socks)
        rounds = 0
        while open_:
            assert time.monotonic() - start < 30, f"{len(open_)} trickling connections still open after 30 s"
            for s in list(open_):
                try:
                    s.send(b"X")  # one more header byte, never the end of the headers
                except OSError:
                    sel.unregister(s)
                    open_.discard(s)
            for key, _ in sel.select(0.25):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                if closed(s):
                    sel.unregister(s)
                    open_.discard(s)
            rounds += 1
            if rounds == 2:
                assert healthy(child)  # while 500 connections trickle
        sel.close()
        assert rounds > 4  # they did keep sending for a while
        assert healthy(child)


def test_a_silent_or_idle_keep_alive_connection_is_closed(tmp_path: Path) -> None:
    with serve(tmp_path / "idle.db", "--header-timeout", "1.5") as child, sockets(child, 2) as (silent, kept):
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert kept.recv(65536).startswith(b"HTTP/1.1 200")
        # Neither says anything more: both are closed once the timeout has run out.
        wait_all_closed([silent, kept], 30, "silent or idle connections")


def test_the_default_header_timeout_exists(tmp_path: Path) -> None:
    """Without settings, connections that never finish their headers are closed too (10 s)."""
    with serve(tmp_path / "defaults.db") as child, sockets(child, 20) as socks:
        for s in socks:
            s.sendall(b"POST /v1/cues HTTP/1.1\r\nHost: x\r\n")
        took = wait_all_closed(socks, 60, "connections with unfinished headers")
        assert took >= 5  # the default is 10 s, not a few milliseconds
        assert healthy(child)


def test_bodies_held_open_without_a_key_are_neither_buffered_nor_kept(tmp_path: Path) -> None:
    """300 connections each send 1 MiB - 1 of a 1 MiB body and stop: to a route that needs a key
    (the body is read and thrown away, never held) and to the public echo route (buffered within a
    16 MiB budget shared by all requests without a key). The server grows by far less than the
    300 MiB they would take buffered, and drops them all when the body timeout runs out."""
    with serve(tmp_path / "bodies.db", "--body-timeout", "4", "--rate-limit", "0", *ROOMY) as child:
        pid = child.proc.pid
        assert healthy(child)
        before = psutil.Process(pid).memory_info().rss
        socks = []
        try:
            for i in range(300):
                path = "/v1/cues" if i % 3 else f"/v1/echo/held-body-{i:08d}"
                s = child.connect()
                s.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {MB}\r\n\r\n".encode()
                )
                s.sendall(b"[" + b"0" * (MB - 2))  # one byte short of what was declared
                socks.append(s)
            grown = psutil.Process(pid).memory_info().rss - before
            assert grown < 80 * MB, f"the server grew by {grown / MB:.0f} MB holding unauthenticated bodies"
            assert healthy(child)
            wait_all_closed(socks, 60, "connections holding a body")
            assert healthy(child)
        finally:
            for s in socks:
                s.close()


def test_an_idle_flood_cannot_take_the_last_file_descriptor(tmp_path: Path) -> None:
    """With 512 file descriptors, 500 idle connections from one client: the server serves at most
    half its descriptors' worth of connections and one address a quarter of those, so the flood
    is held to its share (the rest closed at once) and /health still answers from elsewhere."""

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))

    # A long header timeout, so that only the caps (not the timeout) decide what the flood holds.
    with (
        serve(tmp_path / "fd.db", "--header-timeout", "120", preexec_fn=low_limit) as child,
        sockets(child, 500, "127.0.0.2") as flood,
    ):
        assert psutil.Process(child.proc.pid).rlimit(psutil.RLIMIT_NOFILE) == (512, 512)
        for _ in range(5):
            assert healthy(child)
        # The flood's share is 64 (1024 capped to 256 by the limit, a quarter per address).
        still = wait_for(
            lambda: (n := sum(not closed(s) for s in flood)) <= 64 and n,
            timeout=30,
            what="the flood held to its share",
        )
        assert still == 64
        # Another client still gets in and is served.
        with sockets(child, 10, "127.0.0.3") as others:
            for s in others:
                s.setblocking(True)
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                assert s.recv(65536).startswith(b"HTTP/1.1 200")
        r = child.register("owner@example.com")
        assert r.status_code == 201, r.text
        assert psutil.Process(child.proc.pid).num_fds() < 512
