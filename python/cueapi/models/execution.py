"""Executions, in the shape the official SDK's models give them (a superset: the evidence, the
attempt log and the other fields `cueapi serve` adds are typed too)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class OutcomeDetail(BaseModel):
    """The outcome a handler reported, with the evidence it gave."""

    model_config = ConfigDict(extra="allow")

    success: bool | None = None
    result: str | None = None
    error: str | None = None
    metadata: dict[str, Any] | None = None
    recorded_at: datetime | None = None
    external_id: str | None = None
    result_url: str | None = None
    result_ref: str | None = None
    result_type: str | None = None
    summary: str | None = None
    artifacts: list[Any] | None = None
    validation_state: str | None = None
    assertions: dict[str, Any] | None = None


class Evidence(BaseModel):
    """Proof that the work happened, as reported with the outcome or appended later."""

    model_config = ConfigDict(extra="allow")

    external_id: str | None = None
    result_url: str | None = None
    result_ref: str | None = None
    result_type: str | None = None
    summary: str | None = None
    validation_state: str | None = None
    produced_at: datetime | None = None
    artifacts: list[Any] | None = None
    metadata: dict[str, Any] | None = None


class Attempt(BaseModel):
    """One try at running an execution."""

    model_config = ConfigDict(extra="allow")

    number: int
    status: str
    started_at: datetime
    finished_at: datetime | None = None
    duration_ms: int | None = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    http_status: int | None = None
    claimed_by: str | None = None
    outcome: dict[str, Any] | None = None


class Execution(BaseModel):
    """One occurrence of a cue: when it was due, each attempt, the outcome and the evidence.

    The same class whether it came from a server or from an embedded :class:`cueapi.App`.
    ``attempt_log`` is filled when one execution is asked for by id.
    """

    model_config = ConfigDict(extra="allow")

    id: str
    cue_id: str
    scheduled_for: datetime
    status: str
    cue_name: str | None = None
    transport: str | None = None
    http_status: int | None = None
    response_body: str | None = None
    attempts: int | None = None
    next_retry: datetime | None = None
    error_message: str | None = None
    started_at: datetime | None = None
    delivered_at: datetime | None = None
    last_attempt_at: datetime | None = None
    claimed_by_worker: str | None = None
    claimed_at: datetime | None = None
    last_heartbeat_at: datetime | None = None
    payload: dict[str, Any] | None = None
    outcome: OutcomeDetail | None = None
    outcome_state: str | None = None
    outcome_deadline_at: datetime | None = None
    outcome_timeout_at: datetime | None = None
    evidence: Evidence | None = None
    triggered_by: str | None = None
    replay_of: str | None = None
    idempotency_key: str | None = None
    chain_parent_id: str | None = None
    chain_depth: int | None = None
    attempt_log: list[Attempt] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ExecutionList(BaseModel):
    """One page of executions."""

    model_config = ConfigDict(extra="allow")

    executions: list[Execution]
    total: int
    limit: int
    offset: int
