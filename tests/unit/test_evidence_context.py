"""Evidence in the debaters' windows (services/orchestrator/context.py) and the simulated
debater's quotes (services/common/llm/simulated/quoting.py)."""

from __future__ import annotations

import asyncio
from collections import Counter

from debate.common.v1 import common_pb2 as c

from services.common.llm.base import CompletionRequest, TextDelta
from services.common.llm.simulated import SimulatedLLM
from services.common.llm.simulated.quoting import KINDS, quote_sources
from services.common.quotes import SourceIndex, sources_message, status_name
from services.common.tokens import count_message_tokens, count_text_tokens
from services.orchestrator.context import ContextBuilder, Transcript

DOC = (
    "Cities that removed cars from their historic centres saw retail footfall rise by a fifth within two years. "
    "Air quality improved on every measured street, with nitrogen dioxide falling by a third. "
    "Some delivery firms reported longer routes and higher costs during the first year."
)


def config(sources=True, max_tokens: int = 4096) -> c.DebateConfig:
    return c.DebateConfig(
        topic="Cities should ban cars from their centres",
        participants=[
            c.Participant(name="Ada", model="sim/debater", persona="an economist", stance="for"),
            c.Participant(name="Milo", model="gpt-4o", persona="a planner", stance="against"),
        ],
        format=c.DebateFormat(round_limit=4),
        context=c.ContextSettings(max_tokens=max_tokens, window_size=5),
        max_tokens_per_turn=200,
        sources=[c.SourceDocument(id="doc-1", title="Study", text=DOC)] if sources else [],
    )


def test_every_window_carries_the_sources_once_counted_once_per_model_and_within_its_budget() -> None:
    counted: Counter[tuple[str, str]] = Counter()

    def count(model: str, text: str) -> int:
        counted[(model, text)] += 1
        return count_text_tokens(model, text)

    cfg = config()
    builder, plain = ContextBuilder(cfg, count), ContextBuilder(config(sources=False))
    transcript = Transcript()
    message = sources_message(cfg.sources)
    for r in range(1, 5):
        for p in cfg.participants:
            window = builder.build(p, r, transcript)
            without = plain.build(p, r, transcript)
            assert [m.content for m in window.messages].count(message) == 1
            assert window.messages[1].role == "system" and window.messages[1].content == message
            # the sources' tokens are in the window's size: the same window less them is smaller by them
            assert window.prompt_tokens - without.prompt_tokens == count_text_tokens(p.model, message) + 4
            # at least what the provider's count of the prompt grows by with the sources message
            grown = count_message_tokens(p.model, [m.as_dict() for m in window.messages]) - count_message_tokens(
                p.model, [m.as_dict() for m in without.messages]
            )
            assert window.prompt_tokens - without.prompt_tokens >= grown
        for p in cfg.participants:
            transcript.add(r, p.name, f"{p.name} argues round {r} at some length. " * 20)
    assert {model: n for (model, text), n in counted.items() if text == message} == {"sim/debater": 1, "gpt-4o": 1}


def test_turns_are_dropped_before_the_sources_when_the_window_is_full() -> None:
    cfg = config(max_tokens=600)
    builder = ContextBuilder(cfg)
    transcript = Transcript()
    for r in range(1, 4):
        for p in cfg.participants:
            transcript.add(r, p.name, "A long turn that fills the window quickly. " * 12)
    window = builder.build(cfg.participants[0], 4, transcript)
    assert window.turns_dropped > 0 and window.prompt_tokens <= 600
    assert window.messages[1].content == sources_message(cfg.sources)


def test_the_simulated_debater_quotes_the_sources_deterministically_some_inexactly() -> None:
    cfg = config()
    messages = ContextBuilder(cfg).build(cfg.participants[0], 1, Transcript()).messages
    index = SourceIndex.of(cfg.sources)
    seen = Counter()
    for seed in range(60):
        text = quote_sources("[simulated] Opening sentence. The rest of it.", messages, seed, 1)
        assert text == quote_sources("[simulated] Opening sentence. The rest of it.", messages, seed, 1)
        assert text.startswith("[simulated] Opening sentence. ") and text.endswith(" The rest of it.")
        quotes = index.check_turn(text)
        assert 1 <= len(quotes) <= 2
        seen.update(status_name(q.status) for q in quotes)
    assert set(seen) == {"verified", "partial", "unverified"} and seen["verified"] > seen["partial"]
    assert "changed" in KINDS and "invented" in KINDS
    # without documents the turn is as written
    assert quote_sources("[simulated] A turn.", messages[:1], 3, 1) == "[simulated] A turn."


def test_the_simulated_debaters_turn_keeps_its_quotes_within_its_budget() -> None:
    cfg = config()
    messages = ContextBuilder(cfg).build(cfg.participants[0], 1, Transcript()).messages

    async def turn() -> str:
        parts = []
        async for event in SimulatedLLM().stream(
            CompletionRequest(model="sim/debater", messages=messages, max_tokens=200, seed=11)
        ):
            if isinstance(event, TextDelta):
                parts.append(event.text)
        return "".join(parts)

    text = asyncio.run(turn())
    assert SourceIndex.of(cfg.sources).check_turn(text)
    assert text.count("<quote") == text.count("</quote>")
