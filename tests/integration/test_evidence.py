"""Evidence (issue 19 part 2): a debate with source documents, over the three real services in
this process (orchestrator on both stores, the judge with a `sim/judge` that records each prompt
it is sent, accounting), with the built-in simulated debater quoting the documents.

The marks of each quote (verified, partial, unverified) are the same in the stored turn
(GetDebate), in the events (TurnCompleted) and in the judge's prompt; the judge sees the
documents unless the debate hides them; bad documents are INVALID_ARGUMENT with field details
and nothing stored."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator

import grpc
import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg

from services.accounting.server import build_service as build_accounting
from services.accounting.settings import AccountingSettings
from services.common.grpc_errors import error_details
from services.common.limits import MAX_SOURCE_BYTES, MAX_SOURCES
from services.common.llm.base import CompletionRequest
from services.common.llm.simulated import SIM_JUDGE_MODEL, SimulatedLLM
from services.common.quotes import SourceIndex, status_name
from services.common.text import clean_text
from services.judge import simulated_judge
from services.judge.evidence import HIDDEN_NOTE
from services.judge.server import build_service as build_judge
from services.judge.settings import JudgeSettings
from services.orchestrator.server import build_service as build_orchestrator
from services.orchestrator.settings import OrchestratorSettings
from tests.unit import test_quotes

S = pb.DebateState
# A sentence too short for the simulated debater to quote (it quotes 5 to 30 words): it reaches a
# judge's prompt only with the documents themselves.
UNQUOTED = "Ledger code 4417."
DOC1 = (
    "Cities that removed cars from their historic centres saw retail footfall rise by a fifth within two years. "
    "Air quality improved on every measured street, with nitrogen dioxide falling by a third. "
    f"{UNQUOTED} Residents' surveys showed that most people did not want the cars back."
)
DOC2 = (
    "Some delivery firms reported longer routes and higher costs during the first year of the scheme. "
    "Older residents said buses had become the only practical way to reach the hospital."
)
SOURCES = [
    c.SourceDocument(id="doc-1", title="Centre study", text=DOC1),
    c.SourceDocument(id="doc-2", title="Delivery survey", text=DOC2),
]
# A seed whose simulated turns hold verified, partial and unverified quotes (checked below).
SEED = 5


def config(rounds: int = 3, *, hidden: bool = False, seed: int = SEED, sources=SOURCES) -> c.DebateConfig:
    return c.DebateConfig(
        topic="Cities should ban private cars from their historic centres",
        participants=[
            c.Participant(name="Ada", model="sim/debater", persona="an urban economist", stance="for"),
            c.Participant(name="Milo", model="sim/debater", persona="a shop owner", stance="against"),
        ],
        format=c.DebateFormat(round_limit=rounds),
        sources=sources,
        evidence=c.EvidenceOptions(hide_sources_from_judge=hidden),
        seed=seed,
    )


class Suite:
    def __init__(self, stub: pbg.OrchestratorServiceStub, prompts: list[str]):
        self.stub, self.prompts = stub, prompts

    async def run(self, cfg: c.DebateConfig) -> tuple[pb.Debate, list[pb.DebateEvent]]:
        debate_id = (await self.stub.CreateDebate(pb.CreateDebateRequest(config=cfg))).debate.debate_id
        await self.stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id))
        events = [
            r.event async for r in self.stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id))
        ]
        debate = (await self.stub.GetDebate(pb.GetDebateRequest(debate_id=debate_id))).debate
        return debate, events


@contextlib.asynccontextmanager
async def running_suite(backend, tmp_path, llm=None) -> AsyncIterator[Suite]:
    """The three services in this process; `llm` replaces the orchestrator's model client."""
    prompts: list[str] = []

    def recording_judge(request: CompletionRequest) -> str:
        prompts.append("\n".join(m.content for m in request.messages if m.role == "user"))
        return simulated_judge.respond(request)

    accounting = await build_accounting(AccountingSettings(port=0, data_dir=str(tmp_path / "accounting")))
    judge = await build_judge(
        JudgeSettings(port=0, data_dir=str(tmp_path / "judge")),
        SimulatedLLM(responders={SIM_JUDGE_MODEL: recording_judge}),
    )
    await accounting.start()
    await judge.start()
    orchestrator = await build_orchestrator(
        OrchestratorSettings(
            port=0,
            judge_service_addr=judge.address,
            accounting_service_addr=accounting.address,
            sim_first_token_latency=0,
            sim_tokens_per_second=0,
            **backend.settings(),
        ),
        llm=llm,
    )
    port = await orchestrator.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Suite(pbg.OrchestratorServiceStub(channel), prompts)
    finally:
        await channel.close()
        await orchestrator.stop(0)
        await judge.stop(grace=0)
        await accounting.stop(grace=0)


@pytest.fixture
async def suite(orchestrator_backend, tmp_path):
    async with running_suite(orchestrator_backend, tmp_path) as running:
        yield running


def turns_of(debate: pb.Debate) -> list[c.Turn]:
    return [turn for rnd in debate.rounds for turn in rnd.turns]


def listed(prompt: str, quote: c.Quote) -> bool:
    """Whether the judge's prompt lists `quote` with its mark: `- quote N [ID]: STATUS ...: "TEXT"`."""
    words = re.escape(json.dumps(clean_text(quote.text), ensure_ascii=False))  # as the judge cleans it
    cited = rf" \[{re.escape(quote.source_id)}\]" if quote.source_id else ""
    line = rf"^- quote \d+{cited}: {status_name(quote.status)}(?: \([^)]*\))?: {words}"
    return re.search(line, prompt, re.MULTILINE) is not None


async def test_quotes_are_marked_alike_in_the_stored_turn_the_events_and_the_judges_prompt(suite):
    debate, events = await suite.run(config())
    assert debate.state == S.DEBATE_STATE_COMPLETED
    turns = turns_of(debate)
    index = SourceIndex.of(SOURCES)
    statuses = set()
    for turn in turns:
        assert turn.quotes, f"the simulated debater quotes the documents in every turn: {turn.text}"
        assert list(turn.quotes) == index.check_turn(turn.text)  # stored as the checker marks them
        for quote in turn.quotes:
            assert turn.text[quote.start : quote.end].startswith("<quote") and quote.text in turn.text
            statuses.add(status_name(quote.status))
    assert statuses == {"verified", "partial", "unverified"}, statuses  # the seed exercises all three

    completed = {
        (e.turn_completed.turn.round_number, e.turn_completed.turn.participant): e.turn_completed.turn
        for e in events
        if e.WhichOneof("payload") == "turn_completed"
    }
    assert {(t.round_number, t.participant): list(t.quotes) for t in turns} == {
        key: list(turn.quotes) for key, turn in completed.items()
    }

    # Each round's prompts (one a judge ordering) list each quote of the round with its mark.
    rounds = {rnd.round_number: rnd for rnd in debate.rounds}
    round_prompts = [p for p in suite.prompts if "Score round" in p]
    verdict_prompts = [p for p in suite.prompts if "final verdict" in p]
    assert round_prompts and verdict_prompts
    for prompt in round_prompts:
        number = int(prompt.split("Score round ", 1)[1].split()[0])
        for turn in rounds[number].turns:
            for quote in turn.quotes:
                assert listed(prompt, quote), (quote, prompt)
    every_quote = [q for t in turns for q in t.quotes]
    for prompt in verdict_prompts:  # the verdict's prompt holds every round, so every quote
        assert all(listed(prompt, quote) for quote in every_quote)
    for prompt in suite.prompts:  # the judge sees the documents
        assert "BEGIN SOURCE doc-1 (Centre study)" in prompt and UNQUOTED in prompt
        assert HIDDEN_NOTE not in prompt


async def test_sources_hidden_from_the_judge_are_absent_from_its_prompt_but_the_marks_are_not(suite):
    debate, _ = await suite.run(config(rounds=2, hidden=True))
    assert debate.state == S.DEBATE_STATE_COMPLETED
    quotes = [q for t in turns_of(debate) for q in t.quotes]
    assert quotes
    assert suite.prompts
    for prompt in suite.prompts:
        assert "BEGIN SOURCE" not in prompt and UNQUOTED not in prompt
        assert HIDDEN_NOTE in prompt
    verdict = next(p for p in suite.prompts if "final verdict" in p)
    assert all(listed(verdict, quote) for quote in quotes)


async def test_a_debate_without_sources_has_no_quotes_and_no_evidence_in_the_judges_prompt(suite):
    debate, _ = await suite.run(config(rounds=1, sources=[]))
    assert debate.state == S.DEBATE_STATE_COMPLETED
    assert all(not t.quotes and "<quote" not in t.text for t in turns_of(debate))
    assert all("Quote check" not in p and "source documents" not in p for p in suite.prompts)


async def test_bad_sources_are_invalid_argument_with_field_details_and_nothing_is_stored(suite):
    doc = c.SourceDocument
    cases = {
        "config.sources": [doc(id=f"d{i}", text="x") for i in range(MAX_SOURCES + 1)],
        "config.sources[1].id": [doc(id="a", text="x"), doc(id="a", text="y")],
        "config.sources[0].id": [doc(id="bad id/with slash", text="x")],
        "config.sources[0].text": [doc(id="a", text=" \u200b ")],
        "config.sources[0].title": [doc(id="a", title="t" * 201, text="x")],
    }
    for field_path, sources in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await suite.stub.CreateDebate(pb.CreateDebateRequest(config=config(sources=sources)))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        _, violations = error_details(caught.value)
        assert [f for f, _ in violations] == [field_path], (field_path, violations)

    # Too large for a document, and too large for the context window (half of max_tokens).
    big = doc(id="big", text="word " * (MAX_SOURCE_BYTES // 5 + 10))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.stub.CreateDebate(pb.CreateDebateRequest(config=config(sources=[big])))
    _, violations = error_details(caught.value)
    assert [f for f, _ in violations] == ["config.sources[0].text"]
    wide = config(sources=[doc(id="wide", text="word " * 3000)])
    wide.context.max_tokens = 4096
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.stub.CreateDebate(pb.CreateDebateRequest(config=wide))
    _, violations = error_details(caught.value)
    assert [f for f, _ in violations] == ["config.sources"] and "context window" in violations[0][1]
    wide.context.max_tokens = 16384  # room for them: accepted
    await suite.stub.CreateDebate(pb.CreateDebateRequest(config=wide))

    listed = await suite.stub.ListDebates(pb.ListDebatesRequest())
    assert len(listed.debates) == 1  # only the last one


async def test_the_table_of_quotes_is_marked_as_expected_in_the_turn_the_events_and_the_judges_prompt(
    orchestrator_backend, tmp_path
):
    """The unit table (tests/unit/test_quotes.py: exact, whitespace, case, curly marks, partial,
    invented...) said by a debater whose model answers with it, end to end."""
    table = test_quotes.TABLE
    said = "[table] " + " ".join(f"Quote {i}: {marked}." for i, (_, marked, _) in enumerate(table))

    def table_debater(request: CompletionRequest) -> str:
        return said

    llm = SimulatedLLM(responders={"sim/table": table_debater})
    sources = [c.SourceDocument(id="doc-1", text=test_quotes.DOC1), c.SourceDocument(id="doc-2", text=test_quotes.DOC2)]
    cfg = config(rounds=1, sources=sources)
    cfg.participants[0].model = "sim/table"
    cfg.max_tokens_per_turn = 1024
    async with running_suite(orchestrator_backend, tmp_path, llm) as running:
        debate, events = await running.run(cfg)
        prompts = running.prompts
    assert debate.state == S.DEBATE_STATE_COMPLETED
    turn = next(t for t in turns_of(debate) if t.participant == "Ada")
    assert turn.text == said
    expected = [status for _, _, status in table]
    assert [status_name(q.status) for q in turn.quotes] == expected
    completed = next(
        e.turn_completed.turn
        for e in events
        if e.WhichOneof("payload") == "turn_completed" and e.turn_completed.turn.participant == "Ada"
    )
    assert [status_name(q.status) for q in completed.quotes] == expected
    assert prompts
    for prompt in prompts:
        missing = [q.text for q in turn.quotes if q.text.strip() and not listed(prompt, q)]
        assert not missing, (missing, prompt)
