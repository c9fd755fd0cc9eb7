"""Limits and defaults the Python package shares with the engine and the server. They are defined
once, in Rust (``src/limits.rs``), and read here from the extension module."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from . import _cueapi

_L = _cueapi.LIMITS

METADATA_BYTES: int = _L["metadata_bytes"]
"""Outcome metadata: bytes of its JSON."""
CUT_TEXT: Mapping[str, int] = MappingProxyType(dict(_L["cut_text"]))
"""Outcome text cut (ending in "…") rather than refused beyond these lengths, in characters."""
EVIDENCE_TEXT: Mapping[str, int] = MappingProxyType(dict(_L["evidence_text"]))
"""Outcome evidence refused beyond these lengths, in characters."""
URL_CHARS: int = _L["url_chars"]
INLINE_OUTCOME_BYTES: int = _L["inline_outcome_bytes"]
"""The part of a delivery's answer the server reads."""
RATE_LIMIT_PER_MINUTE: int = _L["rate_limit_per_minute"]
MAX_RATE_LIMIT_PER_MINUTE: int = _L["max_rate_limit_per_minute"]
WORKER_LEASE_SECONDS: float = _L["worker_lease_ms"] / 1000
WORKER_TIMEOUT_SECONDS: float = _L["worker_timeout_ms"] / 1000
REALERT_SECONDS: float = _L["realert_ms"] / 1000
NODE_LEASE_SECONDS: float = _L["node_lease_ms"] / 1000
"""Several nodes on one PostgreSQL database: a node silent this long has its work taken over."""
MIN_NODE_LEASE_SECONDS: float = _L["min_node_lease_ms"] / 1000
MAX_NODE_LEASE_SECONDS: float = _L["max_node_lease_ms"] / 1000
MAX_DELIVERIES: int = _L["max_deliveries"]
MAX_DELIVERIES_PER_TENANT: int = _L["max_deliveries_per_tenant"]
MAX_DELIVERIES_PER_DESTINATION: int = _L["max_deliveries_per_destination"]
MAX_DELIVERY_TIMEOUT_SECONDS: float = _L["max_delivery_timeout_ms"] / 1000
MAX_DELIVERY_SLOTS: int = _L["max_delivery_slots"]
DELIVERY_TIMEOUT_CEILING_SECONDS: float = _L["delivery_timeout_ceiling_ms"] / 1000
HEADER_TIMEOUT_SECONDS: float = _L["header_timeout_ms"] / 1000
"""`cueapi serve`: how long a connection has to send a request's headers (and may stay idle)."""
BODY_TIMEOUT_SECONDS: float = _L["body_timeout_ms"] / 1000
"""`cueapi serve`: how long a request's body may take to arrive."""
MAX_CONNECTIONS: int = _L["max_connections"]
"""`cueapi serve`: connections served at once (at most half the open-file limit)."""
MAX_CLAIM_HOLD_SECONDS: float = _L["max_claim_hold_ms"] / 1000
"""The longest a worker's heartbeats keep a claim whose lease has run out."""
