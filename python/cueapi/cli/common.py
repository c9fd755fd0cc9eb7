"""What every command module shares: the parser class that gives each command the global options,
the handler type, and the errors a handler raises to choose its exit code."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from .._cueapi import __version__

# A command's handler: the parsed arguments in, the exit code out.
Handler = Callable[[argparse.Namespace], int]

# Exit codes, as the official CLI has them.
FAILED, USAGE = 1, 2


class UsageError(Exception):
    """A command line that cannot be run as given: printed with the command's usage, exit 2,
    before anything is sent."""


class Failure(Exception):
    """The command ran and failed (an API error, a server that cannot be reached, a bad
    credentials file): ``Error: <message>`` on stderr, exit 1."""


class Aborted(Exception):
    """A confirmation prompt got no answer (end of input): ``Aborted!``, exit 1."""


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose parsers all take the global options, so they may come before
    or after the subcommand (``cueapi --json list`` and ``cueapi list --json``). Subcommand parsers
    are made with this class too; ``remote=False`` leaves the options out (``serve``, ``keys``,
    ``history`` work on a local database)."""

    def __init__(self, *args: Any, remote: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        g = self.add_argument_group("global options")
        g.add_argument(
            "--version",
            action="version",
            version=f"cueapi, version {__version__}",
            help="print the version and exit",
        )
        if not remote:
            return
        # SUPPRESS: an option left out after the subcommand does not undo one given before it.
        s = argparse.SUPPRESS
        g.add_argument("--api-key", default=s, metavar="KEY", help="API key (env CUEAPI_API_KEY)")
        g.add_argument(
            "--base-url",
            default=s,
            metavar="URL",
            help="the server, with or without /v1 (env CUEAPI_API_BASE or CUEAPI_BASE_URL; "
            "default the profile's, else https://api.cueapi.ai)",
        )
        g.add_argument(
            "--profile", default=s, metavar="NAME", help="credentials profile (env CUEAPI_PROFILE)"
        )
        g.add_argument("--json", action="store_true", default=s, help="print the server's JSON answer")


def add_command(
    sub: argparse._SubParsersAction[CommandParser],
    name: str,
    handler: Handler | None,
    help: str,
    *,
    remote: bool = True,
    description: str | None = None,
) -> CommandParser:
    """A subcommand that runs ``handler`` (None for a group of subcommands)."""
    parser = sub.add_parser(name, help=help, description=description or help, remote=remote)
    if handler is not None:
        parser.set_defaults(handler=handler, command_parser=parser)
    return parser


def add_group(parser: CommandParser, dest: str) -> argparse._SubParsersAction[CommandParser]:
    """The subcommands of ``parser`` (one of them is required)."""
    return parser.add_subparsers(dest=dest, required=True, metavar="COMMAND")


def option(args: argparse.Namespace, name: str) -> Any:
    """A global option's value (None, or False for ``--json``, when not given)."""
    return getattr(args, name, False if name == "json" else None)


def env(name: str) -> str | None:
    """An environment variable, None when unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or None
