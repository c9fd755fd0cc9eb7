"""The exceptions cueapi raises. Names follow the official CueAPI SDK where one exists, so code
written against it keeps working; the native engine raises these very classes."""

from __future__ import annotations


class CueAPIError(Exception):
    """Base class of every cueapi error."""


class ValidationError(CueAPIError, ValueError):
    """An argument failed validation. ``field`` names it when known."""

    field: str | None = None


class InvalidScheduleError(ValidationError):
    """A cron expression, interval, one-shot time or time zone that cannot be used."""

    field = "schedule"


class CueNotFoundError(CueAPIError, LookupError):
    """No cue has that id or name."""


class ExecutionNotFoundError(CueAPIError, LookupError):
    """No execution has that id."""


class ConflictError(CueAPIError):
    """The request conflicts with the stored state."""


class DatabaseLockedError(CueAPIError):
    """Another process has this database open."""


class SchemaVersionError(CueAPIError):
    """The database was written by a newer cueapi."""


class EngineClosedError(CueAPIError):
    """The app or engine has been closed."""


class StorageError(CueAPIError):
    """SQLite or the file system failed."""


__all__ = [
    "ConflictError",
    "CueAPIError",
    "CueNotFoundError",
    "DatabaseLockedError",
    "EngineClosedError",
    "ExecutionNotFoundError",
    "InvalidScheduleError",
    "SchemaVersionError",
    "StorageError",
    "ValidationError",
]
