"""A database that cannot be used, at start: garbage bytes, a file cut short, a damaged page, a
schema newer than this cueapi, a read-only file, a read-only directory. ``cueapi serve`` exits 2
at once with one line naming the file and what is wrong (no traceback, no hang); the embedded
``cueapi.App(path)`` raises the matching ``cueapi`` exception with the same message; and the file
is left exactly as it was."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cueapi
import pytest

from tests.faults.harness import run_to_exit, serve_command

PAGE = 4096


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a real database with 40 cues, everything in the main file (no WAL)."""
    db = tmp_path_factory.mktemp("valid") / "valid.db"
    app = cueapi.App(db)
    for i in range(40):
        app.cue("* * * * *", name=f"cue-{i}", payload={"pad": "x" * 400})(lambda ctx: None)
    app.close()
    # Another process folds the WAL into the file (never two SQLite libraries in one process).
    fold = f"import sqlite3; c = sqlite3.connect({str(db)!r}); c.execute('PRAGMA wal_checkpoint(TRUNCATE)')"
    subprocess.run([sys.executable, "-c", fold], check=True, timeout=30)
    data = db.read_bytes()
    assert len(data) >= 20 * PAGE
    return data


def unprivileged() -> list[str]:
    """A command prefix that takes away root's licence to ignore file permissions (as root, a
    file mode of 0400 would not stop a write); nothing when not root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to test read-only files as root"
    drop = "-dac_override,-dac_read_search,-fowner"
    return [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}", "--"]


@dataclass(frozen=True)
class Bad:
    """A way for a database to be unusable: how to make it, and what must be said."""

    make: Callable[[Path, bytes], None]
    error: type[cueapi.CueAPIError]
    message: str  # after "cannot open the database <path>: " unless it names the path itself
    permissions: bool = False


def garbage(db: Path, _valid: bytes) -> None:
    db.write_bytes(random.Random(11).randbytes(8 * PAGE))


def cut_in_half(db: Path, valid: bytes) -> None:
    db.write_bytes(valid[: len(valid) // 2])


def cut_in_the_header(db: Path, valid: bytes) -> None:
    db.write_bytes(valid[:50])


def damaged_page(db: Path, valid: bytes) -> None:
    data = bytearray(valid)
    data[10 * PAGE : 11 * PAGE] = random.Random(10).randbytes(PAGE)
    db.write_bytes(bytes(data))


def newer_schema(db: Path, valid: bytes) -> None:
    db.write_bytes(valid)
    c = sqlite3.connect(db)
    c.execute(f"PRAGMA user_version = {cueapi.SCHEMA_VERSION + 1}")
    c.close()
    # The sqlite3 module may leave its WAL beside the file; fold it in, as for the others.
    c = sqlite3.connect(db)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()


def read_only_file(db: Path, valid: bytes) -> None:
    db.write_bytes(valid)
    db.chmod(0o400)


def read_only_directory(db: Path, valid: bytes) -> None:
    db.write_bytes(valid)
    db.parent.chmod(0o500)


CASES = {
    "garbage": Bad(
        garbage,
        cueapi.StorageError,
        "file is not a database (not a SQLite file, or one whose header is damaged)",
    ),
    "cut-in-half": Bad(cut_in_half, cueapi.StorageError, "damaged"),
    "cut-in-the-header": Bad(cut_in_the_header, cueapi.StorageError, "damaged"),
    "damaged-page": Bad(
        damaged_page, cueapi.StorageError, "the file is damaged (SQLite's quick_check: Tree "
    ),
    "newer-schema": Bad(
        newer_schema,
        cueapi.SchemaVersionError,
        f"has schema version {cueapi.SCHEMA_VERSION + 1}, newer than this cueapi supports "
        f"({cueapi.SCHEMA_VERSION}); open it with the newer cueapi that wrote it",
    ),
    "read-only-file": Bad(
        read_only_file,
        cueapi.StorageError,
        "the file is read-only to cueapi, which needs to write it",
        permissions=True,
    ),
    "read-only-directory": Bad(
        read_only_directory,
        cueapi.StorageError,
        "cannot create its lock file",
        permissions=True,
    ),
}


@pytest.fixture(params=sorted(CASES))
def bad(request: pytest.FixtureRequest, tmp_path: Path, valid: bytes) -> Iterator[tuple[Path, Bad]]:
    case = CASES[request.param]
    db = tmp_path / "d" / "bad.db"
    db.parent.mkdir()
    case.make(db, valid)
    yield db, case
    db.parent.chmod(0o700)
    db.chmod(0o600)


def fingerprint(db: Path) -> tuple[str, int]:
    return hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mode


# The embedded App, asked to open a file in a process of its own (so that root's file-permission
# override can be taken away): the exception's class, whether it is a CueAPIError, its message.
APP_PROBE = """
import json, sys
import cueapi
try:
    cueapi.App(sys.argv[1]).close()
except Exception as e:
    print(json.dumps([type(e).__name__, isinstance(e, cueapi.CueAPIError), str(e)]))
else:
    print(json.dumps(["opened", False, ""]))
"""


def test_a_database_that_cannot_be_used_stops_the_start_clearly_and_stays_as_it_was(
    bad: tuple[Path, Bad],
) -> None:
    db, case = bad
    before = fingerprint(db)
    prefix = unprivileged() if case.permissions else []

    # cueapi serve: exit 2, one line, no traceback, no hang.
    done = run_to_exit([*prefix, *serve_command(db)], timeout=30)
    assert done.code == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    [line] = lines
    assert line.startswith("cueapi: "), line
    assert "Traceback" not in done.stderr
    assert str(db) in line, line
    assert case.message in line, line
    if case.error is cueapi.StorageError:
        assert line.startswith(f"cueapi: cannot open the database {db}: "), line

    # The embedded App: the matching exception with the same message.
    if prefix:
        probe = run_to_exit([*prefix, sys.executable, "-c", APP_PROBE, str(db)], timeout=30)
        assert probe.code == 0, probe
        name, is_cueapi_error, message = json.loads(probe.stdout)
        assert (name, is_cueapi_error) == (case.error.__name__, True)
    else:
        with pytest.raises(case.error) as info:
            cueapi.App(db)
        message = str(info.value)
    assert message == line.removeprefix("cueapi: ")

    assert fingerprint(db) == before
