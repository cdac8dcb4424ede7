"""Every provider call the judge makes is billed, so every one is a JudgeCall of its own: repairs,
refused answers, calls cut short. A failed request carries them all in its error (`billed_calls`)."""

from __future__ import annotations

import pytest

from services.common.llm.base import ProviderError, RateLimited, StreamStalled
from services.common.tokens import count_message_tokens, count_text_tokens
from services.common.usage import Usage
from services.judge.engine import Judge, JudgeModelFailed, JudgeOutputInvalid
from services.judge.model import Debater, JudgePolicy, PanelRequest, RoundCase, Turn
from tests.support.judge_fakes import FlakyJudgeLLM, ScriptedJudgeLLM, Step

MODEL = "sim/judge"
BAD = '{"debaters": {"A": {"scores": {"evidence": 5,},},},}'  # trailing commas: not JSON


def case(n: int = 2, orderings: int = 0) -> RoundCase:
    names = ["Alice", "Bob", "Carol"][:n]
    return RoundCase(
        debate_id="d1",
        topic="Nuclear power should replace coal",
        round_number=1,
        debaters=tuple(Debater(name, "for" if i % 2 == 0 else "against") for i, name in enumerate(names)),
        turns=tuple(Turn(name, f"{name} argues with evidence and figures, 42% of them.") for name in names),
        panel=PanelRequest(orderings=orderings),
        request_id="debates/d1/rounds/1",
    )


def ballot(call_or_key) -> str:
    key = getattr(call_or_key, "request_id", call_or_key)
    return key.split("/ordering/")[1].split("/")[0]


def estimate(request, text: str, reasoning: str = "") -> Usage:
    reasoning_tokens = count_text_tokens(MODEL, reasoning) if reasoning else 0
    return Usage(
        prompt_tokens=count_message_tokens(MODEL, [m.as_dict() for m in request.messages]),
        completion_tokens=(count_text_tokens(MODEL, text) if text else 0) + reasoning_tokens,
        reasoning_tokens=reasoning_tokens,
        estimated=True,
    )


async def test_a_never_valid_request_carries_every_answer_as_its_own_call():
    llm = FlakyJudgeLLM([BAD] * 10)
    with pytest.raises(JudgeOutputInvalid) as failed:
        await Judge(llm, JudgePolicy(max_repairs=2)).evaluate_round(case(2))
    calls = failed.value.billed_calls
    # two ballots (one ordering per debater), three answers each, every one a call of its own
    assert [c.request_id for c in calls] == [
        f"debates/d1/rounds/1/judge/{MODEL}/ordering/{o}/attempts/{a}" for o in (0, 1) for a in (1, 2, 3)
    ]
    assert sorted(c.request_id for c in calls) == sorted(r.request_id for r in llm.requests)
    assert [(c.attempt, c.attempts, c.accepted) for c in calls] == [(a, 3, False) for _ in (0, 1) for a in (1, 2, 3)]
    by_key = {r.request_id: r for r in llm.requests}
    for call in calls:
        request = by_key[call.request_id]
        prompt = sum(len(m.content) for m in request.messages) // 4 + 1
        assert call.usage == Usage(prompt, len(BAD) // 4 + 1)  # that one call's usage, as reported
    spent = sum((c.usage for c in calls), Usage())
    assert failed.value.metadata["spent_completion_tokens"] == str(spent.completion_tokens)
    assert failed.value.metadata["billed_calls"] == "6"


async def test_when_a_ballot_gives_up_the_others_finish_their_call_and_start_none():
    def plan(request):
        if ballot(request.request_id) == "0":
            return Step(text=BAD)  # refused at once, three times
        return Step(text=BAD, chunks=5, chunk_delay=0.2)  # still streaming its first answer

    llm = ScriptedJudgeLLM(plan)
    with pytest.raises(JudgeOutputInvalid) as failed:
        await Judge(llm, JudgePolicy(max_repairs=2)).evaluate_round(case(2))
    calls = failed.value.billed_calls
    assert [(ballot(c), c.attempt) for c in calls] == [("0", 1), ("0", 2), ("0", 3), ("1", 1)]
    assert all(llm.outcomes[c.request_id] == "complete" for c in calls)  # nothing was cut
    assert all(c.usage == llm.usage[c.request_id] and not c.usage.estimated for c in calls)
    assert [r.request_id for r in llm.requests if ballot(r.request_id) == "1"] == [calls[-1].request_id]


async def test_a_provider_error_cancels_the_others_and_every_billed_call_is_estimated():
    """Ballot 0 fails after two pieces; ballot 1 is cut while streaming (billed: estimated);
    ballot 2 had received nothing yet (the provider never answered it: nothing to count)."""

    def plan(request):
        which = ballot(request.request_id)
        if which == "0":
            return Step(
                chunks=4,
                reasoning="Let me weigh the turns.",
                first_delay=0.3,
                fail_after=2,
                error=lambda text, reasoning: ProviderError(
                    "connection closed", model=MODEL, partial_text=text, partial_reasoning=reasoning
                ),
            )
        if which == "1":
            return Step(chunks=4, chunk_delay=30)
        return Step(first_delay=30)

    llm = ScriptedJudgeLLM(plan)
    with pytest.raises(JudgeModelFailed) as failed:
        await Judge(llm).evaluate_round(case(3))
    error = failed.value
    assert error.code == "ABORTED" and error.reason == "PROVIDER_ERROR"  # billed: no channel may re-send it
    by_key = {r.request_id: r for r in llm.requests}
    assert {ballot(k): outcome for k, outcome in llm.outcomes.items()} == {
        "0": "failed",
        "1": "cancelled",
        "2": "cancelled",
    }
    calls = error.billed_calls
    assert [(ballot(c), c.attempt, c.accepted) for c in calls] == [("0", 1, False), ("1", 1, False)]
    first, second = calls
    assert first.usage == estimate(by_key[first.request_id], llm.streamed[first.request_id], "Let me weigh the turns.")
    assert first.usage.reasoning_tokens > 0
    assert second.usage == estimate(by_key[second.request_id], llm.streamed[second.request_id])
    assert llm.streamed[second.request_id] and second.usage.completion_tokens > 0


async def test_a_provider_error_before_anything_was_billed_stays_unavailable():
    def plan(request):
        return Step(fail_after=0, error=lambda text, reasoning: RateLimited("429", model=MODEL))

    with pytest.raises(JudgeModelFailed) as failed:
        await Judge(ScriptedJudgeLLM(plan)).evaluate_round(case(2))
    assert failed.value.code == "UNAVAILABLE" and failed.value.reason == "PROVIDER_RATE_LIMITED"
    assert failed.value.billed_calls == ()


async def test_a_stall_keeps_its_code_and_the_completed_siblings_are_counted_exactly():
    def plan(request):
        if ballot(request.request_id) == "0":
            return Step(
                chunks=3,
                first_delay=0.3,
                fail_after=1,
                error=lambda text, reasoning: StreamStalled("stalled", model=MODEL, partial_text=text),
            )
        return Step()  # answers at once, validly

    llm = ScriptedJudgeLLM(plan)
    with pytest.raises(JudgeModelFailed) as failed:
        await Judge(llm).evaluate_round(case(2))
    assert failed.value.code == "DEADLINE_EXCEEDED" and failed.value.reason == "PROVIDER_STALLED"
    cut, done = failed.value.billed_calls
    assert cut.usage.estimated and cut.usage.completion_tokens > 0 and not cut.accepted
    assert done.accepted and done.usage == llm.usage[done.request_id] and not done.usage.estimated


async def test_a_success_lists_every_call_with_its_own_usage():
    def plan(request):
        return Step(text=BAD) if request.request_id.endswith("/attempts/1") else Step()

    llm = ScriptedJudgeLLM(plan)
    assessment = await Judge(llm, JudgePolicy(max_repairs=2)).evaluate_round(case(2))
    assert [(ballot(c), c.attempt, c.accepted, c.attempts) for c in assessment.calls] == [
        ("0", 1, False, 2),
        ("0", 2, True, 2),
        ("1", 1, False, 2),
        ("1", 2, True, 2),
    ]
    assert all(c.usage == llm.usage[c.request_id] for c in assessment.calls)
    assert len({c.request_id for c in assessment.calls}) == 4
