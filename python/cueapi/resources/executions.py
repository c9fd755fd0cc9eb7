"""``cueapi.resources.executions``: the official SDK's module path for ``client.executions``."""

from ..client import AsyncExecutionContext, AsyncExecutionsResource, ExecutionContext, ExecutionsResource

__all__ = ["AsyncExecutionContext", "AsyncExecutionsResource", "ExecutionContext", "ExecutionsResource"]
