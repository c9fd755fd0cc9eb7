"""Operating `cueapi serve`: /health and /status (503 when the store cannot be written or the fire
loop is not running), /v1/info, /metrics (Prometheus text, parsed with prometheus_client), /v1/usage,
per-key rate limiting and the echo endpoints, against a live server."""

from __future__ import annotations

import importlib.metadata
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cueapi
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import START, Received, Receiver, Server, start_server, wait_for

VERSION = importlib.metadata.version("cueapi")
EXEMPT = ["/health", "/status", "/v1/info", "/metrics"]


# -- helpers ---------------------------------------------------------------------------------------


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def health(server: Server) -> dict[str, Any]:
    r = server.call("GET", "/health", key=None)
    assert r.status_code in (200, 503), r.text
    return dict(r.json())


def scrape(server: Server) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics, by name and labels."""
    r = server.call("GET", "/metrics", key=None)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return metrics[(name, frozenset(labels.items()))]


def webhook_cue(server: Server, url: str, name: str, cron: str = "0 3 * * *", **extra: Any) -> dict[str, Any]:
    return server.cue(
        name=name,
        schedule={"type": "recurring", "cron": cron},
        callback={"url": url},
        retry={"max_attempts": 0},
        **extra,
    )


def fire(server: Server, cue: dict[str, Any]) -> str:
    r = server.call("POST", f"/v1/cues/{cue['id']}/fire")
    assert r.status_code in (200, 201, 202), r.text
    return str(r.json()["id"])


def settled(server: Server, execution_id: str, status: str) -> dict[str, Any]:
    return wait_for(
        lambda: (e := server.execution(execution_id))["status"] == status and e,
        what=f"{execution_id} {status}",
    )


class Gate:
    """A receiver answer that holds every request until ``open()``."""

    def __init__(self, answer: tuple[int, dict[str, str], bytes, float]) -> None:
        self.arrived = threading.Event()
        self.gate = threading.Event()
        self.answer = answer

    def __call__(self, _r: Received) -> tuple[int, dict[str, str], bytes, float]:
        self.arrived.set()
        self.gate.wait(30)
        return self.answer

    def open(self) -> None:
        self.gate.set()


@pytest.fixture
def manual(tmp_path: Path) -> Iterator[tuple[Server, cueapi.ManualClock]]:
    """A server on a manual clock at START that never refuses a request."""
    clock = cueapi.ManualClock(START)
    s = start_server(tmp_path / "manual.db", clock)
    yield s, clock
    s.app.close()


def limited(
    tmp_path: Path, limit: int, name: str = "limited", **serve: Any
) -> tuple[Server, cueapi.ManualClock]:
    """A server on a manual clock at START allowing ``limit`` requests a minute, its user created
    without a request (the address's allowance is whole)."""
    clock = cueapi.ManualClock(START)
    db = tmp_path / f"{name}.db"
    app = cueapi.App(db, clock=clock, workers=2)
    url = app.serve("127.0.0.1", 0, allow_private_targets=True, rate_limit_per_minute=limit, **serve)
    key, secret = app.create_user("owner@example.com")
    return Server(app, url, key, secret, db), clock


# -- /health, /status, /v1/info --------------------------------------------------------------------


def test_health_reports_its_checks_without_a_key(server: Server) -> None:
    r = server.call("GET", "/health", key=None)
    assert r.status_code == 200, r.text
    h = r.json()
    assert h["status"] == "healthy" and h["failing"] == []
    assert h["version"] == VERSION
    stamp = datetime.fromisoformat(h["timestamp"].replace("Z", "+00:00"))
    assert abs((stamp - datetime.now(timezone.utc)).total_seconds()) < 60
    store = h["checks"]["store"]
    assert store["status"] == "ok" and 0 <= store["latency_ms"] < 2000
    loop = h["checks"]["fire_loop"]
    assert loop["status"] == "ok" and loop["started_at"].endswith("Z") and loop["overdue_ms"] == 0
    assert set(h["queue"]) == {
        "pending_webhooks",
        "pending_retries",
        "pending_worker_claims",
        "deliveries_in_flight",
        "local_queue",
        "executions",
    }
    assert h["queue"]["executions"]["worker"] == {"pending": 0, "delivering": 0, "retrying": 0}
    assert server.call("GET", "/status", key=None).json() == {"status": "healthy"}


def test_health_counts_what_waits_in_every_queue(server: Server, receiver: Receiver) -> None:
    # A worker execution waiting for a claim.
    worker = server.cue(
        name="report", transport="worker", schedule={"type": "recurring", "cron": "0 3 * * *"}
    )
    fire(server, worker)
    # A webhook delivery held open by its receiver.
    gate = Gate((200, {}, b"{}", 0.0))
    receiver.answer = gate
    held = fire(server, webhook_cue(server, receiver.url + "/held", "held"))
    assert gate.arrived.wait(15)
    h = health(server)
    assert h["queue"]["pending_worker_claims"] == 1
    assert h["queue"]["executions"]["worker"]["pending"] == 1
    assert h["queue"]["deliveries_in_flight"] == 1
    assert h["queue"]["executions"]["webhook"]["delivering"] == 1
    gate.open()
    settled(server, held, "success")
    wait_for(lambda: health(server)["queue"]["deliveries_in_flight"] == 0, what="the delivery recorded")
    # A failed delivery waiting for its retry a minute later.
    receiver.answer = lambda _r: (500, {}, b"", 0.0)
    flaky = server.cue(
        name="flaky",
        schedule={"type": "recurring", "cron": "0 3 * * *"},
        callback={"url": receiver.url + "/flaky"},
        retry={"max_attempts": 2, "backoff_minutes": [1]},
    )
    settled(server, fire(server, flaky), "retrying")
    h = health(server)
    assert h["queue"]["pending_retries"] == 1
    assert h["queue"]["pending_webhooks"] == 0
    assert h["queue"]["executions"]["webhook"] == {"pending": 0, "delivering": 0, "retrying": 1}
    assert h["status"] == "healthy"


def test_health_counts_local_runs_waiting_for_a_handler_thread(tmp_path: Path) -> None:
    app = cueapi.App(tmp_path / "local.db", workers=1)
    gate = threading.Event()
    started = threading.Event()

    @app.cue("0 3 * * *", name="slow", overlap="allow")
    def slow(ctx: cueapi.Context) -> None:
        started.set()
        gate.wait(30)

    try:
        url = app.serve("127.0.0.1", 0, rate_limit_per_minute=0)
        app.fire("slow")
        assert started.wait(15)
        waiting = app.fire("slow")
        h = httpx.get(url + "/health", timeout=30).json()
        assert h["queue"]["local_queue"] == 1
        assert h["queue"]["executions"]["local"] == {"pending": 1, "delivering": 1, "retrying": 0}
        gate.set()
        wait_for(lambda: app.execution(waiting).status == "success", what="the queued run")
        h = httpx.get(url + "/health", timeout=30).json()
        assert h["queue"]["local_queue"] == 0
    finally:
        gate.set()
        app.close()


def test_health_and_status_answer_503_while_the_store_cannot_be_written(server: Server) -> None:
    # Another process holds the database's write lock: the writer cannot commit. (A process of
    # its own: POSIX locks are per process, so a connection in this one would not block the
    # engine's, and closing it would drop the engine's locks.)
    hold = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
        "c.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
        "c.execute('ROLLBACK')\n"
    )
    blocker = subprocess.Popen(
        [sys.executable, "-c", hold, str(server.db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert blocker.stdout is not None and blocker.stdout.readline().strip() == "locked"
        r = server.call("GET", "/health", key=None)
        assert r.status_code == 503, r.text
        h = r.json()
        assert h["status"] == "degraded" and h["failing"] == ["store"]
        assert h["checks"]["store"] == {"status": "error", "error": "the writer did not commit within 2 s"}
        assert h["checks"]["fire_loop"]["status"] == "ok"
        r = server.call("GET", "/status", key=None)
        assert r.status_code == 503
        assert r.json() == {
            "status": "down",
            "reason": "the store is not writable: the writer did not commit within 2 s",
        }
    finally:
        blocker.communicate("\n", timeout=30)
    assert blocker.returncode == 0
    wait_for(
        lambda: server.call("GET", "/health", key=None).status_code == 200, timeout=30, what="health again"
    )
    assert server.call("GET", "/status", key=None).json() == {"status": "healthy"}


def test_info_describes_the_server(server: Server) -> None:
    r = server.call("GET", "/v1/info", key=None)
    assert r.status_code == 200
    assert r.json() == {
        "server": "cueapi",
        "version": VERSION,
        "authorization_backend": "per_user_api_key",
        "authentication_paths": {"per_user_api_key": True, "internal_token_with_on_behalf_of": False},
        "disabled_primitives": ["device_code", "quotas"],
        "registration": "local",
        "rate_limit": {"requests_per_minute": 1_000_000},
    }


# -- /metrics --------------------------------------------------------------------------------------


def test_metrics_move_with_real_deliveries_outcomes_and_fire_lag(
    manual: tuple[Server, cueapi.ManualClock], receiver: Receiver
) -> None:
    server, clock = manual
    before = scrape(server)
    assert sample(before, "cueapi_build_info", version=VERSION) == 1
    assert sample(before, "cueapi_fire_lag_seconds_count") == 0
    assert sample(before, "cueapi_store_up") == 1 and sample(before, "cueapi_fire_loop_up") == 1

    def answer(r: Received) -> tuple[int, dict[str, str], bytes, float]:
        if r.path == "/fails":
            return 500, {}, b"", 0.0
        if r.path == "/gone":
            return 410, {}, b"", 0.0
        if r.path == "/inline":
            return 200, {"Content-Type": "application/json"}, b'{"success": false, "error": "disk full"}', 0.0
        return 200, {}, b"{}", 0.0

    receiver.answer = answer
    # A tick of the schedule, released at its instant on the manual clock: one lag of 0 s.
    tick = server.cue(
        name="tick",
        schedule={"type": "once", "at": iso(START + timedelta(minutes=1))},
        callback={"url": receiver.url + "/ok"},
    )
    clock.advance(60)
    receiver.wait(1)
    tick_exec = wait_for(
        lambda: (
            (e := server.call("GET", f"/v1/cues/{tick['id']}/executions").json()["data"])
            and e[0]["status"] == "success"
            and e[0]
        ),
        what="the tick delivered",
    )
    # An outcome reported over the API, then verified.
    r = server.call("POST", f"/v1/executions/{tick_exec['id']}/outcome", {"success": True})
    assert r.status_code == 200, r.text
    r = server.call("POST", f"/v1/executions/{tick_exec['id']}/verify", {"valid": True})
    assert r.status_code == 200, r.text
    # A failure that is retried, a 410, an inline failure outcome, an address nobody listens on.
    retried = server.cue(
        name="retried",
        schedule={"type": "recurring", "cron": "0 3 * * *"},
        callback={"url": receiver.url + "/fails"},
        retry={"max_attempts": 1, "backoff_minutes": [1]},
    )
    settled(server, fire(server, retried), "retrying")
    settled(server, fire(server, webhook_cue(server, receiver.url + "/gone", "gone")), "failed")
    settled(server, fire(server, webhook_cue(server, receiver.url + "/inline", "inline")), "failed")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    settled(server, fire(server, webhook_cue(server, f"http://127.0.0.1:{port}/", "nobody")), "failed")
    # The retry comes due a minute later on the manual clock and is sent (and fails for good).
    clock.advance(60)
    wait_for(
        lambda: sample(scrape(server), "cueapi_deliveries_total", result="failed") == 2, what="the retry sent"
    )
    after = scrape(server)
    deliveries = {r: sample(after, "cueapi_deliveries_total", result=r) for r in ("delivered", "failed")}
    assert deliveries == {"delivered": 2, "failed": 2}
    assert sample(after, "cueapi_deliveries_total", result="gone") == 1
    assert sample(after, "cueapi_deliveries_total", result="error") == 1
    assert sample(after, "cueapi_deliveries_total", result="timeout") == 0
    assert sample(after, "cueapi_retries_scheduled_total") == 1
    # Two timer entries released (the tick and the retry), each at its instant exactly.
    assert sample(after, "cueapi_fire_lag_seconds_count") == 2
    assert sample(after, "cueapi_fire_lag_seconds_bucket", le="0.001") == 2
    assert sample(after, "cueapi_fire_lag_seconds_bucket", le="+Inf") == 2
    assert sample(after, "cueapi_fire_lag_seconds_sum") == 0
    outcomes = {
        s: sample(after, "cueapi_outcomes_total", state=s)
        for s in ("reported_success", "verified_success", "reported_failure", "outcome_timeout")
    }
    assert outcomes == {
        "reported_success": 1,
        "verified_success": 1,
        "reported_failure": 1,
        "outcome_timeout": 0,
    }
    assert sample(after, "cueapi_executions_open", transport="webhook", status="retrying") == 0
    assert sample(after, "cueapi_deliveries_in_flight") == 0
    assert health(server)["checks"]["fire_loop"]["last_fire_lag_ms"] == 0


def test_metrics_count_timeouts_and_refusals(tmp_path: Path, receiver: Receiver) -> None:
    db = tmp_path / "guard.db"
    first = start_server(db)
    try:
        gate = Gate((200, {}, b"{}", 0.0))
        receiver.answer = gate
        slow = webhook_cue(first, receiver.url + "/slow", "slow", delivery={"timeout_seconds": 1})
        settled(first, fire(first, slow), "failed")
        gate.open()
        m = scrape(first)
        assert sample(m, "cueapi_deliveries_total", result="timeout") == 1
        # The failure raised its alert in the same transaction; its email waits, or was skipped.
        assert sample(m, "cueapi_alerts_total", type="retries_exhausted") == 1
        assert sum(v for (name, labels), v in m.items() if name == "cueapi_notifications") == 1
        # Created while private targets were allowed; sent by a server that refuses them.
        guarded = webhook_cue(first, receiver.url + "/guarded", "guarded")
    finally:
        first.app.close()
    app = cueapi.App(db, workers=2)
    try:
        strict = Server(app, app.serve("127.0.0.1", 0, rate_limit_per_minute=0), first.key, first.secret, db)
        ex = settled(strict, fire(strict, guarded), "failed")
        assert ex["error_message"].startswith("refused:")
        m = scrape(strict)
        assert sample(m, "cueapi_deliveries_total", result="refused") == 1
        assert sample(m, "cueapi_deliveries_total", result="timeout") == 0  # counters start with the process
        assert sample(m, "cueapi_alerts_total", type="retries_exhausted") == 2  # alerts are stored
    finally:
        app.close()


def test_operations_endpoints_are_never_limited(tmp_path: Path) -> None:
    server, _clock = limited(tmp_path, 1)
    try:
        assert server.call("GET", "/v1/cues").status_code == 200
        assert server.call("GET", "/v1/cues").status_code == 429
        for _ in range(3):
            for path in EXEMPT:
                for key in (True, None):
                    r = server.call("GET", path, key=key)
                    assert r.status_code == 200, (path, r.text)
                    assert "x-ratelimit-limit" not in r.headers
        assert sample(scrape(server), "cueapi_rate_limited_total") == 1
    finally:
        server.app.close()


# -- /v1/usage -------------------------------------------------------------------------------------


def test_usage_counts_this_months_cues_executions_and_outcomes(
    manual: tuple[Server, cueapi.ManualClock], receiver: Receiver
) -> None:
    server, clock = manual
    receiver.answer = lambda r: (
        (200, {"Content-Type": "application/json"}, b'{"success": true}', 0.0)
        if r.path == "/ok"
        else (500, {}, b"", 0.0)
    )
    # Yearly cues: no tick falls in the month the clock is moved through below.
    good = webhook_cue(server, receiver.url + "/ok", "good", cron="0 3 1 1 *")
    bad = webhook_cue(server, receiver.url + "/bad", "bad", cron="0 3 1 1 *")
    paused = webhook_cue(server, receiver.url + "/ok", "paused", cron="0 3 1 1 *")
    assert server.call("PATCH", f"/v1/cues/{paused['id']}", {"status": "paused"}).status_code == 200
    settled(server, fire(server, good), "success")
    settled(server, fire(server, good), "success")
    settled(server, fire(server, bad), "failed")
    # Another user's cues and runs are not counted.
    other_key, _ = server.register("other@example.com")
    other = server.call(
        "POST",
        "/v1/cues",
        {
            "name": "theirs",
            "schedule": {"type": "recurring", "cron": "0 3 * * *"},
            "callback": {"url": receiver.url},
        },
        key=other_key,
    ).json()
    assert server.call("POST", f"/v1/cues/{other['id']}/fire", key=other_key).status_code in (200, 201, 202)
    r = server.call("GET", "/v1/usage")
    assert r.status_code == 200, r.text
    u = r.json()
    assert u["plan"] == "self-hosted"
    # START is 2026-06-01 12:00 UTC.
    assert u["billing_period"] == {"start": "2026-06-01", "end": "2026-06-30", "days_remaining": 29}
    assert u["period"] == {"start": "2026-06-01", "end": "2026-06-30"}
    assert u["cues"] == {
        "used": 3,
        "active": 2,
        "paused": 1,
        "total": 3,
        "limit": "unlimited",
        "unlimited": True,
        "remaining": None,
        "percent_used": 0,
    }
    assert u["executions"] == {
        "used": 3,
        "limit": 2**31 - 1,  # a number for clients that compute with it; `unlimited` says what it means
        "unlimited": True,
        "remaining": None,
        "percent_used": 0,
        "percentage": 0.0,
        "projected_month_end": 90,
        "will_exceed_limit": False,
    }
    assert u["outcomes"] == {"reported": 2, "succeeded": 2, "failed": 1, "timed_out": 0}
    assert u["rate_limit"]["requests_per_minute"] == 1_000_000
    assert u["upgrade_url"] is None
    # Next month starts from nothing.
    clock.advance(30 * 86400)
    u = server.call("GET", "/v1/usage").json()
    assert u["period"] == {"start": "2026-07-01", "end": "2026-07-31"}
    assert u["executions"]["used"] == 0 and u["outcomes"]["reported"] == 0
    assert u["cues"]["used"] == 3


def test_usage_needs_a_key(server: Server) -> None:
    for key in (None, "cue_sk_" + "0" * 32):
        r = server.call("GET", "/v1/usage", key=key)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"


def test_usage_shows_the_callers_rate_limit(tmp_path: Path) -> None:
    server, _clock = limited(tmp_path, 10)
    try:
        for _ in range(3):
            server.call("GET", "/v1/cues")
        assert server.call("GET", "/v1/usage").json()["rate_limit"] == {
            "requests_per_minute": 10,
            "limit": 10,
            "current_usage": 4,
        }
    finally:
        server.app.close()
    off = start_server(tmp_path / "off.db", rate_limit_per_minute=0)
    try:
        assert off.call("GET", "/v1/usage").json()["rate_limit"] == {
            "requests_per_minute": None,
            "limit": "unlimited",
            "current_usage": None,
        }
    finally:
        off.app.close()


# -- rate limiting ---------------------------------------------------------------------------------


def limit_headers(r: httpx.Response) -> tuple[int, int, int]:
    h = r.headers
    return int(h["x-ratelimit-limit"]), int(h["x-ratelimit-remaining"]), int(h["x-ratelimit-reset"])


def test_a_key_gets_its_limit_then_429_with_headers_and_refusals_do_not_count(tmp_path: Path) -> None:
    server, clock = limited(tmp_path, 3)
    epoch = int(START.timestamp())
    try:
        got = [server.call("GET", "/v1/cues") for _ in range(3)]
        assert [r.status_code for r in got] == [200, 200, 200]
        # Each request takes a third of the minute: the allowance is whole 20, 40 and 60 s on.
        assert [limit_headers(r) for r in got] == [(3, 2, epoch + 20), (3, 1, epoch + 40), (3, 0, epoch + 60)]
        for _ in range(5):
            r = server.call("GET", "/v1/cues")
            assert r.status_code == 429
            error = {
                "code": "rate_limit_exceeded",
                "message": "Too many requests. Retry after 20 seconds.",
                "status": 429,
            }
            assert r.json() == {"error": error, "detail": {"error": error}}
            assert r.headers["retry-after"] == "20"
            assert limit_headers(r) == (3, 0, epoch + 60)
        # Writes are limited alike, and a refused one changes nothing.
        r = server.call(
            "POST", "/v1/cues", {"name": "x", "schedule": {"type": "recurring", "cron": "0 3 * * *"}}
        )
        assert r.status_code == 429
        # Twenty seconds on, exactly one request is allowed: the refused ones did not count.
        clock.advance(20)
        assert server.call("GET", "/v1/cues").status_code == 200
        assert server.call("GET", "/v1/cues").status_code == 429
        # A minute after that the whole allowance is back.
        clock.advance(60)
        got = [server.call("GET", "/v1/cues") for _ in range(4)]
        assert [r.status_code for r in got] == [200, 200, 200, 429]
        assert got[0].json()["cues"] == []
        assert server.call("GET", "/v1/cues").json()["error"]["code"] == "rate_limit_exceeded"
    finally:
        server.app.close()


def test_keys_have_separate_allowances(tmp_path: Path) -> None:
    server, _clock = limited(tmp_path, 2)
    try:
        other, _ = server.register("other@example.com")
        assert [server.call("GET", "/v1/cues").status_code for _ in range(3)] == [200, 200, 429]
        assert [server.call("GET", "/v1/cues", key=other).status_code for _ in range(3)] == [200, 200, 429]
    finally:
        server.app.close()


def test_requests_without_a_valid_key_count_against_the_client_address(tmp_path: Path) -> None:
    server, clock = limited(tmp_path, 3)
    try:
        # Registration takes one from the address's allowance.
        other, _ = server.register("other@example.com")
        assert server.call("GET", "/v1/cues", key=None).status_code == 401
        made_up = "cue_sk_" + "1" * 32
        r = server.call("GET", "/v1/cues", key=made_up)
        assert r.status_code == 401 and limit_headers(r)[1] == 0
        # Made-up keys buy no fresh allowance.
        for i in range(3):
            r = server.call("GET", "/v1/cues", key=f"cue_sk_{i:032d}")
            assert r.status_code == 429
        assert (
            server.call("POST", "/v1/auth/register", {"email": "x@example.com"}, key=None).status_code == 429
        )
        # Valid keys are counted apart from the address.
        assert server.call("GET", "/v1/cues").status_code == 200
        assert server.call("GET", "/v1/cues", key=other).status_code == 200
        clock.advance(20)
        assert server.call("GET", "/v1/cues", key=None).status_code == 401
    finally:
        server.app.close()


def test_forwarded_for_is_trusted_only_when_asked(tmp_path: Path) -> None:
    server, _clock = limited(tmp_path, 1, trust_forwarded_for=True)
    try:
        a = {"X-Forwarded-For": "198.51.100.7, 203.0.113.1"}
        b = {"X-Forwarded-For": "198.51.100.7, 203.0.113.2"}
        assert server.call("GET", "/v1/cues", key=None, headers=a).status_code == 401
        assert server.call("GET", "/v1/cues", key=None, headers=a).status_code == 429
        # The last entry is the client the proxy saw; the ones before it are the client's word.
        assert server.call("GET", "/v1/cues", key=None, headers=b).status_code == 401
    finally:
        server.app.close()
    plain, _clock = limited(tmp_path, 1, name="plain")
    try:
        a = {"X-Forwarded-For": "203.0.113.1"}
        b = {"X-Forwarded-For": "203.0.113.2"}
        assert plain.call("GET", "/v1/cues", key=None, headers=a).status_code == 401
        assert plain.call("GET", "/v1/cues", key=None, headers=b).status_code == 429
    finally:
        plain.app.close()


def test_a_workers_reports_are_never_refused_nor_counted(tmp_path: Path) -> None:
    """Outcomes, execution heartbeats and worker heartbeats with a valid key pass a spent
    allowance and take nothing from it (the official worker drops a refused outcome for good);
    without a valid key they count against the address like anything else."""
    server, clock = limited(tmp_path, 4)
    try:
        spec = {
            "name": "job",
            "transport": "worker",
            "schedule": {"type": "once", "at": "2099-01-01T00:00:00Z"},
        }
        cue = server.call("POST", "/v1/cues", {**spec, "overlap": "allow", "payload": {"task": "t"}}).json()
        e1, e2 = (server.call("POST", f"/v1/cues/{cue['id']}/fire").json()["id"] for _ in range(2))
        assert server.call("POST", f"/v1/executions/{e1}/claim", {"worker_id": "w1"}).status_code == 200
        assert server.call("GET", "/v1/cues").status_code == 429  # four spent: nothing else goes
        for _ in range(5):
            r = server.call("POST", "/v1/worker/heartbeat", {"worker_id": "w1", "handlers": ["t"]})
            assert r.status_code == 200 and "x-ratelimit-limit" not in r.headers, r.text
            r = server.call("POST", f"/v1/executions/{e1}/heartbeat", headers={"X-Worker-Id": "w1"})
            assert r.status_code == 200 and "x-ratelimit-limit" not in r.headers, r.text
        r = server.call("POST", f"/v1/executions/{e1}/outcome", {"success": True, "result": "one"})
        assert r.status_code == 200 and r.json()["outcome_recorded"] is True, r.text
        r = server.call("POST", f"/v1/executions/{e2}/outcome", {"success": True, "result": "two"})
        assert r.status_code == 200, r.text
        # A report refused for what it says still answers as it should (a second outcome: 409).
        r = server.call("POST", f"/v1/executions/{e1}/outcome", {"success": False})
        assert r.status_code == 409 and r.json()["error"]["code"] == "outcome_already_recorded"
        # None of them was counted: 15 s on (a quarter of the minute), exactly one request is back.
        clock.advance(15)
        got = [server.call("GET", f"/v1/executions/{e}") for e in (e1, e2)]
        assert [r.status_code for r in got] == [200, 429]
        assert got[0].json()["outcome"]["result"] == "one"
        clock.advance(15)
        assert server.execution(e2)["outcome"]["result"] == "two"
        # Without a valid key, the address's allowance is spent as anywhere (401s, then 429).
        wrong = "cue_sk_" + "2" * 32
        codes = [
            server.call("POST", f"/v1/executions/{e1}/outcome", {"success": True}, key=wrong).status_code
            for _ in range(5)
        ]
        assert codes == [401, 401, 401, 401, 429]
        assert sample(scrape(server), "cueapi_rate_limited_total") == 3
    finally:
        server.app.close()


def test_limiting_off_sends_no_headers(tmp_path: Path) -> None:
    server = start_server(tmp_path / "off.db", rate_limit_per_minute=0)
    try:
        for _ in range(50):
            r = server.call("GET", "/v1/cues")
            assert r.status_code == 200 and "x-ratelimit-limit" not in r.headers
        assert server.call("GET", "/v1/info", key=None).json()["rate_limit"] == {"requests_per_minute": None}
    finally:
        server.app.close()


@pytest.mark.parametrize("bad", [-1, 1_000_001, True, 2.5, "60"])
def test_serve_refuses_bad_rate_limits(tmp_path: Path, bad: Any) -> None:
    with cueapi.App(tmp_path / "bad.db") as app, pytest.raises(cueapi.ValidationError, match="rate_limit"):
        app.serve("127.0.0.1", 0, rate_limit_per_minute=bad)


# -- echo ------------------------------------------------------------------------------------------


TOKEN = "qs-0123456789abcdef"


def test_echo_receives_a_real_webhook_delivery(server: Server) -> None:
    r = server.call("GET", f"/v1/echo/{TOKEN}")
    assert r.status_code == 200 and r.json() == {"status": "waiting"}
    cue = server.cue(
        name="echo-me",
        schedule={"type": "recurring", "cron": "0 3 * * *"},
        callback={"url": f"{server.url}/v1/echo/{TOKEN}", "headers": {"Authorization": "Bearer hidden"}},
        payload={"message": "Your first cue! CueAPI is working."},
    )
    execution_id = fire(server, cue)
    settled(server, execution_id, "success")
    r = server.call("GET", f"/v1/echo/{TOKEN}")
    assert r.status_code == 200
    got = r.json()
    assert got["status"] == "delivered"
    assert got["payload"]["payload"] == {"message": "Your first cue! CueAPI is working."}
    assert got["payload"]["execution_id"] == execution_id
    assert got["headers"]["x-cueapi-execution-id"] == execution_id
    assert got["headers"]["x-cueapi-signature"].startswith("v1=")
    assert got["headers"]["authorization"] == "[redacted]"
    received = datetime.fromisoformat(got["received_at"].replace("Z", "+00:00"))
    assert abs((received - datetime.now(timezone.utc)).total_seconds()) < 60
    # Any user's key reads it; none reads nothing.
    other, _ = server.register("other@example.com")
    assert server.call("GET", f"/v1/echo/{TOKEN}", key=other).json()["status"] == "delivered"
    assert server.call("GET", f"/v1/echo/{TOKEN}", key=None).status_code == 401


@pytest.mark.parametrize(
    ("content", "headers", "expected"),
    [
        (b'{"a": [1, 2]}', {"Content-Type": "application/json"}, {"a": [1, 2]}),
        (b"[1, 2]", {}, [1, 2]),
        (b"plain words", {"Content-Type": "text/plain"}, "plain words"),
        (b"{not json", {"Content-Type": "application/json"}, "{not json"),
        (b"\xff\xfeabc", {}, "\ufffd\ufffdabc"),
        (b"", {}, None),
    ],
)
def test_echo_keeps_any_body(server: Server, content: bytes, headers: dict[str, str], expected: Any) -> None:
    r = server.call("POST", f"/v1/echo/{TOKEN}", key=None, content=content, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"stored": True}
    got = server.call("GET", f"/v1/echo/{TOKEN}").json()
    assert got["status"] == "delivered" and got["payload"] == expected


def test_echo_refuses_bad_tokens_and_large_bodies(server: Server) -> None:
    for token in ["short", "fifteen-chars15", "has.a.dot.in.it.x", "x" * 129, "%C3%A9" * 8]:
        for method in ("POST", "GET"):
            r = server.call(method, f"/v1/echo/{token}", key=True, content=b"{}")
            assert r.status_code == 400, (token, method, r.text)
            assert r.json()["error"]["code"] == "invalid_token"
    ok_size = b'"' + b"x" * 999_998 + b'"'
    assert len(ok_size) == 1_000_000
    assert server.call("POST", f"/v1/echo/{TOKEN}", key=None, content=ok_size).status_code == 200
    r = server.call("POST", f"/v1/echo/{TOKEN}-big", key=None, content=b"x" * 1_000_001)
    assert r.status_code == 413
    assert r.json()["error"] == {
        "code": "payload_too_large",
        "message": "An echo body is at most 1000000 bytes",
        "status": 413,
    }
    assert server.call("GET", f"/v1/echo/{TOKEN}-big").json() == {"status": "waiting"}
    # The largest token is fine.
    assert server.call("POST", "/v1/echo/" + "x" * 128, key=None, content=b"1").status_code == 200


def test_echo_forgets_after_five_minutes(manual: tuple[Server, cueapi.ManualClock]) -> None:
    server, clock = manual
    server.call("POST", f"/v1/echo/{TOKEN}", key=None, content=b'{"n": 1}')
    clock.advance(299)
    got = server.call("GET", f"/v1/echo/{TOKEN}").json()
    assert got["status"] == "delivered" and got["received_at"] == iso(START)
    clock.advance(1)
    assert server.call("GET", f"/v1/echo/{TOKEN}").json() == {"status": "waiting"}
    assert sample(scrape(server), "cueapi_echo_tokens") == 0


def test_echo_posts_are_limited_per_address_even_with_a_key(tmp_path: Path) -> None:
    server, _clock = limited(tmp_path, 2)
    try:
        codes = [
            server.call("POST", f"/v1/echo/{TOKEN}", key=True, content=b"1").status_code for _ in range(3)
        ]
        assert codes == [200, 200, 429]
        # Reading takes from the key's allowance, not the address's.
        assert server.call("GET", f"/v1/echo/{TOKEN}").json()["status"] == "delivered"
    finally:
        server.app.close()


# -- `cueapi serve` settings -----------------------------------------------------------------------


@contextmanager
def serve_cli(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """``cueapi serve --port 0 ARGS`` in a child process; yields (base URL, startup line)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("CUEAPI_")}
    with subprocess.Popen(
        [sys.executable, "-m", "cueapi.cli", "serve", "--port", "0", *args],
        env=dict(full, PYTHONUNBUFFERED="1", **(env or {})),
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        try:
            line = proc.stderr.readline()
            url = re.search(r"listening on (http://\S+)", line)
            assert url, line + proc.stderr.read()
            yield url.group(1), line
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stderr.close()


def anonymous_codes(url: str, n: int) -> list[int]:
    return [httpx.get(url + "/v1/cues", timeout=30).status_code for _ in range(n)]


def test_serve_takes_the_rate_limit_from_its_flag_or_environment(tmp_path: Path) -> None:
    with serve_cli("--db", str(tmp_path / "a.db"), "--rate-limit", "2") as (url, line):
        assert "rate limit 2/min per key" in line
        assert anonymous_codes(url, 3) == [401, 401, 429]
    # The flag wins over the environment.
    with serve_cli("--db", str(tmp_path / "b.db"), "--rate-limit", "1", env={"CUEAPI_RATE_LIMIT": "0"}) as (
        url,
        line,
    ):
        assert anonymous_codes(url, 2) == [401, 429]
    with serve_cli("--db", str(tmp_path / "c.db"), env={"CUEAPI_RATE_LIMIT": "0"}) as (url, line):
        assert "rate limit off" in line
        assert anonymous_codes(url, 30) == [401] * 30
    with serve_cli("--db", str(tmp_path / "d.db")) as (url, line):
        assert "rate limit 1200/min per key" in line
        assert "X-Forwarded-For" not in line
        assert httpx.get(url + "/v1/cues", timeout=30).headers["x-ratelimit-limit"] == "1200"
    with serve_cli(
        "--db", str(tmp_path / "e.db"), "--rate-limit", "1", env={"CUEAPI_TRUST_FORWARDED_FOR": "true"}
    ) as (url, line):
        assert "client addresses from X-Forwarded-For" in line
        for client in ("203.0.113.1", "203.0.113.2"):
            r = httpx.get(url + "/v1/cues", headers={"X-Forwarded-For": client}, timeout=30)
            assert r.status_code == 401


def assert_refused(db: Path, args: list[str], env: dict[str, str], message: str) -> None:
    """``cueapi serve`` with these settings exits non-zero saying ``message``."""
    out = subprocess.run(
        [sys.executable, "-m", "cueapi.cli", "serve", "--db", str(db), "--port", "0", *args],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and message in out.stderr, out.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--rate-limit", "many"], {}, "argument --rate-limit: 'many' is not a whole number"),
        (["--rate-limit", "-1"], {}, "argument --rate-limit: must be between 0 (off) and 1000000"),
        ([], {"CUEAPI_RATE_LIMIT": "fast"}, "cueapi: CUEAPI_RATE_LIMIT='fast': 'fast' is not a whole number"),
        ([], {"CUEAPI_RATE_LIMIT": "2000000"}, "must be between 0 (off) and 1000000"),
        ([], {"CUEAPI_TRUST_FORWARDED_FOR": "maybe"}, "'maybe' is not true or false"),
    ],
)
def test_serve_refuses_bad_rate_limit_settings(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    db = tmp_path / "bad.db"
    assert_refused(db, args, env, message)
    assert not db.exists()


def test_serve_takes_the_delivery_limits_from_its_flags_or_environment(tmp_path: Path) -> None:
    def deliveries(url: str) -> dict[str, Any]:
        d: dict[str, Any] = httpx.get(url + "/health", timeout=30).json()["checks"]["deliveries"]
        return d

    with serve_cli(
        "--db",
        str(tmp_path / "a.db"),
        "--max-deliveries",
        "8",
        "--max-deliveries-per-tenant",
        "4",
        env={"CUEAPI_MAX_DELIVERIES_PER_DESTINATION": "2", "CUEAPI_MAX_DELIVERY_TIMEOUT_SECONDS": "5"},
    ) as (url, _):
        d = deliveries(url)
        assert (d["slots"], d["tenant_slots"], d["destination_slots"], d["max_timeout_ms"]) == (8, 4, 2, 5000)
        assert d["stuck_after_ms"] == 5000  # a wait longer than a delivery may take
    # Defaults; a server smaller than a tenant's default share gives each tenant all of it; the
    # flag wins over the environment.
    with serve_cli(
        "--db",
        str(tmp_path / "b.db"),
        "--max-deliveries",
        "16",
        env={"CUEAPI_MAX_DELIVERIES": "1"},
    ) as (url, _):
        d = deliveries(url)
        assert (d["slots"], d["tenant_slots"], d["destination_slots"], d["max_timeout_ms"]) == (
            16,
            16,
            16,
            300_000,
        )
        assert d["stuck_after_ms"] == 60_000


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--max-deliveries", "0"], {}, "argument --max-deliveries: must be between 1 and 65536"),
        (["--max-deliveries-per-tenant", "x"], {}, "'x' is not a whole number"),
        (
            [],
            {"CUEAPI_MAX_DELIVERIES": "100000"},
            "CUEAPI_MAX_DELIVERIES='100000': must be between 1 and 65536",
        ),
        (
            ["--max-deliveries", "4", "--max-deliveries-per-destination", "8"],
            {},
            "--max-deliveries-per-destination (8) cannot exceed --max-deliveries (4)",
        ),
        (["--max-delivery-timeout", "7200"], {}, "--max-delivery-timeout must be between 1 and 3600 seconds"),
        ([], {"CUEAPI_MAX_DELIVERY_TIMEOUT_SECONDS": "soon"}, "is not a number of seconds"),
    ],
)
def test_serve_refuses_bad_delivery_limits(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    assert_refused(tmp_path / "bad.db", args, env, message)


def test_serve_help_lists_the_rate_limit_settings() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cueapi.cli", "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert "--rate-limit N requests a minute per API key" in text
    assert "(env CUEAPI_RATE_LIMIT, default 1200)" in text
    assert "--trust-forwarded-for" in text and "CUEAPI_TRUST_FORWARDED_FOR" in text


def test_the_readme_lists_every_serve_setting() -> None:
    """The README's "Server settings" table has a row for every flag of `cueapi serve --help`, with
    the environment variable the help names."""
    out = subprocess.run(
        [sys.executable, "-m", "cueapi.cli", "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    flags = set(re.findall(r"(--[a-z][a-z-]+)", out.stdout)) - {"--help", "--version"}
    envs = set(re.findall(r"\b(CUEAPI_[A-Z_]+)", out.stdout))
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("**Server settings.**", 1)[1].split("\n\n", 2)[1]
    rows = [line for line in table.splitlines() if line.startswith("| `--")]
    assert set(re.findall(r"`(--[a-z][a-z-]+)", "\n".join(rows))) == flags
    assert envs <= set(re.findall(r"`(CUEAPI_[A-Z_]+)`", table))
