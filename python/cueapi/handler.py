"""What a handler gets and gives: the :class:`Context` of a run, the :class:`Outcome` it reports,
and how a handler's return value or exception becomes the outcome that is recorded (the same for
an embedded App and a remote one)."""

from __future__ import annotations

import json
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from . import _cueapi
from ._limits import CUT_TEXT, METADATA_BYTES

_EVIDENCE_KEYS = ("external_id", "result_url", "result_ref", "result_type", "summary", "artifacts")
_OUTCOME_KEYS = frozenset(("success", "result", "error", "metadata", "retry", *_EVIDENCE_KEYS))


@dataclass
class Outcome:
    """What a handler reports: success or failure, a result, and the evidence behind it.

    A reported failure is the handler's verdict and final; with ``retry=True`` it is a failed run
    instead (as an exception is), retried by the cue's retry policy."""

    success: bool = True
    result: str | None = None
    error: str | None = None
    metadata: dict[str, Any] | None = None
    external_id: str | None = None
    result_url: str | None = None
    result_ref: str | None = None
    result_type: str | None = None
    summary: str | None = None
    artifacts: list[Any] | None = None
    retry: bool = False


@dataclass
class Context:
    """What a handler knows about the run it is doing."""

    execution_id: str
    cue_id: str
    cue_name: str
    scheduled_for: datetime
    attempt: int
    payload: dict[str, Any]
    idempotency_key: str
    triggered_by: str
    _evidence: dict[str, Any] = field(default_factory=dict, repr=False)

    def evidence(
        self,
        *,
        external_id: str | None = None,
        result_url: str | None = None,
        result_ref: str | None = None,
        result_type: str | None = None,
        summary: str | None = None,
        artifacts: list[Any] | None = None,
        **metadata: Any,
    ) -> None:
        """Attaches evidence during the run. It is recorded with the outcome, whether the handler
        then returns or raises; values the handler returns take precedence. Extra keywords go
        into the outcome's metadata."""
        given = {
            "external_id": external_id,
            "result_url": result_url,
            "result_ref": result_ref,
            "result_type": result_type,
            "summary": summary,
            "artifacts": artifacts,
        }
        self._evidence.update({k: v for k, v in given.items() if v is not None})
        if metadata:
            self._evidence.setdefault("metadata", {}).update(metadata)


HandlerResult = Outcome | Mapping[str, Any] | str | bool | None
Handler = Callable[[Context], HandlerResult | Awaitable[HandlerResult]]
F = TypeVar("F", bound=Handler)


def outcome_from_return(value: object) -> dict[str, Any]:
    if value is None:
        return {"success": True}
    if isinstance(value, Outcome):
        out = {k: v for k, v in asdict(value).items() if v is not None}
        if not out.get("retry"):
            del out["retry"]
        return out
    if isinstance(value, bool):
        return {"success": value}
    if isinstance(value, str):
        return {"success": True, "result": value}
    if isinstance(value, Mapping):
        unknown = sorted(str(k) for k in value if k not in _OUTCOME_KEYS)
        if unknown:
            return {
                "success": False,
                "error": f"handler returned a dict with unknown keys {unknown}; "
                f"known keys are {sorted(_OUTCOME_KEYS)}",
            }
        out = {k: v for k, v in value.items() if v is not None}
        out.setdefault("success", True)
        if not isinstance(out["success"], bool):
            return {"success": False, "error": "handler returned a dict whose 'success' is not a bool"}
        return out
    return {
        "success": False,
        "error": f"handler returned {type(value).__name__}; return None, an Outcome, a dict, a bool or a str",
    }


def outcome_from_exception(exc: BaseException) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    message = str(exc) or type(exc).__name__
    return {
        "success": False,
        "error": f"{type(exc).__name__}: {message}"[: CUT_TEXT["error"]],
        "error_type": type(exc).__qualname__,
        "traceback": tb,
        # An exception is a failed run, not the handler's verdict: retried by the cue's policy.
        "retry": True,
        "metadata": {
            "exception_type": type(exc).__qualname__,
            "exception_message": str(exc),
            "traceback": tb,
        },
    }


# A traceback longer than this keeps its end (where the exception is) when metadata must shrink.
_TRACEBACK_KEEP = 4_000


def _json_bytes(value: Any) -> int:
    return len(_cueapi.canonical_json(json.dumps(value, default=str)).encode())


def fit_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Outcome metadata within the engine's limit (``METADATA_BYTES`` of JSON, as the outcome
    route takes it): a long traceback keeps its end; metadata still too large is replaced by a
    note saying so, so that the verdict and the rest of the evidence are still recorded."""
    try:
        if _json_bytes(metadata) <= METADATA_BYTES:
            return metadata
    except (TypeError, ValueError):
        return {"metadata_dropped": "not representable as JSON"}
    trimmed = dict(metadata)
    tb = trimmed.get("traceback")
    if isinstance(tb, str) and len(tb) > _TRACEBACK_KEEP:
        trimmed["traceback"] = "…" + tb[-_TRACEBACK_KEEP:]
        if _json_bytes(trimmed) <= METADATA_BYTES:
            return trimmed
    return {"metadata_dropped": f"larger than the {METADATA_BYTES}-byte limit on outcome metadata"}


def merge_evidence(outcome: dict[str, Any], ctx: Context) -> dict[str, Any]:
    for key, value in ctx._evidence.items():
        if key == "metadata":
            merged = dict(value)
            merged.update(outcome.get("metadata") or {})
            outcome["metadata"] = merged
        else:
            outcome.setdefault(key, value)
    return outcome


def outcome_json(outcome: dict[str, Any], ctx: Context, started_ms: int) -> str:
    """The report as the engine takes it: evidence attached during the run merged in, and the
    instant the handler really started (claims come in batches)."""
    outcome = merge_evidence(outcome, ctx)
    outcome["started_at"] = started_ms
    try:
        if isinstance(outcome.get("metadata"), dict):
            outcome["metadata"] = fit_metadata(outcome["metadata"])
        return json.dumps(outcome)
    except (TypeError, ValueError) as exc:
        error = f"the outcome could not be recorded as JSON: {exc}"
        return json.dumps({"success": False, "error": error, "started_at": started_ms})
