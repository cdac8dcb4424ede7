"""Counting a text line by line (services/common/tokens.py `_lines`, `_line_counter`) gives
tiktoken's count of the whole text, exactly, whatever the text: the pieces are cut only where no
pre-token of the encodings crosses."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.tokens import _line_counter, _lines, _tiktoken_encoding

# What makes pre-tokens cross a newline, if anything can: whitespace of every kind (Unicode's
# too), punctuation runs, slashes (o200k), apostrophes (contractions), digits, capitals, marks.
AWKWARD = list("aZé ß9/\\'’.!?-_—\n\n\n\r\t\x0b\x0c \u00a0\u2028\u2029\u3000\u200b#<>*`") + [
    "'s",
    "'LL",
    "\r\n",
    "😀",
    "é",
    "1234",
]
ENCODINGS = ("cl100k_base", "o200k_base")

texts = st.lists(st.sampled_from(AWKWARD), max_size=60).map("".join)


@pytest.mark.parametrize("encoding", ENCODINGS)
@settings(max_examples=400, deadline=None)
@given(text=texts)
def test_a_text_counted_line_by_line_is_counted_exactly(encoding, text):
    assert "".join(_lines(text)) == text
    assert _line_counter(encoding)(text) == len(_tiktoken_encoding(encoding).encode_ordinary(text))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_real_prompts_counted_line_by_line_twice_are_counted_exactly(encoding):
    rng = random.Random(7)
    words = [
        "Topic:",
        "cars",
        "ban",
        "Debater",
        "A",
        "<<<k1 BEGIN TURN>>>",
        "<<<k1 END>>>",
        "- clarity:",
        "10/10",
        "it's",
    ]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randrange(0, 12))) for _ in range(200)]
    count = _line_counter(encoding)
    for _ in range(50):
        text = "\n".join(rng.sample(lines, 30))
        whole = len(_tiktoken_encoding(encoding).encode_ordinary(text))
        assert count(text) == whole
        assert count(text) == whole  # from the kept lines


def test_lines_are_cut_after_a_newline_only_before_a_character_that_starts_a_pre_token():
    assert _lines("a\nb\n\nc\n d\n/e\n") == ["a\n", "b\n\n", "c\n d\n/e\n"]
