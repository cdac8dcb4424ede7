"""Cleaning of user-supplied text (topics, personas, stances, turns) before it reaches a model.

Control characters, zero-width characters and bidirectional overrides are invisible to a
person reading a debate but visible to a model: they can hide instructions, fake a chat
boundary, or reorder what a reader sees (the "Trojan Source" trick). `clean_text` removes
them, normalises to NFC, and bounds the length so a persona cannot carry a payload.

    clean_text(persona, MAX_PERSONA_LENGTH)              # one line, collapsed whitespace
    clean_text(turn_text, 20_000, keep_newlines=True)    # multi-line text keeps its lines
"""

from __future__ import annotations

import re
import unicodedata

# Unicode general categories removed outright: Cc control (except the whitespace kept
# below), Cf format (zero-width space/joiners, BOM, soft hyphen, every bidi embedding,
# override, isolate and mark), Cs lone surrogates, Co private use, Cn unassigned.
_REMOVED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
# Characters that look like whitespace to a reader and become a plain space or newline.
_SPACE_LIKE = frozenset({"\t", "\v", "\f", "\x85", "\u2028", "\u2029"})
_NEWLINES = frozenset({"\n", "\r", "\x85", "\u2028", "\u2029"})

_HORIZONTAL_RUNS = re.compile(r"[^\S\n]+")
_BLANK_LINE_RUNS = re.compile(r"\n{3,}")
_ALL_WHITESPACE_RUNS = re.compile(r"\s+")

MAX_TOPIC_LENGTH = 500
MAX_PERSONA_LENGTH = 500
MAX_STANCE_LENGTH = 200
MAX_NAME_LENGTH = 64


def is_invisible(char: str) -> bool:
    """True for a control, format (zero-width, bidi), surrogate, private or unassigned char."""
    return unicodedata.category(char) in _REMOVED_CATEGORIES


def clean_text(text: str, max_length: int | None = None, *, keep_newlines: bool = False) -> str:
    """`text` without control, zero-width or bidirectional characters, at most `max_length` chars.

    `max_length=None` cleans without truncating (for a caller that rejects long input instead).

    Whitespace runs collapse to one space (with `keep_newlines`, line breaks survive, "\\r\\n"
    becomes "\\n" and more than one blank line collapses to one). The result is stripped.
    Idempotent: cleaning a cleaned text changes nothing.
    """
    if max_length is not None and max_length < 0:
        raise ValueError("max_length must be >= 0")
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n"))
    kept: list[str] = []
    for char in text:
        if char in _NEWLINES:
            kept.append("\n" if keep_newlines else " ")
        elif char in _SPACE_LIKE:
            kept.append(" ")
        elif not is_invisible(char):
            kept.append(char)
    cleaned = "".join(kept)
    if keep_newlines:
        lines = (_HORIZONTAL_RUNS.sub(" ", line).strip() for line in cleaned.split("\n"))
        cleaned = _BLANK_LINE_RUNS.sub("\n\n", "\n".join(lines)).strip()
    else:
        cleaned = _ALL_WHITESPACE_RUNS.sub(" ", cleaned).strip()
    return cleaned if max_length is None else cleaned[:max_length].rstrip()
