"""A pull worker written for the official SDK (0.2.0 and later): worker-transport cues built with
`CuePayload`, `cues.fire` with its options, then `list_claimable`, `claim_next`, `claim`,
`heartbeat`, outcomes through `executions.handle`, evidence, replay, verification, the history
with its filters parsed as `ExecutionList`, and `workers`, `usage`.

CUEAPI_BASE_URL and CUEAPI_API_KEY come from the environment.
"""

import os
import uuid
from datetime import datetime, timedelta, timezone

from cueapi import CueAPI, CueAPIError, CuePayload, ExecutionList, WorkerList

client = CueAPI(os.environ["CUEAPI_API_KEY"], base_url=os.environ["CUEAPI_BASE_URL"])
worker_id = "laptop-worker-1"

etl = client.cues.create(
    name="local-data-pipeline",
    cron="0 */6 * * *",
    transport="worker",
    payload=CuePayload()
    .task("etl")
    .kind("data_sync")
    .instruction("sync postgres")
    .extra("source", "postgres")
    .build(),
)
brief = client.cues.create(
    name="agent-brief",
    cron="0 8 * * *",
    transport="worker",
    payload=CuePayload().task("brief").agent("writer").context_mode("isolated").build(),
)
print(f"cue {etl.name}: {etl.transport} task={etl.payload['task']} source={etl.payload['source']}")

# Fire: now, with a merged override, with a replacing one, later, and idempotently.
first = client.cues.fire(etl.id)
merged = client.cues.fire(etl.id, payload_override={"source": "mysql"}, merge_strategy="merge")
print(f"merged payload: {merged['payload']['task']} {merged['payload']['source']}")
replaced = client.cues.fire(
    brief.id, payload_override={"task": "brief", "only": True}, merge_strategy="replace"
)
print(f"replaced payload: {sorted(replaced['payload'])}")
later = client.cues.fire(brief.id, send_at=datetime.now(timezone.utc) + timedelta(hours=1))
print(f"later: {later['status']} {later['triggered_by']}")
key = "sdk-program-" + uuid.uuid4().hex[:8]
once = client.cues.fire(etl.id, idempotency_key=key)
again = client.cues.fire(etl.id, idempotency_key=key)
print(f"idempotent fire: {once['id'] == again['id']}")

# What a worker sees: executions due now and unclaimed, oldest first, filtered by task.
claimable = client.executions.list_claimable(task="etl")
print(
    f"claimable etl: {len(claimable['executions'])}",
    f"first={claimable['executions'][0]['execution_id'] == first['id']}",
)

got = client.executions.claim_next(worker_id=worker_id, task="etl")
print(f"claim_next etl: {got['claimed']} {got['execution_id'] == first['id']}")
beat = client.executions.heartbeat(got["execution_id"])
print(f"heartbeat: {beat['acknowledged']}")
with client.executions.handle(got["execution_id"], got["payload"]) as ctx:
    ctx.result = f"synced from {ctx.payload['source']}"
    ctx.evidence = {
        "external_id": "batch-1",
        "result_url": "https://example.com/batches/1",
        "result_ref": "s3://bucket/batch-1",
        "result_type": "data_sync",
        "summary": "847 rows",
        "artifacts": [{"kind": "csv"}],
        "metadata": {"rows": 847},
    }
done = client.executions.get(got["execution_id"])
print(f"outcome: {done['outcome']['success']} {done['outcome']['result']} {done['outcome_state']}")

# The second one fails: the exception's text is the reported error, and it still propagates.
second = client.executions.claim(merged["id"], worker_id=worker_id)
try:
    with client.executions.handle(second["execution_id"]) as ctx:
        raise RuntimeError("mysql is down")
except RuntimeError as e:
    print(f"handled failure: {e}")
print(f"failure recorded: {client.executions.get(merged['id'])['error_message']}")

# Claiming what someone holds is a conflict; a task with nothing due is a plain answer.
try:
    client.executions.claim(first["id"], worker_id="someone-else")
except CueAPIError as e:
    print(f"claim conflict: {e.status_code}")
print(f"nothing to claim: {client.executions.claim_next(worker_id=worker_id, task='no-such-task')}")

# Report by hand, verify by hand.
third = client.executions.claim(once["id"], worker_id=worker_id)
out = client.executions.report_outcome(third["execution_id"], success=True, result="ok", external_id="ext-3")
print(f"reported: {out['outcome_state']}")
print(f"pending: {client.executions.mark_verification_pending(once['id'])['outcome_state']}")
print(f"verified: {client.executions.mark_verified(once['id'], valid=True)['outcome_state']}")

replay = client.executions.replay(first["id"])
print(f"replay: {replay['triggered_by']} {replay['status']}")

# The history, typed with the SDK's models.
page = ExecutionList.model_validate(client.executions.list(cue_id=etl.id, limit=50))
print(f"history: {page.total} {sorted({e.status for e in page.executions})}")
print(f"succeeded: {client.executions.list(status='success')['total']}")
print(f"verified: {client.executions.list(outcome_state='verified_success')['total']}")
print(f"replays: {client.executions.list(triggered_by='replay')['total']}")
print(f"manual fires: {client.executions.list(triggered_by='manual_fire', limit=1)['total']}")

# Claims do not register a worker; the worker daemon's heartbeats do (not this SDK's job).
workers = WorkerList.model_validate(client.workers.list())
print(f"workers: {[w.worker_id for w in workers.workers]}")
try:
    client.workers.delete(worker_id)
except CueAPIError as e:
    print(f"delete unknown worker: {type(e).__name__} {e.status_code}")
usage = client.usage.get()
print(f"usage: cues={usage['cues']['active']} executions={usage['executions']['used']}")
client.close()
