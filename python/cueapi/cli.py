"""The ``cueapi`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .app import App
from .exceptions import CueAPIError


def _history(args: argparse.Namespace) -> int:
    with App(args.db) as app:
        for cue in app.cues():
            nxt = cue.next_run.isoformat() if cue.next_run else "-"
            print(f"{cue.name:<28} {cue.status:<9} next {nxt}  runs {cue.run_count}")
        print()
        for ex in app.executions(cue=args.cue, limit=args.limit):
            outcome = ex.outcome_state or "-"
            note = ex.error_message or (ex.outcome.result if ex.outcome and ex.outcome.result else "")
            print(
                f"{ex.scheduled_for:%Y-%m-%d %H:%M:%S} {ex.cue_name:<24} {ex.status:<10} {outcome:<18} "
                f"tries {ex.attempts}  {note}"
            )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cueapi", description="Accountable scheduled work.")
    sub = parser.add_subparsers(dest="command", required=True)
    history = sub.add_parser("history", help="print the cues and recent executions of a database")
    history.add_argument("--db", default="cueapi.db", help="SQLite file (default ./cueapi.db)")
    history.add_argument("--cue", default=None, help="only this cue (id or name)")
    history.add_argument("--limit", type=int, default=50)
    args = parser.parse_args(argv)
    try:
        return _history(args)
    except CueAPIError as exc:
        print(f"cueapi: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
