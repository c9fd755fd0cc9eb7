"""Receiving the webhooks cueapi sends.

Every delivery is signed twice (see the README's signing spec): always with Standard Webhooks
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature``), and with ``X-CueAPI-Signature`` in
the cue's scheme — the CueAPI ``v1=`` scheme over ``X-CueAPI-Timestamp`` and the body, or, for cues
that select it, the raw-body ``sha256=`` scheme. The body is the canonical JSON Python's
``json.dumps(obj, sort_keys=True)`` produces, and the signature covers exactly the bytes sent.

:func:`parse` verifies a request and returns a typed :class:`Delivery` (or raises
:class:`~cueapi.exceptions.WebhookVerificationError` with a ``reason``); the Delivery answers with
:meth:`Delivery.outcome` (inline), :meth:`Delivery.report` / :meth:`Delivery.evidence` (through a
client). :class:`MemorySeen` and :class:`SqliteSeen` flag replayed requests. ``cueapi.flask`` and
``cueapi.fastapi`` wrap all of it for those frameworks. The ``verify_*`` functions answer a bare
yes or no, with the official SDK's arguments.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from .. import _cueapi
from ..exceptions import WebhookVerificationError
from .delivery import AsyncOutcomeClient, Delivery, OutcomeClient, Scheme
from .receive import REASONS, parse
from .replay import DEFAULT_TTL, MemorySeen, SeenStore, SqliteSeen

__all__ = [
    "DEFAULT_TTL",
    "REASONS",
    "AsyncOutcomeClient",
    "Delivery",
    "MemorySeen",
    "OutcomeClient",
    "Scheme",
    "SeenStore",
    "SqliteSeen",
    "WebhookVerificationError",
    "canonical_json",
    "parse",
    "verify_standard_webhook",
    "verify_webhook",
    "verify_webhook_headers",
]


def canonical_json(value: Any) -> bytes:
    """The bytes cueapi signs for ``value``: ``json.dumps(value, sort_keys=True)``, UTF-8."""
    return json.dumps(value, sort_keys=True).encode()


# The SDK's verifier, in Rust: the raw bytes first, the canonical form only when they fail.
verify_webhook = _cueapi.verify_webhook


def verify_standard_webhook(
    payload: bytes | str,
    msg_id: str,
    timestamp: str | int,
    signature: str,
    secret: str,
    *,
    tolerance: int = 300,
) -> bool:
    """True when Standard Webhooks headers (``webhook-id``, ``webhook-timestamp``,
    ``webhook-signature``) sign the raw ``payload`` with ``secret`` (``whsec_…``)."""
    raw = payload.encode() if isinstance(payload, str) else bytes(payload)
    if not all(isinstance(v, str) and v.isascii() for v in (msg_id, signature)):
        return False
    now = int(time.time())
    return _cueapi.check_standard(secret, raw, msg_id, str(timestamp), signature, now, tolerance) is None


def verify_webhook_headers(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance: int = 300,
    allow_sha256: bool = False,
) -> bool:
    """Verifies a delivery from its headers, whichever scheme they carry (case-insensitive):
    Standard Webhooks when present, else ``X-CueAPI-Signature`` (``sha256=`` only with
    ``allow_sha256=True``: it signs no time)."""
    h = {k.lower(): v for k, v in headers.items()}
    if "webhook-signature" in h:
        return verify_standard_webhook(
            payload,
            h.get("webhook-id", ""),
            h.get("webhook-timestamp", ""),
            h["webhook-signature"],
            secret,
            tolerance=tolerance,
        )
    return verify_webhook(
        payload,
        h.get("x-cueapi-signature"),
        secret,
        h.get("x-cueapi-timestamp"),
        tolerance=tolerance,
        allow_sha256=allow_sha256,
    )
