"""Programs written for the official CueAPI SDK (tests/sdk_programs/*.py: its README, its examples,
and every resource call as a user of its head writes them) run unchanged with only our package
installed: each runs as a subprocess of our .venv's Python against a live ``cueapi serve``, told
the server and key by environment variables only, and must exit 0 and print what it should."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import Server, start_server

PROGRAMS = Path(__file__).resolve().parent / "sdk_programs"
UNSET = ("CUEAPI_API_KEY", "CUEAPI_BASE_URL", "CUEAPI_WEBHOOK_SECRET")


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path / "programs.db")
    yield server
    server.app.close()


def run(program: str, server: Server) -> list[str]:
    """Runs a program with this interpreter (the .venv's, where only our ``cueapi`` is
    installed); returns its output lines after checking it exited 0."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(CUEAPI_BASE_URL=server.url, CUEAPI_API_KEY=server.key, CUEAPI_WEBHOOK_SECRET=server.secret)
    done = subprocess.run(
        [sys.executable, str(PROGRAMS / program)],
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{program} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert done.stderr == "", done.stderr
    return done.stdout.splitlines()


def matches(lines: list[str], patterns: list[str]) -> None:
    """Each output line matches its pattern in full (``re.fullmatch``), and there are no others."""
    assert len(lines) == len(patterns), "\n".join(lines)
    for line, pattern in zip(lines, patterns, strict=True):
        assert re.fullmatch(pattern, line), (pattern, line)


def test_only_our_cueapi_is_installed() -> None:
    check = (
        "import importlib.metadata as m, cueapi\n"
        "try:\n    m.distribution('cueapi-sdk'); sdk = True\n"
        "except m.PackageNotFoundError:\n    sdk = False\n"
        "print(m.distribution('cueapi').metadata['Name'], hasattr(cueapi, 'AsyncCueAPI'), sdk)"
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["cueapi", "True", "False"], out  # ours, and not the official SDK


def test_readme_quickstart(live: Server) -> None:
    lines = run("quickstart.py", live)
    matches(
        lines,
        [
            r"first run: \S+",
            r"schedule: recurring 0 9 \* \* \* America/Los_Angeles",
            r"webhook cue: webhook True POST",
            r"worker cue: worker callback=None",
            r"execution: pending attempts=0 outcome=None",
            r"execution triggered_by: manual_fire cue=True",
            r"schedule refused: cron expression \"not a cron\" has 3 fields; .*",
            r"active cues: 3 \['data-sync', 'morning-agent-brief', 'nightly-pipeline'\]",
            r"got: morning-agent-brief",
            r"updated cron: 0 10 \* \* \*",
            r"paused: paused",
            r"resumed: active",
            r"deleted: None",
            r"executions of nightly-pipeline: 1 True",
        ],
    )
    next_run = datetime.fromisoformat(lines[0].removeprefix("first run: "))
    local = next_run.astimezone(ZoneInfo("America/Los_Angeles"))
    assert (local.hour, local.minute, local.second) == (9, 0, 0)
    # The program's work is on the server.
    names = sorted(c["name"] for c in live.call("GET", "/v1/cues").json()["cues"])
    assert names == ["morning-agent-brief", "nightly-pipeline"]


def test_basic_usage_example(live: Server) -> None:
    matches(
        run("basic_usage.py", live),
        [
            r"Created cue: cue_\w+",
            r"Next run: \d{4}-\d\d-\d\d 17:00:00\+00:00",  # 09:00 in Los Angeles (PST)
            r"retry: 3 \[1, 5, 15\]",
            r"on_failure: email=True pause=False",
            r"One-time cue: cue_\w+ at True type=once",
            r"Total cues: 2",
            r"  cue send-q1-report active",
            r"  cue morning-analytics active",
            r"Fetched: morning-analytics \(0 9 \* \* \*\)",
            r"Updated: updated-analytics \(0 10 \* \* \*\) tz=America/Los_Angeles",
            r"Paused: paused",
            r"Resumed: active",
            r"Deleted both; left: 0",
        ],
    )
    assert live.call("GET", "/v1/cues").json()["total"] == 0


def test_webhook_handler(live: Server) -> None:
    matches(
        run("webhook_handler.py", live),
        [
            r"delivery verified \(200\): the fired execution=True cue=data-sync",
            r'delivered payload: \{"batch": 7, "pipeline": "sync"\}',
            r"Delivery recorded: success",
            r"Outcome: success=True result=synced 21 rows",
            r"Evidence: 21 rows data_sync reported_success",
            r"Forged delivery: 401 401",
            r"Stale timestamp accepted: False",
        ],
    )
    [execution] = live.call("GET", "/v1/executions").json()["executions"]
    assert execution["outcome"]["result"] == "synced 21 rows"
    assert execution["evidence"]["external_id"] == f"sync-{execution['id']}"


def test_worker_flow(live: Server) -> None:
    matches(
        run("worker_flow.py", live),
        [
            r"cue local-data-pipeline: worker task=etl source=postgres",
            r"merged payload: etl mysql",
            r"replaced payload: \['only', 'task'\]",
            r"later: pending manual_fire",
            r"idempotent fire: True",
            r"claimable etl: 3 first=True",
            r"claim_next etl: True True",
            r"heartbeat: True",
            r"outcome: True synced from postgres reported_success",
            r"handled failure: mysql is down",
            r"failure recorded: mysql is down",
            r"claim conflict: 409",
            r"nothing to claim: \{'claimed': False, 'reason': 'no_executions_for_task', "
            r"'task': 'no-such-task'\}",
            r"reported: reported_success",
            r"pending: verification_pending",
            r"verified: verified_success",
            r"replay: replay pending",
            r"history: 4 \['failed', 'pending', 'success'\]",
            r"succeeded: 2",
            r"verified: 1",
            r"replays: 1",
            r"manual fires: 5",
            r"workers: \[\]",
            r"delete unknown worker: CueNotFoundError 404",
            r"usage: cues=2 executions=6",
        ],
    )
    by_state = live.call("GET", "/v1/executions", params={"outcome_state": "verified_success"}).json()
    assert by_state["total"] == 1 and by_state["executions"][0]["outcome"]["external_id"] == "ext-3"


def test_error_handling(live: Server) -> None:
    matches(
        run("errors.py", live),
        [
            r"no key: ValueError",
            r"AuthenticationError 401 invalid_api_key: Invalid API key",
            r"CueNotFoundError 404 cue_not_found",
            r"execution: CueNotFoundError 404",
            r"ValueError: Either 'cron' or 'at' must be provided.*",
            # The envelope, mirrored under `detail` for FastAPI-shaped clients.
            r"InvalidScheduleError 400 invalid_schedule body=\['detail', 'error'\]",
            r"bad zone: InvalidScheduleError 422",
            r"duplicate: CueAPIError 409 duplicate_cue_name",
            r"second outcome: CueAPIError 409 outcome_already_recorded",
            r"bulk_delete\(\[\]\): ValueError: ids must contain at least one cue ID\.",
            r"bulk_delete: deleted True skipped \['cue_missing'\]",
            r"agents: CueNotFoundError 404",
            r"first_divergence_byte: 2 -1",
            r"BodyVerifyMismatchError is a CueAPIError: True BodyVerifyMismatchError\(message_id='exec_1', "
            r"first_divergence_byte=2, sent_len=3, received_len=3\)",
        ],
    )
    # The one cue made (a second of that name was refused) went in the bulk delete.
    assert live.call("GET", "/v1/cues").json()["cues"] == []


def test_models_and_exports(live: Server) -> None:
    matches(
        run("models_and_exports.py", live),
        [
            r"missing exports: \[\]",
            r"old cue: webhook 3 \[1, 5, 15\] UTC",
            r"defaults: None None False \{\}",
            r"sub-models: True True True",
            r"round trip: True",
            r"defaults of parts: True 30 None",
            r"alert extras: \{'consecutive_failures': 3\}",
            r"empty list: 0",
            r"execution: ref-1 True extra=\{'brand_new_field': 1\}",
            r"execution list: 1 exec_1",
            r"worker: w None",
            r"message: a True None",
            r"state: read",
            r"agent: \{\} 1",
            r"payload: \{'task': 'morning-brief', 'kind': 'agent_turn', 'context_ref': 'doc-1', "
            r"'context_mode': 'isolated'\} same=True copy=True empty=\{\}",
            r"CueAPIError: boom 418 teapot \{'error': \{'code': 'teapot'\}\} "
            r"CueAPIError\(message='boom', status_code=418\)",
            r"RateLimitError: 5 429 \{\}",
            r"verify_webhook: True True False False",
            r"base url: https://api\.example\.com",
            r"live: 0",
        ],
    )
