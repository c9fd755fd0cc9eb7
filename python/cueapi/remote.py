"""Remote mode: an :class:`~cueapi.App` whose cues live on a server, which this process works
for as a pull worker (no public URL needed).

:class:`RemoteEngine` stands where the native engine stands in an embedded App and answers the
same calls, over HTTP: declaring a cue creates or updates a worker-transport cue of that name on
the server; the App's handler threads claim executions (a poller claims one for each idle thread,
so nothing waits claimed while no thread is free), heartbeats keep the claims' leases and the
worker alive, and outcomes are reported through the outcome route. If this process dies, its
claims are released by the server when their lease ends and the worker has been silent, and
another process of the same app takes the work over.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import _cueapi
from . import exceptions as exc
from ._time import from_ms
from .client import CueAPI
from .handler import fit_metadata
from .models import Cue

log = logging.getLogger("cueapi")

# How often the worker tells the server it is alive: well inside the server's default worker
# timeout (180 s), as the official worker daemon does.
WORKER_HEARTBEAT_SECONDS = 30.0
# The most a failed poll waits before the next one.
MAX_POLL_BACKOFF = 30.0
# The most a report the server did not get waits before it is sent again.
MAX_REPORT_BACKOFF = 5.0
# The embedded App's catch-up names, as the server shows them.
_CATCH_UP = {"once": "run_once_if_missed", "skip": "skip_missed", "all": "replay_all"}
_REPORT_KEYS = (
    "retry",
    "result",
    "error",
    "metadata",
    "external_id",
    "result_url",
    "result_ref",
    "result_type",
    "summary",
    "artifacts",
)


@dataclass(frozen=True)
class RemoteJob:
    """A claimed execution, with the attributes of the native engine's jobs."""

    execution_id: str
    cue_id: str
    cue_name: str
    scheduled_for: int
    attempt: int
    payload: str
    idempotency_key: str
    triggered_by: str
    lease_seconds: float


def default_worker_id() -> str:
    """``host-pid-xxxx``: unique per process, readable in ``GET /v1/workers``."""
    host = socket.gethostname().split(".")[0][:40] or "worker"
    return f"{host}-{uuid.uuid4().hex[:8]}"


def _ms(text: str | None) -> int | None:
    if text is None:
        return None
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


class RemoteEngine:
    """The engine of an App in remote mode (see the module's docstring)."""

    interrupted_on_open = 0

    def __init__(
        self,
        client: CueAPI,
        *,
        worker_id: str | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self._client = client
        self.worker_id = worker_id or default_worker_id()
        self._poll_interval = poll_interval
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        # task name -> cue name, for the tasks this process handles; cue name -> declared task
        self._tasks: dict[str, str] = {}
        self._injected: set[str] = set()
        self._ids: dict[str, str] | None = None
        self._ready: deque[RemoteJob] = deque()
        self._waiting = 0
        self._running: dict[str, RemoteJob] = {}
        self._started = False
        self._stopping = threading.Event()
        self._closed = False
        self._problems: queue.Queue[str | None] = queue.Queue()
        self._threads: list[threading.Thread] = []

    # -- declaring --------------------------------------------------------------------------

    def _known(self) -> dict[str, str]:
        """Name -> id of the caller's cues on the server, listed once."""
        if self._ids is None:
            ids: dict[str, str] = {}
            offset = 0
            while True:
                page = self._client.cues.list(limit=100, offset=offset)
                ids.update((c.name, c.id) for c in page.cues)
                offset += len(page.cues)
                if not page.cues or offset >= page.total:
                    break
            self._ids = ids
        return self._ids

    def upsert_cue(self, spec_json: str) -> str:
        """Creates the cue on the server as a worker cue, or brings the existing one of that name
        to this definition (only what differs is sent, so re-declaring changes nothing)."""
        spec = json.loads(spec_json)
        name = spec["name"]
        _cueapi.Schedule(
            spec.get("cron"), every=spec.get("every"), at=spec.get("at"), timezone=spec["timezone"]
        )
        body = _server_body(spec)
        task = body["payload"].get("task")
        if not isinstance(task, str) or not task:
            task = name
            body["payload"] = {**body["payload"], "task": name}
            self._injected.add(name)
        else:
            self._injected.discard(name)
        existing = self._known().get(name)
        if existing is None:
            try:
                cue = self._client.cues.create(**_create_args(body))
            except exc.ConflictError:
                self._ids = None
                existing = self._known().get(name)
                if existing is None:
                    raise
            else:
                self._known()[name] = cue.id
                existing = cue.id
                self._register(task, name)
                return cue.id
        current = self._client.cues.get(existing)
        if current.transport != "worker":
            raise exc.ConflictError(
                f"the server has a {current.transport} cue named {name!r}; remote mode runs worker cues "
                f"(rename one of them, or delete {current.id})"
            )
        changes = _differences(body, current)
        if changes:
            self._client.request("PATCH", f"/v1/cues/{existing}", json=changes)
        self._register(task, name)
        return existing

    def _register(self, task: str, name: str) -> None:
        with self._lock:
            self._tasks[task] = name
        if self._started:
            self._heartbeat_worker()

    def create_cues(self, specs_json: str) -> list[str]:
        return [self.upsert_cue(json.dumps(s)) for s in json.loads(specs_json)]

    def unhandled_cues(self, names_json: str, limit: int) -> list[str]:
        return []

    # -- running -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._heartbeat_worker()
        for target, name in (
            (self._poll, "cueapi-remote-poll"),
            (self._keep_alive, "cueapi-remote-heartbeat"),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    @property
    def queued(self) -> int:
        return len(self._ready)

    def now_ms(self) -> int:
        return _cueapi.now_ms()

    def claim_many(self, max: int, timeout: float) -> list[RemoteJob]:
        """Waits up to ``timeout`` seconds for claimed jobs; returns at most ``max``."""
        deadline = time.monotonic() + timeout
        with self._wake:
            if self._closed:
                raise exc.EngineClosedError("this App is closed")
            self._waiting += 1
            self._wake.notify_all()
            try:
                while not self._ready and not self._stopping.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
                jobs = [self._ready.popleft() for _ in range(min(max, len(self._ready)))]
            finally:
                self._waiting -= 1
            for job in jobs:
                self._running[job.execution_id] = job
        return jobs

    def finish_many(
        self, reports: list[tuple[str, int, str]], max: int, timeout: float
    ) -> tuple[list[RemoteJob], list[tuple[str, str]]]:
        refused = [r for r in (self._report(*report) for report in reports) if r is not None]
        jobs = self.claim_many(max, timeout) if max > 0 and not self._stopping.is_set() else []
        return jobs, refused

    def _report(self, execution_id: str, attempt: int, outcome_json: str) -> tuple[str, str] | None:
        """Reports a run's outcome. A report the server did not get (unreachable, or a 5xx: a
        restart, say) is sent again after a backoff for as long as the server shows the claim
        still running under this worker, the job's lease kept alive meanwhile: a live worker's
        claim is never taken back, so a report dropped here would leave the execution running
        on the server for good. It stops when the report lands, when the server shows it landed
        or the claim was taken back, or when the App stops."""
        args = _report_args(json.loads(outcome_json))
        delay = 0.5
        try:
            while True:
                try:
                    self._client.executions.report_outcome(execution_id, **args)
                    return None
                except (exc.CueAPIConnectionError, exc.CueAPIServerError) as error:
                    failed = f"{type(error).__name__}: {error}"
                except exc.CueAPIError as error:
                    return (execution_id, f"{type(error).__name__}: {error}")
                if self._stopping.is_set():
                    return (execution_id, failed)
                self._problems.put(f"reporting the outcome of {execution_id} failed (trying again): {failed}")
                self._stopping.wait(delay)
                delay = min(MAX_REPORT_BACKOFF, delay * 2)
                held = self._held(execution_id, attempt)
                if held is False:
                    return (execution_id, f"its claim was taken back before the report got through: {failed}")
                if held is None:
                    return None  # the first report landed; only its answer was lost
        finally:
            with self._lock:
                self._running.pop(execution_id, None)

    def _held(self, execution_id: str, attempt: int) -> bool | None:
        """Whether the server shows attempt ``attempt`` of the execution still running under this
        worker's claim (True also when it cannot be asked); None when it ended with this
        worker's report, False when the claim was taken back."""
        try:
            ex = self._client.executions.get(execution_id)
        except (exc.CueAPIConnectionError, exc.CueAPIServerError):
            return True
        except exc.CueAPIError:
            return False
        if ex.get("attempts") != attempt or ex.get("claimed_by_worker") != self.worker_id:
            return False
        return True if ex.get("status") == "delivering" else None

    def _poll(self) -> None:
        """Claims one execution for each idle handler thread; waits when there is none."""
        backoff = self._poll_interval
        while not self._stopping.is_set():
            with self._wake:
                while not self._stopping.is_set() and self._waiting <= len(self._ready):
                    self._wake.wait(1.0)
            if self._stopping.is_set():
                return
            try:
                answer = self._client.request(
                    "POST", "/v1/executions/claim", json={"worker_id": self.worker_id}
                )
            except exc.ConflictError:
                self._stopping.wait(self._poll_interval)
                backoff = self._poll_interval
                continue
            except exc.CueAPIError as error:
                self._problems.put(f"claiming work from {self._client.base_url} failed: {error}")
                self._stopping.wait(backoff)
                backoff = min(MAX_POLL_BACKOFF, backoff * 2)
                continue
            backoff = self._poll_interval
            job = self._job(answer)
            with self._wake:
                self._ready.append(job)
                self._wake.notify_all()

    def _job(self, answer: Mapping[str, Any]) -> RemoteJob:
        name = str(answer["cue_name"])
        payload = answer.get("payload")
        if not isinstance(payload, dict):
            payload = {}
        if name in self._injected and payload.get("task") == name:
            payload = {k: v for k, v in payload.items() if k != "task"}
        scheduled = _ms(answer.get("scheduled_for"))
        return RemoteJob(
            execution_id=str(answer["execution_id"]),
            cue_id=str(answer["cue_id"]),
            cue_name=name,
            scheduled_for=scheduled if scheduled is not None else self.now_ms(),
            attempt=int(answer.get("attempt") or 1),
            payload=json.dumps(payload),
            idempotency_key=str(answer.get("idempotency_key") or f"{answer['cue_id']}:{scheduled}"),
            triggered_by=str(answer.get("triggered_by") or "scheduled"),
            lease_seconds=float(answer.get("lease_seconds") or 300),
        )

    def _heartbeat_worker(self) -> None:
        with self._lock:
            handlers = sorted(self._tasks)
        try:
            self._client.workers.heartbeat(self.worker_id, handlers=handlers)
        except exc.CueAPIError as error:
            self._problems.put(f"the worker heartbeat to {self._client.base_url} failed: {error}")

    def _keep_alive(self) -> None:
        """The worker heartbeat, and a lease heartbeat for each running job a third of the way
        through its lease."""
        last_worker = time.monotonic()
        extended: dict[str, float] = {}
        while not self._stopping.wait(1.0):
            now = time.monotonic()
            if now - last_worker >= WORKER_HEARTBEAT_SECONDS:
                self._heartbeat_worker()
                last_worker = now
            with self._lock:
                running = list(self._running.values())
            for job in running:
                since = extended.setdefault(job.execution_id, now)
                if now - since < job.lease_seconds / 3:
                    continue
                extended[job.execution_id] = now
                try:
                    self._client.executions.heartbeat(job.execution_id, worker_id=self.worker_id)
                except exc.CueAPIError as error:
                    self._problems.put(f"extending the lease of {job.execution_id} failed: {error}")
            live = {job.execution_id for job in running}
            for gone in set(extended) - live:
                del extended[gone]

    def next_problem(self, timeout: float) -> str | None:
        """The next problem met on this engine's threads (None after ``timeout``); raises
        EngineClosedError once closed."""
        try:
            problem = self._problems.get(timeout=timeout)
        except queue.Empty:
            problem = None
        if problem is None and self._closed:
            raise exc.EngineClosedError("this App is closed")
        return problem

    def stop_claims(self) -> None:
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()

    def close(self) -> None:
        self.stop_claims()
        with self._wake:
            self._closed = True
        for t in self._threads:
            t.join(timeout=5.0)
        self._problems.put(None)
        self._client.close()

    # -- history and control -------------------------------------------------------------------

    def resolve_cue(self, reference: str) -> str:
        known = self._known()
        if reference in known:
            return known[reference]
        if reference.startswith("cue_"):
            return self._client.cues.get(reference).id
        self._ids = None
        found = self._known().get(reference)
        if found is None:
            raise exc.CueNotFoundError(f"cue not found: {reference!r}")
        return found

    def cue(self, cue_id: str) -> str:
        return self._client.cues.get(cue_id).model_dump_json()

    def cues(self) -> str:
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self._client.request("GET", "/v1/cues", params={"limit": 100, "offset": offset})
            out.extend(page["cues"])
            offset += len(page["cues"])
            if not page["cues"] or offset >= page["total"]:
                return json.dumps(out)

    def executions(self, filter_json: str) -> str:
        f = json.loads(filter_json)
        since = f.get("since")
        page = self._client.executions.list(
            cue_id=f.get("cue_id"),
            status=f.get("status") or "all",
            outcome_state=f.get("outcome_state"),
            has_evidence=f.get("has_evidence"),
            result_type=f.get("result_type"),
            since=None if since is None else from_ms(since),
            limit=f.get("limit", 100),
            offset=f.get("offset", 0),
        )
        return json.dumps(page.get("executions") or page.get("data") or [])

    def execution(self, execution_id: str) -> str:
        return json.dumps(self._client.executions.get(execution_id))

    def stats(self, cue_id: str, since_ms: int) -> dict[str, Any]:
        counts: dict[str, int] = {}
        durations: list[int] = []
        for ex in self._client.executions.iter(cue_id=cue_id, status="all", since=from_ms(since_ms)):
            counts[ex.status] = counts.get(ex.status, 0) + 1
            if ex.status in ("success", "failed") and ex.started_at and ex.outcome and ex.outcome.recorded_at:
                durations.append(round((ex.outcome.recorded_at - ex.started_at).total_seconds() * 1000))
        ok, failed = counts.get("success", 0), counts.get("failed", 0)
        durations.sort()

        def pct(p: float) -> int | None:
            if not durations:
                return None
            return durations[min(len(durations), max(1, math.ceil(p * len(durations)))) - 1]

        return {
            "cue_id": cue_id,
            "since": since_ms,
            "total": sum(counts.values()),
            "counts": counts,
            "success_rate": ok / (ok + failed) if ok + failed else None,
            "duration_ms_p50": pct(0.50),
            "duration_ms_p95": pct(0.95),
        }

    def pause(self, cue_id: str) -> None:
        self._client.cues.pause(cue_id)

    def resume(self, cue_id: str) -> None:
        self._client.cues.resume(cue_id)

    def delete(self, cue_id: str) -> None:
        self._client.cues.delete(cue_id)
        if self._ids is not None:
            self._ids = {n: i for n, i in self._ids.items() if i != cue_id}

    def fire(self, cue_id: str, payload_json: str | None = None) -> str:
        override = None if payload_json is None else json.loads(payload_json)
        merge = None if override is None else "replace"
        if override is not None:
            name = self._client.cues.get(cue_id).name
            task = next((t for t, n in self._tasks.items() if n == name), name)
            override = {**override, "task": task}
        answer = self._client.cues.fire(
            cue_id, payload_override=override, merge_strategy=merge, auto_verify=False
        )
        return str(answer.get("id") or answer.get("execution_id"))

    def replay(self, execution_id: str) -> str:
        answer = self._client.executions.replay(execution_id)
        return str(answer.get("execution_id") or answer.get("id"))


def _server_body(spec: Mapping[str, Any]) -> dict[str, Any]:
    """An embedded cue definition as the server's cue fields (worker transport)."""
    tz = spec.get("timezone") or "UTC"
    if spec.get("cron") is not None:
        schedule: dict[str, Any] = {"type": "recurring", "cron": spec["cron"], "timezone": tz}
    elif spec.get("every") is not None:
        schedule = {"type": "interval", "every": spec["every"], "timezone": tz}
    else:
        schedule = {"type": "once", "at": spec["at"], "timezone": tz}
    body: dict[str, Any] = {
        "name": spec["name"],
        "schedule": schedule,
        "transport": "worker",
        "payload": dict(spec.get("payload") or {}),
        "description": spec.get("description"),
        "on_failure": {"pause": bool(spec.get("on_failure_pause", False))},
    }
    if spec.get("retry") is not None:
        body["retry"] = dict(spec["retry"])
    if spec.get("outcome_deadline_seconds") is not None:
        body["delivery"] = {"outcome_deadline_seconds": spec["outcome_deadline_seconds"]}
    if spec.get("overlap") is not None:
        body["overlap"] = spec["overlap"]
    if spec.get("catch_up") is not None:
        body["catch_up"] = _CATCH_UP.get(spec["catch_up"], spec["catch_up"])
        body["catch_up_max"] = spec.get("catch_up_max", 100)
    body["verification"] = (
        None if spec.get("verification_mode") is None else {"mode": spec["verification_mode"]}
    )
    return body


def _create_args(body: Mapping[str, Any]) -> dict[str, Any]:
    s = body["schedule"]
    args: dict[str, Any] = {
        "name": body["name"],
        "timezone": s["timezone"],
        "transport": "worker",
        "payload": body["payload"],
        "description": body.get("description"),
        "on_failure": body["on_failure"],
        "retry": body.get("retry"),
        "delivery": body.get("delivery"),
        "overlap": body.get("overlap"),
        "catch_up": body.get("catch_up"),
        "catch_up_max": body.get("catch_up_max"),
        "verification": body.get("verification"),
    }
    args[{"recurring": "cron", "interval": "every", "once": "at"}[s["type"]]] = s.get(
        {"recurring": "cron", "interval": "every", "once": "at"}[s["type"]]
    )
    return args


def _differences(body: Mapping[str, Any], current: Cue) -> dict[str, Any]:
    """The fields of ``body`` the server's cue does not have yet."""
    changes: dict[str, Any] = {}
    s, cs = body["schedule"], current.schedule
    same_when = (
        s["type"] == cs.type
        and s.get("cron") == cs.cron
        and (s.get("every") is None or _seconds(s["every"]) == _seconds(cs.every))
        and (s.get("at") is None or (cs.at is not None and _ms(s["at"]) == round(cs.at.timestamp() * 1000)))
        and s["timezone"] == cs.timezone
    )
    if not same_when:
        changes["schedule"] = s
    if body["payload"] != current.payload:
        changes["payload"] = body["payload"]
    if body.get("description") != current.description:
        changes["description"] = body.get("description")
    if bool(body["on_failure"]["pause"]) != current.pause_on_failure:
        changes["on_failure"] = {"pause": body["on_failure"]["pause"]}
    if "retry" in body and body["retry"] != current.retry.model_dump(include=set(body["retry"])):
        changes["retry"] = body["retry"]
    if (
        "delivery" in body
        and body["delivery"]["outcome_deadline_seconds"] != current.outcome_deadline_seconds
    ):
        changes["delivery"] = body["delivery"]
    if "overlap" in body and body["overlap"] != current.overlap:
        changes["overlap"] = body["overlap"]
    if "catch_up" in body and body["catch_up"] != current.catch_up:
        changes["catch_up"] = body["catch_up"]
    if "catch_up_max" in body and body["catch_up_max"] != current.catch_up_max:
        changes["catch_up_max"] = body["catch_up_max"]
    mode = None if current.verification is None else current.verification.mode
    wanted = None if body["verification"] is None else body["verification"]["mode"]
    if wanted != mode:
        changes["verification"] = body["verification"]
    return changes


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(every: str | None) -> float | None:
    """``"1h30m"`` as seconds (the forms ``every=`` takes), None when it is not one."""
    if every is None:
        return None
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", every.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s+", "", every.strip().lower()):
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _report_args(outcome: Mapping[str, Any]) -> dict[str, Any]:
    """An embedded outcome as the outcome route takes it: its known fields; a traceback cut to
    fit the route's metadata limit."""
    args: dict[str, Any] = {"success": bool(outcome.get("success", False))}
    for key in _REPORT_KEYS:
        if outcome.get(key) is not None:
            args[key] = outcome[key]
    for key in ("result", "error", "summary"):
        if key in args and not isinstance(args[key], str):
            args[key] = json.dumps(args[key], default=str)
    metadata = args.get("metadata")
    if isinstance(metadata, dict):
        args["metadata"] = fit_metadata(metadata)
    return args
