"""The fault suite's tools: a real ``cueapi serve`` in a subprocess of its own (so that its memory
can be measured and its resource limits changed), webhook receivers that misbehave at the socket
level, and a sampler of a process's resident memory.

    with Serve.start(tmp_path / "x.db") as serve:
        with FaultReceiver(hang) as bad:
            eid = serve.fire(serve.cue(callback={"url": bad.url}))
            ...
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil

from tests.conftest import wait_for

# A one-shot schedule that never comes due: cues here are fired by hand.
FAR = {"type": "once", "at": "2099-01-01T00:00:00Z"}
MB = 1024 * 1024

_names = itertools.count(1)


def instant(text: str) -> float:
    """An instant as the API writes it (ISO-8601, ``Z``) in Unix seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def serve_command(db: Path, *extra: str) -> list[str]:
    """The command line of a test server: any free port, callbacks to loopback allowed, no rate
    limit (these tests make many requests; limiting is tested elsewhere)."""
    return [
        sys.executable,
        "-m",
        "cueapi",
        "serve",
        "--db",
        str(db),
        "--port",
        "0",
        "--allow-private-targets",
        "--rate-limit",
        "0",
        *extra,
    ]


def serve_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``CUEAPI_*`` setting of the developer's shell, plus
    ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUEAPI_")}
    env.update(extra)
    return env


@dataclass
class Serve:
    """A running ``cueapi serve`` subprocess with one registered user. Its stderr goes to a file
    (``log()``), never to a pipe that could fill up and stall it."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    key: str = ""
    secret: str = ""
    http: httpx.Client = field(
        default_factory=lambda: httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)),
        repr=False,
    )

    @classmethod
    def start(
        cls,
        db: Path,
        *extra: str,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], Any] | None = None,
        timeout: float = 30,
        user: tuple[str, str] | None = None,
    ) -> Serve:
        """Starts a server on ``db`` and registers a user, or takes ``user`` (an API key and
        webhook secret of a user the database has from an earlier start)."""
        log_path = db.with_name(db.name + f".serve-{next(_names)}.log")
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                serve_command(db, *extra),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env if env is not None else serve_env(),
                preexec_fn=preexec_fn,
            )
        try:
            found = wait_for(
                lambda: (
                    re.search(r"listening on (http://\S+)", log_path.read_text(errors="replace"))
                    or proc.poll() is not None
                ),
                timeout,
                "cueapi serve to listen",
            )
            if not isinstance(found, re.Match):
                raise AssertionError(f"cueapi serve exited {proc.returncode}: {log_path.read_text()}")
            serve = cls(proc, found.group(1), log_path)
            if user is not None:
                serve.key, serve.secret = user
                return serve
            r = serve.http.post(serve.url + "/v1/auth/register", json={"email": "owner@example.com"})
            assert r.status_code == 201, r.text
            serve.key, serve.secret = r.json()["api_key"], r.json()["webhook_secret"]
            return serve
        except BaseException:
            proc.kill()
            proc.wait()
            raise

    # -- the API ---------------------------------------------------------------------------------

    def call(self, method: str, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}"}
        return self.http.request(method, self.url + path, json=json, headers=headers, **kwargs)

    def cue(self, **fields: Any) -> dict[str, Any]:
        """Creates a webhook cue (fired by hand unless ``schedule`` says otherwise)."""
        spec: dict[str, Any] = {"name": f"fault-{next(_names)}", "schedule": FAR, "overlap": "allow"}
        spec.update(fields)
        r = self.call("POST", "/v1/cues", spec)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def fire(self, cue: dict[str, Any]) -> str:
        r = self.call("POST", f"/v1/cues/{cue['id']}/fire")
        assert r.status_code == 200, r.text
        return str(r.json()["id"])

    def execution(self, execution_id: str) -> dict[str, Any]:
        r = self.call("GET", f"/v1/executions/{execution_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def settled(self, execution_id: str, *statuses: str, timeout: float = 20) -> dict[str, Any]:
        """Waits until the execution has one of ``statuses``; returns it (with its attempt_log)."""
        return wait_for(
            lambda: (e := self.execution(execution_id))["status"] in statuses and e,
            timeout,
            f"{execution_id} to be {' or '.join(statuses)}",
        )

    def health(self) -> httpx.Response:
        return self.http.get(self.url + "/health")

    def metric(self, name: str, **labels: str) -> float:
        """One sample of ``/metrics`` (0 when absent)."""
        want = name + (
            "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""
        )
        for line in self.http.get(self.url + "/metrics").text.splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return 0.0

    # -- the process -----------------------------------------------------------------------------

    def rss(self) -> int:
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, and the exit code (the process is killed if it outlives ``timeout``)."""
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"cueapi serve did not stop within {timeout} s:\n{self.log()[-3000:]}"
            ) from None

    def __enter__(self) -> Serve:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        code = self.stop()
        if exc_type is None:
            assert code == 0, f"cueapi serve exited {code}:\n{self.log()[-3000:]}"


@dataclass(frozen=True)
class Exit:
    """How a process that was expected to stop by itself ended."""

    code: int
    stdout: str
    stderr: str
    seconds: float


def run_to_exit(command: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 30) -> Exit:
    """Runs ``command`` to its end (it must end within ``timeout``: a hang is a failure)."""
    started = time.monotonic()
    done = subprocess.run(
        list(command),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=env if env is not None else serve_env(),
        timeout=timeout,
        check=False,
    )
    return Exit(
        done.returncode,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
        time.monotonic() - started,
    )


# -- receivers that misbehave ------------------------------------------------------------------------

# What a receiver does with a connection once it has read the request: (the connection, an event
# set when the receiver closes, the record of this connection).
Behaviour = Callable[[socket.socket, threading.Event, "Connection"], None]


@dataclass
class Connection:
    """One connection a fault receiver accepted."""

    request: bytes = b""
    accepted: float = 0.0
    # When the behaviour ended (the peer went away, or the behaviour was done).
    ended: float | None = None
    # Bytes of answer written to the socket.
    sent: int = 0


class FaultReceiver:
    """A webhook receiver on a free loopback port that reads each request (head and body), then
    does ``behaviour`` with the connection: answers garbage, hangs, resets, drips, floods. Every
    socket and thread it makes is closed and joined by ``close()``."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        self.closing = threading.Event()
        self.cond = threading.Condition()
        self.connections: list[Connection] = []
        self._open: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.cond:
                if self.closing.is_set():
                    conn.close()
                    return
                self._open.append(conn)
                t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
                self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        record = Connection(accepted=time.monotonic())
        try:
            record.request = read_request(conn)
            with self.cond:
                self.connections.append(record)
                self.cond.notify_all()
            self.behaviour(conn, self.closing, record)
        except OSError:
            pass
        finally:
            record.ended = time.monotonic()
            conn.close()
            with self.cond:
                self.cond.notify_all()

    def wait(self, n: int, timeout: float = 20) -> list[Connection]:
        """Waits until at least ``n`` requests arrived; returns the connections."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.connections) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"got {len(self.connections)} request(s), expected {n}")
                self.cond.wait(left)
            return list(self.connections)

    def wait_ended(self, n: int, timeout: float = 20) -> list[Connection]:
        """Waits until ``n`` connections have ended (the server hung up, or the behaviour was done)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while sum(c.ended is not None for c in self.connections) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{n} connection(s) still open after {timeout} s")
                self.cond.wait(left)
            return list(self.connections)

    def close(self) -> None:
        self.closing.set()
        # shutdown() wakes a thread blocked in accept(); close() alone would not.
        with suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(10)
        self.listener.close()
        with self.cond:
            conns, threads = list(self._open), list(self._threads)
        for c in conns:
            with suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(10)
        for c in conns:
            c.close()

    def __enter__(self) -> FaultReceiver:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_request(conn: socket.socket) -> bytes:
    """Reads one HTTP request (its head, and a body of ``Content-Length`` bytes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    want = int(found.group(1)) if found else 0
    while len(body) < want:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def head(status: int = 200, length: int | None = None, **headers: str) -> bytes:
    """A response head (``Content-Length`` when ``length`` is given)."""
    lines = [f"HTTP/1.1 {status} X"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def hang(conn: socket.socket, closing: threading.Event, _c: Connection) -> None:
    """Reads the request and never answers; ends when the peer hangs up."""
    while conn.recv(65536):
        pass


def reset_after(data: bytes) -> Behaviour:
    """Writes ``data`` (a partial answer), then resets the connection (RST, not FIN)."""

    def behaviour(conn: socket.socket, _closing: threading.Event, c: Connection) -> None:
        conn.sendall(data)
        c.sent += len(data)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    return behaviour


def drip(prefix: bytes, byte: bytes, every: float) -> Behaviour:
    """Writes ``prefix``, then one ``byte`` every ``every`` seconds for as long as the peer reads:
    the slow sender a total deadline is for. Ends when the peer hangs up (or the receiver closes)."""

    def behaviour(conn: socket.socket, closing: threading.Event, c: Connection) -> None:
        if prefix:
            conn.sendall(prefix)
            c.sent += len(prefix)
        # The wait between bytes is the fault simulated, not synchronisation.
        while not closing.wait(every):
            conn.sendall(byte)
            c.sent += 1

    return behaviour


def flood(prefix: bytes, total: int, filler: bytes = b"x") -> Behaviour:
    """Writes ``prefix``, then ``total`` bytes of ``filler`` as fast as the peer takes them (or
    until it hangs up), then waits for the peer to hang up."""
    block = filler * (65536 // len(filler))

    def behaviour(conn: socket.socket, closing: threading.Event, c: Connection) -> None:
        conn.sendall(prefix)
        left = total
        while left > 0 and not closing.is_set():
            piece = block[: min(left, len(block))]
            conn.sendall(piece)
            c.sent += len(piece)
            left -= len(piece)
        while conn.recv(65536):
            pass

    return behaviour


def answer(data: bytes) -> Behaviour:
    """Writes ``data`` and closes the connection."""

    def behaviour(conn: socket.socket, _closing: threading.Event, c: Connection) -> None:
        conn.sendall(data)
        c.sent += len(data)
        conn.shutdown(socket.SHUT_WR)

    return behaviour


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port bound but not listening: connections to it are refused, and nobody else
    can take it meanwhile."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@contextmanager
def silent_port() -> Iterator[int]:
    """A loopback port listening but never accepting: the TCP handshake completes (the kernel
    does it), and then nothing is ever said."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


def buffered_at_most() -> int:
    """The most a peer that stopped reading can have taken off a sender's hands over loopback:
    the kernel's largest receive and send buffers (TCP autotuning grows them up to these), and a
    margin for what the peer read before it stopped."""
    most = 0
    for name in ("tcp_rmem", "tcp_wmem"):
        try:
            most += int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])
        except (OSError, IndexError, ValueError):
            most += 32 * MB
    return most + 8 * MB


# -- memory ------------------------------------------------------------------------------------------


class RssSampler:
    """Samples a process's resident memory every ``every`` seconds in a thread, keeping the peak."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.start = int(self.process.memory_info().rss)
        self.peak = self.start
        self.samples = 0
        self._stop = threading.Event()
        self._every = every
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                rss = int(self.process.memory_info().rss)
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.samples += 1

    def stop(self) -> int:
        """Stops sampling; returns the peak growth over the first sample, in bytes."""
        self._stop.set()
        self._thread.join(10)
        return self.peak - self.start

    def __enter__(self) -> RssSampler:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
