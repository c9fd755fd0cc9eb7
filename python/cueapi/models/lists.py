"""Validators of JSON lists of records, made once (a ``TypeAdapter`` builds its validator when
made)."""

from __future__ import annotations

from pydantic import TypeAdapter

from .cue import Cue
from .execution import Execution

CUES: TypeAdapter[list[Cue]] = TypeAdapter(list[Cue])
EXECUTIONS: TypeAdapter[list[Execution]] = TypeAdapter(list[Execution])
