"""The operations of ``client.executions``: history, outcomes and evidence, verification, replay
and the pull worker's claim cycle."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from .. import exceptions as exc
from .._http import Call, Operation
from .common import _bool, _given, _id, _iso, _mapping, _page


def _history_params(
    *,
    cue_id: str | None,
    status: str | Sequence[str] | None,
    outcome_state: str | None,
    triggered_by: str | None,
    has_evidence: bool | None,
    result_type: str | None,
    days: float | None,
    since: str | datetime | None,
    limit: int,
    offset: int,
) -> dict[str, Any]:
    params: dict[str, Any] = _page(limit, offset)
    if cue_id:
        params["cue_id"] = cue_id
    if isinstance(status, str):
        if status:
            params["status"] = status
    elif status is not None:
        params["status__in"] = ",".join(status)
    params.update(_given(outcome_state=outcome_state or None, triggered_by=triggered_by or None))
    if has_evidence is not None:
        params["has_evidence"] = "true" if _bool(has_evidence, "has_evidence") else "false"
    if result_type:
        params["result_type"] = result_type
    if days is not None:
        whole = isinstance(days, int) or (isinstance(days, float) and days.is_integer())
        if isinstance(days, bool) or not whole or not 0 < days <= 36500:
            raise exc.ValidationError(
                f"days must be a whole number of days from 1 to 36500, not {days!r} (use since= for less)"
            )
        params["days"] = int(days)
    if since is not None:
        if days is not None:
            raise exc.ValidationError("give since or days, not both")
        if isinstance(since, datetime) and since.tzinfo is None:
            since = since.replace(tzinfo=timezone.utc)
        params["since"] = _iso(since, "since")
    return params


def executions_list(
    *,
    cue_id: str | None = None,
    status: str | Sequence[str] | None = None,
    outcome_state: str | None = None,
    triggered_by: str | None = None,
    limit: int = 20,
    offset: int = 0,
    has_evidence: bool | None = None,
    result_type: str | None = None,
    days: float | None = None,
    since: str | datetime | None = None,
) -> Operation[dict[str, Any]]:
    """One page of executions, newest first, as the server's dict (``executions``, ``total``,
    ``limit``, ``offset``). ``status`` is one status (``"all"`` for any) or several; ``days``
    or ``since`` bound them by scheduled time; ``has_evidence`` and ``result_type`` select by
    evidence."""
    params = _history_params(
        cue_id=cue_id,
        status=status,
        outcome_state=outcome_state,
        triggered_by=triggered_by,
        has_evidence=has_evidence,
        result_type=result_type,
        days=days,
        since=since,
        limit=limit,
        offset=offset,
    )
    return dict((yield Call("GET", "/v1/executions", params=params)))


def executions_get(execution_id: str) -> Operation[dict[str, Any]]:
    """One execution with its attempt log, as the server's dict."""
    return dict((yield Call("GET", f"/v1/executions/{_id(execution_id, 'execution_id')}")))


def executions_report_outcome(
    execution_id: str,
    *,
    success: bool,
    result: str | None = None,
    error: str | None = None,
    metadata: dict[str, Any] | None = None,
    external_id: str | None = None,
    result_url: str | None = None,
    result_ref: str | None = None,
    result_type: str | None = None,
    summary: str | None = None,
    artifacts: list[Any] | None = None,
    retry: bool | None = None,
) -> Operation[dict[str, Any]]:
    """Reports what the work did (once per execution), with the evidence behind it. A reported
    failure is final; ``retry=True`` (a cueapi extension) says the run itself failed (a crash),
    so that the cue's retry policy runs it again."""
    body: dict[str, Any] = {"success": _bool(success, "success")}
    body.update(
        _given(
            result=result,
            error=error,
            metadata=_mapping(metadata, "metadata"),
            external_id=external_id,
            result_url=result_url,
            result_ref=result_ref,
            result_type=result_type,
            summary=summary,
            artifacts=None if artifacts is None else list(artifacts),
            retry=retry,
        )
    )
    path = f"/v1/executions/{_id(execution_id, 'execution_id')}/outcome"
    return dict((yield Call("POST", path, body)))


def executions_append_evidence(
    execution_id: str,
    *,
    external_id: str | None = None,
    result_url: str | None = None,
    result_ref: str | None = None,
    result_type: str | None = None,
    summary: str | None = None,
    artifacts: list[Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Operation[dict[str, Any]]:
    """Adds evidence to an execution after its outcome (earlier evidence is kept)."""
    body = _given(
        external_id=external_id,
        result_url=result_url,
        result_ref=result_ref,
        result_type=result_type,
        summary=summary,
        artifacts=None if artifacts is None else list(artifacts),
        metadata=_mapping(metadata, "metadata"),
    )
    if not body:
        raise exc.ValidationError("append_evidence needs at least one evidence field")
    path = f"/v1/executions/{_id(execution_id, 'execution_id')}/evidence"
    return dict((yield Call("PATCH", path, body, idempotent=True)))


def executions_replay(execution_id: str) -> Operation[dict[str, Any]]:
    """Runs an execution again as a new one (``triggered_by: "replay"``)."""
    path = f"/v1/executions/{_id(execution_id, 'execution_id')}/replay"
    return dict((yield Call("POST", path, {})))


def executions_mark_verified(
    execution_id: str, *, valid: bool = True, reason: str | None = None
) -> Operation[dict[str, Any]]:
    """Settles a pending verification: ``valid`` or not, with an optional ``reason``."""
    body: dict[str, Any] = {"valid": _bool(valid, "valid")}
    body.update(_given(reason=reason))
    path = f"/v1/executions/{_id(execution_id, 'execution_id')}/verify"
    return dict((yield Call("POST", path, body, idempotent=True)))


def executions_mark_verification_pending(execution_id: str) -> Operation[dict[str, Any]]:
    """Marks an execution's outcome as waiting for verification."""
    path = f"/v1/executions/{_id(execution_id, 'execution_id')}/verification-pending"
    return dict((yield Call("POST", path, {}, idempotent=True)))


def executions_list_claimable(
    *,
    task: str | None = None,
    agent: str | None = None,
    worker_id: str | None = None,
    limit: int | None = None,
) -> Operation[dict[str, Any]]:
    """Worker executions that are due and unclaimed, oldest first (``task`` and ``worker_id``
    filter before the limit)."""
    params = _given(task=task, agent=agent, worker_id=worker_id, limit=limit)
    return dict((yield Call("GET", "/v1/executions/claimable", params=params)))


def executions_claim(execution_id: str, *, worker_id: str) -> Operation[dict[str, Any]]:
    """Claims one worker execution for ``worker_id`` (409 ConflictError if someone has it)."""
    path = f"/v1/executions/{_id(execution_id, 'execution_id')}/claim"
    _id(worker_id, "worker_id")
    return dict((yield Call("POST", path, {"worker_id": worker_id})))


def executions_claim_next(*, worker_id: str, task: str | None = None) -> Operation[dict[str, Any]]:
    """Claims the oldest claimable execution (of ``task``, if given). Without a task, nothing to
    claim is a 409 ConflictError, as in the SDK; with one, ``{"claimed": False, "reason":
    "no_executions_for_task", "task": task}``. With a task, an execution another worker takes
    first is passed over for the next one."""
    _id(worker_id, "worker_id")
    if task is None:
        return dict((yield Call("POST", "/v1/executions/claim", {"worker_id": worker_id})))
    listed = yield from executions_list_claimable(task=task)
    for item in listed.get("executions") or []:
        try:
            return (yield from executions_claim(str(item["execution_id"]), worker_id=worker_id))
        except exc.ConflictError:
            continue
    return {"claimed": False, "reason": "no_executions_for_task", "task": task}


def executions_heartbeat(execution_id: str, *, worker_id: str | None = None) -> Operation[dict[str, Any]]:
    """Extends the lease of a claimed execution (``worker_id`` proves it is the holder's)."""
    headers = {} if worker_id is None else {"X-Worker-Id": worker_id}
    path = f"/v1/executions/{_id(execution_id, 'execution_id')}/heartbeat"
    return dict((yield Call("POST", path, {}, headers=headers, idempotent=True)))
