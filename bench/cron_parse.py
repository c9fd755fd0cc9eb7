"""Worst-case cost of reading a cron expression: cueapi against croniter, on the same expressions.

    python bench/cron_parse.py              # 300 repeats per case
    python bench/cron_parse.py --repeat 50

Each case is timed as a user meets it: ``cueapi.Schedule(expr, timezone=...)`` (read the
expression, check the zone, walk to the next fire time to refuse one that never fires) against
``croniter(expr, now).get_next()`` (croniter's own read and first walk). The cases are the
worst this author found: expressions at and over the caps (1,024 bytes, 100 list items a field),
a megabyte of input, the comma flood of issue 11, and valid expressions whose first fire is far
away or never comes, so that the walk covers its whole 50-year horizon. Prints p50, p99 and max
per case, in microseconds, and the ratio of p50s. A benchmark, not a test: nothing here is run by
the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone

import cueapi

try:
    from croniter import croniter
except ImportError:  # the benchmark venv has no croniter: cueapi's figures alone
    croniter = None

ZONE = "America/New_York"


def fields(*items: str) -> str:
    return " ".join(items)


def full_list(n: int, modulo: int, start: int = 0) -> str:
    return ",".join(str(start + i % modulo) for i in range(n))


CASES: list[tuple[str, str]] = [
    ("issue 11's comma flood, 1.8 MB", ", * * * *" * 200_000),
    ("1 MB of commas in one field", "," * 1_000_000 + " * * * *"),
    ("at the length cap: 1,024 bytes", "0 0 * * *".ljust(1024)),
    ("1,025 bytes (refused by the cap)", "0 0 * * *".ljust(1025)),
    ("1,000 commas in one field (refused by the item cap)", "," * 1_000 + " * * * *"),
    (
        "100 list items in each of 3 fields",
        fields(full_list(100, 60), full_list(100, 24), full_list(100, 31, 1), "* *"),
    ),
    (
        "100 ranges with steps in one field",
        fields(",".join(f"{i % 50}-59/{i % 7 + 1}" for i in range(100)), "* * * *"),
    ),
    ("a 900-digit step", "*/" + "9" * 900 + " * * * *"),
    ("never fires: Feb 30 (50-year walk)", "0 0 30 2 *"),
    ("never fires: the 31st of 30-day months", "0 0 31 2,4,6,9,11 *"),
    ("never fires: 50 years of seconds fields", "59 23 31 2,4,6,9,11 * 59"),
    ("first fire 49 years away", "0 0 1 1 * 0 2075"),
    ("every second", "* * * * * *"),
    ("the 5th Friday", "0 0 * * 5#5"),
    ("a typical one", "*/15 9-17 * * MON-FRI"),
]


SECONDS_OF_ONE_HOUR = fields(",".join(str(m) for m in range(60)), "1 * * *", "*")
WALKS: list[tuple[str, str, str, str]] = [
    (
        "every second of 01:xx as fixed times, from the second 01:00:01",
        SECONDS_OF_ONE_HOUR,
        "America/New_York",
        "2026-11-01T06:00:01+00:00",
    ),
    (
        "every second, real time, into Troll's 2-hour gap",
        "* * * * * *",
        "Antarctica/Troll",
        "2026-03-29T00:59:59+00:00",
    ),
    (
        "every 15 minutes, real time, into New York's fold",
        "*/15 * * * *",
        "America/New_York",
        "2026-11-01T05:50:00+00:00",
    ),
]


def timed(call: Callable[[], object], repeat: int) -> tuple[list[float], str]:
    """Microseconds per call, and what the call did (accepted, or the start of the refusal)."""
    samples = []
    verdict = "accepted"
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        try:
            call()
        except Exception as e:
            verdict = f"refused: {type(e).__name__}"
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return samples, verdict


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=300, help="timed calls per case and system")
    args = ap.parse_args(argv)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    print(f"cueapi {cueapi.__version__}, Python {sys.version.split()[0]}, {args.repeat} repeats per case")
    header = f"{'case':<52} {'bytes':>9} | {'cueapi p50':>10} {'p99':>9} {'max':>9}"
    print(f"{header} | {'croniter p50':>12} {'ratio':>7}")
    worst = 0.0
    for label, expr in CASES:
        ours, our_verdict = timed(lambda expr=expr: cueapi.Schedule(expr, timezone=ZONE), args.repeat)
        worst = max(worst, max(ours))
        theirs_text, ratio = "-", "-"
        if croniter is not None:
            theirs, _ = timed(
                lambda expr=expr: croniter(expr, now).get_next(datetime), max(3, args.repeat // 10)
            )
            theirs_text = f"{statistics.median(theirs):12.1f}"
            ratio = f"{statistics.median(theirs) / statistics.median(ours):6.1f}x"
        print(
            f"{label:<52} {len(expr.encode()):>9} | {statistics.median(ours):10.1f} {pct(ours, 0.99):9.1f} "
            f"{max(ours):9.1f} | {theirs_text:>12} {ratio:>7}   ({our_verdict})"
        )
    print(f"worst single call, any case: {worst:.1f} us")
    print()
    print("next fire time from inside a daylight-saving change (the walk's worst; cueapi only)")
    for label, expr, zone, after in WALKS:
        schedule = cueapi.Schedule(expr, timezone=zone)
        at = datetime.fromisoformat(after)
        samples, _ = timed(lambda schedule=schedule, at=at: schedule.next_after(at), args.repeat)
        print(
            f"{label:<62} | {statistics.median(samples):10.1f} {pct(samples, 0.99):9.1f} {max(samples):9.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
