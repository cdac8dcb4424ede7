"""services/common/text.py: what the judge (and the orchestrator) clean user text with."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.text import clean_text, plural

ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
CONTROL = "\x00\x01\x07\x1b\x7f\x9b"


@pytest.mark.parametrize("hidden", list(ZERO_WIDTH + BIDI + CONTROL))  # between Latin letters
def test_invisible_characters_are_removed(hidden):
    assert clean_text(f"nuclear{hidden} power", 100) == "nuclear power"


def test_whitespace_collapses_to_one_line_by_default():
    assert clean_text("  a\tb\r\n\nc\u2028d  ", 100) == "a b c d"


def test_keep_newlines_keeps_lines_but_not_runs_of_blank_ones():
    assert clean_text("a  b\r\n\n\n\nc\u2029d", 100, keep_newlines=True) == "a b\n\nc\nd"


def test_length_is_bounded_and_visible_text_survives():
    assert clean_text("x" * 1000, 64) == "x" * 64
    assert clean_text("café — 中文 😀", 100) == "café — 中文 😀"
    assert clean_text("abc  def", 4) == "abc"


ZWJ, ZWNJ, VS16 = "\u200d", "\u200c", "\ufe0f"
TAGS = "".join(chr(0xE0000 + ord(c)) for c in "gbeng")
CANCEL_TAG = "\U000e007f"


# Issue 20, item 7: what a person typed on purpose is kept; what hides or reorders text is not.
@pytest.mark.parametrize(
    "what, text, expected",
    [
        # kept as typed
        ("ZWJ emoji", "a chef 👩\u200d🍳", "a chef 👩\u200d🍳"),
        ("family", "👨\u200d👩\u200d👧\u200d👦", "👨\u200d👩\u200d👧\u200d👦"),
        ("skin tone in a ZWJ sequence", "👩🏽\u200d💻", "👩🏽\u200d💻"),
        ("skin tone", "👍🏿 agreed", "👍🏿 agreed"),
        ("emoji style and ZWJ", "🏳\ufe0f\u200d🌈 ❤\ufe0f\u200d🔥", "🏳\ufe0f\u200d🌈 ❤\ufe0f\u200d🔥"),
        ("text style", "☺\ufe0e", "☺\ufe0e"),
        ("keycap", "1\ufe0f\u20e3", "1\ufe0f\u20e3"),
        ("flags", "🇫🇷 🇯🇵 🇺🇦", "🇫🇷 🇯🇵 🇺🇦"),
        ("subdivision flag", f"🏴{TAGS}{CANCEL_TAG} England", f"🏴{TAGS}{CANCEL_TAG} England"),
        ("Devanagari half form (ZWJ)", "क्\u200dष", "क्\u200dष"),
        ("Devanagari explicit virama (ZWNJ)", "क्\u200cष", "क्\u200cष"),
        ("Persian ZWNJ", "می\u200cخواهم", "می\u200cخواهم"),
        ("Persian plural", "کتاب\u200cها", "کتاب\u200cها"),
        ("Bengali", "র\u200d্য", "র\u200d্য"),
        ("ideographic variant", "葛\U000e0100城", "葛\U000e0100城"),
        ("standardized variant", "≩\ufe00", "≩\ufe00"),
        # removed
        ("bidi override", "nuclear \u202egnihton\u202c power", "nuclear gnihton power"),
        ("bidi isolates and marks", "a\u2066b\u2069c\u200fd\u061ce", "abcde"),
        ("zero-width space", "ig\u200bnore", "ignore"),
        ("ZWNJ in Latin text", "ig\u200cnore previous", "ignore previous"),
        ("ZWJ in Latin text", "ig\u200dnore", "ignore"),
        ("word joiner and BOM", "a\u2060b\ufeffc", "abc"),
        ("ZWJ not between emoji", "👩\u200d abc \u200d🍳", "👩 abc 🍳"),
        ("doubled ZWJ", "👩\u200d\u200d🍳", "👩🍳"),
        ("joiner at a word's edge", "\u200dक्ष\u200c", "क्ष"),
        ("joiner between scripts", "a\u200cب", "aب"),
        ("tag smuggling", "hello" + "".join(chr(0xE0000 + ord(c)) for c in "ignore all"), "hello"),
        ("tags after another emoji", f"🙂{TAGS}{CANCEL_TAG}", "🙂"),
        ("too many tags", f"🏴{TAGS}{TAGS}{CANCEL_TAG}", "🏴"),
        ("tags with no cancel tag", f"🏴{TAGS}", "🏴"),
        ("variation selector smuggling", "a" + "".join(chr(0xFE00 + i) for i in (3, 7, 1, 12)) + "b", "a\ufe03b"),
        ("emoji selector after a letter", "a\ufe0fb", "ab"),
        ("ideographic selector run", "a\U000e0100\U000e0101 b", "a b"),
        ("lone selector", "\ufe0f\U000e0100", ""),
    ],
)
def test_what_cleaning_keeps_and_removes(what, text, expected):
    assert clean_text(text, 200) == expected, what
    assert clean_text(expected, 200) == expected, what


def test_a_cut_never_leaves_half_a_sequence():
    assert clean_text("ab👩\u200d🍳", 4) == "ab👩"
    assert clean_text(f"x 🏴{TAGS}{CANCEL_TAG}", 5) == "x 🏴"
    assert clean_text("क्\u200dष", 3) == "क्"


SEQUENCE_PIECES = [
    "a",
    " ",
    "\n",
    "क",
    "्",
    "ष",
    "ب",
    "ی",
    "👩",
    "🍳",
    "🏽",
    "🏴",
    "葛",
    "1",
    "\u20e3",
    ZWJ,
    ZWNJ,
    VS16,
    "\ufe00",
    "\U000e0100",
    CANCEL_TAG,
    *TAGS,
    *BIDI,
    "\u200b",
]


@given(
    st.one_of(st.text(), st.lists(st.sampled_from(SEQUENCE_PIECES), max_size=40).map("".join)),
    st.integers(min_value=0, max_value=50),
    st.booleans(),
)
def test_result_is_bounded_clean_and_stable(text, limit, keep_newlines):
    cleaned = clean_text(text, limit, keep_newlines=keep_newlines)
    assert len(cleaned) <= limit
    assert not any(c in cleaned for c in "\u200b\u2060\ufeff" + BIDI + CONTROL)
    for i, c in enumerate(cleaned):  # a joiner left is between two characters that are not ASCII
        if c in (ZWJ, ZWNJ):
            assert 0 < i < len(cleaned) - 1 and not cleaned[i - 1].isascii() and not cleaned[i + 1].isascii()
    assert clean_text(cleaned, limit, keep_newlines=keep_newlines) == cleaned


def test_no_max_length_cleans_without_truncating():
    assert clean_text("a\u200b" * 1000) == "a" * 1000


def test_plural():
    assert [plural(1, "round"), plural(2, "round"), plural(0, "call"), plural(3, "reply", "replies")] == [
        "1 round",
        "2 rounds",
        "0 calls",
        "3 replies",
    ]


def test_marks_that_compose_once_a_hidden_character_is_gone_are_normalised():
    assert clean_text("cafe\u200d\u0301", 100) == "caf\u00e9"
    assert clean_text(clean_text("cafe\u200d\u0301", 100), 100) == "caf\u00e9"
