"""The simulated models and the router's allowlist, offline and instant."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from debate.common.v1 import common_pb2

from services.common.llm import (
    ChatMessage,
    CompletionRequest,
    LLMSettings,
    ModelNotAllowed,
    TextDelta,
    UnknownModel,
    build_llm_client,
    collect,
)
from services.common.llm.simulated import SIM_LABEL, parse_context, parse_motion
from services.common.tokens import count_message_tokens, count_text_tokens
from services.orchestrator.context import ContextBuilder, Transcript, debater_system_prompt, round_instruction
from tests.helpers import ROOT

TOPIC = "Cities should ban private cars from their centres"


@pytest.fixture
def llm():
    return build_llm_client(LLMSettings(sim_first_token_latency=0, sim_tokens_per_second=0))


def debater(
    persona: str, stance: str, *, round_number: int = 1, opponent: str = "", seed: int | None = 7, max_tokens: int = 512
) -> CompletionRequest:
    messages = [
        ChatMessage(
            "system",
            debater_system_prompt(topic=TOPIC, persona=persona, stance=stance, round_number=round_number, rounds=3),
        )
    ]
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
    ctx = parse_context(
        (
            ChatMessage(
                "system",
                debater_system_prompt(topic=TOPIC, persona="an engineer", stance="against", round_number=2, rounds=4),
            ),
            ChatMessage("user", "Alice (for): Streets are for people."),
        )
    )
    assert (ctx.topic, ctx.persona, ctx.side, ctx.round_number, ctx.rounds) == (TOPIC, "an engineer", "against", 2, 4)
    assert (ctx.opponent, ctx.opponent_text) == ("Alice", "Streets are for people.")
    prose = parse_context((ChatMessage("system", "You are a cautious doctor. Argue for the motion."),))
    assert prose.persona == "a cautious doctor" and prose.side == "for"


def test_parse_context_answers_the_other_side_not_the_round_instruction():
    """The orchestrator's shape: other debaters' turns as user messages, then a round instruction."""
    ctx = parse_context(
        (
            ChatMessage("system", f"Topic: {TOPIC}\nPersona: a nurse\nStance: for\nYou are ann, a debater."),
            ChatMessage("assistant", "[simulated] my opening"),
            ChatMessage("user", "carl (for): I agree with Ann entirely.", name="carl"),
            ChatMessage("user", "bob (against): Vans would be stranded outside the ring road.", name="bob"),
            ChatMessage("user", "dora (for): Streets are for people.", name="dora"),
            ChatMessage("user", "Round 2 of 3: respond to the arguments so far and advance your case."),
        )
    )
    assert (ctx.opponent, ctx.opponent_text) == ("bob", "Vans would be stranded outside the ring road.")
    assert (ctx.round_number, ctx.rounds, ctx.persona) == (2, None, "a nurse") or ctx.round_number == 2


def test_the_simulated_reader_reads_what_the_context_builder_writes():
    """The contract between services.orchestrator.context (the writer of the messages) and the
    simulated debater's reader: every field the builder writes is read back as written."""
    config = common_pb2.DebateConfig(
        topic=TOPIC,
        format=common_pb2.DebateFormat(round_limit=3),
        context=common_pb2.ContextSettings(window_size=1, max_tokens=4000),
        participants=[
            common_pb2.Participant(name="Ada", model="sim/debater", persona="an urban economist", stance="for"),
            common_pb2.Participant(name="Milo", model="sim/debater", persona="a shopkeeper", stance="against"),
        ],
    )
    builder, transcript = ContextBuilder(config, lambda model, text: len(text.split())), Transcript()
    milo = config.participants[1]
    said = {1: "Footfall rose in the centres that went car-free.", 2: "Deliveries got faster once the cars left."}
    for r, phase in ((1, "opening"), (2, "rebuttal"), (3, "closing")):
        ctx = parse_context(builder.build(milo, r, transcript).messages)
        assert (ctx.topic, ctx.persona, ctx.stance, ctx.side) == (TOPIC, "a shopkeeper", "against", "against")
        assert (ctx.round_number, ctx.rounds, ctx.phase) == (r, 3, phase)
        if r == 1:
            assert (ctx.opponent, ctx.opponent_text) == ("", "")
        else:
            assert (ctx.opponent, ctx.opponent_side, ctx.opponent_text) == ("Ada", "for", said[r - 1])
        if r in said:
            transcript.add(r, "Ada", said[r])
            transcript.add(r, "Milo", "[simulated] Vans would be stranded outside the ring road.")


async def test_registered_responder_is_streamed_with_usage():
    llm = build_llm_client(
        LLMSettings(sim_first_token_latency=0, sim_tokens_per_second=0),
        responders={"sim/judge": lambda request: '{"winner": "alice", "scores": {"alice": 8}}'},
    )
    result = await collect(llm, CompletionRequest(model="sim/judge", messages=(ChatMessage("user", "score"),)))
    assert result.text == '{"winner": "alice", "scores": {"alice": 8}}'
    assert result.completion.simulated and result.completion.usage.completion_tokens == count_text_tokens(
        "sim/judge", result.text
    )


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


# -- reads like a debate: what the demo and the page show ------------------------------------

DEMO_TOPIC = "Cities should ban private cars from their historic centres"
DEMO_PEOPLE = (
    ("Ada", "an urban economist who argues from data, costs and measured outcomes in cities that tried it", "for"),
    ("Milo", "a third-generation shopkeeper and civil-liberties advocate wary of top-down rules", "against"),
)
# Doubled or stray punctuation: ".,", ". ,", ",.", ";.", ".." (an ellipsis "..." is fine).
DOUBLED_PUNCTUATION = re.compile(r"(?<!\.)[.!?,;:]\s*[,;:]|[,;:]\s*[.!?]|(?<!\.)\.\s*\.(?!\.)")
QUOTED = re.compile(r"\"([^\"]+)\"")


async def run_debate(llm, topic=DEMO_TOPIC, people=DEMO_PEOPLE, *, rounds=3, sequential=False, seed=11):
    """A debate through the orchestrator's own windows (ContextBuilder): [(round, name, messages, text)]."""
    config = common_pb2.DebateConfig(
        topic=topic,
        format=common_pb2.DebateFormat(round_limit=rounds),
        context=common_pb2.ContextSettings(window_size=1, max_tokens=4000),
        participants=[common_pb2.Participant(name=n, model="sim/debater", persona=p, stance=s) for n, p, s in people],
    )
    builder, transcript, turns = ContextBuilder(config, lambda model, text: len(text.split())), Transcript(), []
    for r in range(1, rounds + 1):
        pending = []
        for participant in config.participants:
            window = builder.build(participant, r, transcript, include_current=sequential)
            request = CompletionRequest(
                model="sim/debater", messages=window.messages, seed=seed * 100 + r, max_tokens=600
            )
            text = await text_of(llm, request)
            turns.append((r, participant.name, window.messages, text))
            pending.append((participant.name, text))
            if sequential:
                transcript.add(r, participant.name, text)
        if not sequential:
            for name, text in pending:
                transcript.add(r, name, text)
    return turns


def previous_turn_of_other_side(turns, index, sequential=False):
    """The text the turn at `index` should answer: the other side's latest turn it could see."""
    r, name = turns[index][0], turns[index][1]
    seen = [t for t in turns[:index] if t[1] != name and (t[0] == r - 1 or (sequential and t[0] == r))]
    return seen[-1][3] if seen else ""


@pytest.mark.parametrize("sequential", [False, True])
async def test_a_debate_through_the_orchestrators_windows_reads_like_one(llm, sequential):
    turns = await run_debate(llm, sequential=sequential)
    instructions = [round_instruction(r, 3) for r in range(1, 4)]
    for index, (r, name, _messages, text) in enumerate(turns):
        assert text.startswith(SIM_LABEL)
        # the round instruction is the orchestrator's, never an opponent's words
        for instruction in instructions:
            assert instruction.lower().rstrip(".") not in text.lower()
        for phrase in ("opening argument", "closing argument", "advance your case", "round 1 of", "round 2 of"):
            assert phrase not in text.lower(), (name, r, text)
        assert not DOUBLED_PUNCTUATION.search(text), (name, r, DOUBLED_PUNCTUATION.search(text), text)
        assert "  " not in text
        # no odd noun phrases made from the motion's words
        assert "embracing" not in text and "private cars has" not in text and "private cars trades" not in text
        if r == 1:
            assert "the motion" in text.lower() or "banning private cars" in text.lower()
            persona = next(p for n, p, _ in DEMO_PEOPLE if n == name)
            assert persona in text  # the persona's angle
            assert not QUOTED.findall(text.replace(f'"{DEMO_TOPIC}"', ""))  # nobody to answer yet
        else:
            other = next(n for n, _, _ in DEMO_PEOPLE if n != name)
            said = previous_turn_of_other_side(turns, index, sequential)
            assert other in text, (name, r, text)
            quotes = [q for q in QUOTED.findall(text) if q != DEMO_TOPIC]
            assert quotes, (name, r, text)
            for quote in quotes:  # quoted verbatim from what the other side said last
                assert quote.rstrip("…") in said, (quote, said)
                assert quote.rstrip("…") not in " ".join(instructions)
        if r == 3:
            assert re.search(r"\b(closing|final|last round|one last time|weigh)\b", text, re.IGNORECASE)
            assert re.search(r"(support|vote for|vote against|oppose|reject) the motion|worth doing", text)
    texts = [t[3] for t in turns]
    assert len(set(texts)) == len(texts)
    for name, _, _ in DEMO_PEOPLE:  # each round says something new, not the same sentences again
        rounds = [set(re.split(r"(?<=[.!?])\s+", t[3])[1:]) for t in turns if t[1] == name]
        for a in range(len(rounds)):
            for b in range(a + 1, len(rounds)):
                assert len(rounds[a] & rounds[b]) <= 1, rounds[a] & rounds[b]


async def test_a_debate_is_deterministic_for_a_seed_and_differs_across_seeds(llm):
    first = [t[3] for t in await run_debate(llm, seed=3)]
    again = [t[3] for t in await run_debate(llm, seed=3)]
    other = [t[3] for t in await run_debate(llm, seed=4)]
    assert first == again
    assert all(a != b for a, b in zip(first, other, strict=False))


@pytest.mark.parametrize(
    "instruction",
    [
        "Please give your opening argument (round 1 of 3).",
        "Round 1 of 3: give your opening argument.",
        "Round 2 of 3: respond to the arguments so far and advance your case.",
        "Moderator: please give your closing argument.",
        "Your turn.",
        "Now give your rebuttal.",
        "Instructions (round 2): respond to the other side.",
    ],
)
async def test_a_round_instruction_is_never_taken_for_an_opponent(llm, instruction):
    messages = (
        ChatMessage(
            "system", debater_system_prompt(topic=TOPIC, persona="a nurse", stance="for", round_number=2, rounds=3)
        ),
        ChatMessage("user", instruction),
    )
    ctx = parse_context(messages)
    assert (ctx.opponent, ctx.opponent_text) == ("", "")
    text = await text_of(llm, CompletionRequest(model="sim/debater", messages=messages, seed=1))
    body = instruction.split(":")[-1].strip().rstrip(".").lower()
    assert body not in text.lower() and "told us" not in text
    assert not DOUBLED_PUNCTUATION.search(text)
    # and with an opponent's turn before it, the opponent is answered, not the instruction
    said = "Delivery vans would be stranded outside the ring road every single morning."
    with_turn = (messages[0], ChatMessage("user", f"Bob (against): {said}", name="Bob"), messages[1])
    ctx = parse_context(with_turn)
    assert (ctx.opponent, ctx.opponent_text) == ("Bob", said)
    text = await text_of(llm, CompletionRequest(model="sim/debater", messages=with_turn, seed=1))
    assert "Bob" in text and body not in text.lower()
    assert any(q in said for q in QUOTED.findall(text))


def test_the_turn_answered_is_the_other_sides_latest_even_before_the_speakers_own():
    """Simultaneous rounds: the window lists the other side's last turn before the speaker's own."""
    ctx = parse_context(
        (
            ChatMessage(
                "system",
                debater_system_prompt(topic=TOPIC, persona="a shopkeeper", stance="against", round_number=2, rounds=3),
            ),
            ChatMessage("user", "Ada (for): Footfall rose in the centres that went car-free.", name="Ada"),
            ChatMessage("assistant", "[simulated] My opening."),
            ChatMessage("user", round_instruction(2, 3)),
        )
    )
    assert (ctx.opponent, ctx.opponent_text, ctx.phase) == (
        "Ada",
        "Footfall rose in the centres that went car-free.",
        "rebuttal",
    )


def test_the_motion_becomes_sensible_noun_phrases():
    ban = parse_motion(DEMO_TOPIC)
    assert (ban.proposal, ban.it, ban.subject, ban.policy) == (
        "banning private cars from historic centres",
        "the ban",
        "private cars",
        True,
    )
    assert parse_motion("Should governments tax sugary drinks?").proposal == "taxing sugary drinks"
    assert parse_motion("This house would abolish homework").proposal == "abolishing homework"
    claim = parse_motion("Remote work is better than office work.")
    assert (claim.policy, claim.it, claim.subject) == (False, "remote work", "remote work")
    assert parse_motion("AI will do more good than harm").it == "AI"


async def test_varied_personas_stances_and_topics_read_cleanly(llm):
    cases = [
        (
            "Remote work is better than office work",
            (("Ann", "a software engineer and parent", "for"), ("Raj", "a sceptical HR director", "against")),
        ),
        (
            "Should governments tax sugary drinks?",
            (
                ("Lee", "a paediatric nurse", "supports the tax"),
                ("Kim", "a libertarian economist", "opposes it"),
                ("Zed", "a philosopher", "only if revenue funds school meals"),
            ),
        ),
        (
            "AI will do more good than harm",
            (("Bo", "a historian of technology", "pro"), ("Cy", "a grumpy chef", "con")),
        ),
    ]
    for topic, people in cases:
        for sequential in (False, True):
            for r, _name, _, text in await run_debate(llm, topic, people, sequential=sequential, rounds=3):
                assert text.startswith(SIM_LABEL) and len(text.split()) > 60
                assert not DOUBLED_PUNCTUATION.search(text), text
                assert "round 1 of" not in text.lower() and "advance your case" not in text
                if r > 1:
                    assert QUOTED.findall(text), text


async def test_a_long_turn_is_cut_at_max_tokens_with_finish_reason_length(llm):
    turns = await run_debate(llm, rounds=2)
    messages = turns[-1][2]
    full = await collect(llm, CompletionRequest(model="sim/debater", messages=messages, seed=5, max_tokens=2000))
    cut = await collect(llm, CompletionRequest(model="sim/debater", messages=messages, seed=5, max_tokens=40))
    assert full.completion.finish_reason == "stop" and cut.completion.finish_reason == "length"
    assert full.text.startswith(cut.text) and cut.completion.usage.completion_tokens <= 40
    assert cut.completion.simulated and full.completion.simulated
