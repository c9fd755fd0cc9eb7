"""What ``App.stats`` returns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .._time import from_ms


@dataclass(frozen=True)
class Stats:
    """Counts and durations of one cue's executions over a window."""

    cue_id: str
    since: datetime
    total: int
    counts: dict[str, int]
    success_rate: float | None
    duration_ms_p50: int | None
    duration_ms_p95: int | None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Stats:
        return cls(
            cue_id=d["cue_id"],
            since=from_ms(d["since"]),
            total=d["total"],
            counts=dict(d["counts"]),
            success_rate=d["success_rate"],
            duration_ms_p50=d["duration_ms_p50"],
            duration_ms_p95=d["duration_ms_p95"],
        )
