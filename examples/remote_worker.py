"""The decorators of quickstart.py, working for a server instead of a database: the cues are
declared on the server as worker cues, and this process claims, runs and reports their executions
— from a laptop behind NAT, say, with no public URL. The server keeps the history, retries and
alerts; any number of copies of this program share the work.

    cueapi serve --db server.db &
    export CUEAPI_API_KEY=$(curl -s -X POST http://127.0.0.1:8000/v1/auth/register \\
        -H 'Content-Type: application/json' -d '{"email": "you@example.com"}' \\
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
    python examples/remote_worker.py --base-url http://127.0.0.1:8000 --seconds 6

The same program without ``remote=`` runs embedded; and ``cueapi worker module:app`` runs an
embedded program like quickstart.py against a server unchanged.
"""

from __future__ import annotations

import argparse
import threading

import cueapi

parser = argparse.ArgumentParser()
parser.add_argument("--base-url", default="http://127.0.0.1:8000")
parser.add_argument("--seconds", type=float, default=6.0)
args = parser.parse_args()

app = cueapi.App(remote=args.base_url)  # the key from CUEAPI_API_KEY


@app.cue(every="1s", payload={"batch_size": 1000})
def sync_customer_data(ctx: cueapi.Context) -> cueapi.Outcome:
    n = ctx.payload["batch_size"] - 153
    return cueapi.Outcome(
        success=True,
        result=f"Synced {n} records",
        external_id=f"batch_{ctx.scheduled_for:%H%M%S}",
        result_type="data_sync",
        metadata={"records_synced": n},
    )


@app.cue(every="2s", retry={"max_attempts": 0})
def flaky_report(ctx: cueapi.Context) -> None:
    if ctx.scheduled_for.second % 4 < 2:
        raise RuntimeError("upstream returned 503")


threading.Timer(args.seconds, app.stop).start()
app.run()

# The history is the server's; a new App (or any CueAPI client) reads it.
with cueapi.App(remote=args.base_url) as history:
    for cue in history.cues():
        s = history.stats(cue.name, days=1)
        rate = "-" if s.success_rate is None else f"{s.success_rate:.0%}"
        print(f"{cue.name:<20} {cue.transport} every {cue.every_seconds:>3.0f}s  runs={s.total} ok={rate}")
    print()
    for ex in history.executions(limit=12):
        proof = ex.evidence.external_id if ex.evidence and ex.evidence.external_id else ""
        note = ex.error_message or (ex.outcome.result if ex.outcome else "") or ""
        state = ex.outcome_state or "-"
        print(f"{ex.scheduled_for:%H:%M:%S} {ex.cue_name:<20} {ex.status:<8} {state:<17} {note} {proof}")
