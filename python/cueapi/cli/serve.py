"""``cueapi serve`` (the HTTP API), ``keys create`` and ``history``: the commands that work on a
local database, with their own error handling (a database or listening error exits 2)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Literal

from .. import _limits
from ..app import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_RATE_LIMIT,
    MAX_RATE_LIMIT,
    App,
    _is_loopback,
    _is_url,
    _shown_db,
)
from ..exceptions import CueAPIError, CueNotFoundError, DatabaseLockedError
from ..models import Cue, Execution
from ..models.lists import CUES, EXECUTIONS
from .common import USAGE, CommandParser, add_command, add_group

log = logging.getLogger("cueapi")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise SystemExit(f"cueapi: {name}={value!r} is not true or false")


def _env_port() -> int:
    value = os.environ.get("CUEAPI_PORT", "8000")
    try:
        port = int(value)
    except ValueError:
        raise SystemExit(f"cueapi: CUEAPI_PORT={value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise SystemExit(f"cueapi: CUEAPI_PORT={value!r} is not between 0 and 65535")
    return port


def _env_seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise SystemExit(f"cueapi: {name}={value!r} is not a number of seconds") from None
    if not 0 < seconds <= 30 * 86400:
        raise SystemExit(f"cueapi: {name}={value!r} must be between 0 and 2592000 seconds")
    return seconds


def _env_count(name: str, parse: Callable[[str], int] | None = None) -> int | None:
    """A whole number from the environment (read by ``parse``, else 1 to 1,000,000); None if unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return (parse or _count)(value)
    except argparse.ArgumentTypeError as exc:
        raise SystemExit(f"cueapi: {name}={value!r}: {exc}") from None


def _count(value: str, most: int = 1_000_000) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not 1 <= n <= most:
        raise argparse.ArgumentTypeError(f"must be between 1 and {most}")
    return n


def _slots(value: str) -> int:
    return _count(value, _limits.MAX_DELIVERY_SLOTS)


_REGISTRATION = {"open": "open", "local": "local", "closed": "closed", **dict.fromkeys(_TRUE, "open")}
_REGISTRATION.update(dict.fromkeys(_FALSE, "closed"))


def _registration(args: argparse.Namespace) -> str:
    """closed, local or open: the flag, else CUEAPI_ALLOW_REGISTER, else local on a loopback host."""
    if args.allow_register is not None:
        return str(args.allow_register)
    value = os.environ.get("CUEAPI_ALLOW_REGISTER", "").strip()
    if value:
        word = _REGISTRATION.get(value.lower())
        if word is None:
            raise SystemExit(
                f"cueapi: CUEAPI_ALLOW_REGISTER={value!r} is not open, local, closed, true or false"
            )
        return word
    return "local" if _is_loopback(args.host) else "closed"


def _env_rate_limit() -> int:
    value = os.environ.get("CUEAPI_RATE_LIMIT", "").strip()
    if not value:
        return DEFAULT_RATE_LIMIT
    try:
        return _rate_limit(value)
    except argparse.ArgumentTypeError as exc:
        raise SystemExit(f"cueapi: CUEAPI_RATE_LIMIT={value!r}: {exc}") from None


def _rate_limit(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not 0 <= n <= MAX_RATE_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 0 (off) and {MAX_RATE_LIMIT}")
    return n


def _print_history(cues: list[Cue], executions: list[Execution]) -> None:
    for cue in cues:
        nxt = cue.next_run.isoformat() if cue.next_run else "-"
        print(f"{cue.name:<28} {cue.status:<9} next {nxt}  runs {cue.run_count}")
    print()
    for ex in executions:
        outcome = ex.outcome_state or "-"
        note = ex.error_message or (ex.outcome.result if ex.outcome and ex.outcome.result else "")
        print(
            f"{ex.scheduled_for:%Y-%m-%d %H:%M:%S} {ex.cue_name:<24} {ex.status:<10} {outcome:<18} "
            f"tries {ex.attempts}  {note}"
        )


def _history(args: argparse.Namespace) -> int:
    """An embedded App's database: its cues and executions. A server's: each user's, under the
    user's email (then any cues an embedded App declared in the same file)."""
    try:
        app = App(args.db)
    except DatabaseLockedError as exc:
        print(
            f"cueapi: cannot read the history: {exc}. A running `cueapi serve` (or another program) "
            "holds this database; stop it first, or read the history over HTTP with "
            "`cueapi executions list` (with each user's key).",
            file=sys.stderr,
        )
        return USAGE
    with app:
        engine = app._native("history")
        owners = json.loads(engine.owners())
        if not any(o["email"] for o in owners):
            _print_history(app.cues(), app.executions(cue=args.cue, limit=args.limit))
            return 0
        shown = 0
        for o in owners:
            cues = CUES.validate_json(engine.cues(o["owner"]))
            if args.cue is not None:
                cues = [c for c in cues if args.cue in (c.id, c.name)]
                if not cues:
                    continue
            flt = {"cue_id": cues[0].id if args.cue is not None else None, "limit": args.limit}
            runs = EXECUTIONS.validate_json(engine.executions(json.dumps(flt), o["owner"]))
            title = o["email"] or f"{o['owner']} (cues of an embedded App, no server user)"
            print(f"== {title}: {len(cues)} cue{'' if len(cues) == 1 else 's'} ==")
            _print_history(cues, runs)
            shown += 1
        if args.cue is not None and not shown:
            raise CueNotFoundError(f"cue not found: {args.cue}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    registration = _registration(args)
    allow_register: bool | Literal["local"] = "local" if registration == "local" else registration == "open"
    private = args.allow_private_targets or bool(_env_flag("CUEAPI_ALLOW_PRIVATE_TARGETS"))
    forwarded = args.trust_forwarded_for or bool(_env_flag("CUEAPI_TRUST_FORWARDED_FOR"))
    rate = args.rate_limit if args.rate_limit is not None else _env_rate_limit()
    most = args.max_deliveries or _env_count("CUEAPI_MAX_DELIVERIES", _slots) or _limits.MAX_DELIVERIES
    per_tenant = args.max_deliveries_per_tenant or _env_count("CUEAPI_MAX_DELIVERIES_PER_TENANT", _slots)
    per_destination = args.max_deliveries_per_destination or _env_count(
        "CUEAPI_MAX_DELIVERIES_PER_DESTINATION", _slots
    )
    for flag, n in (("tenant", per_tenant), ("destination", per_destination)):
        if n is not None and n > most:
            raise SystemExit(
                f"cueapi: --max-deliveries-per-{flag} ({n}) cannot exceed --max-deliveries ({most})"
            )
    delivery_timeout = (
        args.max_delivery_timeout
        if args.max_delivery_timeout is not None
        else _env_seconds("CUEAPI_MAX_DELIVERY_TIMEOUT_SECONDS", _limits.MAX_DELIVERY_TIMEOUT_SECONDS)
    )
    ceiling = _limits.DELIVERY_TIMEOUT_CEILING_SECONDS
    if not 1 <= delivery_timeout <= ceiling:
        raise SystemExit(f"cueapi: --max-delivery-timeout must be between 1 and {ceiling:g} seconds")
    node_lease = (
        args.node_lease
        if args.node_lease is not None
        else _env_seconds("CUEAPI_NODE_LEASE_SECONDS", _limits.NODE_LEASE_SECONDS)
    )
    if not _limits.MIN_NODE_LEASE_SECONDS <= node_lease <= _limits.MAX_NODE_LEASE_SECONDS:
        raise SystemExit(
            f"cueapi: --node-lease must be between {_limits.MIN_NODE_LEASE_SECONDS:g} and "
            f"{_limits.MAX_NODE_LEASE_SECONDS:g} seconds"
        )
    app = App(args.db, node_lease=node_lease)
    try:
        url = app.serve(
            args.host,
            args.port,
            allow_register=allow_register,
            allow_private_targets=private,
            worker_lease_seconds=(
                args.worker_lease
                if args.worker_lease is not None
                else _env_seconds("CUEAPI_WORKER_LEASE_SECONDS", _limits.WORKER_LEASE_SECONDS)
            ),
            worker_timeout_seconds=(
                args.worker_timeout
                if args.worker_timeout is not None
                else _env_seconds("CUEAPI_WORKER_TIMEOUT_SECONDS", _limits.WORKER_TIMEOUT_SECONDS)
            ),
            realert_seconds=(
                args.realert
                if args.realert is not None
                else _env_seconds("CUEAPI_REALERT_SECONDS", _limits.REALERT_SECONDS)
            ),
            rate_limit_per_minute=rate,
            trust_forwarded_for=forwarded,
            public_url=args.public_url or None,
            header_timeout_seconds=(
                args.header_timeout
                if args.header_timeout is not None
                else _env_seconds("CUEAPI_HEADER_TIMEOUT_SECONDS", DEFAULT_HEADER_TIMEOUT)
            ),
            body_timeout_seconds=(
                args.body_timeout
                if args.body_timeout is not None
                else _env_seconds("CUEAPI_BODY_TIMEOUT_SECONDS", DEFAULT_BODY_TIMEOUT)
            ),
            max_connections=(
                args.max_connections or _env_count("CUEAPI_MAX_CONNECTIONS") or DEFAULT_MAX_CONNECTIONS
            ),
            max_connections_per_address=(
                args.max_connections_per_address or _env_count("CUEAPI_MAX_CONNECTIONS_PER_ADDRESS")
            ),
            max_deliveries=most,
            max_deliveries_per_tenant=per_tenant,
            max_deliveries_per_destination=per_destination,
            max_delivery_timeout_seconds=delivery_timeout,
        )
    except BaseException:
        app.close()
        raise
    notes = [
        f"db {_shown_db(args.db) if _is_url(args.db) else os.path.abspath(args.db)}",
        "registration "
        + {"open": "open to anyone", "local": "open to this machine's clients", "closed": "closed"}[
            registration
        ],
        f"rate limit {f'{rate}/min per key' if rate else 'off'}",
    ]
    if forwarded:
        notes.append("client addresses from X-Forwarded-For")
    if private:
        notes.append(
            "PRIVATE TARGETS ALLOWED: callbacks may reach loopback and private networks (development only)"
        )
    print(f"cueapi serve: listening on {url} ({'; '.join(notes)})", file=sys.stderr, flush=True)
    if app.user_count() == 0:
        how = []
        if registration != "closed":
            body = '{"email": "you@example.com"}'
            how.append(
                f"  curl -s -X POST {url}/v1/auth/register -H 'Content-Type: application/json' -d '{body}'"
            )
        shown = _shown_db(args.db)
        how.append(f"  or stop the server and run: cueapi keys create you@example.com --db {shown}")
        print(
            "cueapi serve: no users yet; get an API key with\n" + "\n".join(how), file=sys.stderr, flush=True
        )
    app.run()
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    with App(args.db) as app:
        key, secret = app.create_user(args.email)
    print(f"api key:        {key}")
    print(f"webhook secret: {secret}")
    print("The key is shown only now; cueapi stores only its hash.", file=sys.stderr)
    return 0


def _local(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A local command: logging to stderr; a database or listening error exits 2 with its message."""

    def handler(args: argparse.Namespace) -> int:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        try:
            return run(args)
        except CueAPIError as exc:
            print(f"cueapi: {exc}", file=sys.stderr)
            return USAGE

    return handler


def _run_serve(args: argparse.Namespace) -> int:
    if args.port is None:
        args.port = _env_port()
    return _serve(args)


def register(sub: argparse._SubParsersAction[CommandParser]) -> None:
    serve = add_command(
        sub, "serve", _local(_run_serve), "Serve the CueAPI-compatible HTTP API.", remote=False
    )
    serve.add_argument(
        "--db",
        default=os.environ.get("CUEAPI_DB", "cueapi.db"),
        help="SQLite file or postgresql:// URL (env CUEAPI_DB)",
    )
    serve.add_argument("--host", default=os.environ.get("CUEAPI_HOST", "127.0.0.1"), help="env CUEAPI_HOST")
    serve.add_argument("--port", type=int, default=None, help="env CUEAPI_PORT (default 8000; 0 picks one)")
    reg = serve.add_mutually_exclusive_group()
    reg.add_argument(
        "--allow-register",
        dest="allow_register",
        nargs="?",
        const="open",
        default=None,
        choices=["open", "local"],
        help="who may POST /v1/auth/register: anyone (open, the default of the bare flag; their "
        "addresses get no alert email) or clients on this machine (local, the default on a loopback "
        "host) (env CUEAPI_ALLOW_REGISTER: open, local, closed)",
    )
    reg.add_argument(
        "--no-register", dest="allow_register", action="store_const", const="closed", help="nobody registers"
    )
    serve.add_argument(
        "--public-url",
        default=None,
        metavar="URL",
        help="the server's public base URL: alert emails' links, and a Host local registration accepts "
        "(env CUEAPI_PUBLIC_URL)",
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="a connection must send a request's headers within this long of opening or of its last "
        "answer; also the idle keep-alive timeout "
        f"(env CUEAPI_HEADER_TIMEOUT_SECONDS, default {DEFAULT_HEADER_TIMEOUT:g})",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="a request's body must arrive within this long of its headers "
        f"(env CUEAPI_BODY_TIMEOUT_SECONDS, default {DEFAULT_BODY_TIMEOUT:g})",
    )
    serve.add_argument(
        "--max-connections",
        type=_count,
        default=None,
        metavar="N",
        help="connections served at once, at most half the open-file limit "
        f"(env CUEAPI_MAX_CONNECTIONS, default {DEFAULT_MAX_CONNECTIONS})",
    )
    serve.add_argument(
        "--max-connections-per-address",
        type=_count,
        default=None,
        metavar="N",
        help="connections one client address (IPv6: /64) may hold (env CUEAPI_MAX_CONNECTIONS_PER_ADDRESS, "
        "default a quarter of --max-connections, or all of them with --trust-forwarded-for)",
    )
    serve.add_argument(
        "--max-deliveries",
        type=_slots,
        default=None,
        metavar="N",
        help=f"webhook deliveries in flight on the whole server (env CUEAPI_MAX_DELIVERIES, "
        f"default {_limits.MAX_DELIVERIES})",
    )
    serve.add_argument(
        "--max-deliveries-per-tenant",
        type=_slots,
        default=None,
        metavar="N",
        help="webhook deliveries of one user in flight: a user whose endpoints hang waits in a queue "
        f"of its own (env CUEAPI_MAX_DELIVERIES_PER_TENANT, default {_limits.MAX_DELIVERIES_PER_TENANT})",
    )
    serve.add_argument(
        "--max-deliveries-per-destination",
        type=_slots,
        default=None,
        metavar="N",
        help="webhook deliveries of one user to one scheme://host:port in flight "
        f"(env CUEAPI_MAX_DELIVERIES_PER_DESTINATION, default {_limits.MAX_DELIVERIES_PER_DESTINATION})",
    )
    serve.add_argument(
        "--max-delivery-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the longest a delivery may take, whatever its cue's timeout "
        f"(env CUEAPI_MAX_DELIVERY_TIMEOUT_SECONDS, default {_limits.MAX_DELIVERY_TIMEOUT_SECONDS:g}, "
        f"at most {_limits.DELIVERY_TIMEOUT_CEILING_SECONDS:g})",
    )
    serve.add_argument(
        "--allow-private-targets",
        action="store_true",
        help="let callbacks reach loopback and private networks (development and tests; "
        "env CUEAPI_ALLOW_PRIVATE_TARGETS)",
    )
    serve.add_argument(
        "--worker-lease",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long a pull worker's claim lasts unless extended by an execution heartbeat "
        f"(env CUEAPI_WORKER_LEASE_SECONDS, default {_limits.WORKER_LEASE_SECONDS:g})",
    )
    serve.add_argument(
        "--worker-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="a worker not heard from for this long loses its expired claims "
        f"(env CUEAPI_WORKER_TIMEOUT_SECONDS, default {_limits.WORKER_TIMEOUT_SECONDS:g})",
    )
    serve.add_argument(
        "--node-lease",
        type=float,
        default=None,
        metavar="SECONDS",
        help="several nodes on one PostgreSQL database: a node not heard from for this long has "
        "its cues, deliveries and claims taken over by the others "
        f"(env CUEAPI_NODE_LEASE_SECONDS, default {_limits.NODE_LEASE_SECONDS:g})",
    )
    serve.add_argument(
        "--realert",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the same alert for the same cue or worker within this long counts as one "
        f"(env CUEAPI_REALERT_SECONDS, default {_limits.REALERT_SECONDS:g})",
    )
    serve.add_argument(
        "--rate-limit",
        type=_rate_limit,
        default=None,
        metavar="N",
        help=f"requests a minute per API key, or per client address without a valid key; 0 turns "
        f"limiting off (env CUEAPI_RATE_LIMIT, default {DEFAULT_RATE_LIMIT})",
    )
    serve.add_argument(
        "--trust-forwarded-for",
        action="store_true",
        help="take the client address of per-address limits from the last X-Forwarded-For entry; "
        "only behind a reverse proxy that sets it (env CUEAPI_TRUST_FORWARDED_FOR)",
    )

    keys = add_command(sub, "keys", None, "Manage API users (with the server stopped).", remote=False)
    create = add_command(
        add_group(keys, "keys_command"),
        "create",
        _local(_keys_create),
        "Create a user and print its API key.",
        remote=False,
    )
    create.add_argument("email")
    create.add_argument(
        "--db", default=os.environ.get("CUEAPI_DB", "cueapi.db"), help="SQLite file or postgresql:// URL"
    )

    history = add_command(
        sub,
        "history",
        _local(_history),
        "Print the cues and recent executions of a database (on a server's, each user's under their email).",
        remote=False,
    )
    history.add_argument(
        "--db", default=os.environ.get("CUEAPI_DB", "cueapi.db"), help="SQLite file or postgresql:// URL"
    )
    history.add_argument("--cue", default=None, help="only this cue (id or name)")
    history.add_argument("--limit", type=int, default=50)
