"""The database holds webhook, alert and callback-header secrets in clear: every file of it — the
database, SQLite's ``-wal`` and ``-shm``, our lock file — is created readable by its owner only,
whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import cueapi
import pytest
from serving import serve

from tests.conftest import wait_for


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def files_of(db: Path) -> list[Path]:
    return [db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}.lock")]


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_a_servers_database_files_are_0600_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    db = tmp_path / "server.db"
    with serve(db, preexec_fn=lambda: os.umask(umask)) as child:
        r = child.register("owner@example.com")
        assert r.status_code == 201, r.text
        # While it runs the WAL and shared-memory files exist too: all four, owner only.
        files = wait_for(
            lambda: all(p.exists() for p in files_of(db)) and files_of(db), what="the -wal and -shm files"
        )
        assert {str(p): oct(mode(p)) for p in files} == {str(p): "0o600" for p in files}
        secret = r.json()["webhook_secret"]
    # The secret is in the files in clear: that is why nobody else may read them.
    stored = b"".join(p.read_bytes() for p in files_of(db)[:2] if p.exists())
    assert secret.encode() in stored
    assert mode(db) == 0o600


def test_an_embedded_apps_database_is_0600_too(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        db = tmp_path / "app.db"
        with cueapi.App(db):
            assert mode(db) == 0o600 and mode(Path(f"{db}.lock")) == 0o600
            for p in files_of(db)[1:3]:
                if p.exists():
                    assert mode(p) == 0o600, p
    finally:
        os.umask(old)


def test_an_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    """An operator's own choice for a database that exists already is not changed behind their back."""
    db = tmp_path / "shared.db"
    with cueapi.App(db):
        pass
    db.chmod(0o640)
    with cueapi.App(db):
        assert mode(db) == 0o640
