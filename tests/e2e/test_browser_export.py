"""Export (issue 19 part 5) in a real browser: Debian's Chromium driven by Playwright, against the
suite that `debate-engine up` starts (Envoy serves the page and grpc-web on one origin).

On a finished debate's view, the Export menu downloads the document that ExportDebate renders
(through grpc-web). The HTML file it saves then opens in Chromium from the disk: it shows the
transcript, the scores, the verdict and the cost, runs no script (a turn that quotes `<script>`
shows it as text) and fetches nothing.
"""

from __future__ import annotations

import re

import grpc
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg

from tests.e2e.test_browser import ARTIFACTS
from tests.e2e.test_browser import browser as browser  # the fixture: Chromium
from tests.e2e.test_browser import page as page  # the fixture: a page that must not throw
from tests.e2e.test_gateway import start_suite, stop_suite

pytestmark = pytest.mark.e2e

TOPIC = "Trains should replace short-haul flights <script>window.pwned = 1</script>"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    running = start_suite(tmp_path_factory.mktemp("browser-export"), tokens_per_second=0, first_token_latency=0)
    yield running
    stop_suite(running)


@pytest.fixture(scope="module")
def finished(suite) -> str:
    """A completed two-round debate whose topic (quoted by the simulated debaters) holds a script tag."""
    config = c.DebateConfig(
        topic=TOPIC,
        participants=[
            c.Participant(name="Ada", model="sim/debater", persona="a rail engineer", stance="for"),
            c.Participant(name="Grace", model="sim/debater", persona="an airline economist", stance="against"),
        ],
        judge=c.JudgeConfig(models=["sim/judge"]),
        format=c.DebateFormat(round_limit=2),
        max_tokens_per_turn=50,
    )
    with grpc.insecure_channel(f"127.0.0.1:{suite.ports['orchestrator']}") as channel:
        stub = pbg.OrchestratorServiceStub(channel)
        debate_id = stub.CreateDebate(pb.CreateDebateRequest(config=config), timeout=30).debate.debate_id
        stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), timeout=30)
        events = [
            r.event.WhichOneof("payload")
            for r in stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id), timeout=120)
        ]
        assert events[-1] == "debate_completed"
    return debate_id


def _download(page, fmt: str, target):
    page.click("[data-testid=export] > summary")
    with page.expect_download() as info:
        page.click(f"[data-testid=export] button[data-format={fmt}]")
    download = info.value
    assert download.failure() is None
    path = target / download.suggested_filename
    download.save_as(path)
    return download.suggested_filename, path


def test_the_export_menu_downloads_each_format_and_the_html_opens_offline(suite, finished, page, browser, tmp_path):
    page.goto(f"{suite.gateway_url}/#debate={finished}")
    page.locator("[data-testid=verdict]").wait_for(state="visible", timeout=60_000)
    page.click("[data-testid=export] > summary")  # the menu, open, for the record
    assert page.locator("[data-testid=export] button").all_inner_texts() == ["Markdown", "JSON", "HTML page"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-export-menu.png"))
    page.click("[data-testid=export] > summary")

    name, markdown = _download(page, "md", tmp_path)
    assert name == f"debate-{finished}.md"
    text = markdown.read_text(encoding="utf-8")
    assert "## Transcript" in text and "## Cost" in text
    assert "\\<script\\>" in text and not re.search(r"(?<!\\)<script", text)  # escaped in the title and turns

    name, html = _download(page, "html", tmp_path)
    assert name == f"debate-{finished}.html"

    # The saved file, opened from the disk in a fresh context.
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    try:
        offline = context.new_page()
        requests: list[str] = []
        errors: list[str] = []
        offline.on("request", lambda request: requests.append(request.url))
        offline.on("pageerror", lambda error: errors.append(str(error)))
        offline.goto(html.as_uri())
        transcript = offline.locator("[data-testid=transcript]")
        assert transcript.is_visible()
        assert transcript.locator("[data-testid=turn]").count() == 4
        assert offline.locator("[data-round]").count() == 2
        assert offline.locator("[data-testid=round-score]").count() == 2
        assert offline.locator("[data-testid=verdict]").count() == 1
        assert offline.locator("[data-testid=topic]").inner_text() == TOPIC  # shown as text
        assert offline.evaluate("() => window.pwned") is None  # and never run
        assert offline.locator("script").count() == 0
        assert offline.locator("[data-testid=cost-total]").inner_text().endswith(" USD")
        assert requests == [html.as_uri()], requests  # nothing fetched
        assert not errors
        offline.screenshot(path=str(ARTIFACTS / "browser-export.png"), full_page=True)
    finally:
        context.close()
