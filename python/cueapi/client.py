"""The client of a CueAPI server — ``cueapi serve`` or the hosted service: the official SDK's
surface (``cues``, ``executions``, ``workers``, ``usage``, ``agents``, ``messages``) in a sync
:class:`CueAPI` and an async :class:`AsyncCueAPI` with the same methods.

    with cueapi.CueAPI(base_url="http://127.0.0.1:8000") as client:  # key from CUEAPI_API_KEY
        cue = client.cues.create("nightly", cron="0 2 * * *", callback="https://example.com/run")
        for ex in client.executions.iter(cue_id=cue.id, days=7):
            print(ex.scheduled_for, ex.status, ex.outcome_state)

One pooled connection set per client; idempotent calls are retried on connection failures and
502/503/504, any call on 429 or 503 with ``Retry-After`` (up to a minute); the key is sent only in
the ``Authorization`` header and never shown (``repr`` gives its last four characters).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx

from . import _ops as ops
from . import exceptions as exc
from ._http import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    Call,
    Operation,
    Settings,
    connection_error,
    error_for,
    redacted,
    resolve,
    result_of,
    retry_delay,
)
from .models import Execution

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "AsyncCueAPI",
    "AsyncExecutionContext",
    "CueAPI",
    "ExecutionContext",
]

P = ParamSpec("P")
T = TypeVar("T")


class _Base:
    """What both clients share: the resolved settings and the secret key."""

    _settings: Settings
    _key: str

    def _init(
        self,
        api_key: str | None,
        base_url: str | None,
        timeout: float | httpx.Timeout | None,
        max_retries: int,
    ) -> dict[str, Any]:
        self._key, self._settings = resolve(api_key, base_url, timeout, max_retries)
        return {
            "base_url": self._settings.base_url,
            "timeout": self._settings.timeout,
            "headers": self._settings.headers,
            "follow_redirects": False,
        }

    @property
    def base_url(self) -> str:
        """The server's root URL (without ``/v1``)."""
        return self._settings.base_url

    @property
    def _base_url(self) -> str:  # the official SDK's attribute name
        return self._settings.base_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, api_key={redacted(self._key)!r})"


class CueAPI(_Base):
    """A synchronous client. ``api_key`` defaults to ``CUEAPI_API_KEY`` and ``base_url`` to
    ``CUEAPI_BASE_URL``, else the hosted ``https://api.cueapi.ai``; ``timeout`` is per request
    (seconds, or an ``httpx.Timeout``); ``max_retries`` bounds the retries of one call.
    Use it as a context manager, or call :meth:`close`. Safe to share between threads."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        self._http = httpx.Client(**self._init(api_key, base_url, timeout, max_retries))
        self.cues = CuesResource(self)
        self.executions = ExecutionsResource(self)
        self.workers = WorkersResource(self)
        self.usage = UsageResource(self)
        self.auth = AuthResource(self)
        self.agents = AgentsResource(self)
        self.messages = MessagesResource(self)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Any request (``path`` from the root, e.g. ``/v1/echo/tok``); its parsed JSON."""
        return self._drive(ops.request(method, path, json=json, params=params, headers=headers))

    def close(self) -> None:
        """Closes the connections. Idempotent."""
        self._http.close()

    def __enter__(self) -> CueAPI:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _drive(self, op: Operation[T]) -> T:
        """Runs an operation: sends each call it yields and sends the answer back in; an error
        answer is raised inside it (so it can pass over a conflict), then out of here."""
        try:
            call = next(op)
            while True:
                try:
                    answer = self._send(call)
                except exc.CueAPIError as error:
                    call = op.throw(error)
                else:
                    call = op.send(answer)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _send(self, call: Call) -> Any:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            failure: Exception | None = None
            try:
                response = self._http.request(
                    call.method,
                    call.path,
                    content=call.content(),
                    params=call.params,
                    headers=_headers(call),
                )
            except httpx.TransportError as error:
                failure = error
            if response is not None and response.is_success:
                return result_of(call, response)
            delay = (
                retry_delay(call, attempt, response, failure) if attempt < self._settings.max_retries else -1
            )
            if delay < 0:
                if response is None:
                    raise connection_error(call, self.base_url, failure or Exception()) from failure
                raise error_for(response)
            attempt += 1
            time.sleep(delay)


class AsyncCueAPI(_Base):
    """The asynchronous twin of :class:`CueAPI`: the same resources and methods, awaited.
    Use it as an async context manager, or ``await client.close()``."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        self._http = httpx.AsyncClient(**self._init(api_key, base_url, timeout, max_retries))
        self.cues = AsyncCuesResource(self)
        self.executions = AsyncExecutionsResource(self)
        self.workers = AsyncWorkersResource(self)
        self.usage = AsyncUsageResource(self)
        self.auth = AsyncAuthResource(self)
        self.agents = AsyncAgentsResource(self)
        self.messages = AsyncMessagesResource(self)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Any request (``path`` from the root, e.g. ``/v1/echo/tok``); its parsed JSON."""
        return await self._drive(ops.request(method, path, json=json, params=params, headers=headers))

    async def close(self) -> None:
        """Closes the connections. Idempotent."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncCueAPI:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _drive(self, op: Operation[T]) -> T:
        try:
            call = next(op)
            while True:
                try:
                    answer = await self._send(call)
                except exc.CueAPIError as error:
                    call = op.throw(error)
                else:
                    call = op.send(answer)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def _send(self, call: Call) -> Any:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            failure: Exception | None = None
            try:
                response = await self._http.request(
                    call.method,
                    call.path,
                    content=call.content(),
                    params=call.params,
                    headers=_headers(call),
                )
            except httpx.TransportError as error:
                failure = error
            if response is not None and response.is_success:
                return result_of(call, response)
            delay = (
                retry_delay(call, attempt, response, failure) if attempt < self._settings.max_retries else -1
            )
            if delay < 0:
                if response is None:
                    raise connection_error(call, self.base_url, failure or Exception()) from failure
                raise error_for(response)
            attempt += 1
            await asyncio.sleep(delay)


def _headers(call: Call) -> dict[str, str] | None:
    headers = dict(call.headers or {})
    if call.body is not None:
        headers["Content-Type"] = "application/json"
    return headers or None


# -- resources: each method is an operation of cueapi._ops, driven sync or async ----------------


class _Sync:
    def __init__(self, client: CueAPI) -> None:
        self._client = client


class _Async:
    def __init__(self, client: AsyncCueAPI) -> None:
        self._client = client


def _as_method(method: Any, op: Callable[..., Any]) -> None:
    """Gives a resource method the operation's name and docs, and the signature it really has:
    ``self`` first (without it, ``inspect.signature`` of the bound method, hence ``help()`` and
    every tool that binds arguments by signature, dropped the first argument) and the result
    type instead of the generator's ``Operation[...]``."""
    functools.update_wrapper(method, op)
    method.__name__ = method.__qualname__ = op.__name__.split("_", 1)[1]  # cues_get: get
    sig = inspect.signature(op)
    result = sig.return_annotation
    if isinstance(result, str) and result.startswith("Operation[") and result.endswith("]"):
        result = result[len("Operation[") : -1]
    self_ = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    method.__signature__ = sig.replace(parameters=[self_, *sig.parameters.values()], return_annotation=result)
    # A copy (op's stay as they are); ``__wrapped__`` stays too, so ``typing.get_type_hints``
    # resolves the names where the operation was written.
    method.__annotations__ = {**op.__annotations__, "return": result}


def _sync(op: Callable[P, Operation[T]]) -> Callable[Concatenate[_Sync, P], T]:
    def method(self: _Sync, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._client._drive(op(*args, **kwargs))

    _as_method(method, op)
    return method


def _async(op: Callable[P, Operation[T]]) -> Callable[Concatenate[_Async, P], Coroutine[Any, Any, T]]:
    async def method(self: _Async, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._client._drive(op(*args, **kwargs))

    _as_method(method, op)
    return method


class CuesResource(_Sync):
    """``client.cues``: create, list, get, update, pause, resume, delete, fire, bulk_delete."""

    create = _sync(ops.cues_create)
    list = _sync(ops.cues_list)
    get = _sync(ops.cues_get)
    update = _sync(ops.cues_update)
    pause = _sync(ops.cues_pause)
    resume = _sync(ops.cues_resume)
    delete = _sync(ops.cues_delete)
    bulk_delete = _sync(ops.cues_bulk_delete)
    fire = _sync(ops.cues_fire)


class _Pager:
    """Pages through a history query by ``offset`` to its end, each execution once (one that
    moved to a later page while paging is not shown again)."""

    def __init__(self, page_size: int, filters: dict[str, Any]) -> None:
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 1000:
            raise exc.ValidationError("page_size must be an int between 1 and 1000")
        self.filters = filters
        self.page_size = page_size
        self.offset = 0
        self.done = False
        self.seen: set[str] = set()

    def op(self) -> Operation[dict[str, Any]]:
        return ops.executions_list(limit=self.page_size, offset=self.offset, **self.filters)

    def take(self, page: dict[str, Any]) -> Iterator[Execution]:
        items = page.get("executions") or page.get("data") or []
        self.offset += len(items)
        total = page.get("total")
        self.done = (
            not items or len(items) < self.page_size or (isinstance(total, int) and self.offset >= total)
        )
        for item in items:
            execution = Execution.model_validate(item)
            if execution.id not in self.seen:
                self.seen.add(execution.id)
                yield execution


def _filters(
    cue_id: str | None,
    status: str | Sequence[str] | None,
    outcome_state: str | None,
    triggered_by: str | None,
    has_evidence: bool | None,
    result_type: str | None,
    days: float | None,
    since: str | datetime | None,
) -> dict[str, Any]:
    return {
        "cue_id": cue_id,
        "status": status,
        "outcome_state": outcome_state,
        "triggered_by": triggered_by,
        "has_evidence": has_evidence,
        "result_type": result_type,
        "days": days,
        "since": since,
    }


class ExecutionsResource(_Sync):
    """``client.executions``: history, outcomes and evidence, verification, replay, and the pull
    worker's claim cycle."""

    list = _sync(ops.executions_list)
    get = _sync(ops.executions_get)
    report_outcome = _sync(ops.executions_report_outcome)
    append_evidence = _sync(ops.executions_append_evidence)
    replay = _sync(ops.executions_replay)
    mark_verified = _sync(ops.executions_mark_verified)
    mark_verification_pending = _sync(ops.executions_mark_verification_pending)
    list_claimable = _sync(ops.executions_list_claimable)
    claim = _sync(ops.executions_claim)
    claim_next = _sync(ops.executions_claim_next)
    heartbeat = _sync(ops.executions_heartbeat)

    def iter(
        self,
        *,
        cue_id: str | None = None,
        status: str | Sequence[str] | None = None,
        outcome_state: str | None = None,
        triggered_by: str | None = None,
        has_evidence: bool | None = None,
        result_type: str | None = None,
        days: float | None = None,
        since: str | datetime | None = None,
        page_size: int = 100,
    ) -> Iterator[Execution]:
        """Every execution matching the filters (those of :meth:`list`), newest first, as
        :class:`~cueapi.Execution` models, fetching page after page until the end."""
        f = _filters(cue_id, status, outcome_state, triggered_by, has_evidence, result_type, days, since)
        pager = _Pager(page_size, f)
        while not pager.done:
            yield from pager.take(self._client._drive(pager.op()))

    def handle(self, execution_id: str, payload: dict[str, Any] | None = None) -> ExecutionContext:
        """A context manager that reports the outcome when its block ends: success (with
        ``ctx.result`` and ``ctx.evidence``), or failure with the exception's text (which
        still propagates)."""
        return ExecutionContext(self, execution_id, payload)


class AsyncExecutionsResource(_Async):
    """``client.executions`` of :class:`AsyncCueAPI`."""

    list = _async(ops.executions_list)
    get = _async(ops.executions_get)
    report_outcome = _async(ops.executions_report_outcome)
    append_evidence = _async(ops.executions_append_evidence)
    replay = _async(ops.executions_replay)
    mark_verified = _async(ops.executions_mark_verified)
    mark_verification_pending = _async(ops.executions_mark_verification_pending)
    list_claimable = _async(ops.executions_list_claimable)
    claim = _async(ops.executions_claim)
    claim_next = _async(ops.executions_claim_next)
    heartbeat = _async(ops.executions_heartbeat)

    async def iter(
        self,
        *,
        cue_id: str | None = None,
        status: str | Sequence[str] | None = None,
        outcome_state: str | None = None,
        triggered_by: str | None = None,
        has_evidence: bool | None = None,
        result_type: str | None = None,
        days: float | None = None,
        since: str | datetime | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Execution]:
        """Every execution matching the filters, newest first, page after page."""
        f = _filters(cue_id, status, outcome_state, triggered_by, has_evidence, result_type, days, since)
        pager = _Pager(page_size, f)
        while not pager.done:
            for execution in pager.take(await self._client._drive(pager.op())):
                yield execution

    def handle(self, execution_id: str, payload: dict[str, Any] | None = None) -> AsyncExecutionContext:
        """The ``async with`` twin of :meth:`ExecutionsResource.handle`."""
        return AsyncExecutionContext(self, execution_id, payload)


class _Handled:
    """What a ``handle()`` block sets: ``result`` and ``evidence`` (a dict of
    ``report_outcome`` keywords)."""

    def __init__(self, execution_id: str, payload: dict[str, Any] | None) -> None:
        self.execution_id = execution_id
        self.payload: dict[str, Any] = payload or {}
        self.result: Any = None
        self.error: str | None = None
        self.evidence: dict[str, Any] | None = None

    def _report(self, error: BaseException | None) -> dict[str, Any]:
        if error is not None:
            self.error = str(error)[:2000]
            return {"success": False, "error": self.error}
        kwargs: dict[str, Any] = {"success": True}
        if self.result:
            kwargs["result"] = str(self.result)[:2000]
        if self.evidence:
            kwargs.update(self.evidence)
        return kwargs


class ExecutionContext(_Handled):
    """See :meth:`ExecutionsResource.handle`."""

    def __init__(
        self, resource: ExecutionsResource, execution_id: str, payload: dict[str, Any] | None
    ) -> None:
        super().__init__(execution_id, payload)
        self._resource = resource

    def __enter__(self) -> ExecutionContext:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._resource.report_outcome(self.execution_id, **self._report(e))


class AsyncExecutionContext(_Handled):
    """See :meth:`AsyncExecutionsResource.handle`."""

    def __init__(
        self, resource: AsyncExecutionsResource, execution_id: str, payload: dict[str, Any] | None
    ) -> None:
        super().__init__(execution_id, payload)
        self._resource = resource

    async def __aenter__(self) -> AsyncExecutionContext:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._resource.report_outcome(self.execution_id, **self._report(e))


class AsyncCuesResource(_Async):
    """``client.cues`` of :class:`AsyncCueAPI`."""

    create = _async(ops.cues_create)
    list = _async(ops.cues_list)
    get = _async(ops.cues_get)
    update = _async(ops.cues_update)
    pause = _async(ops.cues_pause)
    resume = _async(ops.cues_resume)
    delete = _async(ops.cues_delete)
    bulk_delete = _async(ops.cues_bulk_delete)
    fire = _async(ops.cues_fire)


class WorkersResource(_Sync):
    """``client.workers``: list, delete, and the worker heartbeat."""

    list = _sync(ops.workers_list)
    delete = _sync(ops.workers_delete)
    heartbeat = _sync(ops.workers_heartbeat)


class AsyncWorkersResource(_Async):
    """``client.workers`` of :class:`AsyncCueAPI`."""

    list = _async(ops.workers_list)
    delete = _async(ops.workers_delete)
    heartbeat = _async(ops.workers_heartbeat)


class UsageResource(_Sync):
    """``client.usage``."""

    get = _sync(ops.usage_get)


class AsyncUsageResource(_Async):
    """``client.usage`` of :class:`AsyncCueAPI`."""

    get = _async(ops.usage_get)


class AuthResource(_Sync):
    """``client.auth``: the account, and the key and webhook secret rotations."""

    me = _sync(ops.auth_me)
    regenerate_key = _sync(ops.auth_regenerate_key)
    webhook_secret = _sync(ops.auth_webhook_secret)
    regenerate_webhook_secret = _sync(ops.auth_regenerate_webhook_secret)


class AsyncAuthResource(_Async):
    """``client.auth`` of :class:`AsyncCueAPI`."""

    me = _async(ops.auth_me)
    regenerate_key = _async(ops.auth_regenerate_key)
    webhook_secret = _async(ops.auth_webhook_secret)
    regenerate_webhook_secret = _async(ops.auth_regenerate_webhook_secret)


class AgentsResource(_Sync):
    """``client.agents``: the hosted service's messaging agents (``cueapi serve`` has none)."""

    create = _sync(ops.agents_create)
    list = _sync(ops.agents_list)
    get = _sync(ops.agents_get)
    update = _sync(ops.agents_update)
    delete = _sync(ops.agents_delete)
    webhook_secret_get = _sync(ops.agents_webhook_secret_get)
    webhook_secret_regenerate = _sync(ops.agents_webhook_secret_regenerate)
    inbox = _sync(ops.agents_inbox)
    sent = _sync(ops.agents_sent)
    roster = _sync(ops.agents_roster)
    presence = _sync(ops.agents_presence)
    subscriptions_create = _sync(ops.agents_subscriptions_create)
    subscriptions_list = _sync(ops.agents_subscriptions_list)
    subscriptions_delete = _sync(ops.agents_subscriptions_delete)
    events_pull = _sync(ops.agents_events_pull)


class AsyncAgentsResource(_Async):
    """``client.agents`` of :class:`AsyncCueAPI`."""

    create = _async(ops.agents_create)
    list = _async(ops.agents_list)
    get = _async(ops.agents_get)
    update = _async(ops.agents_update)
    delete = _async(ops.agents_delete)
    webhook_secret_get = _async(ops.agents_webhook_secret_get)
    webhook_secret_regenerate = _async(ops.agents_webhook_secret_regenerate)
    inbox = _async(ops.agents_inbox)
    sent = _async(ops.agents_sent)
    roster = _async(ops.agents_roster)
    presence = _async(ops.agents_presence)
    subscriptions_create = _async(ops.agents_subscriptions_create)
    subscriptions_list = _async(ops.agents_subscriptions_list)
    subscriptions_delete = _async(ops.agents_subscriptions_delete)
    events_pull = _async(ops.agents_events_pull)


class MessagesResource(_Sync):
    """``client.messages``: the hosted service's agent messages (``cueapi serve`` has none)."""

    send = _sync(ops.messages_send)
    get = _sync(ops.messages_get)
    mark_read = _sync(ops.messages_mark_read)
    ack = _sync(ops.messages_ack)


class AsyncMessagesResource(_Async):
    """``client.messages`` of :class:`AsyncCueAPI`."""

    send = _async(ops.messages_send)
    get = _async(ops.messages_get)
    mark_read = _async(ops.messages_mark_read)
    ack = _async(ops.messages_ack)
