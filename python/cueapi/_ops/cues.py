"""The operations of ``client.cues``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .. import exceptions as exc
from .._http import Call, Operation
from ..models import Cue, CueList
from .common import _bool, _given, _id, _iso, _mapping, _page


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
    catch_up_max: int | None = None,
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
            catch_up_max=catch_up_max,
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
    catch_up_max: int | None = None,
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
        catch_up_max=catch_up_max,
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
