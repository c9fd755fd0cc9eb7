"""Drives the official CueAPI SDK (``cueapi-sdk``) for tests/test_server_sdk.py.

Runs in ``.venv-sdk`` (the SDK's import name ``cueapi`` clashes with ours), never under pytest.
Usage: ``python sdk_driver.py BASE_URL``. Reads one JSON request a line on stdin:

    {"call": "cues.create", "args": [...], "kwargs": {...}, "key": "<api key>"}

``call`` is an attribute path on a ``cueapi.CueAPI`` client (``cues.get``, ``executions.list``,
``_post``), or ``verify_webhook`` for the SDK's module-level helper. A value
``{"__bytes__": "<base64>"}`` in the arguments stands for raw bytes. Answers one JSON line:

    {"ok": true, "type": "cueapi.models.cue.Cue", "value": ..., "items": [<types of .cues>]}
    {"ok": false, "error": "CueNotFoundError", "is_cueapi_error": true, "status_code": 404, ...}

Models are returned as ``model_dump(mode="json")``; everything the SDK itself raises (including
pydantic's ValidationError when a response does not fit its models) is reported, not fatal.
"""

from __future__ import annotations

import base64
import json
import sys
import traceback
from typing import Any

import cueapi  # the official SDK, installed in .venv-sdk
from pydantic import BaseModel


def decode(v: Any) -> Any:
    if isinstance(v, dict):
        if set(v) == {"__bytes__"}:
            return base64.b64decode(v["__bytes__"])
        return {k: decode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [decode(x) for x in v]
    return v


def type_name(v: Any) -> str:
    t = type(v)
    return f"{t.__module__}.{t.__qualname__}"


def answer(v: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": True, "type": type_name(v)}
    if isinstance(v, BaseModel):
        out["value"] = v.model_dump(mode="json")
        items = getattr(v, "cues", None)
        if isinstance(items, list):
            out["items"] = [type_name(x) for x in items]
    else:
        out["value"] = v
    return out


def failure(e: BaseException) -> dict[str, Any]:
    return {
        "ok": False,
        "error": type(e).__name__,
        "module": type(e).__module__,
        "is_cueapi_error": isinstance(e, cueapi.CueAPIError),
        "status_code": getattr(e, "status_code", None),
        "code": getattr(e, "code", None),
        "message": str(e),
        "body": getattr(e, "body", None),
        "traceback": traceback.format_exc(),
    }


def main() -> None:
    base_url = sys.argv[1]
    clients: dict[str, cueapi.CueAPI] = {}
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["call"] == "verify_webhook":
                target: Any = cueapi.verify_webhook
            else:
                key = req["key"]
                if key not in clients:
                    clients[key] = cueapi.CueAPI(key, base_url=base_url)
                target = clients[key]
                for part in req["call"].split("."):
                    target = getattr(target, part)
            out = answer(target(*decode(req.get("args", [])), **decode(req.get("kwargs", {}))))
        except Exception as e:
            out = failure(e)
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    for c in clients.values():
        c.close()


if __name__ == "__main__":
    main()
