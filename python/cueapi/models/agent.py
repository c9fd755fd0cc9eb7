"""Agents of the hosted CueAPI's messaging add-on (``cueapi serve`` does not serve them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Agent(BaseModel):
    """An agent that sends and receives messages."""

    model_config = ConfigDict(extra="allow")

    id: str
    slug: str
    display_name: str
    user_id: str | None = None
    api_key_id: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    status: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    deleted_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class AgentList(BaseModel):
    """One page of agents."""

    model_config = ConfigDict(extra="allow")

    agents: list[Agent]
    total: int
    limit: int
    offset: int
