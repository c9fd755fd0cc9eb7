"""The exceptions cueapi raises. Names and attributes follow the official CueAPI SDK, so code
written against it keeps working; the native engine raises these very classes, and the client
(:class:`cueapi.CueAPI`) chooses one by the status of the server's answer:

====== ======================================================================
401    :class:`AuthenticationError`
403    :class:`CueLimitExceededError`
404    :class:`CueNotFoundError` (:class:`ExecutionNotFoundError` for executions)
409    :class:`ConflictError`
400    :class:`InvalidScheduleError` (any invalid request, as in the SDK;
422    ``code`` and ``field`` say what was wrong)
429    :class:`RateLimitError`, with ``retry_after`` in seconds
5xx    :class:`CueAPIServerError`
other  :class:`CueAPIError`
====== ======================================================================
"""

from __future__ import annotations

from typing import Any

import httpx


class CueAPIError(Exception):
    """Base class of every cueapi error.

    ``message`` is the text (also ``str(e)``); for an error answered by a server, ``status_code``
    (alias ``status``) is its HTTP status, ``code`` its machine-readable code (``"cue_not_found"``)
    and ``body`` the whole parsed answer. Errors raised locally have ``status_code`` None.
    """

    def __init__(
        self,
        message: str = "",
        status_code: int | None = None,
        code: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.body: dict[str, Any] = body or {}

    @property
    def status(self) -> int | None:
        """The HTTP status of the answer that raised this error, if any."""
        return self.status_code

    def __repr__(self) -> str:
        if self.status_code is None:
            return f"{type(self).__name__}({self.message!r})"
        return f"{type(self).__name__}(message={self.message!r}, status_code={self.status_code})"


class AuthenticationError(CueAPIError):
    """The API key is missing, invalid or revoked (401)."""


class CueLimitExceededError(CueAPIError):
    """The server refused the request (403): a plan limit, or a claim held by another worker."""


class RateLimitError(CueAPIError):
    """Too many requests (429). ``retry_after`` is how many seconds the server asked to wait."""

    def __init__(self, message: str = "", retry_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class CueAPIServerError(CueAPIError):
    """The server failed (5xx)."""


class CueAPIConnectionError(CueAPIError, httpx.TransportError):
    """The server could not be reached, or the connection failed before an answer (after the
    client's retries). Also an ``httpx.TransportError`` — and, raised by the client, an instance
    of the httpx error that caused it (``httpx.ConnectError``, ``httpx.ReadTimeout``, …): the
    official SDK let those through, so code that catches them keeps working."""

    def __init__(self, message: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)

    @staticmethod
    def caused_by(cause: type[BaseException], message: str) -> CueAPIConnectionError:
        """A ``CueAPIConnectionError`` that is also an instance of ``cause`` (an httpx
        transport error class)."""
        return _connection_error_class(cause)(message)

    def __reduce__(self) -> tuple[Any, ...]:
        cause = next(
            (c for c in type(self).__mro__ if c.__module__.startswith("httpx")), httpx.TransportError
        )
        return (_rebuild_connection_error, (cause, self.message), self.__dict__)


# One subclass of CueAPIConnectionError per httpx error class it stands for, made when needed.
_CAUSED: dict[type[BaseException], type[CueAPIConnectionError]] = {}


def _connection_error_class(cause: type[BaseException]) -> type[CueAPIConnectionError]:
    if (
        not issubclass(cause, httpx.TransportError)
        or issubclass(cause, CueAPIConnectionError)
        or cause in CueAPIConnectionError.__mro__
    ):
        return CueAPIConnectionError
    cls = _CAUSED.get(cause)
    if cls is None:
        made = type(CueAPIConnectionError.__name__, (CueAPIConnectionError, cause), {"__module__": __name__})
        cls = _CAUSED.setdefault(cause, made)
    return cls


def _rebuild_connection_error(cause: type[BaseException], message: str) -> CueAPIConnectionError:
    return CueAPIConnectionError.caused_by(cause, message)


class ValidationError(CueAPIError, ValueError):
    """An argument failed validation. ``field`` names it when known."""

    field: str | None = None


class InvalidScheduleError(ValidationError):
    """A cron expression, interval, one-shot time or time zone that cannot be used; from a
    server, any request it refused as invalid (400 or 422), as the official SDK has it."""

    field: str | None = "schedule"


class CueNotFoundError(CueAPIError, LookupError):
    """No cue has that id or name; from a server, anything it did not find (404)."""


class ExecutionNotFoundError(CueNotFoundError):
    """No execution has that id."""


class ConflictError(CueAPIError):
    """The request conflicts with the stored state (409)."""


class DatabaseLockedError(CueAPIError):
    """Another process has this database open."""


class SchemaVersionError(CueAPIError):
    """The database was written by a newer cueapi."""


class EngineClosedError(CueAPIError):
    """The app or engine has been closed."""


class StorageError(CueAPIError):
    """SQLite or the file system failed."""


class WebhookVerificationError(CueAPIError):
    """A webhook delivery did not verify: no signature, a bad one, a stale or future timestamp,
    or a body that is not a delivery. ``reason`` is one word for it: ``missing_signature``,
    ``bad_signature``, ``bad_timestamp``, ``stale``, ``future`` or ``bad_body``."""

    def __init__(self, message: str = "", reason: str = "bad_signature", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.reason = reason


class BodyVerifyMismatchError(CueAPIError):
    """What the server says it received differs from the body sent (``fire(auto_verify=True)``).
    ``first_divergence_byte`` is the first index where they differ."""

    def __init__(
        self,
        message: str = "",
        *,
        sent_body: str,
        received_body: str,
        first_divergence_byte: int,
        message_id: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.sent_body = sent_body
        self.received_body = received_body
        self.first_divergence_byte = first_divergence_byte
        self.message_id = message_id

    def __repr__(self) -> str:
        return (
            f"BodyVerifyMismatchError(message_id={self.message_id!r}, first_divergence_byte="
            f"{self.first_divergence_byte}, sent_len={len(self.sent_body)}, "
            f"received_len={len(self.received_body)})"
        )


def first_divergence_byte(a: str, b: str) -> int:
    """The first index at which ``a`` and ``b`` differ, or -1 when one is a prefix of the other."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return -1


__all__ = [
    "AuthenticationError",
    "BodyVerifyMismatchError",
    "ConflictError",
    "CueAPIConnectionError",
    "CueAPIError",
    "CueAPIServerError",
    "CueLimitExceededError",
    "CueNotFoundError",
    "DatabaseLockedError",
    "EngineClosedError",
    "ExecutionNotFoundError",
    "InvalidScheduleError",
    "RateLimitError",
    "SchemaVersionError",
    "StorageError",
    "ValidationError",
    "WebhookVerificationError",
    "first_divergence_byte",
]
