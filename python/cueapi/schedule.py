"""Schedules and clocks, for inspection and for tests."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from . import _cueapi
from ._time import to_ms
from .exceptions import ValidationError


class Schedule:
    """A validated schedule: exactly one of a cron expression, ``every`` (``"30s"``, ``"5m"``,
    ``"1h30m"``) or ``at`` (ISO-8601 or a datetime; a time without an offset is wall time in
    ``timezone``).

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
        at_text = at.isoformat() if isinstance(at, datetime) else at
        self._native = _cueapi.Schedule(cron, every=every, at=at_text, timezone=timezone)

    @property
    def timezone(self) -> str:
        return self._native.timezone

    def next_after(self, after: datetime | float) -> datetime | None:
        """The first fire time strictly after ``after``, in the schedule's zone."""
        nxt = self._native.next_after(to_ms(after, "after"))
        if nxt is None:
            return None
        return datetime.fromtimestamp(nxt / 1000, tz=ZoneInfo(self.timezone))

    def preview(self, n: int = 5, after: datetime | float | None = None) -> list[datetime]:
        """The next ``n`` fire times, each with its UTC offset in the schedule's zone."""
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 10_000:
            raise ValidationError("n must be an int between 0 and 10000")
        start = _cueapi.now_ms() if after is None else to_ms(after, "after")
        return [datetime.fromisoformat(text) for _, text in self._native.preview(n, start)]

    def describe(self) -> str:
        """The schedule in words."""
        return self._native.describe()


class ManualClock:
    """A clock that moves only when told to. Give it to :class:`cueapi.App` to test schedules,
    retries and deadlines without waiting."""

    def __init__(self, start: datetime | float) -> None:
        self._native = _cueapi.ManualClock(to_ms(start, "start"))

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
        self._native.set_ms(to_ms(to, "to"))
