"""Three decorated functions run on schedule for a few seconds; then the history shows what
happened to each run, with its outcome and evidence.

    python examples/quickstart.py [--db cueapi.db] [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import threading

import cueapi

parser = argparse.ArgumentParser()
parser.add_argument("--db", default="cueapi.db")
parser.add_argument("--seconds", type=float, default=6.0)
args = parser.parse_args()

app = cueapi.App(args.db)
batches = itertools.count(1)


@app.cue(every="1s", payload={"batch_size": 1000}, outcome_deadline=30)
def sync_customer_data(ctx: cueapi.Context) -> cueapi.Outcome:
    n = ctx.payload["batch_size"] - 153
    batch_id = f"batch_{next(batches):04d}"
    return cueapi.Outcome(
        success=True,
        result=f"Synced {n} records",
        external_id=batch_id,
        result_type="data_sync",
        metadata={"records_synced": n},
    )


@app.cue(every="2s", retry={"max_attempts": 0})
def flaky_report(ctx: cueapi.Context) -> None:
    if ctx.scheduled_for.second % 4 < 2:
        raise RuntimeError("upstream returned 503")


@app.cue(every="3s")
async def ping_agent(ctx: cueapi.Context) -> dict[str, str]:
    await asyncio.sleep(0.01)
    ctx.evidence(summary="agent answered")
    return {"result": "pong"}


threading.Timer(args.seconds, app.stop).start()
app.run()

with cueapi.App(args.db) as history:
    for cue in history.cues():
        s = history.stats(cue.name, days=1)
        rate = "-" if s.success_rate is None else f"{s.success_rate:.0%}"
        print(f"{cue.name:<20} every {cue.every_seconds:>3.0f}s  runs={s.total} ok={rate}")
    print()
    for ex in history.executions(limit=12):
        proof = ex.evidence.external_id if ex.evidence and ex.evidence.external_id else ""
        note = ex.error_message or (ex.outcome.result if ex.outcome else "") or ""
        state = ex.outcome_state or "-"
        print(f"{ex.scheduled_for:%H:%M:%S} {ex.cue_name:<20} {ex.status:<8} {state:<17} {note} {proof}")
