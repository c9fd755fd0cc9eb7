"""``cueapi worker module:app``: runs a program's decorated functions for a server.

The module is imported with every :class:`cueapi.App` it makes bound to the server (its base URL
and key resolved as for every remote command) instead of a database, so the same program runs
embedded (``python program.py``) or as a pull worker of a server, unchanged.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from .. import app as app_module
from ..app import App
from ..exceptions import CueAPIError
from . import config
from .common import FAILED, CommandParser, Failure, UsageError, add_command, option


def _run(args: argparse.Namespace) -> int:
    module_name, _, attr = args.target.partition(":")
    attr = attr or "app"
    if not module_name or not all(part.isidentifier() for part in [*module_name.split("."), attr]):
        raise UsageError(f"{args.target!r} is not module:attribute (e.g. jobs:app)")
    try:
        settings = config.resolve(
            api_key=option(args, "api_key"),
            base_url=option(args, "base_url"),
            profile=option(args, "profile"),
        )
    except Failure as e:
        print(f"Error: {e}", file=sys.stderr)
        return FAILED
    if not settings.api_key:
        print(f"Error: {config.no_key_message(settings)}", file=sys.stderr)
        return FAILED
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.path.insert(0, os.getcwd())
    app_module._REMOTE_DEFAULT = {
        "remote": settings.base_url,
        "api_key": settings.api_key,
        "worker_id": args.worker_id,
        "poll_interval": args.poll_interval,
    }
    try:
        module = importlib.import_module(module_name)
        target = getattr(module, attr, None)
        if not isinstance(target, App):
            print(
                f"Error: {module_name}.{attr} is not a cueapi.App (it is {type(target).__name__})",
                file=sys.stderr,
            )
            return FAILED
        target.run()
    except CueAPIError as e:
        print(f"Error: {type(e).__name__}: {e}", file=sys.stderr)
        return FAILED
    finally:
        app_module._REMOTE_DEFAULT = None
    return 0


def _positive(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0.01 <= seconds <= 60:
        raise argparse.ArgumentTypeError("must be between 0.01 and 60 seconds")
    return seconds


def register(sub: argparse._SubParsersAction[CommandParser]) -> None:
    worker = add_command(
        sub,
        "worker",
        _run,
        "run a program's decorated functions as a pull worker of a server",
        description="Imports MODULE:APP with every cueapi.App it makes bound to the server (not a "
        "database): its cues are declared there as worker cues, and this process claims, runs and "
        "reports their executions until Ctrl-C or SIGTERM.",
    )
    worker.add_argument("target", metavar="MODULE:APP", help="e.g. jobs:app (APP defaults to app)")
    worker.add_argument(
        "--worker-id", default=None, help="this process's name on the server (default host-random)"
    )
    worker.add_argument(
        "--poll-interval",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help="how long to wait between claims when there is no work (default 1)",
    )
