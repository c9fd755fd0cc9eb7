"""The account: ``login``, ``logout``, ``whoami``, ``usage``, ``key regenerate`` and
``key webhook-secret get|regenerate``."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from .._http import redacted
from . import config
from .common import CommandParser, Failure, UsageError, add_command, add_group, env, option
from .context import Context, remote


def _limit(value: Any) -> str:
    return (
        "unlimited"
        if value is None or value == "unlimited"
        else f"{value:,}"
        if isinstance(value, int)
        else str(value)
    )


def _plan(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("name")
    return str(value or "free").capitalize()


def _section(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


# -- login / logout --------------------------------------------------------------------------


@remote
def login(ctx: Context) -> None:
    s = ctx.settings
    key = option(ctx.args, "api_key") or env("CUEAPI_API_KEY")
    if not key:
        if not sys.stdin.isatty():
            raise UsageError("give the key with --api-key KEY (or CUEAPI_API_KEY)")
        key = getpass.getpass("API key: ").strip()
        if not key:
            raise UsageError("no API key given")
    ctx.use_key(key.strip())
    me = ctx.client.auth.me()
    email = ctx.args.email or me.get("email") or "unknown"
    path = config.save_profile(
        s.profile, {"api_key": key.strip(), "email": email, "api_base": s.base_url + "/v1"}
    )
    out = ctx.out
    out.document(me)
    out.success(f"Authenticated as {email}")
    out.line(f"API key stored in {path} (profile {s.profile!r}, server {s.base_url}).")
    out.line("Run `cueapi quickstart` to try a delivery.")


@remote
def logout(ctx: Context) -> None:
    out = ctx.out
    if ctx.args.all:
        removed = config.remove_all()
        out.document({"removed_all": removed})
        out.line("Removed all credentials." if removed else "No credentials file to remove.")
        return
    name = config.profile_name(option(ctx.args, "profile"))
    entry = config.remove_profile(name)
    out.document({"profile": name, "removed": entry is not None})
    if entry is None:
        out.line(f"No credentials found for profile {name!r}.")
    else:
        out.line(f"Removed credentials for {entry.get('email') or 'unknown'} ({name} profile).")


# -- whoami / usage --------------------------------------------------------------------------


@remote
def whoami(ctx: Context) -> None:
    me = ctx.client.auth.me()
    s, out = ctx.settings, ctx.out
    out.document(me)
    out.line()
    out.field("Email", me.get("email", "?"))
    out.field("Plan", _plan(me.get("plan")))
    out.field("Active cues", f"{me.get('active_cues', 0)} / {_limit(me.get('active_cue_limit'))}")
    out.field(
        "Executions",
        f"{me.get('executions_this_month', 0)} / {_limit(me.get('monthly_execution_limit'))} this month",
    )
    out.field("API key", f"{redacted(s.api_key or '')} (from {s.key_source})")
    out.field("Profile", s.profile if s.profile_entry is not None else f"{s.profile} (not saved)")
    out.field("Server", f"{s.base_url} (from {s.base_source})")
    out.line()


@remote
def usage(ctx: Context) -> None:
    u = ctx.client.usage.get()
    out = ctx.out
    out.document(u)
    cues, runs, rate = (_section(u, k) for k in ("cues", "executions", "rate_limit"))
    out.line()
    out.field("Plan", _plan(u.get("plan")))
    out.field("Active cues", f"{cues.get('active', 0)} / {_limit(cues.get('limit'))}")
    used = runs.get("used", 0)
    if runs.get("unlimited") or not isinstance(runs.get("limit"), int) or runs["limit"] <= 0:
        out.field("Executions", f"{used:,} / unlimited this month")
    else:
        out.field(
            "Executions", f"{used:,} / {runs['limit']:,} ({used / runs['limit'] * 100:.1f}%) this month"
        )
    out.field("Rate limit", f"{rate.get('limit', '?')} req/min")
    out.line()


# -- key -------------------------------------------------------------------------------------


@remote
def key_regenerate(ctx: Context) -> None:
    out = ctx.out
    if not ctx.args.yes and not out.confirm(
        "This revokes your current API key at once; everything using it stops working. Proceed?"
    ):
        out.note("Cancelled.")
        return
    s = ctx.settings
    answer = ctx.client.auth.regenerate_key()
    new_key = answer.get("api_key")
    if not isinstance(new_key, str):
        raise Failure("the server's answer has no api_key")
    # The stored profile follows when it holds the key just replaced.
    entry = s.profile_entry
    updated = entry is not None and entry.get("api_key") == s.api_key
    if updated and entry is not None:
        config.save_profile(s.profile, {**entry, "api_key": new_key})
    out.document(answer)
    out.line()
    out.line(f"New API key: {new_key}")
    out.line("(This is the only time this key will be shown.)")
    out.line()
    if updated:
        out.line(f"Local credentials updated (profile {s.profile!r}).")
    else:
        out.line(f"The key came from {s.key_source}: replace it there.")


@remote
def webhook_secret_get(ctx: Context) -> None:
    answer = ctx.client.auth.webhook_secret()
    ctx.out.document(answer)
    ctx.out.line()
    ctx.out.field("Webhook secret", answer.get("webhook_secret", "?"))
    ctx.out.line()


@remote
def webhook_secret_regenerate(ctx: Context) -> None:
    out = ctx.out
    if not ctx.args.yes and not out.confirm(
        "Rotate the webhook signing secret? The current secret is revoked at once."
    ):
        out.note("Aborted.")
        return
    answer = ctx.client.auth.regenerate_webhook_secret()
    out.document(answer)
    out.line()
    out.success("Rotated the webhook signing secret")
    out.field("New webhook secret (shown once)", answer.get("webhook_secret", "?"))
    out.line()


def register(sub: argparse._SubParsersAction[CommandParser]) -> None:
    p = add_command(
        sub,
        "login",
        login,
        "Save an API key (checked with the server) to the credentials file.",
        description="Checks the key with GET /v1/auth/me and saves it with the server's URL as a "
        "profile of the credentials file (--profile, else CUEAPI_PROFILE, else 'default'). The hosted "
        "service's browser sign-in is not available here: give the key with --api-key (or "
        "CUEAPI_API_KEY, or type it when asked) and the server with --base-url.",
    )
    p.add_argument("--email", help="the email to note in the profile (default: the account's)")
    p = add_command(sub, "logout", logout, "Remove stored credentials.")
    p.add_argument("--all", action="store_true", help="remove every profile (the whole file)")
    add_command(sub, "whoami", whoami, "Show current user info.")
    add_command(sub, "usage", usage, "Show current usage stats.")

    key = add_group(add_command(sub, "key", None, "API key management."), "key_command")
    p = add_command(key, "regenerate", key_regenerate, "Regenerate your API key (revokes current key).")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")
    secret = add_group(
        add_command(key, "webhook-secret", None, "Manage the webhook signing secret."), "secret_command"
    )
    add_command(secret, "get", webhook_secret_get, "Reveal the current webhook signing secret.")
    p = add_command(
        secret,
        "regenerate",
        webhook_secret_regenerate,
        "Rotate the webhook signing secret. Old secret is revoked immediately.",
    )
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")
