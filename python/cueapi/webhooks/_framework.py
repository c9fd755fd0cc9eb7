"""What the Flask and FastAPI integrations share (and no framework import): where the secret
comes from, and the JSON bodies of their refusals."""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from ..exceptions import ValidationError, WebhookVerificationError
from .receive import check_secrets

ENV = "CUEAPI_WEBHOOK_SECRET"

log = logging.getLogger("cueapi.webhooks")


class SecretSource:
    """The secrets a receiver verifies with: those given (checked now, so a bad argument fails
    where the receiver is declared), else the ``CUEAPI_WEBHOOK_SECRET`` environment variable,
    read at each request (one secret, or several separated by commas or spaces while rotating)."""

    def __init__(self, secret: object) -> None:
        self.fixed = None if secret is None else check_secrets(secret)

    def __call__(self) -> tuple[str, ...] | str:
        """The secrets, or why there are none (a configuration error, in words)."""
        if self.fixed is not None:
            return self.fixed
        value = os.environ.get(ENV, "")
        parts = [p for p in re.split(r"[\s,]+", value) if p]
        if not parts:
            return (
                f"{ENV} is not set: set it to the webhook secret (GET /v1/auth/webhook-secret) "
                "or pass the secret to webhook(...)"
            )
        try:
            return check_secrets(parts)
        except ValidationError as e:
            return f"{ENV} is not usable: {e}"


def refusal(e: WebhookVerificationError) -> dict[str, Any]:
    """The 401 body: ``{"error": {"code": "invalid_signature", "reason", "message"}}``."""
    log.info("refused a webhook delivery (%s): %s", e.reason, e.message)
    return {"error": {"code": "invalid_signature", "reason": e.reason, "message": e.message}}


def misconfigured(message: str) -> dict[str, Any]:
    """The 503 body when no secret is configured: ``{"error": {"code":
    "webhook_secret_missing", "message"}}``. Nothing is accepted without a secret; the server
    retries the delivery later, by when the secret may be set."""
    log.error("a webhook delivery could not be verified: %s", message)
    return {"error": {"code": "webhook_secret_missing", "message": message}}
