"""The context of a command that talks to a server: its output, its settings, its client, and
the one place where what went wrong becomes a message and an exit code."""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import quote

from .. import exceptions as exc
from ..client import CueAPI
from . import config
from .common import FAILED, Aborted, Failure, Handler, UsageError, option
from .output import Output


class Context:
    """What a remote command's handler gets: ``out``, ``settings`` and (made when first used, so
    local checks come first) ``client``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Output(bool(option(args, "json")))
        self._settings: config.Settings | None = None
        self._client: CueAPI | None = None

    @property
    def settings(self) -> config.Settings:
        if self._settings is None:
            self._settings = config.resolve(
                api_key=option(self.args, "api_key"),
                base_url=option(self.args, "base_url"),
                profile=option(self.args, "profile"),
            )
        return self._settings

    @property
    def client(self) -> CueAPI:
        if self._client is None:
            settings = self.settings
            if not settings.api_key:
                raise Failure(config.no_key_message(settings))
            self._client = CueAPI(settings.api_key, base_url=settings.base_url)
        return self._client

    def use_key(self, key: str) -> None:
        """Talks with ``key`` (``login``'s, before it is saved) instead of the resolved one."""
        self._settings = dataclasses.replace(self.settings, api_key=key, key_source="login")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class ApiFailure(Failure):
    """A server's refusal, told in the command's words (``Cue not found: cue_…``) with the
    server's code and status."""

    def __init__(self, text: str, error: exc.CueAPIError) -> None:
        super().__init__(text)
        self.error = error


@contextmanager
def about(what: str, ident: str) -> Iterator[None]:
    """Names the thing a 404 was about: ``Cue not found: <id>``."""
    try:
        yield
    except exc.CueAPIError as e:
        if e.status_code == 404:
            raise ApiFailure(f"{what} not found: {ident}", e) from None
        raise


def segment(value: str) -> str:
    """An id as a path segment (escaped: ids never need it, mistyped ones may)."""
    if not value.strip():
        raise UsageError("an id must not be empty")
    return quote(value, safe="")


def remote(run: Callable[[Context], int | None]) -> Handler:
    """A handler from a function of a :class:`Context`: every API, connection and file error
    becomes ``Error: …`` on stderr and exit 1 (never a traceback, never the key); a
    :class:`UsageError` goes on to ``main``, which prints it with the usage (exit 2)."""

    @functools.wraps(run)
    def handler(args: argparse.Namespace) -> int:
        ctx = Context(args)
        try:
            return run(ctx) or 0
        except Aborted:
            print("Aborted!", file=ctx.out.stderr)
            return FAILED
        except KeyboardInterrupt:
            print("Interrupted.", file=ctx.out.stderr)
            return 130
        except ApiFailure as e:
            ctx.out.error(f"{e} ({_status(e.error)})")
            return FAILED
        except Failure as e:
            ctx.out.error(str(e))
            return FAILED
        except exc.CueAPIConnectionError as e:
            ctx.out.error(f"cannot reach the server at {ctx.settings.base_url}: {e.message}")
            return FAILED
        except exc.ValidationError as e:
            if e.status_code is None:  # refused by the client before sending
                raise UsageError(e.message) from None
            ctx.out.error(_api_message(ctx, e))
            return FAILED
        except exc.CueAPIError as e:
            ctx.out.error(_api_message(ctx, e))
            return FAILED
        finally:
            ctx.close()

    return handler


def _status(e: exc.CueAPIError) -> str:
    if e.status_code is None:
        return e.code or "error"
    return f"HTTP {e.status_code}, {e.code or 'unknown'}"


def _api_message(ctx: Context, e: exc.CueAPIError) -> str:
    text = f"{e.message} ({_status(e)})"
    if e.status_code == 401:
        text += (
            f"\n  the API key came from {ctx.settings.key_source}; check it, or save another "
            "with `cueapi login`"
        )
    return text
