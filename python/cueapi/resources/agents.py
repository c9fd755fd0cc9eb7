"""``cueapi.resources.agents``: the official SDK's module path for ``client.agents``."""

from ..client import AgentsResource, AsyncAgentsResource

__all__ = ["AgentsResource", "AsyncAgentsResource"]
