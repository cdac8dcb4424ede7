"""Cleaning of user-supplied text (topics, personas, stances, turns) before it reaches a model.

Control characters, zero-width characters and bidirectional overrides are invisible to a
person reading a debate but visible to a model: they can hide instructions, fake a chat
boundary, or reorder what a reader sees (the "Trojan Source" trick), and runs of variation
selectors or tag characters can smuggle a whole hidden message behind one visible character.
`clean_text` removes them, normalises to NFC, and bounds the length so a persona cannot carry a
payload.

What a person typed on purpose is kept, where it does what it is for:

- the zero-width joiner (U+200D) between two emoji of a ZWJ sequence ("👩‍🍳", "👨‍👩‍👧", "🏳️‍🌈"),
  after a skin tone or an emoji's variation selector too ("👩🏽‍💻", "❤️‍🔥");
- the joiners ZWJ and ZWNJ (U+200C) between two letters or marks of a script that shapes with
  them: Devanagari and the other Indic scripts ("क्‍ष"), Arabic and Persian ("می‌خواهم"), Syriac,
  N'Ko, Mongolian, Sinhala, Myanmar, Khmer, ...;
- one variation selector after a character it can vary: VS15/VS16 (text or emoji style) after an
  emoji character ("❤️", "1️⃣"), VS1-VS14 after a letter, digit, symbol or punctuation, and an
  ideographic variation selector (U+E0100..U+E01EF) after a Han character;
- tag characters only inside an emoji tag sequence, the subdivision flags ("🏴 + gbeng + cancel
  tag" is England's flag).

Flags (regional indicator pairs), skin tones and keycaps are visible characters and always kept.
Everything else of the categories Cc (but the whitespace below), Cf (zero-width space, word
joiner, BOM, soft hyphen, every bidi embedding, override, isolate and mark), Cs, Co and Cn goes,
and so do the variation selectors and joiners outside the places above.

    clean_text(persona, MAX_PERSONA_LENGTH)              # one line, collapsed whitespace
    clean_text(turn_text, 20_000, keep_newlines=True)    # multi-line text keeps its lines
"""

from __future__ import annotations

import re
import unicodedata

import regex

# Unicode general categories removed outright (outside the sequences kept, below): Cc control
# (except the whitespace kept), Cf format, Cs lone surrogates, Co private use, Cn unassigned.
_REMOVED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
# Characters that look like whitespace to a reader become a plain newline or space.
_TO_NEWLINE = str.maketrans({"\r": "\n", "\x85": "\n", "\u2028": "\n", "\u2029": "\n"})
_TO_SPACE = str.maketrans({"\t": " ", "\v": " ", "\f": " "})
_SPECIAL_WHITESPACE = "\r\x85\u2028\u2029\t\v\f"
# Variation selectors are marks (Mn), so str.isprintable passes them: looked for on their own.
_VARIATION_SELECTORS = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")

# Scripts whose letters join, or not, by ZWJ and ZWNJ (Unicode's UAX #31, "joiner controls").
_JOINING_SCRIPTS = [
    "Arabic",
    "Syriac",
    "Nko",
    "Mongolian",
    "Devanagari",
    "Bengali",
    "Gurmukhi",
    "Gujarati",
    "Oriya",
    "Tamil",
    "Telugu",
    "Kannada",
    "Malayalam",
    "Sinhala",
    "Tibetan",
    "Myanmar",
    "Khmer",
    "Thaana",
    "Mandaic",
    "Manichaean",
    "Psalter_Pahlavi",
    "Adlam",
]
_JOINING = "".join(rf"\p{{Script_Extensions={name}}}" for name in _JOINING_SCRIPTS)
_JOINING_LETTER = rf"[[\p{{L}}\p{{M}}]&&[{_JOINING}]]"
_EMOJI_BEFORE_ZWJ = r"[\p{Extended_Pictographic}\p{Emoji_Modifier}\ufe0f]"
_TAG = r"[\U000E0030-\U000E0039\U000E0061-\U000E007A]"  # the tag digits and small letters
# Characters that go unless _KEPT says they are in place: controls but "\n", format characters,
# surrogates, private use, unassigned, and every variation selector.
_CANDIDATE = regex.compile(r"[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\ufe00-\ufe0f\U000E0100-\U000E01EF--\n]", regex.VERSION1)
# A candidate that is in place, matched at its position (the lookbehinds see the text before).
_KEPT = regex.compile(
    rf"""
        (?<=\U0001F3F4(?={_TAG}{{1,6}}\U000E007F){_TAG}{{0,5}}){_TAG}    # a subdivision flag's tags:
      | (?<=\U0001F3F4{_TAG}{{1,6}})\U000E007F                         # black flag, tags, cancel tag
      | (?<={_EMOJI_BEFORE_ZWJ})\u200d(?=\p{{Extended_Pictographic}})   # ZWJ emoji sequence
      | (?<={_JOINING_LETTER})[\u200c\u200d](?={_JOINING_LETTER})        # joining scripts
      | (?<=\p{{Emoji}})[\ufe0e\ufe0f]                                  # text or emoji style
      | (?<=[\p{{L}}\p{{N}}\p{{S}}\p{{P}}])[\ufe00-\ufe0d]              # standardized variants
      | (?<=\p{{Han}})[\U000E0100-\U000E01EF]                           # ideographic variants
    """,
    regex.VERBOSE | regex.VERSION1,
)


def _remove_invisible(text: str) -> str:
    """`text` without the candidates for removal that are not in place."""
    parts: list[str] = []
    start = 0
    for candidate in _CANDIDATE.finditer(text):
        at = candidate.start()
        if _KEPT.match(text, at) is None:
            parts.append(text[start:at])
            start = at + 1
    if not parts:
        return text
    parts.append(text[start:])
    return "".join(parts)


MAX_TOPIC_LENGTH = 500
MAX_PERSONA_LENGTH = 500
MAX_STANCE_LENGTH = 200
MAX_NAME_LENGTH = 64


def is_invisible(char: str) -> bool:
    """True for a control, format (zero-width, bidi), surrogate, private or unassigned char (one
    that `clean_text` removes unless it is part of a sequence it keeps)."""
    return unicodedata.category(char) in _REMOVED_CATEGORIES


def clean_text(text: str, max_length: int | None = None, *, keep_newlines: bool = False) -> str:
    """`text` without control, zero-width or bidirectional characters, at most `max_length` chars.

    `max_length=None` cleans without truncating (for a caller that rejects long input instead).
    ZWJ emoji sequences, the joiners of Indic and Arabic-script text, variation selectors in
    place and flag tag sequences are kept (see the module's docstring).

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
    suspect = not text.replace("\n", "").isprintable() or (
        not text.isascii() and _VARIATION_SELECTORS.search(text) is not None
    )
    cleaned = _remove_invisible(text) if suspect else text
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
    if max_length is None or len(cleaned) <= max_length:
        return cleaned
    cleaned = cleaned[:max_length].rstrip()
    if not cleaned.isascii():  # the cut may leave half a sequence: a joiner or tags with nothing after
        cleaned = _remove_invisible(cleaned).rstrip()
    return cleaned


def plural(count: int, word: str, many: str | None = None) -> str:
    """`count` and `word` in agreement: plural(1, "round") == "1 round", plural(3, "round") == "3 rounds",
    plural(2, "reply", "replies") == "2 replies". Thousands are not grouped."""
    return f"{count} {word if count == 1 else many or word + 's'}"
