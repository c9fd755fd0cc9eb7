"""cueapi: scheduled work you can account for.

Four faces over one engine:

- the embedded library: decorate functions with :meth:`App.cue` / :meth:`App.once`; every run is
  recorded in SQLite with its attempts, outcome and evidence (or, with ``App(remote=...)``, on a
  server that this process works for);
- ``cueapi serve``: a self-hosted, CueAPI-compatible HTTP API;
- the client, :class:`CueAPI` / :class:`AsyncCueAPI`, with the official SDK's surface, and the
  webhook receivers (:func:`verify_webhook`, :mod:`cueapi.webhooks`, ``cueapi.flask``,
  ``cueapi.fastapi``);
- the ``cueapi`` command.
"""

from ._cueapi import SCHEMA_VERSION, __version__
from .app import App
from .client import AgentsResource as AgentsResource
from .client import AsyncCueAPI, CueAPI, ExecutionContext
from .client import CuesResource as CuesResource
from .client import ExecutionsResource as ExecutionsResource
from .client import MessagesResource as MessagesResource
from .client import UsageResource as UsageResource
from .client import WorkersResource as WorkersResource
from .exceptions import (
    AuthenticationError,
    BodyVerifyMismatchError,
    ConflictError,
    CueAPIConnectionError,
    CueAPIError,
    CueAPIServerError,
    CueLimitExceededError,
    CueNotFoundError,
    DatabaseLockedError,
    EngineClosedError,
    ExecutionNotFoundError,
    InvalidScheduleError,
    RateLimitError,
    SchemaVersionError,
    StorageError,
    ValidationError,
    WebhookVerificationError,
)
from .handler import Context, Outcome
from .models import (
    Agent,
    AgentList,
    Attempt,
    Cue,
    CueList,
    Evidence,
    Execution,
    ExecutionList,
    FromAgentRef,
    Message,
    MessageList,
    OutcomeDetail,
    StateTransitionResponse,
    Stats,
    Worker,
    WorkerList,
)
from .payload import CuePayload
from .schedule import MAX_CRON_LENGTH, MAX_CRON_LIST_ITEMS, ManualClock, Schedule
from .webhooks import verify_webhook

# The embedded App's earlier name for the outcome record.
ExecutionOutcome = OutcomeDetail

__all__ = [
    "MAX_CRON_LENGTH",
    "MAX_CRON_LIST_ITEMS",
    "SCHEMA_VERSION",
    "Agent",
    "AgentList",
    "AgentsResource",
    "App",
    "AsyncCueAPI",
    "Attempt",
    "AuthenticationError",
    "BodyVerifyMismatchError",
    "ConflictError",
    "Context",
    "Cue",
    "CueAPI",
    "CueAPIConnectionError",
    "CueAPIError",
    "CueAPIServerError",
    "CueLimitExceededError",
    "CueList",
    "CueNotFoundError",
    "CuePayload",
    "CuesResource",
    "DatabaseLockedError",
    "EngineClosedError",
    "Evidence",
    "Execution",
    "ExecutionContext",
    "ExecutionList",
    "ExecutionNotFoundError",
    "ExecutionOutcome",
    "ExecutionsResource",
    "FromAgentRef",
    "InvalidScheduleError",
    "ManualClock",
    "Message",
    "MessageList",
    "MessagesResource",
    "Outcome",
    "OutcomeDetail",
    "RateLimitError",
    "Schedule",
    "SchemaVersionError",
    "StateTransitionResponse",
    "Stats",
    "StorageError",
    "UsageResource",
    "ValidationError",
    "WebhookVerificationError",
    "Worker",
    "WorkerList",
    "WorkersResource",
    "__version__",
    "verify_webhook",
]
