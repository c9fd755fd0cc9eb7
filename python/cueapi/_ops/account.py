"""The operations of ``client.workers``, ``client.usage`` and ``client.auth``, and ``request``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .. import exceptions as exc
from .._http import Call, Operation
from .common import _id


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
