"""The verdict history on the page (issue 18 part 6), in Debian's Chromium against the suite that
`debate-engine up` starts (tests/e2e/test_browser.py's set-up): a debate that was re-judged and
then continued shows its three verdict versions, and the live view replays the continued debate
to its last end (its added round included), not only to its first."""

from __future__ import annotations

import re
import time

import grpc
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg

from tests.e2e.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, _assert_fits
from tests.e2e.test_gateway import start_suite, stop_suite

pytestmark = pytest.mark.e2e

if not CHROMIUM.exists():
    pytest.skip("Chromium is not installed; run `make browser`", allow_module_level=True)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    running = start_suite(tmp_path_factory.mktemp("browser-verdicts"), tokens_per_second=0, first_token_latency=0)
    yield running
    stop_suite(running)


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        yield page
        browser.close()
        assert not errors, f"the page threw: {errors}"


def _wait_completed(stub, debate_id: str) -> None:
    deadline = time.monotonic() + 60
    while stub.GetDebateStatus(pb.GetDebateStatusRequest(debate_id=debate_id)).debate.state != (
        pb.DEBATE_STATE_COMPLETED
    ):
        assert time.monotonic() < deadline, "the debate did not complete"
        time.sleep(0.1)


def test_a_rejudged_and_continued_debate_shows_its_verdict_history(suite, page):
    with grpc.insecure_channel(f"127.0.0.1:{suite.ports['orchestrator']}") as channel:
        stub = pbg.OrchestratorServiceStub(channel)
        config = c.DebateConfig(
            topic="Night trains should replace short flights",
            participants=[
                c.Participant(name="Ada", model="sim/debater", persona="a rail planner", stance="for"),
                c.Participant(name="Milo", model="sim/debater", persona="an airline analyst", stance="against"),
            ],
            judge=c.JudgeConfig(models=["sim/judge"]),
            format=c.DebateFormat(round_limit=1),
            max_tokens_per_turn=50,
        )
        debate_id = stub.CreateDebate(pb.CreateDebateRequest(config=config)).debate.debate_id
        stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id))
        _wait_completed(stub, debate_id)
        stub.RejudgeDebate(
            pb.RejudgeDebateRequest(
                debate_id=debate_id, judge=c.JudgeConfig(models=["sim/judge"], orderings=2), request_id="page-rejudge"
            )
        )
        stub.ContinueDebate(
            pb.ContinueDebateRequest(
                debate_id=debate_id, extra_rounds=1, question="What of the sleeper cars' cost?", request_id="page-more"
            )
        )
        _wait_completed(stub, debate_id)

    page.goto(f"{suite.gateway_url}/#debate={debate_id}")
    history = page.locator("[data-testid=verdict-history]")
    history.wait_for(state="visible", timeout=30_000)
    rows = history.locator("[data-testid=verdict-version]")
    assert rows.count() == 3
    texts = [rows.nth(i).inner_text() for i in range(3)]
    assert texts[0].startswith("v1") and "End of the debate" in texts[0]
    assert "Re-judged" in texts[1] and "× 2 orderings" in texts[1] and re.search(r"(Same|Other) winner", texts[1])
    assert "Continued (rounds 2–2)" in texts[2] and "sleeper cars" in texts[2]
    assert rows.nth(2).get_attribute("class") == "latest"
    # The live view followed the debate past its first end: both rounds' turns, finished.
    for name in ("Ada", "Milo"):
        column = page.locator(f"[data-testid=debater-column][data-participant='{name}']")
        assert column.locator(".turn").count() == 2
    assert page.locator("#live-state").text_content() == "Finished"
    ARTIFACTS.mkdir(exist_ok=True)
    history.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "browser-verdict-history.png"), full_page=True)
    # On a phone each version is a small card: nothing cut off, nothing scrolls sideways.
    _assert_fits(page, 360, "the verdict history")
    labels = rows.nth(1).evaluate(
        "row => [...row.querySelectorAll('td')].map(td => getComputedStyle(td, '::before').content)"
    )
    assert labels == ['"Why"', '"Winner"', '"Confidence"', '"Judge"', '"Against v1"', '"Cost"']  # labelled lines
    history.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "browser-verdict-history-phone.png"), full_page=False)
