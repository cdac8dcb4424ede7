"""A person plays a seat from the page (issue 19 part 3), in Debian's Chromium driven by
Playwright, against the suite `debate-engine up` starts (Envoy serves the page and grpc-web):
the form makes Ada a human seat, the page shows whose turn it is with a countdown and a text
box, the browser types the turn, and the turn streams into Ada's column and is priced at 0.
The Chromium setup is tests/e2e/test_browser.py's. A screenshot goes to test-artifacts/."""

from __future__ import annotations

import re

import pytest

from tests.e2e.test_browser import ARTIFACTS, CHROMIUM_ARGS, browser, page  # noqa: F401 (fixtures)
from tests.e2e.test_gateway import start_suite, stop_suite

pytestmark = pytest.mark.e2e

TURN = "Remote work frees hours for family and care. Offices matter less than trust."


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    running = start_suite(tmp_path_factory.mktemp("browser-human-suite"), tokens_per_second=40, first_token_latency=0.1)
    yield running
    stop_suite(running)


def test_a_person_types_a_turn_for_a_human_seat(suite, page):  # noqa: F811 (the fixture)
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(suite.gateway_url + "/")
    page.fill("[data-field='config.participants[0].model']", "human")
    page.select_option("#turn-order", "sequential")
    page.fill("#rounds", "1")
    page.fill("#max-tokens", "60")
    page.click("#start")

    # whose turn it is, a countdown to the deadline (300 s by default) and a text box
    panel = page.locator("[data-testid=human-seat]")
    panel.wait_for(state="visible", timeout=60_000)
    assert "Ada's turn · round 1" in panel.inner_text()
    clock = page.locator("[data-testid=human-countdown]")
    first = clock.inner_text()
    assert re.fullmatch(r"[45]:\d\d left", first), first
    page.wait_for_function(
        "first => document.querySelector('[data-testid=human-countdown]').textContent !== first", arg=first
    )

    # a turn over the budget is refused, next to the box, and nothing is given
    page.locator("[data-testid=human-text]").fill("word " * 100)
    page.click("[data-testid=human-submit]")
    error = page.locator("[data-testid=human-error]")
    error.wait_for(state="visible")
    assert "text:" in error.inner_text() and "max_tokens_per_turn = 60" in error.inner_text()
    assert panel.is_visible()
    page.locator("[data-testid=human-text]").fill("")
    assert error.is_hidden()

    # the person types the turn
    box = page.locator("[data-testid=human-text]")
    box.fill("")
    box.press_sequentially(TURN, delay=5)
    page.screenshot(path=str(ARTIFACTS / "browser-human-seat.png"), full_page=True)
    page.click("[data-testid=human-submit]")
    panel.wait_for(state="hidden", timeout=30_000)

    ada = page.locator("[data-testid=debater-column][data-participant=Ada] .turn-text")
    ada.first.wait_for()
    page.wait_for_function(
        "text => document.querySelector('[data-participant=Ada] .turn-text').textContent === text", arg=TURN
    )
    page.locator("[data-testid=verdict]").wait_for(state="visible", timeout=90_000)
    meta = page.locator("[data-participant=Ada] .turn-meta").inner_text()
    assert re.search(r"\d+ tokens \(\d+ written\) · \$0\.00", meta), meta
    page.locator("#cost-breakdown:not([hidden])").wait_for()
    ada_row = page.locator("#cost-breakdown tr", has_text="Ada").first.inner_text()
    assert "$0.00" in ada_row, ada_row
    assert page.locator("#live-state").text_content() == "Finished"
