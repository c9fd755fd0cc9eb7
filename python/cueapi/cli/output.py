"""How commands print: aligned tables and ``Label: value`` lines for people, the server's JSON
answer for scripts (``--json``), colour only on a terminal without ``NO_COLOR``, times in UTC.

Table columns are padded by the width the text takes on screen, counted before any colour is
added (the official CLI pads coloured text, so its colour codes push the next column left)."""

from __future__ import annotations

import json
import os
import sys
import unicodedata
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

from .common import Aborted

_COLOURS = {"red": 31, "green": 32, "yellow": 33, "cyan": 36, "bold": 1, "dim": 2}

# The official CLI's status colours; anything else is printed plain.
_STATUS_COLOURS = {
    "active": "green",
    "success": "green",
    "paused": "yellow",
    "pending": "yellow",
    "delivering": "yellow",
    "retrying": "yellow",
    "completed": "cyan",
    "failed": "red",
}


class Styled:
    """Text to show in a colour when colour is on; its width is that of the text alone."""

    def __init__(self, text: str, colour: str | None) -> None:
        self.text = text
        self.colour = colour

    def __str__(self) -> str:
        return self.text


Cell = str | Styled


def width(text: str) -> int:
    """Columns ``text`` takes on a terminal: wide East Asian characters take two, combining marks
    none."""
    n = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        n += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return n


def colour_wanted(stream: TextIO) -> bool:
    """Colour on a terminal, unless ``NO_COLOR`` is set to anything non-empty (no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def utc(value: Any, *, seconds: bool = True) -> str:
    """An ISO-8601 time as ``YYYY-MM-DD HH:MM[:SS] UTC``; "—" for none; other text unchanged."""
    if value is None or value == "":
        return "—"
    if not isinstance(value, str):
        return str(value)
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def status(value: Any) -> Styled:
    text = "?" if value is None else str(value)
    return Styled(text, _STATUS_COLOURS.get(text))


class Output:
    """One command's output. In JSON mode stdout gets exactly one document (:meth:`document`);
    the human lines are left out and notes go to stderr."""

    def __init__(self, json_mode: bool, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.json = json_mode
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.colour = not json_mode and colour_wanted(self.stdout)
        self.error_colour = colour_wanted(self.stderr)

    def paint(self, cell: Cell, on: bool | None = None) -> str:
        if isinstance(cell, str):
            return cell
        if not (self.colour if on is None else on) or cell.colour is None:
            return cell.text
        return f"\x1b[{_COLOURS[cell.colour]}m{cell.text}\x1b[0m"

    # -- people ------------------------------------------------------------------------------

    def line(self, *cells: Cell) -> None:
        """A line of text (nothing in JSON mode)."""
        if not self.json:
            print("".join(self.paint(c) for c in cells), file=self.stdout)

    def success(self, text: str) -> None:
        self.line(Styled(text, "green"))

    def field(self, label: str, value: Cell | None) -> None:
        """``Label:`` padded to 16 columns, then the value (left out when None)."""
        if value is None:
            return
        head = f"{label}:"
        self.line(f"{head:<16} ", value)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> None:
        """Columns as wide as their widest cell, two spaces apart, headers in bold; no trailing
        blanks."""
        widths = [width(h) for h in headers]
        for row in rows:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], width(str(cell)))
        for row in [[Styled(h, "bold") for h in headers], *rows]:
            parts = []
            for i, cell in enumerate(row):
                pad = "" if i == len(row) - 1 else " " * (widths[i] - width(str(cell)) + 2)
                parts.append(self.paint(cell) + pad)
            self.line("".join(parts).rstrip())

    def note(self, text: str) -> None:
        """A remark for people: stdout normally, stderr in JSON mode (stdout is the document)."""
        print(text, file=self.stderr if self.json else self.stdout)

    # -- scripts -----------------------------------------------------------------------------

    def document(self, value: Any) -> None:
        """The one JSON document of a ``--json`` run (nothing otherwise)."""
        if self.json:
            print(json.dumps(value, indent=2, ensure_ascii=False), file=self.stdout)

    # -- errors and questions ----------------------------------------------------------------

    def error(self, text: str) -> None:
        print(self.paint(Styled(f"Error: {text}", "red"), self.error_colour), file=self.stderr)

    def confirm(self, question: str) -> bool:
        """Asks on stderr (stdout stays the command's output); yes only for y or yes. End of input
        raises :class:`Aborted`."""
        print(f"{question} [y/N]: ", end="", file=self.stderr, flush=True)
        answer = sys.stdin.readline()
        if not answer:
            print(file=self.stderr)
            raise Aborted()
        return answer.strip().lower() in ("y", "yes")
