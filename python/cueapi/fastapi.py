"""Receiving cueapi webhooks in FastAPI (an optional extra: ``import cueapi`` never imports
FastAPI or Starlette).

::

    from typing import Annotated
    from fastapi import Depends, FastAPI
    import cueapi.fastapi
    from cueapi.webhooks import Delivery

    app = FastAPI()
    cueapi.fastapi.install(app)  # refusals answer {"error": {...}}, not {"detail": {...}}

    @app.post("/sync")
    async def sync(delivery: Annotated[Delivery, Depends(cueapi.fastapi.webhook())]):
        n = await sync_customers(delivery.payload["batch_size"])
        return delivery.outcome(success=True, result=f"Synced {n} records")

The route runs only for a delivery whose signature verified; sync and async routes alike.
Returning :meth:`Delivery.outcome` (a dict, answered as JSON 200) records the outcome at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .exceptions import WebhookVerificationError
from .webhooks import Delivery, MemorySeen, SeenStore, parse
from .webhooks._framework import SecretSource, misconfigured, refusal
from .webhooks.receive import check_options

__all__ = ["WebhookRejected", "install", "webhook", "webhook_exception_handler"]


class WebhookRejected(HTTPException):
    """Raised by the :func:`webhook` dependency for a request it refuses: 401 when it does not
    verify, 503 when no secret is configured. ``body`` is the whole JSON answer,
    ``{"error": {"code", "reason", "message"}}``; with :func:`install` that is exactly the
    response body, without it FastAPI's default handler answers ``{"detail": body}``."""

    def __init__(self, status_code: int, body: dict[str, Any]) -> None:
        super().__init__(status_code=status_code, detail=body)
        self.body = body


async def webhook_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    """Answers a :class:`WebhookRejected` with its body as is."""
    if not isinstance(exc, WebhookRejected):  # pragma: no cover - registered for that class only
        raise exc
    return JSONResponse(exc.body, status_code=exc.status_code)


def install(app: FastAPI) -> FastAPI:
    """Registers :func:`webhook_exception_handler` on ``app``, so that refused deliveries are
    answered ``{"error": {"code": "invalid_signature", "reason", "message"}}`` (the body
    ``cueapi.flask`` answers) rather than FastAPI's ``{"detail": …}``. Returns ``app``."""
    app.add_exception_handler(WebhookRejected, webhook_exception_handler)
    return app


def webhook(
    secret: str | Iterable[str] | None = None,
    *,
    tolerance: int = 300,
    seen: SeenStore | None = None,
    allow_sha256: bool = False,
) -> Callable[[Request], Awaitable[Delivery]]:
    """A dependency that verifies the request as a cueapi delivery (see
    :func:`cueapi.webhooks.parse` for ``tolerance``, ``seen`` and ``allow_sha256``) and gives the
    :class:`~cueapi.webhooks.Delivery`: ``delivery: Annotated[Delivery, Depends(webhook())]``, in
    sync and async routes. Make it once (at import) and reuse it: each call makes a new one.

    ``secret``: the ``whsec_…`` secret, or a list of them while rotating. A secret given but empty
    (or not text) raises :class:`~cueapi.exceptions.ValidationError` here. When it is None, the
    ``CUEAPI_WEBHOOK_SECRET`` environment variable is read at each request (several secrets may be
    separated by commas); while it is unset, every request is refused with 503
    ``{"error": {"code": "webhook_secret_missing", "message": …}}`` (and logged) and the route
    never runs.

    A request that does not verify raises :class:`WebhookRejected` (401): call :func:`install`
    on the app for the body to be ``{"error": {"code": "invalid_signature", "reason": <reason>,
    "message": <text>}}``. A ``seen`` store other than :class:`~cueapi.webhooks.MemorySeen`
    (SQLite, which may wait for a lock) is consulted in a worker thread, off the event loop.
    """
    secrets = SecretSource(secret)
    check_options(tolerance, seen, allow_sha256)
    off_loop = seen is not None and not isinstance(seen, MemorySeen)

    async def cueapi_webhook(request: Request) -> Delivery:
        found = secrets()
        if isinstance(found, str):
            raise WebhookRejected(503, misconfigured(found))
        body = await request.body()
        try:
            if off_loop:
                return await run_in_threadpool(
                    parse,
                    body,
                    request.headers,
                    found,
                    tolerance=tolerance,
                    seen=seen,
                    allow_sha256=allow_sha256,
                )
            return parse(
                body, request.headers, found, tolerance=tolerance, seen=seen, allow_sha256=allow_sha256
            )
        except WebhookVerificationError as e:
            raise WebhookRejected(401, refusal(e)) from None

    return cueapi_webhook
