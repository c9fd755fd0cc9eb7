"""Webhook receivers that misbehave, against a real ``cueapi serve`` subprocess over loopback: a
500, a receiver that hangs, a refused connection, a reset in the middle of an answer, an answer
dripped one byte at a time, an answer of 100 MB (or without end), garbage instead of HTTP, and
invalid JSON where an inline outcome would be. Each time the execution record says what
happened (every attempt with its reason), the server keeps serving other cues, and its memory
stays within a stated bound."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Receiver, wait_for
from tests.faults.harness import (
    MB,
    Behaviour,
    FaultReceiver,
    RssSampler,
    Serve,
    answer,
    buffered_at_most,
    drip,
    flood,
    hang,
    head,
    refused_port,
    reset_after,
)

# The most a test may add to the server's resident memory, start to end of the module, and the
# most a burst of hostile answers may add at its peak. Measured on a debug build (x86-64): the
# server starts at about 64 MB, and neither figure moved by more than a few MB in any case here.
# A server that buffered one 100 MB answer would break both.
RSS_DRIFT = 32 * MB
RSS_BURST = 48 * MB

# Delivery deadline of these cues: every attempt of a hostile receiver ends by then.
TIMEOUT_S = 1
# How late after its deadline an attempt may end on a loaded 2-core machine with a debug build.
SLACK_S = 1.5


def durations(execution: dict[str, Any]) -> list[float]:
    """Seconds each attempt took."""
    return [a["duration_ms"] / 1000 for a in execution["attempt_log"]]


@pytest.fixture(scope="module")
def rss_base(serve: Serve) -> int:
    return serve.rss()


@pytest.fixture(autouse=True)
def still_serving(serve: Serve, rss_base: int, good: Receiver) -> Iterator[None]:
    """After each case: /health is 200, a cue to a good receiver is delivered at once, and the
    server's memory has not grown past the bound."""
    yield
    health = serve.health()
    assert health.status_code == 200, health.text
    cue = serve.cue(callback={"url": good.url + "/ok"}, retry={"max_attempts": 0})
    started = time.monotonic()
    ok = serve.settled(serve.fire(cue), "success", "failed", timeout=10)
    assert ok["status"] == "success", ok
    assert time.monotonic() - started < 5
    grown = serve.rss() - rss_base
    assert grown < RSS_DRIFT, f"the server's memory grew by {grown / MB:.1f} MB"


def webhook(serve: Serve, url: str, *, retries: int = 0, backoff: list[float] | None = None) -> str:
    """Creates a cue calling ``url`` (deadline TIMEOUT_S) and fires it; returns the execution."""
    cue = serve.cue(
        callback={"url": url},
        retry={"max_attempts": retries, "backoff_minutes": backoff or [0]},
        delivery={"timeout_seconds": TIMEOUT_S},
    )
    return serve.fire(cue)


# -- answers that are HTTP, but not success ----------------------------------------------------------


def test_a_500_is_retried_with_backoff_then_failed_with_its_reason(serve: Serve) -> None:
    r = Receiver()
    try:
        r.answer = lambda _r: (500, {"Content-Type": "text/plain"}, b"internal error", 0.0)
        # Two retries, 0.6 s and 1.2 s after the attempt before.
        eid = webhook(serve, r.url + "/hook", retries=2, backoff=[0.01, 0.02])
        ex = serve.settled(eid, "failed")
        got = r.wait(3)
    finally:
        r.close()
    assert [g.headers["x-cueapi-attempt"] for g in got] == ["1", "2", "3"]
    assert got[1].at - got[0].at >= 0.6 - 0.05
    assert got[2].at - got[1].at >= 1.2 - 0.05
    assert ex["attempts"] == 3
    assert ex["http_status"] == 500
    assert ex["error_message"] == "the webhook endpoint failed with a server error (500)"
    assert ex["response_body"] == "internal error"
    assert [(a["number"], a["status"], a["http_status"]) for a in ex["attempt_log"]] == [
        (1, "failed", 500),
        (2, "failed", 500),
        (3, "failed", 500),
    ]
    alerts = serve.call("GET", "/v1/alerts", params={"cue_id": ex["cue_id"]}).json()["alerts"]
    assert [a["alert_type"] for a in alerts] == ["retries_exhausted"]


def test_a_receiver_that_hangs_times_out_at_the_cues_deadline_and_is_retried(serve: Serve) -> None:
    before = serve.metric("cueapi_deliveries_total", result="timeout")
    with FaultReceiver(hang) as r:
        eid = webhook(serve, r.url, retries=1)
        ex = serve.settled(eid, "failed")
        conns = r.wait_ended(2)
    assert ex["attempts"] == 2
    assert ex["http_status"] is None
    assert ex["error_message"] == f"the webhook endpoint timed out after {TIMEOUT_S} s"
    assert [(a["status"], a["error"]) for a in ex["attempt_log"]] == [
        ("failed", f"the webhook endpoint timed out after {TIMEOUT_S} s")
    ] * 2
    assert all(TIMEOUT_S - 0.05 <= d < TIMEOUT_S + SLACK_S for d in durations(ex)), durations(ex)
    # The server hung up at its deadline: the receiver saw each connection closed.
    for c in conns:
        assert c.ended is not None and c.ended - c.accepted < TIMEOUT_S + SLACK_S
    assert serve.metric("cueapi_deliveries_total", result="timeout") == before + 2


def test_a_refused_connection_is_recorded_with_its_reason(serve: Serve) -> None:
    with refused_port() as port:
        eid = webhook(serve, f"http://127.0.0.1:{port}/hook", retries=1)
        ex = serve.settled(eid, "failed")
    assert ex["attempts"] == 2
    assert ex["http_status"] is None
    for a in ex["attempt_log"]:
        assert a["status"] == "failed"
        assert a["error"].startswith("could not connect to the webhook endpoint")
        assert "Connection refused" in a["error"]
    assert ex["error_message"] == ex["attempt_log"][-1]["error"]


@pytest.mark.parametrize(
    ("partial", "status", "reason"),
    [
        # The head, and 1,000 of the 100,000 bytes it announces.
        (head(200, 100_000) + b"x" * 1000, 200, "reading the response failed"),
        # Part of the head.
        (b"HTTP/1.1 200 OK\r\nContent-Le", None, "the request failed"),
    ],
    ids=["mid-body", "mid-head"],
)
def test_a_reset_in_the_middle_of_the_answer_fails_the_attempt(
    serve: Serve, partial: bytes, status: int | None, reason: str
) -> None:
    with FaultReceiver(reset_after(partial)) as r:
        eid = webhook(serve, r.url, retries=1)
        ex = serve.settled(eid, "failed")
        r.wait(2)
    assert ex["attempts"] == 2
    assert ex["http_status"] == status
    for a in ex["attempt_log"]:
        assert a["status"] == "failed" and a["http_status"] == status
        assert a["error"].startswith(reason) and "reset" in a["error"], a["error"]
    if status == 200:
        # Not delivered, although the status was 2xx: the answer never arrived whole.
        assert ex["delivered_at"] is None
        assert ex["response_body"] == "x" * 1000


@pytest.mark.parametrize(
    ("behaviour", "status", "error"),
    [
        (drip(b"", b"H", 0.05), None, f"the webhook endpoint timed out after {TIMEOUT_S} s"),
        (
            drip(head(200, 10**9), b"x", 0.05),
            200,
            f"the webhook endpoint answered 200 but did not finish its body within {TIMEOUT_S} s",
        ),
    ],
    ids=["head", "body"],
)
def test_an_answer_dripped_byte_by_byte_ends_at_the_deadline(
    serve: Serve, behaviour: Behaviour, status: int | None, error: str
) -> None:
    # A byte every 50 ms keeps any idle timeout from firing: only a total deadline ends it.
    with FaultReceiver(behaviour) as r:
        eid = webhook(serve, r.url)
        ex = serve.settled(eid, "failed")
        [conn] = r.wait_ended(1)
    assert ex["attempts"] == 1
    assert ex["http_status"] == status
    assert ex["error_message"] == error
    [took] = durations(ex)
    assert TIMEOUT_S - 0.05 <= took < TIMEOUT_S + SLACK_S, took
    # The server hung up on the drip, which had sent about 20 bytes a second until then.
    assert conn.ended is not None and conn.ended - conn.accepted < TIMEOUT_S + SLACK_S
    assert conn.sent < 200


# -- answers too big or not HTTP at all --------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer_head", "status"),
    [
        (head(200, 100 * MB), "success"),
        (head(500, 100 * MB), "failed"),
        # No length: the body ends when the connection does, which is never.
        (head(200, Connection="close"), "success"),
    ],
    ids=["200", "500", "200-unbounded"],
)
def test_a_huge_answer_is_read_only_as_far_as_needed(serve: Serve, answer_head: bytes, status: str) -> None:
    with FaultReceiver(flood(answer_head, 100 * MB)) as r, RssSampler(serve.proc.pid) as rss:
        eid = webhook(serve, r.url)
        ex = serve.settled(eid, status)
        [conn] = r.wait_ended(1)
        grown = rss.stop()
    # The server read the start (for an inline outcome) and hung up: what the receiver got rid
    # of is what the kernel's socket buffers took, not 100 MB.
    assert buffered_at_most() < 100 * MB
    assert conn.sent < buffered_at_most(), conn.sent
    assert grown < RSS_BURST, grown
    assert ex["attempts"] == 1
    assert ex["response_body"] == "x" * 2000  # the part kept on the record
    if status == "success":
        assert ex["outcome_state"] is None  # cut short, the body is no outcome
    else:
        assert ex["http_status"] == 500


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (answer(b"\x00\xff\xfeNOT HTTP AT ALL\r\n\r\n"), "invalid HTTP version parsed"),
        (answer(b"HTTP/1.1 200 OK\r\n\x00\x01\x02\x03\r\n\r\n"), "invalid HTTP header parsed"),
        (answer(b"HTTP/1.1 999999 Whatever\r\n\r\n"), "invalid HTTP status-code parsed"),
        # A head line without end: refused once it passes the client's limit, not buffered.
        (flood(b"HTTP/1.1 200 OK\r\nX-Junk: ", 100 * MB, b"a"), "message head is too large"),
        (answer(b""), "connection closed before message completed"),
    ],
    ids=["binary", "bad-header", "bad-status", "endless-head", "empty"],
)
def test_garbage_instead_of_http_fails_the_attempt_with_the_parsers_reason(
    serve: Serve, behaviour: Behaviour, reason: str
) -> None:
    with FaultReceiver(behaviour) as r:
        eid = webhook(serve, r.url, retries=1)
        ex = serve.settled(eid, "failed")
        conns = r.wait_ended(2)
    assert ex["attempts"] == 2
    assert ex["http_status"] is None
    for a in ex["attempt_log"]:
        assert a["status"] == "failed"
        assert a["error"].startswith("the request failed") and reason in a["error"], a["error"]
    assert all(c.sent < buffered_at_most() for c in conns)


@pytest.mark.parametrize(
    "body",
    [b'{"success": true, "result": "done"', b'{"success": "yes"}', b"\xff\xfe{not json"],
    ids=["truncated", "wrong-type", "not-utf8"],
)
def test_invalid_json_in_a_200_is_delivered_without_an_outcome(serve: Serve, body: bytes) -> None:
    r = Receiver()
    try:
        r.answer = lambda _r: (200, {"Content-Type": "application/json"}, body, 0.0)
        eid = webhook(serve, r.url + "/hook", retries=2)
        ex = serve.settled(eid, "success")
    finally:
        r.close()
    # Delivered (a 2xx), once; no outcome was read from the body, so the outcome deadline runs
    # and the receiver may still report through the API.
    assert ex["attempts"] == 1
    assert ex["http_status"] == 200
    assert ex["outcome_state"] is None
    assert ex["outcome_deadline_at"] is not None
    assert ex["response_body"] == body.decode(errors="replace")
    report = serve.call("POST", f"/v1/executions/{eid}/outcome", {"success": True, "result": "late"})
    assert report.status_code == 200, report.text
    assert serve.execution(eid)["outcome_state"] == "reported_success"


# -- memory under a burst ----------------------------------------------------------------------------


def test_a_burst_of_hostile_answers_keeps_memory_bounded(serve: Serve) -> None:
    """Ninety deliveries at once: 30 answers of 100 MB without end, 30 endless heads, 30 that
    hang. The server reads a bounded part of each, hangs up, and records every one."""
    with (
        FaultReceiver(flood(head(200, Connection="close"), 100 * MB)) as floods,
        FaultReceiver(flood(b"HTTP/1.1 200 OK\r\nX-Junk: ", 100 * MB, b"a")) as heads,
        FaultReceiver(hang) as hangs,
        RssSampler(serve.proc.pid) as rss,
    ):
        ids = [webhook(serve, r.url) for r in (floods, heads, hangs) for _ in range(30)]
        settled = wait_for(
            lambda: all(serve.execution(i)["status"] in ("success", "failed") for i in ids),
            60,
            "ninety hostile deliveries to be recorded",
        )
        assert settled
        grown = rss.stop()
        offered = sum(c.sent for r in (floods, heads) for c in r.connections)
    statuses = [serve.execution(i)["status"] for i in ids]
    assert statuses == ["success"] * 30 + ["failed"] * 60
    assert grown < RSS_BURST, f"peak {grown / MB:.1f} MB over the start"
    assert offered < 60 * buffered_at_most()
    print(f"burst: peak RSS +{grown / MB:.1f} MB, {offered / MB:.0f} MB written by the receivers")
