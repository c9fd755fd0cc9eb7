"""``cueapi.resources.messages``: the official SDK's module path for ``client.messages``."""

from ..client import AsyncMessagesResource, MessagesResource

__all__ = ["AsyncMessagesResource", "MessagesResource"]
