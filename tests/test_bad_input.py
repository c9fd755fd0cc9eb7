"""Every public call refuses bad input with a typed exception and leaves the store unchanged."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import cueapi
import pytest

from tests.conftest import START


def job(ctx: cueapi.Context) -> None:
    return None


def snapshot(app: cueapi.App) -> tuple[list[cueapi.Cue], list[cueapi.Execution]]:
    return app.cues(), app.executions(limit=10_000)


@pytest.fixture
def seeded(app: cueapi.App) -> cueapi.App:
    app.cue(every="1m", name="existing")(job)
    app.fire("existing")
    return app


CUE_CASES: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("bad field", {"schedule": "61 * * * *"}, cueapi.InvalidScheduleError, "invalid cron expression"),
    ("field count", {"schedule": "* * *"}, cueapi.InvalidScheduleError, "3 fields"),
    ("never fires", {"schedule": "0 0 31 2 *"}, cueapi.InvalidScheduleError, "never fires"),
    (
        "unknown zone",
        {"schedule": "0 * * * *", "timezone": "Mars/Base"},
        cueapi.InvalidScheduleError,
        "time zone",
    ),
    ("two schedules", {"schedule": "0 * * * *", "every": "1m"}, cueapi.InvalidScheduleError, "exactly one"),
    ("no schedule", {}, cueapi.InvalidScheduleError, "exactly one"),
    ("bad interval", {"every": "5x"}, cueapi.InvalidScheduleError, "invalid interval"),
    ("zero interval", {"every": "0s"}, cueapi.InvalidScheduleError, "shorter than one second"),
    ("payload not a dict", {"every": "1m", "payload": [1]}, cueapi.ValidationError, "payload"),
    ("payload not JSON", {"every": "1m", "payload": {"x": object()}}, cueapi.ValidationError, "JSON"),
    ("retry keys", {"every": "1m", "retry": {"tries": 3}}, cueapi.ValidationError, "unknown keys"),
    ("retry count", {"every": "1m", "retry": {"max_attempts": 11}}, cueapi.ValidationError, "max_attempts"),
    ("retry type", {"every": "1m", "retry": {"max_attempts": "3"}}, cueapi.ValidationError, "max_attempts"),
    ("backoff", {"every": "1m", "retry": {"backoff_minutes": [-1]}}, cueapi.ValidationError, "backoff"),
    ("deadline", {"every": "1m", "outcome_deadline": 0}, cueapi.ValidationError, "outcome_deadline"),
    ("deadline type", {"every": "1m", "outcome_deadline": "10"}, cueapi.ValidationError, "outcome_deadline"),
    ("overlap", {"every": "1m", "overlap": "queue"}, cueapi.ValidationError, "overlap"),
    ("catch up", {"every": "1m", "catch_up": "never"}, cueapi.ValidationError, "catch_up"),
    ("catch up cap", {"every": "1m", "catch_up_max": 0}, cueapi.ValidationError, "catch_up_max"),
    ("verification", {"every": "1m", "verification": "trust_me"}, cueapi.ValidationError, "verification"),
    ("empty name", {"every": "1m", "name": " "}, cueapi.ValidationError, "name"),
    ("long name", {"every": "1m", "name": "x" * 256}, cueapi.ValidationError, "name"),
    ("name clash", {"every": "1m", "name": "existing"}, cueapi.ValidationError, "two handlers"),
]


@pytest.mark.parametrize(("label", "kwargs", "exc", "message"), CUE_CASES, ids=[c[0] for c in CUE_CASES])
def test_bad_cue_declarations(
    seeded: cueapi.App, label: str, kwargs: dict[str, Any], exc: type[Exception], message: str
) -> None:
    before = snapshot(seeded)
    with pytest.raises(exc, match=message):
        seeded.cue(**kwargs)(lambda ctx: None)
    assert snapshot(seeded) == before


def test_decorating_a_non_callable(seeded: cueapi.App) -> None:
    before = snapshot(seeded)
    with pytest.raises(cueapi.ValidationError, match="callable"):
        seeded.cue(every="1m", name="x")(42)  # type: ignore[type-var]
    assert snapshot(seeded) == before


@pytest.mark.parametrize(
    ("at", "message"),
    [(START - timedelta(seconds=1), "in the past"), ("next tuesday", "invalid time"), (12, "datetime")],
)
def test_bad_one_shots(seeded: cueapi.App, at: Any, message: str) -> None:
    before = snapshot(seeded)
    with pytest.raises(cueapi.ValidationError, match=message):
        seeded.once(at=at, name="shot")(job)
    assert snapshot(seeded) == before


CALLS: list[tuple[str, Callable[[cueapi.App], object], type[Exception]]] = [
    ("status", lambda a: a.executions(status="done"), cueapi.ValidationError),
    ("outcome_state", lambda a: a.executions(outcome_state="great"), cueapi.ValidationError),
    ("limit zero", lambda a: a.executions(limit=0), cueapi.ValidationError),
    ("limit type", lambda a: a.executions(limit="5"), cueapi.ValidationError),  # type: ignore[arg-type]
    ("offset", lambda a: a.executions(offset=-1), cueapi.ValidationError),
    ("since and days", lambda a: a.executions(since=START, days=1), cueapi.ValidationError),
    ("days", lambda a: a.executions(days=-1), cueapi.ValidationError),
    ("since type", lambda a: a.executions(since="yesterday"), cueapi.ValidationError),  # type: ignore[arg-type]
    ("has_evidence", lambda a: a.executions(has_evidence="yes"), cueapi.ValidationError),  # type: ignore[arg-type]
    ("unknown cue filter", lambda a: a.executions("nope"), cueapi.CueNotFoundError),
    ("execution id", lambda a: a.execution("exec_nope"), cueapi.ExecutionNotFoundError),
    ("empty execution id", lambda a: a.execution(""), cueapi.ValidationError),
    ("stats cue", lambda a: a.stats("nope"), cueapi.CueNotFoundError),
    ("stats days", lambda a: a.stats("existing", days=0), cueapi.ValidationError),
    ("pause", lambda a: a.pause("nope"), cueapi.CueNotFoundError),
    ("resume", lambda a: a.resume("nope"), cueapi.CueNotFoundError),
    ("delete", lambda a: a.delete("nope"), cueapi.CueNotFoundError),
    ("delete empty", lambda a: a.delete(""), cueapi.ValidationError),
    ("fire", lambda a: a.fire("nope"), cueapi.CueNotFoundError),
    ("fire payload", lambda a: a.fire("existing", payload=[1]), cueapi.ValidationError),  # type: ignore[arg-type]
    ("replay", lambda a: a.replay("exec_nope"), cueapi.ExecutionNotFoundError),
    ("get cue", lambda a: a.get_cue("nope"), cueapi.CueNotFoundError),
    ("create_cues dup", lambda a: a.create_cues([{"name": "existing", "every": "1m"}]), cueapi.ConflictError),
    ("create_cues key", lambda a: a.create_cues([{"name": "n", "evry": "1m"}]), cueapi.ValidationError),
    (
        "create_cues partial",
        lambda a: a.create_cues([{"name": "ok", "every": "1m"}, {"name": "bad", "cron": "x"}]),
        cueapi.InvalidScheduleError,
    ),
]


@pytest.mark.parametrize(("label", "call", "exc"), CALLS, ids=[c[0] for c in CALLS])
def test_bad_calls(
    seeded: cueapi.App, label: str, call: Callable[[cueapi.App], object], exc: type[Exception]
) -> None:
    before = snapshot(seeded)
    with pytest.raises(exc):
        call(seeded)
    assert snapshot(seeded) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"workers": 0}, "workers"), ({"workers": True}, "workers"), ({"grace": -1}, "grace")],
)
def test_bad_app_arguments(db: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(cueapi.ValidationError, match=message):
        cueapi.App(db, **kwargs)
    assert not db.exists()


def test_unopenable_database(tmp_path: Path) -> None:
    with pytest.raises(cueapi.StorageError):
        cueapi.App(tmp_path / "missing-dir" / "x.db")


def test_validation_errors_are_value_errors_and_cueapi_errors() -> None:
    assert issubclass(cueapi.InvalidScheduleError, ValueError)
    assert issubclass(cueapi.CueNotFoundError, cueapi.CueAPIError)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: cueapi.Schedule("* * * * *").preview(-1), "n must be"),
        (lambda: cueapi.Schedule("* * * * *").preview("3"), "n must be"),  # type: ignore[arg-type]
        (lambda: cueapi.Schedule("* * * * *").next_after("soon"), "after must be"),  # type: ignore[arg-type]
        (lambda: cueapi.Schedule(), "exactly one"),
        (lambda: cueapi.ManualClock("noon"), "start must be"),  # type: ignore[arg-type]
        (lambda: cueapi.ManualClock(START).advance(-1), "non-negative"),
        (lambda: cueapi.ManualClock(START).set(START - timedelta(seconds=1)), "backwards"),
    ],
)
def test_bad_schedule_and_clock_calls(call: Callable[[], object], message: str) -> None:
    with pytest.raises(cueapi.ValidationError, match=message):
        call()


def test_bad_app_settings_are_refused_and_leave_nothing_behind(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(cueapi.ValidationError, match="invalid db: is empty"):
        cueapi.App("")
    for lease in (0.1, 601, "3", True):
        with pytest.raises(
            cueapi.ValidationError, match=r"node_lease must be a number of seconds between 0\.3"
        ):
            cueapi.App(tmp_path / "x.db", node_lease=lease)
    assert list(tmp_path.iterdir()) == []


def test_the_native_default_node_lease_is_the_shared_limit() -> None:
    import inspect

    from cueapi import _cueapi, _limits

    default = inspect.signature(_cueapi.NativeEngine).parameters["node_lease_ms"].default
    assert default == round(_limits.NODE_LEASE_SECONDS * 1000)
