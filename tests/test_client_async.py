"""The async twin, :class:`cueapi.AsyncCueAPI`, against a live ``cueapi serve``: the same flows as
tests/test_client.py through the same server, awaited (each test drives its own event loop with
``asyncio.run``): cues, the claim cycle, outcomes and evidence, verification, ``async for`` over
``executions.iter``, ``async with executions.handle(...)``, workers, usage, the account, raw
requests, errors, retries, and the same bytes on the wire as the sync client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import cueapi
import httpx
import pytest
from cueapi import (
    AsyncCueAPI,
    AuthenticationError,
    ConflictError,
    CueAPI,
    CueAPIConnectionError,
    CueAPIServerError,
    CueLimitExceededError,
    CueNotFoundError,
    CuePayload,
    ExecutionNotFoundError,
    InvalidScheduleError,
    RateLimitError,
)
from cueapi.client import AsyncExecutionContext
from cueapi.exceptions import BodyVerifyMismatchError

from tests.conftest import START, Receiver, Server, start_server
from tests.test_client import (
    CUE_JSON,
    EXEC_JSON,
    STUB_KEY,
    instant,
    path,
    query,
    refused_url,
    reply,
    script,
)


@pytest.fixture(scope="module")
def stub_server() -> Iterator[Receiver]:
    r = Receiver()
    r.http.RequestHandlerClass.disable_nagle_algorithm = True  # type: ignore[attr-defined]
    yield r
    r.close()


@pytest.fixture
def stub(stub_server: Receiver) -> Receiver:
    """A recording HTTP server on loopback with no requests yet, answering 200 ``{}``."""
    with stub_server.cond:
        stub_server.requests.clear()
    script(stub_server, reply(200, {}))
    return stub_server


def connect(server: Server, **settings: Any) -> AsyncCueAPI:
    return AsyncCueAPI(server.key, base_url=server.url, **settings)


async def worker_cue(client: AsyncCueAPI, name: str, task: str, **fields: Any) -> cueapi.Cue:
    return await client.cues.create(
        name, cron="0 0 1 1 *", transport="worker", payload=CuePayload().task(task).build(), **fields
    )


def test_cues(server: Server, stub: Receiver) -> None:
    async def main() -> None:
        async with connect(server) as client:
            cue = await client.cues.create(
                "sync",
                cron="0 9 * * MON-FRI",
                timezone="Europe/Paris",
                callback=stub.url + "/hook",
                callback_method="PUT",
                callback_headers={"X-Team": "ops"},
                payload={"task": "sync"},
                retry={"max_attempts": 2, "backoff_minutes": [1, 5]},
                on_failure={"email": False, "pause": True},
            )
            assert isinstance(cue, cueapi.Cue) and cue.callback.headers == {"X-Team": "ops"}
            assert server.call("GET", f"/v1/cues/{cue.id}").json()["schedule"]["timezone"] == "Europe/Paris"
            once = await client.cues.create(
                "once", at=datetime(2031, 1, 1, tzinfo=timezone.utc), callback=stub.url
            )
            every = await client.cues.create("every", every="30s", transport="worker")
            assert (once.schedule.type, every.schedule.type) == ("once", "interval")

            page = await client.cues.list(limit=2)
            assert isinstance(page, cueapi.CueList) and page.total == 3 and len(page.cues) == 2
            assert (await client.cues.list(limit=2, offset=2)).cues[0].id not in {c.id for c in page.cues}
            got = await client.cues.get(cue.id)
            assert (got.id, got.name, got.retry.backoff_minutes) == (cue.id, "sync", [1, 5])

            renamed = await client.cues.update(cue.id, name="sync-v2", payload={"task": "sync", "n": 2})
            assert (renamed.name, renamed.payload) == ("sync-v2", {"task": "sync", "n": 2})
            moved = await client.cues.update(cue.id, timezone="Asia/Tokyo")
            assert (moved.schedule.cron, moved.schedule.timezone) == ("0 9 * * MON-FRI", "Asia/Tokyo")
            assert moved.next_run is not None
            local = moved.next_run.astimezone(ZoneInfo("Asia/Tokyo"))
            assert (local.hour, local.minute) == (9, 0) and local.weekday() < 5
            assert server.call("GET", f"/v1/cues/{cue.id}").json()["name"] == "sync-v2"

            assert (await client.cues.pause(cue.id)).status == "paused"
            assert [c.id for c in (await client.cues.list(status="paused")).cues] == [cue.id]
            assert (await client.cues.resume(cue.id)).status == "active"

            fired = await client.cues.fire(cue.id, payload_override={"n": 3})
            assert fired["payload"] == {"task": "sync", "n": 3} and fired["triggered_by"] == "manual_fire"
            [delivery] = stub.wait(1)
            assert delivery.method == "PUT" and delivery.json()["payload"] == {"task": "sync", "n": 3}
            key = "async-key-1"
            assert (await client.cues.fire(every.id, idempotency_key=key))["id"] == (
                await client.cues.fire(every.id, idempotency_key=key)
            )["id"]
            later = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)
            assert instant((await client.cues.fire(every.id, send_at=later))["scheduled_for"]) == later

            assert await client.cues.delete(once.id) is None
            assert server.call("GET", f"/v1/cues/{once.id}").status_code == 404
            with pytest.raises(CueNotFoundError):
                await client.cues.get(once.id)
            assert await client.cues.bulk_delete([once.id, cue.id]) == {
                "deleted": [cue.id],
                "skipped": [once.id],
            }
            assert server.call("GET", f"/v1/cues/{cue.id}").status_code == 404

    asyncio.run(main())


def test_claim_cycle_outcomes_and_verification(server: Server) -> None:
    async def main() -> None:
        async with connect(server) as client:
            etl = await worker_cue(client, "etl", "etl", verification={"mode": "manual"})
            report = await worker_cue(client, "report", "report")
            e1 = await client.cues.fire(etl.id)
            e2 = await client.cues.fire(report.id)
            e3 = await client.cues.fire(etl.id)

            listed = await client.executions.list_claimable()
            assert [e["execution_id"] for e in listed["executions"]] == [e1["id"], e2["id"], e3["id"]]
            only = await client.executions.list_claimable(task="report")
            assert [e["execution_id"] for e in only["executions"]] == [e2["id"]]
            assert (await client.workers.heartbeat("w-etl", handlers=["etl"]))["acknowledged"] is True
            mine = await client.executions.list_claimable(worker_id="w-etl")
            assert [e["execution_id"] for e in mine["executions"]] == [e1["id"], e3["id"]]

            claimed = await client.executions.claim(e1["id"], worker_id="w-etl")
            assert claimed["claimed"] is True and claimed["task"] == "etl"
            with pytest.raises(ConflictError):
                await client.executions.claim(e1["id"], worker_id="w-2")
            beat = await client.executions.heartbeat(e1["id"], worker_id="w-etl")
            assert beat["acknowledged"] is True
            with pytest.raises(CueLimitExceededError):
                await client.executions.heartbeat(e1["id"], worker_id="w-2")

            nxt = await client.executions.claim_next(worker_id="w-etl", task="etl")
            assert nxt["execution_id"] == e3["id"]
            assert await client.executions.claim_next(worker_id="w-etl", task="etl") == {
                "claimed": False,
                "reason": "no_executions_for_task",
                "task": "etl",
            }
            assert (await client.executions.claim_next(worker_id="w-2"))["execution_id"] == e2["id"]
            with pytest.raises(ConflictError):
                await client.executions.claim_next(worker_id="w-2")

            out = await client.executions.report_outcome(
                e1["id"],
                success=True,
                result="done",
                metadata={"n": 1},
                external_id="x-1",
                result_url="https://example.com/1",
                result_ref="ref-1",
                result_type="report",
                summary="one",
                artifacts=["a"],
            )
            assert out["outcome_state"] == "verification_pending"
            stored = server.execution(e1["id"])
            assert (stored["outcome"]["result"], stored["evidence"]["result_ref"]) == ("done", "ref-1")
            more = await client.executions.append_evidence(e1["id"], summary="one, checked")
            assert more["evidence_updated"] is True
            assert server.execution(e1["id"])["evidence"]["summary"] == "one, checked"
            pending = await client.executions.mark_verification_pending(e1["id"])
            assert pending["outcome_state"] == "verification_pending"
            verdict = await client.executions.mark_verified(e1["id"], valid=False, reason="wrong total")
            assert verdict["outcome_state"] == "verification_failed" and verdict["valid"] is False
            assert "wrong total" in server.execution(e1["id"])["outcome"]["summary"]
            await client.executions.report_outcome(e3["id"], success=True, external_id="x-3")
            assert (await client.executions.mark_verified(e3["id"]))["outcome_state"] == "verified_success"

            replayed = await client.executions.replay(e1["id"])
            assert replayed["triggered_by"] == "replay" and replayed["replay_of"] == e1["id"]
            got = await client.executions.get(replayed["id"])
            assert got == server.execution(replayed["id"]) and got["status"] == "pending"
            page = await client.executions.list(
                cue_id=etl.id,
                status=["pending", "success"],
                triggered_by="manual_fire",
                has_evidence=True,
                days=1,
            )
            assert {e["id"] for e in page["executions"]} == {e1["id"], e3["id"]} and page["total"] == 2
            assert (await client.executions.list(result_type="report", outcome_state="verification_failed"))[
                "total"
            ] == 1
            with pytest.raises(ExecutionNotFoundError):
                await client.executions.get("exec_missing")

    asyncio.run(main())


def test_async_for_over_iter(tmp_path: Path) -> None:
    clock = cueapi.ManualClock(START)
    server = start_server(tmp_path / "iter.db", clock)

    async def main() -> None:
        async with connect(server) as client:
            cue = await worker_cue(client, "many", "m")
            for _ in range(4):
                await client.cues.fire(cue.id)
            clock.advance(2 * 86_400)
            for _ in range(3):
                await client.cues.fire(cue.id)
            expected = [e["id"] for e in (await client.executions.list(limit=100))["executions"]]
            got = [e async for e in client.executions.iter(page_size=1)]
            assert all(isinstance(e, cueapi.Execution) for e in got) and [e.id for e in got] == expected
            assert len(expected) == 7
            recent = [e.id async for e in client.executions.iter(days=1, page_size=2)]
            assert recent == expected[:3]
            since = [e.id async for e in client.executions.iter(since=START + timedelta(days=1), page_size=5)]
            assert since == expected[:3]

            # One created while paging is not yielded twice, nothing is missed.
            seen: list[str] = []
            async for e in client.executions.iter(page_size=1):
                if not seen:
                    await client.cues.fire(cue.id)
                seen.append(e.id)
            assert len(seen) == len(set(seen)) and set(expected) <= set(seen)

    try:
        asyncio.run(main())
    finally:
        server.app.close()


def test_async_with_handle(server: Server) -> None:
    async def main() -> None:
        async with connect(server) as client:
            cue = await worker_cue(client, "handled", "h", retry={"max_attempts": 0, "backoff_minutes": [1]})
            ok = (await client.cues.fire(cue.id))["id"]
            failing = (await client.cues.fire(cue.id))["id"]

            async with client.executions.handle(ok, {"task": "h"}) as ctx:
                assert isinstance(ctx, AsyncExecutionContext) and ctx.payload == {"task": "h"}
                await asyncio.sleep(0)  # work that awaits
                ctx.result = "3 rows"
                ctx.evidence = {"external_id": "job-1", "result_url": "https://example.com/job-1"}
            stored = server.execution(ok)
            assert stored["outcome"]["success"] is True and stored["outcome"]["result"] == "3 rows"
            assert stored["evidence"]["external_id"] == "job-1"

            with pytest.raises(KeyError):
                async with client.executions.handle(failing):
                    raise KeyError("missing column")
            stored = server.execution(failing)
            assert stored["status"] == "failed" and stored["outcome"]["success"] is False
            assert stored["outcome"]["error"] == "'missing column'"

    asyncio.run(main())


def test_workers_usage_account_and_request(server: Server) -> None:
    async def main() -> None:
        async with connect(server) as client:
            await client.workers.heartbeat("w-1", handlers=["a"])
            listed = await client.workers.list()
            assert [w["worker_id"] for w in listed["workers"]] == ["w-1"] and listed["total"] == 1
            assert await client.workers.delete("w-1") is None
            assert server.call("GET", "/v1/workers").json()["total"] == 0
            with pytest.raises(CueNotFoundError):
                await client.workers.delete("w-1")

            await worker_cue(client, "u", "t")
            usage = await client.usage.get()
            assert usage["cues"]["active"] == 1

            assert (await client.auth.me())["email"] == "owner@example.com"
            assert (await client.auth.webhook_secret())["webhook_secret"] == server.secret
            secret = (await client.auth.regenerate_webhook_secret())["webhook_secret"]
            assert (
                secret != server.secret and (await client.auth.webhook_secret())["webhook_secret"] == secret
            )
            assert (await client.request("GET", "/v1/info"))["server"] == "cueapi"
            new_key = (await client.auth.regenerate_key())["api_key"]
            with pytest.raises(AuthenticationError):
                await client.auth.me()
        async with AsyncCueAPI(new_key, base_url=server.url + "/v1/") as renewed:
            assert (await renewed.auth.me())["email"] == "owner@example.com"

    asyncio.run(main())


def test_concurrent_calls_share_one_client(server: Server) -> None:
    async def main() -> None:
        async with connect(server) as client:
            made = await asyncio.gather(*(worker_cue(client, f"c{n}", "t") for n in range(12)))
            got = await asyncio.gather(*(client.cues.get(c.id) for c in made))
            assert [g.id for g in got] == [c.id for c in made]
            assert (await client.cues.list(limit=100)).total == 12

    asyncio.run(main())


def test_errors_and_retries(tmp_path: Path, server: Server, stub: Receiver) -> None:
    limited = start_server(tmp_path / "limited.db", rate_limit_per_minute=2)

    async def main() -> None:
        async with connect(server) as client:
            with pytest.raises(InvalidScheduleError) as bad:
                await client.cues.create("bad", cron="0 * * * *", timezone="Nowhere/City", transport="worker")
            assert (bad.value.status, bad.value.code, bad.value.field) == (
                422,
                "invalid_timezone",
                "body.schedule.timezone",
            )
            await worker_cue(client, "dup", "t")
            with pytest.raises(ConflictError):
                await worker_cue(client, "dup", "t")
        async with AsyncCueAPI("cue_sk_" + "0" * 32, base_url=server.url) as stranger:
            with pytest.raises(AuthenticationError) as auth:
                await stranger.cues.list()
            assert auth.value.status_code == 401
        async with connect(limited, max_retries=0) as client:
            with pytest.raises(RateLimitError) as rate:
                for _ in range(5):
                    await client.usage.get()
            assert isinstance(rate.value.retry_after, int) and rate.value.retry_after > 0

        async with AsyncCueAPI(STUB_KEY, base_url=stub.url) as c:
            busy = reply(503, {"error": {"code": "busy", "message": "busy"}}, {"Retry-After": "0"})
            script(stub, busy, reply(201, CUE_JSON))
            assert (await c.cues.create("n", cron="0 9 * * *", transport="worker")).id == "cue_stub"
            script(stub, reply(502, {}), reply(200, CUE_JSON))
            assert (await c.cues.get("cue_stub")).id == "cue_stub"
            script(stub, reply(502, {}), reply(201, CUE_JSON))
            with pytest.raises(CueAPIServerError):
                await c.cues.create("n", cron="0 9 * * *", transport="worker")
            assert [(r.method, path(r)) for r in stub.requests] == [
                ("POST", "/v1/cues"),
                ("POST", "/v1/cues"),
                ("GET", "/v1/cues/cue_stub"),
                ("GET", "/v1/cues/cue_stub"),
                ("POST", "/v1/cues"),
            ]
            script(stub, reply(429, {}, {"Retry-After": "600"}))
            started = time.monotonic()
            with pytest.raises(RateLimitError) as long_wait:
                await c.cues.list()
            assert long_wait.value.retry_after == 600 and time.monotonic() - started < 5
            script(stub, reply(403, {"error": {"code": "cue_limit", "message": "plan limit"}}))
            with pytest.raises(CueLimitExceededError) as forbidden:
                await c.cues.create("n", cron="0 9 * * *", transport="worker")
            assert (forbidden.value.code, forbidden.value.message) == ("cue_limit", "plan limit")
            script(stub, reply(200, {**EXEC_JSON, "body_received": '{"changed":1}'}))
            with pytest.raises(BodyVerifyMismatchError) as mismatch:
                await c.cues.fire("cue_1", payload_override={"a": 1})
            assert mismatch.value.first_divergence_byte == 2 and mismatch.value.message_id == "exec_stub"
            assert stub.requests[-1].headers["x-cueapi-verify-echo"] == "true"

        sock, url = refused_url()
        try:
            async with AsyncCueAPI(STUB_KEY, base_url=url, max_retries=1) as c:
                with pytest.raises(CueAPIConnectionError) as refused:
                    await c.cues.list()
                assert isinstance(refused.value, httpx.ConnectError) and url in str(refused.value)
        finally:
            sock.close()

    try:
        asyncio.run(main())
    finally:
        limited.app.close()


def test_same_requests_as_the_sync_client(stub: Receiver) -> None:
    """Both clients drive the same operations: the same bytes, paths, queries and headers."""
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        (
            "cues.create",
            ("n",),
            {"cron": "0 9 * * *", "callback": "https://e.com", "retry": {"max_attempts": 1}},
        ),
        ("cues.update", ("cue_1",), {"timezone": "UTC", "cron": "1 * * * *", "callback_method": "PUT"}),
        ("cues.list", (), {"status": "active", "limit": 3}),
        ("cues.fire", ("cue_1",), {"payload_override": {"x": "ü"}, "idempotency_key": "k"}),
        ("cues.fire", ("cue_1",), {"auto_verify": False}),
        (
            "executions.list",
            (),
            {"status": ["a", "b"], "has_evidence": True, "since": "2030-01-01T00:00:00Z"},
        ),
        ("executions.report_outcome", ("exec_1",), {"success": True, "summary": "s", "artifacts": []}),
        ("executions.heartbeat", ("exec_1",), {"worker_id": "w"}),
        ("executions.mark_verified", ("exec_1",), {"valid": False, "reason": "r"}),
        ("executions.list_claimable", (), {"task": "t", "limit": 5}),
        ("workers.list", (), {}),
        ("usage.get", (), {}),
        ("auth.regenerate_key", (), {}),
    ]

    def target(client: Any, name: str) -> Any:
        for part in name.split("."):
            client = getattr(client, part)
        return client

    def answer_all() -> None:
        def answer(r: Any) -> Any:
            if path(r) == "/v1/cues" and r.method == "GET":
                return reply(200, {"cues": [], "total": 0, "limit": 3, "offset": 0})
            return reply(
                200, CUE_JSON if path(r).startswith("/v1/cues") and "fire" not in r.path else EXEC_JSON
            )

        stub.answer = answer

    answer_all()
    with CueAPI(STUB_KEY, base_url=stub.url) as sync:
        for name, args, kwargs in calls:
            target(sync, name)(*args, **kwargs)
    sync_requests = list(stub.requests)
    with stub.cond:
        stub.requests.clear()

    async def main() -> None:
        async with AsyncCueAPI(STUB_KEY, base_url=stub.url) as client:
            for name, args, kwargs in calls:
                await target(client, name)(*args, **kwargs)

    asyncio.run(main())
    async_requests = list(stub.requests)
    assert len(sync_requests) == len(async_requests) == len(calls)
    for s, a in zip(sync_requests, async_requests, strict=True):
        assert (s.method, path(s), query(s), s.body) == (a.method, path(a), query(a), a.body)
        drop = {"host", "content-length", "connection"}
        assert {k: v for k, v in s.headers.items() if k not in drop} == {
            k: v for k, v in a.headers.items() if k not in drop
        }
