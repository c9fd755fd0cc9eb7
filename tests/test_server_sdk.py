"""`cueapi serve` against the official clients: the CueAPI Python SDK as `pip install cueapi-sdk`
gives it today (0.1.3, run in .venv-sdk through tests/sdk_scripts/sdk_driver.py because its import
name `cueapi` clashes with ours) drives the API, parses every answer with its own models and maps
errors to its own exceptions; the SDK's `verify_webhook`, the Standard Webhooks library and our
own verifier accept the deliveries the server really sends to a real receiver."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import cueapi
import pytest
import standardwebhooks
from cueapi.webhooks import verify_webhook_headers
from standardwebhooks.webhooks import WebhookVerificationError

from tests.conftest import Received, Receiver, Server, wait_for
from tests.official_sdk import SDK, SDK_PYTHON

CUE = "cueapi.models.cue.Cue"
CUE_LIST = "cueapi.models.cue.CueList"


@pytest.fixture
def sdk(server: Server, tmp_path: Path) -> Iterator[SDK]:
    assert SDK_PYTHON.exists(), "run `make develop`: it installs cueapi-sdk into .venv-sdk"
    client = SDK(server.url, server.key, tmp_path / "sdk-stderr.txt")
    yield client
    client.close()


def raw(data: bytes) -> dict[str, str]:
    """Bytes, as the driver takes them."""
    return {"__bytes__": base64.b64encode(data).decode()}


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def fire(sdk: SDK, cue_id: str, **body: Any) -> dict[str, Any]:
    # PyPI 0.1.3 has no `cues.fire`: this goes through the SDK client's own HTTP plumbing
    # (`_post`, hence its headers, error mapping and response handling) with the request the
    # newer SDK's `fire` sends: POST /v1/cues/{id}/fire with only the keys given among
    # payload_override, merge_strategy, send_at and idempotency_key (in the body, not a header).
    out = dict(sdk.ok("_post", f"/v1/cues/{cue_id}/fire", json=body))
    for field in ("id", "cue_id", "scheduled_for", "status"):  # what the newer SDK's Execution model needs
        assert out.get(field) is not None, (field, out)
    assert out["cue_id"] == cue_id and out["triggered_by"] == "manual_fire", out
    return out


def delivered(server: Server, execution_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: (e := server.execution(execution_id))["status"] == "success" and e,
        timeout=15,
        what=f"delivery of {execution_id}",
    )


def by_execution(requests: list[Received]) -> dict[str, Received]:
    return {r.headers["x-cueapi-execution-id"]: r for r in requests}


def recurring(sdk: SDK, receiver: Receiver, name: str = "sync-customers") -> dict[str, Any]:
    """A recurring cue with every option the SDK's create sends."""
    return sdk.model(
        CUE,
        "cues.create",
        name,
        cron="0 9 * * MON-FRI",
        timezone="Europe/Paris",
        callback=receiver.url + "/hook",
        callback_method="PUT",
        callback_headers={"X-Team": "ops"},
        payload={"task": "sync", "batch": 100, "note": "naïve ☃"},
        description="weekday sync",
        retry={"max_attempts": 2, "backoff_minutes": [1, 5]},
        on_failure={"email": False, "webhook": None, "pause": True},
    )


def test_sdk_manages_cues(sdk: SDK, server: Server, receiver: Receiver) -> None:
    before = datetime.now(timezone.utc)
    rec = recurring(sdk, receiver)
    assert rec["id"].startswith("cue_") and rec["status"] == "active"
    assert rec["schedule"] == {
        "type": "recurring",
        "cron": "0 9 * * MON-FRI",
        "at": None,
        "timezone": "Europe/Paris",
    }
    assert rec["callback"] == {"url": receiver.url + "/hook", "method": "PUT", "headers": {"X-Team": "ops"}}
    assert rec["payload"] == {"task": "sync", "batch": 100, "note": "naïve ☃"}
    assert rec["description"] == "weekday sync" and rec["transport"] == "webhook"
    assert rec["retry"] == {"max_attempts": 2, "backoff_minutes": [1, 5]}
    assert rec["on_failure"] == {"email": False, "webhook": None, "pause": True}
    first = instant(rec["next_run"]).astimezone(ZoneInfo("Europe/Paris"))
    assert first > before and (first.hour, first.minute, first.second) == (9, 0, 0) and first.weekday() < 5
    assert instant(rec["created_at"]) >= before - timedelta(seconds=1)

    # A one-off `at` in the future, with an offset; the cue's zone is kept as given.
    at = (datetime.now(timezone(timedelta(hours=5, minutes=30))) + timedelta(days=2)).replace(microsecond=0)
    once = sdk.model(
        CUE, "cues.create", "report-once", at=at.isoformat(), timezone="Asia/Tokyo", callback=receiver.url
    )
    assert once["schedule"]["type"] == "once" and once["schedule"]["timezone"] == "Asia/Tokyo"
    assert instant(once["schedule"]["at"]) == at and instant(once["next_run"]) == at
    assert once["callback"]["method"] == "POST" and once["callback"]["headers"] == {}
    assert once["payload"] == {} and once["retry"] == {"max_attempts": 3, "backoff_minutes": [1, 5, 15]}

    # List: total and paging with limit=1, each item parsed as the SDK's Cue.
    out = sdk("cues.list")
    assert out["type"] == CUE_LIST and out["items"] == [CUE, CUE]
    assert out["value"]["total"] == 2 and out["value"]["limit"] == 20 and out["value"]["offset"] == 0
    pages = [sdk("cues.list", limit=1, offset=n) for n in (0, 1, 2)]
    assert [p["type"] for p in pages] == [CUE_LIST] * 3
    assert [p["value"]["total"] for p in pages] == [2, 2, 2]
    assert [(p["value"]["limit"], p["value"]["offset"]) for p in pages] == [(1, 0), (1, 1), (1, 2)]
    assert [len(p["value"]["cues"]) for p in pages] == [1, 1, 0]
    assert {p["value"]["cues"][0]["id"] for p in pages[:2]} == {rec["id"], once["id"]}

    got = sdk.model(CUE, "cues.get", rec["id"])
    assert got == rec

    # Update: what is sent changes, the rest stays.
    up = sdk.model(
        CUE, "cues.update", rec["id"], name="sync-customers-v2", payload={"task": "sync", "batch": 250}
    )
    assert up["name"] == "sync-customers-v2" and up["payload"] == {"task": "sync", "batch": 250}
    unchanged = ("schedule", "callback", "retry", "on_failure", "description", "status", "created_at")
    assert {k: up[k] for k in unchanged} == {k: rec[k] for k in unchanged}
    assert instant(up["updated_at"]) >= instant(rec["updated_at"])
    assert sdk.model(CUE, "cues.get", rec["id"]) == up

    # Pause and resume. Whatever next_run says while paused, a resume gives a future one.
    paused = sdk.model(CUE, "cues.pause", rec["id"])
    assert paused["status"] == "paused"
    assert sdk.model(CUE_LIST, "cues.list", status="paused")["cues"] == [
        sdk.model(CUE, "cues.get", rec["id"])
    ]
    resumed = sdk.model(CUE, "cues.resume", rec["id"])
    assert resumed["status"] == "active" and resumed["next_run"] is not None
    nxt = instant(resumed["next_run"]).astimezone(ZoneInfo("Europe/Paris"))
    assert nxt > before and (nxt.hour, nxt.minute) == (9, 0) and nxt.weekday() < 5
    assert sdk.model(CUE_LIST, "cues.list", status="paused")["total"] == 0

    # An invalid cron is the SDK's InvalidScheduleError, and creates nothing.
    err = sdk.raises("InvalidScheduleError", "cues.create", "bad", cron="61 * * * *", callback=receiver.url)
    assert err["status_code"] in (400, 422) and err["code"] == "invalid_schedule", err
    err = sdk.raises("InvalidScheduleError", "cues.update", rec["id"], cron="0 0 31 2 *")
    assert err["code"] == "invalid_schedule"
    assert sdk.model(CUE, "cues.get", rec["id"]) == resumed
    assert sdk.model(CUE_LIST, "cues.list")["total"] == 2

    # A bad key is the SDK's AuthenticationError, on every resource.
    for call, args in (("cues.list", ()), ("cues.get", (rec["id"],)), ("executions.list", ())):
        err = sdk.raises("AuthenticationError", call, *args, key="cue_sk_not_a_key")
        assert err["status_code"] == 401

    # Delete (204, None), then the cue is the SDK's CueNotFoundError; the other one remains.
    assert sdk("cues.delete", once["id"]) == {"ok": True, "type": "builtins.NoneType", "value": None}
    err = sdk.raises("CueNotFoundError", "cues.get", once["id"])
    assert err["status_code"] == 404 and err["code"] == "cue_not_found"
    sdk.raises("CueNotFoundError", "cues.delete", once["id"])
    sdk.raises("CueNotFoundError", "cues.update", once["id"], name="ghost")
    remaining = sdk.model(CUE_LIST, "cues.list")
    assert remaining["total"] == 1 and [c["id"] for c in remaining["cues"]] == [rec["id"]]


def test_sdk_fires_through_its_http_plumbing(sdk: SDK, server: Server, receiver: Receiver) -> None:
    cue = recurring(sdk, receiver)
    plain = fire(sdk, cue["id"])
    assert plain["status"] == "pending" and plain["payload"] == cue["payload"]
    merged = fire(sdk, cue["id"], payload_override={"batch": 5, "extra": "ü"}, merge_strategy="merge")
    assert merged["payload"] == {"task": "sync", "batch": 5, "note": "naïve ☃", "extra": "ü"}
    replaced = fire(sdk, cue["id"], payload_override={"only": True}, merge_strategy="replace")
    assert replaced["payload"] == {"only": True}

    # send_at in the future: the execution waits for it.
    send_at = (datetime.now(timezone.utc) + timedelta(hours=2)).replace(microsecond=0)
    later = fire(sdk, cue["id"], send_at=send_at.isoformat(), idempotency_key="nightly-2026-11-28")
    assert later["status"] == "pending" and instant(later["scheduled_for"]) == send_at
    # The same idempotency key gives the same execution, not a second one.
    again = fire(sdk, cue["id"], send_at=send_at.isoformat(), idempotency_key="nightly-2026-11-28")
    assert again["id"] == later["id"]

    # The three immediate fires reach the receiver as the cue's callback says.
    got = by_execution(receiver.wait(3))
    assert set(got) == {plain["id"], merged["id"], replaced["id"]}
    for ex in (plain, merged, replaced):
        r = got[ex["id"]]
        assert (r.method, r.path, r.headers["x-team"]) == ("PUT", "/hook", "ops")
        assert r.json()["payload"] == ex["payload"] and r.json()["cue_id"] == cue["id"]
        delivered(server, ex["id"])
    assert sdk.ok("executions.get", later["id"])["status"] == "pending"
    assert later["id"] not in by_execution(receiver.requests)

    # Firing a cue that does not exist is the SDK's CueNotFoundError; a bad strategy a 422.
    sdk.raises("CueNotFoundError", "_post", "/v1/cues/cue_missing/fire", json={})
    err = sdk.raises(
        "InvalidScheduleError", "_post", f"/v1/cues/{cue['id']}/fire", json={"merge_strategy": "deep"}
    )
    assert err["status_code"] == 422


def test_sdk_reports_outcomes_and_reads_executions(sdk: SDK, server: Server, receiver: Receiver) -> None:
    cue = recurring(sdk, receiver)
    ex = fire(sdk, cue["id"])
    receiver.wait(1)
    delivered(server, ex["id"])

    evidence = {
        "external_id": "batch_20260324_002",
        "result_url": "https://example.com/batches/002",
        "result_type": "data_sync",
        "summary": "Synced 847 records",
        "artifacts": [{"kind": "csv", "url": "https://example.com/002.csv"}],
    }
    out = sdk.ok(
        "executions.report_outcome",
        ex["id"],
        success=True,
        result="Synced 847 records",
        metadata={"records_synced": 847, "ratio": 0.1},
        **evidence,
    )
    assert out["execution_id"] == ex["id"] and out["outcome_recorded"] is True
    assert out["outcome_state"] == "reported_success"

    # A second report is a 409: the SDK's base CueAPIError, and the first outcome stays.
    err = sdk.raises("CueAPIError", "executions.report_outcome", ex["id"], success=False, error="late")
    assert err["status_code"] == 409 and err["code"] == "outcome_already_recorded"
    sdk.raises("CueNotFoundError", "executions.report_outcome", "exec_missing", success=True)
    err = sdk.raises(
        "InvalidScheduleError", "executions.report_outcome", ex["id"], success=True, result_url="ftp://x"
    )
    assert err["status_code"] == 422

    one = sdk.ok("executions.get", ex["id"])
    for field in ("id", "cue_id", "scheduled_for", "status"):  # the newer SDK's Execution model
        assert one[field] is not None, field
    assert (one["id"], one["cue_id"], one["status"], one["triggered_by"]) == (
        ex["id"],
        cue["id"],
        "success",
        "manual_fire",
    )
    assert one["outcome_state"] == "reported_success" and one["http_status"] == 200
    outcome = one["outcome"]  # the newer SDK's OutcomeDetail: success required, the rest optional
    assert (
        outcome["success"] is True and outcome["result"] == "Synced 847 records" and outcome["error"] is None
    )
    assert outcome["metadata"] == {"records_synced": 847, "ratio": 0.1}
    assert {k: outcome[k] for k in evidence} == evidence
    assert outcome["recorded_at"] is not None
    sdk.raises("CueNotFoundError", "executions.get", "exec_missing")

    # A second execution, failed, for the list filters.
    failed = fire(sdk, cue["id"], payload_override={"batch": 0})
    receiver.wait(2)
    delivered(server, failed["id"])
    assert sdk.ok("executions.report_outcome", failed["id"], success=False, error="upstream 503")[
        "outcome_state"
    ] == ("reported_failure")

    page = sdk.ok("executions.list", cue_id=cue["id"])
    for field in ("executions", "total", "limit", "offset"):  # the newer SDK's ExecutionList
        assert field in page, field
    assert page["total"] == 2 and page["limit"] == 20 and page["offset"] == 0
    assert {e["id"] for e in page["executions"]} == {ex["id"], failed["id"]}
    listed = {e["id"]: e for e in page["executions"]}
    assert listed[ex["id"]]["outcome"] == outcome
    assert listed[failed["id"]]["outcome"]["error"] == "upstream 503"

    page = sdk.ok("executions.list", cue_id=cue["id"], limit=1, offset=1)
    assert (page["total"], page["limit"], page["offset"], len(page["executions"])) == (2, 1, 1, 1)
    only = sdk.ok("executions.list", cue_id=cue["id"], outcome_state="reported_failure")
    assert [e["id"] for e in only["executions"]] == [failed["id"]] and only["total"] == 1
    # A failure reported after the delivery fails the execution: the handler's verdict is final.
    assert sdk.ok("executions.list", status="success", cue_id=cue["id"])["total"] == 1
    assert [e["id"] for e in sdk.ok("executions.list", status="failed")["executions"]] == [failed["id"]]


def test_sdk_manual_verification(sdk: SDK, server: Server, receiver: Receiver) -> None:
    # PyPI 0.1.3 cannot set a verification mode; the cue is made over HTTP, the rest is the SDK.
    made = server.cue(
        name="needs-review",
        schedule={"type": "recurring", "cron": "0 0 1 1 *"},
        callback={"url": receiver.url},
        verification={"mode": "manual"},
    )
    assert sdk.model(CUE, "cues.get", made["id"])["name"] == "needs-review"
    ex = fire(sdk, made["id"])
    receiver.wait(1)
    delivered(server, ex["id"])

    # Nothing to verify before an outcome: a 409, the SDK's base CueAPIError.
    err = sdk.raises("CueAPIError", "executions.mark_verification_pending", ex["id"])
    assert err["status_code"] == 409 and err["code"] == "no_outcome"
    sdk.raises("CueNotFoundError", "executions.mark_verified", "exec_missing")

    out = sdk.ok("executions.report_outcome", ex["id"], success=True, external_id="ticket-42", summary="done")
    assert out["outcome_state"] == "verification_pending"
    out = sdk.ok("executions.mark_verification_pending", ex["id"])
    assert out == {"execution_id": ex["id"], "outcome_state": "verification_pending"}
    # 0.1.3's mark_verified posts {} whatever `valid` says: the server's default is a valid verdict.
    out = sdk.ok("executions.mark_verified", ex["id"])
    assert (
        out["execution_id"] == ex["id"]
        and out["outcome_state"] == "verified_success"
        and out["valid"] is True
    )
    assert sdk.ok("executions.get", ex["id"])["outcome_state"] == "verified_success"
    listed = sdk.ok("executions.list", outcome_state="verified_success")
    assert [e["id"] for e in listed["executions"]] == [ex["id"]]

    # A verdict is not reopened.
    err = sdk.raises("CueAPIError", "executions.mark_verification_pending", ex["id"])
    assert err["status_code"] == 409
    assert sdk.ok("executions.get", ex["id"])["outcome_state"] == "verified_success"


def test_sdk_lists_executions_by_trigger(sdk: SDK, server: Server, receiver: Receiver) -> None:
    # executions.list(triggered_by=...) is a filter the SDK sends as a query parameter.
    cue = recurring(sdk, receiver)
    fired = fire(sdk, cue["id"])
    receiver.wait(1)
    delivered(server, fired["id"])
    # The newer SDK's `executions.replay` posts {} here.
    replayed = sdk.ok("_post", f"/v1/executions/{fired['id']}/replay", json={})
    assert replayed["triggered_by"] == "replay" and replayed["id"] != fired["id"]
    receiver.wait(2)
    delivered(server, replayed["id"])

    assert sdk.ok("executions.list", cue_id=cue["id"])["total"] == 2
    manual = sdk.ok("executions.list", triggered_by="manual_fire")
    assert [e["id"] for e in manual["executions"]] == [fired["id"]] and manual["total"] == 1
    replays = sdk.ok("executions.list", triggered_by="replay")
    assert [e["id"] for e in replays["executions"]] == [replayed["id"]] and replays["total"] == 1


# -- deliveries and their signatures -----------------------------------------------------------------

PAYLOADS: list[dict[str, Any]] = [
    {"text": "é, 中文 and 😀", "keys too": {"clé": "värde", "键": "😀"}},
    {"floats": [0.1, 1e16, 1e-05, -0.0, 1.5, 123456789.123, 2.0**49 + 0.25]},
    {"nested": [{"a": [1, {"b": [2.5, None, True]}], "z": []}, {"c": [[{"d": [False]}]]}]},
    {"big": [2**63 - 1, -(2**63), 2**64 - 1, 2**53 + 1, 10**15]},
    {"mixed": {"é": [1e16, "😀", {"n": -0.0}]}, "plain": "ascii / slash \\ back"},
]


def deliveries(
    server: Server, receiver: Receiver, payloads: list[dict[str, Any]]
) -> list[tuple[Any, Received]]:
    """Fires a webhook cue once per payload (replacing the cue's) and returns each payload with
    the request the receiver got for it."""
    cue = server.cue(
        name="signed", schedule={"type": "recurring", "cron": "0 0 1 1 *"}, callback={"url": receiver.url}
    )
    ids = []
    for p in payloads:
        r = server.call(
            "POST", f"/v1/cues/{cue['id']}/fire", {"payload_override": p, "merge_strategy": "replace"}
        )
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    got = by_execution(receiver.wait(len(payloads)))
    return [(p, got[i]) for p, i in zip(payloads, ids, strict=True)]


def tampered(body: bytes) -> list[bytes]:
    """One byte changed: still JSON (the attempt number), and no longer JSON (the last brace)."""
    as_json = body.replace(b'"attempt": 1,', b'"attempt": 2,', 1)
    broken = body[:-1] + b"]"
    for t in (as_json, broken):
        assert len(t) == len(body) and sum(a != b for a, b in zip(t, body, strict=True)) == 1
    return [as_json, broken]


def test_sdk_verify_webhook_accepts_our_deliveries(sdk: SDK, server: Server, receiver: Receiver) -> None:
    got = deliveries(server, receiver, PAYLOADS)
    for payload, r in got:
        # Sent as signed: the canonical text Python's json.dumps(sort_keys=True) writes.
        assert r.body == json.dumps(json.loads(r.body), sort_keys=True).encode()
        assert json.dumps(r.json()["payload"], sort_keys=True) == json.dumps(payload, sort_keys=True)
        sig, ts = r.headers["x-cueapi-signature"], r.headers["x-cueapi-timestamp"]
        assert sig.startswith("v1=")
        # The raw bytes, the text and the parsed body, as the SDK's docstring allows.
        for body in (raw(r.body), r.body.decode(), r.json()):
            assert sdk.ok("verify_webhook", body, sig, server.secret, ts) is True, (payload, body)
        for bad in tampered(r.body):
            assert sdk.ok("verify_webhook", raw(bad), sig, server.secret, ts) is False, bad
        assert sdk.ok("verify_webhook", raw(r.body), sig, server.secret + "0", ts) is False
        assert sdk.ok("verify_webhook", raw(r.body), sig, server.secret, str(int(ts) + 1)) is False


def test_standard_webhooks_accepts_our_deliveries(server: Server, receiver: Receiver) -> None:
    assert server.secret.startswith("whsec_")
    hook = standardwebhooks.Webhook(server.secret)  # the user's secret, as is
    for _, r in deliveries(server, receiver, PAYLOADS):
        assert r.headers["webhook-id"] and r.headers["webhook-signature"].startswith("v1,")
        assert r.headers["webhook-timestamp"] == r.headers["x-cueapi-timestamp"]
        assert hook.verify(r.body, r.headers) == r.json()
        for bad in tampered(r.body):
            with pytest.raises(WebhookVerificationError):
                hook.verify(bad, r.headers)
        with pytest.raises(WebhookVerificationError):
            hook.verify(r.body, {**r.headers, "webhook-id": r.headers["webhook-id"] + "x"})


def test_our_verify_webhook_accepts_our_deliveries(server: Server, receiver: Receiver) -> None:
    for _, r in deliveries(server, receiver, PAYLOADS):
        sig, ts = r.headers["x-cueapi-signature"], r.headers["x-cueapi-timestamp"]
        assert cueapi.verify_webhook(r.body, sig, server.secret, ts)
        assert cueapi.verify_webhook(r.json(), sig, server.secret, ts)
        assert verify_webhook_headers(r.body, r.headers, server.secret)  # Standard Webhooks headers
        v1_only = {k: v for k, v in r.headers.items() if not k.startswith("webhook-")}
        assert verify_webhook_headers(r.body, v1_only, server.secret)
        for bad in tampered(r.body):
            assert not cueapi.verify_webhook(bad, sig, server.secret, ts)
            assert not verify_webhook_headers(bad, r.headers, server.secret)
            assert not verify_webhook_headers(bad, v1_only, server.secret)


def test_integers_beyond_64_bits_are_never_silently_changed(server: Server, receiver: Receiver) -> None:
    # Python clients send any int and the reference server (Python, JSONB) keeps it exact. A server
    # may refuse such a payload (4xx); it must not deliver, sign and store another number instead.
    payload = {"big": [10**20, -(10**20), 2**64, 12345678901234567890123]}
    cue = server.call(
        "POST",
        "/v1/cues",
        {
            "name": "ints",
            "schedule": {"cron": "0 0 1 1 *"},
            "callback": {"url": receiver.url},
            "payload": payload,
        },
    )
    assert (cue.status_code == 201 and cue.json()["payload"] == payload) or 400 <= cue.status_code < 500, (
        cue.text
    )
    c = server.cue(name="ints2", schedule={"cron": "0 0 1 1 *"}, callback={"url": receiver.url})
    r = server.call(
        "POST", f"/v1/cues/{c['id']}/fire", {"payload_override": payload, "merge_strategy": "replace"}
    )
    if 400 <= r.status_code < 500:
        return
    assert r.status_code == 200 and r.json()["payload"] == payload, r.text
    [got] = receiver.wait(1)
    assert got.json()["payload"] == payload, got.body
