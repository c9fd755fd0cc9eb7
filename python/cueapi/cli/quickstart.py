"""``cueapi quickstart``: a one-shot cue 15 seconds ahead whose callback is the server's own echo
endpoint (``POST /v1/echo/{token}``); polls ``GET /v1/echo/{token}`` until the delivery shows,
prints its payload, and deletes the cue (also when interrupted)."""

from __future__ import annotations

import argparse
import json
import secrets
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from .. import exceptions as exc
from .common import CommandParser, Failure, add_command
from .context import ApiFailure, Context, remote
from .output import utc

LEAD_SECONDS = 15
# How long to wait for the delivery after the cue's time, and how often to look.
GRACE_SECONDS = 45
POLL_SECONDS = 1.0

PAYLOAD = {"message": "Your first cue! CueAPI is working."}


@remote
def quickstart(ctx: Context) -> None:
    out, client = ctx.out, ctx.client
    base = ctx.settings.base_url
    token = "qs-" + secrets.token_hex(8)
    at = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=LEAD_SECONDS)
    callback = f"{base}/v1/echo/{token}"
    out.line()
    out.line("Setting up your first cue...")
    out.line()
    out.line(f"Step 1: Creating a test cue (fires in {LEAD_SECONDS} seconds)...")
    at_text = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    body: dict[str, Any] = {
        "name": "quickstart-test",
        "description": "Quickstart test cue — safe to delete",
        "schedule": {"type": "once", "at": at_text, "timezone": "UTC"},
        "callback": {"url": callback, "method": "POST"},
        "payload": PAYLOAD,
    }
    try:
        cue: dict[str, Any] = client.request("POST", "/v1/cues", json=body)
    except exc.CueAPIError as e:
        if e.code == "invalid_callback_url":
            raise ApiFailure(
                f"the server refused to call its own echo endpoint ({e.message}). A server on loopback "
                "or a private network must be started with `cueapi serve --allow-private-targets` "
                "for quickstart to work",
                e,
            ) from None
        raise
    cue_id = str(cue["id"])
    try:
        out.line(f"        Created: {cue_id}")
        out.line(f"        Scheduled for: {utc(cue.get('next_run') or at_text)}")
        out.line()
        out.line("Step 2: Waiting for delivery...")
        echo = _wait_for_delivery(ctx, token, at)
        out.document(echo)
        out.success("        Callback delivered!")
        out.line()
        out.line("        Payload:")
        out.line(json.dumps(echo.get("payload"), indent=2, ensure_ascii=False))
        out.line()
    finally:
        out.line("Step 3: Cleaning up test cue...")
        try:
            client.cues.delete(cue_id)
        except exc.CueAPIError as e:
            out.note(f"        (cleanup failed: {e.message}; delete {cue_id} yourself)")
        else:
            out.line("        Deleted.")
            out.line()
    out.line("CueAPI is working!")
    out.line()
    out.line("Next steps:")
    out.line('  cueapi create --name "my-cue" --cron "0 9 * * *" --url https://my-agent.com/webhook')
    out.line("  cueapi list")
    out.line()


def _wait_for_delivery(ctx: Context, token: str, at: datetime) -> dict[str, Any]:
    deadline = time.monotonic() + LEAD_SECONDS + GRACE_SECONDS
    while True:
        echo = ctx.client.request("GET", f"/v1/echo/{token}")
        if isinstance(echo, dict) and echo.get("status") == "delivered":
            return echo
        if time.monotonic() > deadline:
            raise Failure(
                f"timed out waiting for delivery: nothing arrived at the echo endpoint "
                f"{GRACE_SECONDS} s after the cue's time ({utc(at.isoformat())})"
            )
        time.sleep(POLL_SECONDS)


def register(sub: argparse._SubParsersAction[CommandParser]) -> None:
    add_command(
        sub,
        "quickstart",
        quickstart,
        "Guided setup: create a test cue, verify delivery, clean up.",
        description="Creates a one-shot cue 15 s ahead that calls the server's echo endpoint, waits "
        "for the delivery, prints it and deletes the cue. Against `cueapi serve` on loopback the "
        "server needs --allow-private-targets (it calls itself).",
    )
