"""The hosted service's messaging add-on: ``client.agents`` and ``client.messages``
(``cueapi serve`` answers 404 for them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .. import exceptions as exc
from .._http import Call, Operation
from .common import _given, _id, _iso, _page


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
