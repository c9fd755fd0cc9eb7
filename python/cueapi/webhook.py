"""``cueapi.webhook``: where the official SDK keeps ``verify_webhook`` (see :mod:`cueapi.webhooks`)."""

from .webhooks import verify_webhook

__all__ = ["verify_webhook"]
