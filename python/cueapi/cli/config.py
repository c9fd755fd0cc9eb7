"""Where a command finds its server and key: the flags, the environment, and the official CLI's
credentials file (``$XDG_CONFIG_HOME/cueapi/credentials.json``, profiles by name, each
``{"api_key", "email", "api_base"}``; written 0600), which both CLIs read and write alike."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._http import DEFAULT_BASE_URL, base_url_of
from ..exceptions import ValidationError
from .common import Failure, UsageError, env

DEFAULT_PROFILE = "default"


def credentials_path() -> Path:
    """The official CLI's file: ``%APPDATA%\\cueapi`` on Windows, else ``$XDG_CONFIG_HOME/cueapi``
    (``~/.config/cueapi`` when unset or empty)."""
    if os.name == "nt":
        root = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    else:
        root = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return root / "cueapi" / "credentials.json"


def load() -> dict[str, dict[str, Any]]:
    """Every profile; {} when there is no file."""
    path = credentials_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise Failure(f"cannot read {path}: {e.strerror or e}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise Failure(
            f"{path} is not valid JSON ({e}); fix it or remove it (`cueapi logout --all`)"
        ) from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise Failure(f"{path} is not a credentials file (an object of profiles); fix it or remove it")
    return data


def _write(profiles: dict[str, dict[str, Any]]) -> None:
    """Replaces the file at once (a crash leaves the old one), readable by its owner only: the
    new file is 0600 from its creation, so the key is never readable by others, even briefly."""
    path = credentials_path()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(profiles, f, indent=2)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise Failure(f"cannot write {path}: {e.strerror or e}") from None


def save_profile(name: str, entry: dict[str, Any]) -> Path:
    """Adds or replaces one profile, keeping the others."""
    profiles = load()
    profiles[name] = entry
    _write(profiles)
    return credentials_path()


def remove_profile(name: str) -> dict[str, Any] | None:
    """Removes one profile; returns it, or None when there was none."""
    profiles = load()
    entry = profiles.pop(name, None)
    if entry is not None:
        _write(profiles)
    return entry


def remove_all() -> bool:
    """Removes the whole file; whether there was one."""
    path = credentials_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as e:
        raise Failure(f"cannot remove {path}: {e.strerror or e}") from None
    return True


@dataclass(frozen=True)
class Settings:
    """A command's server and key, and where each came from (for messages; the key itself is
    never printed)."""

    base_url: str
    base_source: str
    api_key: str | None
    key_source: str
    profile: str
    profile_entry: dict[str, Any] | None


def profile_name(flag: str | None) -> str:
    return flag or env("CUEAPI_PROFILE") or DEFAULT_PROFILE


def resolve(*, api_key: str | None, base_url: str | None, profile: str | None) -> Settings:
    """Key: ``--api-key``, ``CUEAPI_API_KEY``, the profile's. Base URL: ``--base-url``,
    ``CUEAPI_API_BASE`` (the official CLI's, ending in /v1), ``CUEAPI_BASE_URL``, the profile's
    ``api_base``, the hosted service. The profile: ``--profile``, ``CUEAPI_PROFILE``, "default"."""
    name = profile_name(profile)
    entry = load().get(name)
    stored_base = entry.get("api_base") if entry else None
    source, value = _first(
        ("--base-url", base_url),
        ("CUEAPI_API_BASE", env("CUEAPI_API_BASE")),
        ("CUEAPI_BASE_URL", env("CUEAPI_BASE_URL")),
        (f"profile {name!r}", stored_base if isinstance(stored_base, str) else None),
        ("default", DEFAULT_BASE_URL),
    )
    try:
        root = base_url_of(value or DEFAULT_BASE_URL)
    except ValidationError as e:
        if source == "--base-url":
            raise UsageError(e.message) from None
        raise Failure(f"{source}: {e.message}") from None
    stored_key = entry.get("api_key") if entry else None
    key_source, key = _first(
        ("--api-key", api_key),
        ("CUEAPI_API_KEY", env("CUEAPI_API_KEY")),
        (f"profile {name!r}", stored_key if isinstance(stored_key, str) else None),
    )
    return Settings(root, source, key.strip() if key else None, key_source, name, entry)


def _first(*candidates: tuple[str, str | None]) -> tuple[str, str | None]:
    """The first (source, value) with a value; ("none", None) when none has one."""
    for source, value in candidates:
        if value and value.strip():
            return source, value
    return "none", None


def no_key_message(settings: Settings) -> str:
    login = (
        "cueapi login"
        if settings.profile == DEFAULT_PROFILE
        else f"cueapi --profile {settings.profile} login"
    )
    state = "has no key" if settings.profile_entry is not None else "is not"
    return (
        f"no API key. Give --api-key KEY, set CUEAPI_API_KEY, or save one with `{login} --api-key KEY "
        f"--base-url URL` (profile {settings.profile!r} {state} in {credentials_path()})."
    )
