"""Verifying the webhooks cueapi sends.

Every delivery is signed three ways (see the README's signing spec): the CueAPI ``v1=`` scheme
(``X-CueAPI-Signature`` + ``X-CueAPI-Timestamp``), Standard Webhooks (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``), and, for cues that select it, the raw-body
``sha256=`` scheme. The body is the canonical JSON Python's ``json.dumps(obj, sort_keys=True)``
produces, and the signature covers exactly the bytes sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from .. import _cueapi

__all__ = ["canonical_json", "verify_standard_webhook", "verify_webhook", "verify_webhook_headers"]


def canonical_json(value: Any) -> bytes:
    """The bytes cueapi signs for ``value``: ``json.dumps(value, sort_keys=True)``, UTF-8."""
    return json.dumps(value, sort_keys=True).encode()


def _candidates(payload: bytes | str | Mapping[str, Any]) -> list[bytes]:
    """The raw bytes, then the canonical re-serialisation when the payload is JSON: receivers
    that parsed and re-serialised the body still verify."""
    if isinstance(payload, Mapping):
        return [canonical_json(dict(payload))]
    raw = payload.encode() if isinstance(payload, str) else bytes(payload)
    try:
        again = _cueapi.canonical_json(raw.decode()).encode()
    except (UnicodeDecodeError, ValueError):
        return [raw]
    return [raw] if again == raw else [raw, again]


def verify_webhook(
    payload: bytes | str | Mapping[str, Any],
    signature: str | None,
    secret: str,
    timestamp: str | int | None = None,
    *,
    tolerance: int = 300,
) -> bool:
    """True when ``signature`` (an ``X-CueAPI-Signature`` value: ``v1=<hex>`` with its
    ``X-CueAPI-Timestamp``, or ``sha256=<hex>``) signs ``payload`` with ``secret``. The argument
    order is the official SDK's. ``v1`` signatures older or newer than ``tolerance`` seconds are
    refused. Compares in constant time; never raises for a malformed signature."""
    if not isinstance(signature, str) or not signature.isascii() or not isinstance(secret, str):
        return False
    ts = None if timestamp is None else str(timestamp)
    now = int(time.time())
    return any(
        _cueapi.check_signature(secret, body, signature, ts, now, tolerance) is None
        for body in _candidates(payload)
    )


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
    payload: bytes | str, headers: Mapping[str, str], secret: str, *, tolerance: int = 300
) -> bool:
    """Verifies a delivery from its headers, whichever scheme they carry (case-insensitive)."""
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
        payload, h.get("x-cueapi-signature"), secret, h.get("x-cueapi-timestamp"), tolerance=tolerance
    )
