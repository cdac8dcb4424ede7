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
    assert re.fullmatch(r"\$\d[\d,]*\.\d+ of \$5\.00", page.locator("#budget-used").inner_text())
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


PHONE_WIDTHS = (360, 390, 430)
PHONE_NAMES = ["Ada", "Grace", "Linus", "Rosalind", "Maximiliana-Wolkenstein", "Bo", "Chidimma", "Esperanza"]

# What sticks out sideways at the current width: the page's scroll width against the screen's,
# every visible element whose box passes the screen's right or left edge, every score table or
# cost table that scrolls inside its card, and every score cell not fully on the screen.
_MEASURE = """() => {
    const width = document.documentElement.clientWidth;
    const scrollWidth = Math.max(document.documentElement.scrollWidth, document.body.scrollWidth);
    const describe = (node) => node.tagName.toLowerCase() + (node.id ? '#' + node.id : '')
        + (node.className && typeof node.className === 'string' ? '.' + node.className.split(' ').join('.') : '')
        + (node.dataset.participant ? `[${node.dataset.participant}]` : '');
    const outside = [];
    for (const node of document.body.querySelectorAll('*')) {
        const box = node.getBoundingClientRect();
        if (box.width === 0 || box.height === 0 || !node.checkVisibility()) continue;
        if (box.right > width + 0.5 || box.left < -0.5) outside.push(`${describe(node)} ${box.left}..${box.right}`);
    }
    const scrolling = [...document.querySelectorAll('.table-wrap, .cost-group, .round-card, .column')]
        .filter((node) => node.scrollWidth > node.clientWidth + 1).map(describe);
    const cells = [];
    for (const card of document.querySelectorAll('[data-testid=round-score]')) {
        const wrap = card.querySelector('.table-wrap').getBoundingClientRect();
        for (const row of card.querySelectorAll('tbody tr')) {
            for (const cell of row.querySelectorAll('th, td')) {
                const box = cell.getBoundingClientRect();
                const label = cell.dataset.label || 'name';
                const shown = box.width > 0 && box.left >= wrap.left - 0.5 && box.right <= wrap.right + 0.5
                    && box.right <= width + 0.5 && cell.checkVisibility();
                cells.push({debater: row.dataset.debater, label, shown, text: cell.textContent});
            }
        }
    }
    return {width, scrollWidth, outside: outside.slice(0, 8), scrolling, cells};
}"""


def _assert_fits(page, width: int, when: str) -> list[dict]:
    page.set_viewport_size({"width": width, "height": 844})
    page.wait_for_timeout(50)
    found = page.evaluate(_MEASURE)
    where = f"{when} at {width} px"
    assert found["width"] == width, where
    assert found["scrollWidth"] <= width, f"{where}: the page scrolls sideways ({found})"
    assert not found["outside"], f"{where}: cut off at the screen's edge: {found['outside']}"
    assert not found["scrolling"], f"{where}: scrolls inside a card: {found['scrolling']}"
    hidden = [c for c in found["cells"] if not c["shown"]]
    assert not hidden, f"{where}: score cells off the screen: {hidden[:6]}"
    return found["cells"]


def _start_phone_debate(browser, gateway_url: str, debaters: int):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(gateway_url + "/")
    page.fill("#topic", "Cities should ban private cars from their centres, with no exceptions whatsoever")
    for _ in range(debaters - 2):
        page.click("#add-debater")
    for i, name in enumerate(PHONE_NAMES[:debaters]):
        page.fill(f"[data-field='config.participants[{i}].name']", name)
    page.fill("#rounds", "2")
    page.fill("#max-tokens", "80")  # turns long enough that every page is seen streaming
    page.fill("#budget", "5")
    for width in PHONE_WIDTHS:  # the form too
        _assert_fits(page, width, f"the form with {debaters} debaters")
    page.click("#start")
    page.wait_for_selector("#live:not([hidden])")
    # Each round's card as it appears, with the running total shown at that moment.
    page.evaluate("""() => {
        window.__rounds = [];
        const tokens = document.getElementById('token-total');
        new MutationObserver((changes) => {
            for (const change of changes) for (const node of change.addedNodes) {
                if (!node.dataset || node.dataset.testid !== 'round-score') continue;
                const note = node.querySelector('[data-testid=cost-note]');
                window.__rounds.push({round: node.dataset.round, runningTokens: Number(tokens.dataset.value),
                    tokens: note && Number(note.dataset.tokens), amount: note && note.dataset.amount,
                    live: !document.querySelector('#verdict:not([hidden])')});
            }
        }).observe(document.getElementById('round-scores'), {childList: true});
    }""")
    return context, page, errors


_FIGURES = """() => ({
    rounds: window.__rounds,
    running: {tokens: Number(document.getElementById('token-total').dataset.value),
              amount: document.getElementById('cost-total').dataset.value},
    final: {tokens: Number(document.querySelector('.cost-final').dataset.tokens),
            amount: document.querySelector('.cost-final').dataset.amount},
    notes: Object.fromEntries([...document.querySelectorAll('[data-testid=cost-note]')].map(
        (note) => [note.dataset.key, {tokens: Number(note.dataset.tokens), amount: note.dataset.amount}])),
    groups: Object.fromEntries([...document.querySelectorAll('#cost-breakdown .cost-group')].map((group) => [
        group.dataset.group,
        Object.fromEntries([...group.querySelectorAll('tbody tr')].map(
            (row) => [row.dataset.key, {tokens: Number(row.dataset.tokens), amount: row.dataset.amount}])),
    ])),
})"""


_SPENT = """() => ({budget: document.getElementById('budget-used').dataset.value,
                    cost: document.getElementById('cost-total').dataset.value})"""


def _streaming(page) -> bool:
    """Text is streaming into every column (over 20 characters in each)."""
    return page.evaluate("""() => [...document.querySelectorAll('[data-testid=debater-column]')]
        .every(c => c.querySelector('.turn.streaming .turn-text')?.textContent.length > 20)""")


def _measure_streaming(page, n: int, measured: set[str]) -> None:
    """The page at every phone width while text streams into every column: the shortest phase."""
    for width in PHONE_WIDTHS:
        _assert_fits(page, width, f"a live debate with {n} debaters")
    page.screenshot(path=str(ARTIFACTS / f"browser-phone-{n}-live.png"), full_page=False)
    measured.add("streaming")


def _measure_scored(page, n: int, measured: set[str]) -> None:
    """Notes "ended" once the debate has ended (its end is measured after the loop,
    `_measure_end`); before that, measures the page at every phone width once a round is scored
    while the debate is live (a phase that lasts the next round and its judging)."""
    if page.locator("#cost-breakdown:not([hidden])").count():
        measured.add("ended")
        return
    live = page.locator("#verdict:not([hidden])").count() == 0
    if live and "scored" not in measured and page.locator("[data-testid=round-score]").count():
        for width in PHONE_WIDTHS:
            _assert_fits(page, width, f"a live debate with {n} debaters and a round scored")
        # The budget used is the running cost, one figure.
        assert page.locator("#budget-metric").is_visible()
        spent = page.evaluate(_SPENT)
        assert spent["budget"] == spent["cost"], spent
        measured.add("scored")


def _measure_end(page, n: int, measured: set[str]) -> None:
    """Measures an ended debate's page at every phone width, and two wider ones."""
    page.wait_for_timeout(500)  # the entrance animations
    for width in PHONE_WIDTHS:
        cells = _assert_fits(page, width, f"the end with {n} debaters")
    labels = {c["label"] for c in cells}
    assert {"Total", "name"} <= labels and len(labels) >= 4, labels  # the criteria, the total
    assert len(cells) == 2 * n * len(labels), (n, len(cells), labels)  # two rounds, every debater
    page.screenshot(path=str(ARTIFACTS / f"browser-phone-{n}-end.png"), full_page=True)
    for width in (768, 1360):  # and no wider screen scrolls either
        _assert_fits(page, width, f"the end with {n} debaters")
    measured.add("end")


def _assert_cost_figures_agree(suite, page, n: int) -> None:
    figures = page.evaluate(_FIGURES)
    by_round = figures["groups"]["round"]
    assert set(by_round) == {"0", "1", "2"}, by_round
    # Each round's figures (on its card) and the verdict's are the breakdown's lines.
    assert figures["notes"] == by_round, (figures["notes"], by_round)
    # When round r's scores appeared, the running total at the top already held rounds 1..r
    # whole, the judge's calls included.
    assert [r["round"] for r in figures["rounds"]] == ["1", "2"], figures["rounds"]
    for seen in figures["rounds"]:
        r = int(seen["round"])
        assert seen["tokens"] == by_round[str(r)]["tokens"]
        done = sum(by_round[str(k)]["tokens"] for k in range(1, r + 1))
        assert seen["runningTokens"] >= done, (n, seen, by_round)
    # The figures at the top are the breakdown's total, which is the sum of its rounds.
    assert figures["running"] == figures["final"], figures
    assert page.evaluate(_SPENT)["budget"] == figures["final"]["amount"]
    assert figures["final"]["tokens"] == sum(line["tokens"] for line in by_round.values())
    # The debaters, and only they, under "By debater"; the judge under "By role".
    assert set(figures["groups"]["debater"]) == set(PHONE_NAMES[:n])
    assert {"debater", "judge", "verdict"} <= {k.removeprefix("ROLE_").lower() for k in figures["groups"]["role"]}
    # And the page's figures are the server's.
    debate_id = page.evaluate("decodeURIComponent(location.hash.slice('#debate='.length))")
    cost = (
        GrpcWeb(suite.gateway_url)
        .unary("GetDebate", orchestrator_pb2.GetDebateRequest(debate_id=debate_id), orchestrator_pb2.GetDebateResponse)
        .debate.cost
    )
    assert figures["final"] == {"tokens": cost.usage.total_tokens, "amount": cost.total.amount}
    assert by_round == {
        line.key: {"tokens": line.usage.total_tokens, "amount": line.cost.amount} for line in cost.by_round
    }


def test_the_page_fits_a_phone_and_its_cost_figures_agree(suite, browser):
    """At 360, 390 and 430 px with 2, 4 and 8 debaters, during a debate (text streaming, and
    again once a round is scored) and at its end: the page never scrolls sideways, nothing is cut
    off at the screen's edge, and every score (each criterion and the total, for every debater)
    is on the screen. The cost figures come from one source: each round's figures equal its line
    in the final breakdown, the running total shown when a round's scores appear already counts
    that round's judge calls, the final total at the top equals the breakdown's, and the "By
    debater" list holds the debaters only (the judge is under "By role")."""
    ARTIFACTS.mkdir(exist_ok=True)
    runs = {n: _start_phone_debate(browser, suite.gateway_url, n) for n in (2, 4, 8)}
    try:
        measured: dict[int, set[str]] = {n: set() for n in runs}
        for _ in range(1500):  # bounded: about 3 minutes
            # The shortest phase first: text streaming in every column lasts a turn, so while a
            # page streams that has not been measured streaming, nothing slower is measured.
            waiting = [n for n in runs if not measured[n] & {"streaming", "ended"}]
            streaming = [n for n in waiting if _streaming(runs[n][1])]
            for n in streaming:
                _measure_streaming(runs[n][1], n, measured[n])
            if not streaming:  # at most one slower measurement before looking again
                for n, (_context, page, _errors) in runs.items():
                    if "ended" not in measured[n]:
                        before = set(measured[n])
                        _measure_scored(page, n, measured[n])
                        if "scored" in measured[n] - before:
                            break
            if all("ended" in m for m in measured.values()):
                break
            runs[2][1].wait_for_timeout(100)
        for n, (_context, page, _errors) in runs.items():
            _measure_end(page, n, measured[n])
        assert all(m == {"streaming", "scored", "ended", "end"} for m in measured.values()), measured
        for n, (_context, page, errors) in runs.items():
            assert not errors, f"the page threw: {errors}"
            assert page.locator("#live-state").text_content() == "Finished"
            _assert_cost_figures_agree(suite, page, n)
    finally:
        for context, _page, _errors in runs.values():
            context.close()
