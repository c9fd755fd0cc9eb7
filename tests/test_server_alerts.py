"""Alerts of ``cueapi serve``, end to end: each kind raised by its real cause (a webhook delivery
or a worker outcome that failed for good, an outcome deadline that passed, success without the
evidence the cue requires, failures in a row, a run nobody claimed) and the ``recovered`` notice
that closes an incident; de-duplication within the re-alert interval; the notifications an alert
sends (the user's signed alert webhook, the cue's ``on_failure`` webhook signed with the user's
webhook secret, email recorded as skipped without SMTP), retried when they fail and kept across a
restart; listing, filtering and acknowledging alerts; one user never sees another's; the alert
webhook settings on ``/v1/auth``.

Alerts are written in the transaction of their cause, so an alert is visible as soon as its cause
is. Notifications are rows of an outbox in the store until sent; tests that prove "nothing more
was sent" wait until the outbox holds nothing pending (``quiet``), reading the real SQLite file."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cueapi
import httpx
import pytest

from tests.conftest import Answer, Received, Receiver, Server, start_server, wait_for
from tests.test_server_api import assert_error
from tests.test_server_delivery import advance, instant, reopen, settled

# Every test here runs on SQLite and on PostgreSQL.
STORES = ("sqlite", "postgres")

# Cues here are fired by hand; their own schedule never comes due within a test.
FAR = {"type": "once", "at": "2099-01-01T00:00:00Z"}
RECURRING = {"type": "recurring", "cron": "0 0 29 2 *"}  # next on 29 February
CONFIRM = {"X-Confirm-Destructive": "true"}
JSON = {"Content-Type": "application/json"}
ALERT_KEYS = {
    "id",
    "cue_id",
    "execution_id",
    "alert_type",
    "severity",
    "message",
    "occurrences",
    "metadata",
    "last_seen_at",
    "resolved_at",
    "acknowledged",
    "acknowledged_at",
    "created_at",
}
FAILED_KEYS = {
    "event",
    "alert_id",
    "alert_type",
    "cue_id",
    "cue_name",
    "execution_id",
    "message",
    "attempts",
    "last_error",
    "last_http_status",
    "failed_at",
}
HEX64 = re.compile(r"[0-9a-f]{64}")
# A URL that would be accepted, in requests that are refused for another reason (never called).
ELSEWHERE = "http://127.0.0.1/elsewhere"

_names = itertools.count(1)


# -- helpers ---------------------------------------------------------------------------------------


def by_path(statuses: dict[str, int], default: int = 200) -> Callable[[Received], Answer]:
    """Answers each request by its path (an empty body: no outcome reported inline)."""
    return lambda r: (statuses.get(r.path, default), {}, b"", 0.0)


def on(receiver: Receiver, path: str) -> list[Received]:
    return [r for r in list(receiver.requests) if r.path == path]


def arrivals(receiver: Receiver, path: str, n: int = 1, timeout: float = 15.0) -> list[Received]:
    """Waits until ``n`` requests reached ``path``; returns all that did."""
    return wait_for(
        lambda: got if len(got := on(receiver, path)) >= n else [],
        timeout,
        f"{n} request(s) to {path}",
    )


def watch(server: Server, url: str, key: str | bool = True) -> None:
    """Sets the user's alert webhook."""
    r = server.call("PATCH", "/v1/auth/me", {"alert_webhook_url": url}, key=key)
    assert r.status_code == 200, r.text
    assert r.json()["alert_webhook_url"] == url


def alert_secret(server: Server, key: str | bool = True) -> str:
    r = server.call("GET", "/v1/auth/alert-webhook-secret", key=key)
    assert r.status_code == 200, r.text
    assert list(r.json()) == ["alert_webhook_secret"], r.json()
    return str(r.json()["alert_webhook_secret"])


def me(server: Server, key: str | bool = True) -> dict[str, Any]:
    r = server.call("GET", "/v1/auth/me", key=key)
    assert r.status_code == 200, r.text
    return dict(r.json())


def webhook_cue(server: Server, receiver: Receiver, path: str = "/hook", **fields: Any) -> dict[str, Any]:
    """A webhook cue calling ``receiver`` at ``path``: no retries, no outcome deadline."""
    spec: dict[str, Any] = {
        "name": f"alerting-{next(_names)}",
        "schedule": FAR,
        "callback": {"url": receiver.url + path},
        "overlap": "allow",
        "retry": {"max_attempts": 0},
        "delivery": {"outcome_deadline_seconds": None},
    }
    spec.update(fields)
    return server.cue(**spec)


def worker_cue(server: Server, key: str | bool = True, **fields: Any) -> dict[str, Any]:
    """A worker cue without retries: a reported failure is final."""
    spec: dict[str, Any] = {
        "name": f"job-{next(_names)}",
        "transport": "worker",
        "schedule": FAR,
        "overlap": "allow",
        "payload": {"task": "a"},
        "retry": {"max_attempts": 0},
    }
    spec.update(fields)
    r = server.call("POST", "/v1/cues", spec, key=key)
    assert r.status_code == 201, r.text
    return dict(r.json())


def fire(server: Server, cue: dict[str, Any], key: str | bool = True) -> str:
    r = server.call("POST", f"/v1/cues/{cue['id']}/fire", key=key)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def report(server: Server, execution_id: str, key: str | bool = True, **body: Any) -> httpx.Response:
    return server.call("POST", f"/v1/executions/{execution_id}/outcome", body, key=key)


def reported(server: Server, execution_id: str, key: str | bool = True, **body: Any) -> dict[str, Any]:
    r = report(server, execution_id, key, **body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def worker_fails(server: Server, cue: dict[str, Any], key: str | bool = True) -> str:
    """Fires a worker cue and reports its run failed (no claim needed: it is due): final."""
    eid = fire(server, cue, key)
    assert reported(server, eid, key, success=False, error="bad input")["status"] == "failed"
    return eid


def delivered(server: Server, cue: dict[str, Any]) -> str:
    """Fires a webhook cue and waits until its delivery succeeded."""
    eid = fire(server, cue)
    settled(server, eid, "success")
    return eid


def alerts(server: Server, key: str | bool = True, **params: Any) -> list[dict[str, Any]]:
    """``GET /v1/alerts`` (``alerts`` and ``data`` are one list)."""
    r = server.call("GET", "/v1/alerts", params=params, key=key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["alerts"] == body["data"], body
    for a in body["alerts"]:
        assert set(a) == ALERT_KEYS, a
    return list(body["alerts"])


def page(server: Server, **params: Any) -> dict[str, Any]:
    r = server.call("GET", "/v1/alerts", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def one(server: Server, alert_id: str) -> dict[str, Any]:
    """``GET /v1/alerts/{id}``: the alert's fields as the list shows them (the answer may carry
    more, such as how its notifications went)."""
    r = server.call("GET", f"/v1/alerts/{alert_id}")
    assert r.status_code == 200, r.text
    assert set(r.json()) >= ALERT_KEYS, r.json()
    return {k: v for k, v in r.json().items() if k in ALERT_KEYS}


def acknowledge(server: Server, alert_id: str) -> dict[str, Any]:
    """``POST /v1/alerts/{id}/acknowledge``: the alert's fields as the list shows them."""
    r = server.call("POST", f"/v1/alerts/{alert_id}/acknowledge")
    assert r.status_code == 200, r.text
    assert set(r.json()) >= ALERT_KEYS, r.json()
    return {k: v for k, v in r.json().items() if k in ALERT_KEYS}


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [str(a["id"]) for a in items]


def alert_of(server: Server, cue: dict[str, Any], alert_type: str, n: int = 1) -> dict[str, Any]:
    """Waits until the cue has ``n`` alerts of ``alert_type``; returns the newest."""
    found = wait_for(
        lambda: got if len(got := alerts(server, cue_id=cue["id"], alert_type=alert_type)) >= n else [],
        15,
        f"{n} {alert_type} alert(s) of {cue['name']}",
    )
    return found[0]


def outbox(server: Server) -> list[tuple[str, str, str, int]]:
    """The notifications queued so far, as ``GET /v1/alerts/{id}`` shows them: (alert id,
    channel, status, attempts), oldest alert first."""
    r = server.call("GET", "/v1/alerts", params={"limit": 100})
    assert r.status_code == 200, r.text
    out = []
    for a in reversed(r.json()["alerts"]):
        one = server.call("GET", f"/v1/alerts/{a['id']}")
        assert one.status_code == 200, one.text
        out += [(a["id"], n["channel"], n["status"], n["attempts"]) for n in one.json()["notifications"]]
    return out


def quiet(server: Server) -> list[tuple[str, str, str, int]]:
    """Waits until no notification is pending (each was sent, skipped or given up: a webhook's
    request has reached its receiver by then); returns the outbox."""
    wait_for(
        lambda: all(status != "pending" for _, _, status, _ in outbox(server)),
        15,
        "every notification to be sent",
    )
    return outbox(server)


def v1(secret: str, timestamp: str, body: bytes) -> str:
    """``X-CueAPI-Signature``: HMAC-SHA256 over ``"<timestamp>." + body``, the secret as text."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def signed_by(req: Received, secret: str) -> bool:
    """Whether the request carries a valid v1 signature made with ``secret``."""
    sig, ts = req.headers["x-cueapi-signature"], req.headers["x-cueapi-timestamp"]
    ok = cueapi.verify_webhook(req.body, sig, secret, ts)
    assert ok == hmac.compare_digest(sig, v1(secret, ts, req.body)), (sig, ts)
    return ok


def canonical(req: Received) -> dict[str, Any]:
    """The request's JSON body, checked to be exactly what ``json.dumps(sort_keys=True)`` writes."""
    body = req.json()
    assert req.body == json.dumps(body, sort_keys=True).encode(), req.body
    return dict(body)


def python_instant(text: str) -> datetime:
    """An instant as Python's ``isoformat`` writes it (``+00:00``)."""
    assert text.endswith("+00:00"), text
    return datetime.fromisoformat(text)


# -- fixtures --------------------------------------------------------------------------------------


# -- the alert webhook -----------------------------------------------------------------------------


def test_the_alert_webhook_is_signed_with_the_alert_secret(server: Server, receiver: Receiver) -> None:
    receiver.answer = by_path({"/hook": 500})
    # The secret is made with the URL: alerts are signed even if it was never read.
    watch(server, receiver.url + "/alerts")
    cue = webhook_cue(server, receiver, name="nightly-report")
    eid = fire(server, cue)
    (req,) = arrivals(receiver, "/alerts")
    (alert,) = alerts(server)
    secret = alert_secret(server)
    assert HEX64.fullmatch(secret), secret
    assert alert_secret(server) == secret  # stable

    h = req.headers
    assert req.method == "POST"
    assert h["content-type"] == "application/json"
    assert h["x-cueapi-alert-id"] == alert["id"]
    assert h["x-cueapi-alert-type"] == "retries_exhausted"
    assert abs(int(h["x-cueapi-timestamp"]) - time.time()) < 60
    assert signed_by(req, secret)
    assert not signed_by(req, "0" * 64)
    assert not signed_by(req, server.secret)  # the webhook secret is not the alert secret
    forged = req.body.replace(b'"critical"', b'"info"')
    assert forged != req.body
    assert not cueapi.verify_webhook(forged, h["x-cueapi-signature"], secret, h["x-cueapi-timestamp"])

    body = canonical(req)
    assert body["alert_id"] == body["id"] == alert["id"]
    assert body["cue_name"] == "nightly-report"
    assert body["cue_id"] == cue["id"] and body["execution_id"] == eid
    for k in ("alert_type", "severity", "message", "metadata", "occurrences", "resolved_at", "acknowledged"):
        assert body[k] == alert[k], k
    # Times as Python writes them (+00:00); the API writes them with Z. The same instants.
    for k in ("created_at", "last_seen_at"):
        assert alert[k].endswith("Z"), alert
        assert python_instant(body[k]) == instant(alert[k]), k


def test_the_alert_secret_is_made_once_and_rotated_only_on_confirmation(
    server: Server, receiver: Receiver
) -> None:
    first = alert_secret(server)
    assert HEX64.fullmatch(first) and first == alert_secret(server)
    assert first != server.secret
    path = "/v1/auth/alert-webhook-secret/regenerate"
    for headers in ({}, {"X-Confirm-Destructive": "false"}, {"X-Confirm-Destructive": "yes"}):
        assert_error(server.call("POST", path, headers=headers), 400, "confirmation_required")
        assert alert_secret(server) == first
    r = server.call("POST", path, headers=CONFIRM)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"alert_webhook_secret", "previous_secret_revoked"}
    assert r.json()["previous_secret_revoked"] is True
    second = r.json()["alert_webhook_secret"]
    assert HEX64.fullmatch(second) and second != first
    assert alert_secret(server) == second
    assert server.call("GET", "/v1/auth/webhook-secret").json() == {"webhook_secret": server.secret}

    # The next alert is signed with the new secret only.
    receiver.answer = by_path({"/hook": 500})
    watch(server, receiver.url + "/alerts")
    fire(server, webhook_cue(server, receiver))
    (req,) = arrivals(receiver, "/alerts")
    assert signed_by(req, second)
    assert not signed_by(req, first)


def test_the_alert_webhook_arrives_within_five_seconds_of_the_failure(
    server: Server, receiver: Receiver
) -> None:
    receiver.answer = by_path({"/hook": 500})
    watch(server, receiver.url + "/alerts")
    fire(server, webhook_cue(server, receiver))
    (failing,) = arrivals(receiver, "/hook")
    (alert,) = arrivals(receiver, "/alerts", timeout=10)
    assert alert.headers["x-cueapi-alert-type"] == "retries_exhausted"
    assert 0 <= alert.at - failing.at < 5.0, alert.at - failing.at


# -- each kind, raised by its cause ----------------------------------------------------------------


def test_retries_exhausted_when_the_last_delivery_attempt_fails(
    timed: Server, now_clock: cueapi.ManualClock, receiver: Receiver, beacon: Receiver
) -> None:
    receiver.answer = by_path({"/hook": 500})
    watch(timed, receiver.url + "/alerts")
    cue = webhook_cue(timed, receiver, retry={"max_attempts": 1, "backoff_minutes": [1]})
    eid = fire(timed, cue)
    settled(timed, eid, "retrying")
    assert alerts(timed) == []  # a retry is left: not failed for good
    advance(timed, now_clock, beacon, 60)
    settled(timed, eid, "failed")
    (alert,) = alerts(timed)  # written with the failure
    assert alert["alert_type"] == "retries_exhausted" and alert["severity"] == "critical"
    assert alert["cue_id"] == cue["id"] and alert["execution_id"] == eid
    assert alert["occurrences"] == 1 and alert["resolved_at"] is None
    assert alert["acknowledged"] is False and alert["acknowledged_at"] is None
    assert instant(alert["created_at"]) == instant(alert["last_seen_at"]) == now_clock.now()
    meta = alert["metadata"]
    assert meta["attempts"] == 2 and meta["last_http_status"] == 500
    assert "500" in meta["last_error"]
    assert cue["name"] in alert["message"]
    (req,) = arrivals(receiver, "/alerts")
    assert req.headers["x-cueapi-timestamp"] == str(int(now_clock.now().timestamp()))
    assert signed_by(req, alert_secret(timed))


def test_retries_exhausted_when_a_worker_reports_failure_with_no_retries_left(
    timed: Server, now_clock: cueapi.ManualClock, beacon: Receiver
) -> None:
    cue = worker_cue(timed, retry={"max_attempts": 1, "backoff_minutes": [1]})
    eid = fire(timed, cue)
    # A failed run (retry: true) is retried; the retry's plain reported failure is final.
    assert reported(timed, eid, success=False, error="upstream 503", retry=True)["status"] == "retrying"
    assert alerts(timed, alert_type="retries_exhausted") == []
    advance(timed, now_clock, beacon, 60)
    wait_for(lambda: timed.execution(eid)["status"] == "pending", what="the retry to be due")
    assert reported(timed, eid, success=False, error="upstream 503")["status"] == "failed"
    (alert,) = alerts(timed, alert_type="retries_exhausted")
    assert alert["severity"] == "critical"
    assert alert["cue_id"] == cue["id"] and alert["execution_id"] == eid
    assert alert["metadata"] == {"attempts": 2, "last_error": "upstream 503", "last_http_status": None}


def test_outcome_timeout_when_a_delivered_execution_reports_nothing_in_time(
    timed: Server, now_clock: cueapi.ManualClock, receiver: Receiver, beacon: Receiver
) -> None:
    watch(timed, receiver.url + "/alerts")
    cue = webhook_cue(timed, receiver, delivery={"outcome_deadline_seconds": 60})
    silent, reporting = fire(timed, cue), fire(timed, cue)
    for eid in (silent, reporting):
        settled(timed, eid, "success")
    reported(timed, reporting, success=True, result="in time")
    advance(timed, now_clock, beacon, 59)
    assert alerts(timed) == []
    advance(timed, now_clock, beacon, 2)
    alert = alert_of(timed, cue, "outcome_timeout")
    assert timed.execution(silent)["outcome_state"] == "outcome_timeout"
    assert alert["severity"] == "critical"
    assert alert["execution_id"] == silent and alert["occurrences"] == 1
    assert ids(alerts(timed)) == [alert["id"]]  # the one that reported in time raised nothing
    (req,) = arrivals(receiver, "/alerts")
    assert req.headers["x-cueapi-alert-type"] == "outcome_timeout"
    assert canonical(req)["execution_id"] == silent
    assert signed_by(req, alert_secret(timed))


def test_verification_failed_when_success_lacks_the_required_evidence(
    server: Server, receiver: Receiver
) -> None:
    receiver.answer = lambda r: (
        (200, JSON, b'{"success": true, "result": "done"}', 0.0)
        if r.path == "/inline"
        else (200, {}, b"", 0.0)
    )
    required = {"mode": "require_external_id"}
    cue = webhook_cue(server, receiver, verification=required)
    plain = webhook_cue(server, receiver)
    eid = delivered(server, cue)
    assert reported(server, eid, success=True)["outcome_state"] == "verification_failed"
    (alert,) = alerts(server)  # written with the outcome
    assert alert["alert_type"] == "verification_failed" and alert["severity"] == "warning"
    assert alert["cue_id"] == cue["id"] and alert["execution_id"] == eid
    assert alert["metadata"]["outcome_state"] == "verification_failed"
    # The same report on a cue that requires nothing is a plain success.
    p = delivered(server, plain)
    assert reported(server, p, success=True)["outcome_state"] == "reported_success"
    # An outcome given inline in the response body is checked the same way.
    inline = webhook_cue(server, receiver, "/inline", verification=required)
    ie = delivered(server, inline)
    got = alert_of(server, inline, "verification_failed")
    assert got["execution_id"] == ie and got["severity"] == "warning"
    assert len(alerts(server)) == 2


def test_consecutive_failures_at_the_default_threshold_of_three(server: Server, receiver: Receiver) -> None:
    cue = webhook_cue(server, receiver)
    assert cue["alerts"] == {"consecutive_failures": 3}
    failed = []
    for n in range(3):
        assert alerts(server) == [], n
        eid = delivered(server, cue)
        assert reported(server, eid, success=False, error="no rows")["outcome_state"] == "reported_failure"
        failed.append(eid)
    (alert,) = alerts(server)
    assert alert["alert_type"] == "consecutive_failures" and alert["severity"] == "warning"
    assert alert["cue_id"] == cue["id"] and alert["execution_id"] == failed[-1]
    assert alert["metadata"]["consecutive_failures"] == 3


def test_missed_when_no_worker_claims_in_time(
    timed: Server, now_clock: cueapi.ManualClock, receiver: Receiver, beacon: Receiver
) -> None:
    watch(timed, receiver.url + "/alerts")
    cue = worker_cue(
        timed, delivery={"claim_timeout_seconds": 60}, on_failure={"webhook": receiver.url + "/fail"}
    )
    eid = fire(timed, cue)
    advance(timed, now_clock, beacon, 59)
    assert alerts(timed) == []
    advance(timed, now_clock, beacon, 2)
    settled(timed, eid, "missed")
    alert = alert_of(timed, cue, "missed")
    assert alert["severity"] == "critical" and alert["execution_id"] == eid
    assert alert["metadata"]["attempts"] == 0
    (req,) = arrivals(receiver, "/alerts")
    assert req.headers["x-cueapi-alert-type"] == "missed"
    (failure,) = arrivals(receiver, "/fail")
    body = canonical(failure)
    assert body["event"] == "cue.failed" and body["alert_type"] == "missed"
    assert body["attempts"] == 0 and body["last_http_status"] is None


# -- de-duplication, recovery ----------------------------------------------------------------------


def test_the_same_failure_again_counts_on_the_open_alert_and_notifies_once(
    server: Server, receiver: Receiver
) -> None:
    receiver.answer = by_path({"/hook": 500})
    watch(server, receiver.url + "/alerts")
    cue = webhook_cue(server, receiver, on_failure={"webhook": receiver.url + "/fail"})
    first = fire(server, cue)
    alert = alert_of(server, cue, "retries_exhausted")
    second = fire(server, cue)
    settled(server, second, "failed")
    (again,) = alerts(server)  # the second failure is committed, and counted
    assert again["id"] == alert["id"] and again["occurrences"] == 2
    assert again["execution_id"] == first
    assert again["created_at"] == alert["created_at"]
    assert instant(again["last_seen_at"]) > instant(alert["last_seen_at"])
    # Another cue's failure is another alert.
    elsewhere = webhook_cue(server, receiver)
    fire(server, elsewhere)
    other_alert = alert_of(server, elsewhere, "retries_exhausted")
    box = quiet(server)
    assert sorted(c for a, c, _, _ in box if a == alert["id"]) == [
        "alert_webhook",
        "email",
        "failure_webhook",
    ]
    assert [r.headers["x-cueapi-alert-id"] for r in on(receiver, "/alerts")] in (
        [alert["id"], other_alert["id"]],
        [other_alert["id"], alert["id"]],
    )
    assert len(on(receiver, "/fail")) == 1


def test_the_same_failure_after_the_realert_interval_is_a_new_alert(
    timed: Server, now_clock: cueapi.ManualClock
) -> None:
    cue = worker_cue(timed)
    worker_fails(timed, cue)
    (first,) = alerts(timed, alert_type="retries_exhausted")
    now_clock.advance(30 * 60)
    worker_fails(timed, cue)
    (first,) = alerts(timed, alert_type="retries_exhausted")
    assert first["occurrences"] == 2
    now_clock.advance(31 * 60)  # 61 minutes after the alert was raised
    latest = worker_fails(timed, cue)
    new, old = alerts(timed, alert_type="retries_exhausted")
    assert old == first
    assert new["occurrences"] == 1 and new["execution_id"] == latest
    assert instant(new["created_at"]) == now_clock.now()


def test_success_after_a_failure_sends_one_recovered_notice_that_closes_the_incident(
    server: Server, receiver: Receiver
) -> None:
    failing = threading.Event()
    failing.set()
    receiver.answer = lambda r: (500 if r.path == "/hook" and failing.is_set() else 200, {}, b"", 0.0)
    watch(server, receiver.url + "/alerts")
    cue = webhook_cue(server, receiver, on_failure={"webhook": receiver.url + "/fail"})
    fire(server, cue)
    broken = alert_of(server, cue, "retries_exhausted")

    failing.clear()
    ok = delivered(server, cue)
    (recovered,) = alerts(server, alert_type="recovered")  # written with the success
    assert recovered["severity"] == "info"
    assert recovered["cue_id"] == cue["id"] and recovered["execution_id"] == ok
    closed = one(server, broken["id"])
    assert closed["resolved_at"] is not None
    assert instant(closed["resolved_at"]) == instant(recovered["created_at"])
    # One notice: the next success says nothing.
    delivered(server, cue)
    assert len(alerts(server)) == 2

    # The incident is closed: a failure within the hour is a new alert at once.
    failing.set()
    latest = fire(server, cue)
    again = alert_of(server, cue, "retries_exhausted", n=2)
    assert again["id"] != broken["id"] and again["execution_id"] == latest
    assert again["occurrences"] == 1 and again["resolved_at"] is None
    assert one(server, broken["id"])["occurrences"] == 1
    assert ids(alerts(server)) == [again["id"], recovered["id"], broken["id"]]

    quiet(server)
    sent = on(receiver, "/alerts")
    assert sorted(r.headers["x-cueapi-alert-type"] for r in sent) == [
        "recovered",
        "retries_exhausted",
        "retries_exhausted",
    ]
    (notice,) = [r for r in sent if r.headers["x-cueapi-alert-type"] == "recovered"]
    body = canonical(notice)
    assert body["alert_id"] == recovered["id"] and body["severity"] == "info"
    assert signed_by(notice, alert_secret(server))
    # The cue's failure webhook hears of failures only.
    assert sorted(canonical(r)["alert_id"] for r in on(receiver, "/fail")) == sorted(
        [broken["id"], again["id"]]
    )


def test_consecutive_failures_threshold_is_per_cue_and_a_success_resets_the_count(
    server: Server, receiver: Receiver
) -> None:
    receiver.answer = lambda r: (
        (200, JSON, b'{"success": false, "error": "nope"}', 0.0)
        if r.path == "/inline-failure"
        else (200, {}, b"", 0.0)
    )
    two = webhook_cue(server, receiver, alerts={"consecutive_failures": 2})
    assert two["alerts"] == {"consecutive_failures": 2}
    # This one's handler answers every delivery with a failure outcome, inline.
    three = webhook_cue(server, receiver, "/inline-failure")

    def outcome(cue: dict[str, Any], success: bool) -> str:
        eid = delivered(server, cue)
        reported(server, eid, success=success, error=None if success else "no rows")
        return eid

    def delivered_failing(cue: dict[str, Any]) -> str:
        """Delivered, and answered with a failure: the execution fails (a reported failure)."""
        eid = fire(server, cue)
        settled(server, eid, "failed")
        return eid

    outcome(two, False)
    delivered_failing(three)
    outcome(two, True)  # resets the count
    outcome(two, False)
    delivered_failing(three)
    assert alerts(server) == []  # two: 1 in a row; three: 2 in a row
    last = outcome(two, False)
    (alert,) = alerts(server)
    assert alert["alert_type"] == "consecutive_failures" and alert["cue_id"] == two["id"]
    assert alert["execution_id"] == last
    assert alert["metadata"]["consecutive_failures"] == 2
    third = delivered_failing(three)
    got = alert_of(server, three, "consecutive_failures")
    assert got["execution_id"] == third and got["metadata"]["consecutive_failures"] == 3
    # The threshold can be changed.
    r = server.call("PATCH", f"/v1/cues/{two['id']}", {"alerts": {"consecutive_failures": 5}})
    assert r.status_code == 200 and r.json()["alerts"] == {"consecutive_failures": 5}, r.text


def test_a_delivery_whose_handler_then_reports_failure_does_not_close_the_incident(
    server: Server, receiver: Receiver
) -> None:
    """A cue whose handler reports every run failed, after its ``consecutive_failures`` alert:
    a 2xx delivery is not a success of the run (its outcome is still to come), so no
    ``recovered`` notice may close the incident while the failures go on."""
    cue = webhook_cue(server, receiver, alerts={"consecutive_failures": 2})
    for _ in range(4):
        eid = delivered(server, cue)
        reported(server, eid, success=False, error="no rows")
    found = alerts(server, cue_id=cue["id"])
    assert [a["alert_type"] for a in found][:1] == ["consecutive_failures"], found
    assert found[0]["resolved_at"] is None, found
    assert alerts(server, alert_type="recovered") == []


def test_failures_in_a_row_beyond_the_threshold_count_on_the_open_alert(
    timed: Server, now_clock: cueapi.ManualClock
) -> None:
    cue = worker_cue(timed, alerts={"consecutive_failures": 2})
    worker_fails(timed, cue)
    worker_fails(timed, cue)
    (alert,) = alerts(timed, alert_type="consecutive_failures")
    assert alert["occurrences"] == 1
    now_clock.advance(60)
    worker_fails(timed, cue)  # three in a row: the same trouble, seen again
    (again,) = alerts(timed, alert_type="consecutive_failures")
    assert again["id"] == alert["id"]
    assert again["occurrences"] == 2, again
    assert instant(again["last_seen_at"]) == now_clock.now()


def test_the_realert_interval_is_a_server_setting(tmp_path: Path, now_clock: cueapi.ManualClock) -> None:
    s = start_server(tmp_path / "realert.db", now_clock, realert_seconds=60)
    try:
        cue = worker_cue(s)
        worker_fails(s, cue)
        now_clock.advance(30)
        worker_fails(s, cue)
        (alert,) = alerts(s, alert_type="retries_exhausted")
        assert alert["occurrences"] == 2
        now_clock.advance(31)
        worker_fails(s, cue)  # 61 s after the alert: past the interval, a new alert
        assert [a["occurrences"] for a in alerts(s, alert_type="retries_exhausted")] == [1, 2]
    finally:
        s.app.close()


def test_failures_in_a_row_that_go_on_past_the_realert_interval_alert_again(
    timed: Server, now_clock: cueapi.ManualClock
) -> None:
    cue = worker_cue(timed, alerts={"consecutive_failures": 2})
    worker_fails(timed, cue)
    worker_fails(timed, cue)
    (first,) = alerts(timed, alert_type="consecutive_failures")
    now_clock.advance(61 * 60)
    latest = worker_fails(timed, cue)  # still failing, every run, an hour later
    # Its retries_exhausted alert is raised again after the interval ...
    assert len(alerts(timed, alert_type="retries_exhausted")) == 2
    # ... and so must its consecutive_failures alert be.
    found = alerts(timed, alert_type="consecutive_failures")
    assert len(found) == 2, found
    assert found[0]["id"] != first["id"] and found[0]["execution_id"] == latest


# -- the cue's failure webhook ---------------------------------------------------------------------


def test_the_cues_failure_webhook_gets_cue_failed_signed_with_the_webhook_secret(
    server: Server, receiver: Receiver
) -> None:
    receiver.answer = by_path({"/hook": 500})
    # No alert webhook: the cue's own failure webhook works on its own.
    cue = webhook_cue(server, receiver, name="billing-sync", on_failure={"webhook": receiver.url + "/fail"})
    eid = fire(server, cue)
    (req,) = arrivals(receiver, "/fail")
    (alert,) = alerts(server)
    assert req.method == "POST" and req.headers["content-type"] == "application/json"
    body = canonical(req)
    assert set(body) == FAILED_KEYS
    assert body["event"] == "cue.failed"
    assert body["alert_id"] == alert["id"] and body["alert_type"] == "retries_exhausted"
    assert body["cue_id"] == cue["id"] and body["cue_name"] == "billing-sync"
    assert body["execution_id"] == eid
    assert body["message"] == alert["message"]
    assert body["attempts"] == 1 and body["last_http_status"] == 500
    assert "500" in body["last_error"]
    assert python_instant(body["failed_at"]) == instant(alert["created_at"])
    assert req.headers["x-cueapi-alert-id"] == alert["id"]
    assert req.headers["x-cueapi-alert-type"] == "retries_exhausted"
    assert signed_by(req, server.secret)
    assert not signed_by(req, alert_secret(server))
    assert on(receiver, "/alerts") == []

    # The object form; a worker failure; a consecutive_failures alert (a warning, not a final
    # failure) raised by the same report does not reach the failure webhook.
    worker = worker_cue(
        server, on_failure={"webhook": {"url": receiver.url + "/fail2"}}, alerts={"consecutive_failures": 1}
    )
    weid = worker_fails(server, worker)
    assert {a["alert_type"] for a in alerts(server, cue_id=worker["id"])} == {
        "retries_exhausted",
        "consecutive_failures",
    }
    quiet(server)
    (req2,) = on(receiver, "/fail2")
    body2 = canonical(req2)
    assert body2["alert_type"] == "retries_exhausted" and body2["execution_id"] == weid
    assert body2["attempts"] == 1 and body2["last_http_status"] is None
    assert body2["last_error"] == "bad input"
    assert signed_by(req2, server.secret)


def test_a_failure_with_pause_on_failure_pauses_the_recurring_cue(server: Server, receiver: Receiver) -> None:
    receiver.answer = by_path({"/hook": 500})
    pausing = webhook_cue(server, receiver, schedule=RECURRING, on_failure={"pause": True})
    keeping = webhook_cue(server, receiver, schedule=RECURRING)
    for cue in (pausing, keeping):
        settled(server, fire(server, cue), "failed")
        alert_of(server, cue, "retries_exhausted")
    got = server.call("GET", f"/v1/cues/{pausing['id']}").json()
    assert got["status"] == "paused" and got["next_run"] is None
    assert server.call("GET", f"/v1/cues/{keeping['id']}").json()["status"] == "active"


# -- sending notifications -------------------------------------------------------------------------


def test_a_failed_notification_is_retried_on_the_backoff(
    timed: Server, now_clock: cueapi.ManualClock, receiver: Receiver, beacon: Receiver
) -> None:
    answers = iter([500, 503])  # the first two tries fail, the rest succeed
    receiver.answer = lambda r: (
        (next(answers, 200) if r.path == "/alerts" else 500),
        {},
        b"",
        0.0,
    )
    watch(timed, receiver.url + "/alerts")
    t0 = now_clock.now()
    fire(timed, webhook_cue(timed, receiver, on_failure={"email": False}))
    (alert,) = wait_for(lambda: alerts(timed), what="the alert")

    def tried(n: int) -> list[tuple[str, str, str, int]]:
        return wait_for(
            lambda: box if (box := outbox(timed))[0][3] == n else [],
            15,
            f"notification attempt {n} to be recorded",
        )

    arrivals(receiver, "/alerts", 1)
    assert tried(1) == [(alert["id"], "alert_webhook", "pending", 1)]
    advance(timed, now_clock, beacon, 4)
    assert len(on(receiver, "/alerts")) == 1
    now_clock.advance(1)  # 5 s after the first try
    arrivals(receiver, "/alerts", 2)
    assert tried(2) == [(alert["id"], "alert_webhook", "pending", 2)]
    now_clock.advance(30)  # 30 s after the second
    got = arrivals(receiver, "/alerts", 3)
    assert tried(3) == [(alert["id"], "alert_webhook", "sent", 3)]
    secret = alert_secret(timed)
    for req, after in zip(got, (0, 5, 35), strict=True):
        assert req.headers["x-cueapi-timestamp"] == str(int(t0.timestamp()) + after)
        assert req.headers["x-cueapi-alert-id"] == alert["id"]
        assert req.body == got[0].body  # the same notification each time
        assert signed_by(req, secret)
    advance(timed, now_clock, beacon, 3600)
    assert len(on(receiver, "/alerts")) == 3


def test_a_notification_not_yet_sent_is_sent_after_a_restart(
    tmp_path: Path, now_clock: cueapi.ManualClock, receiver: Receiver
) -> None:
    down = threading.Event()
    down.set()
    receiver.answer = lambda r: (500 if r.path == "/hook" or down.is_set() else 200, {}, b"", 0.0)
    db = tmp_path / "restart.db"
    first = start_server(db, now_clock)
    try:
        watch(first, receiver.url + "/alerts")
        fire(first, webhook_cue(first, receiver, on_failure={"email": False}))
        arrivals(receiver, "/alerts", 1)
        wait_for(lambda: outbox(first)[0][3] == 1, what="the failed try to be recorded")
    finally:
        first.app.close()
    down.clear()
    now_clock.advance(5)
    second = reopen(db, first, now_clock)
    try:
        got = arrivals(receiver, "/alerts", 2)
        assert got[1].body == got[0].body
        assert signed_by(got[1], alert_secret(second))
        assert [s for _, _, s, _ in quiet(second)] == ["sent"]
    finally:
        second.app.close()


def test_email_alerts_are_recorded_as_skipped_without_smtp(server: Server, receiver: Receiver) -> None:
    receiver.answer = by_path({"/hook": 500})
    emailing = webhook_cue(server, receiver)
    silent = webhook_cue(server, receiver, on_failure={"email": False})
    fire(server, emailing)
    fire(server, silent)
    a = alert_of(server, emailing, "retries_exhausted")
    b = alert_of(server, silent, "retries_exhausted")
    box = quiet(server)
    assert [(c, s) for i, c, s, _ in box if i == a["id"]] == [("email", "skipped")]
    assert [row for row in box if row[0] == b["id"]] == []
    assert me(server)["email"] == "owner@example.com"  # the server carries on


# -- listing and acknowledging ---------------------------------------------------------------------


def test_list_filters_paging_and_acknowledgement(timed: Server, now_clock: cueapi.ManualClock) -> None:
    t0 = now_clock.now()
    c1, c2, c4, c5 = (worker_cue(timed) for _ in range(4))
    c3 = worker_cue(timed, verification={"mode": "require_external_id"})
    worker_fails(timed, c1)
    now_clock.advance(10)
    worker_fails(timed, c2)
    now_clock.advance(10)
    reported(timed, fire(timed, c3), success=True, result="no id")
    now_clock.advance(10)
    worker_fails(timed, c4)
    now_clock.advance(10)
    worker_fails(timed, c5)
    newest_first = alerts(timed)
    a5, a4, a3, a2, a1 = newest_first
    assert [a["cue_id"] for a in newest_first] == [c["id"] for c in (c5, c4, c3, c2, c1)]
    assert [instant(a["created_at"]) for a in newest_first] == [
        t0 + timedelta(seconds=s) for s in (40, 30, 20, 10, 0)
    ]
    assert a3["alert_type"] == "verification_failed"

    body = page(timed)
    assert (body["total"], body["limit"], body["offset"], body["has_more"]) == (5, 20, 0, False)
    expected = [(2, 0, [a5, a4], True), (2, 2, [a3, a2], True), (2, 4, [a1], False), (2, 10, [], False)]
    for limit, offset, items, more in expected:
        body = page(timed, limit=limit, offset=offset)
        assert body["alerts"] == body["data"] == items, (limit, offset)
        assert (body["total"], body["limit"], body["offset"], body["has_more"]) == (5, limit, offset, more)
    assert ids(alerts(timed, limit=100)) == ids(newest_first)

    assert alerts(timed, alert_type="verification_failed") == [a3]
    assert alerts(timed, alert_type="retries_exhausted") == [a5, a4, a2, a1]
    assert alerts(timed, alert_type="missed") == []
    assert alerts(timed, cue_id=c1["id"]) == [a1]
    assert alerts(timed, cue_id=c1["id"], alert_type="verification_failed") == []
    assert alerts(timed, cue_id="cue_nothing") == []
    since = t0 + timedelta(seconds=20)
    assert alerts(timed, since=since.isoformat().replace("+00:00", "Z")) == [a5, a4, a3]
    assert alerts(timed, since=since.isoformat()) == [a5, a4, a3]
    assert alerts(timed, since=since.astimezone(timezone(timedelta(hours=2))).isoformat()) == [a5, a4, a3]
    assert alerts(timed, since=(since + timedelta(milliseconds=1)).isoformat()) == [a5, a4]

    # Acknowledge: once, and again (idempotent: the first time is kept).
    now_clock.advance(5)
    acked = acknowledge(timed, a2["id"])
    assert acked["acknowledged"] is True and instant(acked["acknowledged_at"]) == now_clock.now()
    assert {k: v for k, v in acked.items() if not k.startswith("acknowledged")} == {
        k: v for k, v in a2.items() if not k.startswith("acknowledged")
    }
    now_clock.advance(5)
    assert acknowledge(timed, a2["id"]) == acked
    assert one(timed, a2["id"]) == acked
    assert alerts(timed, acknowledged="true") == [acked]
    assert ids(alerts(timed, acknowledged="false")) == ids([a5, a4, a3, a1])
    body = page(timed, acknowledged="false", limit=1, offset=1)
    assert ids(body["alerts"]) == [a4["id"]] and body["total"] == 4 and body["has_more"] is True
    assert alerts(timed, acknowledged="true", alert_type="verification_failed") == []
    for a in (a5, a3, a1):
        assert one(timed, a["id"]) == a


@pytest.mark.parametrize(
    ("params", "status", "code", "field"),
    [
        ({"alert_type": "nope"}, 400, "invalid_filter", None),
        ({"alert_type": "RETRIES_EXHAUSTED"}, 400, "invalid_filter", None),
        ({"limit": 0}, 422, "validation_error", "query.limit"),
        ({"limit": 101}, 422, "validation_error", "query.limit"),
        ({"limit": "ten"}, 422, "validation_error", "query.limit"),
        ({"offset": -1}, 422, "validation_error", "query.offset"),
        ({"since": "yesterday"}, 422, "validation_error", "query.since"),
        ({"acknowledged": "maybe"}, 422, "validation_error", "query.acknowledged"),
    ],
)
def test_bad_list_parameters_are_refused(
    server: Server, params: dict[str, Any], status: int, code: str, field: str | None
) -> None:
    worker_fails(server, worker_cue(server))
    before = alerts(server)
    assert_error(server.call("GET", "/v1/alerts", params=params), status, code, field)
    assert alerts(server) == before


def test_an_unknown_alert_is_404(server: Server) -> None:
    assert_error(server.call("GET", "/v1/alerts/alert_nothing"), 404, "alert_not_found")
    assert_error(server.call("POST", "/v1/alerts/alert_nothing/acknowledge"), 404, "alert_not_found")
    assert alerts(server) == []


# -- tenants ---------------------------------------------------------------------------------------


def test_another_users_alerts_are_invisible_and_untouchable(
    server: Server, receiver: Receiver, other: str
) -> None:
    watch(server, receiver.url + "/alerts")
    watch(server, receiver.url + "/other", key=other)
    mine_cue = worker_cue(server)
    worker_fails(server, mine_cue)
    (mine,) = alerts(server)
    assert alerts(server, key=other) == []
    assert alerts(server, key=other, cue_id=mine_cue["id"]) == []
    assert_error(server.call("GET", f"/v1/alerts/{mine['id']}", key=other), 404, "alert_not_found")
    assert_error(
        server.call("POST", f"/v1/alerts/{mine['id']}/acknowledge", key=other), 404, "alert_not_found"
    )
    assert alerts(server) == [mine]  # still unacknowledged

    theirs_cue = worker_cue(server, key=other)
    worker_fails(server, theirs_cue, key=other)
    (theirs,) = alerts(server, key=other)
    assert theirs["cue_id"] == theirs_cue["id"]
    assert alerts(server) == [mine]
    assert_error(server.call("GET", f"/v1/alerts/{theirs['id']}"), 404, "alert_not_found")
    r = server.call("POST", f"/v1/alerts/{theirs['id']}/acknowledge", key=other)
    assert r.status_code == 200 and r.json()["acknowledged"] is True, r.text
    assert alerts(server) == [mine]

    # Each user's notification goes to their own webhook, signed with their own secret.
    quiet(server)
    (to_me,) = on(receiver, "/alerts")
    (to_them,) = on(receiver, "/other")
    assert to_me.headers["x-cueapi-alert-id"] == mine["id"]
    assert to_them.headers["x-cueapi-alert-id"] == theirs["id"]
    mine_secret, their_secret = alert_secret(server), alert_secret(server, key=other)
    assert mine_secret != their_secret
    assert signed_by(to_me, mine_secret) and not signed_by(to_me, their_secret)
    assert signed_by(to_them, their_secret) and not signed_by(to_them, mine_secret)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/alerts"),
        ("GET", "/v1/alerts/alert_x"),
        ("POST", "/v1/alerts/alert_x/acknowledge"),
        ("PATCH", "/v1/auth/me"),
        ("GET", "/v1/auth/alert-webhook-secret"),
        ("POST", "/v1/auth/alert-webhook-secret/regenerate"),
    ],
)
def test_alert_routes_need_a_key(server: Server, method: str, path: str) -> None:
    r = server.call(method, path, {"alert_webhook_url": ""}, key=None, headers=CONFIRM)
    assert_error(r, 401, "invalid_api_key")
    assert_error(server.call(method, path, key="cue_sk_" + "0" * 32, headers=CONFIRM), 401)


# -- PATCH /v1/auth/me -----------------------------------------------------------------------------


def test_the_alert_webhook_url_is_set_shown_and_cleared(server: Server, receiver: Receiver) -> None:
    assert me(server)["alert_webhook_url"] is None
    url = receiver.url + "/alerts"
    r = server.call("PATCH", "/v1/auth/me", {"alert_webhook_url": url})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"updated_at", "alert_webhook_url", "warning"}
    assert body["alert_webhook_url"] == url and body["warning"] is None
    assert body["updated_at"].endswith("Z")
    assert abs(instant(body["updated_at"]).timestamp() - time.time()) < 60
    assert me(server)["alert_webhook_url"] == url

    for clear in ("", None):
        watch(server, url)
        r = server.call("PATCH", "/v1/auth/me", {"alert_webhook_url": clear})
        assert r.status_code == 200 and r.json()["alert_webhook_url"] is None, r.text
        assert me(server)["alert_webhook_url"] is None

    # With no alert webhook, alerts are still kept, and nothing is sent.
    receiver.answer = by_path({"/hook": 500})
    cue = webhook_cue(server, receiver, on_failure={"email": False})
    fire(server, cue)
    alert_of(server, cue, "retries_exhausted")
    assert quiet(server) == []
    assert on(receiver, "/alerts") == []


def test_an_unresolvable_alert_webhook_is_kept_with_a_warning(server: Server) -> None:
    url = "http://alerts.nonexistent.invalid/hook"
    r = server.call("PATCH", "/v1/auth/me", {"alert_webhook_url": url})
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["warning"], str) and "alerts.nonexistent.invalid" in r.json()["warning"]
    assert me(server)["alert_webhook_url"] == url


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pass@example.com/hook",
        "https://token@example.com/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/",
        "http://0.0.0.0/",
        "http://[fe80::1]/",
        "ftp://example.com/hook",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "not a url",
    ],
)
def test_a_refused_alert_webhook_url_is_400_and_changes_nothing(
    server: Server, receiver: Receiver, url: str
) -> None:
    watch(server, receiver.url + "/alerts")
    before = me(server)
    r = server.call("PATCH", "/v1/auth/me", {"alert_webhook_url": url})
    assert_error(r, 400, "invalid_alert_webhook_url")
    assert me(server) == before


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({}, 422, "no_fields", None),
        ({"email": "new@example.com"}, 422, "validation_error", "body.email"),
        ({"email": "new@example.com", "alert_webhook_url": ELSEWHERE}, 422, "validation_error", "body.email"),
        ({"plan": "pro"}, 422, "validation_error", "body.plan"),
        ({"alert_webhook_url": 42}, 422, "validation_error", "body.alert_webhook_url"),
        ({"alert_webhook_url": [ELSEWHERE]}, 422, "validation_error", "body.alert_webhook_url"),
        ([{"alert_webhook_url": ELSEWHERE}], 422, "validation_error", "body"),
    ],
)
def test_a_bad_me_update_is_refused_and_changes_nothing(
    server: Server, receiver: Receiver, body: Any, status: int, code: str, field: str | None
) -> None:
    watch(server, receiver.url + "/alerts")
    before = me(server)
    r = server.call("PATCH", "/v1/auth/me", body)
    if code == "no_fields":  # the reference's own error: no field details to name
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == "no_fields", r.text
    else:
        assert_error(r, status, code, field)
    assert me(server) == before


@pytest.mark.parametrize(("content", "status"), [(b"", 422), (b"{bad", 400), (b"null", 422)])
def test_a_me_update_without_a_json_object_is_refused(
    server: Server, receiver: Receiver, content: bytes, status: int
) -> None:
    watch(server, receiver.url + "/alerts")
    before = me(server)
    r = server.call("PATCH", "/v1/auth/me", content=content, headers=JSON)
    assert_error(r, status)
    assert me(server) == before
