"""``executions …`` (history, the pull worker's claim cycle, outcomes, verification, replay) and
``workers list|delete``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import exceptions as exc
from .common import CommandParser, UsageError, add_command, add_group
from .context import Context, about, remote
from .output import Cell, status, utc


def _not_none(value: Any) -> str | None:
    return None if value is None else str(value)


# -- history ---------------------------------------------------------------------------------


@remote
def list_executions(ctx: Context) -> None:
    a = ctx.args
    page = ctx.client.executions.list(
        cue_id=a.cue_id,
        status=a.status,
        outcome_state=a.outcome_state,
        result_type=a.result_type,
        has_evidence=True if a.has_evidence else None,
        triggered_by=a.triggered_by,
        limit=a.limit,
        offset=a.offset,
    )
    out = ctx.out
    out.document(page)
    items = page.get("executions") or []
    out.line()
    if not items:
        out.line("No executions found.")
        out.line()
        return
    rows: list[list[Cell]] = [
        [
            str(e.get("id", "?")),
            str(e.get("cue_id", "?")),
            status(e.get("status")),
            str(e.get("outcome_state") or "—"),
            utc(e.get("scheduled_for")),
        ]
        for e in items
    ]
    out.table(["ID", "CUE", "STATUS", "OUTCOME", "SCHEDULED"], rows)
    total = page.get("total")
    if isinstance(total, int) and total > len(items):
        out.line()
        out.line(f"{len(items)} of {total} executions (--offset {a.offset + len(items)} for more)")
    out.line()


@remote
def get(ctx: Context) -> None:
    execution_id = ctx.args.execution_id
    with about("Execution", execution_id):
        e = ctx.client.executions.get(execution_id)
    out = ctx.out
    out.document(e)
    out.line()
    out.field("ID", e.get("id") or execution_id)
    out.field("Cue", f"{e.get('cue_id', '?')}" + (f" ({e['cue_name']})" if e.get("cue_name") else ""))
    out.field("Status", status(e.get("status")))
    out.field("Outcome", e.get("outcome_state") or None)
    out.field("Triggered by", e.get("triggered_by") or None)
    out.field("Scheduled", utc(e["scheduled_for"]) if e.get("scheduled_for") else None)
    out.field("Started", utc(e["started_at"]) if e.get("started_at") else None)
    out.field("Claimed by", e.get("claimed_by_worker") or None)
    out.field("Attempts", _not_none(e.get("attempts")))
    out.field("HTTP status", _not_none(e.get("http_status")))
    out.field("Error", e.get("error_message") or None)
    if e.get("payload") is not None:
        out.field("Payload", json.dumps(e["payload"], indent=2, sort_keys=True))
    out.line()


# -- the claim cycle -------------------------------------------------------------------------


@remote
def list_claimable(ctx: Context) -> None:
    a = ctx.args
    page = ctx.client.executions.list_claimable(task=a.task, agent=a.agent)
    out = ctx.out
    out.document(page)
    items = page.get("executions") or []
    out.line()
    if not items:
        qual = ", ".join(f"{k}={v}" for k, v in (("task", a.task), ("agent", a.agent)) if v)
        out.line(f"No claimable executions{f' ({qual})' if qual else ''}.")
        out.line()
        return
    rows: list[list[Cell]] = [
        [
            str(e.get("execution_id", "?")),
            str(e.get("cue_name", "?")),
            str(e.get("task") or ""),
            utc(e.get("scheduled_for")),
            str(e.get("attempt", 1)),
        ]
        for e in items
    ]
    out.table(["ID", "CUE", "TASK", "SCHEDULED", "ATTEMPT"], rows)
    out.line()


def _claimed(ctx: Context, answer: dict[str, Any]) -> None:
    ctx.out.document(answer)
    ctx.out.success(f"Claimed: {answer.get('execution_id', '?')}")
    if answer.get("lease_seconds") is not None:
        ctx.out.field("Lease", f"{answer['lease_seconds']}s")


@remote
def claim(ctx: Context) -> None:
    a = ctx.args
    with about("Execution", a.execution_id):
        answer = ctx.client.executions.claim(a.execution_id, worker_id=a.worker_id)
    _claimed(ctx, answer)


@remote
def claim_next(ctx: Context) -> None:
    a, out = ctx.args, ctx.out
    try:
        answer = ctx.client.executions.claim_next(worker_id=a.worker_id, task=a.task)
    except exc.ConflictError:
        # Nothing to claim is not a failure (the official CLI exits 0 too).
        out.document({"claimed": False, "reason": "no_executions_available"})
        out.line()
        out.line("No executions available for claiming.")
        out.line()
        return
    if answer.get("claimed") is False:
        out.document(answer)
        out.line()
        out.line(f"No claimable executions for task={a.task}.")
        out.line()
        return
    _claimed(ctx, answer)


@remote
def heartbeat(ctx: Context) -> None:
    a = ctx.args
    with about("Execution", a.execution_id):
        answer = ctx.client.executions.heartbeat(a.execution_id, worker_id=a.worker_id)
    ctx.out.document(answer)
    ctx.out.success(f"Heartbeat acknowledged: {a.execution_id}")
    if answer.get("lease_extended_until"):
        ctx.out.field("Lease until", utc(answer["lease_extended_until"]))


# -- outcomes, verification, replay ----------------------------------------------------------


@remote
def report_outcome(ctx: Context) -> None:
    a = ctx.args
    with about("Execution", a.execution_id):
        answer = ctx.client.executions.report_outcome(
            a.execution_id,
            success=a.success,
            external_id=a.external_id or None,
            result_url=a.result_url or None,
            summary=a.summary or None,
        )
    ctx.out.document(answer)
    ctx.out.success(f"Outcome recorded: {a.execution_id}")
    if not a.success:
        ctx.out.field("Marked", "failure")
    ctx.out.field("Outcome state", answer.get("outcome_state") or None)


@remote
def replay(ctx: Context) -> None:
    execution_id = ctx.args.execution_id
    with about("Execution", execution_id):
        e = ctx.client.executions.replay(execution_id)
    out = ctx.out
    out.document(e)
    out.line()
    out.success(f"Replayed: {execution_id}")
    out.field("New execution", e.get("execution_id") or e.get("id") or None)
    out.field("Scheduled", utc(e["scheduled_for"]) if e.get("scheduled_for") else None)
    out.field("Status", status(e.get("status")))
    out.field("Triggered by", e.get("triggered_by") or None)
    out.line()


@remote
def verification_pending(ctx: Context) -> None:
    execution_id = ctx.args.execution_id
    with about("Execution", execution_id):
        answer = ctx.client.executions.mark_verification_pending(execution_id)
    ctx.out.document(answer)
    ctx.out.line()
    ctx.out.success(f"Marked verification-pending: {execution_id}")
    ctx.out.field("Outcome state", answer.get("outcome_state") or None)
    ctx.out.line()


@remote
def verify(ctx: Context) -> None:
    a = ctx.args
    if a.reason is not None and len(a.reason) > 500:
        raise UsageError("--reason must be ≤500 characters")
    valid = a.valid is not False
    with about("Execution", a.execution_id):
        answer = ctx.client.executions.mark_verified(a.execution_id, valid=valid, reason=a.reason or None)
    ctx.out.document(answer)
    ctx.out.line()
    ctx.out.success(
        f"Verified: {a.execution_id}" if valid else f"Marked verification-failed: {a.execution_id}"
    )
    ctx.out.field("Outcome state", answer.get("outcome_state") or None)
    ctx.out.line()


# -- workers ---------------------------------------------------------------------------------


@remote
def workers_list(ctx: Context) -> None:
    page = ctx.client.workers.list()
    out = ctx.out
    out.document(page)
    workers = page.get("workers") or []
    out.line()
    if not workers:
        out.line("No workers registered yet. Workers register themselves by sending heartbeats.")
        out.line()
        return
    rows: list[list[Cell]] = [
        [
            str(w.get("worker_id", "?")),
            status(w.get("heartbeat_status")),
            utc(w.get("last_heartbeat")),
            str(w.get("seconds_since_heartbeat", "?")),
            str(w.get("claims", "")),
        ]
        for w in workers
    ]
    out.table(["WORKER ID", "STATUS", "LAST HEARTBEAT", "SECONDS AGO", "CLAIMS"], rows)
    total = page.get("total", len(workers))
    out.line()
    out.line(f"{total} worker{'s' if total != 1 else ''}")
    out.line()


@remote
def workers_delete(ctx: Context) -> None:
    a, out = ctx.args, ctx.out
    if not a.yes and not out.confirm(f"Delete worker {a.worker_id}?"):
        out.note("Aborted.")
        return
    with about("Worker", a.worker_id):
        ctx.client.workers.delete(a.worker_id)
    out.document({"worker_id": a.worker_id, "deleted": True})
    out.success(f"Deleted worker: {a.worker_id}")


# -- the parsers -----------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[CommandParser]) -> None:
    group = add_group(
        add_command(
            sub,
            "executions",
            None,
            "Manage executions (worker-transport claim / heartbeat / outcome lifecycle).",
        ),
        "executions_command",
    )
    p = add_command(group, "list", list_executions, "List historical executions across all cues.")
    p.add_argument("--cue-id", help="only this cue's")
    p.add_argument("--status", help="only this status (pending, delivering, success, failed, …)")
    p.add_argument("--outcome-state", help="only this outcome state (e.g. verified_success)")
    p.add_argument("--result-type", help="only outcomes with this result type")
    p.add_argument("--has-evidence", action="store_true", help="only executions with evidence")
    p.add_argument("--triggered-by", help="only those triggered so (schedule, manual_fire, replay, …)")
    p.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    p.add_argument("--offset", type=int, default=0, help="skip this many (default 0)")

    p = add_command(
        group,
        "list-claimable",
        list_claimable,
        "List unclaimed worker-transport executions ready for processing.",
    )
    p.add_argument("--task", help="only this task's")
    p.add_argument("--agent", help="only this agent's")

    p = add_command(group, "get", get, "Fetch a single execution by ID.")
    p.add_argument("execution_id")

    p = add_command(group, "claim", claim, "Atomically claim a specific worker-transport execution.")
    p.add_argument("execution_id")
    p.add_argument("--worker-id", required=True, help="the claiming worker")

    p = add_command(group, "claim-next", claim_next, "Claim the next available worker-transport execution.")
    p.add_argument("--worker-id", required=True, help="the claiming worker")
    p.add_argument("--task", help="only an execution of this task")

    p = add_command(group, "heartbeat", heartbeat, "Extend the claim lease on an in-flight execution.")
    p.add_argument("execution_id")
    p.add_argument("--worker-id", required=True, help="the worker that holds the claim")

    p = add_command(
        group,
        "report-outcome",
        report_outcome,
        "Report the outcome of an execution. Write-once; the outcome is immutable.",
    )
    p.add_argument("execution_id")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--success", dest="success", action="store_true", default=None, help="it worked")
    which.add_argument("--failure", dest="success", action="store_false", help="it did not")
    p.add_argument("--external-id", help="an id of the result elsewhere (evidence)")
    p.add_argument("--result-url", help="where the result is (evidence)")
    p.add_argument("--summary", help="what happened (up to 500 characters)")

    p = add_command(group, "replay", replay, "Replay a terminal execution.")
    p.add_argument("execution_id")

    p = add_command(
        group,
        "verification-pending",
        verification_pending,
        "Mark an execution's outcome verification as pending.",
    )
    p.add_argument("execution_id")

    p = add_command(group, "verify", verify, "Verify or invalidate an execution's evidence.")
    p.add_argument("execution_id")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--valid", dest="valid", action="store_true", default=None, help="the evidence holds (default)"
    )
    which.add_argument("--invalid", dest="valid", action="store_false", help="the evidence does not hold")
    p.add_argument("--reason", help="why (up to 500 characters)")

    workers = add_group(
        add_command(sub, "workers", None, "Manage worker fleet (registered workers + heartbeat status)."),
        "workers_command",
    )
    add_command(workers, "list", workers_list, "List all registered workers with heartbeat status.")
    p = add_command(workers, "delete", workers_delete, "Delete a registered worker.")
    p.add_argument("worker_id")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")
