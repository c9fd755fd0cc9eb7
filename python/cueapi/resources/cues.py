"""``cueapi.resources.cues``: the official SDK's module path for ``client.cues``."""

from ..client import AsyncCuesResource, CuesResource

__all__ = ["AsyncCuesResource", "CuesResource"]
