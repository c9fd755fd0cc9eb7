"""What the three crash trials share: the seed, the plan of cues due in a short window, child
processes killed with SIGKILL and started again, read-only looks into the SQLite file, the side
effects handlers write, and the lines the run summary prints (see conftest.py)."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from tests.conftest import wait_for

T = TypeVar("T")

# One seed per run; each trial draws its plan (cues, kill points, answers) from it. Set
# CUEAPI_CRASH_SEED to run the same plans again (timing still varies from run to run).
SEED = int(os.environ.get("CUEAPI_CRASH_SEED") or random.SystemRandom().randrange(2**32))

# What each trial found, printed at the end of the run by conftest.py's pytest_terminal_summary.
SUMMARY: list[str] = []

ZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe")

# Statuses an execution ends in, and those still in flight.
FINAL = ("success", "failed", "missed", "skipped")
OPEN = "('pending', 'delivering', 'retrying')"


def trial_rng(part: str, trial: int) -> random.Random:
    return random.Random(f"{SEED}:{part}:{trial}")


def report(line: str) -> None:
    SUMMARY.append(line)
    print(line)


def n(x: int) -> str:
    return f"{x:,}"


def poll(probe: Callable[[], T], timeout: float, what: str, every: float = 0.05) -> T:
    """``wait_for``, coarser (for probes that read the database), naming the seed when it fails."""
    return wait_for(probe, timeout, f"{what} (seed={SEED})", every)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds")


# -- the plan: cues due in a short window --------------------------------------------------------


@dataclass(frozen=True)
class PlannedCue:
    """A cue and every instant (UTC milliseconds) it is due: a one-shot ``at`` (UTC with ``Z``, or
    wall time in its zone) or a cron with seconds and a year, so its ticks all fall in the window;
    or an interval (``every``), which never ends: its instants are known once it is stopped
    (:func:`resolve_every`)."""

    name: str
    timezone: str
    at: str | None
    cron: str | None
    instants: tuple[int, ...]
    catch_up: str  # once | skip | all (the App's names)
    overlap: str  # skip | allow
    every_s: int | None = None

    def schedule(self) -> dict[str, str]:
        """The ``schedule`` object of the HTTP API."""
        if self.at is not None:
            return {"type": "once", "at": self.at, "timezone": self.timezone}
        assert self.cron is not None
        return {"type": "recurring", "cron": self.cron, "timezone": self.timezone}


def _exact(local: datetime) -> bool:
    """Whether this wall time names one instant (it is not in a repeated hour)."""
    return local.replace(fold=0).astimezone(timezone.utc) == local.replace(fold=1).astimezone(timezone.utc)


def plan_cues(
    rng: random.Random, prefix: str, start_ms: int, window_s: float, once: int, cron: int
) -> list[PlannedCue]:
    """``once`` one-shot cues and ``cron`` recurring ones, each due only within
    [start, start + window]: a cron names one minute (in its zone) and a run of seconds in it."""
    end_ms = start_ms + int(window_s * 1000)
    out: list[PlannedCue] = []
    for i in range(once):
        at_ms = rng.randrange(start_ms, end_ms)
        zone = rng.choice(ZONES)
        local = datetime.fromtimestamp(at_ms / 1000, ZoneInfo(zone))
        if zone != "UTC" and rng.random() < 0.5 and _exact(local):
            at = local.replace(tzinfo=None).isoformat(timespec="milliseconds")  # wall time in `zone`
        else:
            at = iso_ms(at_ms).replace("+00:00", "Z")
        catch_up = rng.choice(("once", "skip", "all"))
        out.append(PlannedCue(f"{prefix}-once-{i}", zone, at, None, (at_ms,), catch_up, "skip"))
    first_second = -(-start_ms // 1000)
    last_second = end_ms // 1000
    for i in range(cron):
        a = rng.randrange(first_second, last_second)
        minute = a // 60 * 60
        b = rng.randrange(a, min(last_second, minute + 59) + 1)
        step = rng.choice((1, 2, 3, 5))
        seconds = list(range(a, b + 1, step))
        first, last = a - minute, seconds[-1] - minute
        field_ = str(first) if first == last else f"{first}-{last}/{step}"
        if rng.random() < 0.3:
            field_ = ",".join(str(s - minute) for s in seconds)
        zone = rng.choice(ZONES)
        local = datetime.fromtimestamp(minute, ZoneInfo(zone))
        if not _exact(local):
            zone, local = "UTC", datetime.fromtimestamp(minute, timezone.utc)
        expr = f"{local.minute} {local.hour} {local.day} {local.month} * {field_} {local.year}"
        out.append(
            PlannedCue(
                f"{prefix}-cron-{i}",
                zone,
                None,
                expr,
                tuple(s * 1000 for s in seconds),
                rng.choice(("once", "skip", "all")),
                rng.choice(("skip", "allow")),
            )
        )
    rng.shuffle(out)
    return out


def plan_every(rng: random.Random, prefix: str, count: int) -> list[PlannedCue]:
    """``count`` interval cues, every 1 to 3 seconds from their creation on."""
    return [
        PlannedCue(
            f"{prefix}-every-{i}",
            "UTC",
            None,
            None,
            (),
            rng.choice(("once", "skip", "all")),
            rng.choice(("skip", "allow")),
            rng.choice((1, 2, 3)),
        )
        for i in range(count)
    ]


# How far ahead of its instant the engine may commit a tick: 250 ms on PostgreSQL (src/engine,
# SHARED_FIRE_AHEAD_MS), 25 ms on SQLite.
FIRE_AHEAD_MS = 250


def resolve_every(plan: Sequence[PlannedCue], stored: Stored, stopping: tuple[int, int]) -> list[PlannedCue]:
    """The plan with the instants of its interval cues: one interval after the cue was created,
    and each interval after that, up to its next run when the process stopped (between the two
    instants of ``stopping``), which must be the first one not yet due: it kept firing to the end."""
    out = []
    for c in plan:
        if c.every_s is None:
            out.append(c)
            continue
        cue = stored.cues[c.name]
        every = c.every_s * 1000
        asked, ended = stopping
        # A tick due just after the stop may have been committed ahead of its instant already.
        last = ended + every + FIRE_AHEAD_MS
        assert cue.next_run is not None and asked - every - 1_000 < cue.next_run <= last, (
            f"seed={SEED}: {c.name} stopped firing: next run {iso_ms(cue.next_run or 0)}, "
            f"stopped between {iso_ms(asked)} and {iso_ms(ended)}"
        )
        out.append(
            PlannedCue(
                c.name,
                c.timezone,
                None,
                None,
                tuple(range(cue.created_at + every, cue.next_run, every)),
                c.catch_up,
                c.overlap,
                c.every_s,
            )
        )
    return out


API_CATCH_UP = {"once": "run_once_if_missed", "skip": "skip_missed", "all": "replay_all"}


# -- several nodes -------------------------------------------------------------------------------


def partition(cue_id: str) -> int:
    """The partition of a cue, as the engine computes it (store::cluster::partition)."""
    h = 0xCBF29CE484222325
    for b in cue_id.encode():
        h = ((h ^ b) * 0x100000001B3) % 2**64
    return h % 60


# -- child processes killed and started again ------------------------------------------------


class Child:
    """A child process started again and again (one *incarnation* after another) with its stderr
    in a log file per incarnation. ``kill`` sends SIGKILL; every incarnation is waited for."""

    def __init__(self, name: str, logs: Path, command: Callable[[int], Sequence[str]]) -> None:
        self.name = name
        self.logs = logs
        self.command = command
        self.incarnation = -1
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()

    def log(self) -> Path:
        return self.logs / f"{self.name}-{self.incarnation}.log"

    def start(self) -> int:
        with self.lock:
            assert self.proc is None or self.proc.poll() is not None, "the previous incarnation still runs"
            self.incarnation += 1
            with open(self.log(), "wb") as err:
                self.proc = subprocess.Popen(
                    list(self.command(self.incarnation)), stdout=subprocess.DEVNULL, stderr=err
                )
            return self.incarnation

    def alive(self) -> bool:
        with self.lock:
            return self.proc is not None and self.proc.poll() is None

    def kill(self) -> bool:
        """SIGKILL, if it runs. Returns whether it ran."""
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                return False
            self.proc.send_signal(signal.SIGKILL)
            return True

    def reap(self, timeout: float = 30) -> int:
        """Waits for the current incarnation to end; returns its exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then waits: a clean stop."""
        with self.lock:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
        return self.reap(timeout)

    def close(self) -> None:
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def tail(self, lines: int = 15) -> str:
        text = self.log().read_text(errors="replace") if self.log().exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def kill_at_random(self, rng: random.Random, why: str) -> str:
        """SIGKILL at a random instant within the next 0.1 to 2 seconds (unless it died before)."""
        at = time.monotonic() + rng.uniform(0.1, 2.0)
        poll(lambda: time.monotonic() >= at or not self.alive(), 10, "random instant", every=0.01)
        self.kill()
        return why

    def await_death(self, why: str, seconds: float = 6) -> str:
        """Waits for the incarnation to die of a kill armed inside it (or in the receiver); if none
        came within ``seconds``, SIGKILL stands in for it."""
        until = time.monotonic() + seconds
        poll(lambda: time.monotonic() > until or not self.alive(), seconds + 5, why, every=0.01)
        if self.kill():
            return f"{why} (none came: killed after {seconds:g} s)"
        return why

    def reap_killed(self, downtime: float = 0.0) -> None:
        """Reaps the killed incarnation (it must have died of SIGKILL), then lets ``downtime``
        seconds pass before anything starts it again."""
        code = self.reap()
        assert code == -signal.SIGKILL, f"seed={SEED}: {self.name} exited with {code}:\n{self.tail()}"
        time.sleep(downtime)  # the time nothing runs: not a wait for anything

    def restart_after_kill(self, downtime: float = 0.0) -> int:
        """Reaps the killed incarnation and starts the next one after ``downtime`` seconds."""
        self.reap_killed(downtime)
        return self.start()


class Serve(Child):
    """``cueapi serve`` on ``db`` (private targets allowed, no rate limit). It picks its port when
    first started; with ``same_port`` every later start listens there again, so the workers that
    know its URL find it back."""

    def __init__(self, db: Path | str, logs: Path, *extra: str, same_port: bool = False) -> None:
        super().__init__("serve", logs, self._command)
        self.db, self.extra, self.same_port = db, extra, same_port
        self.port = "0"

    def _command(self, _incarnation: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "cueapi",
            "serve",
            "--db",
            str(self.db),
            "--port",
            self.port,
            "--allow-private-targets",
            "--rate-limit",
            "0",
            *self.extra,
        ]

    def listen(self) -> str:
        """Starts an incarnation and returns its URL once it listens (it prints it)."""
        self.start()

        def found() -> str:
            if not self.alive():
                raise AssertionError(f"seed={SEED}: cueapi serve exited before listening:\n{self.tail()}")
            m = re.search(r"listening on (http://\S+)", self.log().read_text(errors="replace"))
            return m.group(1) if m else ""

        url = poll(found, 60, "listening server", every=0.02)
        if self.same_port:
            self.port = url.rsplit(":", 1)[1]
        return url


# -- the database, read-only from this process ------------------------------------------------


def query(db: Path | str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of a read-only query; the database may be in use by another process (SQLite's WAL, or
    PostgreSQL, read with psycopg when ``db`` is a ``postgresql://`` URL)."""
    if str(db).startswith("postgresql://"):
        import psycopg

        with psycopg.connect(str(db), autocommit=True) as pg_conn:
            return [tuple(r) for r in pg_conn.execute(sql.replace("?", "%s"), params).fetchall()]
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        return conn.execute(sql, params).fetchall()


def scalar(db: Path | str, sql: str) -> int:
    import psycopg

    try:
        return int(query(db, sql)[0][0])
    except (sqlite3.OperationalError, psycopg.errors.UndefinedTable):
        return -1  # not created yet


def settled(db: Path | str, expected: int, cues: str = "TRUE") -> bool:
    """Whether the cues matching ``cues`` (an SQL condition) have their ``expected`` executions,
    none still in flight, and none will fire again."""
    of = f"cue_id IN (SELECT id FROM cues WHERE {cues})"
    return (
        scalar(db, f"SELECT count(*) FROM executions WHERE {of}") >= expected
        and scalar(db, f"SELECT count(*) FROM executions WHERE {of} AND status IN {OPEN}") == 0
        and scalar(db, f"SELECT count(*) FROM cues WHERE next_run IS NOT NULL AND {cues}") == 0
    )


@dataclass
class Execution:
    id: str
    cue_id: str
    cue_name: str
    scheduled_for: int
    status: str
    attempts: int
    idempotency_key: str
    error_message: str | None
    outcome_state: str | None
    outcome_recorded_at: int | None
    triggered_by: str


@dataclass
class Attempt:
    execution_id: str
    number: int
    status: str
    http_status: int | None
    error: str | None
    claimed_by: str | None
    started_at: int


@dataclass
class StoredCue:
    id: str
    status: str
    next_run: int | None
    created_at: int
    fired_count: int


@dataclass
class Stored:
    """What the database holds at the end of a trial."""

    executions: dict[str, Execution]
    attempts: dict[tuple[str, int], Attempt]
    cues: dict[str, StoredCue]  # by name

    @classmethod
    def read(cls, db: Path | str) -> Stored:
        rows = query(
            db,
            "SELECT e.id, e.cue_id, c.name, e.scheduled_for, e.status, e.attempts, e.idempotency_key,"
            " e.error_message, e.outcome_state, e.outcome_recorded_at, e.triggered_by"
            " FROM executions e JOIN cues c ON c.id = e.cue_id",
        )
        executions = {str(r[0]): Execution(*r) for r in rows}
        attempts = {
            (str(r[0]), int(r[1])): Attempt(*r)
            for r in query(
                db,
                "SELECT execution_id, number, status, http_status, error, claimed_by, started_at"
                " FROM attempts",
            )
        }
        cues = {
            str(r[0]): StoredCue(*r[1:])
            for r in query(db, "SELECT name, id, status, next_run, created_at, fired_count FROM cues")
        }
        return cls(executions, attempts, cues)

    def attempts_of(self, execution_id: str) -> list[Attempt]:
        ex = self.executions[execution_id]
        numbers = range(1, ex.attempts + 1)
        return [self.attempts[(execution_id, i)] for i in numbers if (execution_id, i) in self.attempts]


@dataclass
class Ledger:
    """Occurrences planned against executions stored: each due instant must have exactly one."""

    occurrences: int = 0
    executions: int = 0
    missing: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    stray: list[str] = field(default_factory=list)
    by_status: dict[str, int] = field(default_factory=dict)
    unexplained: list[str] = field(default_factory=list)

    @classmethod
    def check(cls, plan: Sequence[PlannedCue], stored: Stored) -> Ledger:
        """Every planned instant has exactly one scheduled execution, finished — a success, or a
        failure, miss or skip with its reason — except that an interval cue's latest may wait
        (pending or retrying, never running) for the next start; each cue counts as fired the
        executions it ran (not those it missed or skipped)."""
        led = cls()
        waits = {stored.cues[c.name].id for c in plan if c.every_s is not None}
        planned = {c.name: c for c in plan}
        seen: dict[tuple[str, int], list[Execution]] = {}
        for ex in stored.executions.values():
            seen.setdefault((ex.cue_name, ex.scheduled_for), []).append(ex)
        due = {(c.name, t) for c in plan for t in c.instants}
        led.occurrences = len(due)
        led.executions = len(stored.executions)
        for key in sorted(due):
            got = seen.get(key, [])
            if not got:
                led.missing.append(f"{key[0]} at {iso_ms(key[1])}")
            elif len(got) > 1:
                led.doubled.append(f"{key[0]} at {iso_ms(key[1])}: {[e.id for e in got]}")
        for key, got in seen.items():
            if key not in due:
                led.stray.extend(f"{e.id} ({key[0]} at {iso_ms(key[1])}, {e.triggered_by})" for e in got)
        for ex in stored.executions.values():
            led.by_status[ex.status] = led.by_status.get(ex.status, 0) + 1
            if ex.triggered_by != "schedule" or (
                ex.status not in FINAL and not (ex.cue_id in waits and ex.status in ("pending", "retrying"))
            ):
                led.unexplained.append(f"{ex.id}: {ex.status}, triggered by {ex.triggered_by}")
            elif ex.status in ("failed", "missed", "skipped") and not ex.error_message:
                led.unexplained.append(f"{ex.id}: {ex.status} without a reason")
            elif ex.status in ("missed", "skipped") and ex.cue_name in planned:
                # The policy that decided it is named: overlap for a skip, catch-up for a miss.
                cue = planned[ex.cue_name]
                rule = (
                    f"overlap={cue.overlap}"
                    if ex.status == "skipped"
                    else ("catch_up_max" if cue.catch_up == "all" else f"catch_up={cue.catch_up}")
                )
                if rule not in (ex.error_message or "") or rule == "overlap=allow":
                    led.unexplained.append(f"{ex.id}: {ex.status} under {rule}: {ex.error_message}")

        ran: dict[str, int] = {}
        for ex in stored.executions.values():
            if ex.status not in ("missed", "skipped"):
                ran[ex.cue_name] = ran.get(ex.cue_name, 0) + 1
        for c in plan:
            fired = stored.cues[c.name].fired_count
            if fired != ran.get(c.name, 0):
                led.unexplained.append(f"{c.name}: fired {fired} times, ran {ran.get(c.name, 0)} executions")
        return led

    def faults(self) -> str:
        return (
            f"{len(self.missing)} missing, {len(self.doubled)} doubled, {len(self.stray)} stray, "
            f"{len(self.unexplained)} unexplained"
        )

    def statuses(self) -> str:
        return ", ".join(f"{n(v)} {k}" for k, v in sorted(self.by_status.items()))

    def assert_exact(self, what: str) -> None:
        problems = {
            "missing": self.missing,
            "doubled": self.doubled,
            "stray": self.stray,
            "unexplained": self.unexplained,
        }
        bad = {k: v for k, v in problems.items() if v}
        assert not bad, f"{what} (seed={SEED}): " + "; ".join(
            f"{len(v)} {k}: {v[:5]}" for k, v in bad.items()
        )


# -- side effects the handlers write ---------------------------------------------------------


@dataclass(frozen=True)
class Effect:
    """One line a handler appended (and fsynced): ``start``, ``raise`` or ``done`` of a run."""

    event: str
    worker: str
    execution_id: str
    idempotency_key: str
    attempt: int
    scheduled_for: int
    cue: str


def effects(path: Path) -> list[Effect]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        d = json.loads(line)
        out.append(Effect(d["event"], d["worker"], d["id"], d["key"], d["attempt"], d["at"], d["cue"]))
    return out


@dataclass
class Runs:
    """The handler runs the side effects show, held against the stored attempts."""

    starts: int = 0
    completed: int = 0
    repeats: int = 0  # runs of an execution after its first, all with the same id and key
    rerun_after_done: int = 0  # executions whose work completed, was cut off before its record, ran again
    interrupted: int = 0
    abandoned: int = 0
    unanswered: int = 0  # claims committed by a server killed before it answered them
    problems: list[str] = field(default_factory=list)

    @classmethod
    def check(
        cls,
        stored: Stored,
        lines: Sequence[Effect],
        killed: set[str] | None = None,
        server_kills: Sequence[int] = (),
    ) -> Runs:
        """Every run belongs to a recorded attempt of a recorded execution, with its idempotency
        key; a success's last attempt ran to ``done``; a run cut off (by a SIGKILL) is recorded
        as interrupted (embedded) or abandoned (a worker's claim, then only of a killed worker).
        ``killed``: the ids of the workers killed (pull workers; None for the embedded App).
        ``server_kills``: when the server was killed (ms): a claim it committed just before and
        never answered is abandoned too, whoever asked for it, and never ran."""
        out = cls()
        ran = {(e.execution_id, e.attempt) for e in lines}
        bad = out.problems
        by_execution: dict[str, list[Effect]] = {}
        for e in lines:
            by_execution.setdefault(e.execution_id, []).append(e)
            ex = stored.executions.get(e.execution_id)
            if ex is None:
                bad.append(f"a run of an execution never recorded: {e}")
                continue
            if (e.idempotency_key, e.scheduled_for, e.cue) != (
                ex.idempotency_key,
                ex.scheduled_for,
                ex.cue_name,
            ):
                bad.append(f"{e} does not match the stored {ex}")
            a = stored.attempts.get((e.execution_id, e.attempt))
            if a is None:
                bad.append(f"a run of an attempt never recorded: {e}")
                continue
            if killed is not None and a.claimed_by != e.worker:
                bad.append(f"{e}: ran by {e.worker}, but the attempt was claimed by {a.claimed_by}")
            cut_off = a.status == ("interrupted" if killed is None else "abandoned") and (
                killed is None or e.worker in killed
            )
            if e.event == "start":
                out.starts += 1
            elif e.event == "raise" and a.status != "failed" and not cut_off:
                bad.append(f"{e}: raised, but the attempt is recorded {a.status} ({a.claimed_by})")
            elif e.event == "done":
                out.completed += 1
                if a.status != "success" and not cut_off:
                    bad.append(f"{e}: done, but the attempt is recorded {a.status} ({a.claimed_by})")
        for (eid, number), a in stored.attempts.items():
            if a.status == "interrupted":
                out.interrupted += 1
                if killed is not None or "before it finished" not in (a.error or ""):
                    bad.append(f"{eid} attempt {number}: interrupted ({a.error})")
            elif a.status == "abandoned":
                out.abandoned += 1
                if killed is not None and a.claimed_by not in killed:
                    unanswered = (eid, number) not in ran and any(
                        k - 2_000 <= a.started_at <= k for k in server_kills
                    )
                    out.unanswered += unanswered
                    if not unanswered:
                        bad.append(
                            f"{eid} attempt {number}: the claim of a live worker abandoned ({a.error})"
                        )
                elif killed is None:
                    bad.append(f"{eid} attempt {number}: abandoned in an embedded App ({a.error})")
            elif a.status not in ("success", "failed"):
                bad.append(f"{eid} attempt {number}: left {a.status}")
        for ex in stored.executions.values():
            runs = by_execution.get(ex.id, [])
            starts = [e for e in runs if e.event == "start"]
            out.repeats += max(0, len(starts) - 1)
            if len({(e.execution_id, e.idempotency_key) for e in runs}) > 1:
                bad.append(f"{ex.id}: runs with different keys: {runs}")
            done = [e for e in runs if e.event == "done"]
            if len(done) > 1:
                out.rerun_after_done += 1
            attempts = stored.attempts_of(ex.id)
            successes = [a for a in attempts if a.status == "success"]
            if ex.status == "success":
                if [a.number for a in successes] != [ex.attempts]:
                    bad.append(f"{ex.id}: success, with successful attempts {successes} of {ex.attempts}")
                if not any(e.attempt == ex.attempts for e in done):
                    bad.append(f"{ex.id}: success, but its attempt {ex.attempts} never ran to the end")
                if ex.outcome_state != "reported_success" or ex.outcome_recorded_at is None:
                    bad.append(f"{ex.id}: success with outcome {ex.outcome_state}")
            elif successes:
                bad.append(f"{ex.id}: {ex.status}, with a successful attempt {successes}")
        return out
