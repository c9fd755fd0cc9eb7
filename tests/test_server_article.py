"""The seed article's code (examples/article_monitoring.py) against a live ``cueapi serve``: its cue,
its Flask receiver with both signature checks, its outcome reports, failure alerts, history and
evidence queries — adapted only in base URL, keys and callback URL."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib.util
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import cueapi
import flask
import httpx
import pytest
from werkzeug.serving import make_server

from tests.conftest import Receiver, Server, start_server, wait_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "article_monitoring.py"


@contextlib.contextmanager
def running_article(server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A fresh copy of the example module, configured for ``server``, with its Flask app served
    on a free loopback port (``AGENT_CALLBACK_URL`` points at its ``/sync``)."""
    monkeypatch.setenv("CUEAPI_BASE_URL", server.url)
    monkeypatch.setenv("CUEAPI_KEY", server.key)
    monkeypatch.setenv("WEBHOOK_SECRET", server.secret)
    monkeypatch.delenv("WEBHOOK_VERIFIER", raising=False)
    spec = importlib.util.spec_from_file_location("article_monitoring", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    http = make_server("127.0.0.1", 0, mod.app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AGENT_CALLBACK_URL", f"http://127.0.0.1:{http.server_port}/sync")
    mod.agent_url = f"http://127.0.0.1:{http.server_port}"
    try:
        yield mod
    finally:
        http.shutdown()
        thread.join(timeout=10)
        http.server_close()


@pytest.fixture
def article(server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    with running_article(server, monkeypatch) as mod:
        yield mod


def fire(server: Server, cue_id: str, body: dict[str, Any] | None = None) -> str:
    """Fires a cue now (instead of waiting for 2 AM); returns the new execution's id."""
    r = server.call("POST", f"/v1/cues/{cue_id}/fire", body if body is not None else {})
    assert r.status_code == 200, r.text
    return str(r.json()["execution_id"])


def settled(server: Server, execution_id: str, status: str, timeout: float = 15.0) -> dict[str, Any]:
    """Waits until the execution reaches ``status``; returns it."""

    def probe() -> dict[str, Any] | None:
        e = server.execution(execution_id)
        return e if e["status"] == status else None

    return wait_for(probe, timeout, f"execution {execution_id} to become {status}")


def article_cue_fields(callback_url: str, **delivery: Any) -> dict[str, Any]:
    """The body the article's create_monitored_cue sends, with extra ``delivery`` settings."""
    return {
        "name": "data-sync-agent",
        "description": "Sync customer data with accountability",
        "schedule": {"type": "recurring", "cron": "0 2 * * *", "timezone": "America/New_York"},
        "transport": "webhook",
        "callback": {"url": callback_url, "method": "POST", "headers": {"X-Agent-Secret": "your-secret"}},
        "payload": {"task": "sync_customer_data", "source": "crm", "batch_size": 1000},
        "retry": {"max_attempts": 3, "backoff_minutes": [1, 5, 15]},
        "delivery": {"timeout_seconds": 30, "outcome_deadline_seconds": 600, **delivery},
        "on_failure": {"email": True, "pause": False},
    }


def last_attempt(execution: dict[str, Any]) -> dict[str, Any]:
    log = execution.get("attempt_log") or []
    assert log, f"no attempt_log on {execution}"
    return dict(log[-1])


def test_article_cue_delivers_to_the_flask_agent_which_reports_success_with_evidence(
    server: Server,
    article: ModuleType,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What the agent's verifier (cueapi.verify_webhook, the default) saw and decided.
    seen: list[tuple[dict[str, str], bool]] = []
    verify = article.VERIFIERS["cueapi"]

    def recording(payload: bytes, signature: str | None) -> bool:
        ok = verify(payload, signature)
        seen.append((dict(flask.request.headers), ok))
        return ok

    monkeypatch.setitem(article.VERIFIERS, "cueapi", recording)
    # The status of each request the article's code sends with httpx.post.
    statuses: list[tuple[str, int]] = []
    post = httpx.post

    def recording_post(url: str, **kwargs: Any) -> httpx.Response:
        r = post(url, **kwargs)
        statuses.append((url, r.status_code))
        return r

    monkeypatch.setattr(httpx, "post", recording_post)
    cue = article.create_monitored_cue()
    assert statuses == [(server.url + "/v1/cues", 201)]
    assert cue["id"].startswith("cue_"), cue
    assert cue["name"] == "data-sync-agent"
    assert cue["schedule"]["cron"] == "0 2 * * *"
    assert cue["schedule"]["timezone"] == "America/New_York"
    assert cue["callback"]["url"] == article.agent_url + "/sync"
    assert cue["retry"] == {
        "max_attempts": 3,
        "backoff_minutes": [1, 5, 15],
        "retry_reported_failures": False,
    }
    assert cue["delivery"]["outcome_deadline_seconds"] == 600

    execution_id = fire(server, cue["id"])
    e = settled(server, execution_id, "success")

    out = capsys.readouterr().out
    assert f"Received task: {execution_id}" in out
    assert "'batch_size': 1000" in out
    assert "Outcome reported: 200" in out
    assert statuses[1:] == [(f"{server.url}/v1/executions/{execution_id}/outcome", 200)]
    assert e["outcome_state"] == "reported_success"
    outcome = e["outcome"]
    assert outcome["success"] is True
    assert outcome["result"] == "Synced 847 records"
    assert outcome["metadata"] == {
        "batch_id": "batch_20260324_002",
        "duration_ms": 2340,
        "records_synced": 847,
    }
    assert outcome["external_id"] == "batch_20260324_002"
    assert outcome["result_type"] == "data_sync"
    assert outcome["summary"] == "Successfully synced 847 customer records"
    assert e["evidence"]["external_id"] == "batch_20260324_002"
    assert e["evidence"]["result_type"] == "data_sync"
    attempt = last_attempt(e)
    assert attempt["http_status"] == 200
    [(headers, verified)] = seen
    assert verified is True
    assert headers["X-Cueapi-Signature"].startswith("v1=")
    assert headers["X-Cueapi-Timestamp"].isdigit()
    assert headers["X-Cueapi-Execution-Id"] == execution_id
    assert headers["X-Agent-Secret"] == "your-secret"


def test_sha256_cue_is_verified_by_the_articles_own_verify_signature(
    server: Server, article: ModuleType
) -> None:
    article.VERIFIER = "article"
    cue = server.cue(**article_cue_fields(article.agent_url + "/sync", signature_scheme="sha256"))
    assert cue["delivery"]["signature_scheme"] == "sha256"

    e = settled(server, fire(server, cue["id"]), "success")
    assert e["outcome_state"] == "reported_success"
    assert e["outcome"]["success"] is True
    assert e["outcome"]["external_id"] == "batch_20260324_002"
    assert last_attempt(e)["http_status"] == 200


def test_articles_verify_signature_rejects_a_tampered_body_and_a_wrong_secret(
    server: Server, article: ModuleType, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    article.VERIFIER = "article"
    # A real sha256-signed delivery, captured as sent.
    fields = article_cue_fields(receiver.url + "/sync", signature_scheme="sha256")
    probe = server.cue(**{**fields, "name": "probe"})
    fire(server, probe["id"])
    sent = receiver.wait(1)[0]
    signature = sent.headers["x-cueapi-signature"]
    assert signature.startswith("sha256=")
    expected = hmac.new(server.secret.encode(), sent.body, hashlib.sha256).hexdigest()
    assert signature == f"sha256={expected}"
    assert article.verify_signature(sent.body, signature) is True
    tampered = sent.body.replace(b'"batch_size": 1000', b'"batch_size": 1000000')
    assert tampered != sent.body
    assert article.verify_signature(tampered, signature) is False
    assert article.verify_signature(sent.body, None) is False

    # The Flask agent answers 401 to the tampered body; nothing is reported for that execution.
    r = httpx.post(
        article.agent_url + "/sync",
        content=tampered,
        headers={"Content-Type": "application/json", "X-CueAPI-Signature": signature},
    )
    assert r.status_code == 401
    assert r.json() == {"error": "Invalid signature"}
    assert "outcome" not in server.execution(sent.json()["execution_id"])

    # A delivery signed with another secret than the agent's is refused with 401: the delivery
    # attempt fails, is recorded with its status, and the execution waits for its retry.
    monkeypatch.setenv("WEBHOOK_SECRET", "whsec_" + "00" * 32)
    cue = server.cue(**article_cue_fields(article.agent_url + "/sync", signature_scheme="sha256"))
    e = settled(server, fire(server, cue["id"]), "retrying")
    assert e["http_status"] == 401
    assert "outcome" not in e
    attempt = last_attempt(e)
    assert attempt["http_status"] == 401
    assert e["attempts"] == 1
    assert e["next_retry"] is not None


def test_failing_sync_reports_failure_and_the_delivery_is_retried(
    server: Server, article: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def sync_customer_data(payload: dict[str, Any]) -> dict[str, Any]:
        raise ConnectionError("CRM unreachable")

    monkeypatch.setattr(article, "sync_customer_data", sync_customer_data)
    cue = article.create_monitored_cue()
    e = settled(server, fire(server, cue["id"]), "retrying")

    assert "Outcome reported: 200" in capsys.readouterr().out
    # The delivery failed and is retried, so the failure the handler reported belongs to that
    # attempt: it is kept in the attempt log, and the retry's handler reports afresh.
    assert "outcome" not in e and e["outcome_state"] is None
    reported = last_attempt(e)["outcome"]
    assert reported["outcome_state"] == "reported_failure"
    assert reported["outcome"]["success"] is False
    assert reported["outcome"]["error"] == "CRM unreachable"
    assert reported["outcome"]["result"] == "Sync failed"
    assert reported["evidence"]["summary"] == "Data sync failed: CRM unreachable"
    assert e["http_status"] == 500
    attempt = last_attempt(e)
    assert attempt["http_status"] == 500
    assert e["attempts"] == 1
    # The article's retry policy: the first retry is one minute after the failed attempt.
    next_retry = datetime.fromisoformat(e["next_retry"].replace("Z", "+00:00"))
    last = datetime.fromisoformat(e["last_attempt_at"].replace("Z", "+00:00"))
    assert timedelta(seconds=50) <= next_retry - last <= timedelta(seconds=70)


def test_a_transient_failure_then_a_successful_retry_counts_as_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The article: "3 retry attempts with exponential backoff (1, 5, 15 minutes) handle transient
    failures automatically". Its handler reports the failure of the first attempt, answers 500, and
    reports the success of the retry with its evidence. (A manual clock near real time, so that the
    retry comes without waiting and the v1 signature's timestamp is still fresh.)"""
    clock = cueapi.ManualClock(datetime.now(timezone.utc))
    server = start_server(tmp_path / "server.db", clock)
    try:
        with running_article(server, monkeypatch) as article:
            sync = article.sync_customer_data
            calls: list[dict[str, Any]] = []

            def flaky_sync(payload: dict[str, Any]) -> dict[str, Any]:
                calls.append(payload)
                if len(calls) == 1:
                    raise ConnectionError("CRM unreachable")
                return dict(sync(payload))

            monkeypatch.setattr(article, "sync_customer_data", flaky_sync)
            cue = article.create_monitored_cue()
            execution_id = fire(server, cue["id"])
            first = settled(server, execution_id, "retrying")
            assert last_attempt(first)["outcome"]["outcome"]["success"] is False
            clock.advance(60)
            e = settled(server, execution_id, "success")
            out = capsys.readouterr().out
            history = article.get_execution_history(cue["id"])
            rate = capsys.readouterr().out
    finally:
        server.app.close()

    assert len(calls) == 2
    assert e["attempts"] == 2
    # The retry did the work and reported it with its evidence: that report is accepted ...
    assert out.count("Outcome reported: 200") == 2, out
    # ... and the run counts as a success, with the batch as evidence.
    assert e["outcome"]["success"] is True, e["outcome"]
    assert e["outcome"]["external_id"] == "batch_20260324_002"
    assert [x["id"] for x in history["data"]] == [execution_id]
    assert "Success rate: 100.0% (1/1)" in rate


def test_handle_task_failure_reports_the_detailed_failure(
    server: Server, article: ModuleType, receiver: Receiver
) -> None:
    # An execution delivered to a receiver that does not report: the agent reports it later.
    cue = server.cue(**article_cue_fields(receiver.url + "/sync"))
    execution_id = fire(server, cue["id"])
    settled(server, execution_id, "success")

    answer = article.handle_task_failure(execution_id, ValueError("batch 17 rejected by the CRM"))

    assert answer.get("outcome_recorded") is True, answer
    e = server.execution(execution_id)
    assert e["outcome_state"] == "reported_failure"
    assert e["outcome"]["success"] is False
    assert e["outcome"]["result"] == "Sync failed"
    assert "ValueError" in e["outcome"]["summary"]


def test_update_failure_alerts_sets_the_webhook_and_keeps_the_rest(
    server: Server, article: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONITORING_WEBHOOK_URL", "https://your-monitoring.invalid/alert")
    cue = article.create_monitored_cue()

    updated = article.update_failure_alerts(cue["id"])

    assert "error" not in updated, updated
    assert updated["on_failure"] == {
        "email": True,
        "webhook": "https://your-monitoring.invalid/alert",
        "pause": False,
    }
    assert "your-monitoring.invalid" in (updated.get("warning") or "")
    stored = server.call("GET", f"/v1/cues/{cue['id']}").json()
    for c in (updated, stored):
        assert c["on_failure"]["webhook"] == "https://your-monitoring.invalid/alert"
        assert c["schedule"]["cron"] == "0 2 * * *"
        assert c["schedule"]["timezone"] == "America/New_York"
        assert c["callback"]["url"] == cue["callback"]["url"]
        assert c["callback"]["method"] == "POST"
        assert c["callback"]["headers"] == {"X-Agent-Secret": "your-secret"}
        assert c["payload"] == {"task": "sync_customer_data", "source": "crm", "batch_size": 1000}
        retry = {"max_attempts": 3, "backoff_minutes": [1, 5, 15], "retry_reported_failures": False}
        assert c["retry"] == retry
        assert c["delivery"]["outcome_deadline_seconds"] == 600
        assert c["description"] == "Sync customer data with accountability"
        assert c["next_run"] == cue["next_run"]


def test_get_execution_history_computes_the_success_rate(
    server: Server, article: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    cue = article.create_monitored_cue()
    done = [settled(server, fire(server, cue["id"]), "success")["id"] for _ in range(2)]
    # A third run, due in an hour: no outcome yet.
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    pending = fire(server, cue["id"], {"send_at": later})
    assert "outcome" not in server.execution(pending)
    capsys.readouterr()

    history = article.get_execution_history(cue["id"])

    assert "Success rate: 66.7% (2/3)" in capsys.readouterr().out
    ids = [e["id"] for e in history["data"]]
    assert sorted(ids) == sorted([*done, pending])
    by_id = {e["id"]: e for e in history["data"]}
    assert "outcome" not in by_id[pending]
    assert all(by_id[i]["outcome"]["success"] is True for i in done)


def test_append_evidence_then_find_verified_outcomes(
    server: Server, article: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    cue = article.create_monitored_cue()
    first, second = (settled(server, fire(server, cue["id"]), "success")["id"] for _ in range(2))
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    fire(server, cue["id"], {"send_at": later})  # no outcome, no evidence

    # The article's literal id is not one of ours.
    missing = article.append_evidence("exec_abc123", article.evidence)
    assert missing["error"]["code"] == "execution_not_found"

    answer = article.append_evidence(first, article.evidence)
    assert answer == {"execution_id": first, "outcome_state": "reported_success", "evidence_updated": True}
    # Later evidence without a result_url (the article sends it as null) keeps the earlier one.
    answer = article.append_evidence(
        first,
        {
            "external_id": "db_batch_20260324_848",
            "result_type": "database_batch",
            "summary": "Database batch 20260324_848 created with 848 records",
        },
    )
    assert answer["evidence_updated"] is True

    e = server.execution(first)
    assert e["outcome"]["success"] is True
    assert e["outcome"]["external_id"] == "db_batch_20260324_848"
    assert e["outcome"]["result_type"] == "database_batch"
    assert e["outcome"]["summary"] == "Database batch 20260324_848 created with 848 records"
    assert e["outcome"]["result_url"] == "https://admin.yourapp.com/batches/20260324_847"
    assert e["outcome"]["result"] == "Synced 847 records"
    assert e["outcome"]["metadata"] == {
        "batch_id": "batch_20260324_002",
        "duration_ms": 2340,
        "records_synced": 847,
    }

    batches = article.find_verified_outcomes("database_batch")
    assert [x["id"] for x in batches["data"]] == [first]
    verified_syncs = article.find_verified_outcomes("data_sync")
    print(f"Found {len(verified_syncs.get('data', []))} verified syncs")
    assert "Found 1 verified syncs" in capsys.readouterr().out
    assert [x["id"] for x in verified_syncs["data"]] == [second]
    assert verified_syncs["data"][0]["outcome"]["external_id"] == "batch_20260324_002"
    assert sorted(x["id"] for x in article.find_verified_outcomes()["data"]) == sorted([first, second])


def test_append_evidence_before_an_outcome_is_refused(server: Server, article: ModuleType) -> None:
    cue = article.create_monitored_cue()
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    pending = fire(server, cue["id"], {"send_at": later})

    answer = article.append_evidence(pending, article.evidence)

    assert answer["error"]["code"] == "no_outcome"
    assert "evidence" not in server.execution(pending)
    assert article.find_verified_outcomes()["data"] == []
