"""The page says that a debate stopped early and why (issue 19 part 1), in Debian's Chromium
against the suite `debate-engine up` starts: a debate of converging simulated debaters under the
consensus rule is created over gRPC, and the page, opened on it (#debate=ID), shows the stop notice
above the verdict. The debaters converge from round 1; `up` paces the judge like the debaters, so
the rounds still played before round 1's assessment passes the rule vary, and are not asserted."""

from __future__ import annotations

import re

import grpc
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg

from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.test_gateway import start_suite, stop_suite

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    running = start_suite(tmp_path_factory.mktemp("browser-stopping"), tokens_per_second=100, first_token_latency=0.05)
    yield running
    stop_suite(running)


def test_the_page_shows_why_a_debate_stopped_early(suite):
    from playwright.sync_api import sync_playwright

    config = c.DebateConfig(
        topic="Cities should ban cars from their centres",
        participants=[
            c.Participant(name="Ada", model="sim/debater-converging@1", persona="an urbanist", stance="for"),
            c.Participant(name="Milo", model="sim/debater-converging@1", persona="a shopkeeper", stance="against"),
        ],
        judge=c.JudgeConfig(models=["sim/judge"]),
        format=c.DebateFormat(round_limit=8),
        max_tokens_per_turn=200,
        stopping=c.StoppingRules(consensus=c.ConsensusRule(min_rounds=1)),
    )
    with grpc.insecure_channel(f"127.0.0.1:{suite.ports['orchestrator']}") as channel:
        stub = pbg.OrchestratorServiceStub(channel)
        debate_id = stub.CreateDebate(pb.CreateDebateRequest(config=config), timeout=30).debate.debate_id
        stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), timeout=30)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{suite.gateway_url}/#debate={debate_id}")
            page.locator("[data-testid=verdict]").wait_for(state="visible", timeout=90_000)
            notice = page.locator("[data-testid=debate-stopped]")
            notice.wait_for(state="visible")
            text = notice.inner_text()
            assert re.search(
                r"Stopped early after round 1 \(consensus\): \d rounds? not played, about \$0\.00 avoided", text
            )
            assert "stated positions converged in round 1" in text
            assert page.locator("#live-state").text_content() == "Finished"
            assert not errors, errors
        finally:
            browser.close()
