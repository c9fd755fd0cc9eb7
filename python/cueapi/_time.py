"""Conversions between the engine's UTC milliseconds and Python datetimes."""

from __future__ import annotations

from datetime import datetime, timezone

from .exceptions import ValidationError


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def opt_from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else from_ms(ms)


def to_ms(value: datetime | float | int, field: str) -> int:
    """A datetime (naive means UTC) or a Unix timestamp in seconds, as UTC milliseconds."""
    if isinstance(value, bool):
        raise ValidationError(f"{field} must be a datetime or a Unix timestamp, not a bool")
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return round(value.timestamp() * 1000)
    if isinstance(value, (int, float)):
        return round(float(value) * 1000)
    raise ValidationError(f"{field} must be a datetime or a Unix timestamp, not {type(value).__name__}")
