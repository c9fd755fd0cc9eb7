"""The client's resources under the official SDK's module paths (``cueapi.resources.cues``, …);
the classes live in :mod:`cueapi.client`."""

from ..client import (
    AgentsResource,
    AsyncAgentsResource,
    AsyncCuesResource,
    AsyncExecutionContext,
    AsyncExecutionsResource,
    AsyncMessagesResource,
    AsyncUsageResource,
    AsyncWorkersResource,
    CuesResource,
    ExecutionContext,
    ExecutionsResource,
    MessagesResource,
    UsageResource,
    WorkersResource,
)

__all__ = [
    "AgentsResource",
    "AsyncAgentsResource",
    "AsyncCuesResource",
    "AsyncExecutionContext",
    "AsyncExecutionsResource",
    "AsyncMessagesResource",
    "AsyncUsageResource",
    "AsyncWorkersResource",
    "CuesResource",
    "ExecutionContext",
    "ExecutionsResource",
    "MessagesResource",
    "UsageResource",
    "WorkersResource",
]
