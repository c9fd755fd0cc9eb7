"""One rule for failures, on every transport: a failed *run* — a webhook's non-2xx or timeout, an
exception in an embedded handler, a worker's report sent with ``retry: true`` — is retried by the
cue's retry policy; a *reported* failure — ``success: false`` from a receiver or a worker, a handler
returning ``False`` or ``Outcome(success=False)`` — is the handler's verdict: final, alerted, and a
one-shot cue becomes ``failed``. A cue may opt in to retrying reported failures too
(``retry.retry_reported_failures``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import cueapi
import pytest

from tests.conftest import START, Answer, Received, Receiver, Server, start_server, wait_for

FAR = {"type": "once", "at": "2099-01-01T00:00:00Z"}
RETRY = {"max_attempts": 2, "backoff_minutes": [1]}


def final(app: cueapi.App, execution_id: str) -> cueapi.Execution:
    return wait_for(
        lambda: (ex := app.execution(execution_id)).status in ("success", "failed", "retrying") and ex,
        what=f"{execution_id} to settle",
    )


# -- embedded handlers -----------------------------------------------------------------------------


def test_embedded_reported_failure_is_final_and_an_exception_is_retried(
    app: cueapi.App, clock: cueapi.ManualClock
) -> None:
    calls: dict[str, int] = {"verdict": 0, "crash": 0, "retry_asked": 0, "opted_in": 0}

    @app.cue("0 2 * * *", retry=RETRY)
    def verdict(ctx: cueapi.Context) -> bool:
        calls["verdict"] += 1
        return False

    @app.cue("0 2 * * *", retry=RETRY)
    def crash(ctx: cueapi.Context) -> None:
        calls["crash"] += 1
        raise RuntimeError("upstream returned 503")

    @app.cue("0 2 * * *", retry=RETRY)
    def retry_asked(ctx: cueapi.Context) -> cueapi.Outcome:
        calls["retry_asked"] += 1
        return cueapi.Outcome(success=False, error="rate limited", retry=True)

    @app.cue("0 2 * * *", retry={**RETRY, "retry_reported_failures": True})
    def opted_in(ctx: cueapi.Context) -> cueapi.Outcome:
        calls["opted_in"] += 1
        return cueapi.Outcome(success=False, error="not yet")

    app.start()
    ids = {name: app.fire(name) for name in calls}
    for name, eid in ids.items():
        ex = final(app, eid)
        assert ex.status == ("failed" if name == "verdict" else "retrying"), (name, ex)
    verdict_ex = app.execution(ids["verdict"])
    assert verdict_ex.outcome_state == "reported_failure" and verdict_ex.attempts == 1
    # The retries come due: each retried one runs again; the verdict is never run again.
    clock.advance(60)
    for name in ("crash", "retry_asked", "opted_in"):
        wait_for(lambda n=name: calls[n] == 2, what=f"the retry of {name}")  # type: ignore[misc]
        # Recorded as failed and due again (its next retry counted from when it was recorded)
        # before the clock moves on, or that retry would fall due after the advance below.
        wait_for(
            lambda n=name: (ex := app.execution(ids[n])).attempts == 2 and ex.status == "retrying",  # type: ignore[misc]
            what=f"the failed retry of {name} recorded",
        )
    clock.advance(60)
    for name in ("crash", "retry_asked", "opted_in"):
        wait_for(lambda n=name: calls[n] == 3, what=f"the second retry of {name}")  # type: ignore[misc]
        ex = wait_for(lambda n=name: app.execution(ids[n]).status == "failed" and app.execution(ids[n]))  # type: ignore[misc]
        assert ex.attempts == 3
    assert calls["verdict"] == 1


def test_embedded_one_shot_reporting_failure_fails_its_cue(db: Path, clock: cueapi.ManualClock) -> None:
    with cueapi.App(db, clock=clock, grace=0) as app:

        @app.once(START + timedelta(minutes=1))
        def once_job(ctx: cueapi.Context) -> bool:
            return False

        app.start()
        clock.advance(60)
        wait_for(lambda: app.get_cue("once_job").status == "failed", what="the one-shot cue to fail")
        (ex,) = app.executions("once_job")
        assert ex.status == "failed" and ex.outcome_state == "reported_failure" and ex.attempts == 1


# -- pull workers over HTTP --------------------------------------------------------------------------


@pytest.fixture
def manual(tmp_path: Path, clock: cueapi.ManualClock) -> Iterator[Server]:
    s = start_server(tmp_path / "rule.db", clock)
    yield s
    s.app.close()


def worker_run(s: Server, **cue: Any) -> str:
    """A claimed execution of a new worker cue."""
    body: dict[str, Any] = {
        "name": f"w-{len(cue)}-{id(cue)}",
        "transport": "worker",
        "schedule": FAR,
        "payload": {"task": "t"},
        "retry": RETRY,
    }
    body.update(cue)
    created = s.cue(**body)
    execution_id = s.call("POST", f"/v1/cues/{created['id']}/fire").json()["id"]
    claimed = s.call("POST", f"/v1/executions/{execution_id}/claim", {"worker_id": "w1"})
    assert claimed.status_code == 200, claimed.text
    return str(execution_id)


def test_worker_reported_failure_is_final(manual: Server) -> None:
    eid = worker_run(manual)
    r = manual.call("POST", f"/v1/executions/{eid}/outcome", {"success": False, "error": "bad input"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "failed" and r.json()["outcome_state"] == "reported_failure"
    assert "next_retry" not in r.json()
    ex = manual.execution(eid)
    assert ex["status"] == "failed" and ex["attempts"] == 1 and ex["outcome"]["error"] == "bad input"
    # A once-cue that reported a failure fails.
    once = manual.cue(
        name="once-w",
        transport="worker",
        schedule={"type": "once", "at": "2026-06-01T13:00:00Z"},
        payload={"task": "t"},
    )
    fired = manual.call("POST", f"/v1/cues/{once['id']}/fire").json()["id"]
    manual.call("POST", f"/v1/executions/{fired}/claim", {"worker_id": "w1"})
    manual.call("POST", f"/v1/executions/{fired}/outcome", {"success": False})
    assert manual.call("GET", f"/v1/cues/{once['id']}").json()["status"] == "failed"


def test_worker_failed_run_is_retried(manual: Server) -> None:
    eid = worker_run(manual)
    r = manual.call(
        "POST", f"/v1/executions/{eid}/outcome", {"success": False, "error": "crashed", "retry": True}
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "retrying" and r.json()["next_retry"]
    assert manual.execution(eid)["status"] == "retrying"
    bad = manual.call("POST", f"/v1/executions/{eid}/outcome", {"success": False, "retry": "yes"})
    assert bad.status_code in (409, 422)


def test_worker_cue_may_retry_reported_failures(manual: Server) -> None:
    eid = worker_run(manual, name="opted", retry={**RETRY, "retry_reported_failures": True})
    r = manual.call("POST", f"/v1/executions/{eid}/outcome", {"success": False})
    assert r.json()["status"] == "retrying"
    cue = manual.call("GET", f"/v1/cues/{manual.execution(eid)['cue_id']}").json()
    assert cue["retry"]["retry_reported_failures"] is True


# -- webhooks ----------------------------------------------------------------------------------------


def answering(status: int, body: bytes) -> Any:
    def answer(_req: Received) -> Answer:
        return status, {"Content-Type": "application/json"}, body, 0.0

    return answer


def test_webhook_inline_failure_is_final_and_fails_a_one_shot(server: Server, receiver: Receiver) -> None:
    receiver.answer = answering(200, b'{"success": false, "error": "the sync found no data"}')
    cue = server.cue(
        name="inline",
        schedule={"type": "once", "at": "2099-01-01T00:00:00Z"},
        callback={"url": receiver.url + "/hook"},
        retry=RETRY,
    )
    eid = server.call("POST", f"/v1/cues/{cue['id']}/fire").json()["id"]
    ex = wait_for(lambda: (e := server.execution(eid))["status"] not in ("pending", "delivering") and e)
    assert ex["status"] == "failed" and ex["outcome_state"] == "reported_failure" and ex["attempts"] == 1
    assert ex["outcome"]["error"] == "the sync found no data"
    assert server.call("GET", f"/v1/cues/{cue['id']}").json()["status"] == "failed"
    assert len(receiver.requests) == 1  # never delivered again


def test_webhook_failure_reported_later_fails_the_execution(server: Server, receiver: Receiver) -> None:
    cue = server.cue(
        name="later",
        schedule={"type": "once", "at": "2099-01-01T00:00:00Z"},
        callback={"url": receiver.url + "/hook"},
        retry=RETRY,
    )
    eid = server.call("POST", f"/v1/cues/{cue['id']}/fire").json()["id"]
    wait_for(lambda: server.execution(eid)["status"] == "success", what="the delivery")
    assert server.call("GET", f"/v1/cues/{cue['id']}").json()["status"] == "completed"
    r = server.call("POST", f"/v1/executions/{eid}/outcome", {"success": False, "error": "half done"})
    assert r.status_code == 200 and r.json()["outcome_state"] == "reported_failure"
    assert server.execution(eid)["status"] == "failed"
    assert server.call("GET", f"/v1/cues/{cue['id']}").json()["status"] == "failed"


def test_webhook_failed_delivery_is_retried(server: Server, receiver: Receiver) -> None:
    receiver.answer = answering(500, b'{"error": "down"}')
    cue = server.cue(name="down", schedule=FAR, callback={"url": receiver.url + "/hook"}, retry=RETRY)
    eid = server.call("POST", f"/v1/cues/{cue['id']}/fire").json()["id"]
    ex = wait_for(lambda: (e := server.execution(eid))["status"] == "retrying" and e, what="a retry")
    assert ex["attempts"] == 1 and ex["next_retry"] and ex["http_status"] == 500
