"""Vote buttons and the tally on the page (issue 18 part 4), in a real browser: Debian's Chromium
driven by Playwright against the suite `debate-engine up` starts (Envoy serves the page and
grpc-web on one origin; tests/e2e/test_browser.py has the set-up this file reuses). Two browser
contexts are two voters (each keeps its own voter id in localStorage). A screenshot goes to
test-artifacts/browser-votes.png."""

from __future__ import annotations

import pytest

from tests.e2e.test_browser import ARTIFACTS, browser  # noqa: F401 (the module's Chromium fixture)
from tests.e2e.test_gateway import start_suite, stop_suite

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    running = start_suite(tmp_path_factory.mktemp("browser-votes"), tokens_per_second=0, first_token_latency=0)
    yield running
    stop_suite(running)


def new_page(browser, errors: list[str]):  # noqa: F811 - the imported fixture
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    return context, page


def tally(page) -> list[str]:
    return [t.strip() for t in page.locator("[data-testid=vote-tally] li").all_inner_texts()]


def test_votes_are_cast_replaced_and_tallied_on_the_page(suite, browser):  # noqa: F811 - the imported fixture
    errors: list[str] = []
    first_context, page = new_page(browser, errors)
    page.goto(suite.gateway_url + "/")
    page.fill("#topic", "Cities should ban private cars from their centres")
    page.fill("#rounds", "1")
    page.fill("#max-tokens", "60")
    page.click("#start")
    page.locator("[data-testid=verdict]").wait_for(state="visible", timeout=60_000)
    url = page.url
    assert "#debate=" in url

    votes = page.locator("#votes")
    votes.wait_for(state="visible")
    assert votes.locator("button").all_inner_texts() == ["Ada", "Grace", "Tie"]
    page.wait_for_function("document.querySelectorAll('[data-testid=vote-tally] li').length === 4")
    assert tally(page) == ["Ada: 0", "Grace: 0", "Tie: 0", "0 voters; no majority yet"]

    votes.locator("button[data-choice=Ada]").click()
    page.wait_for_function("document.querySelector('[data-testid=vote-status]').textContent.includes('counts')")
    assert tally(page) == ["Ada: 1", "Grace: 0", "Tie: 0", "1 voter; majority: Ada"]
    assert votes.locator("button[data-choice=Ada]").get_attribute("aria-pressed") == "true"

    votes.locator("button[data-choice=tie]").click()  # the same voter again: replaced
    page.wait_for_function("document.querySelector('[data-testid=vote-status]').textContent.includes('changed')")
    assert tally(page) == ["Ada: 0", "Grace: 0", "Tie: 1", "1 voter; majority: a tie"]

    second_context, other = new_page(browser, errors)  # another voter, on the same debate
    other.goto(url)
    other.locator("#votes button[data-choice=Grace]").click()
    other.wait_for_function("document.querySelector('[data-testid=vote-status]').textContent.includes('counts')")
    assert tally(other) == ["Ada: 0", "Grace: 1", "Tie: 1", "2 voters; no majority yet"]

    page.reload()  # the first voter sees both votes
    page.wait_for_function("document.querySelectorAll('[data-testid=vote-tally] li').length === 4")
    assert tally(page) == ["Ada: 0", "Grace: 1", "Tie: 1", "2 voters; no majority yet"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#votes").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "browser-votes.png"), full_page=True)
    first_context.close()
    second_context.close()
    assert not errors, f"the page threw: {errors}"
