"""Schedules checked against croniter, plus focused DST, validation and preview tests.

The oracle test draws cron expressions from a seeded generator (minute/hour/day/month/weekday
fields with ``*``, numbers, ranges, ``*/n``, ``a-b/n``, lists, month and weekday names, weekday
0-7, ``L``, ``#``, macros, and sometimes a trailing seconds field and year field) in eight zones
and compares a chain of successive next-fire times from ``cueapi._cueapi.Schedule.next_after``
with ``croniter(expr, aware_base).get_next(datetime)``.

Deviation policy. cueapi matches cron fields against the wall clock of the zone and maps the
matching wall time to UTC as follows, which croniter deliberately does not always do:

- a wall time that does not exist (spring forward) fires at the first instant after the gap;
  several such wall times collapse into that single firing (croniter skips them instead);
- a wall time that happens twice (fall back) fires once, at its first occurrence, the earlier UTC
  instant; once that wall time has fired, its second occurrence is not fired again (croniter
  fires both occurrences).

A step where cueapi and croniter disagree counts as a deliberate DST deviation only when the
disagreement involves a gap or a fold of that zone: a wall time the cron fields match between
the previous fire and the expected one does not exist or is ambiguous, or croniter's answer (or
the previous fire) sits at an ambiguous wall time. Such a step must then equal the documented
policy, computed independently here: croniter matches the fields against the naive wall clock
(no zone, so no DST handling) and each match is mapped to UTC by the rules above, skipping
matches whose instant is not after the previous fire. Every other step must agree with croniter
exactly, and every step (agreeing or not) must equal the policy.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from itertools import pairwise
from zoneinfo import ZoneInfo

import cueapi
import pytest
import pytz
from croniter import CroniterBadDateError, croniter
from cueapi import _cueapi

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)

DST_ZONES = (
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Pacific/Auckland",
    "Europe/Berlin",
)
FIXED_ZONES = ("UTC", "Asia/Kolkata", "America/Sao_Paulo")  # no transitions in 2024-2027
ZONES = DST_ZONES + FIXED_ZONES
EXPRESSIONS_PER_ZONE = 260  # 8 zones x 260 = 2,080 expressions
CHAIN = 5  # successive next-fire times compared per expression
SPAN_START = datetime(2024, 1, 1, tzinfo=UTC)
SPAN_END = datetime(2028, 1, 1, tzinfo=UTC)

MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DOW_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
MACROS = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")


# --- time helpers -------------------------------------------------------------------------------


def to_ms(dt: datetime) -> int:
    return (dt - EPOCH) // MS


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def aware(ms: int, tz: tzinfo) -> datetime:
    return (EPOCH + ms * MS).astimezone(tz)


def wall(ms: int, tz: tzinfo) -> datetime:
    """The naive wall-clock time of an instant in a zone."""
    return aware(ms, tz).replace(tzinfo=None)


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


def policy_instant(local: datetime, tz: ZoneInfo) -> tuple[int, bool]:
    """The documented mapping of a matched wall time to UTC, and whether it is in a gap or fold."""
    found = instants_of(local, tz)
    if not found:
        return gap_end(local, tz), True
    return found[0], len(found) > 1


def policy_next(expr: str, tz: ZoneInfo, after_ms: int) -> tuple[int, bool]:
    """The documented next fire strictly after ``after_ms``, independent of cueapi: croniter
    matches the fields on the naive wall clock and each match is mapped by :func:`policy_instant`;
    a match mapped to an instant not after ``after_ms`` (a repeated wall time whose first occurrence
    is already past) is skipped. Also says whether any gap or fold wall time was involved."""
    it = croniter(expr, wall(after_ms, tz))
    touched = False
    for _ in range(100_000):
        instant, special = policy_instant(it.get_next(datetime), tz)
        touched = touched or special
        if instant > after_ms:
            return instant, touched
    raise AssertionError(f"policy oracle found no fire for {expr!r} after {after_ms}")


@functools.cache
def transitions(zone: str) -> tuple[tuple[int, timedelta, timedelta], ...]:
    """UTC-offset changes of ``zone`` in 2024-2027: (instant ms, offset before, offset after)."""
    tz = ZoneInfo(zone)
    found = []
    t, step = SPAN_START, timedelta(hours=6)
    off = t.astimezone(tz).utcoffset()
    while t < SPAN_END:
        nxt = t + step
        nxt_off = nxt.astimezone(tz).utcoffset()
        if nxt_off != off:
            lo, hi = to_ms(t) // 1000, to_ms(nxt) // 1000  # whole seconds
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if aware(mid * 1000, tz).utcoffset() == off:
                    lo = mid
                else:
                    hi = mid
            assert off is not None and nxt_off is not None
            found.append((hi * 1000, off, nxt_off))
        t, off = nxt, nxt_off
    return tuple(found)


def affected_hours(zone: str, transition: tuple[int, timedelta, timedelta]) -> list[int]:
    """The wall-clock hours that are skipped or repeated at a transition."""
    instant, before, after = transition
    start = EPOCH.replace(tzinfo=None) + instant * MS + min(before, after)
    end = EPOCH.replace(tzinfo=None) + instant * MS + max(before, after) - timedelta(seconds=1)
    hours, t = [], start.replace(minute=0, second=0)
    while t <= end:
        hours.append(t.hour)
        t += timedelta(hours=1)
    return hours


# --- expression generator -----------------------------------------------------------------------


def render(value: int, names: tuple[str, ...] | None, offset: int, use_names: bool) -> str:
    index = value - offset
    if use_names and names is not None and 0 <= index < len(names):
        return names[index]
    return str(value)


def gen_field(
    rng: random.Random,
    lo: int,
    hi: int,
    *,
    star: float,
    names: tuple[str, ...] | None = None,
    name_offset: int = 0,
    must: int | None = None,
) -> str:
    """One cron field over ``lo..hi``: ``*``, or a list of numbers, ranges and steps."""
    if rng.random() < star:
        return "*"
    use_names = names is not None and rng.random() < 0.4
    parts: list[str] = []
    values: set[int] = set()
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
        kind = rng.random()
        if kind < 0.4:
            v = rng.randint(lo, hi)
            parts.append(render(v, names, name_offset, use_names))
            values.add(v)
        elif kind < 0.65:
            a = rng.randint(lo, hi - 1)
            b = rng.randint(a + 1, hi)
            named = use_names and all(0 <= v - name_offset < len(names or ()) for v in (a, b))
            parts.append(f"{render(a, names, name_offset, named)}-{render(b, names, name_offset, named)}")
            values.update(range(a, b + 1))
        elif kind < 0.85:
            n = rng.randint(2, max(2, (hi - lo) // 2))
            parts.append(f"*/{n}")
            values.update(range(lo, hi + 1, n))
        else:
            a = rng.randint(lo, hi - 1)
            b = rng.randint(a + 1, hi)
            n = rng.randint(1, max(1, b - a))
            parts.append(f"{a}-{b}/{n}")
            values.update(range(a, b + 1, n))
    if must is not None and must not in values:
        parts.append(str(must))
    return ",".join(parts)


@dataclass(frozen=True)
class Near:
    """Values that make an expression fire around a transition: the skipped or repeated hour and
    the local date of the transition."""

    hour: int
    day: int
    month: int
    dow: int


def gen_expression(rng: random.Random, *, near: Near | None, year: int) -> str:
    if rng.random() < 0.02:
        return rng.choice(MACROS)
    # Near a transition, the date fields mostly allow the transition's date.
    date_star = 0.85 if near else 0.0
    minute = gen_field(rng, 0, 59, star=0.15)
    hour = gen_field(rng, 0, 23, star=0.3, must=near and near.hour)
    r = rng.random()
    if r < 0.03:
        dom = "L"
    elif r < 0.65 or rng.random() < date_star:
        dom = "*"
    else:
        dom = gen_field(rng, 1, 31, star=0.0, must=near and near.day)
    month = gen_field(
        rng, 1, 12, star=max(0.6, date_star), names=MONTH_NAMES, name_offset=1, must=near and near.month
    )
    if dom == "*" and rng.random() < 0.05:
        # croniter reads '#' combined with a restricted day-of-month as AND; cueapi uses OR, as
        # for every other DOM/DOW pair, so '#' is only generated with '*' in day-of-month.
        dow = f"{rng.randint(0, 6)}#{rng.randint(1, 5)}"
    else:
        dow = gen_field(rng, 0, 7, star=max(0.6, date_star), names=DOW_NAMES, must=near and near.dow)
    fields = [minute, hour, dom, month, dow]
    if rng.random() < 0.12:
        fields.append(gen_field(rng, 0, 59, star=0.2))
        if rng.random() < 0.2:
            fields.append(rng.choice(("*", f"{year}-{year + 4}", f"{year},{year + 1},{year + 3}")))
    return " ".join(fields)


# --- oracle ---------------------------------------------------------------------------------------


@dataclass
class OracleResult:
    expressions: int = 0
    steps: int = 0
    deviations: int = 0
    never_fire: int = 0
    mismatches: list[str] = field(default_factory=list)


def iso(ms: int | None, tz: tzinfo) -> str:
    return "None" if ms is None else f"{aware(ms, tz).isoformat()} ({aware(ms, UTC):%Y-%m-%dT%H:%M:%SZ})"


def pick_base(rng: random.Random, zone: str) -> tuple[int, Near | None]:
    """A base instant: often within a few hours of a transition of the zone (mostly before it,
    sometimes just after, i.e. inside a repeated hour), else anywhere in 2024-2027."""
    trans = transitions(zone)
    if trans and rng.random() < 0.45:
        chosen = rng.choice(trans)
        offset_s = rng.randint(-4 * 3600, 3600) if rng.random() < 0.2 else rng.randint(-5 * 3600, -60)
        if rng.random() < 0.6:
            offset_s -= offset_s % 60
        local = wall(chosen[0] - 1000, ZoneInfo(zone))
        near = Near(rng.choice(affected_hours(zone, chosen)), local.day, local.month, local.isoweekday() % 7)
        return chosen[0] + offset_s * 1000, (near if rng.random() < 0.7 else None)
    start, end = to_ms(SPAN_START) // 1000, to_ms(SPAN_END) // 1000
    base_s = rng.randint(start, end)
    if rng.random() < 0.7:
        base_s -= base_s % 60
    return base_s * 1000, None


def run_oracle(zone: str, seed: int) -> OracleResult:
    rng = random.Random(seed)
    zi = ZoneInfo(zone)
    result = OracleResult()
    while result.expressions < EXPRESSIONS_PER_ZONE:
        base, near = pick_base(rng, zone)
        expr = gen_expression(rng, near=near, year=aware(base, UTC).year)
        # croniter with zoneinfo (fold-aware) most of the time, pytz-localized sometimes.
        ctz: tzinfo = pytz.timezone(zone) if rng.random() < 0.25 else zi
        try:
            native = _cueapi.Schedule(expr, timezone=zone, now_ms=base)
        except cueapi.InvalidScheduleError as e:
            try:
                croniter(expr, aware(base, zi)).get_next(datetime)
            except CroniterBadDateError:
                if "never fires" in str(e):
                    result.never_fire += 1  # both agree that it never fires
                    continue
            result.mismatches.append(f"rejected by cueapi only: {zone} {expr!r} base={iso(base, zi)}: {e}")
            continue
        result.expressions += 1
        try:
            theirs_it = croniter(expr, aware(base, ctz))
        except ValueError as e:
            result.mismatches.append(f"rejected by croniter only: {zone} {expr!r}: {e!r}")
            continue
        prev = base
        for step in range(CHAIN):
            ours = native.next_after(prev)
            theirs = to_ms(theirs_it.get_next(datetime))
            expected, touched = policy_next(expr, zi, prev)
            result.steps += 1
            where = (
                f"{zone} {expr!r} base={iso(base, zi)} step={step} after={iso(prev, zi)}: "
                f"ours={iso(ours, zi)} croniter={iso(theirs, zi)} policy={iso(expected, zi)}"
            )
            if ours == theirs:
                if ours != expected:
                    result.mismatches.append("agrees with croniter but not the policy: " + where)
                    break
            else:
                dst = (
                    touched
                    or len(instants_of(wall(theirs, zi), zi)) > 1
                    or len(instants_of(wall(prev, zi), zi)) > 1
                )
                if not (dst and ours == expected):
                    kind = "DST step not following the policy" if dst else "mismatch outside DST"
                    result.mismatches.append(f"{kind}: {where}")
                    break
                result.deviations += 1
                theirs_it = croniter(expr, aware(ours, ctz))  # resynchronise croniter on our fire
            assert ours is not None and ours > prev
            prev = ours
    return result


@pytest.mark.parametrize("zone", ZONES)
def test_next_fire_matches_croniter_except_documented_dst_policy(
    zone: str, record_property: pytest.RecordProperty
) -> None:
    result = run_oracle(zone, seed=20240101 + ZONES.index(zone))
    record_property("expressions", result.expressions)
    record_property("steps", result.steps)
    record_property("dst_deviations", result.deviations)
    assert not result.mismatches, f"{len(result.mismatches)} mismatches:\n" + "\n".join(result.mismatches)
    assert result.expressions == EXPRESSIONS_PER_ZONE
    assert result.steps == EXPRESSIONS_PER_ZONE * CHAIN
    if zone in DST_ZONES:
        assert transitions(zone), zone
        assert result.deviations > 0, "the generator no longer reaches any DST gap or fold"
    else:
        assert not transitions(zone), zone
        assert result.deviations == 0


def test_policy_helpers_know_the_transitions() -> None:
    ny = ZoneInfo("America/New_York")
    assert instants_of(datetime(2026, 3, 8, 2, 30), ny) == []
    assert gap_end(datetime(2026, 3, 8, 2, 30), ny) == to_ms(utc("2026-03-08T07:00:00Z"))
    assert instants_of(datetime(2026, 11, 1, 1, 30), ny) == [
        to_ms(utc("2026-11-01T05:30:00Z")),
        to_ms(utc("2026-11-01T06:30:00Z")),
    ]
    assert [t[0] for t in transitions("America/New_York")][:2] == [
        to_ms(utc("2024-03-10T07:00:00Z")),
        to_ms(utc("2024-11-03T06:00:00Z")),
    ]
    assert affected_hours("Australia/Lord_Howe", transitions("Australia/Lord_Howe")[0]) == [1]
    assert len(transitions("Europe/Berlin")) == 8


@pytest.mark.parametrize(
    "expr",
    [
        "0 0 1,16,31 * 0-6",  # both restricted, no '*': OR, every day
        "0 0 13 * */1",
        "0 0 */15 * 1",
        "0 0 L * 3",
        "0 0 * * 5#2",
        # croniter treats a field listing every value as '*' when the other day field contains a
        # '*' (so DOM AND DOW): these fire only on the days the other field names.
        "0 0 */15 * 0-6",
        "0 0 */15 * SUN-SAT",
        "0 0 1-31 * */2",
        "0 0 */1 * */2",
    ],
)
def test_day_of_month_or_day_of_week_like_croniter(expr: str) -> None:
    base = utc("2025-08-14T13:18:00Z")
    it = croniter(expr, base)
    theirs = [it.get_next(datetime).isoformat() for _ in range(6)]
    native = _cueapi.Schedule(expr, timezone="UTC", now_ms=to_ms(base))
    ours = [aware(ms, UTC).isoformat() for ms in s_chain(native, to_ms(base), 6)]
    assert ours == theirs


# --- focused DST tests (public API) -------------------------------------------------------------


def next_utc(schedule: cueapi.Schedule, after: str) -> datetime | None:
    """``next_after`` as UTC: a zoneinfo datetime at an ambiguous wall time never compares equal to
    a datetime in another zone (PEP 495), so comparisons are made in UTC."""
    nxt = schedule.next_after(utc(after))
    if nxt is not None:
        assert isinstance(nxt.tzinfo, ZoneInfo) and nxt.tzinfo.key == schedule.timezone
    return None if nxt is None else nxt.astimezone(UTC)


def fires(schedule: cueapi.Schedule, after: str, n: int) -> list[datetime]:
    out = schedule.preview(n, after=utc(after))
    assert len(out) == n
    assert all(a < b for a, b in pairwise(out)), out
    assert len({to_ms(d) for d in out}) == n
    return out


def test_new_york_spring_forward_fires_at_end_of_gap() -> None:
    s = cueapi.Schedule("30 2 * * *", timezone="America/New_York")
    assert next_utc(s, "2026-03-08T05:00:00Z") == utc("2026-03-08T07:00:00Z")
    local = s.next_after(utc("2026-03-08T05:00:00Z"))
    assert local is not None and local.utcoffset() == timedelta(hours=-4)
    assert (local.hour, local.minute) == (3, 0)
    assert fires(s, "2026-03-07T00:00:00Z", 3) == [
        utc("2026-03-07T07:30:00Z"),
        utc("2026-03-08T07:00:00Z"),
        utc("2026-03-09T06:30:00Z"),
    ]


def test_new_york_fall_back_fires_once_at_first_occurrence() -> None:
    s = cueapi.Schedule("30 1 * * *", timezone="America/New_York")
    assert next_utc(s, "2026-11-01T04:00:00Z") == utc("2026-11-01T05:30:00Z")
    assert next_utc(s, "2026-11-01T05:30:00Z") == utc("2026-11-02T06:30:00Z")
    # Starting inside the repeated hour, after the first 01:30 has passed: not fired again.
    assert next_utc(s, "2026-11-01T06:00:00Z") == utc("2026-11-02T06:30:00Z")
    out = fires(s, "2026-10-31T00:00:00Z", 3)
    assert out == [utc("2026-10-31T05:30:00Z"), utc("2026-11-01T05:30:00Z"), utc("2026-11-02T06:30:00Z")]
    assert [d.utcoffset() for d in out] == [timedelta(hours=-4)] * 2 + [timedelta(hours=-5)]


def test_london_gap_and_fold() -> None:
    s = cueapi.Schedule("30 1 * * *", timezone="Europe/London")
    # 2026-03-29 01:00 GMT -> 02:00 BST: 01:30 does not exist and fires at 02:00 BST.
    assert fires(s, "2026-03-28T00:00:00Z", 3) == [
        utc("2026-03-28T01:30:00Z"),
        utc("2026-03-29T01:00:00Z"),
        utc("2026-03-30T00:30:00Z"),
    ]
    # 2026-10-25 02:00 BST -> 01:00 GMT: 01:30 happens twice and fires at the BST one.
    assert fires(s, "2026-10-24T00:00:00Z", 3) == [
        utc("2026-10-24T00:30:00Z"),
        utc("2026-10-25T00:30:00Z"),
        utc("2026-10-26T01:30:00Z"),
    ]


def test_lord_howe_half_hour_shift() -> None:
    lh = ZoneInfo("Australia/Lord_Howe")
    # 2026-10-04 02:00 +10:30 -> 02:30 +11:00.
    assert instants_of(datetime(2026, 10, 4, 2, 15), lh) == []
    gap = cueapi.Schedule("15 2 * * *", timezone="Australia/Lord_Howe")
    out = fires(gap, "2026-10-02T12:00:00Z", 3)
    assert out == [utc("2026-10-02T15:45:00Z"), utc("2026-10-03T15:30:00Z"), utc("2026-10-04T15:15:00Z")]
    assert [d.utcoffset() for d in out] == [timedelta(hours=10, minutes=30)] + [timedelta(hours=11)] * 2
    # 2026-04-05 02:00 +11:00 -> 01:30 +10:30: 01:45 happens twice and fires once, at +11:00.
    fold = cueapi.Schedule("45 1 * * *", timezone="Australia/Lord_Howe")
    assert fires(fold, "2026-04-03T12:00:00Z", 3) == [
        utc("2026-04-03T14:45:00Z"),
        utc("2026-04-04T14:45:00Z"),
        utc("2026-04-05T15:15:00Z"),
    ]
    # Every 10 minutes across the fold: 01:30..01:50 are not fired a second time.
    every10 = cueapi.Schedule("*/10 * * * *", timezone="Australia/Lord_Howe")
    out = fires(every10, "2026-04-04T14:35:00Z", 4)
    assert out == [
        utc("2026-04-04T14:40:00Z"),
        utc("2026-04-04T14:50:00Z"),
        utc("2026-04-04T15:30:00Z"),  # 02:00 +10:30
        utc("2026-04-04T15:40:00Z"),
    ]


def test_every_15_minutes_across_gap_collapses_into_one_firing() -> None:
    s = cueapi.Schedule("*/15 * * * *", timezone="America/New_York")
    out = fires(s, "2026-03-08T06:20:00Z", 5)  # 01:20 EST
    # 02:00, 02:15, 02:30 and 02:45 do not exist: one firing at 03:00 EDT, none of them twice.
    assert out == [
        utc("2026-03-08T06:30:00Z"),
        utc("2026-03-08T06:45:00Z"),
        utc("2026-03-08T07:00:00Z"),
        utc("2026-03-08T07:15:00Z"),
        utc("2026-03-08T07:30:00Z"),
    ]
    # Minute 5 every hour: 02:05 collapses to 03:00 EDT, then 03:05 EDT fires as usual.
    hourly = cueapi.Schedule("5 * * * *", timezone="America/New_York")
    assert fires(hourly, "2026-03-08T06:00:00Z", 3) == [
        utc("2026-03-08T06:05:00Z"),
        utc("2026-03-08T07:00:00Z"),
        utc("2026-03-08T07:05:00Z"),
    ]


def test_every_15_minutes_across_fold_fires_no_wall_time_twice() -> None:
    s = cueapi.Schedule("*/15 * * * *", timezone="America/New_York")
    out = fires(s, "2026-11-01T05:20:00Z", 6)  # 01:20 EDT
    assert out == [
        utc("2026-11-01T05:30:00Z"),
        utc("2026-11-01T05:45:00Z"),
        utc("2026-11-01T07:00:00Z"),  # 02:00 EST; 01:00..01:45 EST already fired as EDT
        utc("2026-11-01T07:15:00Z"),
        utc("2026-11-01T07:30:00Z"),
        utc("2026-11-01T07:45:00Z"),
    ]
    walls = [d.replace(tzinfo=None) for d in out]
    assert len(set(walls)) == len(walls)


def test_berlin_and_auckland_transitions() -> None:
    berlin = cueapi.Schedule("30 2 * * *", timezone="Europe/Berlin")
    assert next_utc(berlin, "2026-03-28T23:00:00Z") == utc("2026-03-29T01:00:00Z")  # 03:00 CEST
    assert next_utc(berlin, "2026-10-24T23:00:00Z") == utc("2026-10-25T00:30:00Z")  # 02:30 CEST
    assert next_utc(berlin, "2026-10-25T00:30:00Z") == utc("2026-10-26T01:30:00Z")
    # Auckland: 2026-09-27 02:00 NZST -> 03:00 NZDT; 2026-04-05 03:00 NZDT -> 02:00 NZST.
    akl = cueapi.Schedule("30 2 * * *", timezone="Pacific/Auckland")
    assert next_utc(akl, "2026-09-26T12:00:00Z") == utc("2026-09-26T14:00:00Z")
    assert next_utc(akl, "2026-04-04T12:00:00Z") == utc("2026-04-04T13:30:00Z")
    assert next_utc(akl, "2026-04-04T13:30:00Z") == utc("2026-04-05T14:30:00Z")


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "needles"),
    [
        ({"cron": "61 * * * *"}, ("invalid cron expression", "61 * * * *")),
        ({"cron": "* * *"}, ("3 fields", "expected 5")),
        ({"cron": "* * * * * * * *"}, ("8 fields", "expected 5")),
        ({"cron": ""}, ("empty cron expression",)),
        ({"cron": "@often"}, ("unknown cron macro", "@often")),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, ("unknown time zone", "Mars/Olympus")),
        ({"every": "5m", "timezone": "Not/AZone"}, ("unknown time zone", "Not/AZone")),
        ({"cron": "0 0 31 2 *"}, ("never fires", "0 0 31 2 *")),
        ({"at": "2000-01-01T00:00:00Z"}, ("in the past", "2000-01-01")),
        ({"at": "tomorrow"}, ("invalid time", "tomorrow")),
        ({"every": ""}, ("invalid interval",)),
        ({"every": "5"}, ("invalid interval", '"5"')),
        ({"every": "0s"}, ("shorter than one second", "0s")),
        ({"every": "5x"}, ("invalid interval", "5x")),
        ({}, ("exactly one of",)),
        ({"cron": "* * * * *", "every": "5m"}, ("exactly one of",)),
        ({"cron": "* * * * *", "at": "2099-01-01T00:00:00Z"}, ("exactly one of",)),
        ({"every": "5m", "at": "2099-01-01T00:00:00Z"}, ("exactly one of",)),
    ],
)
def test_invalid_schedules_raise_with_a_clear_message(
    kwargs: dict[str, str], needles: tuple[str, ...]
) -> None:
    with pytest.raises(cueapi.InvalidScheduleError) as info:
        cueapi.Schedule(**kwargs)
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    assert isinstance(info.value, cueapi.ValidationError)
    assert isinstance(info.value, ValueError)


def test_native_validation_uses_the_given_now() -> None:
    now = to_ms(utc("2026-06-01T00:00:00Z"))
    with pytest.raises(cueapi.InvalidScheduleError, match="in the past"):
        _cueapi.Schedule(None, at="2026-05-31T23:59:59Z", timezone="UTC", now_ms=now)
    once = _cueapi.Schedule(None, at="2026-06-01T00:00:01Z", timezone="UTC", now_ms=now)
    assert once.next_after(now) == now + 1000
    with pytest.raises(cueapi.InvalidScheduleError, match="never fires"):
        _cueapi.Schedule("0 0 1 1 * 0 2025", timezone="UTC", now_ms=now)


# --- every / at / describe / preview --------------------------------------------------------------


@pytest.mark.parametrize(
    ("every", "seconds"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("1d", 86400)],
)
def test_every_adds_the_interval(every: str, seconds: int) -> None:
    s = cueapi.Schedule(every=every, timezone="Europe/London")
    t = utc("2026-03-29T00:59:00Z")  # just before the London spring-forward: intervals ignore it
    assert s.next_after(t) == t + timedelta(seconds=seconds)
    native = _cueapi.Schedule(None, every=every, timezone="UTC", now_ms=0)
    assert native.next_after(123_456) == 123_456 + seconds * 1000


def test_at_without_offset_is_wall_time_in_the_zone() -> None:
    s = cueapi.Schedule(at="2099-07-01T12:00:00", timezone="Europe/Paris")
    assert next_utc(s, "2099-01-01T00:00:00Z") == utc("2099-07-01T10:00:00Z")
    assert next_utc(s, "2099-07-01T10:00:00Z") is None
    with_offset = cueapi.Schedule(at="2099-07-01T12:00:00+00:00", timezone="Europe/Paris")
    assert next_utc(with_offset, "2099-01-01T00:00:00Z") == utc("2099-07-01T12:00:00Z")
    dt = cueapi.Schedule(at=datetime(2099, 1, 2, 3, 4, tzinfo=UTC))
    assert dt.preview(3, after=utc("2099-01-01T00:00:00Z")) == [utc("2099-01-02T03:04:00Z")]


def test_describe_is_human_text() -> None:
    texts = [
        cueapi.Schedule("*/15 9-17 * * MON-FRI", timezone="Europe/Paris").describe(),
        cueapi.Schedule("@hourly").describe(),
        cueapi.Schedule(every="1h30m").describe(),
        cueapi.Schedule(at="2099-07-01T12:00:00", timezone="Europe/Paris").describe(),
    ]
    for text in texts:
        assert isinstance(text, str) and text.strip() and any(c.isalpha() for c in text), text
    assert "Europe/Paris" in texts[0]
    assert "hour" in texts[2] and "30 minutes" in texts[2]
    assert texts[3].startswith("once") and "2099-07-01" in texts[3]


def test_preview_is_increasing_with_the_zone_offsets_across_dst() -> None:
    s = cueapi.Schedule("0 12 * * *", timezone="Europe/Berlin")
    out = s.preview(4, after=utc("2026-03-27T00:00:00Z"))
    assert len(out) == 4
    assert all(a < b for a, b in pairwise(out))
    assert all(d.tzinfo is not None for d in out)
    assert [(d.day, d.hour) for d in out] == [(27, 12), (28, 12), (29, 12), (30, 12)]
    assert [d.utcoffset() for d in out] == [timedelta(hours=1)] * 2 + [timedelta(hours=2)] * 2
    berlin = ZoneInfo("Europe/Berlin")
    assert all(d.utcoffset() == d.astimezone(berlin).utcoffset() for d in out)
    default = cueapi.Schedule("* * * * *").preview()
    assert len(default) == 5 and all(d.utcoffset() == timedelta(0) for d in default)
    assert all(a < b for a, b in pairwise(default))


def test_native_preview_pairs_ms_with_local_iso() -> None:
    s = _cueapi.Schedule("30 1 * * *", timezone="America/New_York", now_ms=0)
    after = to_ms(utc("2026-10-31T00:00:00Z"))
    pairs = s.preview(3, after)
    assert [ms for ms, _ in pairs] == s_chain(s, after, 3)
    for ms, text in pairs:
        parsed = datetime.fromisoformat(text)
        assert to_ms(parsed) == ms
        assert parsed.utcoffset() == aware(ms, ZoneInfo("America/New_York")).utcoffset()


def s_chain(s: _cueapi.Schedule, after: int, n: int) -> list[int]:
    out = []
    for _ in range(n):
        nxt = s.next_after(after)
        assert nxt is not None
        out.append(nxt)
        after = nxt
    return out
