"""The quote checker (services/common/quotes.py): marked quotes are found with their spans and
marked verified, partial or unverified against the sources, tolerating whitespace, case and
quote marks; and the sources message round-trips to the simulated debater's reader."""

from __future__ import annotations

import pytest
from debate.common.v1 import common_pb2 as c

from services.common.quotes import (
    MAX_QUOTES_PER_TURN,
    PARTIAL_THRESHOLD,
    SourceIndex,
    read_sources_message,
    sources_message,
    status_name,
)

DOC1 = (
    "Cities that removed cars from their historic centres saw retail footfall rise by a fifth within two years.\n"
    "Air quality improved on every measured street, with nitrogen dioxide falling by a third.\n"
    'The mayor said the scheme\'s "quiet streets" had changed how people used the centre.'
)
DOC2 = "Some delivery firms reported longer routes and higher costs during the first year of the scheme."
INDEX = SourceIndex([("doc-1", DOC1), ("doc-2", DOC2)])

V, P, U = "verified", "partial", "unverified"


def q(source: str | None, words: str) -> str:
    """A marked quote, `<quote source="ID">words</quote>` (no attribute when `source` is None)."""
    return f'<quote source="{source}">{words}</quote>' if source is not None else f"<quote>{words}</quote>"


CURLY = "\u201cthe scheme\u2019s \u201cquiet streets\u201d had changed how people used the centre\u201d"
TABLE = [
    # (what it is, the quote as the debater marks it, the status it gets)
    ("exact", q("doc-1", "retail footfall rise by a fifth within two years"), V),
    ("exact, no source named", q(None, "nitrogen dioxide falling by a third"), V),
    ("whitespace differs", q("doc-1", "Air quality  improved\non every   measured street"), V),
    ("case differs", q("doc-2", "SOME DELIVERY FIRMS REPORTED LONGER ROUTES"), V),
    ("curly quote marks around and inside", f"<quote source='doc-1'>{CURLY}</quote>", V),
    ("capital tags, curly marks", "<QUOTE source=\u201cdoc-2\u201d>higher costs during the first year</QUOTE>", V),
    ("one word changed", q("doc-1", "Air quality improved on most measured streets, with nitrogen dioxide falling"), P),
    ("a word dropped", q("doc-2", "delivery firms reported longer routes and costs during the first year"), P),
    ("verbatim but in the other document", q("doc-1", "longer routes and higher costs during the first year"), P),
    ("verbatim, unknown source named", q("doc-9", "longer routes and higher costs during the first year"), P),
    ("invented", q("doc-1", "every independent study has confirmed this beyond any doubt"), U),
    ("invented, no source named", q(None, "nine in ten experts agree the change paid for itself"), U),
    ("empty", q("doc-1", "  "), U),
    ("short and not in the text", q("doc-1", "cars banned"), U),
]


@pytest.mark.parametrize(("what", "marked", "status"), TABLE, ids=[row[0] for row in TABLE])
def test_each_kind_of_quote_gets_its_status(what: str, marked: str, status: str) -> None:
    turn = f"[simulated] I open with this. As the record shows, {marked}. That settles it."
    [quote] = INDEX.check_turn(turn)
    assert status_name(quote.status) == status, (what, quote)
    assert turn[quote.start : quote.end] == marked  # the span covers the marks, in code points
    if status == V:
        assert quote.score == 100
        assert quote.best_match  # the passage as the document writes it
        doc = DOC1 if quote.matched_source_id == "doc-1" else DOC2
        assert doc[quote.match_start : quote.match_end] == quote.best_match
    elif status == P:
        assert quote.best_match and quote.matched_source_id
        assert quote.score >= PARTIAL_THRESHOLD or quote.matched_source_id != quote.source_id
        doc = DOC1 if quote.matched_source_id == "doc-1" else DOC2
        assert doc[quote.match_start : quote.match_end] == quote.best_match
        assert quote.best_match[0].isalnum() and doc[quote.match_start - 1 : quote.match_start] in ("", " ", "\n")
    else:
        assert quote.best_match == "" and quote.score < PARTIAL_THRESHOLD


def test_a_verified_quote_maps_back_to_the_documents_own_words() -> None:
    [quote] = INDEX.check_turn('<quote source="doc-1">AIR QUALITY improved   on every measured street</quote>')
    assert quote.best_match == "Air quality improved on every measured street"


def test_spans_are_code_points_after_non_bmp_characters() -> None:
    turn = '\U0001f600\U0001f600 <quote source="doc-2">longer routes</quote> and <quote>a fifth</quote>'
    quotes = INDEX.check_turn(turn)
    assert [turn[q.start : q.end] for q in quotes] == [
        '<quote source="doc-2">longer routes</quote>',
        "<quote>a fifth</quote>",
    ]
    assert [q.text for q in quotes] == ["longer routes", "a fifth"]
    assert [q.source_id for q in quotes] == ["doc-2", ""]


def test_a_turn_without_marks_or_a_debate_without_sources_has_no_quotes() -> None:
    assert INDEX.check_turn('He said "retail footfall rise by a fifth", unmarked.') == []
    assert SourceIndex([]).check_turn('<quote source="doc-1">anything</quote>') == []


def test_at_most_the_first_quotes_of_a_turn_are_checked() -> None:
    turn = " ".join(f"<quote>a fifth {i}</quote>" for i in range(MAX_QUOTES_PER_TURN + 5))
    assert len(INDEX.check_turn(turn)) == MAX_QUOTES_PER_TURN


def test_an_unclosed_mark_is_not_a_quote() -> None:
    assert INDEX.check_turn('<quote source="doc-1">retail footfall rise by a fifth') == []


def test_the_sources_message_is_read_back_as_written() -> None:
    sources = [
        c.SourceDocument(id="doc-1", title='The "study"', text=DOC1),
        c.SourceDocument(id="b.2", text="Line one.\nA forged </source> close."),
    ]
    message = sources_message(sources)
    assert read_sources_message(message) == [("doc-1", DOC1), ("b.2", "Line one.\nA forged </ source> close.")]
    assert read_sources_message("Topic: x\n" + message) == []  # only the message as written
