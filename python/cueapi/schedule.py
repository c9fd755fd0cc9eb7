"""Schedules and clocks, for inspection and for tests."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from . import _cueapi
from ._time import to_ms
from .exceptions import InvalidScheduleError, ValidationError

#: The longest cron expression accepted, in bytes.
MAX_CRON_LENGTH: int = _cueapi.Schedule.MAX_CRON_LENGTH
#: The most comma-separated items one cron field may have.
MAX_CRON_LIST_ITEMS: int = _cueapi.Schedule.MAX_CRON_LIST_ITEMS
_FIRST_MS: int = _cueapi.Schedule.FIRST_INSTANT_MS
_LAST_MS: int = _cueapi.Schedule.LAST_INSTANT_MS


def _text(value: object, field: str) -> str:
    """A schedule argument that must be text: a clear error for anything else, and for strings
    that cannot be encoded (a lone surrogate)."""
    if not isinstance(value, str):
        raise InvalidScheduleError(f"{field} must be a string, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidScheduleError(f"{field} must be valid text (it contains a lone surrogate)") from None
    return value


def _instant(value: object, field: str) -> int:
    """A datetime (naive means UTC) or a Unix timestamp in seconds, as UTC milliseconds within
    the range schedules deal in (0001-01-02 to 9999-12-30)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(f"{field} must be a finite Unix timestamp, not {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not -1e14 < value < 1e14:
        raise ValidationError(f"{field} is out of range: {value!r}")
    try:
        ms = to_ms(value, field)  # type: ignore[arg-type]
    except (OverflowError, ValueError) as e:  # a datetime too near year 1 or 9999 for a timestamp
        if isinstance(e, ValidationError):
            raise
        raise ValidationError(f"{field} is out of range: {value!r}") from None
    if not _FIRST_MS <= ms <= _LAST_MS:
        raise ValidationError(f"{field} is out of range: instants from 0001-01-02 to 9999-12-30 are accepted")
    return ms


class Schedule:
    """A validated schedule: exactly one of a cron expression, ``every`` (``"30s"``, ``"5m"``,
    ``"1h30m"``) or ``at`` (ISO-8601 or a datetime; a time without an offset is wall time in
    ``timezone``). Anything else raises :class:`cueapi.InvalidScheduleError`.

    >>> Schedule("0 9 * * MON-FRI", timezone="Europe/Paris").describe()  # doctest: +SKIP
    """

    def __init__(
        self,
        cron: str | None = None,
        *,
        every: str | None = None,
        at: str | datetime | None = None,
        timezone: str = "UTC",
    ) -> None:
        cron_text = None if cron is None else _text(cron, "cron")
        every_text = None if every is None else _text(every, "every")
        if at is None or isinstance(at, datetime):
            at_text = None if at is None else at.isoformat()
        else:
            at_text = _text(at, "at")
        self._native = _cueapi.Schedule(
            cron_text, every=every_text, at=at_text, timezone=_text(timezone, "timezone")
        )

    @property
    def timezone(self) -> str:
        return self._native.timezone

    def next_after(self, after: datetime | float) -> datetime | None:
        """The first fire time strictly after ``after``, in the schedule's zone."""
        nxt = self._native.next_after(_instant(after, "after"))
        if nxt is None:
            return None
        return datetime.fromtimestamp(nxt / 1000, tz=ZoneInfo(self.timezone))

    def preview(self, n: int = 5, after: datetime | float | None = None) -> list[datetime]:
        """The next ``n`` fire times, each with its UTC offset in the schedule's zone."""
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 10_000:
            raise ValidationError("n must be an int between 0 and 10000")
        start = _cueapi.now_ms() if after is None else _instant(after, "after")
        return [datetime.fromisoformat(text) for _, text in self._native.preview(n, start)]

    def describe(self) -> str:
        """The schedule in words."""
        return self._native.describe()


class ManualClock:
    """A clock that moves only when told to. Give it to :class:`cueapi.App` to test schedules,
    retries and deadlines without waiting."""

    def __init__(self, start: datetime | float) -> None:
        self._native = _cueapi.ManualClock(_instant(start, "start"))

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._native.now_ms() / 1000, tz=timezone.utc)

    def now_ms(self) -> int:
        return self._native.now_ms()

    def advance(self, seconds: float) -> None:
        """Moves the clock forward; everything that comes due fires."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < 1e12:
            raise ValidationError("seconds must be a non-negative number")
        self._native.advance_ms(round(seconds * 1000))

    def set(self, to: datetime | float) -> None:
        """Moves the clock to an instant (never backwards)."""
        self._native.set_ms(_instant(to, "to"))
