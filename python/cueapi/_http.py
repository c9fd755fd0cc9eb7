"""The client's transport: requests described as values, sent by a sync or an async driver.

Every operation of :mod:`cueapi.client` is a generator (see :mod:`cueapi._ops`) that yields
:class:`Call` values and receives each answer's parsed JSON back, then returns its result. The
sync client drives it with ``httpx.Client``, the async one with ``httpx.AsyncClient``: the
operations, their validation and their parsing exist once. Errors, retries and the key's secrecy
are decided here, once for both.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from . import exceptions as exc
from ._cueapi import __version__

T = TypeVar("T")

DEFAULT_BASE_URL = "https://api.cueapi.ai"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 2
# The longest Retry-After a call waits for before it gives up and raises RateLimitError.
MAX_RETRY_AFTER = 60.0
USER_AGENT = f"cueapi-python/{__version__}"

# Methods a retry cannot turn into a second effect.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True)
class Call:
    """One HTTP request of an operation. ``body`` is JSON-serialisable (sent compact, ASCII, in
    the order given: the bytes are known, so an echo of them can be compared); ``idempotent``
    lets a retry re-send a POST or PATCH whose effect cannot double."""

    method: str
    path: str
    body: Any = None
    params: Mapping[str, Any] | None = None
    headers: Mapping[str, str] | None = None
    idempotent: bool | None = None
    # None: the answer's parsed JSON goes back to the operation; "raw": the httpx.Response.
    raw: bool = False

    def may_retry(self) -> bool:
        return self.idempotent if self.idempotent is not None else self.method in _IDEMPOTENT

    def content(self) -> bytes | None:
        if self.body is None:
            return None
        return json.dumps(self.body, separators=(",", ":"), allow_nan=False).encode()


Operation = Generator[Call, Any, T]


@dataclass(frozen=True)
class Settings:
    """What a client was made with (the key is kept apart, never printed)."""

    base_url: str
    timeout: float | httpx.Timeout
    max_retries: int
    headers: dict[str, str] = field(default_factory=dict)


def resolve(
    api_key: str | None,
    base_url: str | None,
    timeout: float | httpx.Timeout | None,
    max_retries: int,
) -> tuple[str, Settings]:
    """The key and settings from the arguments, else ``CUEAPI_API_KEY`` / ``CUEAPI_BASE_URL``;
    a clear error for each bad one."""
    key = api_key if api_key is not None else os.environ.get("CUEAPI_API_KEY")
    if not isinstance(key, str) or not key.strip():
        raise exc.ValidationError(
            "no API key: pass api_key=... or set CUEAPI_API_KEY "
            "(a cue_sk_... key from your server's POST /v1/auth/register or `cueapi keys create`)"
        )
    key = key.strip()
    # Checked here, not by httpx: its encoding error would carry the whole header, key included.
    if not key.isascii() or any(c.isspace() or not c.isprintable() for c in key):
        raise exc.ValidationError("the API key must be printable ASCII without blanks")
    url = base_url if base_url is not None else os.environ.get("CUEAPI_BASE_URL") or DEFAULT_BASE_URL
    url = base_url_of(url)
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    if not isinstance(timeout, httpx.Timeout) and (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise exc.ValidationError("timeout must be a positive number of seconds (or an httpx.Timeout)")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or not 0 <= max_retries <= 10:
        raise exc.ValidationError("max_retries must be an int between 0 and 10")
    headers = {"Authorization": f"Bearer {key}", "User-Agent": USER_AGENT, "Accept": "application/json"}
    return key, Settings(url, timeout, max_retries, headers)


def base_url_of(url: str) -> str:
    """A server's root URL: ``http(s)://host[:port][/prefix]`` without a trailing slash or
    ``/v1`` (the paths add it; the official CLI's bases end in ``/v1``, so both forms work)."""
    if not isinstance(url, str):
        raise exc.ValidationError("base_url must be a string such as http://127.0.0.1:8000")
    text = url.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise exc.ValidationError(
            f"base_url {url!r} is not an http(s) URL such as http://127.0.0.1:8000 or https://api.cueapi.ai"
        )
    if parts.query or parts.fragment:
        raise exc.ValidationError(f"base_url {url!r} must not have a query or fragment")
    if text.endswith("/v1"):
        text = text[: -len("/v1")]
    return text


def redacted(key: str) -> str:
    """How a key is shown: its kind and last four characters, never the rest."""
    kind = "cue_sk_" if key.startswith("cue_sk_") else ""
    return f"{kind}…{key[-4:]}" if len(key) > len(kind) + 8 else "…"


def error_for(response: httpx.Response) -> exc.CueAPIError:
    """The exception the official SDK raises for this answer (by status), with the server's
    ``code`` and ``message`` read from ``{"error": {…}}`` or FastAPI's ``{"detail": …}``."""
    try:
        data: Any = response.json()
    except ValueError:
        data = None
    status = response.status_code
    if not isinstance(data, dict):
        text = response.text.strip()[:500] or response.reason_phrase or "no body"
        body: dict[str, Any] = {"error": {"message": text, "code": "unknown"}}
        message, code, details = f"HTTP {status}: {text}", "unknown", None
    else:
        body = data
        err = data.get("error")
        detail = data.get("detail")
        if not isinstance(err, dict) and isinstance(detail, dict) and isinstance(detail.get("error"), dict):
            err = detail["error"]
        if isinstance(err, dict):
            message = str(err.get("message") or f"HTTP {status}")
            code = str(err.get("code") or "unknown")
            details = err.get("details")
        else:
            said = err if isinstance(err, str) else detail if isinstance(detail, str) else None
            message, code, details = (said or f"HTTP {status}"), "unknown", None
    kwargs: dict[str, Any] = {"status_code": status, "code": code, "body": body}
    error: exc.CueAPIError
    if status == 401:
        error = exc.AuthenticationError(message, **kwargs)
    elif status == 403:
        error = exc.CueLimitExceededError(message, **kwargs)
    elif status == 404:
        cls = exc.ExecutionNotFoundError if code == "execution_not_found" else exc.CueNotFoundError
        error = cls(message, **kwargs)
    elif status == 409:
        error = exc.ConflictError(message, **kwargs)
    elif status == 429:
        error = exc.RateLimitError(message, retry_after=_retry_after(response), **kwargs)
    elif status in (400, 422):
        error = exc.InvalidScheduleError(message, **kwargs)
        if isinstance(details, list) and details and isinstance(details[0], dict):
            error.field = details[0].get("field")
        elif code not in ("invalid_schedule", "invalid_cron", "invalid_timezone"):
            error.field = None
    elif status >= 500:
        error = exc.CueAPIServerError(message, **kwargs)
    else:
        error = exc.CueAPIError(message, **kwargs)
    return error


def _retry_after(response: httpx.Response) -> int | None:
    value = response.headers.get("Retry-After", "").strip()
    try:
        seconds = int(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def result_of(call: Call, response: httpx.Response) -> Any:
    """What an operation gets back for a 2xx answer: the parsed JSON (None for 204 or an empty
    body), or the response itself for raw calls."""
    if call.raw:
        return response
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise exc.CueAPIServerError(
            f"{call.method} {call.path}: the server answered {response.status_code} with a body "
            f"that is not JSON: {response.text[:200]!r}",
            status_code=response.status_code,
            code="invalid_response",
        ) from None


def retry_delay(call: Call, attempt: int, response: httpx.Response | None, error: Exception | None) -> float:
    """Seconds to wait before trying ``call`` again after ``attempt`` failed tries, or -1 when it
    must not be retried: a refused request (429, or 503 with Retry-After) is retried whatever the
    method, since the server did not act on it; a connection that never opened likewise; other
    transport failures and 502/503/504 only when the call is idempotent."""
    if response is not None:
        status = response.status_code
        after = _retry_after(response)
        if status in (429, 503) and after is not None:
            return float(after) if after <= MAX_RETRY_AFTER else -1.0
        if status == 429:
            return backoff(attempt)
        if status in (502, 503, 504) and call.may_retry():
            return backoff(attempt)
        return -1.0
    if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return backoff(attempt)
    if isinstance(error, httpx.TransportError) and call.may_retry():
        return backoff(attempt)
    return -1.0


def backoff(attempt: int) -> float:
    """Exponential from half a second, capped at 8 s, with full jitter."""
    return random.uniform(0, min(8.0, 0.5 * 2**attempt))


def connection_error(call: Call, base_url: str, error: Exception) -> exc.CueAPIConnectionError:
    what = type(error).__name__
    message = f"{call.method} {base_url}{call.path} failed: {what}: {error}".rstrip(": ")
    return exc.CueAPIConnectionError.caused_by(type(error), message)
