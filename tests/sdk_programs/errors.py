"""Error handling written for the official SDK: each exception class it documents, caught by a
user, with the attributes the SDK gives them (`status_code`, `code`, `message`, `body`).

CUEAPI_BASE_URL and CUEAPI_API_KEY come from the environment.
"""

import os

from cueapi import (
    AuthenticationError,
    CueAPI,
    CueAPIError,
    CueNotFoundError,
    InvalidScheduleError,
)
from cueapi.exceptions import BodyVerifyMismatchError, first_divergence_byte

base_url = os.environ["CUEAPI_BASE_URL"]
webhook = f"{base_url}/v1/echo/errors-example"  # the server's echo endpoint stands in for an agent
client = CueAPI(os.environ["CUEAPI_API_KEY"], base_url=base_url)

try:
    CueAPI("", base_url=base_url)
except ValueError:
    print("no key: ValueError")

with CueAPI("cue_sk_not_a_real_key_000000000000", base_url=base_url) as wrong:
    try:
        wrong.cues.list()
    except AuthenticationError as e:
        print(f"AuthenticationError {e.status_code} {e.code}: {e}")

try:
    client.cues.get("cue_does_not_exist")
except CueNotFoundError as e:
    print(f"CueNotFoundError {e.status_code} {e.code}")
try:
    client.executions.get("exec_does_not_exist")
except CueNotFoundError as e:
    print(f"execution: CueNotFoundError {e.status_code}")

try:
    client.cues.create(name="no-schedule", callback=webhook)
except ValueError as e:
    print(f"ValueError: {e}")

try:
    client.cues.create(name="bad-cron", cron="not a cron", callback=webhook)
except InvalidScheduleError as e:
    print(f"InvalidScheduleError {e.status_code} {e.code} body={sorted(e.body)}")

try:
    client.cues.create(name="bad-zone", cron="0 9 * * *", timezone="Mars/Olympus", transport="worker")
except InvalidScheduleError as e:
    print(f"bad zone: InvalidScheduleError {e.status_code}")

cue = client.cues.create(name="only-once", cron="0 9 * * *", transport="worker")
try:
    client.cues.create(name="only-once", cron="0 9 * * *", transport="worker")
except CueAPIError as e:
    print(f"duplicate: CueAPIError {e.status_code} {e.code}")

fired = client.cues.fire(cue.id)
client.executions.report_outcome(fired["id"], success=True)
try:
    client.executions.report_outcome(fired["id"], success=False, error="second report")
except CueAPIError as e:
    print(f"second outcome: CueAPIError {e.status_code} {e.code}")

try:
    client.cues.bulk_delete([])
except ValueError as e:
    print(f"bulk_delete([]): ValueError: {e}")
result = client.cues.bulk_delete([cue.id, "cue_missing"])
print(f"bulk_delete: deleted {result['deleted'] == [cue.id]} skipped {result['skipped']}")

try:
    client.agents.list()
except CueNotFoundError as e:
    # Agents and messages are the hosted service's messaging add-on; `cueapi serve` has none.
    print(f"agents: CueNotFoundError {e.status_code}")

print(f"first_divergence_byte: {first_divergence_byte('abXd', 'abcd')} {first_divergence_byte('abc', 'abc')}")
mismatch = BodyVerifyMismatchError(
    "differs", sent_body="abc", received_body="abX", first_divergence_byte=2, message_id="exec_1"
)
print(f"BodyVerifyMismatchError is a CueAPIError: {isinstance(mismatch, CueAPIError)} {mismatch!r}")
client.close()
