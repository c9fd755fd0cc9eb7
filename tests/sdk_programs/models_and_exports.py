"""What a user of the official SDK imports and builds without a server round trip: every name of
its `cueapi.__all__`, the model modules, `model_validate`/`model_dump` on stored responses,
`CuePayload`, the exception constructors, `verify_webhook` on a signature made by hand, and the
client's settings. CUEAPI_BASE_URL and CUEAPI_API_KEY are read for the one live call at the end.
"""

import hashlib
import hmac
import json
import os
import time

import cueapi
from cueapi import (
    Agent,
    AgentList,
    Cue,
    CueAPI,
    CueAPIError,
    CueList,
    CuePayload,
    Execution,
    ExecutionList,
    FromAgentRef,
    Message,
    MessageList,
    OutcomeDetail,
    RateLimitError,
    StateTransitionResponse,
    Worker,
    WorkerList,
    verify_webhook,
)
from cueapi.models import Callback, OnFailure, Retry, Schedule
from cueapi.models.cue import AlertConfig, DeliveryConfig, VerificationConfig

SDK_ALL = [
    "Agent", "AgentList", "AgentsResource", "Cue", "CueAPI", "CueList", "CuePayload", "Execution",
    "ExecutionList", "ExecutionsResource", "FromAgentRef", "Message", "MessageList",
    "MessagesResource", "OutcomeDetail", "StateTransitionResponse", "UsageResource", "Worker",
    "WorkerList", "WorkersResource", "verify_webhook", "CueAPIError", "AuthenticationError",
    "RateLimitError", "CueNotFoundError", "CueLimitExceededError", "InvalidScheduleError",
    "CueAPIServerError",
]  # fmt: skip
missing = [n for n in SDK_ALL if n not in cueapi.__all__ or not hasattr(cueapi, n)]
print(f"missing exports: {missing}")

# An old server's cue (no new keys) parses, with the newer fields at their defaults.
old = Cue.model_validate(
    {
        "id": "cue_1",
        "name": "n",
        "status": "active",
        "schedule": {"type": "recurring", "cron": "0 9 * * *"},
        "callback": {"url": "https://example.com"},
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }
)
print(
    f"old cue: {old.transport} {old.retry.max_attempts} {old.retry.backoff_minutes} {old.schedule.timezone}"
)
print(f"defaults: {old.delivery} {old.catch_up} {old.require_payload_override} {old.payload}")
print(
    "sub-models:",
    isinstance(old.schedule, Schedule),
    isinstance(old.callback, Callback),
    isinstance(old.retry, Retry),
)
print(f"round trip: {Cue.model_validate(old.model_dump()) == old}")
print(
    f"defaults of parts: {OnFailure().email} {DeliveryConfig().timeout_seconds} {VerificationConfig().mode}"
)
print(f"alert extras: {AlertConfig.model_validate({'consecutive_failures': 3}).model_extra}")
print(f"empty list: {CueList(cues=[], total=0, limit=20, offset=0).total}")

ex = Execution.model_validate(
    {
        "id": "exec_1",
        "cue_id": "cue_1",
        "scheduled_for": "2026-01-01T00:00:00Z",
        "status": "success",
        "outcome": {"success": True, "result_ref": "ref-1"},
        "brand_new_field": 1,
    }
)
print(f"execution: {ex.outcome.result_ref} {isinstance(ex.outcome, OutcomeDetail)} extra={ex.model_extra}")
page = ExecutionList.model_validate({"executions": [ex.model_dump()], "total": 1, "limit": 20, "offset": 0})
print(f"execution list: {page.total} {page.executions[0].id}")
worker = Worker.model_validate({"worker_id": "w", "handlers": ["a"], "heartbeat_status": "online"})
print(f"worker: {worker.worker_id} {WorkerList(workers=[worker]).total}")
msg = Message.model_validate({"id": "msg_1", "from": {"agent_id": "agt_1", "slug": "a"}, "body": "hi"})
print(
    "message:",
    msg.from_agent.slug,
    isinstance(msg.from_agent, FromAgentRef),
    MessageList(messages=[msg]).total,
)
print(f"state: {StateTransitionResponse(delivery_state='read').delivery_state}")
agent = Agent.model_validate({"id": "agt_1", "slug": "a", "display_name": "A"})
print(f"agent: {agent.metadata} {AgentList(agents=[agent], total=1, limit=50, offset=0).total}")

builder = CuePayload().task("morning-brief").kind("agent_turn").context_ref("doc-1").context_mode("isolated")
d1, d2 = builder.build(), builder.build()
print(f"payload: {d1} same={d1 == d2} copy={d1 is not d2} empty={CuePayload().build()}")

e = CueAPIError("boom", 418, "teapot", {"error": {"code": "teapot"}})
print(f"CueAPIError: {e} {e.status_code} {e.code} {e.body} {e!r}")
r = RateLimitError(message="slow", retry_after=5, status_code=429)
print(f"RateLimitError: {r.retry_after} {r.status_code} {CueAPIError('x').body}")

secret = "whsec_test"
body = {"b": 1, "a": [1, 2]}
ts = str(int(time.time()))
signed = f"{ts}.".encode() + json.dumps(body, sort_keys=True).encode()
signature = "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
print(
    "verify_webhook:",
    verify_webhook(body, signature, secret, ts),
    verify_webhook(json.dumps(body), signature, secret, ts),
    verify_webhook(body, signature, secret + "x", ts),
    verify_webhook(body, signature, secret, str(int(ts) - 1000), tolerance=300),
)

closing = CueAPI("cue_sk_placeholder_0000000000", base_url="https://api.example.com/")
print(f"base url: {closing._base_url}")
closing.close()
closing.close()  # closing twice is fine

with CueAPI(os.environ["CUEAPI_API_KEY"], base_url=os.environ["CUEAPI_BASE_URL"] + "/") as client:
    print(f"live: {client.cues.list().total}")
