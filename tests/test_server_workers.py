"""The worker transport of ``cueapi serve``: pull workers over HTTP. Workers announce themselves
(``POST /v1/worker/heartbeat``) and are listed with their liveness; they list what is claimable,
claim one execution or the next one they can handle (routed by the handlers they registered),
extend their lease with execution heartbeats and complete the running attempt with an outcome.
A claim whose lease ran out while its worker fell silent goes back to the queue as a new attempt;
an execution nobody claims in time is missed.

The engine runs on a manual clock here, so leases, timeouts and retries are exact instants; a
"beacon" (a webhook cue due at the new instant) proves the engine has acted on an instant before a
test reads what did, or did not, happen."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cueapi
import httpx
import pytest

from tests.conftest import START, Receiver, Server, location, start_server, wait_for
from tests.test_server_api import assert_4xx, assert_error
from tests.test_server_delivery import advance, instant, reopen, settled

# Every test here runs on SQLite and on PostgreSQL.
STORES = ("sqlite", "postgres")

# Worker cues here are fired by hand; their own schedule never comes due.
FAR = {"type": "once", "at": "2099-01-01T00:00:00Z"}
# The server's defaults: how long a claim holds without news, how long a worker may stay silent.
LEASE, TIMEOUT = 300, 180
CLAIMABLE_KEYS = {"execution_id", "cue_id", "cue_name", "task", "scheduled_for", "payload", "attempt"}
CLAIM_KEYS = CLAIMABLE_KEYS | {"claimed", "lease_seconds", "lease_expires_at"}

_names = itertools.count(1)


# -- helpers ---------------------------------------------------------------------------------------


def serve_with(db: Path, clock: cueapi.ManualClock | None = None, **settings: Any) -> Server:
    """A server like ``start_server``'s, with worker settings (``worker_lease_seconds``, ...)."""
    return start_server(db, clock, **settings)


def at(seconds: float) -> datetime:
    """The instant ``seconds`` after the manual clock's start."""
    return START + timedelta(seconds=seconds)


def worker_cue(s: Server, task: str | None = "a", key: str | bool = True, **fields: Any) -> dict[str, Any]:
    """Creates a worker cue whose payload names ``task`` (none when None); fired by hand."""
    spec: dict[str, Any] = {
        "name": f"job-{next(_names)}",
        "transport": "worker",
        "schedule": FAR,
        "overlap": "allow",
        "payload": {} if task is None else {"task": task},
    }
    spec.update(fields)
    r = s.call("POST", "/v1/cues", spec, key=key)
    assert r.status_code == 201, r.text
    return dict(r.json())


def fire(s: Server, cue: dict[str, Any], key: str | bool = True, **body: Any) -> str:
    r = s.call("POST", f"/v1/cues/{cue['id']}/fire", body, key=key)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def job(s: Server, task: str | None = "a", **fields: Any) -> str:
    """One pending execution of a new worker cue for ``task``."""
    return fire(s, worker_cue(s, task, **fields))


def jobs(s: Server, clock: cueapi.ManualClock, *tasks: str | None) -> list[str]:
    """One execution per task, a second apart (oldest first is then one order, not a tie)."""
    made = []
    for i, task in enumerate(tasks):
        if i:
            clock.advance(1)
        made.append(job(s, task))
    return made


def beat(s: Server, worker: str, handlers: list[str] | None = None, key: str | bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"worker_id": worker}
    if handlers is not None:
        body["handlers"] = handlers
    r = s.call("POST", "/v1/worker/heartbeat", body, key=key)
    assert r.status_code == 200, r.text
    return dict(r.json())


def claim(s: Server, execution_id: str, worker: str, key: str | bool = True) -> httpx.Response:
    return s.call("POST", f"/v1/executions/{execution_id}/claim", {"worker_id": worker}, key=key)


def claimed(s: Server, execution_id: str, worker: str) -> dict[str, Any]:
    r = claim(s, execution_id, worker)
    assert r.status_code == 200, r.text
    body = dict(r.json())
    assert set(body) >= CLAIM_KEYS, body
    assert body["claimed"] is True and body["execution_id"] == execution_id, body
    return body


def claim_next(s: Server, worker: str, task: str | None = None, key: str | bool = True) -> httpx.Response:
    body: dict[str, Any] = {"worker_id": worker}
    if task is not None:
        body["task"] = task
    return s.call("POST", "/v1/executions/claim", body, key=key)


def next_id(s: Server, worker: str, task: str | None = None) -> str:
    r = claim_next(s, worker, task)
    assert r.status_code == 200, r.text
    assert set(r.json()) >= CLAIM_KEYS, r.json()
    return str(r.json()["execution_id"])


def exec_beat(
    s: Server, execution_id: str, worker: str | None = None, key: str | bool = True
) -> httpx.Response:
    """An execution heartbeat, the way the official CLI sends it (``X-Worker-Id``, no body)."""
    headers = {"X-Worker-Id": worker} if worker is not None else {}
    return s.call("POST", f"/v1/executions/{execution_id}/heartbeat", headers=headers, key=key)


def report(s: Server, execution_id: str, key: str | bool = True, **body: Any) -> httpx.Response:
    return s.call("POST", f"/v1/executions/{execution_id}/outcome", body, key=key)


def listed(s: Server, key: str | bool = True, **params: Any) -> list[dict[str, Any]]:
    r = s.call("GET", "/v1/executions/claimable", params=params, key=key)
    assert r.status_code == 200, r.text
    items = list(r.json()["executions"])
    for item in items:
        assert set(item) >= CLAIMABLE_KEYS, item
    return items


def listed_ids(s: Server, key: str | bool = True, **params: Any) -> list[str]:
    return [str(e["execution_id"]) for e in listed(s, key, **params)]


def workers(s: Server, key: str | bool = True) -> list[dict[str, Any]]:
    """``GET /v1/workers`` in its order (``total`` checked against the list)."""
    r = s.call("GET", "/v1/workers", key=key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == len(body["workers"]), body
    return list(body["workers"])


def worker(s: Server, worker_id: str, key: str | bool = True) -> dict[str, Any]:
    (w,) = [w for w in workers(s, key) if w["worker_id"] == worker_id]
    return w


def held(w: dict[str, Any]) -> int:
    """How many executions a listed worker holds. The contract says ``claims`` is "the executions
    it holds now" without fixing the form: a count, or a list of them."""
    c = w["claims"]
    assert isinstance(c, (int, list)) and not isinstance(c, bool), w
    return c if isinstance(c, int) else len(c)


def attempts(ex: dict[str, Any]) -> list[tuple[int, str]]:
    return [(a["number"], a["status"]) for a in ex["attempt_log"]]


def snapshot(s: Server, key: str | bool = True) -> dict[str, Any]:
    """All a user can see of cues, executions, workers and the queue (the clock stands still)."""
    cues = s.call("GET", "/v1/cues", params={"limit": 1000}, key=key)
    execs = s.call("GET", "/v1/executions", params={"limit": 1000}, key=key)
    assert cues.status_code == 200 and execs.status_code == 200, (cues.text, execs.text)
    return {
        "cues": cues.json()["cues"],
        "executions": execs.json()["executions"],
        "workers": workers(s, key),
        "claimable": listed(s, key),
    }


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def srv(tmp_path: Path, clock: cueapi.ManualClock) -> Iterator[Server]:
    """A server whose engine runs on the manual ``clock`` (standing at ``START``)."""
    s = start_server(tmp_path / "workers.db", clock)
    yield s
    s.app.close()


@pytest.fixture
def other(srv: Server) -> str:
    """The API key of a second user of the same server."""
    key, _secret = srv.register("other@example.com")
    return key


# -- the worker registry ---------------------------------------------------------------------------


def test_a_heartbeat_registers_the_worker(srv: Server) -> None:
    body = beat(srv, "w1", ["sync", "report"])
    assert body["acknowledged"] is True and body["worker_id"] == "w1"
    assert instant(body["server_time"]) == START
    (w,) = workers(srv)
    assert w["worker_id"] == "w1" and w["handlers"] == ["sync", "report"]
    assert instant(w["last_heartbeat"]) == START and instant(w["registered_since"]) == START
    assert w["seconds_since_heartbeat"] == 0
    assert w["heartbeat_status"] == "active"
    assert held(w) == 0


def test_handlers_are_replaced_only_when_sent(srv: Server, clock: cueapi.ManualClock) -> None:
    beat(srv, "w1", ["a", "b"])
    clock.advance(30)
    body = beat(srv, "w1")  # no handlers: the stored list stays
    assert instant(body["server_time"]) == at(30)
    w = worker(srv, "w1")
    assert w["handlers"] == ["a", "b"]
    assert instant(w["last_heartbeat"]) == at(30) and instant(w["registered_since"]) == START
    clock.advance(30)
    beat(srv, "w1", ["c"])
    assert worker(srv, "w1")["handlers"] == ["c"]
    assert len(workers(srv)) == 1


def test_heartbeat_status_goes_active_stale_dead_and_back(srv: Server, clock: cueapi.ManualClock) -> None:
    beat(srv, "w1")
    # active within the worker timeout (180 s), stale within five times that, dead after.
    for age, status in [(TIMEOUT - 1, "active"), (TIMEOUT + 1, "stale"), (899, "stale"), (901, "dead")]:
        clock.advance(age - (clock.now() - START).total_seconds())
        w = worker(srv, "w1")
        assert (w["seconds_since_heartbeat"], w["heartbeat_status"]) == (age, status), w
        assert instant(w["last_heartbeat"]) == START
    beat(srv, "w1")
    w = worker(srv, "w1")
    assert (w["seconds_since_heartbeat"], w["heartbeat_status"]) == (0, "active")
    assert instant(w["registered_since"]) == START and instant(w["last_heartbeat"]) == at(901)


def test_workers_are_listed_newest_heartbeat_first(srv: Server, clock: cueapi.ManualClock) -> None:
    for name in ["w1", "w2", "w3"]:
        beat(srv, name)
        clock.advance(1)
    assert [w["worker_id"] for w in workers(srv)] == ["w3", "w2", "w1"]
    beat(srv, "w1")
    assert [w["worker_id"] for w in workers(srv)] == ["w1", "w3", "w2"]


@pytest.mark.parametrize(
    "worker_id",
    ["w", "x" * 255, "build box/1 — ü", "host.example.com:8080", "a%2Fb?c#d"],
    ids=["one-char", "255-chars", "spaces-slash-unicode", "hostname", "url-special"],
)
def test_any_worker_id_of_1_to_255_characters_works_and_can_be_deleted(srv: Server, worker_id: str) -> None:
    beat(srv, worker_id, ["a"])
    assert [w["worker_id"] for w in workers(srv)] == [worker_id]
    eid = job(srv, "a")
    assert claimed(srv, eid, worker_id)["attempt"] == 1
    # In the body: a header cannot carry every id (not "—" or "ü").
    r = srv.call("POST", f"/v1/executions/{eid}/heartbeat", {"worker_id": worker_id})
    assert r.status_code == 200, r.text
    r = srv.call("DELETE", "/v1/workers/" + quote(worker_id, safe=""))
    assert r.status_code == 204, r.text
    assert workers(srv) == []
    assert settled(srv, eid, "pending")["status"] == "pending"


def test_delete_a_worker(srv: Server) -> None:
    beat(srv, "w1")
    beat(srv, "w2")
    r = srv.call("DELETE", "/v1/workers/w1")
    assert r.status_code == 204 and r.content == b""
    assert [w["worker_id"] for w in workers(srv)] == ["w2"]
    assert_error(srv.call("DELETE", "/v1/workers/w1"), 404, "worker_not_found")
    assert_error(srv.call("DELETE", "/v1/workers/never-seen"), 404, "worker_not_found")
    assert [w["worker_id"] for w in workers(srv)] == ["w2"]


# -- what is claimable -----------------------------------------------------------------------------


def test_claimable_lists_due_worker_executions_oldest_first(
    srv: Server, clock: cueapi.ManualClock, receiver: Receiver
) -> None:
    a = worker_cue(srv, "a", payload={"task": "a", "n": 1})
    ea = fire(srv, a)
    clock.advance(1)
    eb = job(srv, "b")
    clock.advance(1)
    none = worker_cue(srv, None)
    en = fire(srv, none)
    # Not listed: a webhook execution, a claimed one, a finished one.
    hook = srv.cue(name="hooked", schedule=FAR, callback={"url": receiver.url + "/hook"})
    fire(srv, hook)
    taken = job(srv, "a")
    claimed(srv, taken, "w9")
    done = job(srv, "a")
    claimed(srv, done, "w9")
    assert report(srv, done, success=True).status_code == 200

    items = listed(srv)
    assert [e["execution_id"] for e in items] == [ea, eb, en]
    first = items[0]
    assert first["cue_id"] == a["id"] and first["cue_name"] == a["name"]
    assert first["task"] == "a" and first["payload"] == {"task": "a", "n": 1}
    assert instant(first["scheduled_for"]) == START
    assert items[2]["task"] is None and items[2]["payload"] == {}
    assert [e["attempt"] for e in items] == [1, 1, 1]
    assert [instant(e["scheduled_for"]) for e in items] == [at(0), at(1), at(2)]


def test_claimable_filters_apply_before_the_limit(srv: Server, clock: cueapi.ManualClock) -> None:
    b = worker_cue(srv, "b")
    bs = []
    for _ in range(60):
        bs.append(fire(srv, b))
        clock.advance(1)
    ea = job(srv, "a")  # the newest of 61

    assert listed_ids(srv, task="a") == [ea]
    assert listed_ids(srv) == bs[:50]  # the default limit
    assert listed_ids(srv, limit=100) == [*bs, ea]
    assert listed_ids(srv, limit=10) == bs[:10]
    assert listed_ids(srv, task="b", limit=5) == bs[:5]
    assert listed_ids(srv, task="nobody") == []


def test_claimable_for_a_worker_lists_only_what_it_can_handle(srv: Server, clock: cueapi.ManualClock) -> None:
    ea, eb, en = jobs(srv, clock, "a", "b", None)
    beat(srv, "wa", ["a"])
    assert listed_ids(srv, worker_id="wa") == [ea, en]  # its task, and work with no task
    assert listed_ids(srv, worker_id="wa", task="a") == [ea]
    assert listed_ids(srv, worker_id="wa", task="b") == []
    # A worker that never registered handlers may take anything.
    assert listed_ids(srv, worker_id="unregistered") == [ea, eb, en]


def test_unfiltered_the_tasks_live_workers_run_come_first_in_turns(
    srv: Server, clock: cueapi.ManualClock, other: str
) -> None:
    """The official daemon lists without a filter and reads the first page only: what a live
    worker of the caller runs is listed first, the oldest of each such task before the second
    oldest of any; the rest follows, oldest first. Nothing is left out."""
    b = worker_cue(srv, "b")  # nobody runs b
    bs = []
    for _ in range(60):
        bs.append(fire(srv, b))
        clock.advance(1)
    a1, a2, a3, c1, none = jobs(srv, clock, "a", "a", "a", "c", None)
    # No worker yet: oldest first, as before.
    assert listed_ids(srv) == bs[:50]
    # Another user's worker, and a worker that never said what it runs, change nothing.
    beat(srv, "theirs", ["c"], key=other)
    beat(srv, "anything")
    assert listed_ids(srv) == bs[:50]

    beat(srv, "wa", ["a", "zzz"])
    beat(srv, "wc", ["c"])
    # In turns: the oldest a, the oldest c, then the second a (the only c is taken), ...
    assert listed_ids(srv) == [a1, c1, a2, a3, *bs[:46]]
    assert listed_ids(srv, limit=3) == [a1, c1, a2]
    assert listed_ids(srv, limit=100) == [a1, c1, a2, a3, *bs, none]
    # Filters read as before: oldest first among what they select.
    assert listed_ids(srv, task="a") == [a1, a2, a3]
    assert listed_ids(srv, task="b", limit=2) == bs[:2]
    assert listed_ids(srv, worker_id="wc") == [c1, none]
    assert listed_ids(srv, worker_id="wa", task="c") == []

    # A worker silent past the worker timeout no longer counts: c waits behind the backlog again.
    clock.advance(TIMEOUT - 60)
    beat(srv, "wa", ["a"])
    clock.advance(61)
    assert listed_ids(srv, limit=5) == [a1, a2, a3, *bs[:2]]
    # Claimed, an execution leaves the listing; the next of its task moves up.
    claimed(srv, a1, "wa")
    assert listed_ids(srv, limit=3) == [a2, a3, bs[0]]


def test_unfiltered_a_backlog_of_one_handled_task_does_not_hide_another(
    srv: Server, clock: cueapi.ManualClock
) -> None:
    """Two workers, two tasks, one page: 120 executions of one task queued before one of the
    other still leave the other on the first page, next to the first of the backlog."""
    busy = worker_cue(srv, "busy")
    backlog = []
    for _ in range(120):
        backlog.append(fire(srv, busy))
        clock.advance(1)
    rare = job(srv, "rare")
    beat(srv, "w-busy", ["busy"])
    beat(srv, "w-rare", ["rare"])
    page = listed_ids(srv)
    assert page == [backlog[0], rare, *backlog[1:49]]
    # The worker running the rare task, reading the page as the daemon does, claims it at once.
    mine = next(e for e in listed(srv) if e["task"] == "rare")
    assert claimed(srv, mine["execution_id"], "w-rare")["task"] == "rare"
    assert listed_ids(srv, limit=100) == backlog[:100]


def test_a_fire_sent_for_later_is_not_claimable_before_its_time(
    srv: Server, clock: cueapi.ManualClock, beacon: Receiver
) -> None:
    cue = worker_cue(srv, "a")
    later = fire(srv, cue, send_at=at(120).isoformat())
    assert listed(srv) == []
    assert_error(claim(srv, later, "w1"), 409, "claim_failed")
    assert_error(claim_next(srv, "w1"), 409, "claim_failed")
    assert_error(report(srv, later, success=True), 409, "execution_not_claimed")
    advance(srv, clock, beacon, 119)
    assert listed(srv) == []
    assert_error(claim(srv, later, "w1"), 409, "claim_failed")
    clock.advance(1)
    wait_for(lambda: listed_ids(srv) == [later], what="the fire to become claimable at its send_at")
    body = claimed(srv, later, "w1")
    assert instant(body["scheduled_for"]) == at(120)
    assert instant(body["lease_expires_at"]) == at(120 + LEASE)


# -- claiming --------------------------------------------------------------------------------------


def test_claim_one_execution(srv: Server, receiver: Receiver) -> None:
    cue = worker_cue(srv, "a", payload={"task": "a", "rows": [1, 2]})
    eid = fire(srv, cue)
    beat(srv, "w1", ["a"])
    body = claimed(srv, eid, "w1")
    assert body["cue_id"] == cue["id"] and body["cue_name"] == cue["name"]
    assert body["task"] == "a" and body["payload"] == {"task": "a", "rows": [1, 2]}
    assert instant(body["scheduled_for"]) == START
    assert body["attempt"] == 1 and body["lease_seconds"] == LEASE
    assert instant(body["lease_expires_at"]) == at(LEASE)

    ex = srv.execution(eid)
    assert ex["status"] == "delivering" and ex["attempts"] == 1
    (attempt,) = ex["attempt_log"]
    assert attempt["number"] == 1 and attempt["finished_at"] is None
    assert instant(attempt["started_at"]) == START
    assert held(worker(srv, "w1")) == 1
    assert listed(srv) == []

    # Taken: not again, not by anyone else.
    assert_error(claim(srv, eid, "w1"), 409, "claim_failed")
    assert_error(claim(srv, eid, "w2"), 409, "claim_failed")
    assert_error(claim_next(srv, "w2"), 409, "claim_failed")
    # Finished, or not a worker execution at all.
    assert report(srv, eid, success=True).status_code == 200
    assert_error(claim(srv, eid, "w2"), 409, "claim_failed")
    hook = srv.cue(name="hooked", schedule=FAR, callback={"url": receiver.url + "/hook"})
    hooked = fire(srv, hook)
    assert_error(claim(srv, hooked, "w2"), 409, "claim_failed")
    assert srv.execution(eid)["attempts"] == 1 and held(worker(srv, "w1")) == 0


def test_claim_is_routed_by_the_registered_handlers(srv: Server) -> None:
    ea, eb, en = job(srv, "a"), job(srv, "b"), job(srv, None)
    beat(srv, "wa", ["a"])
    before = srv.execution(eb)
    assert_error(claim(srv, eb, "wa"), 409, "claim_failed")
    assert srv.execution(eb) == before
    assert claimed(srv, ea, "wa")["task"] == "a"
    assert claimed(srv, en, "wa")["task"] is None  # no task: anyone's
    # Neither a worker that never registered, nor one that registered no handler list, is routed.
    beat(srv, "silent")
    assert claimed(srv, eb, "silent")["task"] == "b"
    eb2 = job(srv, "b")
    assert claimed(srv, eb2, "never-registered")["attempt"] == 1
    # An empty list is a list: such a worker takes only work that names no task.
    beat(srv, "idle", [])
    eb3, en2 = job(srv, "b"), job(srv, None)
    assert_error(claim(srv, eb3, "idle"), 409, "claim_failed")
    assert claimed(srv, en2, "idle")["task"] is None


def test_claim_next_takes_the_oldest_the_worker_can_handle(srv: Server, clock: cueapi.ManualClock) -> None:
    eb = job(srv, "b")
    clock.advance(1)
    en = job(srv, None)
    clock.advance(1)
    ea1 = job(srv, "a")
    clock.advance(1)
    ea2 = job(srv, "a")
    beat(srv, "wa", ["a"])

    r = claim_next(srv, "wa")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["execution_id"] == en and body["task"] is None and body["attempt"] == 1
    assert body["lease_seconds"] == LEASE and instant(body["lease_expires_at"]) == at(3 + LEASE)
    assert next_id(srv, "wa", task="a") == ea1
    assert_error(claim_next(srv, "wa", task="b"), 409, "claim_failed")  # not its handler
    assert next_id(srv, "wa") == ea2
    assert_error(claim_next(srv, "wa"), 409, "claim_failed")  # only "b" is left
    assert listed_ids(srv) == [eb]
    assert next_id(srv, "anyone") == eb
    assert_error(claim_next(srv, "anyone"), 409, "claim_failed")
    assert held(worker(srv, "wa")) == 3


def test_claim_next_with_a_task_takes_only_that_task(srv: Server, clock: cueapi.ManualClock) -> None:
    ea = job(srv, "a")
    clock.advance(1)
    eb = job(srv, "b")
    assert next_id(srv, "w1", task="b") == eb
    assert_error(claim_next(srv, "w1", task="b"), 409, "claim_failed")
    assert_error(claim_next(srv, "w1", task="c"), 409, "claim_failed")
    assert listed_ids(srv) == [ea]


def _client(s: Server) -> httpx.Client:
    return httpx.Client(timeout=60, headers={"Authorization": f"Bearer {s.key}"})


def test_concurrent_claim_next_hands_out_every_execution_exactly_once(srv: Server) -> None:
    task_a, no_task = worker_cue(srv, "a"), worker_cue(srv, None)
    created = [fire(srv, task_a) for _ in range(200)] + [fire(srv, no_task) for _ in range(100)]
    names = [f"racer-{i}" for i in range(16)]
    for name in names:
        beat(srv, name, ["a"])
    got: dict[str, list[tuple[str, int]]] = {name: [] for name in names}
    errors: list[str] = []
    start = threading.Barrier(len(names))

    def racer(name: str) -> None:
        try:
            with _client(srv) as http:
                start.wait(30)
                for _ in range(len(created) + 1):
                    r = http.post(srv.url + "/v1/executions/claim", json={"worker_id": name})
                    if r.status_code == 409 and r.json()["error"]["code"] == "claim_failed":
                        return
                    if r.status_code != 200:
                        errors.append(f"{name}: {r.status_code} {r.text}")
                        return
                    got[name].append((r.json()["execution_id"], r.json()["attempt"]))
                errors.append(f"{name}: never ran out")
        except Exception as e:  # reported below, not lost in the thread
            errors.append(f"{name}: {e!r}")

    threads = [threading.Thread(target=racer, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a claimer hung"
    assert errors == []

    won = [eid for name in names for eid, _ in got[name]]
    assert len(won) == len(set(won)) == len(created), "an execution was claimed twice or lost"
    assert set(won) == set(created)
    assert {n for name in names for _, n in got[name]} == {1}
    # The store agrees: nothing left, each worker holds what it was given, each claim is its own.
    assert listed(srv) == []
    listed_workers = {w["worker_id"]: w for w in workers(srv)}
    for name in names:
        assert held(listed_workers[name]) == len(got[name]), name
    for i, name in enumerate(names):
        rival = names[(i + 1) % len(names)]
        for eid, _ in got[name]:
            assert exec_beat(srv, eid, name).status_code == 200, eid
            assert_error(exec_beat(srv, eid, rival), 403, "not_execution_owner")
    for eid in created:
        ex = srv.execution(eid)
        assert ex["status"] == "delivering" and ex["attempts"] == 1 and len(ex["attempt_log"]) == 1, ex


def test_concurrent_claims_of_one_execution_have_one_winner(srv: Server) -> None:
    eid = job(srv, "a")
    n = 32
    start = threading.Barrier(n)
    results: dict[str, tuple[int, str]] = {}
    lock = threading.Lock()

    def contender(name: str) -> None:
        status, code = 0, ""
        try:
            with _client(srv) as http:
                start.wait(30)
                r = http.post(f"{srv.url}/v1/executions/{eid}/claim", json={"worker_id": name})
                status = r.status_code
                code = r.json().get("error", {}).get("code", "") if status != 200 else ""
        except Exception as e:
            code = repr(e)
        with lock:
            results[name] = (status, code)

    threads = [threading.Thread(target=contender, args=(f"c{i}",)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == n, results
    winners = [name for name, (status, _) in results.items() if status == 200]
    assert len(winners) == 1, results
    assert sorted(results.values()) == sorted([(200, "")] + [(409, "claim_failed")] * (n - 1)), results
    ex = srv.execution(eid)
    assert ex["status"] == "delivering" and ex["attempts"] == 1 and len(ex["attempt_log"]) == 1
    (winner,) = winners
    loser = next(name for name in results if name != winner)
    assert exec_beat(srv, eid, winner).status_code == 200
    assert_error(exec_beat(srv, eid, loser), 403, "not_execution_owner")


# -- leases and heartbeats -------------------------------------------------------------------------


def test_execution_heartbeats_extend_the_lease_until_they_stop(
    srv: Server, clock: cueapi.ManualClock, beacon: Receiver
) -> None:
    eid = job(srv, "a")
    assert instant(claimed(srv, eid, "w1")["lease_expires_at"]) == at(LEASE)

    advance(srv, clock, beacon, LEASE - 1)  # T+299
    r = exec_beat(srv, eid, "w1")  # as the official CLI sends it: X-Worker-Id, no body
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["execution_id"] == eid and body["acknowledged"] is True
    assert instant(body["lease_extended_until"]) == at(299 + LEASE)

    advance(srv, clock, beacon, 200)  # T+499: well past the first lease's end
    assert srv.execution(eid)["status"] == "delivering"
    r = srv.call("POST", f"/v1/executions/{eid}/heartbeat", {"worker_id": "w1"})  # the body form
    assert r.status_code == 200, r.text
    assert instant(r.json()["lease_extended_until"]) == at(499 + LEASE)

    advance(srv, clock, beacon, LEASE - 1)  # T+798: the extended lease still holds
    ex = srv.execution(eid)
    assert ex["status"] == "delivering" and len(ex["attempt_log"]) == 1

    advance(srv, clock, beacon, 2)  # T+800: lease over, and w1 silent for 301 s
    ex = settled(srv, eid, "pending")
    assert attempts(ex) == [(1, "abandoned")]
    assert ex["attempt_log"][0]["error"], ex
    assert instant(ex["attempt_log"][0]["finished_at"]) <= at(800)
    (item,) = listed(srv)
    assert item["execution_id"] == eid and item["attempt"] == 2

    assert claimed(srv, eid, "w2")["attempt"] == 2
    assert_error(exec_beat(srv, eid, "w1"), 403, "not_execution_owner")
    r = report(srv, eid, success=True, result="second time lucky")
    assert r.status_code == 200, r.text
    ex = settled(srv, eid, "success")
    assert attempts(ex) == [(1, "abandoned"), (2, "success")]
    assert ex["attempts"] == 2


def test_worker_heartbeats_keep_its_claims_past_the_lease(
    srv: Server, clock: cueapi.ManualClock, beacon: Receiver
) -> None:
    """A worker that keeps heartbeating keeps its claims however long the job runs (the official
    daemon sends no execution heartbeats); a silent worker's claim is released once the lease is
    over and the worker timeout has passed since it was last heard from."""
    beat(srv, "live", ["a"])
    beat(srv, "dead", ["a"])
    mine, theirs = job(srv, "a"), job(srv, "a")
    claimed(srv, mine, "live")
    claimed(srv, theirs, "dead")

    for _ in range(2):
        advance(srv, clock, beacon, 100)
        beat(srv, "live")
    advance(srv, clock, beacon, 99)  # T+299: both leases still hold
    assert srv.execution(mine)["status"] == srv.execution(theirs)["status"] == "delivering"

    advance(srv, clock, beacon, 2)  # T+301: both leases over; only "dead" is silent
    ex = settled(srv, theirs, "pending")
    assert attempts(ex) == [(1, "abandoned")] and ex["attempt_log"][0]["error"]
    assert srv.execution(mine)["status"] == "delivering"
    assert held(worker(srv, "dead")) == 0 and held(worker(srv, "live")) == 1

    beat(srv, "live")
    for _ in range(4):  # to T+701, heard from every 100 s
        advance(srv, clock, beacon, 100)
        beat(srv, "live")
        assert srv.execution(mine)["status"] == "delivering"
    advance(srv, clock, beacon, TIMEOUT - 1)  # T+880: silent, but not for the whole timeout yet
    assert srv.execution(mine)["status"] == "delivering"
    advance(srv, clock, beacon, 2)  # T+882
    ex = settled(srv, mine, "pending")
    assert attempts(ex) == [(1, "abandoned")]
    assert sorted(listed_ids(srv)) == sorted([mine, theirs])
    assert [e["attempt"] for e in listed(srv)] == [2, 2]
    assert held(worker(srv, "live")) == 0


def test_a_long_job_on_a_live_worker_is_not_timed_out(
    srv: Server, clock: cueapi.ManualClock, beacon: Receiver
) -> None:
    """The lease and heartbeats govern a worker's job, not the cue's outcome deadline (300 s by
    default): a job that reports success after 20 minutes on a live worker is a plain success."""
    beat(srv, "w1", ["a"])
    eid = job(srv, "a")
    claimed(srv, eid, "w1")
    for _ in range(12):
        advance(srv, clock, beacon, 100)
        beat(srv, "w1")
    ex = srv.execution(eid)
    assert ex["status"] == "delivering" and ex["outcome_state"] is None, ex
    r = report(srv, eid, success=True, result="a long one")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "success" and r.json()["outcome_state"] == "reported_success", r.text
    ex = srv.execution(eid)
    assert ex["status"] == "success" and ex["outcome_state"] == "reported_success", ex
    assert attempts(ex) == [(1, "success")]


def test_a_live_worker_keeps_an_expired_claim_at_most_an_hour(
    srv: Server, clock: cueapi.ManualClock, beacon: Receiver
) -> None:
    """A worker restarted under the same id (the official daemon's default id is the host name)
    heartbeats on but knows nothing of the claims its previous life held: past the most a
    worker's heartbeats keep an expired lease (an hour), the claim is released with a reason
    that says so, and the run is retried. Execution heartbeats keep a claim for as long as they
    come."""
    hold = cueapi._limits.MAX_CLAIM_HOLD_SECONDS
    assert hold == 3600
    beat(srv, "host1", ["a"])
    forgotten, renewed = job(srv, "a"), job(srv, "a")
    claimed(srv, forgotten, "host1")
    claimed(srv, renewed, "host1")
    for _ in range(35):  # to T+3500: heard from every 100 s; one claim's lease renewed too
        advance(srv, clock, beacon, 100)
        beat(srv, "host1")
        assert exec_beat(srv, renewed, "host1").status_code == 200
    assert srv.execution(forgotten)["status"] == "delivering"
    advance(srv, clock, beacon, 99)  # T+3599
    assert srv.execution(forgotten)["status"] == "delivering"
    advance(srv, clock, beacon, 2)  # T+3601
    ex = settled(srv, forgotten, "pending")
    assert attempts(ex) == [(1, "abandoned")]
    assert "is alive but has held this claim for 3601 s" in ex["attempt_log"][0]["error"]
    assert "restarted under the same id" in ex["attempt_log"][0]["error"]
    assert srv.execution(renewed)["status"] == "delivering"
    assert held(worker(srv, "host1")) == 1


def test_an_execution_names_the_worker_holding_or_last_holding_its_claim(
    srv: Server, clock: cueapi.ManualClock, beacon: Receiver, receiver: Receiver
) -> None:
    """`claimed_by_worker` and `claimed_at` (what the official clients show as "Claimed by"): the
    worker holding the claim, kept once its outcome is recorded; none once a claim is released
    (the attempt log keeps who held it) until the next claim."""

    def claim_fields(eid: str) -> tuple[str | None, datetime | None]:
        ex = srv.execution(eid)
        (listed_ex,) = [e for e in srv.call("GET", "/v1/executions").json()["executions"] if e["id"] == eid]
        assert (listed_ex["claimed_by_worker"], listed_ex["claimed_at"]) == (
            ex["claimed_by_worker"],
            ex["claimed_at"],
        )
        return ex["claimed_by_worker"], None if ex["claimed_at"] is None else instant(ex["claimed_at"])

    done, dropped = job(srv, "a"), job(srv, "a", retry={"max_attempts": 1})
    assert claim_fields(done) == claim_fields(dropped) == (None, None)
    clock.advance(5)
    claimed(srv, done, "w1")
    assert claim_fields(done) == ("w1", at(5))
    clock.advance(5)
    assert report(srv, done, success=True).status_code == 200
    assert claim_fields(done) == ("w1", at(5))

    claimed(srv, dropped, "w2")
    assert claim_fields(dropped) == ("w2", at(10))
    advance(srv, clock, beacon, LEASE + 1)  # w2 never heard from: released
    ex = settled(srv, dropped, "pending")
    assert attempts(ex) == [(1, "abandoned")] and ex["attempt_log"][0]["claimed_by"] == "w2"
    assert claim_fields(dropped) == (None, None)
    claimed(srv, dropped, "w3")
    assert claim_fields(dropped) == ("w3", at(LEASE + 11))

    # Webhook deliveries are no worker's claims.
    hook = srv.cue(name="hooked", schedule=FAR, callback={"url": receiver.url + "/hook"})
    sent = fire(srv, hook)
    settled(srv, sent, "success")
    assert claim_fields(sent) == (None, None)


def test_a_released_claim_without_retries_left_fails(
    srv: Server, clock: cueapi.ManualClock, beacon: Receiver
) -> None:
    eid = job(srv, "a", retry={"max_attempts": 0})
    claimed(srv, eid, "w1")
    advance(srv, clock, beacon, LEASE + 1)
    ex = settled(srv, eid, "failed")
    assert attempts(ex) == [(1, "abandoned")]
    assert ex["error_message"]
    assert listed(srv) == []
    assert_error(claim(srv, eid, "w2"), 409, "claim_failed")


def test_lease_and_worker_timeout_are_server_settings(tmp_path: Path, beacon: Receiver) -> None:
    clock = cueapi.ManualClock(START)
    s = serve_with(tmp_path / "settings.db", clock, worker_lease_seconds=60, worker_timeout_seconds=30)
    try:
        beat(s, "w1", ["a"])
        eid = job(s, "a")
        body = claimed(s, eid, "w1")
        assert body["lease_seconds"] == 60 and instant(body["lease_expires_at"]) == at(60)
        advance(s, clock, beacon, 29)
        assert worker(s, "w1")["heartbeat_status"] == "active"
        r = exec_beat(s, eid, "w1")
        assert r.status_code == 200 and instant(r.json()["lease_extended_until"]) == at(89)
        advance(s, clock, beacon, 59)  # T+88
        assert s.execution(eid)["status"] == "delivering"
        assert worker(s, "w1")["heartbeat_status"] == "stale"  # 88 s > 30 s
        advance(s, clock, beacon, 2)  # T+90: lease over, silent for 61 s
        assert attempts(settled(s, eid, "pending")) == [(1, "abandoned")]
        clock.advance(180 - 90)  # over 5 x 30 s since it was heard from, by either heartbeat
        assert worker(s, "w1")["heartbeat_status"] == "dead"
    finally:
        s.app.close()


@contextmanager
def cueapi_serve(*args: str, env: dict[str, str]) -> Iterator[str]:
    """``cueapi serve`` in a child process; yields its base URL."""
    command = [sys.executable, "-m", "cueapi.cli", "serve", "--port", "0", *args]
    with subprocess.Popen(command, env=dict(os.environ, **env), stderr=subprocess.PIPE, text=True) as proc:
        err = proc.stderr
        assert err is not None
        try:
            started = wait_for(
                lambda: re.search(r"listening on (http://\S+)", err.readline()), 30, "the server"
            )
            assert started is not None
            yield started.group(1)
        finally:
            proc.kill()


def test_cueapi_serve_takes_the_worker_settings_from_flags_or_environment(tmp_path: Path) -> None:
    cases: list[tuple[list[str], dict[str, str], int]] = [
        (["--worker-lease", "7", "--worker-timeout", "5"], {}, 7),
        ([], {"CUEAPI_WORKER_LEASE_SECONDS": "11", "CUEAPI_WORKER_TIMEOUT_SECONDS": "4"}, 11),
    ]
    for i, (args, env, lease) in enumerate(cases):
        with cueapi_serve("--db", str(tmp_path / f"{i}.db"), *args, env=env) as url:
            made = httpx.post(url + "/v1/auth/register", json={"email": "ops@example.com"}, timeout=30)
            auth = {"Authorization": f"Bearer {made.json()['api_key']}"}
            spec = {"name": "w", "transport": "worker", "schedule": FAR, "payload": {"task": "a"}}
            cue = httpx.post(url + "/v1/cues", json=spec, headers=auth, timeout=30).json()
            eid = httpx.post(f"{url}/v1/cues/{cue['id']}/fire", headers=auth, timeout=30).json()["id"]
            r = httpx.post(
                f"{url}/v1/executions/{eid}/claim", json={"worker_id": "w1"}, headers=auth, timeout=30
            )
            assert r.status_code == 200 and r.json()["lease_seconds"] == lease, r.text
    for args, env, name in [
        (["--worker-lease", "0"], {}, "lease"),
        (["--worker-timeout", "-5"], {}, "timeout"),
        ([], {"CUEAPI_WORKER_TIMEOUT_SECONDS": "soon"}, "CUEAPI_WORKER_TIMEOUT_SECONDS"),
    ]:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "cueapi.cli",
                "serve",
                "--db",
                str(tmp_path / "bad.db"),
                "--port",
                "0",
                *args,
            ],
            env=dict(os.environ, **env),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode != 0 and name in out.stderr, (args, env, out.returncode, out.stderr)


def test_a_claim_survives_a_restart(tmp_path: Path, clock: cueapi.ManualClock) -> None:
    """Beyond the written contract: the worker runs in another process and does not know the
    server restarted; its claim and running attempt stay as they were, and its outcome counts."""
    db = tmp_path / "restart.db"
    first = start_server(db, clock)
    try:
        beat(first, "w1", ["a"])
        eid = job(first, "a")
        claimed(first, eid, "w1")
    finally:
        first.app.close()
    second = reopen(db, first, clock)
    try:
        ex = second.execution(eid)
        assert ex["status"] == "delivering" and ex["attempts"] == 1, ex
        (attempt,) = ex["attempt_log"]
        assert attempt["finished_at"] is None, attempt
        assert held(worker(second, "w1")) == 1
        assert exec_beat(second, eid, "w1").status_code == 200
        r = report(second, eid, success=True)
        assert r.status_code == 200, r.text
        assert attempts(settled(second, eid, "success")) == [(1, "success")]
    finally:
        second.app.close()


def test_execution_heartbeat_errors(srv: Server, clock: cueapi.ManualClock) -> None:
    pending, running = job(srv, "a"), job(srv, "a")
    claimed(srv, running, "w1")
    assert_error(exec_beat(srv, pending, "w1"), 409, "execution_not_claiming")
    assert_error(exec_beat(srv, pending), 409, "execution_not_claiming")
    assert_error(exec_beat(srv, "exec_" + "0" * 26, "w1"), 404, "execution_not_found")
    assert_error(exec_beat(srv, running, "w2"), 403, "not_execution_owner")
    r = srv.call("POST", f"/v1/executions/{running}/heartbeat", {"worker_id": "w2"})
    assert_error(r, 403, "not_execution_owner")
    clock.advance(10)
    r = exec_beat(srv, running)  # the worker id is optional
    assert r.status_code == 200, r.text
    assert instant(r.json()["lease_extended_until"]) == at(10 + LEASE)
    assert report(srv, running, success=True).status_code == 200
    assert_error(exec_beat(srv, running, "w1"), 409, "execution_not_claiming")


def test_deleting_a_worker_releases_its_claims(srv: Server, other: str) -> None:
    e1, e2, e3 = job(srv, "a"), job(srv, "a"), job(srv, "a")
    beat(srv, "w1", ["a"])
    beat(srv, "w2", ["a"])
    claimed(srv, e1, "w1")
    claimed(srv, e2, "w1")
    claimed(srv, e3, "w2")
    assert held(worker(srv, "w1")) == 2

    # Another user cannot.
    assert_error(srv.call("DELETE", "/v1/workers/w1", key=other), 404, "worker_not_found")
    assert held(worker(srv, "w1")) == 2

    r = srv.call("DELETE", "/v1/workers/w1")
    assert r.status_code == 204, r.text
    for eid in (e1, e2):
        ex = settled(srv, eid, "pending")
        assert attempts(ex) == [(1, "abandoned")] and ex["attempt_log"][0]["error"], ex
    assert [w["worker_id"] for w in workers(srv)] == ["w2"]
    assert held(worker(srv, "w2")) == 1 and srv.execution(e3)["status"] == "delivering"
    assert sorted(listed_ids(srv)) == sorted([e1, e2])
    assert [e["attempt"] for e in listed(srv)] == [2, 2]
    # What the deleted worker still holds in hand is no longer its own: no heartbeat extends it.
    assert_error(exec_beat(srv, e1, "w1"), 409, "execution_not_claiming")
    assert claimed(srv, e1, "w2")["attempt"] == 2
    # A late report for the released claim is kept, not refused: recorded as an attempt of its
    # own (no claimer), so the work it describes is not run again.
    r = report(srv, e2, success=True, result="finished after all")
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    ex = srv.execution(e2)
    assert [(a["number"], a["status"], a["claimed_by"]) for a in ex["attempt_log"]] == [
        (1, "abandoned", "w1"),
        (2, "success", None),
    ]
    assert e2 not in listed_ids(srv)


# -- executions nobody claims ----------------------------------------------------------------------


def test_a_worker_cue_shows_its_claim_timeout(srv: Server) -> None:
    cue = worker_cue(srv, "a")
    assert cue["delivery"]["claim_timeout_seconds"] == 900
    r = srv.call("PATCH", f"/v1/cues/{cue['id']}", {"delivery": {"claim_timeout_seconds": 30}})
    assert r.status_code == 200, r.text
    got = srv.call("GET", f"/v1/cues/{cue['id']}").json()["delivery"]
    assert got["claim_timeout_seconds"] == 30
    assert got["timeout_seconds"] == cue["delivery"]["timeout_seconds"]  # the rest is kept
    one = worker_cue(srv, "a", delivery={"claim_timeout_seconds": 1})
    assert one["delivery"]["claim_timeout_seconds"] == 1


def test_an_execution_nobody_claims_is_missed(
    srv: Server, clock: cueapi.ManualClock, beacon: Receiver
) -> None:
    eid = job(srv, "a", delivery={"claim_timeout_seconds": 60})
    advance(srv, clock, beacon, 59)
    assert srv.execution(eid)["status"] == "pending"
    assert listed_ids(srv) == [eid]
    advance(srv, clock, beacon, 2)
    ex = settled(srv, eid, "missed")
    assert "claim" in (ex["error_message"] or "").lower(), ex
    assert listed(srv) == []
    assert_error(claim(srv, eid, "w1"), 409, "claim_failed")
    # Finished without an outcome: the contract names no code for this one, either fits.
    err = assert_error(report(srv, eid, success=True), 409)
    assert err["code"] in ("execution_not_claimed", "outcome_already_recorded"), err


def test_the_claim_window_opens_when_the_execution_becomes_claimable(
    srv: Server, clock: cueapi.ManualClock, beacon: Receiver
) -> None:
    """Not when it was created: a fire sent for later, and a released claim, each get the cue's
    full claim timeout from the instant they can be claimed."""
    window = {"claim_timeout_seconds": 60}
    later = fire(srv, worker_cue(srv, "a", delivery=window), send_at=at(100).isoformat())
    beat(srv, "w1", ["a"])
    released = job(srv, "a", delivery=window)
    claimed(srv, released, "w1")
    advance(srv, clock, beacon, 50)
    assert srv.call("DELETE", "/v1/workers/w1").status_code == 204  # released at T+50
    settled(srv, released, "pending")
    advance(srv, clock, beacon, 50)  # T+100: the later fire comes due
    assert listed_ids(srv) == [released, later]
    advance(srv, clock, beacon, 9)  # T+109: 109 s after its creation, 59 s after the release
    assert srv.execution(released)["status"] == "pending"
    advance(srv, clock, beacon, 2)  # T+111
    assert "claim" in (settled(srv, released, "missed")["error_message"] or "").lower()
    advance(srv, clock, beacon, 48)  # T+159: claimable since T+100
    assert srv.execution(later)["status"] == "pending"
    advance(srv, clock, beacon, 2)  # T+161
    settled(srv, later, "missed")


def test_a_one_shot_worker_cue_nobody_claims_fails(
    srv: Server, clock: cueapi.ManualClock, beacon: Receiver
) -> None:
    cue = worker_cue(
        srv, "a", schedule={"type": "once", "at": at(10).isoformat()}, delivery={"claim_timeout_seconds": 30}
    )
    advance(srv, clock, beacon, 10)
    (eid,) = wait_for(lambda: listed_ids(srv), what="the one-shot's execution to become claimable")
    advance(srv, clock, beacon, 29)
    assert srv.execution(eid)["status"] == "pending"
    advance(srv, clock, beacon, 2)
    settled(srv, eid, "missed")
    wait_for(
        lambda: srv.call("GET", f"/v1/cues/{cue['id']}").json()["status"] == "failed",
        what="the one-shot cue to be failed",
    )


def test_a_missed_run_pauses_a_recurring_cue_with_pause_on_failure(
    srv: Server, clock: cueapi.ManualClock, beacon: Receiver
) -> None:
    cue = worker_cue(
        srv,
        "a",
        schedule={"type": "recurring", "cron": "* * * * *"},
        delivery={"claim_timeout_seconds": 30},
        on_failure={"pause": True},
    )
    keep = worker_cue(
        srv, "b", schedule={"type": "recurring", "cron": "* * * * *"}, delivery={"claim_timeout_seconds": 30}
    )
    advance(srv, clock, beacon, 60)  # 12:01, the first tick of both
    wait_for(lambda: len(listed(srv)) == 2, what="both ticks to be claimable")
    advance(srv, clock, beacon, 31)
    wait_for(lambda: listed(srv) == [], what="both ticks to be missed")
    wait_for(
        lambda: srv.call("GET", f"/v1/cues/{cue['id']}").json()["status"] == "paused",
        what="the cue with pause-on-failure to pause",
    )
    assert srv.call("GET", f"/v1/cues/{keep['id']}").json()["status"] == "active"


# -- outcomes --------------------------------------------------------------------------------------


def test_a_success_outcome_completes_the_claimed_attempt(srv: Server, clock: cueapi.ManualClock) -> None:
    beat(srv, "w1", ["a"])
    eid = job(srv, "a")
    claimed(srv, eid, "w1")
    clock.advance(42)
    evidence: dict[str, Any] = {
        "external_id": "batch-17",
        "result_url": "https://example.com/batches/17",
        "result_type": "data_sync",
        "summary": "17 rows",
        "metadata": {"rows": 17},
    }
    r = report(srv, eid, success=True, result="synced", **evidence)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["execution_id"] == eid and body["outcome_recorded"] is True
    assert body["outcome_state"] == "reported_success" and body["status"] == "success"
    assert body.get("next_retry") is None

    ex = srv.execution(eid)
    assert ex["status"] == "success" and ex["attempts"] == 1
    assert attempts(ex) == [(1, "success")]
    assert instant(ex["attempt_log"][0]["finished_at"]) == at(42)
    o = ex["outcome"]
    assert o["success"] is True and o["result"] == "synced"
    for k, v in evidence.items():
        assert o[k] == v, (k, o)
    assert held(worker(srv, "w1")) == 0
    assert_error(report(srv, eid, success=False, error="late"), 409, "outcome_already_recorded")
    assert srv.execution(eid) == ex


def test_a_failed_run_is_retried_and_claimable_again(
    srv: Server, clock: cueapi.ManualClock, beacon: Receiver
) -> None:
    """A report with `retry: true` says the run failed (a crash): the retry policy runs it again.
    (A plain reported failure is final: tests/test_failure_rule.py.)"""
    eid = job(srv, "a", retry={"max_attempts": 1, "backoff_minutes": [1]})
    claimed(srv, eid, "w1")
    r = report(srv, eid, success=False, error="upstream 503", retry=True)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "retrying" and body["outcome_state"] == "reported_failure"
    assert instant(body["next_retry"]) == at(60)
    ex = srv.execution(eid)
    assert ex["status"] == "retrying" and instant(ex["next_retry"]) == at(60)
    assert attempts(ex) == [(1, "failed")] and ex["attempt_log"][0]["error"] == "upstream 503"

    # Waiting for its retry: not claimable, and nobody holds it to report on.
    assert listed(srv) == []
    assert_error(claim(srv, eid, "w1"), 409, "claim_failed")
    assert_error(claim_next(srv, "w1"), 409, "claim_failed")
    assert_error(report(srv, eid, success=True), 409, "execution_not_claimed")
    assert_error(exec_beat(srv, eid, "w1"), 409, "execution_not_claiming")
    advance(srv, clock, beacon, 59)
    assert listed(srv) == []

    clock.advance(1)
    (item,) = wait_for(lambda: listed(srv), what="the retry to become claimable")
    assert item["execution_id"] == eid and item["attempt"] == 2
    assert claimed(srv, eid, "w2")["attempt"] == 2
    r = report(srv, eid, success=True, result="recovered")
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    ex = srv.execution(eid)
    assert ex["status"] == "success" and ex["attempts"] == 2
    assert attempts(ex) == [(1, "failed"), (2, "success")]
    assert ex["outcome"]["success"] is True and ex["outcome"]["result"] == "recovered"
    assert ex["outcome_state"] == "reported_success"


def test_a_failure_with_no_retries_left_fails_and_applies_on_failure(
    srv: Server, clock: cueapi.ManualClock, beacon: Receiver
) -> None:
    recurring = worker_cue(
        srv, "a", schedule={"type": "recurring", "cron": "0 0 29 2 *"}, retry={"max_attempts": 0}
    )
    pausing = worker_cue(
        srv,
        "a",
        schedule={"type": "recurring", "cron": "0 0 29 2 *"},
        retry={"max_attempts": 0},
        on_failure={"pause": True},
    )
    once = worker_cue(
        srv, "a", schedule={"type": "once", "at": at(10).isoformat()}, retry={"max_attempts": 0}
    )
    e1, e2 = fire(srv, recurring), fire(srv, pausing)
    advance(srv, clock, beacon, 10)
    (e3,) = wait_for(lambda: [e for e in listed_ids(srv) if e not in (e1, e2)], what="the one-shot's run")

    for eid in (e1, e2, e3):
        claimed(srv, eid, "w1")
        r = report(srv, eid, success=False, error="bad input")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "failed" and r.json().get("next_retry") is None
        ex = srv.execution(eid)
        assert ex["status"] == "failed" and attempts(ex) == [(1, "failed")]
        assert ex["next_retry"] is None
        assert_error(report(srv, eid, success=True), 409, "outcome_already_recorded")

    def cue_status(cue: dict[str, Any]) -> str:
        return str(srv.call("GET", f"/v1/cues/{cue['id']}").json()["status"])

    wait_for(lambda: cue_status(pausing) == "paused", what="pause on failure")
    wait_for(lambda: cue_status(once) == "failed", what="the one-shot cue to fail")
    assert cue_status(recurring) == "active"
    assert listed(srv) == []


def test_an_outcome_on_a_due_unclaimed_execution_is_kept_as_an_attempt_of_its_own(srv: Server) -> None:
    """A report without a claim (a hand, or a worker whose claim was released) for a due
    execution completes it as an attempt with no claimer; a failed run follows the retry policy."""
    ok_id, failing = job(srv, "a"), job(srv, "b", retry={"max_attempts": 1, "backoff_minutes": [5]})
    r = report(srv, ok_id, success=True, result="by hand")
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    ex = srv.execution(ok_id)
    assert [(a["number"], a["status"], a["claimed_by"]) for a in ex["attempt_log"]] == [(1, "success", None)]
    r = report(srv, failing, success=False, error="x", retry=True)
    assert r.status_code == 200 and r.json()["status"] == "retrying", r.text
    # Waiting for its retry, it takes no report without a claim.
    before = srv.execution(failing)
    assert_error(report(srv, failing, success=True), 409, "execution_not_claimed")
    assert srv.execution(failing) == before
    assert listed_ids(srv) == []


# -- tenants ---------------------------------------------------------------------------------------


def test_another_user_sees_and_touches_nothing(srv: Server, other: str) -> None:
    beat(srv, "w1", ["a"])
    running, waiting = job(srv, "a"), job(srv, "a")
    claimed(srv, running, "w1")
    before = snapshot(srv)

    assert workers(srv, other) == []
    assert listed(srv, other) == [] and listed(srv, other, task="a") == []
    assert listed(srv, other, worker_id="w1") == []
    assert_error(claim(srv, waiting, "w1", key=other), 404, "execution_not_found")
    assert_error(claim(srv, running, "w2", key=other), 404, "execution_not_found")
    assert_error(claim_next(srv, "w1", key=other), 409, "claim_failed")
    assert_error(claim_next(srv, "w1", task="a", key=other), 409, "claim_failed")
    assert_error(exec_beat(srv, running, "w1", key=other), 404, "execution_not_found")
    assert_error(exec_beat(srv, running, key=other), 404, "execution_not_found")
    assert_error(report(srv, running, key=other, success=True), 404, "execution_not_found")
    assert_error(srv.call("DELETE", "/v1/workers/w1", key=other), 404, "worker_not_found")
    # The same worker id in another account is another worker.
    beat(srv, "w1", ["x"], key=other)
    (theirs,) = workers(srv, other)
    assert theirs["worker_id"] == "w1" and theirs["handlers"] == ["x"] and held(theirs) == 0
    assert snapshot(srv) == before

    # And the other way round.
    mine = job(srv, "a")
    their_cue = worker_cue(srv, "a", key=other)
    their_exec = fire(srv, their_cue, key=other)
    assert sorted(listed_ids(srv)) == sorted([waiting, mine])
    assert listed_ids(srv, other) == [their_exec]
    assert_error(claim(srv, their_exec, "w1"), 404, "execution_not_found")


# -- authentication and malformed input ------------------------------------------------------------

WORKER_ROUTES = [
    ("POST", "/v1/worker/heartbeat"),
    ("GET", "/v1/workers"),
    ("DELETE", "/v1/workers/w1"),
    ("GET", "/v1/executions/claimable"),
    ("POST", "/v1/executions/claim"),
    ("POST", "/v1/executions/{pending}/claim"),
    ("POST", "/v1/executions/{running}/heartbeat"),
]


@pytest.fixture
def state(srv: Server) -> dict[str, str]:
    """A worker w1 (handler "a") holding one execution, and one execution waiting."""
    beat(srv, "w1", ["a"])
    running, pending = job(srv, "a"), job(srv, "a")
    claimed(srv, running, "w1")
    return {"running": running, "pending": pending}


@pytest.mark.parametrize(("method", "path"), WORKER_ROUTES)
@pytest.mark.parametrize("authorization", [None, "Bearer cue_sk_" + "0" * 32, "Basic dzE6cHc="])
def test_worker_routes_need_a_valid_key(
    srv: Server, state: dict[str, str], method: str, path: str, authorization: str | None
) -> None:
    before = snapshot(srv)
    headers = {"Authorization": authorization} if authorization else {}
    r = srv.call(
        method, path.format(**state), {"worker_id": "w1"}, key=None, headers={**headers, "X-Worker-Id": "w1"}
    )
    assert_error(r, 401, "invalid_api_key")
    assert snapshot(srv) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/worker/heartbeat"),
        ("POST", "/v1/workers"),
        ("PATCH", "/v1/workers/w1"),
        ("GET", "/v1/executions/{pending}/claim"),
        ("GET", "/v1/executions/{running}/heartbeat"),
        ("PUT", "/v1/executions/claim"),
        ("POST", "/v1/executions/claimable"),
    ],
)
def test_wrong_method_on_a_worker_route_is_405(
    srv: Server, state: dict[str, str], method: str, path: str
) -> None:
    before = snapshot(srv)
    r = srv.call(method, path.format(**state), content=b'{"worker_id": "w1"}')
    assert_error(r, 405)
    assert snapshot(srv) == before


RAW = {"Content-Type": "application/json"}
BAD_JSON = b'{"worker_id": "w1",'

# (method, path, body: bytes sent raw or an object sent as JSON, status, code, field of a 422)
BAD_INPUT: list[tuple[str, str, Any, int, str | None, str | None]] = [
    ("POST", "/v1/worker/heartbeat", BAD_JSON, 400, "invalid_json", None),
    ("POST", "/v1/worker/heartbeat", b"", 0, None, None),
    ("POST", "/v1/worker/heartbeat", [], 0, None, None),
    ("POST", "/v1/worker/heartbeat", "w1", 0, None, None),
    ("POST", "/v1/worker/heartbeat", {}, 422, "validation_error", "body.worker_id"),
    ("POST", "/v1/worker/heartbeat", {"worker_id": ""}, 422, "validation_error", "body.worker_id"),
    ("POST", "/v1/worker/heartbeat", {"worker_id": "x" * 256}, 422, "validation_error", "body.worker_id"),
    ("POST", "/v1/worker/heartbeat", {"worker_id": 7}, 422, "validation_error", "body.worker_id"),
    ("POST", "/v1/worker/heartbeat", {"worker_id": 10**30}, 0, None, None),
    ("POST", "/v1/worker/heartbeat", {"worker_id": None}, 422, "validation_error", "body.worker_id"),
    ("POST", "/v1/worker/heartbeat", {"worker_id": ["w1"]}, 422, "validation_error", "body.worker_id"),
    ("POST", "/v1/worker/heartbeat", {"worker_id": "w1", "handlers": "a"}, 422, "validation_error", None),
    ("POST", "/v1/worker/heartbeat", {"worker_id": "w1", "handlers": [1]}, 422, "validation_error", None),
    ("POST", "/v1/worker/heartbeat", {"worker_id": "w1", "handlers": [None]}, 422, "validation_error", None),
    (
        "POST",
        "/v1/worker/heartbeat",
        {"worker_id": "w1", "handlers": {"a": 1}},
        422,
        "validation_error",
        None,
    ),
    ("POST", "/v1/worker/heartbeat", {"worker_id": "w1", "handlers": [["a"]]}, 422, "validation_error", None),
    ("DELETE", "/v1/workers/nobody", None, 404, "worker_not_found", None),
    ("DELETE", "/v1/workers/" + "x" * 3000, None, 404, "worker_not_found", None),
    ("DELETE", "/v1/workers/w1%00", None, 0, None, None),
    ("GET", "/v1/executions/claimable?limit=0", None, 422, "validation_error", "query.limit"),
    ("GET", "/v1/executions/claimable?limit=101", None, 422, "validation_error", "query.limit"),
    ("GET", "/v1/executions/claimable?limit=-1", None, 422, "validation_error", "query.limit"),
    ("GET", "/v1/executions/claimable?limit=ten", None, 422, "validation_error", "query.limit"),
    ("GET", "/v1/executions/claimable?limit=1.5", None, 422, "validation_error", "query.limit"),
    ("GET", "/v1/executions/claimable?limit=" + "9" * 40, None, 422, "validation_error", "query.limit"),
    ("POST", "/v1/executions/claim", BAD_JSON, 400, "invalid_json", None),
    ("POST", "/v1/executions/claim", b"", 0, None, None),
    ("POST", "/v1/executions/claim", {}, 422, "validation_error", "body.worker_id"),
    ("POST", "/v1/executions/claim", {"worker_id": ""}, 422, "validation_error", "body.worker_id"),
    ("POST", "/v1/executions/claim", {"worker_id": 5}, 422, "validation_error", "body.worker_id"),
    ("POST", "/v1/executions/claim", {"worker_id": "x" * 256}, 422, "validation_error", "body.worker_id"),
    ("POST", "/v1/executions/claim", {"worker_id": "w1", "task": 5}, 422, "validation_error", "body.task"),
    (
        "POST",
        "/v1/executions/claim",
        {"worker_id": "w1", "task": ["a"]},
        422,
        "validation_error",
        "body.task",
    ),
    ("POST", "/v1/executions/{pending}/claim", BAD_JSON, 400, "invalid_json", None),
    ("POST", "/v1/executions/{pending}/claim", b"", 0, None, None),
    ("POST", "/v1/executions/{pending}/claim", {}, 422, "validation_error", "body.worker_id"),
    ("POST", "/v1/executions/{pending}/claim", {"worker_id": ""}, 422, "validation_error", "body.worker_id"),
    ("POST", "/v1/executions/{pending}/claim", {"worker_id": 5}, 422, "validation_error", "body.worker_id"),
    ("POST", "/v1/executions/{pending}/claim", {"worker_id": "x" * 256}, 422, "validation_error", None),
    ("POST", "/v1/executions/{pending}/claim", {"worker_id": {"id": "w1"}}, 422, "validation_error", None),
    (
        "POST",
        "/v1/executions/exec_" + "0" * 26 + "/claim",
        {"worker_id": "w1"},
        404,
        "execution_not_found",
        None,
    ),
    ("POST", "/v1/executions/nope/claim", {"worker_id": "w1"}, 404, "execution_not_found", None),
    (
        "POST",
        "/v1/executions/" + "x" * 3000 + "/claim",
        {"worker_id": "w1"},
        404,
        "execution_not_found",
        None,
    ),
    ("POST", "/v1/executions/{running}/heartbeat", BAD_JSON, 400, "invalid_json", None),
    (
        "POST",
        "/v1/executions/{running}/heartbeat",
        {"worker_id": 5},
        422,
        "validation_error",
        "body.worker_id",
    ),
    ("POST", "/v1/executions/{running}/heartbeat", {"worker_id": "w2"}, 403, "not_execution_owner", None),
    ("POST", "/v1/executions/nope/heartbeat", None, 404, "execution_not_found", None),
    ("POST", "/v1/executions/{pending}/outcome", {"success": "yes"}, 422, "validation_error", "body.success"),
    *[
        (
            "POST",
            "/v1/cues",
            {"name": "bad", "transport": "worker", "schedule": FAR, "delivery": {"claim_timeout_seconds": v}},
            422,
            "validation_error",
            "body.delivery.claim_timeout_seconds",
        )
        for v in [0, -1, "60", True, [60], {"s": 60}]
    ],
    # Numbers beyond 64 bits are refused by the JSON reader, for the body as a whole.
    *[
        (
            "POST",
            "/v1/cues",
            {"name": "bad", "transport": "worker", "schedule": FAR, "delivery": {"claim_timeout_seconds": v}},
            0,
            None,
            None,
        )
        for v in [10**30, -(10**30)]
    ],
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "field"),
    BAD_INPUT,
    ids=[f"{i}-{m}-{p[:40]}" for i, (m, p, *_rest) in enumerate(BAD_INPUT)],
)
def test_malformed_input_is_refused_and_changes_nothing(
    srv: Server,
    state: dict[str, str],
    method: str,
    path: str,
    body: Any,
    status: int,
    code: str | None,
    field: str | None,
) -> None:
    """Every bad request is a 4xx in the error envelope (never a 500), and nothing changes: no
    worker registered or touched, no claim taken or dropped, no cue created. Status 0: any 4xx."""
    before = snapshot(srv)
    url = path.format(**state)
    if isinstance(body, bytes):
        r = srv.call(method, url, content=body, headers=RAW)
    else:
        r = srv.call(method, url, body)
    if status:
        assert_error(r, status, code, field)
    else:
        assert_4xx(r)
    assert snapshot(srv) == before
    assert exec_beat(srv, state["running"], "w1").status_code == 200  # w1's claim is intact


@pytest.mark.parametrize("seconds", [10**12, 10**16, 2**63 - 1])
def test_a_huge_claim_timeout_is_refused_or_works(srv: Server, seconds: int) -> None:
    """No upper bound is promised, but an instant beyond what the store holds must not become a
    500 or a crash: the cue is refused (422) or its executions wait for a claim as usual."""
    spec = {"name": "huge", "transport": "worker", "schedule": FAR, "payload": {"task": "a"}}
    r = srv.call("POST", "/v1/cues", {**spec, "delivery": {"claim_timeout_seconds": seconds}})
    if r.status_code == 422:
        assert_error(r, 422, "validation_error", "body.delivery.claim_timeout_seconds")
        assert srv.call("GET", "/v1/cues").json()["cues"] == []
        return
    assert r.status_code == 201, r.text
    eid = fire(srv, r.json())
    assert listed_ids(srv) == [eid]
    assert claimed(srv, eid, "w1")["attempt"] == 1


# -- a worker that goes quiet ----------------------------------------------------------------------


def alerts_of(s: Server, kind: str) -> list[dict[str, Any]]:
    r = s.call("GET", "/v1/alerts", params={"alert_type": kind})
    assert r.status_code == 200, r.text
    return list(r.json()["alerts"])


def test_a_silent_worker_is_reported_offline_once_and_recovered_when_heard_again(
    srv: Server, clock: cueapi.ManualClock, beacon: Receiver, receiver: Receiver
) -> None:
    r = srv.call("PATCH", "/v1/auth/me", {"alert_webhook_url": receiver.url + "/alerts"})
    assert r.status_code == 200, r.text
    beat(srv, "w1", ["a"])
    job(srv, "a", delivery={"claim_timeout_seconds": 86400})
    # Heard from within the timeout (180 s): nothing is raised, however long it keeps beating.
    for _ in range(3):
        advance(srv, clock, beacon, 170)
        beat(srv, "w1")
    assert alerts_of(srv, "worker_offline") == []
    # Silent past the timeout: one alert (and one notification), not one per check.
    clock.advance(181)
    [offline] = wait_for(lambda: alerts_of(srv, "worker_offline"), 15, "the worker_offline alert")
    assert offline["severity"] == "critical" and offline["cue_id"] is None
    assert offline["metadata"]["worker_id"] == "w1" and offline["metadata"]["executions_waiting"] == 1
    advance(srv, clock, beacon, 600)
    assert len(alerts_of(srv, "worker_offline")) == 1
    assert [g.json()["alert_type"] for g in receiver.wait(1)] == ["worker_offline"]
    # Heard from again: one recovered notice, and the offline alert is resolved.
    beat(srv, "w1")
    [back] = wait_for(lambda: alerts_of(srv, "recovered"), 15, "the recovered notice")
    assert back["metadata"] == {"worker_id": "w1"}
    got = receiver.wait(2)
    assert [g.json()["alert_type"] for g in got] == ["worker_offline", "recovered"]
    assert alerts_of(srv, "worker_offline")[0]["resolved_at"] is not None
    # And it is watched again: a second silence is a new alert.
    clock.advance(181)
    wait_for(lambda: len(alerts_of(srv, "worker_offline")) == 2, 15, "a second worker_offline alert")


def test_a_shorter_worker_timeout_applies_to_the_workers_known_at_a_restart(
    tmp_path: Path, clock: cueapi.ManualClock, beacon: Receiver
) -> None:
    """A worker heard from before a restart gets the timeout the restarted server was given (not
    the default 180 s) from the restart on, to be heard from again."""
    db = tmp_path / "silence.db"
    first = serve_with(db, clock, worker_timeout_seconds=20)
    try:
        beat(first, "w1", ["a"])
    finally:
        first.app.close()
    app = cueapi.App(location(db), clock=clock, workers=2)
    url = app.serve("127.0.0.1", 0, allow_private_targets=True, worker_timeout_seconds=20)
    second = Server(app, url, first.key, first.secret, db)
    try:
        advance(second, clock, beacon, 19)
        assert alerts_of(second, "worker_offline") == []
        clock.advance(2)
        [offline] = wait_for(lambda: alerts_of(second, "worker_offline"), 15, "the worker_offline alert")
        assert offline["metadata"]["worker_id"] == "w1"
    finally:
        second.app.close()


def test_a_deleted_worker_is_not_reported_offline(
    srv: Server, clock: cueapi.ManualClock, beacon: Receiver
) -> None:
    beat(srv, "w1")
    assert srv.call("DELETE", "/v1/workers/w1").status_code == 204
    advance(srv, clock, beacon, 400)
    assert alerts_of(srv, "worker_offline") == []
