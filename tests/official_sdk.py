"""The official CueAPI SDK (``cueapi-sdk`` 0.1.3 from PyPI, in .venv-sdk) driven in its own
interpreter through tests/sdk_scripts/sdk_driver.py: its import name ``cueapi`` is ours too."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SDK_PYTHON = ROOT / ".venv-sdk" / "bin" / "python"
DRIVER = Path(__file__).resolve().parent / "sdk_scripts" / "sdk_driver.py"


class SDK:
    """The official SDK in its own interpreter: ``sdk("cues.get", cue_id)`` calls
    ``CueAPI(key, base_url=server.url).cues.get(cue_id)`` there and returns the driver's answer
    (see sdk_driver.py): the returned value's type and ``model_dump(mode="json")``, or the
    exception the SDK raised with its status code and error code."""

    def __init__(self, base_url: str, key: str, stderr: Path) -> None:
        self.key = key
        self.stderr_path = stderr
        self.stderr = stderr.open("w")
        self.proc = subprocess.Popen(
            [str(SDK_PYTHON), str(DRIVER), base_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            encoding="utf-8",
        )

    def __call__(self, call: str, /, *args: Any, key: str | None = None, **kwargs: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        request = {"call": call, "args": list(args), "kwargs": kwargs, "key": key or self.key}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the SDK driver died: {self.stderr_path.read_text()}"
        return dict(json.loads(line))

    def ok(self, call: str, /, *args: Any, **kwargs: Any) -> Any:
        """Calls and expects success; returns the value (models dumped to JSON)."""
        out = self(call, *args, **kwargs)
        assert out["ok"], f"{call} raised {out['error']}: {out['message']}\n{out['traceback']}"
        return out["value"]

    def model(self, kind: str, call: str, /, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Calls a method that returns one of the SDK's pydantic models: the response parsed."""
        out = self(call, *args, **kwargs)
        assert out["ok"], f"{call} raised {out['error']}: {out['message']}\n{out['traceback']}"
        assert out["type"] == kind, out
        return dict(out["value"])

    def raises(self, expected: str, call: str, /, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Calls and expects the SDK to raise exactly ``expected`` (a CueAPIError); returns it."""
        out = self(call, *args, **kwargs)
        assert not out["ok"], f"{call} returned {out['value']!r}, expected {expected}"
        assert out["error"] == expected and out["module"] == "cueapi.exceptions", out
        assert out["is_cueapi_error"], out
        return out

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            assert self.proc.wait(timeout=30) == 0, self.stderr_path.read_text()
        finally:
            self.proc.stdout.close()
            self.stderr.close()
