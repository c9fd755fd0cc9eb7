"""Cues, in the shape the official SDK's models give them (a superset: the fields `cueapi serve`
adds are typed too, and unknown ones are kept in ``model_extra``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Schedule(BaseModel):
    """When a cue fires: ``type`` is ``recurring`` (``cron``), ``once`` (``at``) or ``interval``
    (``every``, a cueapi extension such as ``"30s"``); cron fields are read in ``timezone``."""

    model_config = ConfigDict(extra="allow")

    type: str
    cron: str | None = None
    at: datetime | None = None
    every: str | None = None
    timezone: str = "UTC"


class Callback(BaseModel):
    """Where a webhook cue is delivered (``url`` is None for worker cues)."""

    model_config = ConfigDict(extra="allow")

    url: str | None = None
    method: str = "POST"
    headers: dict[str, str] = Field(default_factory=dict)


def _default_backoff() -> list[int | float]:
    return [1, 5, 15]


class Retry(BaseModel):
    """After the first delivery fails, up to ``max_attempts`` retries, ``backoff_minutes`` apart
    (the last value repeats)."""

    model_config = ConfigDict(extra="allow")

    max_attempts: int = 3
    backoff_minutes: list[int | float] = Field(default_factory=_default_backoff)
    retry_reported_failures: bool = False


class OnFailure(BaseModel):
    """What happens when an execution fails for good: an email, a signed webhook, a pause."""

    model_config = ConfigDict(extra="allow")

    email: bool = True
    webhook: str | None = None
    pause: bool = False


class DeliveryConfig(BaseModel):
    """Delivery timeout, outcome deadline, and (cueapi) the signature scheme and claim window."""

    model_config = ConfigDict(extra="allow")

    timeout_seconds: int | None = 30
    outcome_deadline_seconds: int | None = 300
    signature_scheme: str | None = None
    claim_timeout_seconds: int | None = None


class AlertConfig(BaseModel):
    """Alert settings (``consecutive_failures``, …); every key is kept."""

    model_config = ConfigDict(extra="allow")


class VerificationConfig(BaseModel):
    """How a reported success becomes verified: ``mode`` and required assertions."""

    model_config = ConfigDict(extra="allow")

    mode: str | None = None
    required_assertions: list[str] | None = None


class Cue(BaseModel):
    """A scheduled unit of work: its definition, its counters and its next run.

    The same class whether it came from a server (:class:`cueapi.CueAPI`) or from an embedded
    :class:`cueapi.App`. ``cron``, ``timezone``, ``at``, ``every_seconds``, ``schedule_type``,
    ``pause_on_failure`` and ``outcome_deadline_seconds`` read the nested fields directly.
    """

    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    description: str | None = None
    status: str
    transport: str = "webhook"
    schedule: Schedule
    callback: Callback
    payload: dict[str, Any] = Field(default_factory=dict)
    retry: Retry = Field(default_factory=Retry)
    next_run: datetime | None = None
    last_run: datetime | None = None
    run_count: int = 0
    fired_count: int = 0
    on_failure: OnFailure | None = None
    delivery: DeliveryConfig | None = None
    alerts: AlertConfig | None = None
    catch_up: str | None = None
    catch_up_max: int | None = None
    overlap: str | None = None
    verification: VerificationConfig | None = None
    on_success_fire: str | None = None
    require_payload_override: bool = False
    required_payload_keys: list[str] | None = None
    stats: dict[str, Any] | None = None
    warning: str | None = None
    created_at: datetime
    updated_at: datetime

    @property
    def cron(self) -> str | None:
        return self.schedule.cron

    @property
    def timezone(self) -> str:
        return self.schedule.timezone

    @property
    def at(self) -> datetime | None:
        return self.schedule.at

    @property
    def schedule_type(self) -> str:
        return self.schedule.type

    @property
    def every_seconds(self) -> float | None:
        """The interval of an ``interval`` schedule, in seconds."""
        every = self.schedule.every
        if every is None or not every.endswith("s"):
            return None
        try:
            return float(every[:-1])
        except ValueError:
            return None

    @property
    def pause_on_failure(self) -> bool:
        return self.on_failure is not None and self.on_failure.pause

    @property
    def outcome_deadline_seconds(self) -> int | None:
        return None if self.delivery is None else self.delivery.outcome_deadline_seconds


class CueList(BaseModel):
    """One page of cues."""

    cues: list[Cue]
    total: int
    limit: int
    offset: int
