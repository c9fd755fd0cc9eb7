"""A webhook receiver written for the official SDK: it verifies each delivery's signature with
`verify_webhook` before trusting it, reads the execution from the body, does the work inside
`client.executions.handle(...)` (which reports the outcome), and refuses a forged delivery.

CUEAPI_BASE_URL, CUEAPI_API_KEY and CUEAPI_WEBHOOK_SECRET (the account's signing secret, from
the dashboard) come from the environment. The receiver listens on a free loopback port.
"""

import json
import os
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from cueapi import CueAPI, Execution, verify_webhook

WEBHOOK_SECRET = os.environ["CUEAPI_WEBHOOK_SECRET"]
deliveries: "queue.Queue[tuple[int, dict]]" = queue.Queue()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        signature = self.headers.get("X-CueAPI-Signature", "")
        timestamp = self.headers.get("X-CueAPI-Timestamp", "")
        if not verify_webhook(payload=body, signature=signature, timestamp=timestamp, secret=WEBHOOK_SECRET):
            self.answer(401, {"error": "invalid signature"})
            deliveries.put((401, {}))
            return
        data = json.loads(body)
        self.answer(200, {"status": "ok"})
        deliveries.put((200, data))

    def answer(self, status: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: object) -> None:
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
hook_url = f"http://127.0.0.1:{server.server_port}/webhook"

client = CueAPI(os.environ["CUEAPI_API_KEY"], base_url=os.environ["CUEAPI_BASE_URL"])
cue = client.cues.create(
    name="data-sync",
    cron="0 0 1 1 *",
    callback=hook_url,
    callback_headers={"X-Team": "data"},
    payload={"pipeline": "sync"},
)
fired = client.cues.fire(cue.id, payload_override={"batch": 7})

status, data = deliveries.get(timeout=30)
execution_id = data["execution_id"]
print(f"delivery verified ({status}): the fired execution={execution_id == fired['id']} cue={data['name']}")
print(f"delivered payload: {json.dumps(data['payload'], sort_keys=True)}")


def delivered() -> dict:
    # The delivery is recorded once our 200 reached the server; poll for it.
    deadline = time.monotonic() + 30
    while True:
        execution = client.executions.get(execution_id)
        if execution["status"] == "success" or time.monotonic() > deadline:
            return execution
        time.sleep(0.02)


print(f"Delivery recorded: {delivered()['status']}")
with client.executions.handle(execution_id, data["payload"]) as ctx:
    rows = ctx.payload["batch"] * 3
    ctx.result = f"synced {rows} rows"
    ctx.evidence = {
        "external_id": f"sync-{execution_id}",
        "summary": f"{rows} rows",
        "result_type": "data_sync",
    }

execution = Execution.model_validate(client.executions.get(execution_id))
print(f"Outcome: success={execution.outcome.success} result={execution.outcome.result}")
print(f"Evidence: {execution.outcome.summary} {execution.outcome.result_type} {execution.outcome_state}")

# A delivery signed with another secret is refused, and verify_webhook says why.
forged_body = json.dumps({"execution_id": "exec_forged", "name": "x", "payload": {}}).encode()
ts = str(int(time.time()))
forged = httpx.post(
    hook_url,
    content=forged_body,
    headers={"X-CueAPI-Signature": "v1=" + "0" * 64, "X-CueAPI-Timestamp": ts},
)
print(f"Forged delivery: {forged.status_code} {deliveries.get(timeout=5)[0]}")
print(f"Stale timestamp accepted: {verify_webhook(forged_body, 'v1=' + '0' * 64, WEBHOOK_SECRET, '1000')}")

server.shutdown()
client.close()
