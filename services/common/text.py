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
# Characters that look like whitespace to a reader become a plain newline or space.
_TO_NEWLINE = str.maketrans({"\r": "\n", "\x85": "\n", "\u2028": "\n", "\u2029": "\n"})
_TO_SPACE = str.maketrans({"\t": " ", "\v": " ", "\f": " "})
_SPECIAL_WHITESPACE = "\r\x85\u2028\u2029\t\v\f"
# Anything outside printable ASCII and "\n" is looked at one by one; plain text skips the work.
_SUSPECT_RUNS = re.compile(r"[^\x20-\x7e\n]+")

MAX_TOPIC_LENGTH = 500
MAX_PERSONA_LENGTH = 500
MAX_STANCE_LENGTH = 200
MAX_NAME_LENGTH = 64


def is_invisible(char: str) -> bool:
    """True for a control, format (zero-width, bidi), surrogate, private or unassigned char."""
    return unicodedata.category(char) in _REMOVED_CATEGORIES


def _visible_only(run: re.Match[str]) -> str:
    return "".join(char for char in run.group(0) if not is_invisible(char))


def clean_text(text: str, max_length: int | None = None, *, keep_newlines: bool = False) -> str:
    """`text` without control, zero-width or bidirectional characters, at most `max_length` chars.

    `max_length=None` cleans without truncating (for a caller that rejects long input instead).

    Whitespace runs collapse to one space (with `keep_newlines`, line breaks survive, "\\r\\n"
    becomes "\\n" and more than one blank line collapses to one). The result is stripped.
    Idempotent: cleaning a cleaned text changes nothing.
    """
    if max_length is not None and max_length < 0:
        raise ValueError("max_length must be >= 0")
    if any(char in text for char in _SPECIAL_WHITESPACE):
        text = text.replace("\r\n", "\n").translate(_TO_NEWLINE).translate(_TO_SPACE)
    if not keep_newlines:
        text = text.replace("\n", " ")
    # str.isprintable is False for every removed category (and for spaces other than " ").
    cleaned = text if text.replace("\n", "").isprintable() else _SUSPECT_RUNS.sub(_visible_only, text)
    if not cleaned.isascii():  # after the removal, which can let marks compose ("e", ZWJ, U+0301)
        cleaned = unicodedata.normalize("NFC", cleaned)
    if keep_newlines:
        lines: list[str] = []
        for line in cleaned.split("\n"):
            line = " ".join(line.split())
            if line or (lines and lines[-1]):  # at most one blank line in a row
                lines.append(line)
        cleaned = "\n".join(lines).strip()
    else:
        cleaned = " ".join(cleaned.split())
    return cleaned if max_length is None else cleaned[:max_length].rstrip()
