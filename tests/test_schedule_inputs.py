"""Whatever is passed to the public schedule entry points (``cueapi.Schedule`` and its methods,
``ManualClock``, ``App.cue`` and ``App.once``), only cueapi's exceptions come out: a clear
``InvalidScheduleError`` / ``ValidationError``, never a bare ``TypeError``, ``ValueError``,
``OverflowError`` or ``UnicodeEncodeError`` from deep inside, and never a crash later on."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cueapi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import START

UTC = timezone.utc

SAMPLES = (
    "* * * * *",
    "0 9 * * MON-FRI",
    "@daily",
    "0 0 31 2 *",
    ", * * * *" * 300,
    "5m",
    "1h30m",
    "0s",
    "2099-01-01T00:00:00",
    "2099-01-01T00:00:00+14:00",
    "+10000-01-01T00:00:00",
    "9999-12-31T23:59:59",
    "0001-01-01T00:00:00",
    "-0001-01-01T00:00:00",
    "UTC",
    "America/New_York",
    "Mars/Olympus",
    "\ud800",
    "* * * * *\ud800",
    "\x00",
    "",
)

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(SAMPLES),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.datetimes(timezones=st.none() | st.timezones()),
    st.dates(),
    st.timedeltas(),
)
instant = st.one_of(
    anything,
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)),
    st.floats(min_value=0, max_value=4e9),
)


def only_cueapi_errors(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except cueapi.CueAPIError as e:
        assert str(e).strip(), "an error without a message"
        return None


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(cron=anything, every=anything, at=anything, tz=anything, n=anything, after=instant)
def test_schedule_takes_anything(cron: Any, every: Any, at: Any, tz: Any, n: Any, after: Any) -> None:
    for kwargs in ({"cron": cron}, {"every": every}, {"at": at}, {"cron": cron, "timezone": tz}):
        s = only_cueapi_errors(lambda kwargs=kwargs: cueapi.Schedule(**kwargs))
        if s is None:
            continue
        assert isinstance(s.describe(), str)
        for out in (
            only_cueapi_errors(lambda s=s: s.preview(n, after=after)),
            only_cueapi_errors(lambda s=s: s.preview(3, after=after)),
            only_cueapi_errors(lambda s=s: [s.next_after(after)]),
        ):
            for d in out or []:
                assert d is None or (isinstance(d, datetime) and d.utcoffset() is not None)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(start=instant, seconds=anything, to=instant)
def test_manual_clock_takes_anything(start: Any, seconds: Any, to: Any) -> None:
    clock = only_cueapi_errors(lambda: cueapi.ManualClock(start))
    if clock is not None:
        only_cueapi_errors(lambda: clock.advance(seconds))
        only_cueapi_errors(lambda: clock.set(to))
        assert isinstance(clock.now(), datetime)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cueapi.App]:
    path: Path = tmp_path_factory.mktemp("inputs") / "cueapi.db"
    with cueapi.App(path, clock=cueapi.ManualClock(START)) as a:
        yield a


NAMES = (f"cue_{i}" for i in itertools.count())


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(schedule=anything, every=anything, tz=anything, at=anything)
def test_app_cue_and_once_take_anything(app: cueapi.App, schedule: Any, every: Any, tz: Any, at: Any) -> None:
    def job(ctx: cueapi.Context) -> None:
        return None

    only_cueapi_errors(lambda: app.cue(schedule, name=next(NAMES))(job))
    only_cueapi_errors(lambda: app.cue(every=every, name=next(NAMES))(job))
    only_cueapi_errors(lambda: app.cue("* * * * *", timezone=tz, name=next(NAMES))(job))
    only_cueapi_errors(lambda: app.once(at, name=next(NAMES))(job))
    only_cueapi_errors(lambda: app.once("2099-01-01T00:00:00", timezone=tz, name=next(NAMES))(job))


def test_app_cue_and_once_still_list(app: cueapi.App) -> None:
    """Whatever was stored by the test above reads back (a one-shot at an out-of-range time would
    not)."""
    for cue in app.cues():
        assert cue.name.startswith("cue_")


@pytest.mark.parametrize(
    ("call", "exc", "message"),
    [
        (lambda: cueapi.Schedule(123), cueapi.InvalidScheduleError, "cron must be a string, not int"),
        (
            lambda: cueapi.Schedule("* * * * *", timezone=5),
            cueapi.InvalidScheduleError,
            "timezone must be a string",
        ),
        (lambda: cueapi.Schedule(every=300), cueapi.InvalidScheduleError, "every must be a string"),
        (lambda: cueapi.Schedule(at=1.5), cueapi.InvalidScheduleError, "at must be a string"),
        (lambda: cueapi.Schedule("* * * * *\ud800"), cueapi.InvalidScheduleError, "lone surrogate"),
        (lambda: cueapi.Schedule(at="+10000-01-01T00:00:00"), cueapi.InvalidScheduleError, "out of range"),
        (lambda: cueapi.Schedule(at="9999-12-31T23:59:59"), cueapi.InvalidScheduleError, "out of range"),
        (lambda: cueapi.Schedule("* * * * *").preview(after=float("nan")), cueapi.ValidationError, "finite"),
        (lambda: cueapi.Schedule("* * * * *").preview(after=float("inf")), cueapi.ValidationError, "finite"),
        (lambda: cueapi.Schedule("* * * * *").preview(after=1e300), cueapi.ValidationError, "out of range"),
        (lambda: cueapi.Schedule("* * * * *").preview(after=2**80), cueapi.ValidationError, "out of range"),
        (
            lambda: cueapi.Schedule("* * * * *").next_after(datetime(9999, 12, 31, tzinfo=UTC)),
            cueapi.ValidationError,
            "out of range",
        ),
        (lambda: cueapi.ManualClock(float("nan")), cueapi.ValidationError, "finite"),
    ],
    ids=[
        "cron-int",
        "timezone-int",
        "every-int",
        "at-float",
        "surrogate",
        "at-year-10000",
        "at-past-9999-12-30",
        "after-nan",
        "after-inf",
        "after-huge",
        "after-huge-int",
        "after-9999",
        "clock-nan",
    ],
)
def test_bad_input_gets_a_clear_error(call: Callable[[], Any], exc: type[Exception], message: str) -> None:
    with pytest.raises(exc, match=message):
        call()


def test_a_one_shot_near_the_end_of_time_previews() -> None:
    s = cueapi.Schedule(at="9999-12-29T23:00:00", timezone="Pacific/Kiritimati")
    (fire,) = s.preview(5, after=datetime(9999, 1, 1, tzinfo=UTC))
    assert fire.year == 9999
    every = cueapi.Schedule(every="1d")
    assert every.preview(5, after=datetime(9999, 12, 28, tzinfo=UTC)) == [
        datetime(9999, 12, 29, tzinfo=UTC),
        datetime(9999, 12, 30, tzinfo=UTC),
    ]
    assert cueapi.Schedule("0 0 * * *", timezone="Etc/GMT+12").next_after(
        datetime(9999, 12, 29, tzinfo=UTC)
    ) == datetime(9999, 12, 29, 12, tzinfo=UTC)
