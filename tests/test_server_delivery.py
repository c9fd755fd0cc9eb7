"""Webhook delivery of ``cueapi serve``, end to end against real receivers on loopback ports: the
signed body and headers a receiver gets, the retry ladder (on a manual clock), ``Retry-After``,
``410 Gone``, timeouts, redirects, outcomes reported inline in the response body, outcome
deadlines, restarts in the middle of a ladder, the SSRF guard and many deliveries at once."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cueapi
import httpx
import pytest
from cueapi.webhooks import verify_webhook_headers

from tests.conftest import Answer, Received, Receiver, Server, location, start_server, wait_for

# Every test here runs on SQLite and on PostgreSQL.
STORES = ("sqlite", "postgres")

# Cues here are fired by hand (POST /v1/cues/{id}/fire); their own schedule never comes due.
FAR = "2099-01-01T00:00:00Z"
JSON = {"Content-Type": "application/json"}
BODY_KEYS = {"attempt", "cue_id", "execution_id", "name", "payload", "scheduled_for"}

_names = itertools.count(1)


def instant(text: str) -> datetime:
    """An instant as the API writes it (ISO-8601 with ``Z``) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def answering(
    status: int, body: bytes = b"", headers: dict[str, str] | None = None
) -> Callable[[Received], Answer]:
    return lambda _r: (status, dict(headers or {}), body, 0.0)


def webhook_cue(server: Server, url: str, **fields: Any) -> dict[str, Any]:
    """Creates a webhook cue (fired by hand, overlapping runs allowed) calling ``url``."""
    spec: dict[str, Any] = {
        "name": f"delivery-{next(_names)}",
        "schedule": {"type": "once", "at": FAR},
        "callback": {"url": url},
        "overlap": "allow",
    }
    spec.update(fields)
    return server.cue(**spec)


def fire(server: Server, cue: dict[str, Any]) -> str:
    r = server.call("POST", f"/v1/cues/{cue['id']}/fire")
    assert r.status_code == 200, r.text
    return str(r.json()["execution_id"])


def settled(server: Server, execution_id: str, *statuses: str, timeout: float = 15.0) -> dict[str, Any]:
    """Waits until the execution has one of ``statuses``; returns it (with its attempt_log)."""
    return wait_for(
        lambda: (e := server.execution(execution_id))["status"] in statuses and e,
        timeout,
        f"{execution_id} to be {' or '.join(statuses)}",
    )


def hooks(receiver: Receiver, path: str = "/hook") -> list[Received]:
    return [r for r in list(receiver.requests) if r.path == path]


def attempt_numbers(requests: list[Received]) -> list[int]:
    return [int(r.headers["x-cueapi-attempt"]) for r in requests]


def advance(server: Server, clock: cueapi.ManualClock, beacon: Receiver, seconds: float) -> None:
    """Moves the manual clock ``seconds`` forward and returns once the engine has acted on the new
    instant: a one-shot cue due exactly then has been delivered to ``beacon``. Anything due later
    cannot have gone out by then, so "nothing happened yet" is proven without sleeping."""
    n = next(_names)
    at = clock.now() + timedelta(seconds=seconds)
    server.cue(
        name=f"beacon-{n}",
        schedule={"type": "once", "at": at.isoformat()},
        callback={"url": f"{beacon.url}/beacon/{n}"},
        retry={"max_attempts": 0},
        delivery={"outcome_deadline_seconds": None},
    )
    clock.advance(seconds)
    wait_for(lambda: hooks(beacon, f"/beacon/{n}"), 15, f"the beacon due at {at}")


def sign_sha256(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# -- fixtures ----------------------------------------------------------------------------------------


# -- what a receiver gets ----------------------------------------------------------------------------


def test_body_signatures_and_execution_headers_of_every_attempt(
    timed: Server, now_clock: cueapi.ManualClock, receiver: Receiver
) -> None:
    # Two failures, then success: three attempts of one execution, sent back to back (backoff 0).
    receiver.answer = lambda r: (
        (200, JSON, b'{"status": "received"}', 0.0)
        if r.headers.get("x-cueapi-attempt") == "3"
        else (500, {}, b"boom", 0.0)
    )
    payload = {
        "task": "sync",
        "n": 3,
        "ratio": 0.1,
        "who": "Zo\u00eb \u2603",
        "nested": {"b": [1, 2.5, None]},
    }
    due = now_clock.now() + timedelta(seconds=1)
    cue = timed.cue(
        name="signed",
        schedule={"type": "once", "at": due.isoformat()},
        callback={
            "url": receiver.url + "/hook",
            "headers": {"X-Agent-Secret": "s3cret", "X-Trace-Id": "trace-42"},
        },
        payload=payload,
        retry={"max_attempts": 2, "backoff_minutes": [0]},
    )
    now_clock.advance(1)  # the one-shot comes due: a scheduled execution
    got = receiver.wait(3)
    ex = settled(timed, got[0].headers["x-cueapi-execution-id"], "success")

    assert attempt_numbers(got) == [1, 2, 3]
    ts = str(int(due.timestamp()))
    for number, req in enumerate(got, start=1):
        assert (req.method, req.path) == ("POST", "/hook")
        body = req.json()
        # The canonical form: exactly what json.dumps(body, sort_keys=True) writes.
        assert req.body == json.dumps(body, sort_keys=True).encode()
        assert "\\u00eb \\u2603" in req.body.decode("ascii")
        assert set(body) == BODY_KEYS
        assert body == {
            "attempt": number,
            "cue_id": cue["id"],
            "execution_id": ex["id"],
            "name": "signed",
            "payload": payload,
            "scheduled_for": due.isoformat(),  # "...T..:..:..+00:00", what Python writes
        }
        assert body["scheduled_for"].endswith("+00:00")
        h = req.headers
        assert h["content-type"] == "application/json"
        # CueAPI v1 signature, as the official SDK checks it.
        assert h["x-cueapi-signature"].startswith("v1=")
        assert h["x-cueapi-timestamp"] == ts
        assert cueapi.verify_webhook(req.body, h["x-cueapi-signature"], timed.secret, h["x-cueapi-timestamp"])
        assert not cueapi.verify_webhook(
            req.body.replace(b'"sync"', b'"SYNC"'), h["x-cueapi-signature"], timed.secret, ts
        )
        assert not cueapi.verify_webhook(req.body, h["x-cueapi-signature"], "whsec_" + "00" * 32, ts)
        # Standard Webhooks: webhook-id is the per-occurrence idempotency key.
        assert h["webhook-id"] == h["x-cueapi-idempotency-key"] == ex["idempotency_key"]
        assert h["webhook-timestamp"] == ts
        assert h["webhook-signature"].startswith("v1,")
        assert verify_webhook_headers(
            req.body,
            {k: v for k, v in h.items() if k.startswith("webhook-")},
            timed.secret,
        )
        # The execution headers.
        assert h["x-cueapi-execution-id"] == ex["id"]
        assert h["x-cueapi-cue-id"] == cue["id"]
        assert h["x-cueapi-scheduled-for"] == due.isoformat()
        assert h["x-cueapi-attempt"] == str(number)
        # The cue's own headers.
        assert h["x-agent-secret"] == "s3cret"
        assert h["x-trace-id"] == "trace-42"
    assert {r.headers["webhook-id"] for r in got} == {ex["idempotency_key"]}
    assert ex["idempotency_key"].startswith(cue["id"])
    assert instant(ex["scheduled_for"]) == due
    assert ex["attempts"] == 3
    assert [(a["number"], a["status"], a["http_status"]) for a in ex["attempt_log"]] == [
        (1, "failed", 500),
        (2, "failed", 500),
        (3, "success", 200),
    ]


@pytest.mark.parametrize(
    "name", ["X-CueAPI-Signature", "x-cueapi-attempt", "webhook-id", "Webhook-Signature", "Content-Type"]
)
def test_custom_headers_cannot_replace_ours(server: Server, receiver: Receiver, name: str) -> None:
    r = server.call(
        "POST",
        "/v1/cues",
        {
            "name": "forger",
            "schedule": {"type": "once", "at": FAR},
            "callback": {"url": receiver.url + "/hook", "headers": {name: "forged"}},
        },
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_error"
    assert r.json()["error"]["details"][0]["field"] == "body.callback.headers"
    assert server.call("GET", "/v1/cues").json()["total"] == 0


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "POST"])
def test_callback_method(server: Server, receiver: Receiver, method: str) -> None:
    cue = webhook_cue(
        server, receiver.url + "/hook", callback={"url": receiver.url + "/hook", "method": method}
    )
    assert cue["callback"]["method"] == method
    eid = fire(server, cue)
    (req,) = receiver.wait(1)
    settled(server, eid, "success")
    assert req.method == method
    assert req.headers["x-cueapi-execution-id"] == eid
    if method == "GET":
        assert req.body == b""
        assert req.headers.get("content-length", "0") == "0"
        assert "transfer-encoding" not in req.headers
    else:
        assert set(req.json()) == BODY_KEYS
        assert req.json()["execution_id"] == eid
        assert cueapi.verify_webhook(
            req.body, req.headers["x-cueapi-signature"], server.secret, req.headers["x-cueapi-timestamp"]
        )


def test_sha256_signature_scheme(server: Server, receiver: Receiver) -> None:
    cue = webhook_cue(server, receiver.url + "/hook", delivery={"signature_scheme": "sha256"})
    assert cue["delivery"]["signature_scheme"] == "sha256"
    eid = fire(server, cue)
    (req,) = receiver.wait(1)
    settled(server, eid, "success")
    # The seed article's receiver: HMAC-SHA256 of the raw body with the whole whsec_ secret.
    assert req.headers["x-cueapi-signature"] == sign_sha256(server.secret, req.body)
    # Ours takes the timeless sha256 scheme only when asked for it.
    assert cueapi.verify_webhook(
        req.body, req.headers["x-cueapi-signature"], server.secret, allow_sha256=True
    )
    assert not cueapi.verify_webhook(req.body, req.headers["x-cueapi-signature"], server.secret)
    forged = req.body.replace(b'"attempt": 1', b'"attempt": 2')
    assert forged != req.body
    assert not cueapi.verify_webhook(
        forged, req.headers["x-cueapi-signature"], server.secret, allow_sha256=True
    )
    # The Standard Webhooks trio still comes along, and so do the headers every delivery carries
    # whatever its scheme (as the README's signing section lists them).
    assert verify_webhook_headers(req.body, req.headers, server.secret)
    always = {
        "x-cueapi-timestamp",
        "x-cueapi-execution-id",
        "x-cueapi-cue-id",
        "x-cueapi-scheduled-for",
        "x-cueapi-attempt",
        "x-cueapi-idempotency-key",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
    assert always <= set(req.headers), req.headers
    assert req.headers["x-cueapi-execution-id"] == eid and req.headers["content-type"] == "application/json"
    assert req.headers["user-agent"].startswith("cueapi/")


# -- the retry ladder --------------------------------------------------------------------------------


def test_retry_ladder_on_a_manual_clock(
    timed: Server, now_clock: cueapi.ManualClock, receiver: Receiver, beacon: Receiver
) -> None:
    receiver.answer = answering(500, b"down")
    t0 = now_clock.now()
    cue = webhook_cue(timed, receiver.url + "/hook", retry={"max_attempts": 2, "backoff_minutes": [1, 5]})
    eid = fire(timed, cue)

    # Attempt 1 goes out at once and fails: the retry waits one minute.
    receiver.wait(1)
    ex = settled(timed, eid, "retrying")
    assert ex["attempts"] == 1
    assert instant(ex["next_retry"]) == t0 + timedelta(minutes=1)
    assert ex["http_status"] == 500

    advance(timed, now_clock, beacon, 59)
    assert attempt_numbers(hooks(receiver)) == [1]  # not a second early
    assert timed.execution(eid)["status"] == "retrying"

    now_clock.advance(1)
    receiver.wait(2)
    ex = settled(timed, eid, "retrying")
    assert ex["attempts"] == 2
    # The second retry waits the second backoff value, from the second attempt.
    assert instant(ex["next_retry"]) == t0 + timedelta(minutes=1 + 5)
    assert hooks(receiver)[1].headers["x-cueapi-timestamp"] == str(
        int((t0 + timedelta(minutes=1)).timestamp())
    )

    advance(timed, now_clock, beacon, 5 * 60 - 1)
    assert attempt_numbers(hooks(receiver)) == [1, 2]
    now_clock.advance(1)
    receiver.wait(3)
    ex = settled(timed, eid, "failed")

    assert attempt_numbers(hooks(receiver)) == [1, 2, 3]
    assert {r.headers["x-cueapi-execution-id"] for r in hooks(receiver)} == {eid}
    assert ex["attempts"] == 3
    assert ex["http_status"] == 500
    assert ex["error_message"] and "500" in ex["error_message"]
    assert ex["next_retry"] is None
    assert ex["delivered_at"] is None
    assert [(a["number"], a["status"], a["http_status"]) for a in ex["attempt_log"]] == [
        (1, "failed", 500),
        (2, "failed", 500),
        (3, "failed", 500),
    ]
    assert all(a["error"] and "500" in a["error"] for a in ex["attempt_log"])
    # Retries spent: an hour later there is still no fourth attempt.
    advance(timed, now_clock, beacon, 3600)
    assert len(hooks(receiver)) == 3


def test_retry_after_raises_the_wait_up_to_an_hour(
    timed: Server, now_clock: cueapi.ManualClock, receiver: Receiver, beacon: Receiver
) -> None:
    retry_after = {1: "120", 2: "999999999", 3: "5"}
    receiver.answer = lambda r: (
        (503, {"Retry-After": retry_after[int(r.headers["x-cueapi-attempt"])]}, b"", 0.0)
        if int(r.headers["x-cueapi-attempt"]) in retry_after
        else (200, JSON, b'{"status": "received"}', 0.0)
    )
    t0 = now_clock.now()
    cue = webhook_cue(timed, receiver.url + "/hook", retry={"max_attempts": 3, "backoff_minutes": [1]})
    eid = fire(timed, cue)

    # 503 with Retry-After: 120 — longer than the one-minute backoff, so it wins.
    receiver.wait(1)
    ex = settled(timed, eid, "retrying")
    last = instant(ex["attempt_log"][-1]["finished_at"])
    assert instant(ex["next_retry"]) - last >= timedelta(seconds=120)
    assert instant(ex["next_retry"]) == t0 + timedelta(seconds=120)
    advance(timed, now_clock, beacon, 60)  # where the plain backoff would have retried
    assert len(hooks(receiver)) == 1
    advance(timed, now_clock, beacon, 59)
    assert len(hooks(receiver)) == 1
    now_clock.advance(1)

    # A huge Retry-After is capped at one hour.
    t2 = t0 + timedelta(seconds=120)
    receiver.wait(2)
    ex = wait_for(lambda: (e := timed.execution(eid))["attempts"] == 2 and e["status"] == "retrying" and e)
    assert instant(ex["next_retry"]) == t2 + timedelta(hours=1)
    advance(timed, now_clock, beacon, 3599)
    assert len(hooks(receiver)) == 2
    now_clock.advance(1)

    # A Retry-After shorter than the backoff does not shorten it.
    t3 = t2 + timedelta(hours=1)
    receiver.wait(3)
    ex = wait_for(lambda: (e := timed.execution(eid))["attempts"] == 3 and e["status"] == "retrying" and e)
    assert instant(ex["next_retry"]) == t3 + timedelta(minutes=1)
    now_clock.advance(60)
    receiver.wait(4)
    ex = settled(timed, eid, "success")
    assert ex["attempts"] == 4
    assert [a["http_status"] for a in ex["attempt_log"]] == [503, 503, 503, 200]


def test_410_gone_is_final(
    timed: Server, now_clock: cueapi.ManualClock, receiver: Receiver, beacon: Receiver
) -> None:
    receiver.answer = answering(410, b"gone")
    cue = webhook_cue(timed, receiver.url + "/hook", retry={"max_attempts": 3, "backoff_minutes": [1]})
    eid = fire(timed, cue)
    receiver.wait(1)
    ex = settled(timed, eid, "failed")
    assert ex["attempts"] == 1
    assert ex["http_status"] == 410
    assert ex["next_retry"] is None
    assert ex["error_message"] and "410" in ex["error_message"]
    assert [(a["status"], a["http_status"]) for a in ex["attempt_log"]] == [("failed", 410)]
    advance(timed, now_clock, beacon, 3600)  # retries remained, and none was sent
    assert len(hooks(receiver)) == 1
    assert timed.execution(eid)["status"] == "failed"


def test_timeout_fails_the_attempt(server: Server, receiver: Receiver) -> None:
    receiver.answer = lambda _r: (200, JSON, b'{"success": true}', 3.0)  # answers after 3 s
    cue = webhook_cue(
        server,
        receiver.url + "/hook",
        retry={"max_attempts": 0},
        delivery={"timeout_seconds": 1},
    )
    eid = fire(server, cue)
    receiver.wait(1)  # the request did arrive: what failed is the wait for its answer
    ex = settled(server, eid, "failed", timeout=10)
    assert ex["error_message"] and "timed out" in ex["error_message"]
    assert ex["http_status"] is None
    assert ex["delivered_at"] is None
    assert ex["outcome_deadline_at"] is None
    assert "outcome" not in ex or ex["outcome"] is None  # the late {"success": true} never counted
    (a,) = ex["attempt_log"]
    assert a["status"] == "failed"
    assert a["error"] and "timed out" in a["error"]
    assert 900 <= a["duration_ms"] < 3000


@pytest.mark.parametrize("status", [302, 307])
def test_redirects_are_not_followed(server: Server, receiver: Receiver, status: int) -> None:
    receiver.answer = lambda r: (
        (status, {"Location": receiver.url + "/elsewhere"}, b"", 0.0)
        if r.path == "/hook"
        else (200, JSON, b'{"success": true}', 0.0)
    )
    cue = webhook_cue(server, receiver.url + "/hook", retry={"max_attempts": 0})
    eid = fire(server, cue)
    ex = settled(server, eid, "failed")
    assert [r.path for r in receiver.requests] == ["/hook"]
    assert ex["http_status"] == status
    assert ex["error_message"] and str(status) in ex["error_message"]
    assert ex["delivered_at"] is None


# -- outcomes ----------------------------------------------------------------------------------------


def test_inline_success_outcome(server: Server, receiver: Receiver) -> None:
    receiver.answer = answering(200, b'{"success": true, "result": "done", "external_id": "E1"}', JSON)
    eid = fire(server, webhook_cue(server, receiver.url + "/hook"))
    ex = settled(server, eid, "success")
    assert ex["outcome_state"] == "reported_success"
    assert ex["outcome"]["success"] is True
    assert ex["outcome"]["result"] == "done"
    assert ex["outcome"]["external_id"] == "E1"
    assert ex["evidence"]["external_id"] == "E1"
    assert ex["outcome_deadline_at"] is None  # nothing left to wait for
    # It is the outcome: a report afterwards is refused (outcomes are write-once).
    r = server.call("POST", f"/v1/executions/{eid}/outcome", {"success": False, "error": "late"})
    assert r.status_code == 409, r.text
    assert server.execution(eid)["outcome"]["success"] is True


def test_inline_failure_outcome(server: Server, receiver: Receiver) -> None:
    receiver.answer = answering(200, b'{"success": false, "error": "nope"}', JSON)
    eid = fire(server, webhook_cue(server, receiver.url + "/hook"))
    ex = wait_for(lambda: (e := server.execution(eid)).get("outcome") and e)
    assert ex["outcome"]["success"] is False
    assert ex["outcome"]["error"] == "nope"
    assert ex["outcome_state"] == "reported_failure"
    assert ex["delivered_at"] is not None
    assert ex["outcome_deadline_at"] is None


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'{"status": "ok"}', JSON),
        (b"ok", {"Content-Type": "text/plain"}),
        (b'{"success": "yes"}', JSON),
        (b"", {}),
    ],
    ids=["json-without-success", "plain-text", "non-boolean-success", "empty"],
)
def test_a_body_without_an_outcome_starts_the_deadline(
    server: Server, receiver: Receiver, body: bytes, headers: dict[str, str]
) -> None:
    receiver.answer = answering(200, body, headers)
    eid = fire(server, webhook_cue(server, receiver.url + "/hook"))
    ex = settled(server, eid, "success")
    assert ex.get("outcome") is None
    assert ex["outcome_state"] is None
    assert instant(ex["outcome_deadline_at"]) == instant(ex["delivered_at"]) + timedelta(seconds=300)
    r = server.call("POST", f"/v1/executions/{eid}/outcome", {"success": True, "result": "reported"})
    assert r.status_code == 200, r.text
    ex = server.execution(eid)
    assert ex["outcome_state"] == "reported_success"
    assert ex["outcome"]["result"] == "reported"


def test_outcome_deadline_on_a_manual_clock(
    timed: Server, now_clock: cueapi.ManualClock, receiver: Receiver, beacon: Receiver
) -> None:
    t0 = now_clock.now()
    cue = webhook_cue(timed, receiver.url + "/hook", delivery={"outcome_deadline_seconds": 60})
    silent, reporting = fire(timed, cue), fire(timed, cue)
    receiver.wait(2)
    for eid in (silent, reporting):
        ex = settled(timed, eid, "success")
        assert instant(ex["outcome_deadline_at"]) == t0 + timedelta(seconds=60)
        assert ex["outcome_state"] is None

    advance(timed, now_clock, beacon, 30)
    r = timed.call("POST", f"/v1/executions/{reporting}/outcome", {"success": True, "result": "in time"})
    assert r.status_code == 200, r.text
    assert r.json()["outcome_state"] == "reported_success"

    advance(timed, now_clock, beacon, 29)  # t0 + 59 s: not yet
    assert timed.execution(silent)["outcome_state"] is None

    advance(timed, now_clock, beacon, 2)  # t0 + 61 s
    ex = wait_for(lambda: (e := timed.execution(silent))["outcome_state"] == "outcome_timeout" and e)
    assert t0 + timedelta(seconds=60) <= instant(ex["outcome_timeout_at"]) <= t0 + timedelta(seconds=61)
    assert ex["status"] == "success"  # delivered; it is the outcome that never came
    kept = timed.execution(reporting)
    assert kept["outcome_state"] == "reported_success"
    assert kept["outcome_timeout_at"] is None

    # A late report is kept, and the execution stays marked as having missed its deadline.
    r = timed.call("POST", f"/v1/executions/{silent}/outcome", {"success": True, "result": "late"})
    assert r.status_code == 200, r.text
    ex = timed.execution(silent)
    assert ex["outcome_state"] == "outcome_timeout"
    assert ex["outcome"]["result"] == "late"


# -- ticks committed ahead of their instant -----------------------------------------------------------


def held_cue(server: Server, receiver: Receiver, at: datetime) -> tuple[dict[str, Any], str]:
    """A one-shot webhook cue due at ``at``; once the clock is within the fire-ahead window (25 ms)
    its execution is committed, claimed and waiting for the instant: returns the cue and it."""
    cue = server.cue(
        name=f"held-{next(_names)}",
        schedule={"type": "once", "at": at.isoformat()},
        callback={"url": receiver.url + "/hook"},
        delivery={"outcome_deadline_seconds": None},
    )
    return cue, wait_for(
        lambda: [
            e["id"]
            for e in server.call("GET", "/v1/executions", params={"cue_id": cue["id"]}).json()["data"]
            if e["status"] == "delivering"
        ],
        15,
        "the tick committed ahead of its instant",
    )[0]


def test_a_tick_committed_ahead_goes_out_at_its_instant(
    timed: Server, now_clock: cueapi.ManualClock, receiver: Receiver, beacon: Receiver
) -> None:
    due = now_clock.now() + timedelta(seconds=10)
    now_clock.advance(9.99)
    cue, eid = held_cue(timed, receiver, due)
    # The store already holds the execution and its attempt, dated at the instant itself ...
    (attempt,) = settled(timed, eid, "delivering")["attempt_log"]
    assert instant(attempt["started_at"]) == due
    # ... but nothing is sent before the instant: a beacon due 5 ms earlier arrives alone.
    advance(timed, now_clock, beacon, 0.005)
    assert hooks(receiver) == []
    now_clock.advance(0.005)
    ex = settled(timed, eid, "success")
    (got,) = receiver.wait(1)
    assert instant(got.json()["scheduled_for"]) == due
    assert got.headers["x-cueapi-execution-id"] == eid
    assert [a["status"] for a in ex["attempt_log"]] == ["success"]
    assert timed.call("GET", f"/v1/cues/{cue['id']}").json()["status"] == "completed"


@pytest.mark.parametrize("how", ["delete", "bulk-delete"])
def test_a_deleted_cue_never_fires_again(
    timed: Server, now_clock: cueapi.ManualClock, receiver: Receiver, beacon: Receiver, how: str
) -> None:
    """Deleting a cue (one, or in bulk) drops its next tick: a minute later, with the engine past
    two of its instants, nothing went out for it, while a cue kept beside it fired."""
    every_minute = {"type": "recurring", "cron": "* * * * *"}
    gone = timed.cue(name="gone", schedule=every_minute, callback={"url": receiver.url + "/gone"})
    kept = timed.cue(name="kept", schedule=every_minute, callback={"url": receiver.url + "/kept"})
    if how == "delete":
        r = timed.call("DELETE", f"/v1/cues/{gone['id']}")
        assert r.status_code == 204, r.text
    else:
        r = timed.call(
            "POST", "/v1/cues/bulk-delete", {"ids": [gone["id"]]}, headers={"X-Confirm-Destructive": "true"}
        )
        assert r.status_code == 200 and r.json() == {"deleted": [gone["id"]], "skipped": []}, r.text
    advance(timed, now_clock, beacon, 120)
    wait_for(lambda: hooks(receiver, "/kept"), what="the kept cue's tick")
    assert hooks(receiver, "/gone") == []
    names = [c["name"] for c in timed.call("GET", "/v1/cues").json()["cues"]]
    assert [n for n in names if not n.startswith("beacon-")] == [kept["name"]]


def test_closing_with_a_tick_held_for_its_instant_loses_nothing(
    tmp_path: Path, now_clock: cueapi.ManualClock, receiver: Receiver
) -> None:
    # On a manual clock that never reaches the instant, closing does not wait for it: the held
    # attempt is left running, recovered as interrupted on the next open and sent then.
    db = tmp_path / "held.db"
    first = start_server(db, now_clock)
    try:
        due = now_clock.now() + timedelta(seconds=10)
        now_clock.advance(9.99)
        _, eid = held_cue(first, receiver, due)
    finally:
        first.app.close()
    assert hooks(receiver) == []
    second = reopen(db, first, cueapi.ManualClock(due))
    try:
        ex = settled(second, eid, "success")
        assert [(a["number"], a["status"]) for a in ex["attempt_log"]] == [(1, "interrupted"), (2, "success")]
        (got,) = receiver.wait(1)
        assert got.headers["x-cueapi-attempt"] == "2"
        assert instant(got.json()["scheduled_for"]) == due
    finally:
        second.app.close()


# -- restarts ----------------------------------------------------------------------------------------


def reopen(db: Path, first: Server, clock: cueapi.ManualClock | None = None) -> Server:
    """A new server on the same database file; its user is the first server's."""
    app = cueapi.App(location(db), clock=clock, workers=2)
    url = app.serve("127.0.0.1", 0, allow_private_targets=True)
    return Server(app, url, first.key, first.secret, db)


@pytest.mark.parametrize("reopen_after", [90, 30], ids=["retry-due-while-down", "retry-due-after-start"])
def test_restart_in_the_middle_of_a_retry_ladder(
    tmp_path: Path, receiver: Receiver, beacon: Receiver, reopen_after: int
) -> None:
    db = tmp_path / "restart.db"
    t0 = datetime.now(timezone.utc).replace(microsecond=0)
    first = start_server(db, cueapi.ManualClock(t0))
    receiver.answer = answering(500)
    try:
        cue = webhook_cue(first, receiver.url + "/hook", retry={"max_attempts": 3, "backoff_minutes": [1]})
        eid = fire(first, cue)
        receiver.wait(1)
        ex = settled(first, eid, "retrying")
        assert instant(ex["next_retry"]) == t0 + timedelta(minutes=1)
    finally:
        first.app.close()

    receiver.answer = answering(200, b'{"status": "received"}', JSON)
    clock = cueapi.ManualClock(t0 + timedelta(seconds=reopen_after))
    second = reopen(db, first, clock)
    try:
        if reopen_after < 60:
            # The persisted retry time holds across the restart: not before t0 + 60 s ...
            advance(second, clock, beacon, 59 - reopen_after)
            assert len(hooks(receiver)) == 1
            assert second.execution(eid)["status"] == "retrying"
            clock.advance(1)
        ex = settled(second, eid, "success")  # ... and then it goes out.
        got = hooks(receiver)
        assert attempt_numbers(got) == [1, 2]  # the retry; attempt 1 was not sent again
        assert {r.headers["x-cueapi-execution-id"] for r in got} == {eid}
        assert {r.headers["webhook-id"] for r in got} == {ex["idempotency_key"]}
        sent = max(60, reopen_after)
        assert got[1].headers["x-cueapi-timestamp"] == str(int((t0 + timedelta(seconds=sent)).timestamp()))
        assert cueapi.verify_webhook(
            got[1].body,
            got[1].headers["x-cueapi-signature"],
            first.secret,
            got[1].headers["x-cueapi-timestamp"],
        )
        assert ex["attempts"] == 2
        assert [(a["number"], a["status"]) for a in ex["attempt_log"]] == [(1, "failed"), (2, "success")]
    finally:
        second.app.close()


def test_a_delivery_cut_off_by_shutdown_is_recorded_as_interrupted_and_retried(
    tmp_path: Path, receiver: Receiver
) -> None:
    # Attempt 1 reaches the receiver, which holds it longer than close() waits for deliveries (10 s)
    # and shorter than the delivery timeout (60 s): the process stops with the attempt in flight.
    seen, release = threading.Event(), threading.Event()

    def answer(r: Received) -> Answer:
        if r.headers.get("x-cueapi-attempt") == "1":
            seen.set()
            release.wait(60)
        return (200, JSON, b'{"status": "received"}', 0.0)

    receiver.answer = answer
    db = tmp_path / "crash.db"
    first = start_server(db)
    try:
        cue = webhook_cue(
            first,
            receiver.url + "/hook",
            retry={"max_attempts": 3, "backoff_minutes": [1]},
            delivery={"timeout_seconds": 60},
        )
        eid = fire(first, cue)
        assert seen.wait(15), "attempt 1 never reached the receiver"
        assert first.execution(eid)["status"] == "delivering"
    finally:
        first.app.close()
    second = reopen(db, first)
    try:
        ex = settled(second, eid, "success")
        assert ex["attempts"] == 2
        log = ex["attempt_log"]
        assert [(a["number"], a["status"]) for a in log] == [(1, "interrupted"), (2, "success")]
        assert log[0]["error"] and "interrupted" in log[0]["error"]
        (retry,) = [r for r in receiver.requests if r.headers.get("x-cueapi-attempt") == "2"]
        assert retry.headers["x-cueapi-execution-id"] == eid
        assert retry.headers["webhook-id"] == ex["idempotency_key"]
    finally:
        release.set()
        second.app.close()
    # The held attempt 1 is answered only now, after both engines stopped: it was sent once.
    got = receiver.wait(2)
    assert sorted(attempt_numbers(got)) == [1, 2]


# -- the SSRF guard ----------------------------------------------------------------------------------


def _loopback_hostname() -> str | None:
    """This machine's host name if it resolves only to loopback addresses (so the guard's resolver,
    not its name list, is what refuses it); otherwise None."""
    name = socket.gethostname()
    try:
        addrs = {a[4][0] for a in socket.getaddrinfo(name, None)}
    except OSError:
        return None
    if name.lower() == "localhost" or not addrs:
        return None
    return name if all(a.startswith("127.") or a == "::1" for a in addrs) else None


def strict_server(db: Path) -> Server:
    """A server as deployed: private and loopback targets refused."""
    app = cueapi.App(location(db), workers=2)
    url = app.serve("127.0.0.1", 0)
    r = httpx.post(url + "/v1/auth/register", json={"email": "strict@example.com"}, timeout=30)
    if r.status_code == 201:
        return Server(app, url, r.json()["api_key"], r.json()["webhook_secret"], db)
    app.close()
    raise AssertionError(r.text)


def test_the_guard_refuses_private_targets_at_creation(
    tmp_path: Path, server: Server, receiver: Receiver
) -> None:
    port = receiver.url.rsplit(":", 1)[1]
    strict = strict_server(tmp_path / "strict.db")
    try:
        private = [
            f"http://localhost:{port}/hook",
            f"http://127.0.0.1:{port}/hook",
            f"http://[::1]:{port}/hook",
            "http://10.0.0.1/hook",
            "http://192.168.1.1/hook",
            "http://[::ffff:127.0.0.1]/hook",
        ]
        always = [
            "http://169.254.169.254/latest/meta-data/",
            "http://metadata.google.internal/",
            "http://0.0.0.0/",
            "http://[fe80::1]/",
        ]
        host = _loopback_hostname()
        if host:
            private.append(f"http://{host}:{port}/hook")
        for s, urls in ((strict, private + always), (server, always)):
            for url in urls:
                r = s.call(
                    "POST",
                    "/v1/cues",
                    {"name": "x", "schedule": {"type": "once", "at": FAR}, "callback": {"url": url}},
                )
                assert r.status_code == 400, (url, r.text)
                assert r.json()["error"]["code"] == "invalid_callback_url", (url, r.text)
            assert s.call("GET", "/v1/cues").json()["total"] == 0
        # The test server (allow_private_targets) accepts loopback: what the other tests rely on.
        assert webhook_cue(server, f"http://localhost:{port}/hook")["warning"] is None
        assert receiver.requests == []
    finally:
        strict.app.close()


def test_the_guard_checks_again_at_delivery(tmp_path: Path, receiver: Receiver) -> None:
    # Cues stored while loopback was allowed, delivered by a server that refuses it: every attempt
    # is checked where it goes, not only when the cue was created. Each URL takes another path
    # through the guard: an address literal, a refused name, a name the checking resolver refuses.
    db = tmp_path / "guard.db"
    port = receiver.url.rsplit(":", 1)[1]
    urls = {
        f"http://127.0.0.1:{port}/hook": "refused: 127.0.0.1 is a loopback address",
        f"http://localhost:{port}/hook": "refused: localhost is loopback",
    }
    host = _loopback_hostname()
    if host:
        urls[f"http://{host}:{port}/hook"] = f"{host} resolves to 127."
    first = start_server(db)
    try:
        cues = {url: webhook_cue(first, url, retry={"max_attempts": 0}) for url in urls}
    finally:
        first.app.close()
    app = cueapi.App(location(db), workers=2)
    try:
        strict = Server(app, app.serve("127.0.0.1", 0), first.key, first.secret, db)
        for url, cue in cues.items():
            ex = settled(strict, fire(strict, cue), "failed")
            message = ex["error_message"] or ""
            assert message.startswith("refused:"), message
            assert urls[url] in message, message
            assert "which cueapi does not call" in message
            assert ex["http_status"] is None
            assert [a["status"] for a in ex["attempt_log"]] == ["failed"]
    finally:
        app.close()
    assert receiver.requests == []


# -- many at once ------------------------------------------------------------------------------------


def test_two_hundred_deliveries_arrive_exactly_once(server: Server, receiver: Receiver) -> None:
    cue = webhook_cue(server, receiver.url + "/hook")
    with ThreadPoolExecutor(8) as pool:
        fired = set(pool.map(lambda _i: fire(server, cue), range(200)))
    assert len(fired) == 200
    got = receiver.wait(200, timeout=60)

    def all_success() -> bool:
        r = server.call(
            "GET", "/v1/executions", params={"cue_id": cue["id"], "status": "success", "limit": 1}
        )
        return bool(r.json()["total"] == 200)

    wait_for(all_success, 60, "200 successful executions")
    got = list(receiver.requests)
    ids = [r.headers["x-cueapi-execution-id"] for r in got]
    assert len(ids) == 200  # no duplicates
    assert set(ids) == fired
    assert {r.json()["execution_id"] for r in got} == fired
    assert attempt_numbers(got) == [1] * 200
    r = server.call("GET", "/v1/executions", params={"cue_id": cue["id"], "limit": 1000})
    assert r.json()["total"] == 200
    assert {e["status"] for e in r.json()["executions"]} == {"success"}
    assert {e["attempts"] for e in r.json()["executions"]} == {1}
