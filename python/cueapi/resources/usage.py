"""``cueapi.resources.usage``: the official SDK's module path for ``client.usage``."""

from ..client import AsyncUsageResource, UsageResource

__all__ = ["AsyncUsageResource", "UsageResource"]
