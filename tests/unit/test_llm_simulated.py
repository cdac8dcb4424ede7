"""The simulated models and the router's allowlist, offline and instant."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.accounting.tokens import count_message_tokens, count_text_tokens
from services.common.llm import (
    ChatMessage,
    CompletionRequest,
    LLMSettings,
    ModelNotAllowed,
    TextDelta,
    UnknownModel,
    build_llm_client,
    collect,
    debater_system_prompt,
    register_simulated_model,
    unregister_simulated_model,
)
from services.common.llm.simulated import SIM_LABEL, parse_context
from tests.helpers import ROOT

TOPIC = "Cities should ban private cars from their centres"


@pytest.fixture
def llm():
    return build_llm_client(LLMSettings(sim_first_token_latency=0, sim_tokens_per_second=0))


def debater(persona: str, stance: str, *, round_number: int = 1, opponent: str = "", seed: int | None = 7,
            max_tokens: int = 512) -> CompletionRequest:
    messages = [ChatMessage("system", debater_system_prompt(
        topic=TOPIC, persona=persona, stance=stance, round_number=round_number, rounds=3))]
    if opponent:
        messages.append(ChatMessage("user", f"Bob (against): {opponent}"))
    return CompletionRequest(model="sim/debater", messages=tuple(messages), seed=seed, max_tokens=max_tokens)


async def text_of(llm, request: CompletionRequest) -> str:
    return (await collect(llm, request)).text


async def test_same_seed_same_text_and_labelled(llm):
    first = await collect(llm, debater("a pragmatic economist", "for"))
    second = await collect(llm, debater("a pragmatic economist", "for"))
    assert first.text == second.text
    assert first.text.startswith(SIM_LABEL)
    assert first.completion.simulated is True
    assert first.completion.finish_reason == "stop"
    assert "ban private cars" in first.text.lower() or "cars" in first.text.lower()
    assert len(first.deltas) > 20  # streamed token by token, not in one piece


async def test_text_differs_by_persona_stance_round_and_seed(llm):
    base = await text_of(llm, debater("a pragmatic economist", "for"))
    others = [
        await text_of(llm, debater("a retired judge", "for")),
        await text_of(llm, debater("a pragmatic economist", "against")),
        await text_of(llm, debater("a pragmatic economist", "for", seed=8)),
        await text_of(llm, debater("a pragmatic economist", "for", round_number=2, opponent="Cars are freedom.")),
    ]
    assert len({base, *others}) == 5
    assert "retired judge" in others[0]


async def test_reacts_to_what_the_other_side_said(llm):
    said = "Delivery vans and ambulances would be stranded outside the ring road every single morning."
    text = await text_of(llm, debater("a nurse", "for", round_number=2, opponent=said))
    assert "Bob" in text or "opponent" in text.lower() or "other side" in text.lower()
    assert any(word in text.lower() for word in ("delivery", "ambulances", "stranded", "ring", "morning", "vans"))


async def test_usage_is_counted_with_the_accounting_tokenizer(llm):
    request = debater("a pragmatic economist", "for")
    result = await collect(llm, request)
    usage = result.completion.usage
    assert usage.completion_tokens == count_text_tokens("sim/debater", result.text)
    assert usage.prompt_tokens == count_message_tokens("sim/debater", [m.as_dict() for m in request.messages])
    assert usage.estimated is False


async def test_max_tokens_truncates_with_finish_reason_length(llm):
    result = await collect(llm, debater("a pragmatic economist", "for", max_tokens=15))
    assert result.completion.finish_reason == "length"
    assert 0 < result.completion.usage.completion_tokens <= 15


async def test_any_messages_give_a_sensible_argument(llm):
    for messages in [
        (ChatMessage("user", "What do you think about pineapple on pizza?"),),
        (ChatMessage("system", "You are a grumpy chef. Argue against the motion that pineapple belongs on pizza."),),
        (ChatMessage("system", ""), ChatMessage("assistant", "x"), ChatMessage("user", "")),
        (),
    ]:
        text = await text_of(llm, CompletionRequest(model="sim/whatever", messages=messages))
        assert text.startswith(SIM_LABEL) and len(text.split()) > 30


def test_parse_context_reads_the_convention_and_prose():
    ctx = parse_context((
        ChatMessage("system", debater_system_prompt(topic=TOPIC, persona="an engineer", stance="against",
                                                    round_number=2, rounds=4)),
        ChatMessage("user", "Alice (for): Streets are for people."),
    ))
    assert (ctx.topic, ctx.persona, ctx.side, ctx.round_number, ctx.rounds) == (TOPIC, "an engineer", "against", 2, 4)
    assert (ctx.opponent, ctx.opponent_text) == ("Alice", "Streets are for people.")
    prose = parse_context((ChatMessage("system", "You are a cautious doctor. Argue for the motion."),))
    assert prose.persona == "a cautious doctor" and prose.side == "for"


def test_parse_context_answers_the_other_side_not_the_round_instruction():
    """The orchestrator's shape: other debaters' turns as user messages, then a round instruction."""
    ctx = parse_context((
        ChatMessage("system", f"Topic: {TOPIC}\nPersona: a nurse\nStance: for\nYou are ann, a debater."),
        ChatMessage("assistant", "[simulated] my opening"),
        ChatMessage("user", "carl (for): I agree with Ann entirely.", name="carl"),
        ChatMessage("user", "bob (against): Vans would be stranded outside the ring road.", name="bob"),
        ChatMessage("user", "dora (for): Streets are for people.", name="dora"),
        ChatMessage("user", "Round 2 of 3: respond to the arguments so far and advance your case."),
    ))
    assert (ctx.opponent, ctx.opponent_text) == ("bob", "Vans would be stranded outside the ring road.")
    assert (ctx.round_number, ctx.rounds, ctx.persona) == (2, None, "a nurse") or ctx.round_number == 2


async def test_registered_responder_is_streamed_with_usage(llm):
    register_simulated_model("sim/judge", lambda request: '{"winner": "alice", "scores": {"alice": 8}}')
    try:
        result = await collect(llm, CompletionRequest(model="sim/judge", messages=(ChatMessage("user", "score"),)))
    finally:
        unregister_simulated_model("sim/judge")
    assert result.text == '{"winner": "alice", "scores": {"alice": 8}}'
    assert result.completion.simulated and result.completion.usage.completion_tokens == count_text_tokens(
        "sim/judge", result.text)


async def test_unregistered_judge_fails_clearly(llm):
    with pytest.raises(UnknownModel, match="not registered"):
        await collect(llm, CompletionRequest(model="sim/judge", messages=(ChatMessage("user", "score"),)))


async def test_model_outside_allowlist_is_refused(llm):
    with pytest.raises(ModelNotAllowed):
        await collect(llm, CompletionRequest(model="openai/gpt-3.5-turbo-instruct", messages=()))


async def test_pacing_yields_tokens_over_time():
    llm = build_llm_client(LLMSettings(sim_first_token_latency=0.05, sim_tokens_per_second=2000))
    import asyncio

    loop = asyncio.get_running_loop()
    start = loop.time()
    first_at = None
    async for event in llm.stream(debater("an economist", "for")):
        if isinstance(event, TextDelta) and first_at is None:
            first_at = loop.time() - start
    assert first_at is not None and first_at >= 0.04  # a lower bound only: never a wall-clock ceiling


def test_simulated_calls_do_not_import_litellm():
    code = (
        "import asyncio, sys\n"
        "from services.common.llm import *\n"
        "llm = build_llm_client(LLMSettings(sim_first_token_latency=0, sim_tokens_per_second=0))\n"
        "asyncio.run(collect(llm, CompletionRequest(model='sim/debater', messages=())))\n"
        "assert 'litellm' not in sys.modules, 'litellm imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
