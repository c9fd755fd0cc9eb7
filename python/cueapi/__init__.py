"""cueapi: scheduled work you can account for.

Decorate functions with :meth:`App.cue` / :meth:`App.once`; every run is recorded in SQLite with
its attempts, outcome and evidence, and the history is queryable with :meth:`App.executions`.
"""

from ._cueapi import SCHEMA_VERSION, __version__
from .app import App, Context, Outcome
from .exceptions import (
    ConflictError,
    CueAPIError,
    CueNotFoundError,
    DatabaseLockedError,
    EngineClosedError,
    ExecutionNotFoundError,
    InvalidScheduleError,
    SchemaVersionError,
    StorageError,
    ValidationError,
)
from .records import Attempt, Cue, Evidence, Execution, ExecutionOutcome, Stats
from .schedule import ManualClock, Schedule
from .webhooks import verify_webhook

__all__ = [
    "SCHEMA_VERSION",
    "App",
    "Attempt",
    "ConflictError",
    "Context",
    "Cue",
    "CueAPIError",
    "CueNotFoundError",
    "DatabaseLockedError",
    "EngineClosedError",
    "Evidence",
    "Execution",
    "ExecutionNotFoundError",
    "ExecutionOutcome",
    "InvalidScheduleError",
    "ManualClock",
    "Outcome",
    "Schedule",
    "SchemaVersionError",
    "Stats",
    "StorageError",
    "ValidationError",
    "__version__",
    "verify_webhook",
]
