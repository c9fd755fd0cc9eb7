"""The program the embedded-App and pull-worker trials kill: an App (on a SQLite file, or in remote
mode working for a server) whose one handler runs every cue of the plan and appends each step of
each run to a side-effects file, fsynced — ``start``, then ``raise`` (a failed run, retried) or
``done``. It may kill itself with SIGKILL at a chosen point: at the n-th handler start (mid-run,
other claims held), right after the n-th ``done`` (the work is done, its outcome not yet
recorded), or at the first retry it runs.

    python child.py CONFIG.json

CONFIG: ``db`` (and ``grace``) or ``remote`` + ``api_key`` + ``worker_id``; ``names`` (the cues;
with ``specs`` they are created when absent); ``effects`` (the file); ``seed``; ``raise_rate``;
``die`` (``{"at": "start" | "done" | "retry", "n": k}`` or null).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
from typing import Any

import cueapi


def main(config_path: str) -> None:
    with open(config_path) as f:
        config: dict[str, Any] = json.load(f)
    worker = str(config.get("worker_id") or f"pid{os.getpid()}")
    fd = os.open(config["effects"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    die: dict[str, Any] | None = config.get("die")
    rng = random.Random(config["seed"])
    counts = {"start": 0, "done": 0}
    lock = threading.Lock()

    def write(event: str, ctx: cueapi.Context) -> int:
        line = {
            "event": event,
            "worker": worker,
            "id": ctx.execution_id,
            "key": ctx.idempotency_key,
            "attempt": ctx.attempt,
            "at": round(ctx.scheduled_for.timestamp() * 1000),
            "cue": ctx.cue_name,
        }
        with lock:
            os.write(fd, (json.dumps(line) + "\n").encode())
            os.fsync(fd)
            counts[event] = counts.get(event, 0) + 1
            return counts[event]

    def dies_at(point: str, count: int) -> bool:
        return die is not None and die["at"] == point and count >= die["n"]

    def handler(ctx: cueapi.Context) -> None:
        started = write("start", ctx)
        if dies_at("start", started) or (die is not None and die["at"] == "retry" and ctx.attempt > 1):
            os.kill(os.getpid(), signal.SIGKILL)
        with lock:
            work, fail = rng.uniform(0.0, 0.03), rng.random() < config["raise_rate"]
        time.sleep(work)  # the work itself
        if fail:
            write("raise", ctx)
            raise RuntimeError("a failed run (retried)")
        if dies_at("done", write("done", ctx)):
            os.kill(os.getpid(), signal.SIGKILL)

    if "remote" in config:
        app = cueapi.App(
            remote=config["remote"],
            api_key=config["api_key"],
            worker_id=worker,
            workers=config.get("workers", 4),
            poll_interval=0.05,
        )
    else:
        app = cueapi.App(config["db"], workers=config.get("workers", 8), grace=config.get("grace", 60.0))
        if "specs" in config and not app.cues():
            app.create_cues(config["specs"])
    app.handle(*config["names"])(handler)
    app.run()
    os.close(fd)


if __name__ == "__main__":
    main(sys.argv[1])
