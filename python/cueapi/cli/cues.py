"""The cue commands: ``create``, ``list``, ``get``, ``update``, ``pause``, ``resume``, ``fire``,
``delete`` and ``bulk-delete``.

Requests are the official CLI's (the same bodies, so the same command line leaves the same cue).
Cue reads and writes go through ``client.request``: the ``cues`` resource answers with models,
which re-render the server's times, and ``--json`` prints the server's answer as it came."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import exceptions as exc
from .common import CommandParser, UsageError, add_command
from .context import Context, about, remote, segment
from .output import Cell, status, utc

# The official CLI's names, then cueapi serve's (sent as given: each server knows its own).
CATCH_UP = ("run_once_if_missed", "skip_missed", "replay_all", "once", "skip", "all")


def json_option(args: argparse.Namespace, name: str) -> Any:
    """The parsed value of a JSON option, or None when not given (or empty)."""
    text = getattr(args, name.replace("-", "_"))
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise UsageError(f"--{name} must be valid JSON") from None


def _keys(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [k.strip() for k in text.split(",") if k.strip()]


def _given(body: dict[str, Any], **fields: Any) -> None:
    body.update({k: v for k, v in fields.items() if v is not None and v != ""})


def _path(cue_id: str) -> str:
    return f"/v1/cues/{segment(cue_id)}"


# -- create ----------------------------------------------------------------------------------


@remote
def create(ctx: Context) -> None:
    a = ctx.args
    if a.cron and a.at:
        raise UsageError("Cannot use both --cron and --at. Choose one.")
    if not a.cron and not a.at:
        raise UsageError("Must specify either --cron or --at.")
    if not a.worker and not a.url:
        raise UsageError("--url is required unless --worker is set.")
    parsed = {n: json_option(a, n) for n in ("payload", "on-failure", "delivery", "alerts", "verification")}
    schedule: dict[str, Any] = {"timezone": a.timezone or "UTC"}
    schedule.update({"type": "recurring", "cron": a.cron} if a.cron else {"type": "once", "at": a.at})
    body: dict[str, Any] = {"name": a.name, "schedule": schedule}
    if a.worker:
        body["transport"] = "worker"
    else:
        body["callback"] = {"url": a.url, "method": a.method or "POST"}
    _given(
        body,
        payload=parsed["payload"],
        description=a.description,
        on_failure=parsed["on-failure"],
        delivery=parsed["delivery"],
        alerts=parsed["alerts"],
        catch_up=a.catch_up,
        verification=parsed["verification"],
        on_success_fire=a.on_success_fire,
        require_payload_override=a.require_payload_override,
    )
    if a.required_keys is not None:
        body["required_payload_keys"] = _keys(a.required_keys)
    cue = ctx.client.request("POST", "/v1/cues", json=body)
    out = ctx.out
    out.document(cue)
    out.line()
    out.success(f"Created: {cue.get('id')}")
    out.field("Name", cue.get("name"))
    out.field("Status", status(cue.get("status")))
    if cue.get("next_run"):
        out.field("Next run", utc(cue["next_run"]))
    out.line()


# -- list / get ------------------------------------------------------------------------------


@remote
def list_cues(ctx: Context) -> None:
    a = ctx.args
    params: dict[str, Any] = {"limit": a.limit, "offset": a.offset}
    if a.status:
        params["status"] = a.status
    page = ctx.client.request("GET", "/v1/cues", params=params)
    out = ctx.out
    out.document(page)
    cues = page.get("cues") or []
    out.line()
    if not cues:
        out.line("No cues yet. Create your first one:")
        out.line('  cueapi create --name "my-cue" --cron "0 9 * * *" --url https://my-agent.com/webhook')
        out.line()
        out.line("Or run `cueapi quickstart` for guided setup.")
        out.line()
        return
    rows: list[list[Cell]] = [
        [str(c.get("id")), str(c.get("name")), status(c.get("status")), utc(c.get("next_run"), seconds=False)]
        for c in cues
    ]
    out.table(["ID", "NAME", "STATUS", "NEXT RUN"], rows)
    total = page.get("total", len(cues))
    active = sum(1 for c in cues if c.get("status") == "active")
    paused = sum(1 for c in cues if c.get("status") == "paused")
    parts = [f"{active} active"] if active else []
    parts += [f"{paused} paused"] if paused else []
    other = total - active - paused
    parts += [f"{other} other"] if other > 0 else []
    shown = f", showing {a.offset + 1}-{a.offset + len(cues)}" if len(cues) < total else ""
    out.line()
    out.line(f"{total} cue{'s' if total != 1 else ''} ({', '.join(parts)}{shown})")
    out.line()


def _schedule(cue: dict[str, Any]) -> str:
    s = cue.get("schedule") or {}
    tz = s.get("timezone") or "UTC"
    if s.get("cron"):
        return f"{s['cron']} ({tz})"
    if s.get("at"):
        return f"once at {utc(s['at'])}"
    if s.get("every"):
        return f"every {s['every']}"
    return "?"


def _attempts(n: Any) -> str:
    return f"{n} attempt{'' if n == 1 else 's'}"


@remote
def get(ctx: Context) -> None:
    cue_id = ctx.args.cue_id
    with about("Cue", cue_id):
        cue = ctx.client.request("GET", _path(cue_id))
    out = ctx.out
    out.document(cue)
    out.line()
    out.field("ID", cue.get("id"))
    out.field("Name", cue.get("name"))
    out.field("Status", status(cue.get("status")))
    out.field("Schedule", _schedule(cue))
    callback = cue.get("callback") or {}
    if cue.get("transport") == "worker":
        out.field("Transport", "worker (claimed by pull workers)")
    else:
        out.field("Callback", f"{callback.get('method') or 'POST'} {callback.get('url') or ''}")
    out.field("Next run", utc(cue["next_run"]) if cue.get("next_run") else None)
    out.field("Last run", utc(cue["last_run"]) if cue.get("last_run") else None)
    out.field("Run count", str(cue.get("run_count", 0)))
    out.field("Created", utc(cue.get("created_at")))
    out.field("Description", cue.get("description") or None)
    if cue.get("payload"):
        out.field("Payload", json.dumps(cue["payload"], sort_keys=True))
    executions = cue.get("executions") or []
    if executions:
        out.line()
        out.line("Recent executions:")
        for e in executions:
            st = e.get("status")
            if st == "success":
                detail = f"({e.get('http_status') or '-'}, {_attempts(e.get('attempts', 0))})"
            elif st == "failed":
                reason = e.get("error_message") or f"HTTP {e.get('http_status') or '?'}"
                detail = f"({reason}, {_attempts(e.get('attempts', 0))})"
            else:
                detail = f"({_attempts(e.get('attempts', 0))})"
            out.line(f"  {utc(e.get('scheduled_for'))}  ", status(st), f"  {detail}")
    out.line()


# -- update / pause / resume -----------------------------------------------------------------


@remote
def update(ctx: Context) -> None:
    a = ctx.args
    if a.on_success_fire and a.clear_on_success_fire:
        raise UsageError("--on-success-fire and --clear-on-success-fire are mutually exclusive.")
    parsed = {n: json_option(a, n) for n in ("payload", "on-failure", "delivery", "alerts", "verification")}
    body: dict[str, Any] = {}
    _given(body, name=a.name)
    if a.cron:
        body["schedule"] = {"type": "recurring", "cron": a.cron}
    if a.url:
        body["callback"] = {"url": a.url}
    _given(
        body,
        description=a.description,
        payload=parsed["payload"],
        on_failure=parsed["on-failure"],
        status=a.status,
        delivery=parsed["delivery"],
        alerts=parsed["alerts"],
        catch_up=a.catch_up,
        verification=parsed["verification"],
        on_success_fire=a.on_success_fire,
    )
    if a.clear_on_success_fire:
        body["on_success_fire"] = None
    _given(body, require_payload_override=a.require_payload_override)
    if a.required_keys is not None:
        body["required_payload_keys"] = _keys(a.required_keys)
    if not body:
        raise UsageError("Must specify at least one field to update.")
    with about("Cue", a.cue_id):
        cue = ctx.client.request("PATCH", _path(a.cue_id), json=body)
    ctx.out.document(cue)
    ctx.out.success(f"Updated: {cue.get('id')} ({cue.get('name')})")


def _set_status(ctx: Context, value: str, verb: str) -> None:
    cue_id = ctx.args.cue_id
    with about("Cue", cue_id):
        cue = ctx.client.request("PATCH", _path(cue_id), json={"status": value})
    ctx.out.document(cue)
    ctx.out.success(f"{verb}: {cue.get('id')} ({cue.get('name')})")
    if value == "active" and cue.get("next_run"):
        ctx.out.field("Next run", utc(cue["next_run"]))


@remote
def pause(ctx: Context) -> None:
    _set_status(ctx, "paused", "Paused")


@remote
def resume(ctx: Context) -> None:
    _set_status(ctx, "active", "Resumed")


# -- fire ------------------------------------------------------------------------------------


@remote
def fire(ctx: Context) -> None:
    a = ctx.args
    override = json_option(a, "payload-override")
    if override is not None and not isinstance(override, dict):
        raise UsageError("--payload-override must be a JSON object")
    criteria = None if a.exit_criteria is None else ([] if "" in a.exit_criteria else list(a.exit_criteria))
    with about("Cue", a.cue_id):
        execution = ctx.client.cues.fire(
            a.cue_id,
            payload_override=override,
            merge_strategy=a.merge_strategy,
            send_at=a.send_at or None,
            exit_criteria=criteria,
            idempotency_key=a.idempotency_key or None,
            auto_verify=a.verify,
        )
    out = ctx.out
    out.document(execution)
    out.success(f"Fired: {a.cue_id}")
    out.field("Execution", execution.get("id") or execution.get("execution_id") or "?")
    if execution.get("scheduled_for"):
        out.field("Scheduled", utc(execution["scheduled_for"]))
    if execution.get("status"):
        out.field("Status", status(execution["status"]))


# -- delete / bulk-delete --------------------------------------------------------------------


@remote
def delete(ctx: Context) -> None:
    a, out = ctx.args, ctx.out
    if not a.yes:
        with about("Cue", a.cue_id):
            name = ctx.client.request("GET", _path(a.cue_id)).get("name") or "unknown"
        if not out.confirm(f"Delete {a.cue_id} ({name})?"):
            out.note("Cancelled.")
            return
    with about("Cue", a.cue_id):
        ctx.client.cues.delete(a.cue_id)
    out.document({"id": a.cue_id, "deleted": True})
    out.line(f"Deleted: {a.cue_id}")


@remote
def bulk_delete(ctx: Context) -> int:
    a, out = ctx.args, ctx.out
    ids = list(dict.fromkeys(a.ids))
    if len(ids) > 100:
        raise UsageError(f"at most 100 ids per call; got {len(ids)}")
    if not a.yes and not out.confirm(f"Delete {len(ids)} cue{'s' if len(ids) != 1 else ''}?"):
        out.note("Cancelled.")
        return 0
    try:
        result = ctx.client.cues.bulk_delete(ids)
    except exc.CueAPIError as e:
        # A server without POST /v1/cues/bulk-delete (an old one; `cueapi serve` has it): one at
        # a time, with the same per-id outcome (deleted, or skipped when not found).
        if e.status_code not in (404, 405) or e.code == "cue_not_found":
            raise
        result = {"deleted": [], "skipped": []}
        for cue_id in ids:
            try:
                ctx.client.cues.delete(cue_id)
            except exc.CueNotFoundError:
                result["skipped"].append(cue_id)
            else:
                result["deleted"].append(cue_id)
    out.document(result)
    deleted, skipped = result.get("deleted") or [], result.get("skipped") or []
    noun = "cue" if len(deleted) == 1 else "cues"
    out.line(f"Deleted {len(deleted)} {noun}" + (f": {' '.join(deleted)}" if deleted else "."))
    if skipped:
        out.error(f"{len(skipped)} not found: {' '.join(skipped)}")
        return 1
    return 0


# -- the parsers -----------------------------------------------------------------------------


def _json_opt(p: CommandParser, name: str, what: str) -> None:
    p.add_argument(f"--{name}", metavar="JSON", help=what)


def _cue_options(p: CommandParser) -> None:
    """The options create and update share."""
    p.add_argument("--url", "--callback", dest="url", help="webhook URL")
    p.add_argument("--payload", metavar="JSON", help="JSON payload")
    p.add_argument("--description", help="description")
    _json_opt(p, "on-failure", 'on failure, e.g. \'{"email": false, "pause": true}\'')
    _json_opt(p, "delivery", "delivery settings, e.g. '{\"timeout_seconds\": 60}'")
    _json_opt(p, "alerts", "alert settings, e.g. '{\"consecutive_failures\": 3}'")
    p.add_argument(
        "--catch-up",
        choices=CATCH_UP,
        metavar="POLICY",
        help="runs missed while down: run_once_if_missed, skip_missed, replay_all (the hosted "
        "service's names) or once, skip, all (cueapi serve's)",
    )
    _json_opt(
        p, "verification", 'verification of reported outcomes, e.g. \'{"mode": "require_external_id"}\''
    )
    p.add_argument("--on-success-fire", metavar="CUE_ID", help="fire this cue after each success")
    p.add_argument(
        "--require-payload-override",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="refuse fires without a payload override",
    )
    p.add_argument(
        "--required-keys", metavar="K1,K2", help="payload keys every fire must carry (comma-separated)"
    )


def register(sub: argparse._SubParsersAction[CommandParser]) -> None:
    p = add_command(sub, "create", create, "Create a new cue.")
    p.add_argument("--name", required=True, help="cue name (unique per account)")
    p.add_argument("--cron", help="cron expression (recurring)")
    p.add_argument("--at", help="ISO-8601 time (once)")
    p.add_argument("--timezone", default="UTC", help="time zone of the cron expression (default UTC)")
    p.add_argument("--method", default="POST", help="webhook HTTP method (default POST)")
    p.add_argument("--worker", action="store_true", help="a worker cue: pull workers claim its executions")
    _cue_options(p)

    p = add_command(sub, "list", list_cues, "List your cues.")
    p.add_argument("--status", help="only cues with this status (active, paused)")
    p.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    p.add_argument("--offset", type=int, default=0, help="skip this many (default 0)")

    p = add_command(sub, "get", get, "Get detailed info about a cue.")
    p.add_argument("cue_id")

    p = add_command(sub, "update", update, "Update an existing cue.")
    p.add_argument("cue_id")
    p.add_argument("--name", help="new name")
    p.add_argument("--cron", help="new cron expression (the cue keeps its time zone)")
    p.add_argument("--status", choices=("active", "paused"), help="active or paused")
    p.add_argument("--clear-on-success-fire", action="store_true", help="remove the chained cue")
    _cue_options(p)

    for name, handler, text in (("pause", pause, "Pause a cue."), ("resume", resume, "Resume a paused cue.")):
        add_command(sub, name, handler, text).add_argument("cue_id")

    p = add_command(sub, "fire", fire, "Fire an existing cue immediately, optionally overriding its payload.")
    p.add_argument("cue_id")
    p.add_argument(
        "--payload-override", metavar="JSON", help="JSON object merged into (or replacing) the payload"
    )
    p.add_argument(
        "--merge-strategy", choices=("merge", "replace"), help="how the override applies (default merge)"
    )
    p.add_argument("--send-at", metavar="TIME", help="run at this ISO-8601 time instead of now")
    p.add_argument("--exit-criteria", action="append", metavar="TEXT", help="an exit criterion (repeatable)")
    p.add_argument("--idempotency-key", metavar="KEY", help="the same key gives back the same execution")
    p.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="ask the server to echo the body it received and check it against the body sent",
    )

    p = add_command(sub, "delete", delete, "Delete a cue.")
    p.add_argument("cue_id")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")

    p = add_command(sub, "bulk-delete", bulk_delete, "Delete several cues (up to 100).")
    p.add_argument("ids", nargs="+", metavar="CUE_ID")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")
