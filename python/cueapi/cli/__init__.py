"""The ``cueapi`` command.

Local commands work on a database: ``serve`` (the HTTP API), ``keys create``, ``history``.
Remote commands are the official CueAPI CLI's, against any CueAPI server (``cueapi serve`` or the
hosted service): ``login``/``logout``/``whoami``/``usage``/``key``, the cue commands (``create``,
``list``, ``get``, ``update``, ``pause``, ``resume``, ``fire``, ``delete``, ``bulk-delete``),
``executions …``, ``workers …`` and ``quickstart``.

Each module named in :data:`COMMANDS` has ``register(subparsers)``, which adds its parsers (with
:func:`~cueapi.cli.common.add_command`, which also sets the ``handler``: arguments in, exit code
out); :func:`~cueapi.cli.context.remote` makes such a handler from a function of a
:class:`~cueapi.cli.context.Context` (output, resolved server and key, client, and the mapping of
errors to messages and exit codes). Adding a command module is one name in :data:`COMMANDS`.

Exit codes: 0 success, 1 an API, connection or runtime error (``Error: …`` on stderr), 2 a usage
error (before anything is sent).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .common import FAILED, CommandParser, Handler, UsageError, add_group

# The command modules (python/cueapi/cli/<name>.py), in the order --help lists their commands.
COMMANDS = ("serve", "account", "cues", "executions", "quickstart", "worker")

__all__ = ["COMMANDS", "build_parser", "main"]


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="cueapi",
        description="Accountable scheduled work: serve the API, or drive a CueAPI server.",
        epilog="Global options may come before or after the command. Exit codes: 0 success, "
        "1 an API or connection error, 2 a usage error.",
    )
    sub = add_group(parser, "command")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command line; returns its exit code (usage errors exit 2 from argparse)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except UsageError as e:
        command: argparse.ArgumentParser = args.command_parser
        command.error(str(e))
    except BrokenPipeError:
        # The reader went away (`cueapi list | head -1`): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return FAILED
