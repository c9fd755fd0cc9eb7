"""A verified webhook delivery, and the three ways to answer it: inline (the 2xx body), or later
through a client (:meth:`Delivery.report`, :meth:`Delivery.evidence` and their async twins)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, TypedDict, cast
from urllib.parse import urlsplit

from .._limits import CUT_TEXT, EVIDENCE_TEXT, INLINE_OUTCOME_BYTES, METADATA_BYTES
from ..exceptions import ValidationError

if sys.version_info >= (3, 11):
    from typing import Unpack
else:
    from typing_extensions import Unpack

__all__ = ["AsyncOutcomeClient", "Delivery", "EvidenceFields", "OutcomeClient", "OutcomeFields", "Scheme"]

Scheme = Literal["v1", "standard", "sha256"]
"""Which signature verified a delivery: ``"standard"`` (Standard Webhooks headers), ``"v1"``
(``X-CueAPI-Signature: v1=`` with ``X-CueAPI-Timestamp``) or ``"sha256"`` (raw body, no time)."""

# Free text the server cuts rather than refuses (as POST /v1/executions/{id}/outcome does): an
# outcome is evidence of work done, and losing it over the length of a message helps nobody.
_CUT = CUT_TEXT
# Text the server refuses beyond these lengths (in characters). An inline outcome that breaks a
# limit would be dropped without a word, so `outcome()` refuses it here, where it can be seen.
_LIMITS = EVIDENCE_TEXT
# The server reads the first part of a delivery's answer: a longer inline outcome is cut short,
# is no longer JSON, and is not recorded.
MAX_INLINE_BYTES = INLINE_OUTCOME_BYTES


class OutcomeFields(TypedDict, total=False):
    """What an outcome may carry besides ``success`` (the keywords of ``report_outcome``)."""

    result: str | None
    error: str | None
    metadata: dict[str, Any] | None
    external_id: str | None
    result_url: str | None
    result_ref: str | None
    result_type: str | None
    summary: str | None
    artifacts: list[Any] | None


class EvidenceFields(TypedDict, total=False):
    """What evidence appended later may carry (the keywords of ``append_evidence``)."""

    external_id: str | None
    result_url: str | None
    result_ref: str | None
    result_type: str | None
    summary: str | None
    artifacts: list[Any] | None
    metadata: dict[str, Any] | None


class _Executions(Protocol):
    def report_outcome(self, execution_id: str, *, success: bool, **fields: Unpack[OutcomeFields]) -> Any: ...
    def append_evidence(self, execution_id: str, **fields: Unpack[EvidenceFields]) -> Any: ...


class _AsyncExecutions(Protocol):
    async def report_outcome(
        self, execution_id: str, *, success: bool, **fields: Unpack[OutcomeFields]
    ) -> Any: ...
    async def append_evidence(self, execution_id: str, **fields: Unpack[EvidenceFields]) -> Any: ...


class OutcomeClient(Protocol):
    """What :meth:`Delivery.report` and :meth:`Delivery.evidence` need of a client: a
    :class:`cueapi.CueAPI` (or the official SDK's ``CueAPI``)."""

    @property
    def executions(self) -> _Executions: ...


class AsyncOutcomeClient(Protocol):
    """What :meth:`Delivery.areport` and :meth:`Delivery.aevidence` need: a
    :class:`cueapi.AsyncCueAPI`."""

    @property
    def executions(self) -> _AsyncExecutions: ...


def _given(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery whose signature verified (made by :func:`cueapi.webhooks.parse`).

    Every field but ``idempotency_key``, ``scheme``, ``timestamp``, ``headers`` and ``replayed``
    comes from the signed body. ``scheduled_for`` is an aware UTC datetime; ``attempt`` counts
    from 1 and grows with each retry of the same occurrence. ``idempotency_key`` stays the same
    across retries (the ``webhook-id`` header, which the Standard Webhooks signature covers;
    otherwise ``X-CueAPI-Idempotency-Key``, which no signature covers). ``timestamp`` is the signed
    time in Unix seconds (None for ``sha256``, which signs no time). ``headers`` are the request's,
    names lower-cased. ``replayed`` is True when a :class:`~cueapi.webhooks.SeenStore` had seen
    this very attempt before (see :func:`~cueapi.webhooks.parse`).
    """

    execution_id: str
    cue_id: str
    name: str
    scheduled_for: datetime
    attempt: int
    payload: dict[str, Any] = field(hash=False)
    idempotency_key: str
    scheme: Scheme
    timestamp: int | None
    raw_body: bytes = field(repr=False)
    headers: dict[str, str] = field(repr=False, hash=False)
    replayed: bool = False

    @property
    def replay_key(self) -> str:
        """What a :class:`~cueapi.webhooks.SeenStore` records: this attempt of this execution
        (``"<execution_id>:<attempt>"``), from signed values only."""
        return f"{self.execution_id}:{self.attempt}"

    def outcome(
        self,
        success: bool = True,
        *,
        result: str | None = None,
        error: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        external_id: str | None = None,
        result_url: str | None = None,
        result_ref: str | None = None,
        result_type: str | None = None,
        summary: str | None = None,
        artifacts: Sequence[Any] | None = None,
    ) -> dict[str, Any]:
        """The JSON body that, answered with a 2xx, records this execution's outcome at once
        (no call back to the server). Fields left None are omitted.

        ``result``, ``error`` and ``summary`` longer than the server keeps (2,000, 2,000 and 500
        characters) are cut, ending in ``…``, as the outcome API cuts them. Anything the server
        would refuse raises :class:`~cueapi.exceptions.ValidationError` (``field`` names it) here
        rather than being dropped by the server without a word: ``external_id`` / ``result_ref``
        over 500 characters, ``result_type`` over 100, ``result_url`` not http(s) or over 2,083,
        ``metadata`` not a mapping, ``artifacts`` not a list, values that are not JSON (NaN
        included), or a whole body over the 64 KiB the server reads of an answer.
        """
        if not isinstance(success, bool):
            raise _invalid("success", "must be True or False")
        body: dict[str, Any] = {"success": success}
        texts = {
            "result": result,
            "error": error,
            "external_id": external_id,
            "result_url": result_url,
            "result_ref": result_ref,
            "result_type": result_type,
            "summary": summary,
        }
        for name, value in texts.items():
            if value is None:
                continue
            if not isinstance(value, str):
                raise _invalid(name, f"must be text, not {type(value).__name__}")
            if name in _CUT and len(value) > _CUT[name]:
                value = value[: _CUT[name] - 1] + "…"
            if name in _LIMITS and len(value) > _LIMITS[name]:
                raise _invalid(name, f"is longer than {_LIMITS[name]} characters")
            body[name] = value
        if result_url is not None:
            parts = urlsplit(result_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise _invalid("result_url", "must be an http or https URL")
        if metadata is not None:
            if not isinstance(metadata, Mapping):
                raise _invalid("metadata", "must be a mapping (a JSON object)")
            body["metadata"] = dict(metadata)
        if artifacts is not None:
            if isinstance(artifacts, (str, bytes, bytearray)) or not isinstance(artifacts, Sequence):
                raise _invalid("artifacts", "must be a list")
            body["artifacts"] = list(artifacts)
        try:
            # ASCII-escaped and compact: at least as long as any framework's UTF-8 encoding.
            size = len(json.dumps(body, separators=(",", ":"), allow_nan=False))
        except (TypeError, ValueError) as e:
            raise ValidationError(f"the outcome is not JSON: {e}") from e
        if "metadata" in body:
            meta = len(json.dumps(body["metadata"], separators=(",", ":"), ensure_ascii=False).encode())
            if meta > METADATA_BYTES:
                raise _invalid("metadata", f"is {meta} bytes as JSON; the limit is {METADATA_BYTES}")
        if size > MAX_INLINE_BYTES:
            raise ValidationError(
                f"the outcome is {size} bytes as JSON and the server reads the first "
                f"{MAX_INLINE_BYTES} of an answer: report it with delivery.report(client, ...)"
            )
        return body

    def report(self, client: OutcomeClient, *, success: bool, **fields: Unpack[OutcomeFields]) -> Any:
        """Reports this execution's outcome through ``client``
        (``client.executions.report_outcome``, whose keywords it takes; None values are left out)
        and returns its answer. For work that ends after the delivery was answered; the outcome is
        written once."""
        given = cast(OutcomeFields, _given(**fields))
        return client.executions.report_outcome(self.execution_id, success=success, **given)

    async def areport(
        self, client: AsyncOutcomeClient, *, success: bool, **fields: Unpack[OutcomeFields]
    ) -> Any:
        """:meth:`report` with an async client."""
        given = cast(OutcomeFields, _given(**fields))
        return await client.executions.report_outcome(self.execution_id, success=success, **given)

    def evidence(self, client: OutcomeClient, **fields: Unpack[EvidenceFields]) -> Any:
        """Adds evidence to this execution's recorded outcome through ``client``
        (``client.executions.append_evidence``, whose keywords it takes) and returns its answer."""
        return client.executions.append_evidence(self.execution_id, **cast(EvidenceFields, _given(**fields)))

    async def aevidence(self, client: AsyncOutcomeClient, **fields: Unpack[EvidenceFields]) -> Any:
        """:meth:`evidence` with an async client."""
        given = cast(EvidenceFields, _given(**fields))
        return await client.executions.append_evidence(self.execution_id, **given)


def _invalid(name: str, why: str) -> ValidationError:
    e = ValidationError(f"outcome {name} {why}")
    e.field = name
    return e
