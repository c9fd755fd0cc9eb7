"""``cueapi.resources.workers``: the official SDK's module path for ``client.workers``."""

from ..client import AsyncWorkersResource, WorkersResource

__all__ = ["AsyncWorkersResource", "WorkersResource"]
