"""``cueapi serve`` in a child process, as an operator (or an attacker's target) runs it: what the
security tests share. The child's stderr — its log — is kept whole, so tests can look for secrets
in it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import wait_for


@dataclass
class Child:
    """A running ``cueapi serve``: its process, base URL, address and everything it logged."""

    proc: subprocess.Popen[bytes]
    url: str
    host: str
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def register(self, email: str, **kw: Any) -> httpx.Response:
        return httpx.post(self.url + "/v1/auth/register", json={"email": email}, timeout=30, **kw)

    def connect(self, source: str | None = None) -> socket.socket:
        """A raw TCP connection to the server, from ``source`` (a loopback address) if given."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source:
            s.bind((source, 0))
        s.settimeout(30)
        s.connect((self.host, self.port))
        return s


@contextmanager
def serve(
    db: Path,
    *args: str,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[Child]:
    """Runs ``python -m cueapi serve --db DB --port 0 ARGS`` and yields it once it listens; kills
    it afterwards."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cueapi", "serve", "--db", str(db), "--port", "0", *args],
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=preexec_fn,  # umask, rlimits
    )
    assert proc.stderr is not None
    child = Child(proc, "", "", 0)
    stderr = proc.stderr

    def read() -> None:
        for raw in iter(stderr.readline, b""):
            child.lines.append(raw.decode(errors="replace"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:

        def listening() -> re.Match[str] | None:
            assert proc.poll() is None, f"cueapi serve exited early:\n{child.log}"
            return re.search(r"listening on (http://(\S+):(\d+))", child.log)

        m = wait_for(listening, timeout=60, what="cueapi serve to listen")
        child.url, child.host, child.port = m.group(1), m.group(2), int(m.group(3))
        yield child
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        reader.join(timeout=10)
        stderr.close()
