"""`cueapi serve`'s answers read by the official SDK at its git head (not on PyPI: 0.1.3 predates
these fields), whose models are described in shared/reference/cueapi-clients.md §1.7: requests
shaped as the head SDK sends them (our client sends the same bytes), answers validated here against
models typed as the head's — `catch_up` a string, the hosted fields typed, every `Execution` field
but four optional. The models below are written from that description, strict where the head is
(no coercion of a dict into a string)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import cueapi
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from tests.conftest import Server


class HeadSchedule(BaseModel):
    type: StrictStr
    cron: StrictStr | None = None
    at: datetime | None = None
    timezone: StrictStr = "UTC"


class HeadCallback(BaseModel):
    url: StrictStr | None = None
    method: StrictStr = "POST"
    headers: dict[str, StrictStr] = Field(default_factory=dict)


class HeadRetry(BaseModel):
    max_attempts: StrictInt = 3
    backoff_minutes: list[StrictInt] = Field(default_factory=lambda: [1, 5, 15])


class HeadOnFailure(BaseModel):
    email: StrictBool = True
    webhook: StrictStr | None = None
    pause: StrictBool = False


class HeadDelivery(BaseModel):
    timeout_seconds: StrictInt = 30
    outcome_deadline_seconds: StrictInt = 300


class HeadVerification(BaseModel):
    model_config = ConfigDict(extra="allow")
    mode: StrictStr | None = None
    required_assertions: list[StrictStr] | None = None


class HeadCue(BaseModel):
    id: StrictStr
    name: StrictStr
    description: StrictStr | None = None
    status: StrictStr
    transport: StrictStr = "webhook"
    schedule: HeadSchedule
    callback: HeadCallback
    payload: dict[str, Any] = Field(default_factory=dict)
    retry: HeadRetry = Field(default_factory=HeadRetry)
    next_run: datetime | None = None
    last_run: datetime | None = None
    run_count: StrictInt = 0
    fired_count: StrictInt = 0
    on_failure: HeadOnFailure | None = None
    delivery: HeadDelivery | None = None
    alerts: dict[str, Any] | None = None
    catch_up: StrictStr | None = None
    verification: HeadVerification | None = None
    on_success_fire: StrictStr | None = None
    require_payload_override: StrictBool = False
    required_payload_keys: list[StrictStr] | None = None
    stats: dict[str, Any] | None = None
    warning: StrictStr | None = None
    created_at: datetime
    updated_at: datetime


class HeadCueList(BaseModel):
    cues: list[HeadCue]
    total: StrictInt
    limit: StrictInt
    offset: StrictInt


class HeadOutcome(BaseModel):
    model_config = ConfigDict(extra="allow")
    success: StrictBool
    result: StrictStr | None = None
    error: StrictStr | None = None
    metadata: dict[str, Any] | None = None
    recorded_at: datetime | None = None
    external_id: StrictStr | None = None
    result_url: StrictStr | None = None
    result_ref: StrictStr | None = None
    result_type: StrictStr | None = None
    summary: StrictStr | None = None
    artifacts: list[Any] | None = None
    validation_state: StrictStr | None = None


class HeadExecution(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: StrictStr
    cue_id: StrictStr
    scheduled_for: datetime
    status: StrictStr
    http_status: StrictInt | None = None
    response_body: StrictStr | None = None
    attempts: StrictInt | None = None
    next_retry: datetime | None = None
    error_message: StrictStr | None = None
    started_at: datetime | None = None
    delivered_at: datetime | None = None
    last_attempt_at: datetime | None = None
    claimed_by_worker: StrictStr | None = None
    claimed_at: datetime | None = None
    payload: dict[str, Any] | None = None
    outcome: HeadOutcome | None = None
    outcome_state: StrictStr | None = None
    triggered_by: StrictStr | None = None
    chain_parent_id: StrictStr | None = None
    chain_depth: StrictInt | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class HeadExecutionList(BaseModel):
    model_config = ConfigDict(extra="allow")
    executions: list[HeadExecution]
    total: StrictInt
    limit: StrictInt
    offset: StrictInt


TRIGGERS = {"scheduled", "manual_fire", "chain", "replay"}
OUTCOME_STATES = {
    "reported_success",
    "reported_failure",
    "verified_success",
    "verification_pending",
    "verification_failed",
    "outcome_timeout",
}


def test_every_cue_answer_reads_as_the_head_sdks_cue(server: Server) -> None:
    with cueapi.CueAPI(server.key, base_url=server.url) as client:
        target = client.cues.create("next-step", cron="0 3 * * *", transport="worker", payload={"task": "t"})
        raw = []
        # Each way the head SDK (or its CLI) makes and changes a cue, answered by the server.
        made = client.request(
            "POST",
            "/v1/cues",
            json={
                "name": "head-shaped",
                "schedule": {"type": "recurring", "cron": "0 9 * * *", "timezone": "Europe/Paris"},
                "transport": "worker",
                "payload": {"task": "t", "region": "eu"},
                "retry": {"max_attempts": 2, "backoff_minutes": [1, 5]},
                "on_failure": {"email": False, "pause": True},
                "delivery": {"timeout_seconds": 30, "outcome_deadline_seconds": 600},
                "alerts": {"consecutive_failures": 4},
                "catch_up": "skip_missed",
                "verification": {"mode": "manual"},
                "on_success_fire": target.id,
                "required_payload_keys": ["region"],
                "require_payload_override": False,
            },
        )
        raw.append(made)
        raw.append(client.request("GET", f"/v1/cues/{made['id']}"))
        raw.append(client.request("PATCH", f"/v1/cues/{made['id']}", json={"catch_up": "replay_all"}))
        raw.append(client.request("PATCH", f"/v1/cues/{made['id']}", json={"status": "paused"}))
        raw.append(client.request("PATCH", f"/v1/cues/{made['id']}", json={"on_success_fire": None}))
        for answer in raw:
            cue = HeadCue.model_validate(answer)
            assert cue.catch_up in ("skip_missed", "replay_all")
        listed = HeadCueList.model_validate(client.request("GET", "/v1/cues"))
        assert {c.name for c in listed.cues} == {"next-step", "head-shaped"}
        assert HeadCue.model_validate(raw[0]).on_success_fire == target.id
        assert HeadCue.model_validate(raw[0]).required_payload_keys == ["region"]


def test_every_execution_answer_reads_as_the_head_sdks_execution(server: Server) -> None:
    with cueapi.CueAPI(server.key, base_url=server.url) as client:
        second = client.cues.create("second", cron="0 3 * * *", transport="worker", payload={"task": "b"})
        first = client.cues.create(
            "first", cron="0 2 * * *", transport="worker", payload={"task": "a"}, on_success_fire=second.id
        )
        fired = client.cues.fire(first.id, payload_override={"n": 1}, idempotency_key="k1")
        claimed = client.executions.claim(fired["id"], worker_id="w-head")
        assert claimed["claimed"] is True
        client.executions.heartbeat(fired["id"], worker_id="w-head")
        client.executions.report_outcome(
            fired["id"], success=True, result="ok", external_id="e1", result_ref="ref", artifacts=[{"k": 1}]
        )
        client.executions.mark_verification_pending(fired["id"])
        verified = client.executions.mark_verified(fired["id"], valid=True, reason="looked at it")
        assert verified["outcome_state"] == "verified_success"
        replayed = client.executions.replay(fired["id"])
        answers = [
            client.executions.get(fired["id"]),
            *client.executions.list(limit=50)["executions"],
        ]
        page = HeadExecutionList.model_validate(client.executions.list(limit=50))
        assert page.total == len(page.executions) >= 3
        for answer in answers:
            ex = HeadExecution.model_validate(answer)
            assert ex.triggered_by in TRIGGERS
            assert ex.outcome_state is None or ex.outcome_state in OUTCOME_STATES
        by_trigger = {HeadExecution.model_validate(a).triggered_by for a in answers}
        assert {"manual_fire", "chain", "replay"} <= by_trigger
        own = HeadExecution.model_validate(client.executions.get(fired["id"]))
        assert own.claimed_by_worker == "w-head" and own.claimed_at is not None
        chained = client.executions.list(triggered_by="chain")["executions"]
        (step,) = [HeadExecution.model_validate(e) for e in chained]
        assert step.chain_parent_id == fired["id"] and step.chain_depth == 1
        assert replayed["triggered_by"] == "replay"
