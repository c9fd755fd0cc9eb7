"""Pull workers, as ``GET /v1/workers`` lists them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class Worker(BaseModel):
    """A worker the server has heard from: its handlers and how lately it was heard."""

    model_config = ConfigDict(extra="allow")

    worker_id: str
    id: str | None = None
    user_id: str | None = None
    handlers: list[str] | None = None
    last_heartbeat: datetime | None = None
    heartbeat_status: str | None = None
    seconds_since_heartbeat: int | float | None = None
    api_key_id: str | None = None
    created_at: datetime | None = None


class WorkerList(BaseModel):
    """The workers of the caller."""

    model_config = ConfigDict(extra="allow")

    workers: list[Worker]
    total: int | None = None
