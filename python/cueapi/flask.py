"""Receiving cueapi webhooks in Flask (an optional extra: ``import cueapi`` never imports Flask).

::

    from flask import Flask
    from cueapi.flask import webhook
    from cueapi.webhooks import Delivery

    app = Flask(__name__)

    @app.post("/sync")
    @webhook()  # the secret from CUEAPI_WEBHOOK_SECRET
    def sync(delivery: Delivery):
        n = sync_customers(delivery.payload["batch_size"])
        return delivery.outcome(success=True, result=f"Synced {n} records")

The view runs only for a delivery whose signature verified. Its return value is answered as
usual; returning :meth:`Delivery.outcome` (a dict, answered as JSON 200) records the outcome at
once.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast, overload

import flask

from .exceptions import WebhookVerificationError
from .webhooks import Delivery, SeenStore, parse
from .webhooks._framework import SecretSource, misconfigured, refusal
from .webhooks.receive import check_options

__all__ = ["ViewDecorator", "webhook"]

P = ParamSpec("P")
R = TypeVar("R")


def _answer(body: dict[str, Any], status: int) -> flask.Response:
    response = flask.jsonify(body)
    response.status_code = status
    return response


class ViewDecorator(Protocol):
    """What :func:`webhook` returns: takes ``view(delivery, **url_variables)`` and gives a view of
    the URL variables alone, which may also answer a refusal (a ``flask.Response``)."""

    @overload
    def __call__(
        self, view: Callable[Concatenate[Delivery, P], Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R | flask.Response]]: ...

    @overload
    def __call__(self, view: Callable[Concatenate[Delivery, P], R]) -> Callable[P, R | flask.Response]: ...


def webhook(
    secret: str | Iterable[str] | None = None,
    *,
    tolerance: int = 300,
    seen: SeenStore | None = None,
    allow_sha256: bool = False,
) -> ViewDecorator:
    """A view decorator that verifies the request as a cueapi delivery (see
    :func:`cueapi.webhooks.parse` for ``tolerance``, ``seen`` and ``allow_sha256``) and calls the
    view with the :class:`~cueapi.webhooks.Delivery` as its first argument (URL variables stay keyword
    arguments). Put it under ``@app.route``; the view keeps its name. Async views work too.

    ``secret``: the ``whsec_…`` secret, or a list of them while rotating. A secret given but empty
    (or not text) raises :class:`~cueapi.exceptions.ValidationError` here, when the view is
    declared. When it is None, the ``CUEAPI_WEBHOOK_SECRET`` environment variable is read at each
    request (several secrets may be separated by commas); while it is unset, every request is
    answered 503 ``{"error": {"code": "webhook_secret_missing", "message": …}}`` and logged, and the
    view never runs — nothing is accepted unverified, and the server retries the delivery later.

    A request that does not verify is answered 401 with
    ``{"error": {"code": "invalid_signature", "reason": <reason>, "message": <text>}}``, ``reason``
    being :attr:`WebhookVerificationError.reason <cueapi.exceptions.WebhookVerificationError>`.
    """
    secrets = SecretSource(secret)
    check_options(tolerance, seen, allow_sha256)

    def verified() -> Delivery | flask.Response:
        found = secrets()
        if isinstance(found, str):
            return _answer(misconfigured(found), 503)
        try:
            return parse(
                flask.request.get_data(),
                flask.request.headers,
                found,
                tolerance=tolerance,
                seen=seen,
                allow_sha256=allow_sha256,
            )
        except WebhookVerificationError as e:
            return _answer(refusal(e), 401)

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def receive_async(*args: Any, **kwargs: Any) -> Any:
                delivery = verified()
                if isinstance(delivery, flask.Response):
                    return delivery
                return await view(delivery, *args, **kwargs)

            return receive_async

        @functools.wraps(view)
        def receive(*args: Any, **kwargs: Any) -> Any:
            delivery = verified()
            if isinstance(delivery, flask.Response):
                return delivery
            return view(delivery, *args, **kwargs)

        return receive

    return cast(ViewDecorator, decorate)
