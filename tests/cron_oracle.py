"""croniter as the oracle of cueapi's cron schedules: the comparison both differential tests use.

``compare(expr, zone, base)`` asks croniter and cueapi about one expression from one instant and
returns what disagrees. They must agree, except where README "Schedules" says otherwise:

- **Daylight saving** (Vixie cron's rule, computed here independently by :func:`policy_next`): a
  schedule with fixed wall times fires once at the first occurrence of a repeated time and at the
  end of a gap; a schedule whose minute or hour field is a wildcard (``*``, ``*/n``, or a range or
  step over the whole field) fires at every instant whose wall time matches. A step may differ
  from croniter only when a gap or fold is involved, and every step must equal the rule.
- **Deliberate deviations**: an equal range (``5-5``) is one value (compared with croniter on the
  expression rewritten that way); ``R`` is refused; when both day fields are restricted, ``W``,
  ``#`` and ``L`` (day-of-week) are refused, as is ``#``/``L`` mixed with plain weekdays or ``*``;
  expressions over the caps are refused; whitespace around a macro is ignored.

Everything croniter refuses, cueapi refuses with a message naming the field (or the field count,
the macro, the caps, or "never fires").
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import cueapi
import pytz
from croniter import CroniterBadDateError, croniter
from cueapi import _cueapi

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)
HOUR_MS = 3_600_000

MAX_CRON_LENGTH = _cueapi.Schedule.MAX_CRON_LENGTH
MAX_CRON_LIST_ITEMS = _cueapi.Schedule.MAX_CRON_LIST_ITEMS

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# (low, high) of minute, hour, day-of-month, month, day-of-week, second, year
RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6), (0, 59), (1970, 2099))
SEPARATORS = " \t\n\r\x0b\x0c"


# --- time helpers -------------------------------------------------------------------------------


def to_ms(dt: datetime) -> int:
    return (dt - EPOCH) // MS


def aware(ms: int, tz: tzinfo) -> datetime:
    return (EPOCH + ms * MS).astimezone(tz)


def wall(ms: int, tz: tzinfo) -> datetime:
    """The naive wall-clock time of an instant in a zone."""
    return aware(ms, tz).replace(tzinfo=None)


def iso(ms: int | None, tz: tzinfo) -> str:
    return "None" if ms is None else f"{aware(ms, tz).isoformat()} ({aware(ms, UTC):%Y-%m-%dT%H:%M:%SZ})"


def instants_of(local: datetime, tz: ZoneInfo) -> list[int]:
    """The instants (UTC ms) whose wall time in ``tz`` is ``local``: none in a gap, two in a fold."""
    found = set()
    for fold in (0, 1):
        ms = to_ms(local.replace(tzinfo=tz, fold=fold))
        if wall(ms, tz) == local:
            found.add(ms)
    return sorted(found)


def gap_end(local: datetime, tz: ZoneInfo) -> int:
    """The first instant whose wall time is later than ``local``, a wall time inside a DST gap."""
    a = to_ms(local.replace(tzinfo=tz, fold=0)) // 1000
    b = to_ms(local.replace(tzinfo=tz, fold=1)) // 1000
    lo, hi = min(a, b), max(a, b)
    assert wall(lo * 1000, tz) < local < wall(hi * 1000, tz)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if wall(mid * 1000, tz) > local:
            hi = mid
        else:
            lo = mid
    return hi * 1000


def offset_ms(ms: int, tz: tzinfo) -> int:
    off = aware(ms, tz).utcoffset()
    assert off is not None
    return off // MS


# --- the documented rules, read from the text -----------------------------------------------------


def fields_of(expr: str) -> list[str]:
    text = expr.strip(SEPARATORS).lower()
    text = MACROS.get(text, text)
    return [f for f in re.split(f"[{SEPARATORS}]+", text) if f]


def _number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


def is_real_time(expr: str) -> bool:
    """Whether the minute or hour field has an item written with ``*`` or as a range or a step
    over the whole field (``0-59/15``, ``0/15``, ``0-23``): the schedule then follows real time."""
    for index in (0, 1):
        lo, hi = RANGES[index]
        for item in fields_of(expr)[index].split(","):
            base, slash, _ = item.partition("/")
            low, dash, high = base.partition("-")
            if item == "*" or item.startswith("*/"):
                return True
            if dash and _number(low) == lo and _number(high) == hi:
                return True
            if slash and not dash and _number(low) == lo:
                return True
    return False


def _value(token: str, index: int) -> int | None:
    if token.isascii() and token.isdigit():
        return int(token)
    names = MONTHS if index == 3 else WEEKDAYS if index == 4 else ()
    if token in names:
        return names.index(token) + (1 if index == 3 else 0)
    return None


def rewrite_equal_ranges(expr: str) -> str:
    """The expression with every range whose two ends are the same value (``5-5``, ``mon-mon/2``,
    ``mon-mon#2``) written as that one value: what cueapi reads (croniter reads the whole field)."""
    fields = fields_of(expr)
    if len(fields) not in (5, 6, 7) or expr.strip(SEPARATORS).startswith("@"):
        return expr
    out = []
    for index, text in enumerate(fields):
        items = []
        for item in text.split(","):
            suffix = ""
            body = item
            if index == 4 and "#" in item:
                body, _, n = item.partition("#")
                suffix = "#" + n
            m = re.fullmatch(r"([^-/]+)-([^-/]+)(/\d+)?", body)
            if m:
                low, high = m.group(1), m.group(2)
                if index == 2 and high == "l":
                    high = "31"
                a, b = _value(low, index), _value(high, index)
                zero_step = m.group(3) is not None and int(m.group(3)[1:]) == 0
                if a is not None and a == b and not zero_step:
                    item = low + suffix
            items.append(item)
        out.append(",".join(items))
    return " ".join(out)


def deliberate_refusal(expr: str) -> str | None:
    """Why cueapi refuses an expression croniter accepts (README "Schedules"), if it does."""
    if len(expr.encode()) > MAX_CRON_LENGTH:
        return "longer than the cap"
    fields = fields_of(expr)
    if any(len(f.split(",")) > MAX_CRON_LIST_ITEMS for f in fields):
        return "more list items than the cap"
    if any(re.fullmatch(r"r(\(\d+-\d+\))?(/\d+)?", f) for f in fields):
        return "R (random)"
    try:
        c = croniter(oracle_expression(expr), datetime(2025, 1, 1))
    except Exception:
        return None
    nth = c.nth_weekday_of_month
    dom, dow = c.expanded[2], c.expanded[4]
    if dom[0] != "*" and dow[0] != "*" and (nth or c.nearest_weekday):
        return "W/#/L with both day fields restricted"
    if nth and ("*" in dow or set(dow) - set(nth)):
        return "#/L mixed with plain weekdays"
    return None


def oracle_expression(expr: str) -> str:
    """What to ask croniter in place of ``expr``: the equal ranges rewritten, a macro stripped."""
    stripped = expr.strip(SEPARATORS)
    if stripped.lower() in MACROS:
        return stripped
    return rewrite_equal_ranges(expr)


# --- the daylight-saving rule, independently ------------------------------------------------------


def policy_next(expr: str, tz: ZoneInfo, after_ms: int) -> tuple[int | None, bool]:
    """The documented next fire strictly after ``after_ms``, independent of cueapi: croniter matches
    the fields on the naive wall clock; a fixed-time schedule maps each match to its first instant
    (the end of the gap if it has none), a real-time one to every instant it has. Also says
    whether a gap or fold wall time was involved."""
    real = is_real_time(expr)
    oracle = oracle_expression(expr)
    # Wall times that come back after a fold within the next hours may fire again.
    start = min(wall(after_ms, tz), wall(after_ms + 4 * HOUR_MS, tz) - timedelta(hours=4))
    it = croniter(oracle, start - timedelta(microseconds=1) if real else wall(after_ms, tz))
    touched = False
    best: int | None = None
    for _ in range(100_000):
        try:
            local = it.get_next(datetime)
        except CroniterBadDateError:
            return best, touched
        found = instants_of(local, tz)
        if len(found) != 1:
            touched = touched or best is None
        fixed_time = found[:1] if found else [gap_end(local, tz)]
        candidates = found if real else fixed_time
        for c in candidates:
            if c > after_ms and (best is None or c < best):
                best = c
        if best is not None:
            high = max(offset_ms(after_ms, tz), offset_ms(best, tz), offset_ms(after_ms + 4 * HOUR_MS, tz))
            if to_ms(local.replace(tzinfo=UTC)) - high > best:
                return best, touched
    raise AssertionError(f"policy oracle found no fire for {expr!r} after {after_ms}")


@functools.cache
def transitions(zone: str, start_year: int = 2024, end_year: int = 2028) -> tuple[tuple[int, int, int], ...]:
    """UTC-offset changes of ``zone`` between two years: (instant ms, offset before, offset after)."""
    tz = ZoneInfo(zone)
    found = []
    t, end = to_ms(datetime(start_year, 1, 1, tzinfo=UTC)), to_ms(datetime(end_year, 1, 1, tzinfo=UTC))
    step = 6 * HOUR_MS
    off = offset_ms(t, tz)
    while t < end:
        nxt_off = offset_ms(t + step, tz)
        if nxt_off != off:
            lo, hi = t // 1000, (t + step) // 1000
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if offset_ms(mid * 1000, tz) == off:
                    lo = mid
                else:
                    hi = mid
            found.append((hi * 1000, off, nxt_off))
        t, off = t + step, nxt_off
    return tuple(found)


# --- the comparison -------------------------------------------------------------------------------


@dataclass
class Tally:
    expressions: int = 0
    refused_by_both: int = 0
    refused_deliberately: int = 0
    never_fire: int = 0
    steps: int = 0
    dst_deviations: int = 0
    mismatches: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        for name in ("expressions", "refused_by_both", "refused_deliberately", "never_fire", "steps"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.dst_deviations += other.dst_deviations
        self.mismatches += other.mismatches


NAMES_THE_PROBLEM = (" field", "fields;", "macro", "empty cron", "never fires", "bytes long")


def compare(expr: str, zone: str, base: int, steps: int = 5, use_pytz: bool = False) -> Tally:
    """croniter and cueapi on ``expr`` in ``zone`` from ``base`` (UTC ms) for ``steps`` fires."""
    tally = Tally()
    zi = ZoneInfo(zone)
    ctz: tzinfo = pytz.timezone(zone) if use_pytz else zi
    where = f"{zone} {expr!r} base={iso(base, zi)}"
    why = deliberate_refusal(expr)
    try:
        theirs_it: croniter | None = croniter(oracle_expression(expr), aware(base, ctz))
        theirs_error = None
    except Exception as e:
        theirs_it, theirs_error = None, e
    try:
        ours = _cueapi.Schedule(expr, timezone=zone, now_ms=base)
    except cueapi.InvalidScheduleError as e:
        message = str(e)
        if why is not None:
            tally.refused_deliberately += 1
            return tally
        if not any(n in message for n in NAMES_THE_PROBLEM):
            tally.mismatches.append(f"refusal does not say what is wrong: {where}: {message}")
        if theirs_it is None:
            tally.refused_by_both += 1
            return tally
        try:
            theirs_it.get_next(datetime)
        except CroniterBadDateError:
            if "never fires" in message:
                tally.never_fire += 1
                return tally
        tally.mismatches.append(f"refused by cueapi only: {where}: {message}")
        return tally
    if why is not None:
        tally.mismatches.append(f"accepted, though documented as refused ({why}): {where}")
        return tally
    if theirs_it is None:
        tally.mismatches.append(f"refused by croniter only: {where}: {theirs_error!r}")
        return tally
    tally.expressions += 1
    prev = base
    for step in range(steps):
        mine = ours.next_after(prev)
        try:
            theirs: int | None = to_ms(theirs_it.get_next(datetime))
        except CroniterBadDateError:
            theirs = None
        expected, touched = policy_next(expr, zi, prev)
        tally.steps += 1
        at = (
            f"{where} step={step} after={iso(prev, zi)}: "
            f"ours={iso(mine, zi)} croniter={iso(theirs, zi)} rule={iso(expected, zi)}"
        )
        if mine != expected:
            tally.mismatches.append(f"not the documented rule: {at}")
            break
        if mine != theirs:
            dst = (
                touched
                or (theirs is not None and len(instants_of(wall(theirs, zi), zi)) > 1)
                or len(instants_of(wall(prev, zi), zi)) > 1
            )
            if not dst:
                tally.mismatches.append(f"differs from croniter outside DST: {at}")
                break
            tally.dst_deviations += 1
            if mine is not None:
                theirs_it = croniter(oracle_expression(expr), aware(mine, ctz))
        if mine is None:
            break
        assert mine > prev
        prev = mine
    return tally
