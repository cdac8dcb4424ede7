"""Terminal output with the standard library only: ANSI colours, word wrapping, tables.

Colour is used only when the stream is a TTY, NO_COLOR is unset and TERM is not "dumb";
box-drawing glyphs only when the stream's encoding is UTF-8. Everything else is plain text
that reads well in a CI log.
"""

from __future__ import annotations

import os
import re
import shutil
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TextIO

RESET = "\x1b[0m"
CODES = {
    "bold": "1",
    "dim": "2",
    "italic": "3",
    "underline": "4",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
    "bright_red": "91",
    "bright_green": "92",
    "bright_yellow": "93",
    "bright_blue": "94",
    "bright_magenta": "95",
    "bright_cyan": "96",
}
# One colour per debater, in the order of the debate's participants.
DEBATER_COLOURS = (
    "bright_cyan",
    "bright_magenta",
    "bright_yellow",
    "bright_green",
    "bright_blue",
    "bright_red",
    "cyan",
    "magenta",
)

# Control characters a model could use to move the cursor or rewrite the terminal, and the bidi
# embeddings, overrides and isolates that reorder what a reader sees; newline and tab are kept
# (so are the joiners of emoji and scripts: services.common.text says which are in place).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def cell_len(text: str) -> int:
    """Terminal columns of plain text: wide (East Asian, emoji) characters take two,
    combining marks none."""
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def clip_right(text: str, columns: int) -> str:
    """The start of `text` that fits in `columns` (at least one character)."""
    used = 0
    for i, ch in enumerate(text):
        used += cell_len(ch)
        if used > columns:
            return text[: max(i, 1)]
    return text


def clip_left(text: str, columns: int) -> str:
    """The end of `text` that fits in `columns`."""
    kept, used = [], 0
    for ch in reversed(text):
        used += cell_len(ch)
        if used > columns:
            break
        kept.append(ch)
    return "".join(reversed(kept))


def safe_text(text: str) -> str:
    """Model or user text with terminal control sequences and bidi overrides removed."""
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\t", "    "))


@dataclass(frozen=True)
class Style:
    color: bool = False
    unicode: bool = True
    width: int = 100
    live: bool = False  # a TTY: text may be written mid-line and erased

    @classmethod
    def for_stream(cls, stream: TextIO) -> Style:
        tty = bool(getattr(stream, "isatty", lambda: False)())
        color = tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "")
        columns = shutil.get_terminal_size((100, 24)).columns if tty else 100
        # one column spare: a line that fills the last column makes some terminals wrap early
        return cls(color=color, unicode=encoding.startswith("utf"), width=max(50, min(columns - 1, 110)), live=tty)

    def paint(self, text: str, *styles: str) -> str:
        if not self.color or not styles or not text:
            return text
        return "\x1b[" + ";".join(CODES[s] for s in styles) + "m" + text + RESET

    def debater(self, index: int, text: str, *extra: str) -> str:
        """`text` in the debater's colour; with "tint", the softer shade used for its words."""
        colour = DEBATER_COLOURS[index % len(DEBATER_COLOURS)]
        if "tint" in extra:
            colour = colour.removeprefix("bright_")
            extra = tuple(e for e in extra if e != "tint")
        return self.paint(text, colour, *extra)

    def glyph(self, fancy: str, plain: str) -> str:
        return fancy if self.unicode else plain

    def rule(self, title: str = "", *, char: tuple[str, str] = ("━", "=")) -> str:
        line = self.glyph(*char)
        if not title:
            return self.paint(line * self.width, "dim")
        head = f"{line * 3} {title} "
        return self.paint(head, "bold") + self.paint(line * max(3, self.width - len(head)), "dim")


class Wrapper:
    """Word-wraps text that arrives in pieces, returning what can be written at once.

    Every line starts with `prefix` (already painted; `prefix_width` visible columns). A word
    is written when the whitespace after it arrives, or at `finish()`, so a line is never
    broken after it was written. Runs of blank lines collapse to one.
    """

    def __init__(self, width: int, prefix: str, prefix_width: int, paint: Callable[[str], str] = lambda s: s):
        self.width = max(width, prefix_width + 10)
        self.prefix, self.prefix_width, self.paint = prefix, prefix_width, paint
        self.column = 0  # 0: nothing written on this wrapper yet
        self.word = ""
        self.space = False
        self.newlines = 0

    def feed(self, text: str) -> str:
        out: list[str] = []
        for char in text:
            if char == "\n":
                self._flush(out)
                self.newlines += 1
                self.space = False
            elif char.isspace():
                self._flush(out)
                self.space = not self.newlines
            else:
                self.word += char
        return "".join(out)

    def finish(self) -> str:
        """The held word, then the end of the line."""
        out: list[str] = []
        self._flush(out)
        if self.column:
            out.append("\n")
        self.column, self.space, self.newlines = 0, False, 0
        return "".join(out)

    def _newline(self, out: list[str]) -> None:
        out.append("\n" + self.prefix)
        self.column = self.prefix_width

    def _flush(self, out: list[str]) -> None:
        if not self.word:
            return
        word, self.word = self.word, ""
        if not self.column:
            out.append(self.prefix)
            self.column = self.prefix_width
        elif self.newlines:
            for _ in range(min(self.newlines, 2)):
                self._newline(out)
        elif self.space:
            if self.column + 1 + cell_len(word) > self.width:
                self._newline(out)
            else:
                out.append(" ")
                self.column += 1
        self.space, self.newlines = False, 0
        while self.column + cell_len(word) > self.width:  # longer than a whole line: split it
            head = clip_right(word, self.width - self.column)
            out.append(self.paint(head))
            word = word[len(head) :]
            self._newline(out)
        out.append(self.paint(word))
        self.column += cell_len(word)


class Screen:
    """Text to a terminal or a pipe, in whole lines.

    `write` queues text: whole lines become permanent at the next `flush`, a partial line waits
    in `partial`. Not live (a pipe, a CI log): only whole lines are written. Live (a TTY): under
    the permanent lines a region of rows, `region()`, is redrawn at every flush; every row fits
    one terminal row, so the region is erased by moving up its length.
    """

    def __init__(self, out: TextIO, live: bool):
        self.out = out
        self.live = live
        self.partial = ""  # the current partial line (on a TTY, shown in the live region)
        self._done_lines: list[str] = []  # whole lines not yet written
        self._region: list[str] = []  # the live region on screen (TTY only)

    def write(self, text: str) -> None:
        """Queues text; whole lines become permanent at the next flush, a partial one waits."""
        head, newline, self.partial = (self.partial + text).rpartition("\n")
        if newline:
            self._done_lines.append(head + "\n")

    def flush(self, region: Callable[[], list[str]]) -> None:
        """Plain: writes the whole lines. TTY: also redraws the live region under them."""
        lines, self._done_lines = "".join(self._done_lines), []
        if not self.live:
            self.out.write(lines)
        else:
            rows = region()
            if lines or rows != self._region:
                self.out.write(self._erase_region() + lines + "\n".join(rows))
                self._region = rows
        self.out.flush()

    def _erase_region(self) -> str:
        """Moves to the region's first row and clears to the end of the screen."""
        if not self._region:
            return ""
        up = len(self._region) - 1
        return "\r" + (f"\x1b[{up}A" if up else "") + "\x1b[J"


def table(
    style: Style,
    headers: Sequence[str],
    rows: Sequence[Sequence[str] | str | None],
    *,
    align: str = "",
    indent: int = 2,
    paint: Callable[[int, int, str], str] | None = None,
) -> list[str]:
    """A plain table: a bold header, a rule, then rows; columns two spaces apart.

    `align` holds one of "l"/"r" per column (default: first left, the rest right); `paint`
    (row, column, padded text) styles a cell after padding, so colours never break alignment
    (row -1 is the header, bold by default).
    A row that is a single string is a section title spanning the table; None is a rule.
    """
    align = align or "l" + "r" * (len(headers) - 1)
    widths = [len(h) for h in headers]
    for row in rows:
        if row is None or isinstance(row, str):
            continue
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    pad = " " * indent

    def fit(cell: str, i: int) -> str:
        return cell.ljust(widths[i]) if align[i] == "l" else cell.rjust(widths[i])

    head = [fit(h, i) for i, h in enumerate(headers)]
    head = [paint(-1, i, h) for i, h in enumerate(head)] if paint else [style.paint(h, "bold") for h in head]
    lines = [(pad + "  ".join(head)).rstrip()]
    rule = pad + style.paint(style.glyph("─", "-") * (sum(widths) + 2 * (len(widths) - 1)), "dim")
    lines.append(rule)
    for r, row in enumerate(rows):
        if row is None:
            lines.append(rule)
            continue
        if isinstance(row, str):
            lines.append(pad + style.paint(row, "dim", "italic"))
            continue
        cells = [fit(cell, i) for i, cell in enumerate(row)]
        if paint:
            cells = [paint(r, i, cell) for i, cell in enumerate(cells)]
        lines.append((pad + "  ".join(cells)).rstrip())
    return lines


def money(amount: str, currency: str = "USD") -> str:
    """An exact decimal amount as "$0.0123" (never through a float); empty means zero."""
    try:
        value = Decimal(amount or "0")
    except InvalidOperation:
        return amount
    text = format(value.normalize(), "f")
    if len(text.partition(".")[2]) < 2:
        text = format(value, ".2f")
    return f"${text}" if currency in ("", "USD") else f"{text} {currency}"


def count(n: int) -> str:
    return f"{n:,}"
