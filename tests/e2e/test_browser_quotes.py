"""Evidence on the page, in a real browser (Debian's Chromium through Playwright) against the
suite `debate-engine up` starts: a debate with source documents, created through grpc-web, is
opened by its URL, and every quote of every turn shows its mark (verified, partial, unverified)
as the stored turn has it (GetDebate)."""

from __future__ import annotations

import pytest
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.common.limits import MAX_SOURCE_BYTES
from services.common.quotes import status_name
from tests.e2e.test_browser import ARTIFACTS, browser, page  # noqa: F401 - fixtures
from tests.e2e.test_gateway import GrpcWeb, start_suite, stop_suite
from tests.integration.test_evidence import DOC1, config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    running = start_suite(tmp_path_factory.mktemp("quotes-suite"), tokens_per_second=400, first_token_latency=0.05)
    yield running
    stop_suite(running)


def test_the_page_marks_each_quote_verified_partial_or_unverified(suite, page):  # noqa: F811 - fixture
    web = GrpcWeb(suite.gateway_url)
    debate = web.unary("CreateDebate", pb.CreateDebateRequest(config=config(rounds=3)), pb.CreateDebateResponse).debate
    web.unary("StartDebate", pb.StartDebateRequest(debate_id=debate.debate_id), pb.StartDebateResponse)

    page.goto(f"{suite.gateway_url}/#debate={debate.debate_id}")
    page.locator("[data-testid=verdict]").wait_for(state="visible", timeout=120_000)
    stored = web.unary("GetDebate", pb.GetDebateRequest(debate_id=debate.debate_id), pb.GetDebateResponse).debate

    statuses = set()
    for round_ in stored.rounds:
        for turn in round_.turns:
            assert turn.quotes
            shown = page.locator(
                f"[data-testid=debater-column][data-participant='{turn.participant}'] "
                f".turn[data-round='{round_.round_number}'] [data-testid=quote]"
            )
            assert shown.count() == len(turn.quotes), (round_.round_number, turn.participant)
            for i, quote in enumerate(turn.quotes):
                mark = shown.nth(i)
                name = status_name(quote.status)
                statuses.add(name)
                assert mark.get_attribute("data-status") == name
                assert mark.get_attribute("data-source") == quote.source_id
                assert mark.locator("q").text_content() == quote.text
                assert (
                    mark.locator(".quote-mark")
                    .text_content()
                    .startswith({"verified": "✓ verified", "partial": "≈ partial", "unverified": "✗ unverified"}[name])
                )
                assert mark.is_visible()
            # the text around the quotes is the turn's, unchanged
            text = page.locator(
                f"[data-testid=debater-column][data-participant='{turn.participant}'] "
                f".turn[data-round='{round_.round_number}'] .turn-text"
            ).evaluate("""node => [...node.childNodes].map(n =>
                n.nodeType === Node.TEXT_NODE ? n.data : n.querySelector('q').textContent).join('')""")
            assert text == _without_marks(turn)
    assert statuses == {"verified", "partial", "unverified"}
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-quotes.png"), full_page=True)


def _without_marks(turn) -> str:
    """The turn's text with each marked quote replaced by its words."""
    out, at = [], 0
    chars = list(turn.text)
    for quote in turn.quotes:
        out += chars[at : quote.start] + list(quote.text)
        at = quote.end
    return "".join(out + chars[at:])


def test_a_source_pasted_in_the_form_reaches_the_debate_and_its_quotes_are_marked(suite, page):  # noqa: F811
    page.goto(suite.gateway_url + "/")
    page.fill("#topic", "Cities should ban private cars from their historic centres")
    page.fill("#rounds", "1")
    page.click(".sources-settings summary")
    page.fill("#source-text", DOC1)
    page.check("#hide-sources")
    page.click("#start")
    page.locator("[data-testid=verdict]").wait_for(state="visible", timeout=120_000)
    marks = page.locator("[data-testid=quote]")
    assert marks.count() >= 2  # each debater quotes the document
    assert {marks.nth(i).get_attribute("data-source") for i in range(marks.count())} == {"doc-1"}

    debate_id = page.evaluate("decodeURIComponent(location.hash.slice('#debate='.length))")
    web = GrpcWeb(suite.gateway_url)
    stored = web.unary("GetDebate", pb.GetDebateRequest(debate_id=debate_id), pb.GetDebateResponse).debate
    assert [(s.id, s.text) for s in stored.config.sources] == [("doc-1", DOC1)]
    assert stored.config.evidence.hide_sources_from_judge
    shown = [marks.nth(i).get_attribute("data-status") for i in range(marks.count())]
    # one round: the columns' order is the debaters' order
    assert shown == [status_name(q.status) for t in stored.rounds[0].turns for q in t.quotes]


def test_a_source_too_large_is_shown_next_to_its_field(suite, page):  # noqa: F811
    page.goto(suite.gateway_url + "/")
    page.click(".sources-settings summary")
    page.fill("#source-text", "word " * (MAX_SOURCE_BYTES // 5 + 100))
    page.click("#start")
    error = page.locator("[data-error-for='config.sources[0].text']")
    error.wait_for(state="visible")
    assert "bytes" in error.inner_text()
    assert page.locator("#live").is_hidden()
