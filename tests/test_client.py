"""The client, :class:`cueapi.CueAPI`, against a live ``cueapi serve`` on loopback: every method of
every resource, with the server's state checked after each call (over plain HTTP, not through the
client); the exact requests where they matter, recorded by a small real HTTP server on loopback;
every error class the server (or a stub standing in for the hosted service) can make it raise;
retries; configuration; and the API key kept out of reprs, errors and logs."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import pickle
import socket
import threading
import time
import typing
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import cueapi
import httpx
import pytest
from cueapi import (
    AuthenticationError,
    ConflictError,
    CueAPI,
    CueAPIConnectionError,
    CueAPIError,
    CueAPIServerError,
    CueLimitExceededError,
    CueNotFoundError,
    CuePayload,
    ExecutionNotFoundError,
    InvalidScheduleError,
    RateLimitError,
    ValidationError,
)
from cueapi.exceptions import BodyVerifyMismatchError

from tests.conftest import START, Answer, Received, Receiver, Server, start_server

# The key a stub-backed client sends: no stub checks it, every secrecy test looks for it.
STUB_KEY = "cue_sk_" + "5ec7e7" * 5 + "ab"

# What a stub answers for a cue or an execution: just enough for the client's models.
CUE_JSON: dict[str, Any] = {
    "id": "cue_stub",
    "name": "stub",
    "status": "active",
    "schedule": {"type": "recurring", "cron": "0 9 * * *", "timezone": "UTC"},
    "callback": {"url": "https://example.com/run", "method": "POST", "headers": {}},
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
}
EXEC_JSON: dict[str, Any] = {
    "id": "exec_stub",
    "cue_id": "cue_stub",
    "scheduled_for": "2026-01-01T00:00:00Z",
    "status": "pending",
    "triggered_by": "manual_fire",
}


# -- helpers ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stub_server() -> Iterator[Receiver]:
    """One recording HTTP server on loopback for the module (each ``Receiver`` takes half a
    second to shut down)."""
    r = Receiver()
    # TCP_NODELAY: an answer's body is not held back for the ACK of its headers (40 ms each).
    r.http.RequestHandlerClass.disable_nagle_algorithm = True  # type: ignore[attr-defined]
    yield r
    r.close()


@pytest.fixture
def stub(stub_server: Receiver) -> Receiver:
    """The module's recording server, with no requests yet, answering 200 ``{}`` until told
    otherwise (see :func:`script`); as a base URL it stands in for a server, as a callback URL it
    receives deliveries."""
    with stub_server.cond:
        stub_server.requests.clear()
    script(stub_server, reply(200, {}))
    return stub_server


@pytest.fixture
def client(server: Server) -> Iterator[CueAPI]:
    with CueAPI(server.key, base_url=server.url) as c:
        yield c


def reply(status: int = 200, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
    """A stub's answer: JSON (or raw bytes) with the given status and headers."""
    data = body if isinstance(body, bytes) else json.dumps({} if body is None else body).encode()
    return status, {"Content-Type": "application/json", **(headers or {})}, data, 0.0


def script(stub: Receiver, *answers: Answer) -> None:
    """Makes the stub answer each request with the next answer; the last one repeats."""
    left = list(answers)
    lock = threading.Lock()

    def answer(_request: Received) -> Answer:
        with lock:
            return left.pop(0) if len(left) > 1 else left[0]

    stub.answer = answer


def stub_client(stub: Receiver, **settings: Any) -> CueAPI:
    return CueAPI(STUB_KEY, base_url=stub.url, **settings)


def query(r: Received) -> dict[str, list[str]]:
    return parse_qs(urlsplit(r.path).query, keep_blank_values=True)


def path(r: Received) -> str:
    return urlsplit(r.path).path


def stored_cue(server: Server, cue_id: str) -> dict[str, Any]:
    r = server.call("GET", f"/v1/cues/{cue_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def worker_cue(client: CueAPI, name: str, task: str, **fields: Any) -> cueapi.Cue:
    """A worker-transport cue that never ticks by itself (fired by hand)."""
    return client.cues.create(
        name, cron="0 0 1 1 *", transport="worker", payload=CuePayload().task(task).build(), **fields
    )


def declared(cue: cueapi.Cue) -> dict[str, Any]:
    """A cue's declared fields (a GET adds its recent executions as extra keys, and stats)."""
    return cue.model_dump(include=set(cueapi.Cue.model_fields) - {"stats"})


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def refused_url() -> tuple[socket.socket, str]:
    """A loopback address where nothing listens: the port stays bound (so no one else takes it)
    but is never put in listening state, so connections are refused."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s, f"http://127.0.0.1:{s.getsockname()[1]}"


# -- the surface ------------------------------------------------------------------------------------


class Head:
    """The official SDK's methods at its git head (notes/sdk_head.md), as stubs: their arguments,
    kinds and defaults (the 0.1.3 release's are checked against the real one in
    tests/test_client_parity.py)."""

    def cues_fire(
        self,
        cue_id,
        *,
        payload_override=None,
        merge_strategy=None,
        send_at=None,
        exit_criteria=None,
        idempotency_key=None,
        auto_verify=True,
    ): ...
    def cues_bulk_delete(self, ids): ...
    def cues_update(
        self,
        cue_id,
        *,
        name=None,
        description=None,
        status=None,
        cron=None,
        at=None,
        timezone=None,
        callback=None,
        payload=None,
        retry=None,
        on_failure=None,
    ): ...
    def executions_report_outcome(
        self,
        execution_id,
        *,
        success,
        result=None,
        error=None,
        metadata=None,
        external_id=None,
        result_url=None,
        result_ref=None,
        result_type=None,
        summary=None,
        artifacts=None,
    ): ...
    def executions_list(
        self, *, cue_id=None, status=None, outcome_state=None, triggered_by=None, limit=20, offset=0
    ): ...
    def executions_get(self, execution_id): ...
    def executions_handle(self, execution_id, payload=None): ...
    def executions_list_claimable(self, *, task=None, agent=None): ...
    def executions_claim(self, execution_id, *, worker_id): ...
    def executions_claim_next(self, *, worker_id, task=None): ...
    def executions_heartbeat(self, execution_id): ...
    def executions_mark_verification_pending(self, execution_id): ...
    def executions_mark_verified(self, execution_id, *, valid=True, reason=None): ...
    def executions_replay(self, execution_id): ...
    def workers_list(self): ...
    def workers_delete(self, worker_id): ...
    def usage_get(self): ...
    def messages_send(
        self,
        *,
        from_agent,
        to,
        body,
        subject=None,
        reply_to=None,
        priority=None,
        expects_reply=False,
        reply_to_agent=None,
        metadata=None,
        idempotency_key=None,
        send_at=None,
        auto_verify=True,
        live_fallback_mode=None,
    ): ...
    def messages_get(self, msg_id): ...
    def messages_mark_read(self, msg_id): ...
    def messages_ack(self, msg_id): ...
    def agents_create(
        self, *, display_name, slug=None, webhook_url=None, metadata=None, parent_agent_id=None
    ): ...
    def agents_list(self, *, status=None, include_deleted=False, limit=50, offset=0): ...
    def agents_get(self, ref, *, include_deleted=False): ...
    def agents_update(
        self, ref, *, display_name=None, webhook_url=None, clear_webhook_url=False, status=None, metadata=None
    ): ...
    def agents_delete(self, ref): ...
    def agents_webhook_secret_get(self, ref): ...
    def agents_webhook_secret_regenerate(self, ref): ...
    def agents_inbox(self, ref, *, state=None, limit=50, offset=0): ...
    def agents_sent(self, ref, *, limit=50, offset=0): ...
    def agents_roster(self, *, if_none_match=None): ...
    def agents_presence(self, ref): ...
    def agents_subscriptions_create(
        self, ref, *, event_type, delivery_target, webhook_url=None, inline_body=None
    ): ...
    def agents_subscriptions_list(self, ref): ...
    def agents_subscriptions_delete(self, ref, subscription_id): ...
    def agents_events_pull(self, ref, *, since=None, limit=100, event_type=None): ...


def test_methods_take_the_arguments_of_the_sdk_head() -> None:
    """Each head method exists on both clients and takes the head's arguments (same kind, same
    default, same order; ours adds keyword-only ones), as ``inspect.signature`` of the bound
    method shows them; the async twin's signatures are the sync ones."""
    sync = CueAPI(STUB_KEY, base_url="http://127.0.0.1:9")
    twin = cueapi.AsyncCueAPI(STUB_KEY, base_url="http://127.0.0.1:9")
    names = [n for n in vars(Head) if not n.startswith("_")]
    assert len(names) == 36
    for name in names:
        resource, method = name.split("_", 1)
        head = list(inspect.signature(getattr(Head(), name)).parameters.values())
        ours = getattr(getattr(sync, resource), method)
        mine = inspect.signature(ours).parameters
        assert [p.name for p in head] == [p for p in mine if p in {q.name for q in head}], name
        for p in head:
            assert (mine[p.name].kind, mine[p.name].default) == (p.kind, p.default), (name, p.name)
        assert all(p.kind is p.KEYWORD_ONLY for n, p in mine.items() if n not in {q.name for q in head}), name
        positional = ["x"] * sum(p.kind is p.POSITIONAL_OR_KEYWORD for p in head)
        required = {p.name: "x" for p in head if p.kind is p.KEYWORD_ONLY and p.default is p.empty}
        inspect.signature(ours).bind(*positional, **required)  # what a caller of the head passes
        if method != "handle":
            async_method = getattr(getattr(twin, resource), method)
            assert inspect.iscoroutinefunction(async_method), name
            assert inspect.signature(async_method) == inspect.signature(ours), name
        assert ours.__doc__ and ours.__name__ == method
    assert typing.get_type_hints(sync.cues.get)["return"] is cueapi.Cue
    assert typing.get_type_hints(twin.cues.list)["return"] is cueapi.CueList
    sync.close()


# -- cues ------------------------------------------------------------------------------------------


def test_create_recurring_with_every_option(client: CueAPI, server: Server, stub: Receiver) -> None:
    before = datetime.now(timezone.utc)
    cue = client.cues.create(
        "sync-customers",
        cron="0 9 * * MON-FRI",
        timezone="Europe/Paris",
        callback=stub.url + "/hook",
        callback_method="PUT",
        callback_headers={"X-Team": "ops"},
        payload={"task": "sync", "batch": 100, "note": "naïve ☃"},
        description="weekday sync",
        retry={"max_attempts": 2, "backoff_minutes": [1, 5]},
        on_failure={"email": False, "webhook": None, "pause": True},
        delivery={"timeout_seconds": 5, "outcome_deadline_seconds": 60},
    )
    assert isinstance(cue, cueapi.Cue) and cue.id.startswith("cue_")
    assert (cue.name, cue.status, cue.transport, cue.description) == (
        "sync-customers",
        "active",
        "webhook",
        "weekday sync",
    )
    assert (cue.schedule.type, cue.schedule.cron, cue.schedule.timezone) == (
        "recurring",
        "0 9 * * MON-FRI",
        "Europe/Paris",
    )
    assert (cue.callback.url, cue.callback.method, cue.callback.headers) == (
        stub.url + "/hook",
        "PUT",
        {"X-Team": "ops"},
    )
    assert cue.payload == {"task": "sync", "batch": 100, "note": "naïve ☃"}
    assert (cue.retry.max_attempts, cue.retry.backoff_minutes) == (2, [1, 5])
    assert cue.on_failure is not None and (cue.on_failure.email, cue.on_failure.pause) == (False, True)
    assert cue.delivery is not None
    assert (cue.delivery.timeout_seconds, cue.delivery.outcome_deadline_seconds) == (5, 60)
    assert cue.next_run is not None
    first = cue.next_run.astimezone(ZoneInfo("Europe/Paris"))
    assert first > before and (first.hour, first.minute) == (9, 0) and first.weekday() < 5

    # What the server stored is what the client returned.
    stored = stored_cue(server, cue.id)
    assert (
        stored["schedule"]["cron"] == "0 9 * * MON-FRI" and stored["schedule"]["timezone"] == "Europe/Paris"
    )
    assert stored["callback"] == {"url": stub.url + "/hook", "method": "PUT", "headers": {"X-Team": "ops"}}
    assert stored["payload"] == cue.payload and stored["description"] == "weekday sync"
    assert stored["retry"] == {"max_attempts": 2, "backoff_minutes": [1, 5], "retry_reported_failures": False}
    assert stored["on_failure"] == {"email": False, "webhook": None, "pause": True}
    assert stored["delivery"]["timeout_seconds"] == 5 and stored["delivery"]["outcome_deadline_seconds"] == 60


def test_create_once_and_interval(client: CueAPI, server: Server, stub: Receiver) -> None:
    # `at` as an ISO string with an offset, and as a datetime; the cue's zone is kept as given.
    at = (datetime.now(timezone(timedelta(hours=5, minutes=30))) + timedelta(days=2)).replace(microsecond=0)
    once = client.cues.create("report-once", at=at.isoformat(), timezone="Asia/Tokyo", callback=stub.url)
    assert once.schedule.type == "once" and once.schedule.at == at and once.next_run == at
    assert once.schedule.timezone == "Asia/Tokyo"
    when = datetime(2031, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    dated = client.cues.create("report-dated", at=when, callback=stub.url)
    assert dated.schedule.at == when and dated.next_run == when
    assert instant(stored_cue(server, dated.id)["schedule"]["at"]) == when

    # `every` (a cueapi extension): the first run is one interval after creation.
    before = datetime.now(timezone.utc)
    every = client.cues.create("poll", every="45s", callback=stub.url)
    assert (every.schedule.type, every.schedule.every) == ("interval", "45s") and every.every_seconds == 45
    assert every.next_run is not None
    assert (
        before + timedelta(seconds=44) <= every.next_run <= datetime.now(timezone.utc) + timedelta(seconds=46)
    )
    assert stored_cue(server, every.id)["schedule"]["every"] == "45s"


def test_create_worker_cue(client: CueAPI, server: Server) -> None:
    cue = worker_cue(client, "nightly-pipeline", "etl")
    assert cue.transport == "worker" and cue.callback.url is None and cue.payload == {"task": "etl"}
    stored = stored_cue(server, cue.id)
    assert stored["transport"] == "worker" and stored["callback"]["url"] is None
    # Its executions wait for a worker instead of being delivered.
    ex = client.cues.fire(cue.id)
    claimable = client.executions.list_claimable(task="etl")["executions"]
    assert [e["execution_id"] for e in claimable] == [ex["id"]]


def test_create_refuses_a_cue_without_schedule_before_sending(client: CueAPI, server: Server) -> None:
    with pytest.raises(ValueError, match="Either 'cron' or 'at'") as info:
        client.cues.create("no-schedule", callback="https://example.com/run")
    assert isinstance(info.value, ValidationError) and info.value.status_code is None
    assert server.call("GET", "/v1/cues").json()["total"] == 0


def test_list_pages_and_filters_by_status(client: CueAPI, server: Server) -> None:
    made = [worker_cue(client, f"cue-{n}", "t") for n in range(3)]
    page = client.cues.list()
    assert isinstance(page, cueapi.CueList) and all(isinstance(c, cueapi.Cue) for c in page.cues)
    assert (page.total, page.limit, page.offset) == (3, 20, 0)
    assert {c.id for c in page.cues} == {c.id for c in made}
    pages = [client.cues.list(limit=1, offset=n) for n in range(4)]
    assert [len(p.cues) for p in pages] == [1, 1, 1, 0] and {p.total for p in pages} == {3}
    assert [(p.limit, p.offset) for p in pages] == [(1, 0), (1, 1), (1, 2), (1, 3)]
    assert {p.cues[0].id for p in pages[:3]} == {c.id for c in made}

    client.cues.pause(made[1].id)
    paused = client.cues.list(status="paused")
    assert [c.id for c in paused.cues] == [made[1].id] and paused.total == 1
    active = client.cues.list(status="active")
    assert {c.id for c in active.cues} == {made[0].id, made[2].id} and active.total == 2
    assert server.call("GET", "/v1/cues", params={"status": "paused"}).json()["total"] == 1


def test_get(client: CueAPI) -> None:
    made = worker_cue(client, "one", "t", description="first")
    got = client.cues.get(made.id)
    assert isinstance(got, cueapi.Cue)
    assert declared(got) == declared(made)
    with pytest.raises(CueNotFoundError) as info:
        client.cues.get("cue_missing")
    assert info.value.status_code == 404 and info.value.code == "cue_not_found"


def test_update_changes_each_field_alone(client: CueAPI, server: Server, stub: Receiver) -> None:
    cue = client.cues.create(
        "editable",
        cron="0 9 * * *",
        callback=stub.url + "/a",
        payload={"v": 1},
        description="d0",
        retry={"max_attempts": 3, "backoff_minutes": [1]},
        on_failure={"email": True, "pause": False},
    )
    later = (datetime.now(timezone.utc) + timedelta(days=10)).replace(microsecond=0)
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"name": "renamed"}, {"name": "renamed"}),
        ({"description": "d1"}, {"description": "d1"}),
        ({"payload": {"v": 2, "x": [1]}}, {"payload": {"v": 2, "x": [1]}}),
        (
            {"retry": {"max_attempts": 1, "backoff_minutes": [2]}},
            {"retry": {"max_attempts": 1, "backoff_minutes": [2], "retry_reported_failures": False}},
        ),
        (
            {"on_failure": {"email": False, "pause": True}},
            {"on_failure": {"email": False, "webhook": None, "pause": True}},
        ),
        (
            {"callback": stub.url + "/b"},
            {"callback": {"url": stub.url + "/b", "method": "POST", "headers": {}}},
        ),
        ({"callback_method": "PUT"}, {"callback": {"url": stub.url + "/b", "method": "PUT", "headers": {}}}),
        (
            {"callback_headers": {"X-K": "v"}},
            {"callback": {"url": stub.url + "/b", "method": "PUT", "headers": {"X-K": "v"}}},
        ),
        ({"delivery": {"timeout_seconds": 7}}, {}),
        (
            {"cron": "30 6 * * *"},
            {
                "schedule": {
                    "type": "recurring",
                    "cron": "30 6 * * *",
                    "at": None,
                    "every": None,
                    "timezone": "UTC",
                }
            },
        ),
        (
            {"every": "2m"},
            {"schedule": {"type": "interval", "cron": None, "at": None, "every": "120s", "timezone": "UTC"}},
        ),
        (
            {"at": later},
            {"schedule": {"type": "once", "cron": None, "at": later, "every": None, "timezone": "UTC"}},
        ),
        ({"status": "paused"}, {"status": "paused"}),
        ({"status": "active"}, {"status": "active"}),
    ]
    moving = {"updated_at", "next_run", "stats", "delivery"}
    for change, expected in cases:
        before = declared(client.cues.get(cue.id))
        after = client.cues.update(cue.id, **change)
        got = declared(after)
        for key, value in expected.items():
            assert got[key] == value, (change, key, got[key])
        # Every other field is as it was.
        same = set(before) - set(expected) - moving
        assert {k: got[k] for k in same} == {k: before[k] for k in same}, change
        assert after.updated_at >= cue.updated_at
        # And the server stored it.
        assert declared(client.cues.get(cue.id)) == got, change
    assert stored_cue(server, cue.id)["delivery"]["timeout_seconds"] == 7
    assert stored_cue(server, cue.id)["name"] == "renamed"


def test_update_timezone_alone_keeps_the_schedule(client: CueAPI, server: Server) -> None:
    cron = worker_cue(client, "nine", "t")
    cron = client.cues.update(cron.id, cron="0 9 * * *")
    moved = client.cues.update(cron.id, timezone="Asia/Tokyo")
    assert (moved.schedule.type, moved.schedule.cron, moved.schedule.timezone) == (
        "recurring",
        "0 9 * * *",
        "Asia/Tokyo",
    )
    assert moved.next_run is not None
    local = moved.next_run.astimezone(ZoneInfo("Asia/Tokyo"))
    assert (local.hour, local.minute) == (9, 0)
    assert stored_cue(server, cron.id)["schedule"]["timezone"] == "Asia/Tokyo"

    at = datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    once = client.cues.create("once", at=at, transport="worker")
    once = client.cues.update(once.id, timezone="America/New_York")
    assert (once.schedule.type, once.schedule.at, once.schedule.timezone) == ("once", at, "America/New_York")

    every = client.cues.create("every", every="90s", transport="worker")
    every = client.cues.update(every.id, timezone="Europe/Berlin")
    assert (every.schedule.type, every.schedule.every, every.schedule.timezone) == (
        "interval",
        "90s",
        "Europe/Berlin",
    )


def test_pause_resume_delete(client: CueAPI, server: Server) -> None:
    cue = worker_cue(client, "p", "t")
    keep = worker_cue(client, "keep", "t")
    paused = client.cues.pause(cue.id)
    assert isinstance(paused, cueapi.Cue) and paused.status == "paused"
    assert stored_cue(server, cue.id)["status"] == "paused"
    resumed = client.cues.resume(cue.id)
    assert resumed.status == "active" and resumed.next_run is not None
    assert resumed.next_run > datetime.now(timezone.utc)
    assert stored_cue(server, cue.id)["status"] == "active"

    assert client.cues.delete(cue.id) is None
    assert server.call("GET", f"/v1/cues/{cue.id}").status_code == 404
    assert [c.id for c in client.cues.list().cues] == [keep.id]
    for call in (client.cues.delete, client.cues.pause, client.cues.resume, client.cues.get):
        with pytest.raises(CueNotFoundError):
            call(cue.id)


def test_fire(client: CueAPI, server: Server, stub: Receiver) -> None:
    cue = worker_cue(client, "fired", "sync")
    client.cues.update(cue.id, payload={"task": "sync", "batch": 100})

    plain = client.cues.fire(cue.id)
    assert type(plain) is dict and not isinstance(plain, cueapi.Cue)
    assert plain["id"].startswith("exec_") and plain["cue_id"] == cue.id
    assert (plain["triggered_by"], plain["status"]) == ("manual_fire", "pending")
    assert plain["payload"] == {"task": "sync", "batch": 100}

    merged = client.cues.fire(cue.id, payload_override={"batch": 5, "extra": "ü"}, merge_strategy="merge")
    assert merged["payload"] == {"task": "sync", "batch": 5, "extra": "ü"}
    default = client.cues.fire(cue.id, payload_override={"batch": 6})
    assert default["payload"] == {"task": "sync", "batch": 6}
    replaced = client.cues.fire(cue.id, payload_override={"only": True}, merge_strategy="replace")
    assert replaced["payload"] == {"only": True}
    for ex in (plain, merged, default, replaced):
        assert server.execution(ex["id"])["payload"] == ex["payload"]

    # send_at in the future: the execution waits for it, and is not claimable yet.
    send_at = (datetime.now(timezone.utc) + timedelta(hours=2)).replace(microsecond=0)
    later = client.cues.fire(cue.id, send_at=send_at)
    assert instant(later["scheduled_for"]) == send_at and later["status"] == "pending"
    claimable = {e["execution_id"] for e in client.executions.list_claimable()["executions"]}
    assert later["id"] not in claimable and plain["id"] in claimable

    # The same idempotency key twice: the same execution, and only one more in the history.
    count = server.call("GET", "/v1/executions", params={"cue_id": cue.id}).json()["total"]
    once = client.cues.fire(cue.id, idempotency_key="nightly-2026-11-28")
    again = client.cues.fire(cue.id, idempotency_key="nightly-2026-11-28")
    assert once["id"] == again["id"]
    assert server.call("GET", "/v1/executions", params={"cue_id": cue.id}).json()["total"] == count + 1

    # A webhook cue's fire is delivered with the merged payload.
    hook = client.cues.create("hooked", cron="0 0 1 1 *", callback=stub.url, payload={"a": 1})
    ex = client.cues.fire(hook.id, payload_override={"b": 2})
    [got] = stub.wait(1)
    assert got.headers["x-cueapi-execution-id"] == ex["id"] and got.json()["payload"] == {"a": 1, "b": 2}

    with pytest.raises(CueNotFoundError):
        client.cues.fire("cue_missing")
    with pytest.raises(InvalidScheduleError) as info:
        client.cues.fire(cue.id, merge_strategy="deep")
    assert info.value.status_code == 422 and info.value.field == "body.merge_strategy"


def test_bulk_delete(client: CueAPI, server: Server) -> None:
    kept, one, two = (worker_cue(client, name, "t") for name in ("kept", "one", "two"))
    fired = client.cues.fire(one.id)
    other_key, _ = server.register("other@example.com")
    theirs = server.call(
        "POST",
        "/v1/cues",
        {"name": "theirs", "transport": "worker", "schedule": {"type": "once", "at": "2099-01-01T00:00:00Z"}},
        key=other_key,
    ).json()
    # Client-side limits, checked before any request.
    with pytest.raises(ValueError, match="at least one"):
        client.cues.bulk_delete([])
    with pytest.raises(ValueError, match="Max 100 IDs"):
        client.cues.bulk_delete([f"cue_{n}" for n in range(101)])
    assert server.call("GET", f"/v1/cues/{one.id}").status_code == 200

    # Each cue of the caller goes with its history; unknown ids, another user's cue and a repeat
    # are skipped. Both lists keep the order of the request.
    out = client.cues.bulk_delete([two.id, "cue_missing", one.id, theirs["id"], two.id])
    assert out == {"deleted": [two.id, one.id], "skipped": ["cue_missing", theirs["id"], two.id]}
    assert [c.id for c in client.cues.list().cues] == [kept.id]
    assert server.call("GET", f"/v1/executions/{fired['id']}").status_code == 404
    assert server.call("GET", f"/v1/cues/{theirs['id']}", key=other_key).status_code == 200
    # Nothing of the caller's left to delete: everything is skipped, nothing changes.
    assert client.cues.bulk_delete([one.id]) == {"deleted": [], "skipped": [one.id]}
    assert [c.id for c in client.cues.list().cues] == [kept.id]


# -- executions ------------------------------------------------------------------------------------


def test_claim_cycle(client: CueAPI, server: Server) -> None:
    etl = worker_cue(client, "etl", "etl")
    report = worker_cue(client, "report", "report")
    e1 = client.cues.fire(etl.id)
    e2 = client.cues.fire(report.id)

    listed = client.executions.list_claimable()
    assert [e["execution_id"] for e in listed["executions"]] == [e1["id"], e2["id"]]  # oldest first
    first = listed["executions"][0]
    assert (first["cue_id"], first["task"], first["payload"]) == (etl.id, "etl", {"task": "etl"})
    assert [e["execution_id"] for e in client.executions.list_claimable(task="report")["executions"]] == [
        e2["id"]
    ]
    assert [e["execution_id"] for e in client.executions.list_claimable(limit=1)["executions"]] == [e1["id"]]
    # A worker that handles only etl sees only etl.
    hb = client.workers.heartbeat("w-etl", handlers=["etl"])
    assert hb["acknowledged"] is True and hb["worker_id"] == "w-etl"
    mine = client.executions.list_claimable(worker_id="w-etl")["executions"]
    assert [e["execution_id"] for e in mine] == [e1["id"]]

    claimed = client.executions.claim(e1["id"], worker_id="w-etl")
    assert claimed["claimed"] is True and claimed["execution_id"] == e1["id"] and claimed["task"] == "etl"
    assert claimed["lease_seconds"] > 0
    assert server.execution(e1["id"])["attempt_log"][-1]["claimed_by"] == "w-etl"
    assert [e["execution_id"] for e in client.executions.list_claimable()["executions"]] == [e2["id"]]

    # Someone else cannot have it: a 409, the client's ConflictError (a CueAPIError).
    with pytest.raises(ConflictError) as conflict:
        client.executions.claim(e1["id"], worker_id="w-other")
    assert conflict.value.status_code == 409 and conflict.value.code == "claim_failed"
    assert isinstance(conflict.value, CueAPIError)

    beat = client.executions.heartbeat(e1["id"], worker_id="w-etl")
    assert beat["acknowledged"] is True and beat["execution_id"] == e1["id"]
    assert instant(beat["lease_extended_until"]) >= instant(claimed["lease_expires_at"])
    assert client.executions.heartbeat(e1["id"])["acknowledged"] is True  # no worker id: no check
    # The holder's id is checked: another worker's heartbeat is refused (403).
    with pytest.raises(CueLimitExceededError) as refused:
        client.executions.heartbeat(e1["id"], worker_id="w-other")
    assert refused.value.status_code == 403 and refused.value.code == "not_execution_owner"
    with pytest.raises(ExecutionNotFoundError):
        client.executions.heartbeat("exec_missing", worker_id="w-etl")


def test_claim_next(client: CueAPI, server: Server) -> None:
    etl = worker_cue(client, "etl", "etl")
    report = worker_cue(client, "report", "report")
    r1 = client.cues.fire(report.id)
    a1 = client.cues.fire(etl.id)
    a2 = client.cues.fire(etl.id)

    # With a task: the oldest of that task, then the next, then the SDK's "nothing" dict.
    got = client.executions.claim_next(worker_id="w1", task="etl")
    assert got["claimed"] is True and got["execution_id"] == a1["id"]
    assert client.executions.claim_next(worker_id="w1", task="etl")["execution_id"] == a2["id"]
    assert client.executions.claim_next(worker_id="w1", task="etl") == {
        "claimed": False,
        "reason": "no_executions_for_task",
        "task": "etl",
    }
    # Without a task: the oldest claimable of any task; then none is a 409.
    got = client.executions.claim_next(worker_id="w2")
    assert got["claimed"] is True and got["execution_id"] == r1["id"] and got["task"] == "report"
    with pytest.raises(ConflictError) as info:
        client.executions.claim_next(worker_id="w2")
    assert info.value.status_code == 409
    claimed_by = {
        e: server.execution(e)["attempt_log"][-1]["claimed_by"] for e in (a1["id"], a2["id"], r1["id"])
    }
    assert claimed_by == {a1["id"]: "w1", a2["id"]: "w1", r1["id"]: "w2"}


def test_outcome_evidence_and_replay(client: CueAPI, server: Server) -> None:
    cue = worker_cue(client, "etl", "etl")
    ex = client.cues.fire(cue.id)
    client.executions.claim(ex["id"], worker_id="w1")
    evidence = {
        "external_id": "batch_002",
        "result_url": "https://example.com/batches/002",
        "result_ref": "s3://bucket/002.csv",
        "result_type": "data_sync",
        "summary": "Synced 847 records",
        "artifacts": [{"kind": "csv", "url": "https://example.com/002.csv"}],
    }
    out = client.executions.report_outcome(
        ex["id"], success=True, result="847 records", metadata={"records": 847, "ratio": 0.5}, **evidence
    )
    assert out["execution_id"] == ex["id"] and out["outcome_recorded"] is True
    assert out["outcome_state"] == "reported_success"

    stored = server.execution(ex["id"])
    assert stored["status"] == "success" and stored["outcome_state"] == "reported_success"
    assert stored["outcome"]["success"] is True and stored["outcome"]["result"] == "847 records"
    assert stored["outcome"]["metadata"] == {"records": 847, "ratio": 0.5}
    assert {k: stored["outcome"][k] for k in evidence} == evidence
    assert {k: stored["evidence"][k] for k in evidence} == evidence
    got = client.executions.get(ex["id"])
    assert type(got) is dict and got == stored
    model = cueapi.Execution.model_validate(got)
    assert model.outcome is not None and model.outcome.result_ref == "s3://bucket/002.csv"
    assert model.evidence is not None and model.evidence.summary == "Synced 847 records"

    # Outcomes are written once: a second report is a 409 and the first one stays.
    with pytest.raises(ConflictError) as info:
        client.executions.report_outcome(ex["id"], success=False, error="late")
    assert info.value.code == "outcome_already_recorded"
    assert server.execution(ex["id"])["outcome"]["success"] is True
    with pytest.raises(ExecutionNotFoundError):
        client.executions.report_outcome("exec_missing", success=True)

    # Evidence can be added afterwards; what was there stays.
    more = client.executions.append_evidence(ex["id"], summary="Synced 848 records", external_id="batch_002b")
    assert more["evidence_updated"] is True and more["execution_id"] == ex["id"]
    now = server.execution(ex["id"])["evidence"]
    assert (now["summary"], now["external_id"], now["result_ref"]) == (
        "Synced 848 records",
        "batch_002b",
        "s3://bucket/002.csv",
    )
    all_fields = client.executions.append_evidence(
        ex["id"],
        result_url="https://example.com/v2",
        result_ref="ref-2",
        result_type="report",
        artifacts=["a.txt"],
        metadata={"k": "v"},
    )
    assert all_fields["evidence_updated"] is True
    now = server.execution(ex["id"])["evidence"]
    assert (now["result_url"], now["result_ref"], now["result_type"], now["metadata"]) == (
        "https://example.com/v2",
        "ref-2",
        "report",
        {"k": "v"},
    )
    assert now["artifacts"] == [*evidence["artifacts"], "a.txt"]  # artifacts are appended
    with pytest.raises(ValueError, match="at least one"):
        client.executions.append_evidence(ex["id"])

    # Replay: a new pending execution of the same cue, claimable again.
    replayed = client.executions.replay(ex["id"])
    assert replayed["id"] != ex["id"] and replayed["triggered_by"] == "replay"
    assert replayed["replay_of"] == ex["id"] and replayed["status"] == "pending"
    assert server.execution(replayed["id"])["cue_id"] == cue.id
    claimable = client.executions.list_claimable()["executions"]
    assert [e["execution_id"] for e in claimable] == [replayed["id"]]
    with pytest.raises(ExecutionNotFoundError):
        client.executions.replay("exec_missing")


def test_verification(client: CueAPI, server: Server) -> None:
    cue = worker_cue(client, "reviewed", "review", verification={"mode": "manual"})
    assert cue.verification is not None and cue.verification.mode == "manual"
    good, bad = client.cues.fire(cue.id), client.cues.fire(cue.id)
    for ex in (good, bad):
        client.executions.claim(ex["id"], worker_id="w")
        # No outcome yet: nothing to verify (409).
        with pytest.raises(ConflictError) as info:
            client.executions.mark_verification_pending(ex["id"])
        assert info.value.code == "no_outcome"
        out = client.executions.report_outcome(ex["id"], success=True, external_id="ticket-" + ex["id"])
        assert out["outcome_state"] == "verification_pending"

    assert client.executions.mark_verification_pending(good["id"]) == {
        "execution_id": good["id"],
        "outcome_state": "verification_pending",
    }
    out = client.executions.mark_verified(good["id"])
    assert out == {
        "execution_id": good["id"],
        "outcome_state": "verified_success",
        "valid": True,
        "reason": None,
    }
    assert server.execution(good["id"])["outcome_state"] == "verified_success"

    out = client.executions.mark_verified(bad["id"], valid=False, reason="numbers do not add up")
    assert out["outcome_state"] == "verification_failed" and out["valid"] is False
    assert out["reason"] == "numbers do not add up"
    stored = server.execution(bad["id"])
    assert stored["outcome_state"] == "verification_failed"
    assert "numbers do not add up" in stored["outcome"]["summary"]
    assert stored["outcome"]["validation_state"] == "invalid"
    # A verdict is final.
    with pytest.raises(ConflictError):
        client.executions.mark_verification_pending(bad["id"])
    with pytest.raises(ExecutionNotFoundError):
        client.executions.mark_verified("exec_missing", valid=True)


@pytest.fixture
def history(tmp_path: Path) -> Iterator[tuple[Server, CueAPI, dict[str, str]]]:
    """A server on a manual clock with seven executions of two worker cues, three days apart:

    ===== ======= ====================================== ============ ===========
    name  cue     outcome                                scheduled    trigger
    ===== ======= ====================================== ============ ===========
    a1    A       success, evidence (result_type report) START        manual_fire
    a2    A       failure (no retries: failed)           START        manual_fire
    a3    A       none (pending)                         START+3d     manual_fire
    b1    B       success, evidence (data_sync)          START+3d     manual_fire
    b2    B       success, no evidence                   START+3d     manual_fire
    r     A       none (pending)                         START+3d     replay of a1
    ===== ======= ====================================== ============ ===========
    """
    clock = cueapi.ManualClock(START)
    server = start_server(tmp_path / "history.db", clock)
    client = CueAPI(server.key, base_url=server.url)
    no_retry = {"max_attempts": 0, "backoff_minutes": [1]}
    a = worker_cue(client, "A", "a", retry=no_retry)
    b = worker_cue(client, "B", "b", retry=no_retry)
    ids: dict[str, str] = {"A": a.id, "B": b.id}

    def run(name: str, cue: cueapi.Cue, **outcome: Any) -> None:
        ids[name] = client.cues.fire(cue.id)["id"]
        if outcome:
            client.executions.claim(ids[name], worker_id="w")
            client.executions.report_outcome(ids[name], **outcome)

    run("a1", a, success=True, result_type="report", external_id="r-1")
    run("a2", a, success=False, error="boom")
    clock.advance(3 * 86_400)
    run("a3", a)
    run("b1", b, success=True, result_type="data_sync", result_url="https://example.com/b1")
    run("b2", b, success=True, result="plain")
    ids["r"] = client.executions.replay(ids["a1"])["id"]
    yield server, client, ids
    client.close()
    server.app.close()


def test_list_filters(history: tuple[Server, CueAPI, dict[str, str]]) -> None:
    _, client, ids = history

    def names(**filters: Any) -> set[str]:
        page = client.executions.list(limit=100, **filters)
        got = {e["id"] for e in page["executions"]}
        assert page["total"] == len(got), (filters, page["total"], got)
        return {n for n, i in ids.items() if i in got}

    everything = {"a1", "a2", "a3", "b1", "b2", "r"}
    assert names() == everything
    assert names(status="all") == everything
    assert names(cue_id=ids["A"]) == {"a1", "a2", "a3", "r"}
    assert names(status="success") == {"a1", "b1", "b2"}
    assert names(status="failed") == {"a2"}
    assert names(status=["failed", "pending"]) == {"a2", "a3", "r"}
    assert names(status=("success",), cue_id=ids["B"]) == {"b1", "b2"}
    assert names(outcome_state="reported_failure") == {"a2"}
    assert names(outcome_state="reported_success") == {"a1", "b1", "b2"}
    assert names(triggered_by="manual_fire") == everything - {"r"}
    assert names(triggered_by="replay") == {"r"}
    assert names(has_evidence=True) == {"a1", "b1"}
    assert names(has_evidence=False) == everything - {"a1", "b1"}
    assert names(result_type="report") == {"a1"}
    assert names(result_type="data_sync") == {"b1"}
    assert names(days=1) == {"a3", "b1", "b2", "r"}
    assert names(days=7.0) == everything
    since = START + timedelta(days=1)
    assert names(since=since) == {"a3", "b1", "b2", "r"}
    assert names(since=since.isoformat()) == {"a3", "b1", "b2", "r"}
    assert names(since=since.replace(tzinfo=None)) == {"a3", "b1", "b2", "r"}  # naive is UTC
    assert names(since=START - timedelta(days=1)) == everything
    assert names(cue_id=ids["A"], status="success", has_evidence=True, days=7) == {"a1"}

    # Paging: limit and offset, newest first, total unchanged.
    full = client.executions.list(limit=100)
    order = [e["id"] for e in full["executions"]]
    pages = [client.executions.list(limit=4, offset=o) for o in (0, 4)]
    assert [e["id"] for p in pages for e in p["executions"]] == order
    assert [(p["total"], p["limit"], p["offset"]) for p in pages] == [(6, 4, 0), (6, 4, 4)]
    default = client.executions.list()
    assert (default["limit"], default["offset"]) == (20, 0)

    # Filters the server refuses are the SDK's InvalidScheduleError with the field named.
    with pytest.raises(InvalidScheduleError) as info:
        client.executions.list(status="exploded")
    assert info.value.field == "query.status"
    with pytest.raises(ValueError, match="since or days"):
        client.executions.list(days=1, since=START)


def test_iter_pages_to_the_end(history: tuple[Server, CueAPI, dict[str, str]]) -> None:
    _, client, ids = history
    expected = [e["id"] for e in client.executions.list(limit=100)["executions"]]
    got = list(client.executions.iter(page_size=1))
    assert all(isinstance(e, cueapi.Execution) for e in got)
    assert [e.id for e in got] == expected and len(expected) == 6
    # With filters, as list takes them.
    assert [e.id for e in client.executions.iter(cue_id=ids["B"], page_size=1)] == [
        i for i in expected if i in (ids["b1"], ids["b2"])
    ]
    assert {e.id for e in client.executions.iter(status=["pending", "failed"], days=7, page_size=2)} == {
        ids["a2"],
        ids["a3"],
        ids["r"],
    }

    # An execution created while paging pushes the others one place down: the one seen already
    # comes back on the next page and is not yielded twice; nothing is missed.
    pages = client.executions.iter(page_size=1)
    first = next(pages)
    newer = client.cues.fire(ids["B"])["id"]
    rest = [e.id for e in pages]
    seen = [first.id, *rest]
    assert len(seen) == len(set(seen))
    assert set(expected) <= set(seen)
    assert set(seen) <= {*expected, newer}
    with pytest.raises(ValueError, match="page_size"):
        next(iter(client.executions.iter(page_size=0)))


def test_handle_reports_success_and_failure(client: CueAPI, server: Server) -> None:
    cue = worker_cue(client, "handled", "h", retry={"max_attempts": 0, "backoff_minutes": [1]})
    ok, failing, silent = (client.cues.fire(cue.id)["id"] for _ in range(3))

    with client.executions.handle(ok, {"task": "h"}) as ctx:
        assert isinstance(ctx, cueapi.ExecutionContext)
        assert (ctx.execution_id, ctx.payload) == (ok, {"task": "h"})
        ctx.result = {"rows": 3}
        ctx.evidence = {"external_id": "job-9", "summary": "three rows", "result_type": "table"}
    stored = server.execution(ok)
    assert stored["status"] == "success" and stored["outcome_state"] == "reported_success"
    assert stored["outcome"]["result"] == "{'rows': 3}"
    assert (
        stored["evidence"]["external_id"],
        stored["evidence"]["summary"],
        stored["evidence"]["result_type"],
    ) == (
        "job-9",
        "three rows",
        "table",
    )

    with pytest.raises(RuntimeError, match="disk full"), client.executions.handle(failing) as ctx:
        assert ctx.payload == {}
        raise RuntimeError("disk full on /var " + "x" * 3000)
    stored = server.execution(failing)
    assert stored["status"] == "failed" and stored["outcome_state"] == "reported_failure"
    assert stored["outcome"]["success"] is False
    assert (
        stored["outcome"]["error"].startswith("disk full on /var") and len(stored["outcome"]["error"]) == 2000
    )

    with client.executions.handle(silent):
        pass
    stored = server.execution(silent)
    assert stored["outcome"]["success"] is True and stored["outcome"]["result"] is None


# -- workers, usage, account, raw requests -------------------------------------------------------


def test_workers(client: CueAPI, server: Server) -> None:
    out = client.workers.heartbeat("w-1", handlers=["etl", "report"])
    assert out["acknowledged"] is True and out["worker_id"] == "w-1" and out["server_time"]
    client.workers.heartbeat("w-2")
    listed = client.workers.list()
    assert listed["total"] == 2 and {w["worker_id"] for w in listed["workers"]} == {"w-1", "w-2"}
    w1 = cueapi.WorkerList.model_validate(listed).workers
    by_id = {w.worker_id: w for w in w1}
    assert by_id["w-1"].handlers == ["etl", "report"] and by_id["w-1"].last_heartbeat is not None

    # Deleting a worker puts its claims back in the queue.
    cue = worker_cue(client, "etl", "etl")
    ex = client.cues.fire(cue.id)
    client.executions.claim(ex["id"], worker_id="w-1")
    assert client.executions.list_claimable()["executions"] == []
    assert client.workers.delete("w-1") is None
    assert [w["worker_id"] for w in server.call("GET", "/v1/workers").json()["workers"]] == ["w-2"]
    assert [e["execution_id"] for e in client.executions.list_claimable()["executions"]] == [ex["id"]]
    with pytest.raises(CueNotFoundError) as info:
        client.workers.delete("w-1")
    assert info.value.code == "worker_not_found"


def test_usage(client: CueAPI) -> None:
    cue = worker_cue(client, "u", "t")
    worker_cue(client, "v", "t")
    client.cues.pause(cue.id)
    client.cues.fire(cue.id)
    usage = client.usage.get()
    assert usage["cues"]["active"] == 1 and usage["cues"]["total"] == 2 and usage["cues"]["paused"] == 1
    assert usage["executions"]["used"] == 1
    assert usage["plan"] == "self-hosted"


def test_auth(client: CueAPI, server: Server) -> None:
    me = client.auth.me()
    assert me["email"] == "owner@example.com" and server.key.startswith(me["api_key_prefix"])

    assert client.auth.webhook_secret() == {"webhook_secret": server.secret}
    rotated = client.auth.regenerate_webhook_secret()
    assert rotated["webhook_secret"].startswith("whsec_") and rotated["webhook_secret"] != server.secret
    assert client.auth.webhook_secret()["webhook_secret"] == rotated["webhook_secret"]

    new = client.auth.regenerate_key()
    assert new["api_key"].startswith("cue_sk_") and new["api_key"] != server.key
    # The old key stops working at once; the new one works.
    with pytest.raises(AuthenticationError):
        client.auth.me()
    assert server.call("GET", "/v1/auth/me").status_code == 401
    with CueAPI(new["api_key"], base_url=server.url) as renewed:
        assert renewed.auth.me()["email"] == "owner@example.com"


def test_request(client: CueAPI) -> None:
    info = client.request("GET", "/v1/info")
    assert info["server"] == "cueapi"
    token = "client-request-token-1"
    assert client.request("GET", f"/v1/echo/{token}")["status"] == "waiting"
    client.request("post", f"/v1/echo/{token}", json={"hello": "wörld"}, headers={"X-Extra": "1"})
    echoed = client.request("GET", f"/v1/echo/{token}")
    assert echoed["status"] == "delivered" and echoed["payload"] == {"hello": "wörld"}
    page = client.request("GET", "/v1/cues", params={"limit": 3})
    assert page["limit"] == 3
    # Errors map as for every other call; a bad method or path is refused before sending.
    with pytest.raises(CueNotFoundError) as nf:
        client.request("GET", "/v1/nothing-here")
    assert nf.value.code == "not_found"
    with pytest.raises(ValueError, match="method"):
        client.request("GE T", "/v1/info")
    with pytest.raises(ValueError, match="path"):
        client.request("GET", "v1/info")


# -- the exact requests ----------------------------------------------------------------------------


def test_requests_send_only_what_is_given(stub: Receiver) -> None:
    script(stub, reply(200, CUE_JSON))
    with stub_client(stub) as c:
        c.cues.create("n", cron="0 9 * * *", callback="https://example.com/run")
        c.cues.create("w", at="2031-01-01T00:00:00Z", transport="worker", payload={"k": "é"})
        c.cues.update("cue_1", name="x")
        c.cues.update("cue_1", callback="https://example.com/2", cron="5 * * * *", timezone="Asia/Tokyo")
        c.cues.pause("cue_1")
        c.cues.resume("cue_1")
        script(stub, reply(200, {"cues": [], "total": 0, "limit": 20, "offset": 0}))
        c.cues.list()
        c.cues.list(limit=5, offset=10, status="paused")
        script(stub, reply(200, {"executions": [], "total": 0, "limit": 20, "offset": 0}))
        c.executions.list()
        c.executions.list(cue_id="", status="", outcome_state="", triggered_by="")  # falsy: not sent
        c.executions.list(status=["pending", "failed"], has_evidence=False, result_type="r", days=3)
        c.executions.list(cue_id="cue_1", status="success", since=datetime(2030, 1, 2, 3, 4, 5))
        script(stub, reply(200, {"ok": True}))
        c.executions.report_outcome("exec_1", success=False)
        c.executions.report_outcome(
            "exec_1",
            success=True,
            result="r",
            error="e",
            metadata={"m": 1},
            external_id="x",
            result_url="https://u",
            result_ref="ref",
            result_type="t",
            summary="s",
            artifacts=[1],
        )
        c.executions.mark_verified("exec_1")
        c.executions.mark_verified("exec_1", valid=False, reason="why")
        c.executions.mark_verification_pending("exec_1")
        c.executions.heartbeat("exec_1")
        c.executions.heartbeat("exec_1", worker_id="w-9")
        c.executions.replay("exec_1")
        c.executions.claim("exec_1", worker_id="w-9")
        c.executions.append_evidence("exec_1", summary="s2")
        c.workers.heartbeat("w-9", handlers=["a"])
    got = stub.requests
    sent = [(r.method, path(r), r.body) for r in got]
    assert sent == [
        (
            "POST",
            "/v1/cues",
            b'{"name":"n","schedule":{"type":"recurring","cron":"0 9 * * *","timezone":"UTC"},'
            b'"transport":"webhook","payload":{},"callback":{"url":"https://example.com/run","method":"POST"}}',
        ),
        (
            "POST",
            "/v1/cues",
            b'{"name":"w","schedule":{"type":"once","at":"2031-01-01T00:00:00Z","timezone":"UTC"},'
            b'"transport":"worker","payload":{"k":"\\u00e9"}}',
        ),
        ("PATCH", "/v1/cues/cue_1", b'{"name":"x"}'),
        (
            "PATCH",
            "/v1/cues/cue_1",
            b'{"schedule":{"type":"recurring","cron":"5 * * * *","timezone":"Asia/Tokyo"},'
            b'"callback":{"url":"https://example.com/2"}}',
        ),
        ("PATCH", "/v1/cues/cue_1", b'{"status":"paused"}'),
        ("PATCH", "/v1/cues/cue_1", b'{"status":"active"}'),
        ("GET", "/v1/cues", b""),
        ("GET", "/v1/cues", b""),
        ("GET", "/v1/executions", b""),
        ("GET", "/v1/executions", b""),
        ("GET", "/v1/executions", b""),
        ("GET", "/v1/executions", b""),
        ("POST", "/v1/executions/exec_1/outcome", b'{"success":false}'),
        (
            "POST",
            "/v1/executions/exec_1/outcome",
            b'{"success":true,"result":"r","error":"e","metadata":{"m":1},"external_id":"x",'
            b'"result_url":"https://u","result_ref":"ref","result_type":"t","summary":"s","artifacts":[1]}',
        ),
        ("POST", "/v1/executions/exec_1/verify", b'{"valid":true}'),
        ("POST", "/v1/executions/exec_1/verify", b'{"valid":false,"reason":"why"}'),
        ("POST", "/v1/executions/exec_1/verification-pending", b"{}"),
        ("POST", "/v1/executions/exec_1/heartbeat", b"{}"),
        ("POST", "/v1/executions/exec_1/heartbeat", b"{}"),
        ("POST", "/v1/executions/exec_1/replay", b"{}"),
        ("POST", "/v1/executions/exec_1/claim", b'{"worker_id":"w-9"}'),
        ("PATCH", "/v1/executions/exec_1/evidence", b'{"summary":"s2"}'),
        ("POST", "/v1/worker/heartbeat", b'{"worker_id":"w-9","handlers":["a"]}'),
    ]
    assert [query(r) for r in got[6:12]] == [
        {"limit": ["20"], "offset": ["0"]},
        {"limit": ["5"], "offset": ["10"], "status": ["paused"]},
        {"limit": ["20"], "offset": ["0"]},
        {"limit": ["20"], "offset": ["0"]},
        {
            "limit": ["20"],
            "offset": ["0"],
            "status__in": ["pending,failed"],
            "has_evidence": ["false"],
            "result_type": ["r"],
            "days": ["3"],
        },
        {
            "limit": ["20"],
            "offset": ["0"],
            "cue_id": ["cue_1"],
            "status": ["success"],
            "since": ["2030-01-02T03:04:05+00:00"],
        },
    ]
    for r in got:
        assert r.headers["authorization"] == f"Bearer {STUB_KEY}"
        assert r.headers["user-agent"] == f"cueapi-python/{cueapi.__version__}"
        if r.body:
            assert r.headers["content-type"] == "application/json"
    # The worker id goes in X-Worker-Id only when given (the official SDK never sends it).
    beats = [r for r in got if path(r).endswith("/heartbeat") and path(r).startswith("/v1/executions")]
    assert ["x-worker-id" in r.headers for r in beats] == [False, True] and beats[1].headers[
        "x-worker-id"
    ] == "w-9"


def test_fire_request_and_verify_echo_header(stub: Receiver) -> None:
    script(stub, reply(200, EXEC_JSON))
    when = datetime(2030, 1, 1, 12, tzinfo=timezone.utc)
    with stub_client(stub) as c:
        c.cues.fire("cue_1")
        c.cues.fire(
            "cue_1",
            payload_override={"a": 1},
            merge_strategy="replace",
            send_at=when,
            exit_criteria=[],
            idempotency_key="key-1",
        )
        c.cues.fire("cue_1", auto_verify=False)
    plain, full, unverified = stub.requests
    assert (plain.method, path(plain), plain.body) == ("POST", "/v1/cues/cue_1/fire", b"{}")
    assert plain.headers["x-cueapi-verify-echo"] == "true" and full.headers["x-cueapi-verify-echo"] == "true"
    assert full.body == (
        b'{"payload_override":{"a":1},"merge_strategy":"replace","send_at":"2030-01-01T12:00:00+00:00",'
        b'"exit_criteria":[],"idempotency_key":"key-1"}'
    )
    assert "idempotency-key" not in full.headers  # a body field, not a header
    assert "x-cueapi-verify-echo" not in unverified.headers and unverified.body == b"{}"


def test_fire_body_verify_mismatch(stub: Receiver) -> None:
    sent = b'{"payload_override":{"note":"pre $(echo INJ) post"}}'
    override = {"note": "pre $(echo INJ) post"}
    altered = '{"payload_override":{"note":"pre INJ post"}}'
    with stub_client(stub) as c:
        script(stub, reply(200, {**EXEC_JSON, "id": "exec_echo", "body_received": altered}))
        with pytest.raises(BodyVerifyMismatchError) as info:
            c.cues.fire("cue_1", payload_override=override)
        e = info.value
        assert stub.requests[-1].body == sent
        assert isinstance(e, CueAPIError) and e.status_code is None
        assert (e.sent_body, e.received_body, e.message_id) == (sent.decode(), altered, "exec_echo")
        assert e.first_divergence_byte == sent.decode().index("$") == 33
        assert "first divergence at byte 33" in str(e)
        assert repr(e) == (
            f"BodyVerifyMismatchError(message_id='exec_echo', first_divergence_byte=33, "
            f"sent_len={len(sent)}, received_len={len(altered)})"
        )

        # A received body that is a prefix of the sent one diverges where it ends.
        script(stub, reply(200, {**EXEC_JSON, "body_received": sent.decode()[:20]}))
        with pytest.raises(BodyVerifyMismatchError) as info:
            c.cues.fire("cue_1", payload_override=override)
        assert info.value.first_divergence_byte == 20

        # The same body echoed back, as a string or as JSON, or a matching SHA-256: no error.
        for echo in (
            {"body_received": sent.decode()},
            {"body_received": json.loads(sent)},
            {"body_received": altered, "body_received_sha256": hashlib.sha256(sent).hexdigest()},
            {},  # a server without the echo: nothing to check
        ):
            script(stub, reply(200, {**EXEC_JSON, **echo}))
            assert c.cues.fire("cue_1", payload_override=override)["id"] == "exec_stub"

        # With auto_verify=False, a differing echo is not checked.
        script(stub, reply(200, {**EXEC_JSON, "body_received": altered}))
        out = c.cues.fire("cue_1", payload_override=override, auto_verify=False)
        assert out["body_received"] == altered


def test_bulk_delete_request(stub: Receiver) -> None:
    # What the SDK sends, for a server that has the route (the hosted one; ours later).
    script(stub, reply(200, {"deleted": ["cue_a"], "skipped": ["cue_b"]}))
    with stub_client(stub) as c:
        assert c.cues.bulk_delete(("cue_a", "cue_b")) == {"deleted": ["cue_a"], "skipped": ["cue_b"]}
        assert c.cues.bulk_delete([f"cue_{n}" for n in range(100)])["deleted"] == ["cue_a"]  # 100 is allowed
    first = stub.requests[0]
    assert (first.method, path(first), first.body) == (
        "POST",
        "/v1/cues/bulk-delete",
        b'{"ids":["cue_a","cue_b"]}',
    )
    assert first.headers["x-confirm-destructive"] == "true"
    assert len(stub.requests[1].json()["ids"]) == 100


def test_messaging_requests(server: Server, stub: Receiver) -> None:
    """The hosted service's agents and messages (``cueapi serve`` has neither: 404 there)."""
    with CueAPI(server.key, base_url=server.url) as live:
        with pytest.raises(CueNotFoundError):
            live.agents.list()
        with pytest.raises(CueNotFoundError):
            live.messages.get("msg_1")
    script(stub, reply(200, {"id": "msg_1", "body_received": "hello"}))
    with stub_client(stub) as c:
        sent = c.messages.send(
            from_agent="planner@me",
            to="writer@me",
            body="hello",
            priority=2,
            expects_reply=True,
            idempotency_key="k",
        )
        assert sent["id"] == "msg_1"
        c.messages.send(from_agent="planner@me", to="writer@me", body="hello", auto_verify=False)
        script(stub, reply(200, {"id": "msg_2", "body_received": {"body": "hel$lo"}}))
        with pytest.raises(BodyVerifyMismatchError) as info:
            c.messages.send(from_agent="planner@me", to="writer@me", body="hello")
        assert (info.value.message_id, info.value.first_divergence_byte) == ("msg_2", 3)
        with pytest.raises(ValueError, match="255"):
            c.messages.send(from_agent="a", to="b", body="c", idempotency_key="k" * 256)
        script(stub, reply(200, {"ok": True}))
        c.messages.mark_read("msg_1")
        c.messages.ack("msg_1")
        c.agents.create(display_name="Writer", slug="writer")
        c.agents.list(include_deleted=True)
        c.agents.update("writer", clear_webhook_url=True)
        with pytest.raises(ValueError, match="mutually exclusive"):
            c.agents.update("writer", webhook_url="https://x", clear_webhook_url=True)
        c.agents.roster(if_none_match='"v1"')
        c.agents.webhook_secret_regenerate("writer")
        c.agents.events_pull("writer", since=5)
    got = [(r.method, r.path, r.body) for r in stub.requests]
    assert got == [
        ("POST", "/v1/messages", b'{"to":"writer@me","body":"hello","priority":2,"expects_reply":true}'),
        ("POST", "/v1/messages", b'{"to":"writer@me","body":"hello"}'),
        ("POST", "/v1/messages", b'{"to":"writer@me","body":"hello"}'),
        ("POST", "/v1/messages/msg_1/read", b"{}"),
        ("POST", "/v1/messages/msg_1/ack", b"{}"),
        ("POST", "/v1/agents", b'{"display_name":"Writer","slug":"writer"}'),
        ("GET", "/v1/agents?limit=50&offset=0&include_deleted=true", b""),
        ("PATCH", "/v1/agents/writer", b'{"webhook_url":null}'),
        ("GET", "/v1/agents/roster", b""),
        ("POST", "/v1/agents/writer/webhook-secret/regenerate", b"{}"),
        ("GET", "/v1/agents/writer/events?limit=100&since=5", b""),
    ]
    first, unverified = stub.requests[0].headers, stub.requests[1].headers
    assert (first["x-cueapi-from-agent"], first["idempotency-key"], first["x-cueapi-verify-echo"]) == (
        "planner@me",
        "k",
        "true",
    )
    assert "x-cueapi-verify-echo" not in unverified and "idempotency-key" not in unverified
    assert stub.requests[8].headers["if-none-match"] == '"v1"'
    assert stub.requests[9].headers["x-confirm-destructive"] == "true"


def test_claim_next_with_a_task_passes_over_lost_races(stub: Receiver) -> None:
    def answer(r: Received) -> Answer:
        if path(r) == "/v1/executions/claimable":
            task = query(r)["task"][0]
            items = [{"execution_id": "exec_a"}, {"execution_id": "exec_b"}] if task == "busy" else []
            return reply(200, {"executions": items})
        if path(r) == "/v1/executions/exec_a/claim":  # another worker was first
            return reply(409, {"error": {"code": "claim_failed", "message": "taken"}})
        return reply(200, {"claimed": True, "execution_id": path(r).split("/")[3]})

    stub.answer = answer
    with stub_client(stub) as c:
        assert c.executions.claim_next(worker_id="w", task="idle") == {
            "claimed": False,
            "reason": "no_executions_for_task",
            "task": "idle",
        }
        assert [(r.method, r.path) for r in stub.requests] == [("GET", "/v1/executions/claimable?task=idle")]
        assert c.executions.claim_next(worker_id="w", task="busy") == {
            "claimed": True,
            "execution_id": "exec_b",
        }
    assert [(r.method, path(r), r.body) for r in stub.requests[1:]] == [
        ("GET", "/v1/executions/claimable", b""),
        ("POST", "/v1/executions/exec_a/claim", b'{"worker_id":"w"}'),
        ("POST", "/v1/executions/exec_b/claim", b'{"worker_id":"w"}'),
    ]


# -- errors ----------------------------------------------------------------------------------------


def test_errors_from_the_live_server(client: CueAPI, server: Server) -> None:
    cue = worker_cue(client, "taken", "t")

    with (
        CueAPI("cue_sk_" + "0" * 32, base_url=server.url) as stranger,
        pytest.raises(AuthenticationError) as auth,
    ):
        stranger.cues.list()
    e = auth.value
    assert (e.status, e.status_code, e.code, e.message) == (401, 401, "invalid_api_key", "Invalid API key")
    error = {"code": "invalid_api_key", "message": "Invalid API key", "status": 401}
    assert e.body == {"error": error, "detail": {"error": error}}
    assert (
        str(e) == "Invalid API key"
        and repr(e) == "AuthenticationError(message='Invalid API key', status_code=401)"
    )

    with pytest.raises(CueNotFoundError) as nf:
        client.cues.update("cue_missing", name="ghost")
    assert type(nf.value) is CueNotFoundError and (nf.value.status, nf.value.code) == (404, "cue_not_found")
    assert isinstance(nf.value, LookupError)
    with pytest.raises(ExecutionNotFoundError) as enf:
        client.executions.get("exec_missing")
    assert isinstance(enf.value, CueNotFoundError) and enf.value.code == "execution_not_found"
    assert enf.value.message == "Execution not found" and enf.value.status_code == 404

    with pytest.raises(ConflictError) as dup:
        worker_cue(client, "taken", "t")
    assert (dup.value.status, dup.value.code) == (409, "duplicate_cue_name") and isinstance(
        dup.value, CueAPIError
    )
    assert "taken" in dup.value.message

    with pytest.raises(InvalidScheduleError) as bad_cron:
        client.cues.create("bad-cron", cron="61 * * * *", transport="worker")
    e = bad_cron.value
    assert (e.status, e.code, e.field) == (400, "invalid_schedule", "schedule")
    assert isinstance(e, ValueError) and "61 * * * *" in e.message
    with pytest.raises(InvalidScheduleError) as bad_tz:
        client.cues.create("bad-tz", cron="0 * * * *", timezone="Mars/Olympus", transport="worker")
    e = bad_tz.value
    assert (e.status, e.code, e.field) == (422, "invalid_timezone", "body.schedule.timezone")
    assert e.body["error"]["details"] == [
        {"field": "body.schedule.timezone", "message": 'Unknown timezone: "Mars/Olympus"'}
    ]
    with pytest.raises(InvalidScheduleError) as bad_update:
        client.cues.update(cue.id, cron="0 0 31 2 *")
    assert bad_update.value.code == "invalid_schedule"

    # None of that changed anything.
    assert [c.name for c in client.cues.list().cues] == ["taken"]
    assert stored_cue(server, cue.id)["schedule"]["cron"] == "0 0 1 1 *"


def test_rate_limit_from_the_live_server(tmp_path: Path) -> None:
    server = start_server(tmp_path / "limited.db", rate_limit_per_minute=2)
    try:
        with CueAPI(server.key, base_url=server.url, max_retries=0) as client:
            with pytest.raises(RateLimitError) as info:
                for _ in range(5):
                    client.cues.list()
            e = info.value
            assert (e.status, e.code) == (429, "rate_limit_exceeded")
            assert isinstance(e.retry_after, int) and 1 <= e.retry_after <= 60
            assert f"{e.retry_after} seconds" in e.message
    finally:
        server.app.close()


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, InvalidScheduleError),
        (401, AuthenticationError),
        (403, CueLimitExceededError),
        (404, CueNotFoundError),
        (409, ConflictError),
        (418, CueAPIError),
        (422, InvalidScheduleError),
        (429, RateLimitError),
        (500, CueAPIServerError),
        (502, CueAPIServerError),
        (503, CueAPIServerError),
        (504, CueAPIServerError),
    ],
)
def test_error_class_by_status(stub: Receiver, status: int, cls: type[CueAPIError]) -> None:
    body = {"error": {"code": "some_code", "message": "it went wrong", "details": [{"field": "body.x"}]}}
    script(stub, reply(status, body))
    with stub_client(stub, max_retries=0) as c, pytest.raises(CueAPIError) as info:
        c.cues.get("cue_1")
    e = info.value
    assert type(e) is cls
    assert (e.status, e.status_code, e.code, e.message, e.body) == (
        status,
        status,
        "some_code",
        "it went wrong",
        body,
    )
    assert len(stub.requests) == 1


def test_error_bodies_that_are_not_the_usual_shape(stub: Receiver) -> None:
    with stub_client(stub, max_retries=0) as c:
        script(stub, reply(500, b"<html>upstream broke</html>", {"Content-Type": "text/html"}))
        with pytest.raises(CueAPIServerError) as info:
            c.cues.list()
        assert info.value.code == "unknown" and "upstream broke" in info.value.message
        assert info.value.body == {"error": {"message": "<html>upstream broke</html>", "code": "unknown"}}
        script(stub, reply(422, {"detail": "name is required"}))  # FastAPI's shape
        with pytest.raises(InvalidScheduleError) as invalid:
            c.cues.list()
        assert invalid.value.message == "name is required" and invalid.value.field is None
        script(stub, reply(200, b"not json", {"Content-Type": "text/plain"}))
        with pytest.raises(CueAPIServerError, match="not JSON") as garbled:
            c.cues.list()
        assert garbled.value.code == "invalid_response" and garbled.value.status_code == 200


# -- retries ---------------------------------------------------------------------------------------


def test_503_with_retry_after_is_retried_for_any_method(stub: Receiver) -> None:
    busy = reply(503, {"error": {"code": "busy", "message": "busy"}}, {"Retry-After": "0"})
    with stub_client(stub) as c:
        script(stub, busy, reply(201, CUE_JSON))
        assert c.cues.create("n", cron="0 9 * * *", transport="worker").id == "cue_stub"
        script(stub, busy, reply(200, CUE_JSON))
        assert c.cues.get("cue_stub").id == "cue_stub"
        script(stub, busy, reply(200, {"execution_id": "exec_1"}))
        assert c.executions.report_outcome("exec_1", success=True) == {"execution_id": "exec_1"}
    assert [(r.method, path(r)) for r in stub.requests] == [
        ("POST", "/v1/cues"),
        ("POST", "/v1/cues"),
        ("GET", "/v1/cues/cue_stub"),
        ("GET", "/v1/cues/cue_stub"),
        ("POST", "/v1/executions/exec_1/outcome"),
        ("POST", "/v1/executions/exec_1/outcome"),
    ]
    assert stub.requests[0].body == stub.requests[1].body


def test_502_is_retried_for_get_but_not_for_post(stub: Receiver) -> None:
    bad_gateway = reply(502, {"error": {"code": "bad_gateway", "message": "bad gateway"}})
    with stub_client(stub, max_retries=1) as c:
        script(stub, bad_gateway, reply(200, CUE_JSON))
        assert c.cues.get("cue_stub").name == "stub"
        assert len(stub.requests) == 2
        script(stub, bad_gateway, reply(201, CUE_JSON))
        with pytest.raises(CueAPIServerError) as info:
            c.cues.create("n", cron="0 9 * * *", transport="worker")
        assert info.value.status_code == 502
        assert [r.method for r in stub.requests] == ["GET", "GET", "POST"]  # the POST went once
        # Retries run out: the last answer is raised.
        script(stub, bad_gateway)
        with pytest.raises(CueAPIServerError):
            c.cues.list()
        assert [r.method for r in stub.requests[3:]] == ["GET", "GET"]
    with stub_client(stub, max_retries=0) as c:
        script(stub, bad_gateway, reply(200, CUE_JSON))
        with pytest.raises(CueAPIServerError):
            c.cues.get("cue_stub")
        assert len(stub.requests) == 6


def test_429_waits_for_a_short_retry_after_but_not_a_long_one(stub: Receiver) -> None:
    limited = {"error": {"code": "rate_limit_exceeded", "message": "slow down"}}
    with stub_client(stub) as c:
        script(stub, reply(429, limited, {"Retry-After": "0"}), reply(201, CUE_JSON))
        assert c.cues.create("n", cron="0 9 * * *", transport="worker").id == "cue_stub"
        assert len(stub.requests) == 2

        script(stub, reply(429, limited, {"Retry-After": "3600"}), reply(200, CUE_JSON))
        started = time.monotonic()
        with pytest.raises(RateLimitError) as info:
            c.cues.get("cue_stub")
        assert time.monotonic() - started < 5
        assert info.value.retry_after == 3600 and len(stub.requests) == 3

        script(stub, reply(503, limited, {"Retry-After": "120"}), reply(200, CUE_JSON))
        with pytest.raises(CueAPIServerError):
            c.cues.get("cue_stub")
        assert len(stub.requests) == 4


def test_refused_connection(stub: Receiver) -> None:
    sock, url = refused_url()
    try:
        with CueAPI(STUB_KEY, base_url=url, max_retries=1) as c:
            for call in (
                lambda: c.cues.list(),
                lambda: c.cues.create("n", cron="0 9 * * *", transport="worker"),
            ):
                with pytest.raises(CueAPIConnectionError) as info:
                    call()
                e = info.value
                assert isinstance(e, httpx.TransportError) and isinstance(e, CueAPIError)
                # Also the httpx error the official SDK let through, for code that catches it.
                assert isinstance(e, httpx.ConnectError) and type(e).__name__ == "CueAPIConnectionError"
                assert url in str(e) and "ConnectError" in str(e) and e.status_code is None
                assert isinstance(e.__cause__, httpx.ConnectError)
                again = pickle.loads(pickle.dumps(e))
                assert type(again) is type(e) and again.message == e.message
    finally:
        sock.close()


def test_timeouts_are_connection_errors_and_httpx_timeouts(stub: Receiver) -> None:
    # A server slower than the client's timeout (the stub waits before answering).
    stub.answer = lambda _r: (200, {"Content-Type": "application/json"}, b"{}", 1.0)
    with stub_client(stub, timeout=0.1, max_retries=0) as c:
        started = time.monotonic()
        with pytest.raises(httpx.TimeoutException) as info:
            c.usage.get()
        assert time.monotonic() - started < 0.9
    e = info.value
    assert isinstance(e, CueAPIConnectionError) and isinstance(e, httpx.ReadTimeout)
    assert "ReadTimeout" in str(e) and f"GET {stub.url}/v1/usage" in str(e)
    assert len(stub.requests) == 1


# -- configuration ---------------------------------------------------------------------------------


def test_key_and_base_url_from_the_environment(monkeypatch: pytest.MonkeyPatch, server: Server) -> None:
    monkeypatch.setenv("CUEAPI_API_KEY", server.key)
    monkeypatch.setenv("CUEAPI_BASE_URL", server.url)
    with CueAPI() as c:
        assert c.base_url == server.url and c._base_url == server.url
        assert c.auth.me()["email"] == "owner@example.com"
    # Arguments win over the environment.
    monkeypatch.setenv("CUEAPI_API_KEY", "cue_sk_" + "1" * 32)
    monkeypatch.setenv("CUEAPI_BASE_URL", "http://127.0.0.1:9")
    with CueAPI(server.key, base_url=server.url) as c:
        assert c.auth.me()["email"] == "owner@example.com"
    with CueAPI(base_url=server.url) as c, pytest.raises(AuthenticationError):
        c.auth.me()
    monkeypatch.delenv("CUEAPI_BASE_URL")
    with CueAPI() as c:
        assert c.base_url == "https://api.cueapi.ai"


def test_no_key_anywhere_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUEAPI_API_KEY", raising=False)
    for key in (None, "", "   "):
        with pytest.raises(ValueError, match="CUEAPI_API_KEY") as info:
            CueAPI(key, base_url="http://127.0.0.1:9")
        assert isinstance(info.value, ValidationError) and "api_key" in str(info.value)
    monkeypatch.setenv("CUEAPI_API_KEY", "")
    with pytest.raises(ValidationError, match="no API key"):
        CueAPI(base_url="http://127.0.0.1:9")


def test_base_url_forms(server: Server) -> None:
    for url in (
        server.url,
        server.url + "/",
        server.url + "/v1",
        server.url + "/v1/",
        " " + server.url + " ",
    ):
        with CueAPI(server.key, base_url=url) as c:
            assert c.base_url == server.url
            assert c.cues.list().total == 0, url


@pytest.mark.parametrize(
    "url",
    [
        "localhost:8000",
        "127.0.0.1:8000",
        "ftp://example.com",
        "http://",
        "https:///v1",
        "example.com",
        "",
        "http://example.com/?x=1",
        "http://example.com/#top",
    ],
)
def test_bad_base_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="base_url") as info:
        CueAPI(STUB_KEY, base_url=url)
    assert isinstance(info.value, ValueError) and STUB_KEY not in str(info.value)


def test_bad_settings_are_refused() -> None:
    for timeout in (0, -1, float("nan"), float("inf"), True, "30"):
        with pytest.raises(ValidationError, match="timeout"):
            CueAPI(STUB_KEY, base_url="http://127.0.0.1:9", timeout=timeout)  # type: ignore[arg-type]
    for retries in (-1, 11, True, 1.5):
        with pytest.raises(ValidationError, match="max_retries"):
            CueAPI(STUB_KEY, base_url="http://127.0.0.1:9", max_retries=retries)  # type: ignore[arg-type]
    with CueAPI(STUB_KEY, base_url="http://127.0.0.1:9", timeout=httpx.Timeout(3.0)) as c:
        assert c._http.timeout.read == 3.0
    with CueAPI(STUB_KEY, base_url="http://127.0.0.1:9", timeout=5) as c:
        assert c._http.timeout.connect == 5


def test_the_key_is_never_shown(server: Server, stub: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("httpx", "httpcore", "cueapi"):
        caplog.set_level(logging.DEBUG, logger=name)
    bad_key = "cue_sk_" + "badbadbad0" * 3 + "zz"
    keys = (server.key, STUB_KEY, bad_key)
    errors: list[BaseException] = []

    def failing(call: Any) -> None:
        with pytest.raises(Exception) as info:  # each kind is checked below
            call()
        errors.append(info.value)

    with CueAPI(server.key, base_url=server.url) as c:
        assert repr(c) == f"CueAPI(base_url={server.url!r}, api_key='cue_sk_…{server.key[-4:]}')"
        cue = worker_cue(c, "secret-test", "t")
        c.cues.fire(cue.id)
        c.executions.list(status=["pending"])
        failing(lambda: c.cues.get("cue_missing"))
        failing(lambda: c.executions.get("exec_missing"))
        failing(lambda: c.cues.create("bad", cron="nope", transport="worker"))
        failing(lambda: c.cues.create("secret-test", cron="0 * * * *", transport="worker"))
    with CueAPI(bad_key, base_url=server.url) as stranger:
        assert bad_key not in repr(stranger)
        failing(lambda: stranger.cues.list())
    with stub_client(stub, max_retries=0) as s:
        for answer in (
            reply(403, {"error": {"code": "limit", "message": "over"}}),
            reply(429, {"error": {"code": "rate", "message": "slow"}}, {"Retry-After": "9999"}),
            reply(500, b"boom", {"Content-Type": "text/plain"}),
            reply(200, {**EXEC_JSON, "body_received": "{}"}),
        ):
            script(stub, answer)
            failing(lambda: s.cues.fire("cue_1", payload_override={"a": 1}))
    sock, url = refused_url()
    try:
        with CueAPI(STUB_KEY, base_url=url, max_retries=0) as refused:
            failing(lambda: refused.cues.list())
    finally:
        sock.close()
    # A key httpx cannot send (not ASCII) is refused before httpx sees it: its encoding error
    # would carry the whole Authorization header.
    failing(lambda: CueAPI("cue_sk_sécret" + "9" * 20, base_url=server.url))
    failing(lambda: CueAPI("cue_sk_with space" + "9" * 20, base_url=server.url))

    kinds = [type(e).__name__ for e in errors]
    assert kinds == [
        "CueNotFoundError",
        "ExecutionNotFoundError",
        "InvalidScheduleError",
        "ConflictError",
        "AuthenticationError",
        "CueLimitExceededError",
        "RateLimitError",
        "CueAPIServerError",
        "BodyVerifyMismatchError",
        "CueAPIConnectionError",
        "ValidationError",
        "ValidationError",
    ]
    shown: list[str] = []
    for e in errors:
        chain: BaseException | None = e
        while chain is not None:
            shown += [str(chain), repr(chain), repr(chain.args), json.dumps(getattr(chain, "body", None))]
            chain = chain.__cause__ or chain.__context__
    records = [(r.name, r.getMessage()) for r in caplog.records]
    assert any(n == "httpx" and "HTTP Request" in m for n, m in records)  # logging was captured
    assert any(n.startswith("httpcore") for n, _ in records)
    shown += [m for _, m in records] + [caplog.text]
    for key in (*keys, "sécret", "with space"):
        secret = key.removeprefix("cue_sk_")
        leaks = [s for s in shown if secret in s]
        assert not leaks, (key, leaks)
