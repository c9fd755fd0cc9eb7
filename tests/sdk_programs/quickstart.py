"""The official SDK's README, as a user of it writes it: the quick start, both transports, the
"why not cron" execution check, the error-handling pattern and the method reference.

Only the server and the key come from the environment (CUEAPI_BASE_URL, CUEAPI_API_KEY), passed
as the SDK's arguments. Run by tests/test_sdk_programs.py against a live `cueapi serve`.
"""

import os

from cueapi import (
    AuthenticationError,
    CueAPI,
    CueAPIServerError,
    CueLimitExceededError,
    CueList,
    InvalidScheduleError,
    RateLimitError,
)
from cueapi.models.cue import Cue
from cueapi.models.execution import Execution

BASE_URL = os.environ["CUEAPI_BASE_URL"]
# Where the README's cues deliver; here the server's own echo endpoint (a callback target for
# trying cues out), so that the program needs nothing else.
AGENT_URL = f"{BASE_URL}/v1/echo/readme-agent-run"
APP_URL = f"{BASE_URL}/v1/echo/readme-app-webhook"

client = CueAPI(
    api_key=os.environ["CUEAPI_API_KEY"],
    base_url=BASE_URL,
    timeout=30,
)

# Quick start: an agent that runs every morning.
cue = client.cues.create(
    name="morning-agent-brief",
    cron="0 9 * * *",
    timezone="America/Los_Angeles",
    callback=AGENT_URL,
    payload={"task": "daily_brief"},
)
print(f"first run: {cue.next_run.isoformat()}")
print(f"schedule: {cue.schedule.type} {cue.schedule.cron} {cue.schedule.timezone}")

# Webhook transport (the default): a signed POST to the callback.
sync = client.cues.create(
    name="data-sync",
    cron="0 */6 * * *",
    callback=APP_URL,
    payload={"pipeline": "sync"},
)
print(f"webhook cue: {sync.transport} {sync.callback.url == APP_URL} {sync.callback.method}")

# Worker transport: no public URL; a worker pulls the executions.
nightly = client.cues.create(
    name="nightly-pipeline",
    cron="0 2 * * *",
    transport="worker",
    payload={"pipeline": "etl"},
)
print(f"worker cue: {nightly.transport} callback={nightly.callback.url}")

# "Why CueAPI over cron?": every execution is tracked apart from its delivery.
fired = client.cues.fire(nightly.id)
execution = Execution.model_validate(client.executions.get(fired["id"]))
print(f"execution: {execution.status} attempts={execution.attempts} outcome={execution.outcome}")
print(f"execution triggered_by: {execution.triggered_by} cue={execution.cue_id == nightly.id}")

# The README's error-handling pattern: one except clause per documented error (the cron here is
# a bad one, so the schedule clause runs).
try:
    client.cues.create(name="my-agent", cron="not a cron", callback=AGENT_URL)
except CueLimitExceededError:
    print("over the plan's cue limit")
except InvalidScheduleError as e:
    print(f"schedule refused: {e}")
except AuthenticationError:
    print("the key was refused")
except RateLimitError as e:
    print(f"throttled for {e.retry_after}s")
except CueAPIServerError:
    print("the server failed")

# The method reference.
listed = client.cues.list(limit=20, offset=0, status="active")
assert isinstance(listed, CueList)
print(f"active cues: {listed.total} {sorted(c.name for c in listed.cues)}")
got = client.cues.get(cue.id)
assert isinstance(got, Cue)
print(f"got: {got.name}")
updated = client.cues.update(cue.id, cron="0 10 * * *")
print(f"updated cron: {updated.schedule.cron}")
print(f"paused: {client.cues.pause(cue.id).status}")
print(f"resumed: {client.cues.resume(cue.id).status}")
print(f"deleted: {client.cues.delete(sync.id)}")
history = client.executions.list(cue_id=nightly.id, limit=20)
print(
    "executions of nightly-pipeline:",
    history["total"],
    [e["id"] for e in history["executions"]] == [fired["id"]],
)
client.close()
