"""The embedded library: decorate functions, and cueapi runs them on schedule, accountably.

Handlers *pull* work: each worker thread blocks in the engine's ``claim`` (without the GIL) until
an execution is due, runs the handler, and reports the outcome with ``complete``. ``async def``
handlers run on an event loop: the App's own, or the caller's under :meth:`App.arun`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import ipaddress
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, Protocol

from . import _cueapi, _limits
from ._time import from_ms, to_ms
from .exceptions import CueAPIError, EngineClosedError, StorageError, ValidationError
from .handler import Context, F, Handler, outcome_from_exception, outcome_from_return, outcome_json
from .models import Cue, Execution, Stats
from .models.lists import CUES, EXECUTIONS
from .schedule import ManualClock

log = logging.getLogger("cueapi")

# `cueapi serve`'s rate limit per API key (or client address) and minute: twenty requests a second
# sustained, with a burst of as many at once, is far above what people, the CLI, SDK scripts and
# a few pull workers send, yet it stops one runaway client from taking the server's whole capacity.
DEFAULT_RATE_LIMIT = _limits.RATE_LIMIT_PER_MINUTE
MAX_RATE_LIMIT = _limits.MAX_RATE_LIMIT_PER_MINUTE
# `cueapi serve`'s connection limits (src/limits.rs).
DEFAULT_HEADER_TIMEOUT = _limits.HEADER_TIMEOUT_SECONDS
DEFAULT_BODY_TIMEOUT = _limits.BODY_TIMEOUT_SECONDS
DEFAULT_MAX_CONNECTIONS = _limits.MAX_CONNECTIONS

# Most jobs one handler thread claims at once.
_BATCH = 32

# Outcomes that could not be written (a full disk) are kept and written again every this many
# seconds, at most this many of them (beyond, the oldest runs are left to be recovered as
# interrupted, and retried, when the database is next opened).
_RETRY_UNRECORDED = 1.0
_MAX_UNRECORDED = 4096
# The same kind of storage problem is logged at most this often, with a count of the rest.
_TELL_EVERY = 60.0


@dataclass
class _Registered:
    name: str
    func: Handler
    is_async: bool


def _retry_spec(retry: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if retry is None:
        return None
    if not isinstance(retry, Mapping):
        raise ValidationError("retry must be a dict like {'max_attempts': 3, 'backoff_minutes': [1, 5, 15]}")
    unknown = set(retry) - {"max_attempts", "backoff_minutes", "retry_reported_failures"}
    if unknown:
        raise ValidationError(f"retry has unknown keys {sorted(unknown)}")
    return dict(retry)


def _seconds(value: float | timedelta | None, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValidationError(f"{name} must be a number of seconds or a timedelta")
    return math.ceil(value)


class _Job(Protocol):
    """A claimed execution, from the native engine or a server."""

    @property
    def execution_id(self) -> str: ...
    @property
    def cue_id(self) -> str: ...
    @property
    def cue_name(self) -> str: ...
    @property
    def scheduled_for(self) -> int: ...
    @property
    def attempt(self) -> int: ...
    @property
    def payload(self) -> str: ...
    @property
    def idempotency_key(self) -> str: ...
    @property
    def triggered_by(self) -> str: ...


class _Engine(Protocol):
    """What an App asks of its engine: the native one over SQLite, or a server's
    (:class:`cueapi.remote.RemoteEngine`)."""

    @property
    def interrupted_on_open(self) -> int: ...
    @property
    def queued(self) -> int: ...
    def now_ms(self) -> int: ...
    def start(self) -> None: ...
    def upsert_cue(self, spec_json: str) -> str: ...
    def create_cues(self, specs_json: str) -> list[str]: ...
    def resolve_cue(self, reference: str) -> str: ...
    def cue(self, cue_id: str) -> str: ...
    def cues(self) -> str: ...
    def unhandled_cues(self, names_json: str, limit: int) -> list[str]: ...
    def pause(self, cue_id: str) -> None: ...
    def resume(self, cue_id: str) -> None: ...
    def delete(self, cue_id: str) -> None: ...
    def fire(self, cue_id: str, payload_json: str | None = None) -> str: ...
    def replay(self, execution_id: str) -> str: ...
    def claim_many(self, max: int, timeout: float) -> Sequence[_Job]: ...
    def finish_many(
        self, reports: list[tuple[str, int, str]], max: int, timeout: float
    ) -> tuple[Sequence[_Job], list[tuple[str, str]]]: ...
    def executions(self, filter_json: str) -> str: ...
    def execution(self, execution_id: str) -> str: ...
    def stats(self, cue_id: str, since_ms: int) -> dict[str, Any]: ...
    def next_problem(self, timeout: float) -> str | None: ...
    def stop_claims(self) -> None: ...
    def close(self) -> None: ...


# Set by `cueapi worker module:app` before it imports the module: every App made while it is set
# works for that server (the keyword arguments `remote`, `api_key`, `worker_id`, `poll_interval`)
# instead of opening a database.
_REMOTE_DEFAULT: dict[str, Any] | None = None


class App:
    """A scheduler of decorated functions: embedded over one SQLite file, or, with ``remote``,
    working for a CueAPI server as a pull worker.

    ``workers`` handler threads run sync handlers (async ones run on an event loop); ``clock`` is
    a :class:`ManualClock` for tests; ``grace`` is how late (seconds) a tick may fire before it
    counts as missed and follows the cue's catch-up policy.

    **Several processes on PostgreSQL.** ``App("postgresql://…")`` keeps its cues and history in
    that database instead of a SQLite file, and any number of copies of the same program may run
    on it: each tick runs once between them, and when one dies (or loses the database) the
    others take over its cues and its unfinished runs within about ``node_lease`` seconds
    (default 3).

    **Remote mode.** ``App(remote="https://host", api_key=...)`` (the key defaults to
    ``CUEAPI_API_KEY``) declares its cues on that server as worker cues (by name: declaring
    again updates the server's cue), then claims, runs and reports their executions, keeping
    each claim's lease alive while its handler runs. The server fires, retries, alerts and keeps
    the history; ``executions()``, ``stats()``, ``fire()`` and the rest read and act on it. Any
    number of processes of the same app may run: each execution goes to one of them, and the work
    of one that dies is taken over when its lease ends. ``worker_id`` names this process to the
    server (default: host name and a random suffix); ``poll_interval`` is how long it waits
    between claims when there is no work.
    """

    def __init__(
        self,
        db: str | os.PathLike[str] = "cueapi.db",
        *,
        workers: int = 8,
        clock: ManualClock | None = None,
        grace: float = 60.0,
        remote: str | None = None,
        api_key: str | None = None,
        worker_id: str | None = None,
        poll_interval: float = 1.0,
        node_lease: float = _limits.NODE_LEASE_SECONDS,
    ) -> None:
        if (
            isinstance(node_lease, bool)
            or not isinstance(node_lease, (int, float))
            or not _limits.MIN_NODE_LEASE_SECONDS <= node_lease <= _limits.MAX_NODE_LEASE_SECONDS
        ):
            raise ValidationError(
                f"node_lease must be a number of seconds between {_limits.MIN_NODE_LEASE_SECONDS:g} "
                f"and {_limits.MAX_NODE_LEASE_SECONDS:g}"
            )
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 1024:
            raise ValidationError("workers must be an int between 1 and 1024")
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace <= 86400 * 7:
            raise ValidationError("grace must be a number of seconds between 0 and one week")
        if remote is None and _REMOTE_DEFAULT is not None:
            remote = _REMOTE_DEFAULT["remote"]
            api_key = api_key or _REMOTE_DEFAULT.get("api_key")
            worker_id = _REMOTE_DEFAULT.get("worker_id") or worker_id
            poll_interval = _REMOTE_DEFAULT.get("poll_interval") or poll_interval
        self._engine: _Engine
        if remote is not None:
            if clock is not None:
                raise ValidationError("clock= is for embedded Apps; a remote App runs on the server's clock")
            if (
                isinstance(poll_interval, bool)
                or not isinstance(poll_interval, (int, float))
                or not 0.01 <= poll_interval <= 60
            ):
                raise ValidationError("poll_interval must be a number of seconds between 0.01 and 60")
            from .client import CueAPI
            from .remote import RemoteEngine

            client = CueAPI(api_key, base_url=remote)
            self._remote: RemoteEngine | None = RemoteEngine(
                client, worker_id=worker_id, poll_interval=float(poll_interval)
            )
            self._engine = self._remote
            self._db = client.base_url
        else:
            if api_key is not None or worker_id is not None:
                raise ValidationError("api_key= and worker_id= are for remote Apps: pass remote=<server URL>")
            self._remote = None
            self._db = _shown_db(os.fspath(db))
            self._engine = _cueapi.NativeEngine(
                os.fspath(db),
                clock=None if clock is None else clock._native,
                grace_ms=round(grace * 1000),
                node_lease_ms=round(node_lease * 1000),
            )
        self._workers = workers
        self._handlers: dict[str, _Registered] = {}
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._own_loop_thread: threading.Thread | None = None
        self._reporter: threading.Thread | None = None
        self._async_slots = threading.BoundedSemaphore(max(workers, 64))
        self._inflight = 0
        self._idle = threading.Condition()
        # Reports a full disk kept from being written: (execution id, attempt, outcome JSON).
        self._unrecorded: list[tuple[str, int, str]] = []
        self._unrecorded_lock = threading.Lock()
        self._retry_at = 0.0
        self._told: dict[str, tuple[float, int]] = {}
        self._stopped = threading.Event()
        self._started = False
        self._closed = False
        self._lock = threading.Lock()
        if self._engine.interrupted_on_open:
            log.warning(
                "recovered %d run(s) interrupted when the previous process exited; they are retried",
                self._engine.interrupted_on_open,
            )

    # -- declaring cues -------------------------------------------------------------------

    def _register(self, func: F, name: str | None, spec: dict[str, Any]) -> F:
        if not callable(func):
            raise ValidationError("the decorated object must be callable")
        cue_name = name if name is not None else getattr(func, "__name__", None)
        if not isinstance(cue_name, str) or not cue_name.strip():
            raise ValidationError("name must be a non-empty string")
        with self._lock:
            if cue_name in self._handlers and self._handlers[cue_name].func is not func:
                raise ValidationError(f"two handlers are named {cue_name!r}; pass name=... to one of them")
            spec["name"] = cue_name
            self._engine.upsert_cue(_dumps(spec, "cue definition"))
            self._handlers[cue_name] = _Registered(cue_name, func, inspect.iscoroutinefunction(func))
        return func

    def cue(
        self,
        schedule: str | None = None,
        *,
        every: str | timedelta | None = None,
        name: str | None = None,
        timezone: str = "UTC",
        payload: Mapping[str, Any] | None = None,
        retry: Mapping[str, Any] | None = None,
        outcome_deadline: float | timedelta | None = None,
        description: str | None = None,
        overlap: str = "skip",
        catch_up: str = "once",
        catch_up_max: int = 100,
        pause_on_failure: bool = False,
        verification: str | None = None,
    ) -> Callable[[F], F]:
        """Runs the decorated function on a cron ``schedule`` (in ``timezone``) or ``every``
        interval (``"30s"``, ``"5m"``, ``"1h"``).

        ``retry``: ``{"max_attempts": 3, "backoff_minutes": [1, 5, 15]}`` means up to 3 retries
        after the first try fails, 1, 5 and 15 minutes apart. ``outcome_deadline``: seconds after
        the run starts by which it must report, else its outcome state is ``outcome_timeout``.
        ``overlap``: ``"skip"`` (default: a tick that comes while the previous run is still going is
        recorded as skipped) or ``"allow"``. ``catch_up`` for ticks missed while the process was
        down: ``"skip"``, ``"once"`` (default: run the latest once) or ``"all"`` (at most
        ``catch_up_max``); every tick not run is recorded with the reason.
        """
        if isinstance(every, timedelta):
            every = f"{math.ceil(every.total_seconds())}s"
        spec: dict[str, Any] = {
            "cron": schedule,
            "every": every,
            "timezone": timezone,
            "description": description,
            "payload": {} if payload is None else payload,
            "retry": _retry_spec(retry),
            "outcome_deadline_seconds": _seconds(outcome_deadline, "outcome_deadline"),
            "overlap": overlap,
            "catch_up": catch_up,
            "catch_up_max": catch_up_max,
            "on_failure_pause": pause_on_failure,
            "verification_mode": verification,
        }
        return lambda func: self._register(func, name, spec)

    def once(
        self,
        at: str | datetime,
        *,
        name: str | None = None,
        timezone: str = "UTC",
        payload: Mapping[str, Any] | None = None,
        retry: Mapping[str, Any] | None = None,
        outcome_deadline: float | timedelta | None = None,
        description: str | None = None,
        verification: str | None = None,
    ) -> Callable[[F], F]:
        """Runs the decorated function once, at ``at``: an aware datetime, or a naive one / an
        ISO-8601 string without offset read as wall time in ``timezone``. It must be in the future
        when first declared; declaring the same one-shot again later is fine."""
        if isinstance(at, datetime):
            at = at.isoformat()
        if not isinstance(at, str):
            raise ValidationError("at must be a datetime or an ISO-8601 string")
        spec: dict[str, Any] = {
            "at": at,
            "timezone": timezone,
            "description": description,
            "payload": {} if payload is None else payload,
            "retry": _retry_spec(retry),
            "outcome_deadline_seconds": _seconds(outcome_deadline, "outcome_deadline"),
            "verification_mode": verification,
        }
        return lambda func: self._register(func, name, spec)

    def handle(self, *names: str) -> Callable[[F], F]:
        """Registers the decorated function as the handler of cues that already exist by these
        names (created with :meth:`create_cues`, say), without changing their definitions."""
        if not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise ValidationError("handle() needs one or more cue names")

        def register(func: F) -> F:
            if not callable(func):
                raise ValidationError("the decorated object must be callable")
            is_async = inspect.iscoroutinefunction(func)
            with self._lock:
                for name in names:
                    self._handlers[name] = _Registered(name, func, is_async)
            return func

        return register

    def create_cues(self, specs: Iterable[Mapping[str, Any]]) -> list[str]:
        """Creates many cues at once (bulk load). Each spec has ``name`` and one of ``cron`` /
        ``every`` / ``at`` plus the keyword arguments of :meth:`cue` (``on_failure_pause``,
        ``outcome_deadline_seconds``, ``verification_mode`` under their stored names)."""
        return self._engine.create_cues(_dumps(list(specs), "cue definitions"))

    # -- running ------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts firing and the handler threads; returns at once."""
        with self._lock:
            if self._closed:
                raise EngineClosedError("this App is closed")
            if self._started:
                return
            self._started = True
        self._warn_orphans()
        if self._loop is None and any(h.is_async for h in self._handlers.values()):
            self._start_own_loop()
        self._engine.start()
        self._reporter = threading.Thread(target=self._report_problems, name="cueapi-problems", daemon=True)
        self._reporter.start()
        for i in range(self._workers):
            t = threading.Thread(target=self._work, name=f"cueapi-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        allow_register: bool | Literal["local"] | None = None,
        allow_private_targets: bool = False,
        rate_limit_per_minute: int = DEFAULT_RATE_LIMIT,
        trust_forwarded_for: bool = False,
        worker_lease_seconds: float = _limits.WORKER_LEASE_SECONDS,
        worker_timeout_seconds: float = _limits.WORKER_TIMEOUT_SECONDS,
        realert_seconds: float = _limits.REALERT_SECONDS,
        max_deliveries: int = _limits.MAX_DELIVERIES,
        max_deliveries_per_tenant: int | None = None,
        max_deliveries_per_destination: int | None = None,
        max_delivery_timeout_seconds: float = _limits.MAX_DELIVERY_TIMEOUT_SECONDS,
        public_url: str | None = None,
        header_timeout_seconds: float = DEFAULT_HEADER_TIMEOUT,
        body_timeout_seconds: float = DEFAULT_BODY_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_connections_per_address: int | None = None,
    ) -> str:
        """Serves the CueAPI-compatible HTTP API from this App's engine and returns its base URL
        (``port=0`` picks a free port). Registration (``POST /v1/auth/register``): ``True`` opens
        it to anyone (their email addresses unverified: never sent alert email), ``False`` closes
        it, ``"local"`` opens it to clients on this machine only (a loopback peer, no address
        forwarded from elsewhere, a ``Host`` naming the server by address, ``localhost`` or
        ``public_url``); ``None`` means ``"local"`` on a loopback address and closed on any other.
        ``public_url`` (else ``CUEAPI_PUBLIC_URL``) is the base of alert emails' links.
        ``header_timeout_seconds`` (also the idle keep-alive
        timeout), ``body_timeout_seconds``, ``max_connections`` and ``max_connections_per_address``
        (``None``: a quarter of the cap, or all of it with ``trust_forwarded_for``) bound what a
        connection may hold before it is authenticated. ``allow_private_targets`` lets callbacks
        reach loopback and private networks (local development and tests only). Each API key (and each
        client address, for requests without a valid key) may make ``rate_limit_per_minute``
        requests a minute (0: no limit); ``trust_forwarded_for`` takes the client address from the
        last ``X-Forwarded-For`` entry (only behind a reverse proxy that sets it). A pull worker's
        claim is released only when its lease (``worker_lease_seconds``, extended by execution
        heartbeats) has run out *and* the worker has not been heard from for
        ``worker_timeout_seconds``. The same alert for the same cue (or worker) within
        ``realert_seconds`` counts as one.

        Webhook deliveries are fair: at most ``max_deliveries`` are in flight on the server, at
        most ``max_deliveries_per_tenant`` of one user's and ``max_deliveries_per_destination`` to
        one ``scheme://host:port`` of one user's (by default 64 and 32, or ``max_deliveries`` if
        that is smaller), so a user whose endpoint hangs waits in their own queue while the others'
        deliveries go out. No delivery takes longer than
        ``max_delivery_timeout_seconds``, whatever its cue asks for. Starts the App."""
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValidationError("port must be an int between 0 and 65535")
        if (
            isinstance(rate_limit_per_minute, bool)
            or not isinstance(rate_limit_per_minute, int)
            or not 0 <= rate_limit_per_minute <= MAX_RATE_LIMIT
        ):
            raise ValidationError(
                f"rate_limit_per_minute must be an int between 0 (off) and {MAX_RATE_LIMIT}"
            )
        lease_ms = _positive_ms(worker_lease_seconds, "worker_lease_seconds")
        timeout_ms = _positive_ms(worker_timeout_seconds, "worker_timeout_seconds")
        realert_ms = _positive_ms(realert_seconds, "realert_seconds")
        max_deliveries = _slot_count(max_deliveries, "max_deliveries")
        per_tenant = _slot_count(
            max_deliveries_per_tenant,
            "max_deliveries_per_tenant",
            min(_limits.MAX_DELIVERIES_PER_TENANT, max_deliveries),
            max_deliveries,
        )
        per_destination = _slot_count(
            max_deliveries_per_destination,
            "max_deliveries_per_destination",
            min(_limits.MAX_DELIVERIES_PER_DESTINATION, max_deliveries),
            max_deliveries,
        )
        ceiling = _limits.DELIVERY_TIMEOUT_CEILING_SECONDS
        if (
            isinstance(max_delivery_timeout_seconds, bool)
            or not isinstance(max_delivery_timeout_seconds, (int, float))
            or not 1 <= max_delivery_timeout_seconds <= ceiling
        ):
            raise ValidationError(
                f"max_delivery_timeout_seconds must be a number of seconds between 1 and {ceiling:g}"
            )
        header_ms = _positive_ms(header_timeout_seconds, "header_timeout_seconds")
        body_ms = _positive_ms(body_timeout_seconds, "body_timeout_seconds")
        _count(max_connections, "max_connections")
        if max_connections_per_address is not None:
            _count(max_connections_per_address, "max_connections_per_address")
        if public_url is not None and not isinstance(public_url, str):
            raise ValidationError("public_url must be a URL string")
        if allow_register is None:
            registration = "local" if _is_loopback(host) else "closed"
        elif allow_register == "local":
            registration = "local"
        elif isinstance(allow_register, bool):
            registration = "open" if allow_register else "closed"
        else:
            raise ValidationError("allow_register must be True, False, 'local' or None")
        if self._closed:
            raise EngineClosedError("this App is closed")
        native = self._native("serve")
        native.set_delivery_limits(
            max_deliveries, per_tenant, per_destination, round(max_delivery_timeout_seconds * 1000)
        )
        # Serve first: that sets the outbound policy, which work recovered from the database
        # must already follow when the engine starts dispatching it.
        bound_host, bound_port = native.serve(
            host,
            port,
            registration=registration,
            public_url=public_url,
            allow_private_targets=bool(allow_private_targets),
            rate_limit_per_minute=rate_limit_per_minute,
            trust_forwarded_for=bool(trust_forwarded_for),
            worker_lease_ms=lease_ms,
            worker_timeout_ms=timeout_ms,
            realert_ms=realert_ms,
            header_timeout_ms=header_ms,
            body_timeout_ms=body_ms,
            max_connections=max_connections,
            max_connections_per_address=max_connections_per_address,
        )
        self.start()
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        return f"http://{shown}:{bound_port}"

    def _native(self, what: str) -> _cueapi.NativeEngine:
        if not isinstance(self._engine, _cueapi.NativeEngine):
            raise CueAPIError(f"{what}() is for embedded Apps; this App works for {self._db}")
        return self._engine

    def create_user(self, email: str) -> tuple[str, str]:
        """Creates a user of the HTTP API; returns its API key (shown only now) and webhook
        signing secret."""
        return self._native("create_user").create_user(email)

    def user_count(self) -> int:
        """How many users of the HTTP API exist."""
        return self._native("user_count").user_count()

    def _warn_orphans(self) -> None:
        names = self._engine.unhandled_cues(_dumps(sorted(self._handlers), "handler names"), 6)
        if names:
            shown = ", ".join(repr(n) for n in names[:5]) + (" and more" if len(names) > 5 else "")
            log.warning(
                "active cue(s) %s have no handler in this program; their runs will be recorded as failed. "
                "Delete a cue with app.delete(name) if it is gone for good.",
                shown,
            )

    def _report_problems(self) -> None:
        """Logs what the engine met on its own threads (it blocks in Rust, without the GIL)."""
        while True:
            try:
                problem = self._engine.next_problem(30.0)
            except CueAPIError:
                return
            if problem is not None:
                log.error("cueapi engine: %s", problem)
            elif self._closed:
                return

    def _stop_own_loop(self) -> None:
        """Stops the App's own event loop: async handlers still running past the close timeout
        are cancelled (and wait for their cancellation) rather than destroyed pending; their runs
        are recovered as interrupted when the database is next opened."""
        loop = self._loop
        assert loop is not None and self._own_loop_thread is not None

        async def cancel_the_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if not loop.is_closed():
            with contextlib.suppress(RuntimeError, TimeoutError, concurrent.futures.TimeoutError):
                asyncio.run_coroutine_threadsafe(cancel_the_rest(), loop).result(timeout=5.0)
            loop.call_soon_threadsafe(loop.stop)
        self._own_loop_thread.join(timeout=5.0)

    def _start_own_loop(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run_loop() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.close()

        self._own_loop_thread = threading.Thread(target=run_loop, name="cueapi-asyncio", daemon=True)
        self._own_loop_thread.start()
        ready.wait()
        self._loop = loop

    def run(self) -> None:
        """Runs until Ctrl-C, SIGTERM or :meth:`stop`; then waits for running handlers."""
        restore = None
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError, OSError):
                if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                    restore = signal.signal(signal.SIGTERM, lambda *_: self._stopped.set())
        try:
            self.start()
            where = (
                f"for {self._db} as worker {self._remote.worker_id}" if self._remote else f"from {self._db}"
            )
            print(
                f"cueapi: running {len(self._handlers)} cue handler(s) {where}; Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )
            while not self._stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            log.info("interrupted; waiting for running handlers")
        finally:
            if restore is not None:
                signal.signal(signal.SIGTERM, restore)
            self.close()

    async def arun(self) -> None:
        """Runs on the caller's event loop (``async def`` handlers run there) until :meth:`stop`
        or cancellation; then waits for running handlers."""
        self._loop = asyncio.get_running_loop()
        self.start()
        try:
            while not self._stopped.is_set():
                await asyncio.sleep(0.2)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self.close)

    def stop(self) -> None:
        """Asks :meth:`run` / :meth:`arun` to return."""
        self._stopped.set()

    def close(self, timeout: float = 30.0) -> None:
        """Stops taking work, waits up to ``timeout`` seconds for running handlers, and closes the
        database. Runs still going after that are recovered (retried) when the database is next
        opened. Idempotent."""
        current = threading.current_thread()
        if current in self._threads or current is self._own_loop_thread:
            raise CueAPIError("close() was called from a handler; call app.stop() there instead")
        with self._lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + timeout
        self._stopped.set()
        self._engine.stop_claims()
        # The handler threads first: each finishes the batch it claimed (a claim that returned
        # just now included) and hands its async jobs to the loop, so nothing claimed is left
        # uncounted. Then the async handlers those started.
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._idle:
            self._idle.wait_for(lambda: self._inflight == 0, timeout=max(0.0, deadline - time.monotonic()))
        if self._own_loop_thread is not None and self._loop is not None:
            self._stop_own_loop()
        if self._unrecorded and not self._write_unrecorded():
            log.warning(
                "%d outcome(s) could not be written; their runs are recovered (and retried) when the "
                "database is next opened",
                len(self._unrecorded),
            )
        self._engine.close()
        if self._reporter is not None:
            self._reporter.join(timeout=5.0)

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _work(self) -> None:
        jobs: Sequence[_Job] = []
        # Once stopping, no new batch is claimed, but one already claimed (with the last reports)
        # is run: its executions are running in the store, and left so they would be recovered as
        # interrupted at the next open though no process died.
        while jobs or not self._stopped.is_set():
            if self._unrecorded and time.monotonic() >= self._retry_at:
                self._write_unrecorded()
            if not jobs:
                try:
                    # While outcomes wait to be written, come back in time to write them again.
                    wait = _RETRY_UNRECORDED if self._unrecorded else 30.0
                    jobs = self._engine.claim_many(self._batch_size(), wait)
                except EngineClosedError:
                    return
                except CueAPIError:
                    log.exception("claiming work failed")
                    continue
                if not jobs:
                    continue
                with self._idle:
                    self._inflight += len(jobs)
            reports = [r for r in map(self._dispatch, jobs) if r is not None]
            jobs = self._report(reports)

    def _dispatch(self, job: _Job) -> tuple[str, int, str] | None:
        """Runs a claimed job with a sync handler and returns its report; an async handler is
        handed to the event loop (it reports by itself) and None is returned."""
        started = self._engine.now_ms()
        ctx = Context(
            execution_id=job.execution_id,
            cue_id=job.cue_id,
            cue_name=job.cue_name,
            scheduled_for=from_ms(job.scheduled_for),
            attempt=job.attempt,
            payload=json.loads(job.payload),
            idempotency_key=job.idempotency_key,
            triggered_by="scheduled" if job.triggered_by == "schedule" else job.triggered_by,
        )
        handler = self._handlers.get(job.cue_name)
        if handler is None:
            outcome: dict[str, Any] = {
                "success": False,
                "error": f"no handler for cue {job.cue_name!r} in this process",
                "retry": True,
            }
        elif not handler.is_async:
            try:
                outcome = outcome_from_return(handler.func(ctx))
            except Exception as exc:
                outcome = outcome_from_exception(exc)
                _log_exception(job, exc)
        elif self._loop is None or self._loop.is_closed():
            outcome = {"success": False, "error": "no event loop to run an async handler", "retry": True}
        else:
            self._async_slots.acquire()
            asyncio.run_coroutine_threadsafe(self._run_async(handler, job, ctx, started), self._loop)
            return None
        return (job.execution_id, job.attempt, outcome_json(outcome, ctx, started))

    def _batch_size(self) -> int:
        """The queue spread over the handler threads: one job per claim while there are fewer
        jobs than threads, so each starts at once; more per claim as the queue grows (one store
        round trip per batch), at most ``_BATCH`` so a slow job holds back few others."""
        return max(1, min(_BATCH, -(-self._engine.queued // self._workers)))

    def _report(self, reports: list[tuple[str, int, str]]) -> Sequence[_Job]:
        """Records finished runs and claims the next batch in the same round trip."""
        following: Sequence[_Job] = []
        try:
            if reports or not self._stopped.is_set():
                more = 0 if self._stopped.is_set() else self._batch_size()
                following, refused = self._engine.finish_many(reports, more, 0.0)
                for execution_id, why in refused:
                    log.error("recording the outcome of %s failed: %s", execution_id, why)
        except EngineClosedError:
            log.warning("%d run(s) finished after the App closed; they will be retried", len(reports))
        except StorageError as exc:
            self._keep_unrecorded(reports, exc)
        except CueAPIError:
            log.exception("recording %d outcome(s) failed", len(reports))
        finally:
            with self._idle:
                self._inflight += len(following) - len(reports)
                self._idle.notify_all()
        return following

    async def _run_async(self, handler: _Registered, job: _Job, ctx: Context, started: int) -> None:
        try:
            try:
                result = handler.func(ctx)
                if inspect.isawaitable(result):
                    result = await result
                outcome = outcome_from_return(result)
            except Exception as exc:
                outcome = outcome_from_exception(exc)
                _log_exception(job, exc)
            report = (job.execution_id, job.attempt, outcome_json(outcome, ctx, started))
            await asyncio.get_running_loop().run_in_executor(None, self._report_one, report)
        finally:
            self._async_slots.release()

    def _report_one(self, report: tuple[str, int, str]) -> None:
        try:
            _, refused = self._engine.finish_many([report], 0, 0.0)
            for execution_id, why in refused:
                log.error("recording the outcome of %s failed: %s", execution_id, why)
        except EngineClosedError:
            log.warning("execution %s finished after the App closed; it will be retried", report[0])
        except StorageError as exc:
            self._keep_unrecorded([report], exc)
        except CueAPIError:
            log.exception("recording the outcome of %s failed", report[0])
        finally:
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()

    def _tell(self, kind: str, message: str) -> None:
        """Logs ``message`` unless a message of the same ``kind`` was logged within the last
        minute (then it is counted, and the count rides on the next one)."""
        now = time.monotonic()
        with self._unrecorded_lock:
            at, held = self._told.get(kind, (-math.inf, 0))
            if now - at < _TELL_EVERY:
                self._told[kind] = (at, held + 1)
                return
            self._told[kind] = (now, 0)
        more = f" ({held} more like it in the last minute)" if held else ""
        log.error("%s%s", message, more)

    def _keep_unrecorded(self, reports: list[tuple[str, int, str]], exc: StorageError) -> None:
        """Keeps outcomes the database refused for now (a full disk) to write them again: dropped,
        their executions would stay running until the next start, and a cue that skips
        overlapping runs would skip every tick until then."""
        if not reports:
            return
        with self._unrecorded_lock:
            self._unrecorded.extend(reports)
            dropped = len(self._unrecorded) - _MAX_UNRECORDED
            if dropped > 0:
                del self._unrecorded[:dropped]
            self._retry_at = time.monotonic() + _RETRY_UNRECORDED
        self._tell(
            "unrecorded",
            f"recording {len(reports)} outcome(s) failed ({exc}); trying again every {_RETRY_UNRECORDED:g} s",
        )
        if dropped > 0:
            self._tell(
                "dropped",
                f"{dropped} outcome(s) could not be written and are no longer kept; their runs are "
                "recovered (and retried) when the database is next opened",
            )

    def _write_unrecorded(self) -> bool:
        """Tries once to write the outcomes kept by :meth:`_keep_unrecorded`; whether none is left."""
        with self._unrecorded_lock:
            reports, self._unrecorded = self._unrecorded, []
        if not reports:
            return True
        try:
            _, refused = self._engine.finish_many(reports, 0, 0.0)
        except StorageError as exc:
            with self._unrecorded_lock:
                self._unrecorded[:0] = reports
                self._retry_at = time.monotonic() + _RETRY_UNRECORDED
            self._tell(
                "unrecorded",
                f"recording {len(reports)} outcome(s) failed again ({exc}); "
                f"trying again every {_RETRY_UNRECORDED:g} s",
            )
            return False
        except CueAPIError:
            log.exception("recording %d outcome(s) failed", len(reports))
            return True
        for execution_id, why in refused:
            log.error("recording the outcome of %s failed: %s", execution_id, why)
        log.info("recorded %d outcome(s) kept while the database could not be written", len(reports))
        return True

    # -- history and control ------------------------------------------------------------------

    def _cue_id(self, cue: str) -> str:
        if not isinstance(cue, str) or not cue:
            raise ValidationError("cue must be a cue id or name")
        return self._engine.resolve_cue(cue)

    def cues(self) -> list[Cue]:
        """Every stored cue."""
        return CUES.validate_json(self._engine.cues())

    def get_cue(self, cue: str) -> Cue:
        """One cue, by id or name."""
        return Cue.model_validate_json(self._engine.cue(self._cue_id(cue)))

    def executions(
        self,
        cue: str | None = None,
        *,
        status: str | Iterable[str] | None = None,
        outcome_state: str | None = None,
        since: datetime | float | None = None,
        days: float | None = None,
        has_evidence: bool | None = None,
        result_type: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Execution]:
        """Executions, newest first. ``status`` may be one status or several; ``"all"`` means
        any. ``since`` or ``days`` bound them by scheduled time."""
        if since is not None and days is not None:
            raise ValidationError("give since or days, not both")
        since_ms: int | None = None
        if since is not None:
            since_ms = to_ms(since, "since")
        elif days is not None:
            if isinstance(days, bool) or not isinstance(days, (int, float)) or not 0 < days <= 36500:
                raise ValidationError("days must be a positive number")
            since_ms = self._engine.now_ms() - round(days * 86_400_000)
        statuses: list[str] | None
        if status is None or status == "all":
            statuses = None
        elif isinstance(status, str):
            statuses = [status]
        else:
            statuses = list(status)
        for name, value in (("limit", limit), ("offset", offset)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValidationError(f"{name} must be an int")
        if has_evidence is not None and not isinstance(has_evidence, bool):
            raise ValidationError("has_evidence must be a bool")
        flt = {
            "cue_id": None if cue is None else self._cue_id(cue),
            "status": statuses,
            "outcome_state": outcome_state,
            "since": since_ms,
            "has_evidence": has_evidence,
            "result_type": result_type,
            "limit": limit,
            "offset": offset,
        }
        return EXECUTIONS.validate_json(self._engine.executions(_dumps(flt, "filter")))

    def execution(self, execution_id: str) -> Execution:
        """One execution with its attempt log."""
        if not isinstance(execution_id, str) or not execution_id:
            raise ValidationError("execution_id must be a non-empty string")
        return Execution.model_validate_json(self._engine.execution(execution_id))

    def stats(self, cue: str, days: float = 7.0) -> Stats:
        """Counts, success rate and p50/p95 duration of a cue's runs over the last ``days``."""
        if isinstance(days, bool) or not isinstance(days, (int, float)) or not 0 < days <= 36500:
            raise ValidationError("days must be a positive number")
        since = self._engine.now_ms() - round(days * 86_400_000)
        return Stats.from_dict(self._engine.stats(self._cue_id(cue), since))

    def pause(self, cue: str) -> None:
        """Pauses a cue; its ticks are recorded as missed until it is resumed."""
        self._engine.pause(self._cue_id(cue))

    def resume(self, cue: str) -> None:
        """Resumes a paused cue from now."""
        self._engine.resume(self._cue_id(cue))

    def delete(self, cue: str) -> None:
        """Deletes a cue and its history."""
        cue_id = self._cue_id(cue)
        self._engine.delete(cue_id)

    def fire(self, cue: str, payload: Mapping[str, Any] | None = None) -> str:
        """Runs a cue now (optionally with another payload); returns the execution id."""
        cue_id = self._cue_id(cue)
        return self._engine.fire(cue_id, None if payload is None else _dumps(payload, "payload"))

    def replay(self, execution_id: str) -> str:
        """Runs an execution again as a new execution; returns its id."""
        if not isinstance(execution_id, str) or not execution_id:
            raise ValidationError("execution_id must be a non-empty string")
        return self._engine.replay(execution_id)

    def now(self) -> datetime:
        """The App's clock."""
        return datetime.fromtimestamp(self._engine.now_ms() / 1000, tz=timezone.utc)


def _log_exception(job: _Job, exc: BaseException) -> None:
    """Says on the console (the ``cueapi`` logger) that a handler raised: the run is recorded as a
    failed attempt and retried by its cue's policy, but nobody reads the history as it happens."""
    log.warning(
        "%s (execution %s, attempt %d) raised %s: %s; the attempt failed and is retried as the "
        "cue's retry policy says",
        job.cue_name,
        job.execution_id,
        job.attempt,
        type(exc).__name__,
        exc,
        exc_info=exc,
    )


def _slot_count(n: int | None, name: str, default: int = 0, most: int | None = None) -> int:
    """A number of delivery slots: ``default`` when None, else 1 to the engine's highest and no
    more than ``most`` (the server's own limit, for a tenant's or a destination's)."""
    if n is None:
        return default
    top = _limits.MAX_DELIVERY_SLOTS
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= top:
        raise ValidationError(f"{name} must be an int between 1 and {top}")
    if most is not None and n > most:
        raise ValidationError(f"{name} ({n}) cannot exceed max_deliveries ({most})")
    return n


def _positive_ms(seconds: float, name: str) -> int:
    """Seconds (at least a millisecond, at most 30 days) as whole milliseconds."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not 0.001 <= seconds <= 30 * 86400
    ):
        raise ValidationError(f"{name} must be a number of seconds between 0.001 and 2592000")
    return round(seconds * 1000)


def _count(n: object, name: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1_000_000:
        raise ValidationError(f"{name} must be an int between 1 and 1000000")


def _is_url(db: str) -> bool:
    """Whether ``db`` names a PostgreSQL database rather than a SQLite file."""
    return db.strip().lower().startswith(("postgresql://", "postgres://"))


def _shown_db(db: str) -> str:
    """A database as messages name it: a SQLite file as given, a PostgreSQL URL with any
    password replaced by ``***`` (in the authority or as a ``password=`` parameter)."""
    if not _is_url(db):
        return db
    parts = urllib.parse.urlsplit(db.strip())
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = userinfo.split(":", 1)[0] + ":***@" + host
    query = "&".join(
        "password=***" if pair.split("=", 1)[0].lower() == "password" else pair
        for pair in parts.query.split("&")
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query if parts.query else ""))


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _dumps(value: object, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} must be JSON-serialisable: {exc}") from exc
