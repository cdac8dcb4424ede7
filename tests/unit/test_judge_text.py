"""services/common/text.py: what the judge (and the orchestrator) clean user text with."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.text import clean_text

ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
CONTROL = "\x00\x01\x07\x1b\x7f\x9b"


@pytest.mark.parametrize("hidden", list(ZERO_WIDTH + BIDI + CONTROL))
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


@given(st.text(), st.integers(min_value=0, max_value=50), st.booleans())
def test_result_is_bounded_clean_and_stable(text, limit, keep_newlines):
    cleaned = clean_text(text, limit, keep_newlines=keep_newlines)
    assert len(cleaned) <= limit
    assert not any(c in cleaned for c in ZERO_WIDTH + BIDI + CONTROL)
    assert clean_text(cleaned, limit, keep_newlines=keep_newlines) == cleaned


def test_no_max_length_cleans_without_truncating():
    assert clean_text("a\u200b" * 1000) == "a" * 1000


def test_marks_that_compose_once_a_hidden_character_is_gone_are_normalised():
    assert clean_text("cafe\u200d\u0301", 100) == "caf\u00e9"
    assert clean_text(clean_text("cafe\u200d\u0301", 100), 100) == "caf\u00e9"
