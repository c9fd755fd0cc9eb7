"""Schedules checked against croniter, plus validation, interval, one-shot and preview tests.

The oracle test draws cron expressions from a seeded generator (minute/hour/day/month/weekday
fields with ``*``, numbers, ranges, ``*/n``, ``a-b/n``, lists, month and weekday names, weekday
0-7, ``L``, ``#``, macros, and sometimes a trailing seconds field and year field) in eight zones,
often with fields that hit a daylight-saving change of the zone, and compares a chain of
successive next-fire times with croniter through ``tests/cron_oracle.py``: every step must equal
croniter's except where a gap or fold is involved, and every step must follow the documented
daylight-saving rule (computed there independently). The focused daylight-saving tests are in
``tests/test_schedule_dst.py``; the hand-picked and generated spellings in
``tests/test_cron_differential.py``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import cueapi
import pytest
from croniter import croniter
from cueapi import _cueapi

from tests.cron_oracle import (
    EPOCH,
    MS,
    UTC,
    Tally,
    aware,
    compare,
    gap_end,
    instants_of,
    to_ms,
    transitions,
    wall,
)

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


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def affected_hours(zone: str, transition: tuple[int, int, int]) -> list[int]:
    """The wall-clock hours that are skipped or repeated at a transition."""
    instant, before, after = transition
    start = EPOCH.replace(tzinfo=None) + (instant + min(before, after)) * MS
    end = EPOCH.replace(tzinfo=None) + (instant + max(before, after)) * MS - timedelta(seconds=1)
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


def run_oracle(zone: str, seed: int) -> Tally:
    rng = random.Random(seed)
    result = Tally()
    while result.expressions < EXPRESSIONS_PER_ZONE:
        base, near = pick_base(rng, zone)
        expr = gen_expression(rng, near=near, year=aware(base, UTC).year)
        # croniter with zoneinfo (fold-aware) most of the time, pytz-localized sometimes.
        result.add(compare(expr, zone, base, steps=CHAIN, use_pytz=rng.random() < 0.25))
        if result.mismatches:
            break
    return result


@pytest.mark.parametrize("zone", ZONES)
def test_next_fire_matches_croniter_except_documented_dst_policy(
    zone: str, record_property: pytest.RecordProperty
) -> None:
    result = run_oracle(zone, seed=20240101 + ZONES.index(zone))
    record_property("expressions", result.expressions)
    record_property("steps", result.steps)
    record_property("dst_deviations", result.dst_deviations)
    assert not result.mismatches, f"{len(result.mismatches)} mismatches:\n" + "\n".join(result.mismatches)
    assert result.expressions == EXPRESSIONS_PER_ZONE
    assert result.steps == EXPRESSIONS_PER_ZONE * CHAIN
    if zone in DST_ZONES:
        assert transitions(zone), zone
        assert result.dst_deviations > 0, "the generator no longer reaches any DST gap or fold"
    else:
        assert not transitions(zone), zone
        assert result.dst_deviations == 0


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


def next_utc(schedule: cueapi.Schedule, after: str) -> datetime | None:
    """``next_after`` as UTC: a zoneinfo datetime at an ambiguous wall time never compares equal to
    a datetime in another zone (PEP 495), so comparisons are made in UTC."""
    nxt = schedule.next_after(utc(after))
    if nxt is not None:
        assert isinstance(nxt.tzinfo, ZoneInfo) and nxt.tzinfo.key == schedule.timezone
    return None if nxt is None else nxt.astimezone(UTC)


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
