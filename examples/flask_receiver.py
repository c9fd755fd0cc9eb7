"""A Flask receiver for cueapi webhooks: each delivery's signature is checked before the view runs,
and the view answers with the outcome, which the server records at once (no call back).

Against a local server (the README's quick start has the same steps):

    cueapi serve --db cueapi.db --allow-private-targets &
    URL=http://127.0.0.1:8000
    KEY=$(curl -s -X POST $URL/v1/auth/register -H 'Content-Type: application/json' \\
            -d '{"email": "you@example.com"}' \\
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
    export CUEAPI_WEBHOOK_SECRET=$(curl -s $URL/v1/auth/webhook-secret -H "Authorization: Bearer $KEY" \\
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["webhook_secret"])')
    python examples/flask_receiver.py --port 5000 &
    CUE=$(curl -s -X POST $URL/v1/cues -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
            -d '{"name": "data-sync-agent", "schedule": {"type": "recurring", "cron": "0 2 * * *"},
                 "callback": {"url": "http://127.0.0.1:5000/sync"}, "payload": {"batch_size": 1000}}' \\
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    curl -s -X POST $URL/v1/cues/$CUE/fire -H "Authorization: Bearer $KEY"   # run it now
    curl -s "$URL/v1/cues/$CUE/executions?status=all" -H "Authorization: Bearer $KEY"   # its outcome

``--port 0`` picks a free port (the startup line says which).
"""

from __future__ import annotations

import argparse
from typing import Any

from cueapi.flask import webhook
from cueapi.webhooks import Delivery, MemorySeen
from flask import Flask

app = Flask(__name__)


@app.post("/sync")
@webhook(seen=MemorySeen())  # the secret from CUEAPI_WEBHOOK_SECRET, read at each request
def sync(delivery: Delivery) -> dict[str, Any]:
    if delivery.replayed:  # this very request came before: answer it again, do nothing twice
        return {"status": "already received"}
    n = delivery.payload.get("batch_size", 0)
    # ... the work. `idempotency_key` is the same for every retry of this occurrence: store it
    # with what the work produced, and a retry can tell the work was done.
    return delivery.outcome(
        success=True,
        result=f"Synced {n} records",
        external_id=delivery.idempotency_key,
        result_type="data_sync",
        metadata={"records_synced": n, "attempt": delivery.attempt},
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    app.run(host=args.host, port=args.port)
