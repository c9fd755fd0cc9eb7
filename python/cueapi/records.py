"""What the history API returns: plain, typed, immutable records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._time import from_ms, opt_from_ms


@dataclass(frozen=True)
class ExecutionOutcome:
    """The outcome a handler reported."""

    success: bool
    result: str | None
    error: str | None
    metadata: dict[str, Any] | None
    recorded_at: datetime


@dataclass(frozen=True)
class Evidence:
    """Proof that the work happened."""

    external_id: str | None
    result_url: str | None
    result_ref: str | None
    result_type: str | None
    summary: str | None
    validation_state: str | None
    produced_at: datetime | None
    artifacts: list[Any] | None
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class Attempt:
    """One try at running an execution."""

    number: int
    status: str
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    error: str | None
    error_type: str | None
    traceback: str | None


@dataclass(frozen=True)
class Execution:
    """One occurrence of a cue: when it was due, what happened, and the evidence."""

    id: str
    cue_id: str
    cue_name: str
    scheduled_for: datetime
    status: str
    triggered_by: str
    replay_of: str | None
    idempotency_key: str
    payload: dict[str, Any]
    attempts: int
    next_retry: datetime | None
    error_message: str | None
    started_at: datetime | None
    delivered_at: datetime | None
    outcome: ExecutionOutcome | None
    outcome_state: str | None
    outcome_deadline_at: datetime | None
    outcome_timeout_at: datetime | None
    evidence: Evidence | None
    created_at: datetime
    attempt_log: tuple[Attempt, ...] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Execution:
        o = d["outcome"]
        ev = d["evidence"]
        log = d.get("attempt_log")
        return cls(
            id=d["id"],
            cue_id=d["cue_id"],
            cue_name=d["cue_name"],
            scheduled_for=from_ms(d["scheduled_for"]),
            status=d["status"],
            triggered_by=d["triggered_by"],
            replay_of=d["replay_of"],
            idempotency_key=d["idempotency_key"],
            payload=d["payload"] or {},
            attempts=d["attempts"],
            next_retry=opt_from_ms(d["next_retry"]),
            error_message=d["error_message"],
            started_at=opt_from_ms(d["started_at"]),
            delivered_at=opt_from_ms(d["delivered_at"]),
            outcome=None
            if o is None
            else ExecutionOutcome(
                success=bool(o["success"]),
                result=o["result"],
                error=o["error"],
                metadata=o["metadata"],
                recorded_at=from_ms(o["recorded_at"]),
            ),
            outcome_state=d["outcome_state"],
            outcome_deadline_at=opt_from_ms(d["outcome_deadline_at"]),
            outcome_timeout_at=opt_from_ms(d["outcome_timeout_at"]),
            evidence=None
            if ev is None
            else Evidence(
                external_id=ev["external_id"],
                result_url=ev["result_url"],
                result_ref=ev["result_ref"],
                result_type=ev["result_type"],
                summary=ev["summary"],
                validation_state=ev["validation_state"],
                produced_at=opt_from_ms(ev["produced_at"]),
                artifacts=ev["artifacts"],
                metadata=ev["metadata"],
            ),
            created_at=from_ms(d["created_at"]),
            attempt_log=None
            if log is None
            else tuple(
                Attempt(
                    number=a["number"],
                    status=a["status"],
                    started_at=from_ms(a["started_at"]),
                    finished_at=opt_from_ms(a["finished_at"]),
                    duration_ms=a["duration_ms"],
                    error=a["error"],
                    error_type=a["error_type"],
                    traceback=a["traceback"],
                )
                for a in log
            ),
        )


@dataclass(frozen=True)
class Cue:
    """A stored cue: its definition and counters."""

    id: str
    name: str
    description: str | None
    status: str
    transport: str
    schedule_type: str
    cron: str | None
    at: datetime | None
    every_seconds: float | None
    timezone: str
    payload: dict[str, Any]
    retry: dict[str, Any]
    outcome_deadline_seconds: int | None
    overlap: str
    catch_up: str
    catch_up_max: int
    pause_on_failure: bool
    next_run: datetime | None
    last_run: datetime | None
    run_count: int
    fired_count: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cue:
        s = d["schedule"]
        return cls(
            id=d["id"],
            name=d["name"],
            description=d["description"],
            status=d["status"],
            transport=d["transport"],
            schedule_type=s["type"],
            cron=s["cron"],
            at=opt_from_ms(s["at"]),
            every_seconds=None if s["every_ms"] is None else s["every_ms"] / 1000,
            timezone=s["timezone"],
            payload=d["payload"] or {},
            retry=d["retry"],
            outcome_deadline_seconds=d["outcome_deadline_seconds"],
            overlap=d["overlap"],
            catch_up=d["catch_up"],
            catch_up_max=d["catch_up_max"],
            pause_on_failure=bool(d["on_failure"]["pause"]),
            next_run=opt_from_ms(d["next_run"]),
            last_run=opt_from_ms(d["last_run"]),
            run_count=d["run_count"],
            fired_count=d["fired_count"],
            created_at=from_ms(d["created_at"]),
            updated_at=from_ms(d["updated_at"]),
        )


@dataclass(frozen=True)
class Stats:
    """Counts and durations of one cue's executions over a window."""

    cue_id: str
    since: datetime
    total: int
    counts: dict[str, int]
    success_rate: float | None
    duration_ms_p50: int | None
    duration_ms_p95: int | None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Stats:
        return cls(
            cue_id=d["cue_id"],
            since=from_ms(d["since"]),
            total=d["total"],
            counts=dict(d["counts"]),
            success_rate=d["success_rate"],
            duration_ms_p50=d["duration_ms_p50"],
            duration_ms_p95=d["duration_ms_p95"],
        )
