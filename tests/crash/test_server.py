"""``cueapi serve`` killed with SIGKILL again and again while thousands of cues come due.

A trial creates 2,000 cues over HTTP — one-shot ``at`` times and crons with seconds and a year —
all due within a 15-second window, delivered to a real loopback receiver that answers some
attempts with a 500 (so retries are pending all the time) and records every delivery with its
headers. While the window runs, the server is killed at seeded random points: at a random instant
(firing), while a delivery waits for its answer (delivering), right after a 200 was answered and
before the server can record it (committing), and while a retry is being delivered (retrying);
each time it is started again on the same file. Once everything is settled the database must
hold exactly one execution for every due occurrence — delivered, or failed, missed or skipped
with its reason — every delivery the receiver saw must belong to a recorded attempt of a recorded
execution, and the deliveries of one execution must all carry its id and idempotency key."""

from __future__ import annotations

import http.server
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cueapi.webhooks
import httpx
import pytest

from tests.conftest import location
from tests.crash.harness import (
    API_CATCH_UP,
    SEED,
    Ledger,
    PlannedCue,
    Serve,
    Stored,
    n,
    now_ms,
    plan_cues,
    poll,
    report,
    settled,
    trial_rng,
)

# Every trial runs on SQLite and on PostgreSQL.
STORES = ("sqlite", "postgres")

CUES_ONCE = 1_400
CUES_CRON = 600
WINDOW_S = 15.0
# A retry 1.2 s after a failed attempt, then 2.4 s: retries come due inside the window.
RETRY = {"max_attempts": 3, "backoff_minutes": [0.02, 0.04]}
# How often the receiver answers 500, by attempt: a few executions fail for good.
FAIL_RATE = {1: 0.12, 2: 0.3}
FAIL_RATE_LATER = 0.5
KINDS = ("firing", "delivering", "committing", "retrying")


@dataclass
class Delivery:
    """A request the receiver got, and what it answered."""

    execution_id: str
    cue_id: str
    scheduled_for: str
    attempt: int
    key: str
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    answered: int = 0


# What to answer a delivery with, and whether to kill the server "before" or "after" answering.
Decision = tuple[int, str | None]


class CrashReceiver:
    """A webhook receiver on a free loopback port that records every delivery. ``decide`` picks
    each answer and may ask for the server to be killed around it (``kill`` does that)."""

    def __init__(self, decide: Callable[[Delivery], Decision], kill: Callable[[], object]) -> None:
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 60  # an idle keep-alive connection is dropped: closing never waits forever

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                h = {k.lower(): v for k, v in self.headers.items()}
                d = Delivery(
                    h.get("x-cueapi-execution-id", ""),
                    h.get("x-cueapi-cue-id", ""),
                    h.get("x-cueapi-scheduled-for", ""),
                    int(h.get("x-cueapi-attempt", "0")),
                    h.get("x-cueapi-idempotency-key", ""),
                    h.get("webhook-id", ""),
                    h,
                    body,
                )
                with receiver.lock:
                    d.answered, kill = decide(d)
                    receiver.deliveries.append(d)
                if kill == "before":
                    receiver.kill()
                answer = b'{"success": true, "result": "received"}' if d.answered == 200 else b"{}"
                try:
                    self.send_response(d.answered)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    self.wfile.flush()
                except OSError:
                    pass
                if kill == "after":
                    receiver.kill()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.kill = kill
        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # Joined on close: every connection's thread ends (the server is stopped by then).
        self.http.daemon_threads = False
        self.url = f"http://127.0.0.1:{self.http.server_port}"
        self.thread = threading.Thread(target=self.http.serve_forever, name="crash-receiver")
        self.thread.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.thread.join()


class Chaos:
    """What the receiver answers and when it has the server killed, decided under its lock: a
    500 by a seeded draw per (cue, occurrence, attempt), and the kill armed now (on the n-th
    delivery, or the n-th delivery of a retry)."""

    def __init__(self, trial: int) -> None:
        self.trial = trial
        self.names: dict[str, str] = {}  # cue id -> name
        self.t0 = 0
        self.armed: tuple[str, int] | None = None

    def decide(self, d: Delivery) -> Decision:
        at = instant(d.scheduled_for) - self.t0
        draw = random.Random(f"{SEED}:{self.trial}:{self.names.get(d.cue_id)}:{at}:{d.attempt}").random()
        status = 500 if draw < FAIL_RATE.get(d.attempt, FAIL_RATE_LATER) else 200
        if self.armed is None or (self.armed[0] == "retrying" and d.attempt < 2):
            return status, None
        kind, left = self.armed
        self.armed = (kind, left - 1) if left > 1 else None
        if self.armed is not None:
            return status, None
        return status, "after" if kind == "committing" else "before"


def instant(text: str) -> int:
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return -1


def create(url: str, key: str, receiver: str, plan: list[PlannedCue]) -> dict[str, str]:
    """Creates the cues over HTTP from 8 connections; returns cue id -> name."""

    def some(part: int) -> list[tuple[str, str]]:
        made = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
            for i, cue in enumerate(plan[part::8]):
                body = {
                    "name": cue.name,
                    "schedule": cue.schedule(),
                    "callback": {"url": f"{receiver}/hook/{part}"},
                    "payload": {"n": i},
                    "retry": RETRY,
                    "catch_up": API_CATCH_UP[cue.catch_up],
                    "overlap": cue.overlap,
                }
                r = c.post("/v1/cues", json=body)
                assert r.status_code == 201, (body, r.text)
                made.append((r.json()["id"], cue.name))
        return made

    with ThreadPoolExecutor(8) as pool:
        return dict(pair for part in pool.map(some, range(8)) for pair in part)


@dataclass
class Tally:
    """What a webhook trial left: the store against its plan, and the deliveries against the store."""

    ledger: Ledger
    deliveries: list[Delivery]
    problems: list[str]
    interrupted: int
    repeats: int

    @classmethod
    def of(cls, db: Path | str, plan: list[PlannedCue], deliveries: list[Delivery], secret: str) -> Tally:
        stored = Stored.read(db)
        return cls(
            ledger=Ledger.check(plan, stored),
            deliveries=deliveries,
            problems=check_deliveries(stored, deliveries, secret),
            interrupted=sum(a.status == "interrupted" for a in stored.attempts.values()),
            # Deliveries of an execution beyond its first: at-least-once repeats (same id and key).
            repeats=len(deliveries) - len({d.execution_id for d in deliveries}),
        )


def check_deliveries(stored: Stored, deliveries: list[Delivery], secret: str) -> list[str]:
    """Every delivery belongs to a recorded attempt of a recorded execution and carries its id,
    idempotency key (also as ``webhook-id``), cue and instant, signed; no attempt went out twice;
    every attempt recorded as answered got that answer; a success's last attempt is one."""
    problems: list[str] = []
    numbers: dict[str, list[int]] = {}
    for d in deliveries:
        numbers.setdefault(d.execution_id, []).append(d.attempt)
        ex = stored.executions.get(d.execution_id)
        if ex is None:
            problems.append(f"a delivery of an execution never recorded: {d.headers}")
            continue
        sent = (d.key, d.webhook_id, d.cue_id, instant(d.scheduled_for))
        if sent != (ex.idempotency_key, ex.idempotency_key, ex.cue_id, ex.scheduled_for):
            problems.append(f"{d.execution_id} attempt {d.attempt}: sent {sent}, stored {ex}")
        if (d.execution_id, d.attempt) not in stored.attempts:
            problems.append(f"{d.execution_id}: attempt {d.attempt} was delivered but is not recorded")
        try:
            signed = cueapi.webhooks.parse(d.body, d.headers, secret, tolerance=3600)
        except cueapi.WebhookVerificationError as e:
            problems.append(f"{d.execution_id} attempt {d.attempt}: {e.reason}")
        else:
            if (signed.execution_id, signed.idempotency_key) != (ex.id, ex.idempotency_key):
                problems.append(f"{d.execution_id}: the signed body names {signed.execution_id}")
    for eid, sent_numbers in numbers.items():
        if len(set(sent_numbers)) != len(sent_numbers):
            problems.append(f"{eid}: an attempt delivered twice: {sent_numbers}")
    answered = {(d.execution_id, d.attempt): d.answered for d in deliveries}
    for (eid, number), a in stored.attempts.items():
        if a.status == "interrupted":
            if "before it finished" not in (a.error or ""):
                problems.append(f"{eid} attempt {number}: interrupted without its reason: {a.error}")
        elif a.status not in ("success", "failed") or answered.get((eid, number)) != a.http_status:
            got = answered.get((eid, number))
            problems.append(f"{eid} attempt {number}: recorded {a.status} {a.http_status}, answered {got}")
    for ex in stored.executions.values():
        last = stored.attempts.get((ex.id, ex.attempts))
        if ex.status == "success" and (
            last is None or last.status != "success" or ex.outcome_state != "reported_success"
        ):
            problems.append(f"{ex.id}: success, but its last attempt is {last} ({ex.outcome_state})")
    return problems


@pytest.mark.parametrize("trial", [1, 2])
def test_server_killed_mid_burst(tmp_path: Path, store: str, trial: int) -> None:
    # The cues from one stream, the kills from another: where the window falls in a minute changes
    # how much randomness planning the crons takes, not the kills.
    cues_rng, rng = trial_rng("server", trial), trial_rng("server-kills", trial)
    db = location(tmp_path / "server.db")
    server = Serve(db, tmp_path)
    chaos = Chaos(trial)
    receiver = CrashReceiver(chaos.decide, server.kill)
    kills: list[str] = []
    try:
        url = server.listen()
        with httpx.Client(timeout=30) as c:
            made = c.post(f"{url}/v1/auth/register", json={"email": "crash@example.com"}).json()
        key, secret = made["api_key"], made["webhook_secret"]

        # The window opens once the cues exist: 4 s plus 2 ms a cue from now.
        begun = now_ms()
        chaos.t0 = begun + 4_000 + 2 * (CUES_ONCE + CUES_CRON)
        plan = plan_cues(cues_rng, f"t{trial}", chaos.t0, WINDOW_S, CUES_ONCE, CUES_CRON)
        chaos.names.update(create(url, key, receiver.url, plan))
        took = (now_ms() - begun) / 1000
        assert now_ms() < chaos.t0 - 200, f"seed={SEED}: creating {len(plan)} cues took {took:.1f} s"

        kinds = list(KINDS) + rng.sample(KINDS, rng.randint(0, 1))
        rng.shuffle(kinds)
        poll(lambda: now_ms() >= chaos.t0, 30, "window", every=0.01)
        for kind in kinds:
            if kind == "firing":
                kills.append(server.kill_at_random(rng, kind))
            else:
                with receiver.lock:
                    chaos.armed = (kind, rng.randint(1, 6) if kind == "retrying" else rng.randint(1, 80))
                kills.append(server.await_death(kind))
                with receiver.lock:
                    chaos.armed = None
            server.reap_killed()
            server.listen()
        expected = sum(len(c.instants) for c in plan)
        try:
            poll(lambda: settled(db, expected), 90, "settling of every occurrence", every=0.2)
        finally:
            code = server.stop()
        assert code == 0, f"seed={SEED}: SIGTERM ended the server with {code}:\n{server.tail()}"
    finally:
        server.close()
        receiver.close()

    t = Tally.of(db, plan, receiver.deliveries, secret)
    ledger = t.ledger
    report(
        f"crash/server on {store} trial {trial} seed={SEED}: {n(len(plan))} cues, "
        f"{n(ledger.occurrences)} occurrences, {n(ledger.executions)} executions ({ledger.statuses()}), "
        f"{n(len(t.deliveries))} deliveries, "
        f"{len(kills)} kills ({', '.join(kills)}), {n(t.interrupted)} interrupted attempts, "
        f"{n(t.repeats)} repeats (same id+key), {ledger.faults()}, {len(t.problems)} delivery problems"
    )
    ledger.assert_exact(f"server trial {trial}")
    assert not t.problems, f"seed={SEED}: {len(t.problems)} problems: {t.problems[:10]}"
    assert t.interrupted > 0 and t.repeats > 0, (kills, t.interrupted, t.repeats)
    assert ledger.by_status.get("success", 0) > 0.9 * ledger.occurrences, ledger.statuses()
