"""``CuePayload``: a small builder of cue payloads with the conventional keys."""

from __future__ import annotations

from typing import Any


class CuePayload:
    """Builds a payload dict: ``CuePayload().task("sync").kind("data_sync").build()``. The
    ``task`` key is what pull workers route on; the others are conventions for agents."""

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}

    def _set(self, key: str, value: Any) -> CuePayload:
        self._data[key] = value
        return self

    def task(self, task_name: str) -> CuePayload:
        return self._set("task", task_name)

    def kind(self, kind: str) -> CuePayload:
        return self._set("kind", kind)

    def instruction(self, text: str) -> CuePayload:
        return self._set("instruction", text)

    def context_ref(self, ref: str) -> CuePayload:
        return self._set("context_ref", ref)

    def context_mode(self, mode: str) -> CuePayload:
        return self._set("context_mode", mode)

    def agent(self, agent_name: str) -> CuePayload:
        return self._set("agent", agent_name)

    def extra(self, key: str, value: Any) -> CuePayload:
        return self._set(key, value)

    def build(self) -> dict[str, Any]:
        """A new dict each time."""
        return dict(self._data)
