"""The page in a real browser: Debian's Chromium driven by Playwright, against the suite that
`debate-engine up` starts (Envoy serves the page and grpc-web on one origin).

The simulated models are paced (SIM_TOKENS_PER_SECOND) so that streaming is visible: the test
samples each debater's column while the debate runs and expects the text to grow in several
steps, not to appear at once. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import struct
import threading
import time
from pathlib import Path

import pytest
from debate.orchestrator.v1 import orchestrator_pb2

from tests.e2e.test_gateway import GrpcWeb, start_suite, stop_suite
from tests.helpers import ROOT
from tests.support.fault_proxy import FaultProxy

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not CHROMIUM.exists():  # `make test` installs it (the `browser` target)
    pytest.skip("Chromium is not installed; run `make browser`", allow_module_level=True)
if not (ROOT / "web" / "dist" / "index.html").exists():
    pytest.skip("the page is not built; run `make web`", allow_module_level=True)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    # ~5 tokens a second: a 60-token turn streams for about 12 s, in many visible steps, and a
    # two-round debate keeps the page's one stream open for more than 20 s.
    running = start_suite(tmp_path_factory.mktemp("browser-suite"), tokens_per_second=5, first_token_latency=0.3)
    yield running
    stop_suite(running)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"the page threw: {errors}"


def _column_lengths(page) -> dict[str, int]:
    return page.evaluate("""() => Object.fromEntries(
        [...document.querySelectorAll('[data-testid=debater-column]')].map(c => [
            c.dataset.participant,
            [...c.querySelectorAll('.turn-text')].reduce((n, t) => n + t.textContent.length, 0),
        ]))""")


def test_a_debate_streams_live_into_each_column_then_scores_and_verdict(suite, page):
    ARTIFACTS.mkdir(exist_ok=True)
    streams: list[str] = []
    page.on(
        "request", lambda request: streams.append(request.url) if request.url.endswith("/StreamDebateEvents") else None
    )
    page.goto(suite.gateway_url + "/")
    page.fill("#topic", "Cities should ban private cars from their centres")
    page.click("#add-debater")  # a third debater
    page.fill("[data-field='config.participants[2].name']", "Linus")
    page.fill("#rounds", "2")
    page.fill("#max-tokens", "60")
    page.fill("#budget", "5")
    page.click("#start")

    page.wait_for_selector("#live:not([hidden])")
    began = time.monotonic()
    assert page.locator("[data-testid=debater-column]").count() == 3
    names = ["Ada", "Grace", "Linus"]

    # Sample every column's text length while the debate runs.
    samples: dict[str, list[int]] = {name: [] for name in names}
    mid_debate_shot = False
    for _ in range(1200):  # bounded: at most ~2 minutes of sampling
        lengths = _column_lengths(page)
        for name in names:
            samples[name].append(lengths.get(name, 0))
        if not mid_debate_shot and all(lengths.get(n, 0) > 80 for n in names):
            page.screenshot(path=str(ARTIFACTS / "browser-debate-live.png"), full_page=True)
            mid_debate_shot = True
        if page.locator("#verdict:not([hidden])").count():
            break
        page.wait_for_timeout(100)
    streamed_for = time.monotonic() - began

    for name in names:
        seen = samples[name]
        distinct = sorted(set(seen))
        # Several distinct, growing lengths: the text arrived token by token, not all at once.
        assert len([n for n in distinct if n > 0]) >= 4, (name, distinct)
        assert all(a <= b for a, b in itertools.pairwise(seen)), f"{name}'s text shrank: {seen}"

    # The verdict, the round scores and the cost.
    verdict = page.locator("[data-testid=verdict]")
    verdict.wait_for(state="visible")
    assert re.search(r"wins|tie", verdict.inner_text(), re.IGNORECASE)
    rounds = page.locator("[data-testid=round-score]")
    assert rounds.count() == 2
    for i in range(2):
        card = rounds.nth(i)
        assert card.locator("tbody tr").count() == 3
        assert re.search(r"Leader: (Ada|Grace|Linus)|Tie", card.inner_text())
    assert re.fullmatch(r"\$\d[\d,]*\.\d+", page.locator("[data-testid=cost]").inner_text())
    page.locator("#cost-breakdown:not([hidden])").wait_for()
    assert re.fullmatch(r"\$\d[\d,]*\.\d+ of \$5\.00", page.locator("#budget-left").inner_text())
    assert page.locator("#live-state").text_content() == "Finished"
    for name in names:  # the finished text of each turn stays in its column
        column = page.locator(f"[data-testid=debater-column][data-participant='{name}']")
        assert column.locator(".turn").count() == 2

    # One grpc-web stream carried the whole debate, open for more than 20 s and never cut.
    assert len(streams) == 1, streams
    assert streamed_for > 20, f"the debate took only {streamed_for:.1f}s; slow the sim models down further"

    page.wait_for_timeout(600)  # let the verdict's entrance animation finish
    page.screenshot(path=str(ARTIFACTS / "browser-debate.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.screenshot(path=str(ARTIFACTS / "browser-debate-phone.png"), full_page=False)

    # Back on the form, the debate is among the recent ones; opening it replays its log.
    page.set_viewport_size({"width": 1360, "height": 900})
    page.click("#new-debate")
    recent = page.locator("#recent-list a", has_text="Cities should ban private cars")
    recent.first.wait_for()
    recent.first.click()
    page.locator("[data-testid=verdict]").wait_for(state="visible")
    assert page.locator("[data-testid=round-score]").count() == 2
    assert page.locator("#live-state").text_content() == "Finished"


def test_the_servers_field_errors_are_shown_next_to_their_fields(suite, page):
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(suite.gateway_url + "/")
    page.fill("#topic", "")
    page.click("[data-field='config.participants[1]'] .remove-debater")  # a single debater
    page.click("#start")

    topic_error = page.locator("[data-error-for='config.topic']")
    topic_error.wait_for(state="visible")
    assert "empty" in topic_error.inner_text()
    assert page.locator("#topic").get_attribute("aria-invalid") == "true"
    debaters_error = page.locator("[data-error-for='config.participants']")
    assert debaters_error.is_visible()
    assert re.search(r"2 to \d+ debaters", debaters_error.inner_text())
    assert page.locator("#live").is_hidden()  # nothing started

    # A violation inside one debater lands on that debater's input.
    page.fill("#topic", "Tea is better than coffee")
    page.click("#add-debater")
    page.fill("[data-field='config.participants[1].name']", "Ada")  # a duplicate name
    page.click("#start")
    name_error = page.locator("[data-error-for='config.participants[1].name']")
    name_error.wait_for(state="visible")
    assert "duplicate" in name_error.inner_text().lower()
    assert page.locator("[data-error-for='config.topic']").is_hidden()
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(400)
    page.screenshot(path=str(ARTIFACTS / "browser-field-errors.png"), full_page=True)


class ThreadedFaultProxy:
    """tests.support.fault_proxy.FaultProxy on its own event loop, for the sync Playwright API."""

    def __init__(self, target: str):
        host, _, port = target.rpartition(":")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.proxy = self._run(FaultProxy(host, int(port)).start())
        self.url = f"http://127.0.0.1:{self.proxy.port}"

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=15)

    def cut(self) -> int:
        async def cut() -> int:
            return self.proxy.cut()

        return self._run(cut())

    def close(self) -> None:
        self._run(self.proxy.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def _after_sequence(body: bytes | None) -> int:
    """The after_sequence of a grpc-web StreamDebateEvents request body."""
    assert body and body[0] == 0
    (length,) = struct.unpack(">I", body[1:5])
    return orchestrator_pb2.StreamDebateEventsRequest.FromString(body[5 : 5 + length]).after_sequence


def test_the_page_resumes_a_dropped_stream_with_after_sequence(suite, page):
    """The connection under the event stream is reset mid-debate (a proxy between the browser
    and Envoy cuts it); the page opens the stream again after the last event it applied and
    ends with the same transcript as the server."""
    proxy = ThreadedFaultProxy(suite.gateway_url.removeprefix("http://"))
    try:
        streams: list[int] = []
        page.on(
            "request",
            lambda request: (
                streams.append(_after_sequence(request.post_data_buffer))
                if request.url.endswith("/StreamDebateEvents")
                else None
            ),
        )
        page.goto(proxy.url + "/")
        page.fill("#topic", "Libraries matter more than ever")
        page.fill("#rounds", "1")
        page.fill("#max-tokens", "40")
        page.click("#start")
        page.wait_for_selector("#live:not([hidden])")
        page.wait_for_function("""() => [...document.querySelectorAll('[data-testid=debater-column]')]
            .every(c => c.textContent.includes('[simulated]'))""")
        assert proxy.cut() >= 1  # the event stream's connection, reset under the page
        page.locator("[data-testid=verdict]").wait_for(state="visible", timeout=120_000)

        assert len(streams) >= 2, streams
        assert streams[0] == 0 and streams[-1] > 0, f"the page did not resume after its last event: {streams}"
        debate_id = page.evaluate("decodeURIComponent(location.hash.slice('#debate='.length))")
        debate = (
            GrpcWeb(suite.gateway_url)
            .unary(
                "GetDebate", orchestrator_pb2.GetDebateRequest(debate_id=debate_id), orchestrator_pb2.GetDebateResponse
            )
            .debate
        )
        for round_ in debate.rounds:
            for turn in round_.turns:
                shown = page.locator(
                    f"[data-testid=debater-column][data-participant='{turn.participant}'] "
                    f".turn[data-round='{round_.round_number}'] .turn-text"
                ).text_content()
                assert shown == turn.text, (round_.round_number, turn.participant)
        assert page.locator("[data-testid=round-score]").count() == 1
    finally:
        proxy.close()


def test_a_suite_with_api_keys_asks_the_page_for_one_and_the_page_sends_it(browser, tmp_path):
    keys = {
        "API_KEYS": "page-key-0123456789=alice,suite-key-0123456789=suite",
        "SERVICE_API_KEY": "suite-key-0123456789",
    }
    keyed = start_suite(tmp_path, tokens_per_second=40, extra_env=keys)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(keyed.gateway_url + "/")
        page.click("#start")
        banner = page.locator("#banner")
        banner.wait_for(state="visible")
        assert "API key" in banner.inner_text()
        assert page.locator("#live").is_hidden()
        page.fill("#api-key", "page-key-0123456789")
        page.click("#start")
        page.wait_for_selector("#live:not([hidden])")
        page.wait_for_function("""() => [...document.querySelectorAll('[data-testid=debater-column]')]
            .every(c => c.textContent.includes('[simulated]'))""")
        assert page.locator("#banner").is_hidden()
        page.click("#cancel-debate")  # stop it: it ends CANCELLED, with no error shown
        page.wait_for_function("document.getElementById('live-state').textContent === 'Cancelled'")
        assert page.locator("#cancel-debate").is_hidden()
        assert page.locator("#banner").is_hidden()
    finally:
        context.close()
        stop_suite(keyed)
