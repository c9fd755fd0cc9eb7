"""What the operations share: argument checks and the pieces of a request."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any
from urllib.parse import quote

from .. import exceptions as exc


def _id(value: object, what: str) -> str:
    """A path segment: a non-empty string, escaped (ids never need it; hostile input does)."""
    if not isinstance(value, str) or not value.strip():
        raise exc.ValidationError(f"{what} must be a non-empty string, not {value!r}")
    return quote(value, safe="")


def _iso(value: str | datetime | date | None, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raise exc.ValidationError(f"{what} must be an ISO-8601 string or a datetime, not {type(value).__name__}")


def _given(**fields: Any) -> dict[str, Any]:
    """The fields whose value is not None, in order."""
    return {k: v for k, v in fields.items() if v is not None}


def _mapping(value: object, what: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise exc.ValidationError(f"{what} must be a dict, not {type(value).__name__}")
    return dict(value)


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise exc.ValidationError(f"{what} must be True or False, not {value!r}")
    return value


def _page(limit: object, offset: object) -> dict[str, int]:
    for name, value in (("limit", limit), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise exc.ValidationError(f"{name} must be a non-negative int, not {value!r}")
    assert isinstance(limit, int) and isinstance(offset, int)
    return {"limit": limit, "offset": offset}
