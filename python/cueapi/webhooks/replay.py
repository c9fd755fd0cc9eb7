"""Remembering which deliveries a receiver has taken, to tell a replay from a first delivery.

A signature proves who sent a request, not that it is the first time it arrives: whoever sees a
signed request can send it again while its timestamp is fresh (and a ``sha256`` signature, which
signs no time, for ever). Given a :class:`SeenStore`, :func:`cueapi.webhooks.parse` records every
delivery it verifies and sets ``Delivery.replayed`` on one it recorded before.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..exceptions import ValidationError

if TYPE_CHECKING:
    import sqlite3

__all__ = ["DEFAULT_TTL", "MemorySeen", "SeenStore", "SqliteSeen"]

DEFAULT_TTL = 86_400.0
"""Seconds a key is remembered by default: a day. Against replays of timestamped deliveries
(``standard`` and ``v1``) twice the verifier's tolerance is enough, since a later copy is refused
as stale anyway; a ``sha256`` signature never goes stale, so longer is safer for those."""


@runtime_checkable
class SeenStore(Protocol):
    """Where a receiver remembers the deliveries it took."""

    def seen(self, key: str) -> bool:
        """Marks ``key`` as seen and returns True when it had been seen before (within the
        store's time to live). Atomic: of two concurrent calls with one key, one returns False."""
        ...


def _check_ttl(ttl: float) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0 or ttl == float("inf"):
        raise ValidationError(f"ttl must be a positive number of seconds, not {ttl!r}")
    return float(ttl)


class MemorySeen:
    """A :class:`SeenStore` in this process's memory: thread-safe, at most ``max_keys`` keys
    (the oldest are forgotten first), each remembered ``ttl`` seconds. ``clock`` (seconds,
    monotonic by default) is for tests. Keys are lost when the process ends and are not shared
    between processes: use :class:`SqliteSeen` behind several workers."""

    def __init__(
        self,
        max_keys: int = 100_000,
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ValidationError(f"max_keys must be a positive whole number, not {max_keys!r}")
        self.max_keys = max_keys
        self.ttl = _check_ttl(ttl)
        self._clock = clock
        self._keys: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def seen(self, key: str) -> bool:
        now = self._clock()
        with self._lock:
            keys = self._keys
            # First seen first: the front holds the oldest keys.
            while keys:
                oldest, at = next(iter(keys.items()))
                if at > now - self.ttl:
                    break
                del keys[oldest]
            if key in keys:
                return True
            keys[key] = now
            if len(keys) > self.max_keys:
                keys.popitem(last=False)
            return False

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)


class SqliteSeen:
    """A :class:`SeenStore` in a SQLite file (stdlib ``sqlite3``, WAL): one row per key with the
    time it was first seen, shared by every thread and process that opens the same ``path``.

    Marking is one ``INSERT … ON CONFLICT`` statement, atomic across processes. Rows older than
    ``ttl`` seconds no longer count and are deleted now and then. ``timeout`` is how long to wait
    for another writer; ``clock`` (Unix seconds) is for tests. The table, ``cueapi_seen``, may
    share a file with others. Close with :meth:`close` (or use it as a context manager; a later
    call opens the file again); a process that forks opens its own connection on first use.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        ttl: float = DEFAULT_TTL,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = os.fspath(path)
        self.ttl = _check_ttl(ttl)
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        # A connection inherited through fork() is never used nor closed by the child.
        self._inherited: list[sqlite3.Connection] = []
        self._pruned_at = float("-inf")
        self._prune_every = min(60.0, self.ttl)
        with self._lock:
            self._connection()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        import sqlite3

        if self._conn is not None:
            self._inherited.append(self._conn)
        conn = sqlite3.connect(
            self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS cueapi_seen"
                " (key TEXT PRIMARY KEY NOT NULL, seen_at REAL NOT NULL) WITHOUT ROWID"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS cueapi_seen_at ON cueapi_seen (seen_at)")
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def seen(self, key: str) -> bool:
        now = self._clock()
        expired = now - self.ttl
        with self._lock:
            conn = self._connection()
            # A new key is inserted, an expired one renewed (one change); a live one is left
            # alone (no change): that is the answer, decided inside one statement.
            marked = conn.execute(
                "INSERT INTO cueapi_seen (key, seen_at) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE"
                " SET seen_at = excluded.seen_at WHERE cueapi_seen.seen_at <= ?3",
                (key, now, expired),
            ).rowcount
            if now - self._pruned_at >= self._prune_every:
                conn.execute("DELETE FROM cueapi_seen WHERE seen_at <= ?1", (expired,))
                self._pruned_at = now
        return marked == 0

    def __len__(self) -> int:
        """How many keys are remembered and still live."""
        with self._lock:
            row = (
                self._connection()
                .execute("SELECT count(*) FROM cueapi_seen WHERE seen_at > ?1", (self._clock() - self.ttl,))
                .fetchone()
            )
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> SqliteSeen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
