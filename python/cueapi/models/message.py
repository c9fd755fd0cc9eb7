"""Messages of the hosted CueAPI's messaging add-on (``cueapi serve`` does not serve them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FromAgentRef(BaseModel):
    """Who sent a message."""

    model_config = ConfigDict(extra="allow")

    agent_id: str | None = None
    slug: str | None = None


class StateTransitionResponse(BaseModel):
    """A message's delivery state after ``read`` or ``ack``."""

    model_config = ConfigDict(extra="allow")

    delivery_state: str
    read_at: datetime | None = None
    acked_at: datetime | None = None


class Message(BaseModel):
    """A message between agents (the JSON key ``from`` is ``from_agent`` here)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str
    from_agent: FromAgentRef | None = Field(default=None, alias="from")
    user_id: str | None = None
    to: str | None = None
    body: str | None = None
    subject: str | None = None
    thread_id: str | None = None
    reply_to: str | None = None
    reply_to_agent: str | None = None
    priority: int | None = None
    expects_reply: bool | None = None
    delivery_state: str | None = None
    metadata: dict[str, Any] | None = None
    expires_at: datetime | None = None
    queued_at: datetime | None = None
    delivered_at: datetime | None = None
    read_at: datetime | None = None
    acked_at: datetime | None = None
    failed_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class MessageList(BaseModel):
    """One page of messages."""

    model_config = ConfigDict(extra="allow")

    messages: list[Message]
    total: int | None = None
    limit: int | None = None
    offset: int | None = None
