"""The official SDK's basic usage example, step by step: a recurring cue with retries and failure
alerts, a one-time report, list, get, update, pause, resume, delete.

CUEAPI_BASE_URL and CUEAPI_API_KEY say which server and key (passed as the SDK's arguments).
"""

import os
from datetime import datetime, timedelta, timezone

from cueapi import CueAPI

BASE_URL = os.environ["CUEAPI_BASE_URL"]
# The agent's webhook; here the server's own echo endpoint, a callback target for trying cues out.
WEBHOOK = f"{BASE_URL}/v1/echo/basic-usage-example"

with CueAPI(os.environ["CUEAPI_API_KEY"], base_url=BASE_URL) as client:
    analytics = client.cues.create(
        name="morning-analytics",
        cron="0 9 * * *",
        timezone="America/Los_Angeles",
        callback=WEBHOOK,
        payload={"task": "run_analytics"},
        retry={"max_attempts": 3, "backoff_minutes": [1, 5, 15]},
        on_failure={"email": True, "pause": False},
    )
    print(f"Created cue: {analytics.id}")
    print(f"Next run: {analytics.next_run}")
    print(f"retry: {analytics.retry.max_attempts} {analytics.retry.backoff_minutes}")
    print(f"on_failure: email={analytics.on_failure.email} pause={analytics.on_failure.pause}")

    # A one-time report, next quarter (a datetime works as well as an ISO string).
    when = (datetime.now(timezone.utc) + timedelta(days=90)).replace(
        hour=9, minute=0, second=0, microsecond=0
    )
    report = client.cues.create(
        name="send-q1-report",
        at=when,
        callback=WEBHOOK,
        payload={"report_id": "q1"},
    )
    print(f"One-time cue: {report.id} at {report.schedule.at == when} type={report.schedule.type}")

    cues = client.cues.list()
    print(f"Total cues: {cues.total}")
    for c in cues.cues:
        print(f"  cue {c.name} {c.status}")

    fetched = client.cues.get(analytics.id)
    print(f"Fetched: {fetched.name} ({fetched.schedule.cron})")

    updated = client.cues.update(analytics.id, name="updated-analytics", cron="0 10 * * *")
    print(f"Updated: {updated.name} ({updated.schedule.cron}) tz={updated.schedule.timezone}")

    print(f"Paused: {client.cues.pause(analytics.id).status}")
    print(f"Resumed: {client.cues.resume(analytics.id).status}")

    client.cues.delete(analytics.id)
    client.cues.delete(report.id)
    print(f"Deleted both; left: {client.cues.list().total}")
