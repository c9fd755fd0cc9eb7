"""A PostgreSQL server for the tests that run against both stores: the one ``make check`` started
(its URL in CUEAPI_TEST_POSTGRES), else one started here with tools/pg for this test process and
stopped when it exits. Each test database is made fresh with psql and named after the SQLite file
the test would have used, so a test that reopens "its file" reopens its database."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS_PG = ROOT / "tools" / "pg"

# The store the running test uses (set by conftest's ``store`` fixture).
current = "sqlite"

_server: str | None = None
_made: dict[str, str] = {}


def server() -> str:
    """The URL of the test server's ``cueapi`` database."""
    global _server
    if _server is None:
        url = os.environ.get("CUEAPI_TEST_POSTGRES", "").strip()
        if not url:
            url = _start_own()
        _server = url
    return _server


def _start_own() -> str:
    where = tempfile.mkdtemp(prefix="cueapi-pg-py-")
    out = subprocess.run(["bash", str(TOOLS_PG), "start", where], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"tools/pg start {where} failed:\n{out.stderr}")

    def stop() -> None:
        subprocess.run(["bash", str(TOOLS_PG), "stop", where], capture_output=True, timeout=120)
        shutil.rmtree(where, ignore_errors=True)

    atexit.register(stop)
    return out.stdout.strip()


def _psql(sql: str) -> None:
    psql = shutil.which("psql") or "psql"
    out = subprocess.run(
        [psql, server(), "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], capture_output=True, text=True, timeout=60
    )
    if out.returncode != 0:
        raise RuntimeError(f"psql {sql!r} failed: {out.stderr}")


def with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def database_for(path: Path | str) -> str:
    """The URL of a fresh database standing for the SQLite file ``path`` (the same one each time
    the same path is asked for in this process)."""
    key = os.fspath(path)
    if key not in _made:
        digest = hashlib.sha256(f"{os.getpid()}:{key}".encode()).hexdigest()[:20]
        name = f"cueapi_py_{digest}"
        _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        _psql(f"CREATE DATABASE {name}")
        _made[key] = with_database(server(), name)
    return _made[key]


def drop_all() -> None:
    """Drops the databases this process made."""
    for url in list(_made.values()):
        name = urllib.parse.urlsplit(url).path.lstrip("/")
        del _made[next(k for k, v in _made.items() if v == url)]
        _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
