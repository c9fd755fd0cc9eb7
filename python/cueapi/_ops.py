"""The client's operations, each written once: a generator that checks its arguments, yields the
:class:`~cueapi._http.Call` values it needs, and turns the answers into its result. The sync
and async clients (:mod:`cueapi.client`) drive the same generators.

Requests are the official SDK's, byte for byte where it matters (bodies omit arguments left at
None; ``fire`` sends ``X-CueAPI-Verify-Echo`` unless ``auto_verify=False``); return types are
its too (models for cues, dicts elsewhere), so a program written for it runs unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timezone
from typing import Any
from urllib.parse import quote

from . import exceptions as exc
from ._http import Call, Operation
from .models import Cue, CueList


def _id(value: object, what: str) -> str:
    """A path segment: a non-empty string, escaped (ids never need it; hostile input does)."""
    if not isinstance(value, str) or not value.strip():
        raise exc.ValidationError(f"{what} must be a non-empty string, not {value!r}")
    return quote(value, safe="")


def _iso(value: str | datetime | date | None, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raise exc.ValidationError(f"{what} must be an ISO-8601 string or a datetime, not {type(value).__name__}")


def _given(**fields: Any) -> dict[str, Any]:
    """The fields whose value is not None, in order."""
    return {k: v for k, v in fields.items() if v is not None}


def _mapping(value: object, what: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise exc.ValidationError(f"{what} must be a dict, not {type(value).__name__}")
    return dict(value)


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise exc.ValidationError(f"{what} must be True or False, not {value!r}")
    return value


def _page(limit: object, offset: object) -> dict[str, int]:
    for name, value in (("limit", limit), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise exc.ValidationError(f"{name} must be a non-negative int, not {value!r}")
    assert isinstance(limit, int) and isinstance(offset, int)
    return {"limit": limit, "offset": offset}


# -- cues -------------------------------------------------------------------------------------


def cues_create(
    name: str,
    *,
    cron: str | None = None,
    at: str | datetime | None = None,
    timezone: str = "UTC",
    callback: str | None = None,
    callback_method: str = "POST",
    callback_headers: dict[str, str] | None = None,
    transport: str = "webhook",
    payload: dict[str, Any] | None = None,
    description: str | None = None,
    retry: dict[str, Any] | None = None,
    on_failure: dict[str, Any] | None = None,
    every: str | None = None,
    delivery: dict[str, Any] | None = None,
    alerts: dict[str, Any] | None = None,
    catch_up: str | dict[str, Any] | None = None,
    overlap: str | None = None,
    verification: dict[str, Any] | None = None,
    on_success_fire: str | None = None,
    required_payload_keys: list[str] | None = None,
    require_payload_override: bool | None = None,
) -> Operation[Cue]:
    """Creates a cue: on a ``cron`` schedule (in ``timezone``), once ``at`` an instant, or
    ``every`` interval (``"30s"``, ``"5m"``; a cueapi extension). A ``callback`` URL makes it a
    webhook cue; ``transport="worker"`` one that pull workers claim. The keyword arguments after
    ``on_failure`` are the server's other cue fields, sent only when given."""
    if cron is not None:
        schedule: dict[str, Any] = {"type": "recurring", "cron": cron, "timezone": timezone}
    elif at is not None:
        schedule = {"type": "once", "at": _iso(at, "at"), "timezone": timezone}
    elif every is not None:
        schedule = {"type": "interval", "every": every, "timezone": timezone}
    else:
        raise exc.ValidationError("Either 'cron' or 'at' must be provided (or 'every' for an interval)")
    body: dict[str, Any] = {
        "name": name,
        "schedule": schedule,
        "transport": transport,
        "payload": _mapping(payload, "payload") or {},
    }
    if callback is not None:
        cb: dict[str, Any] = {"url": callback, "method": callback_method}
        if callback_headers:
            cb["headers"] = dict(callback_headers)
        body["callback"] = cb
    body.update(
        _given(
            description=description,
            retry=_mapping(retry, "retry"),
            on_failure=_mapping(on_failure, "on_failure"),
            delivery=_mapping(delivery, "delivery"),
            alerts=_mapping(alerts, "alerts"),
            catch_up=catch_up,
            overlap=overlap,
            verification=_mapping(verification, "verification"),
            on_success_fire=on_success_fire,
            required_payload_keys=None if required_payload_keys is None else list(required_payload_keys),
            require_payload_override=require_payload_override,
        )
    )
    return Cue.model_validate((yield Call("POST", "/v1/cues", body)))


def cues_list(*, limit: int = 20, offset: int = 0, status: str | None = None) -> Operation[CueList]:
    """One page of cues, optionally only ``active`` or ``paused`` ones."""
    params: dict[str, Any] = _page(limit, offset)
    params.update(_given(status=status))
    return CueList.model_validate((yield Call("GET", "/v1/cues", params=params)))


def cues_get(cue_id: str) -> Operation[Cue]:
    """One cue."""
    return Cue.model_validate((yield Call("GET", f"/v1/cues/{_id(cue_id, 'cue_id')}")))


def cues_update(
    cue_id: str,
    *,
    name: str | None = None,
    description: str | None = None,
    status: str | None = None,
    cron: str | None = None,
    at: str | datetime | None = None,
    timezone: str | None = None,
    callback: str | None = None,
    payload: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
    on_failure: dict[str, Any] | None = None,
    every: str | None = None,
    callback_method: str | None = None,
    callback_headers: dict[str, str] | None = None,
    delivery: dict[str, Any] | None = None,
    alerts: dict[str, Any] | None = None,
    catch_up: str | dict[str, Any] | None = None,
    overlap: str | None = None,
    verification: dict[str, Any] | None = None,
    on_success_fire: str | None = None,
    required_payload_keys: list[str] | None = None,
    require_payload_override: bool | None = None,
) -> Operation[Cue]:
    """Changes the given fields of a cue; the others stay as they are. ``timezone`` alone moves
    the current schedule to that zone."""
    body = _given(
        name=name,
        description=description,
        status=status,
        payload=_mapping(payload, "payload"),
        retry=_mapping(retry, "retry"),
        on_failure=_mapping(on_failure, "on_failure"),
        delivery=_mapping(delivery, "delivery"),
        alerts=_mapping(alerts, "alerts"),
        catch_up=catch_up,
        overlap=overlap,
        verification=_mapping(verification, "verification"),
        on_success_fire=on_success_fire,
        required_payload_keys=None if required_payload_keys is None else list(required_payload_keys),
        require_payload_override=require_payload_override,
    )
    schedule: dict[str, Any] | None = None
    if cron is not None:
        schedule = {"type": "recurring", "cron": cron}
    elif at is not None:
        schedule = {"type": "once", "at": _iso(at, "at")}
    elif every is not None:
        schedule = {"type": "interval", "every": every}
    if timezone is not None:
        if schedule is None:
            current: Cue = yield from cues_get(cue_id)
            schedule = {"type": current.schedule.type}
            for key in ("cron", "every"):
                if getattr(current.schedule, key) is not None:
                    schedule[key] = getattr(current.schedule, key)
            if current.schedule.at is not None:
                schedule["at"] = current.schedule.at.isoformat()
        schedule["timezone"] = timezone
    if schedule is not None:
        body["schedule"] = schedule
    if callback is not None or callback_method is not None or callback_headers is not None:
        body["callback"] = _given(
            url=callback,
            method=callback_method,
            headers=None if callback_headers is None else dict(callback_headers),
        )
    call = Call("PATCH", f"/v1/cues/{_id(cue_id, 'cue_id')}", body, idempotent=True)
    return Cue.model_validate((yield call))


def cues_pause(cue_id: str) -> Operation[Cue]:
    """Pauses a cue: its ticks are recorded as missed until it is resumed."""
    return (yield from cues_update(cue_id, status="paused"))


def cues_resume(cue_id: str) -> Operation[Cue]:
    """Resumes a paused cue from now."""
    return (yield from cues_update(cue_id, status="active"))


def cues_delete(cue_id: str) -> Operation[None]:
    """Deletes a cue and its history."""
    yield Call("DELETE", f"/v1/cues/{_id(cue_id, 'cue_id')}")
    return None


def cues_bulk_delete(ids: Sequence[str]) -> Operation[dict[str, Any]]:
    """Deletes up to 100 cues; answers ``{"deleted": [...], "skipped": [...]}``."""
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise exc.ValidationError("ids must be a list of cue ids")
    if not ids:
        raise exc.ValidationError("ids must contain at least one cue ID.")
    if len(ids) > 100:
        raise exc.ValidationError(f"Max 100 IDs per call; got {len(ids)}. Split into batches.")
    headers = {"X-Confirm-Destructive": "true"}
    return dict((yield Call("POST", "/v1/cues/bulk-delete", {"ids": list(ids)}, headers=headers)))


def cues_fire(
    cue_id: str,
    *,
    payload_override: dict[str, Any] | None = None,
    merge_strategy: str | None = None,
    send_at: str | datetime | None = None,
    exit_criteria: list[str] | None = None,
    idempotency_key: str | None = None,
    auto_verify: bool = True,
) -> Operation[dict[str, Any]]:
    """Runs a cue now (or at ``send_at``), optionally with ``payload_override`` merged into (or,
    with ``merge_strategy="replace"``, instead of) its payload. The same ``idempotency_key``
    gives the same execution back. Returns the execution as a dict. With ``auto_verify`` (the
    default) a server that echoes what it received is checked against what was sent
    (:class:`~cueapi.exceptions.BodyVerifyMismatchError`)."""
    body = _given(
        payload_override=_mapping(payload_override, "payload_override"),
        merge_strategy=merge_strategy,
        send_at=_iso(send_at, "send_at"),
        exit_criteria=None if exit_criteria is None else list(exit_criteria),
        idempotency_key=idempotency_key,
    )
    headers = {"X-CueAPI-Verify-Echo": "true"} if _bool(auto_verify, "auto_verify") else {}
    call = Call(
        "POST",
        f"/v1/cues/{_id(cue_id, 'cue_id')}/fire",
        body,
        headers=headers,
        idempotent=bool(idempotency_key),
    )
    execution = yield call
    if auto_verify and isinstance(execution, dict):
        _check_echo(call, execution)
    return dict(execution)


def _check_echo(call: Call, answer: dict[str, Any]) -> None:
    sent_bytes = call.content() or b""
    sent = sent_bytes.decode()
    received_raw = answer.get("body_received")
    if isinstance(received_raw, str):
        received: str | None = received_raw
    elif isinstance(received_raw, dict):
        received = json.dumps(received_raw, separators=(",", ":"))
    else:
        received = None
    digest = answer.get("body_received_sha256")
    if isinstance(digest, str) and len(digest) == 64 and hashlib.sha256(sent_bytes).hexdigest() == digest:
        return
    if received is None or received == sent:
        return
    at = exc.first_divergence_byte(sent, received)
    if at == -1:
        at = min(len(sent), len(received))
    raise exc.BodyVerifyMismatchError(
        f"Cue fire body received by the server ({len(received)} bytes) differs from the body sent "
        f"({len(sent)} bytes); first divergence at byte {at}.",
        sent_body=sent,
        received_body=received,
        first_divergence_byte=at,
        message_id=str(answer.get("id", "<unknown>")),
    )


# -- executions ---------------------------------------------------------------------------------


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
) -> Operation[dict[str, Any]]:
    """Reports what the work did (once per execution), with the evidence behind it."""
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


# -- workers, usage, account ------------------------------------------------------------------


def workers_list() -> Operation[dict[str, Any]]:
    """The caller's workers with their heartbeat status and claims."""
    return dict((yield Call("GET", "/v1/workers")))


def workers_delete(worker_id: str) -> Operation[None]:
    """Forgets a worker and puts its claims back in the queue."""
    yield Call("DELETE", f"/v1/workers/{_id(worker_id, 'worker_id')}")
    return None


def workers_heartbeat(worker_id: str, *, handlers: Sequence[str] = ()) -> Operation[dict[str, Any]]:
    """Tells the server a worker is alive and which tasks it handles (what the worker daemon and
    :class:`cueapi.App` in remote mode send)."""
    _id(worker_id, "worker_id")
    body = {"worker_id": worker_id, "handlers": list(handlers)}
    return dict((yield Call("POST", "/v1/worker/heartbeat", body, idempotent=True)))


def usage_get() -> Operation[dict[str, Any]]:
    """This month's usage and the limits (a self-hosted server has none)."""
    return dict((yield Call("GET", "/v1/usage")))


def auth_me() -> Operation[dict[str, Any]]:
    """The caller's account."""
    return dict((yield Call("GET", "/v1/auth/me")))


def auth_regenerate_key() -> Operation[dict[str, Any]]:
    """Replaces the API key at once (the old one stops working); answers with the new one."""
    headers = {"X-Confirm-Destructive": "true"}
    return dict((yield Call("POST", "/v1/auth/key/regenerate", {}, headers=headers)))


def auth_webhook_secret() -> Operation[dict[str, Any]]:
    """The secret webhook deliveries are signed with."""
    return dict((yield Call("GET", "/v1/auth/webhook-secret")))


def auth_regenerate_webhook_secret() -> Operation[dict[str, Any]]:
    """Replaces the webhook signing secret at once."""
    headers = {"X-Confirm-Destructive": "true"}
    return dict((yield Call("POST", "/v1/auth/webhook-secret/regenerate", {}, headers=headers)))


def request(
    method: str,
    path: str,
    *,
    json: Any = None,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Operation[Any]:
    """Any request to the server (``path`` from the root, e.g. ``/v1/echo/tok``): its parsed
    JSON, with errors raised as for every other call."""
    if not isinstance(method, str) or not method.isalpha():
        raise exc.ValidationError(f"method must be an HTTP method such as GET, not {method!r}")
    if not isinstance(path, str) or not path.startswith("/") or "//" in path:
        raise exc.ValidationError(f"path must start with / (e.g. /v1/cues), not {path!r}")
    return (yield Call(method.upper(), path, json, params=params, headers=headers))


# -- the messaging add-on of the hosted service ---------------------------------------------------


def agents_create(
    *,
    display_name: str,
    slug: str | None = None,
    webhook_url: str | None = None,
    metadata: dict[str, Any] | None = None,
    parent_agent_id: str | None = None,
) -> Operation[dict[str, Any]]:
    """Creates an agent (hosted messaging; ``cueapi serve`` answers 404)."""
    body: dict[str, Any] = {"display_name": display_name}
    body.update(
        _given(slug=slug, webhook_url=webhook_url, metadata=metadata, parent_agent_id=parent_agent_id)
    )
    return dict((yield Call("POST", "/v1/agents", body)))


def agents_list(
    *, status: str | None = None, include_deleted: bool = False, limit: int = 50, offset: int = 0
) -> Operation[dict[str, Any]]:
    """One page of agents."""
    params: dict[str, Any] = _page(limit, offset)
    params.update(_given(status=status))
    if include_deleted:
        params["include_deleted"] = "true"
    return dict((yield Call("GET", "/v1/agents", params=params)))


def agents_get(ref: str, *, include_deleted: bool = False) -> Operation[dict[str, Any]]:
    """One agent, by id or ``slug@user``."""
    params = {"include_deleted": "true"} if include_deleted else {}
    return dict((yield Call("GET", f"/v1/agents/{_id(ref, 'ref')}", params=params)))


def agents_update(
    ref: str,
    *,
    display_name: str | None = None,
    webhook_url: str | None = None,
    clear_webhook_url: bool = False,
    status: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Operation[dict[str, Any]]:
    """Changes an agent; ``clear_webhook_url`` removes its webhook URL."""
    if webhook_url is not None and clear_webhook_url:
        raise exc.ValidationError("webhook_url and clear_webhook_url are mutually exclusive")
    body = _given(display_name=display_name, webhook_url=webhook_url, status=status, metadata=metadata)
    if clear_webhook_url:
        body["webhook_url"] = None
    return dict((yield Call("PATCH", f"/v1/agents/{_id(ref, 'ref')}", body, idempotent=True)))


def agents_delete(ref: str) -> Operation[None]:
    """Deletes an agent."""
    yield Call("DELETE", f"/v1/agents/{_id(ref, 'ref')}")
    return None


def agents_webhook_secret_get(ref: str) -> Operation[dict[str, Any]]:
    """An agent's webhook signing secret."""
    return dict((yield Call("GET", f"/v1/agents/{_id(ref, 'ref')}/webhook-secret")))


def agents_webhook_secret_regenerate(ref: str) -> Operation[dict[str, Any]]:
    """Replaces an agent's webhook signing secret."""
    path = f"/v1/agents/{_id(ref, 'ref')}/webhook-secret/regenerate"
    return dict((yield Call("POST", path, {}, headers={"X-Confirm-Destructive": "true"})))


def agents_inbox(
    ref: str, *, state: str | None = None, limit: int = 50, offset: int = 0
) -> Operation[dict[str, Any]]:
    """Messages to an agent."""
    params: dict[str, Any] = _page(limit, offset)
    params.update(_given(state=state))
    return dict((yield Call("GET", f"/v1/agents/{_id(ref, 'ref')}/inbox", params=params)))


def agents_sent(ref: str, *, limit: int = 50, offset: int = 0) -> Operation[dict[str, Any]]:
    """Messages from an agent."""
    return dict((yield Call("GET", f"/v1/agents/{_id(ref, 'ref')}/sent", params=_page(limit, offset))))


def agents_roster(*, if_none_match: str | None = None) -> Operation[dict[str, Any]]:
    """Every agent with its presence (a 304 for an unchanged ``if_none_match`` is an error)."""
    headers = None if if_none_match is None else {"If-None-Match": if_none_match}
    return dict((yield Call("GET", "/v1/agents/roster", headers=headers)))


def agents_presence(ref: str) -> Operation[dict[str, Any]]:
    """Whether an agent is online."""
    return dict((yield Call("GET", f"/v1/agents/{_id(ref, 'ref')}/presence")))


def agents_subscriptions_create(
    ref: str,
    *,
    event_type: str,
    delivery_target: str,
    webhook_url: str | None = None,
    inline_body: bool | None = None,
) -> Operation[dict[str, Any]]:
    """Subscribes an agent to events."""
    body: dict[str, Any] = {"event_type": event_type, "delivery_target": delivery_target}
    body.update(_given(webhook_url=webhook_url, inline_body=inline_body))
    return dict((yield Call("POST", f"/v1/agents/{_id(ref, 'ref')}/subscriptions", body)))


def agents_subscriptions_list(ref: str) -> Operation[dict[str, Any]]:
    """An agent's subscriptions."""
    return dict((yield Call("GET", f"/v1/agents/{_id(ref, 'ref')}/subscriptions")))


def agents_subscriptions_delete(ref: str, subscription_id: str) -> Operation[None]:
    """Removes a subscription."""
    path = f"/v1/agents/{_id(ref, 'ref')}/subscriptions/{_id(subscription_id, 'subscription_id')}"
    yield Call("DELETE", path)
    return None


def agents_events_pull(
    ref: str, *, since: int | None = None, limit: int = 100, event_type: str | None = None
) -> Operation[dict[str, Any]]:
    """Events for an agent since a cursor."""
    params: dict[str, Any] = {"limit": limit}
    params.update(_given(since=since, event_type=event_type))
    return dict((yield Call("GET", f"/v1/agents/{_id(ref, 'ref')}/events", params=params)))


def messages_send(
    *,
    from_agent: str,
    to: str,
    body: str,
    subject: str | None = None,
    reply_to: str | None = None,
    priority: int | None = None,
    expects_reply: bool = False,
    reply_to_agent: str | None = None,
    metadata: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    send_at: str | datetime | None = None,
    auto_verify: bool = True,
    live_fallback_mode: str | None = None,
) -> Operation[dict[str, Any]]:
    """Sends a message between agents (hosted messaging; ``cueapi serve`` answers 404)."""
    if idempotency_key is not None and len(idempotency_key) > 255:
        raise exc.ValidationError("idempotency_key must be ≤255 characters")
    payload: dict[str, Any] = {"to": to, "body": body}
    payload.update(_given(subject=subject, reply_to=reply_to, priority=priority))
    if expects_reply:
        payload["expects_reply"] = True
    payload.update(
        _given(
            reply_to_agent=reply_to_agent,
            metadata=metadata,
            send_at=_iso(send_at, "send_at"),
            live_fallback_mode=live_fallback_mode,
        )
    )
    headers = {"X-Cueapi-From-Agent": from_agent}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    if auto_verify:
        headers["X-CueAPI-Verify-Echo"] = "true"
    answer = yield Call(
        "POST", "/v1/messages", payload, headers=headers, idempotent=idempotency_key is not None
    )
    received = answer.get("body_received") if auto_verify and isinstance(answer, dict) else None
    if isinstance(received, dict):
        received = received.get("body")
    if isinstance(received, str) and received != body:
        at = exc.first_divergence_byte(body, received)
        if at == -1:
            at = min(len(body), len(received))
        raise exc.BodyVerifyMismatchError(
            f"Message body received by the server ({len(received)} chars) differs from the body sent "
            f"({len(body)} chars); first divergence at {at}.",
            sent_body=body,
            received_body=received,
            first_divergence_byte=at,
            message_id=str(answer.get("id", "<unknown>")),
        )
    return dict(answer)


def messages_get(msg_id: str) -> Operation[dict[str, Any]]:
    """One message."""
    return dict((yield Call("GET", f"/v1/messages/{_id(msg_id, 'msg_id')}")))


def messages_mark_read(msg_id: str) -> Operation[dict[str, Any]]:
    """Marks a message read."""
    return dict((yield Call("POST", f"/v1/messages/{_id(msg_id, 'msg_id')}/read", {}, idempotent=True)))


def messages_ack(msg_id: str) -> Operation[dict[str, Any]]:
    """Acknowledges a message."""
    return dict((yield Call("POST", f"/v1/messages/{_id(msg_id, 'msg_id')}/ack", {}, idempotent=True)))
