"""The daylight-saving rule (Vixie cron's), in several zones, through ``preview()`` and through the
engine on a manual clock.

- A schedule with **fixed wall times** (minute and hour fields plain values, lists or partial
  ranges) fires once when its wall time happens twice (the first occurrence) and at the end of the
  gap when it does not happen at all.
- A schedule whose minute or hour field is a **wildcard** (``*``, ``*/n``, or a range or step over
  the whole field such as ``0-59/15``) follows real time: it fires in both occurrences of a
  repeated hour, and wall times inside a gap simply do not occur.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import cueapi
import pytest

from tests.conftest import wait_for
from tests.cron_oracle import instants_of

UTC = timezone.utc


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# (zone, expression, after (UTC), the fire times as local ISO-8601 with their offsets)
CASES = [
    # New York, fall back 2026-11-01 02:00 EDT -> 01:00 EST: 01:00-01:59 happens twice.
    (
        "America/New_York",
        "*/15 * * * *",
        "2026-11-01T04:50:00Z",
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:15:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:45:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T01:15:00-05:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-01T01:45:00-05:00",
            "2026-11-01T02:00:00-05:00",
            "2026-11-01T02:15:00-05:00",
        ],
    ),
    (
        "America/New_York",
        "0-59/15 1 * * *",  # a step over the whole minute field counts as a wildcard
        "2026-11-01T04:50:00Z",
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:15:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:45:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T01:15:00-05:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-01T01:45:00-05:00",
            "2026-11-02T01:00:00-05:00",
        ],
    ),
    (
        "America/New_York",
        "5-59/15 1 * * *",  # a step over part of the field names fixed times
        "2026-11-01T04:50:00Z",
        [
            "2026-11-01T01:05:00-04:00",
            "2026-11-01T01:20:00-04:00",
            "2026-11-01T01:35:00-04:00",
            "2026-11-01T01:50:00-04:00",
            "2026-11-02T01:05:00-05:00",
        ],
    ),
    (
        "America/New_York",
        "30 1 * * *",
        "2026-11-01T04:50:00Z",
        ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"],
    ),
    (
        "America/New_York",
        "0 * * * *",  # hourly: every real hour
        "2026-11-01T04:50:00Z",
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T02:00:00-05:00",
            "2026-11-01T03:00:00-05:00",
        ],
    ),
    (
        "America/New_York",
        "0,30 1-2 * * *",
        "2026-11-01T04:50:00Z",
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T02:00:00-05:00",
            "2026-11-01T02:30:00-05:00",
            "2026-11-02T01:00:00-05:00",
        ],
    ),
    # New York, spring forward 2026-03-08 02:00 EST -> 03:00 EDT: 02:00-02:59 does not happen.
    (
        "America/New_York",
        "*/15 * * * *",
        "2026-03-08T06:40:00Z",
        ["2026-03-08T01:45:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T03:15:00-04:00"],
    ),
    (
        "America/New_York",
        "30 2 * * *",
        "2026-03-08T06:40:00Z",
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"],
    ),
    (
        "America/New_York",
        "0,30 2-3 * * *",  # 02:00 and 02:30 collapse into the end of the gap, which is 03:00 too
        "2026-03-08T06:40:00Z",
        ["2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00", "2026-03-09T02:00:00-04:00"],
    ),
    (
        "America/New_York",
        "5 * * * *",
        "2026-03-08T06:40:00Z",
        ["2026-03-08T03:05:00-04:00", "2026-03-08T04:05:00-04:00"],
    ),
    (
        "America/New_York",
        "5 2 * * *",
        "2026-03-08T06:40:00Z",
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:05:00-04:00"],
    ),
    # Lord Howe, a 30-minute change. 2026-04-05 02:00 +11 -> 01:30 +10:30.
    (
        "Australia/Lord_Howe",
        "*/10 * * * *",
        "2026-04-04T14:35:00Z",
        [
            "2026-04-05T01:40:00+11:00",
            "2026-04-05T01:50:00+11:00",
            "2026-04-05T01:30:00+10:30",
            "2026-04-05T01:40:00+10:30",
            "2026-04-05T01:50:00+10:30",
            "2026-04-05T02:00:00+10:30",
            "2026-04-05T02:10:00+10:30",
        ],
    ),
    (
        "Australia/Lord_Howe",
        "45 1 * * *",
        "2026-04-04T14:35:00Z",
        ["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"],
    ),
    # 2026-10-04 02:00 +10:30 -> 02:30 +11.
    (
        "Australia/Lord_Howe",
        "*/10 * * * *",
        "2026-10-03T15:00:00Z",
        [
            "2026-10-04T01:40:00+10:30",
            "2026-10-04T01:50:00+10:30",
            "2026-10-04T02:30:00+11:00",
            "2026-10-04T02:40:00+11:00",
        ],
    ),
    (
        "Australia/Lord_Howe",
        "15 2 * * *",
        "2026-10-03T15:00:00Z",
        ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"],
    ),
    # Sydney (southern hemisphere): 2026-04-05 03:00 AEDT -> 02:00 AEST; 2026-10-04 02:00 -> 03:00.
    (
        "Australia/Sydney",
        "*/30 2 * * *",
        "2026-04-04T15:10:00Z",
        [
            "2026-04-05T02:30:00+11:00",
            "2026-04-05T02:00:00+10:00",
            "2026-04-05T02:30:00+10:00",
            "2026-04-06T02:00:00+10:00",
        ],
    ),
    (
        "Australia/Sydney",
        "30 2 * * *",
        "2026-04-04T15:10:00Z",
        ["2026-04-05T02:30:00+11:00", "2026-04-06T02:30:00+10:00"],
    ),
    (
        "Australia/Sydney",
        "30 2 * * *",
        "2026-10-03T15:00:00Z",
        ["2026-10-04T03:00:00+11:00", "2026-10-05T02:30:00+11:00"],
    ),
    (
        "Australia/Sydney",
        "*/30 * * * *",
        "2026-10-03T15:00:00Z",
        ["2026-10-04T01:30:00+10:00", "2026-10-04T03:00:00+11:00", "2026-10-04T03:30:00+11:00"],
    ),
    # Santiago changes at midnight: 2026-09-06 00:00 -04 -> 01:00 -03; 2026-04-05 00:00 -03 ->
    # 2026-04-04 23:00 -04.
    (
        "America/Santiago",
        "0 0 * * *",
        "2026-09-06T03:00:00Z",
        ["2026-09-06T01:00:00-03:00", "2026-09-07T00:00:00-03:00"],
    ),
    (
        "America/Santiago",
        "0 * * * *",
        "2026-09-06T03:00:00Z",
        ["2026-09-06T01:00:00-03:00", "2026-09-06T02:00:00-03:00"],
    ),
    (
        "America/Santiago",
        "0 23 * * *",
        "2026-04-05T01:30:00Z",
        ["2026-04-04T23:00:00-03:00", "2026-04-05T23:00:00-04:00"],
    ),
    (
        "America/Santiago",
        "*/30 23 * * *",
        "2026-04-05T01:30:00Z",
        [
            "2026-04-04T23:00:00-03:00",
            "2026-04-04T23:30:00-03:00",
            "2026-04-04T23:00:00-04:00",
            "2026-04-04T23:30:00-04:00",
        ],
    ),
    # London: 2026-10-25 02:00 BST -> 01:00 GMT; 2026-03-29 01:00 GMT -> 02:00 BST.
    (
        "Europe/London",
        "0 * * * *",
        "2026-10-24T23:30:00Z",
        ["2026-10-25T01:00:00+01:00", "2026-10-25T01:00:00+00:00", "2026-10-25T02:00:00+00:00"],
    ),
    (
        "Europe/London",
        "0 1 * * *",
        "2026-10-24T23:30:00Z",
        ["2026-10-25T01:00:00+01:00", "2026-10-26T01:00:00+00:00"],
    ),
    (
        "Europe/London",
        "0 1 * * *",
        "2026-03-28T23:30:00Z",
        ["2026-03-29T02:00:00+01:00", "2026-03-30T01:00:00+01:00"],
    ),
    (
        "Europe/London",
        "0 * * * *",
        "2026-03-28T23:30:00Z",
        ["2026-03-29T00:00:00+00:00", "2026-03-29T02:00:00+01:00", "2026-03-29T03:00:00+01:00"],
    ),
]


@pytest.mark.parametrize(
    ("zone", "expr", "after", "expected"), CASES, ids=[f"{c[0]} {c[1]} {c[2][:10]}" for c in CASES]
)
def test_preview_follows_the_rule(zone: str, expr: str, after: str, expected: list[str]) -> None:
    out = cueapi.Schedule(expr, timezone=zone).preview(len(expected), after=utc(after))
    assert [d.isoformat() for d in out] == expected
    instants = [d.astimezone(UTC) for d in out]
    assert instants == sorted(set(instants)), "strictly increasing"
    # Each fire time is an instant whose offset is the zone's at that instant.
    tz = ZoneInfo(zone)
    assert all(d.utcoffset() == d.astimezone(tz).utcoffset() for d in out)


def test_the_cases_sit_on_real_gaps_and_folds() -> None:
    """The transitions the cases rely on, read from the zone database independently."""
    ny, lh, syd, scl = (
        ZoneInfo(z)
        for z in ("America/New_York", "Australia/Lord_Howe", "Australia/Sydney", "America/Santiago")
    )
    assert len(instants_of(datetime(2026, 11, 1, 1, 30), ny)) == 2
    assert instants_of(datetime(2026, 3, 8, 2, 30), ny) == []
    assert len(instants_of(datetime(2026, 4, 5, 1, 45), lh)) == 2
    assert len(instants_of(datetime(2026, 4, 5, 1, 25), lh)) == 1
    assert instants_of(datetime(2026, 10, 4, 2, 15), lh) == []
    assert len(instants_of(datetime(2026, 4, 5, 2, 30), syd)) == 2
    assert instants_of(datetime(2026, 10, 4, 2, 30), syd) == []
    assert instants_of(datetime(2026, 9, 6, 0, 0), scl) == []
    assert len(instants_of(datetime(2026, 4, 4, 23, 30), scl)) == 2


def test_next_after_inside_the_second_occurrence() -> None:
    """From inside the repeated hour: a fixed time whose first occurrence passed waits for the next
    day; a wildcard one goes on in real time."""
    fixed = cueapi.Schedule("30 1 * * *", timezone="America/New_York")
    wild = cueapi.Schedule("*/15 * * * *", timezone="America/New_York")
    inside = utc("2026-11-01T06:20:00Z")  # 01:20 EST, the second 01:20
    nxt = fixed.next_after(inside)
    assert nxt is not None and nxt.isoformat() == "2026-11-02T01:30:00-05:00"
    nxt = wild.next_after(inside)
    assert nxt is not None and nxt.astimezone(UTC) == utc("2026-11-01T06:30:00Z")


# --- the engine, on a manual clock ---------------------------------------------------------------


def run_through(app: cueapi.App, clock: cueapi.ManualClock, until: datetime, names: list[str]) -> None:
    """Moves the clock a minute at a time, each time waiting until every cue's next run is ahead
    of the clock (so no tick is taken as late)."""
    while clock.now() < until:
        clock.advance(60)
        now = clock.now()
        for name in names:
            wait_for(
                lambda name=name, now=now: (n := app.get_cue(name).next_run) is not None and n > now,
                what=f"{name} to move past {now}",
            )


def ticks(app: cueapi.App, name: str) -> list[str]:
    return sorted(e.scheduled_for.astimezone(UTC).isoformat() for e in app.executions(name, limit=1000))


@pytest.mark.parametrize(
    ("zone", "start", "until", "expected"),
    [
        (
            "America/New_York",
            "2026-11-01T04:50:00Z",
            "2026-11-01T07:20:00Z",
            {
                # every 15 minutes of real time: no 75-minute stop
                "quarter": [f"2026-11-01T{h:02}:{m:02}:00+00:00" for h in (5, 6, 7) for m in (0, 15, 30, 45)][
                    :10
                ],
                "daily_0130": ["2026-11-01T05:30:00+00:00"],
                "hourly": [
                    "2026-11-01T05:00:00+00:00",
                    "2026-11-01T06:00:00+00:00",
                    "2026-11-01T07:00:00+00:00",
                ],
            },
        ),
        (
            "America/New_York",
            "2026-03-08T06:40:00Z",
            "2026-03-08T08:20:00Z",
            {
                "quarter": [
                    "2026-03-08T06:45:00+00:00",  # 01:45 EST; then nothing until 03:00 EDT
                    *[f"2026-03-08T{h:02}:{m:02}:00+00:00" for h in (7, 8) for m in (0, 15, 30, 45)][:6],
                ],
                "daily_0230": ["2026-03-08T07:00:00+00:00"],
                "hourly_05": ["2026-03-08T07:05:00+00:00", "2026-03-08T08:05:00+00:00"],
            },
        ),
        (
            "Australia/Lord_Howe",
            "2026-04-04T14:35:00Z",
            "2026-04-04T15:45:00Z",
            {
                "every_10": [
                    "2026-04-04T14:40:00+00:00",
                    "2026-04-04T14:50:00+00:00",
                    "2026-04-04T15:00:00+00:00",
                    "2026-04-04T15:10:00+00:00",
                    "2026-04-04T15:20:00+00:00",
                    "2026-04-04T15:30:00+00:00",
                    "2026-04-04T15:40:00+00:00",
                ],
                "daily_0145": ["2026-04-04T14:45:00+00:00"],
            },
        ),
    ],
    ids=["new-york-fall-back", "new-york-spring-forward", "lord-howe-fall-back"],
)
def test_the_engine_fires_by_the_rule(
    tmp_path: Path, zone: str, start: str, until: str, expected: dict[str, list[str]]
) -> None:
    schedules = {
        "quarter": "*/15 * * * *",
        "hourly": "0 * * * *",
        "hourly_05": "5 * * * *",
        "daily_0130": "30 1 * * *",
        "daily_0230": "30 2 * * *",
        "every_10": "*/10 * * * *",
        "daily_0145": "45 1 * * *",
    }
    clock = cueapi.ManualClock(utc(start))
    with cueapi.App(tmp_path / "dst.db", clock=clock, grace=0) as app:
        for name in expected:
            app.cue(schedules[name], name=name, timezone=zone, overlap="allow")(lambda ctx: None)
        app.start()
        run_through(app, clock, utc(until), list(expected))
        for name, want in expected.items():
            assert ticks(app, name) == want, name
        assert all(e.status != "missed" for e in app.executions(limit=1000))


def test_the_readme_example_prints_what_it_says() -> None:
    """README "Schedules": the daylight-saving example runs and prints its comments."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (example,) = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "quarterly = " in b]
    out = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    promised = [line.removeprefix("# ") for line in example.splitlines() if line.startswith("# [")]
    assert out.stdout.splitlines() == promised
