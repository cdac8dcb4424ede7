"""Stand-in judge models (LLMClients) for tests and the benchmark: instant, scripted to fail,
or biased on purpose. They read the judge's own prompt format, so they answer any shape."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from services.common.llm.base import (
    Completion,
    CompletionRequest,
    LLMError,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
)
from services.common.usage import Usage
from services.judge import simulated_judge
from services.judge.output import label_for
from services.judge.prompts import read_prompt

_ATTEMPT = re.compile(r"/attempts/(\d+)$")


class FakeJudgeLLM:
    """Answers `reply(request)` at once, with usage of about a token per 4 characters.
    Every request is kept in `requests`."""

    def __init__(self, *, simulated: bool = False):
        self.simulated = simulated
        self.requests: list[CompletionRequest] = []

    def reply(self, request: CompletionRequest) -> str:
        return simulated_judge.respond(request)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        text = self.reply(request)
        yield TextDelta(text)
        prompt = sum(len(m.content) for m in request.messages)
        yield Completion(request.model, Usage(prompt // 4 + 1, len(text) // 4 + 1), simulated=self.simulated)


class FlakyJudgeLLM(FakeJudgeLLM):
    """Answers `bad_answers[n - 1]` on attempt n of a call, then the simulated judge's valid answer."""

    def __init__(self, bad_answers: Sequence[str], **kwargs):
        super().__init__(**kwargs)
        self.bad_answers = list(bad_answers)

    def reply(self, request: CompletionRequest) -> str:
        match = _ATTEMPT.search(request.request_id)
        attempt = int(match.group(1)) if match else 1
        if attempt <= len(self.bad_answers):
            return self.bad_answers[attempt - 1]
        return super().reply(request)


@dataclass
class Step:
    """How a ScriptedJudgeLLM answers one request."""

    text: str | None = None  # the answer (None: the simulated judge's valid one)
    chunks: int = 1  # the answer is streamed in this many pieces
    reasoning: str = ""  # streamed first, as reasoning
    first_delay: float = 0.0  # seconds before anything streams
    chunk_delay: float = 0.0  # seconds between pieces
    fail_after: int | None = None  # raise `error` after this many pieces
    error: Callable[[str, str], LLMError] | None = None  # (partial text, partial reasoning) -> error


class ScriptedJudgeLLM(FakeJudgeLLM):
    """Answers each request as `plan(request)` says, and keeps its own bill: `outcomes` maps each
    request_id to "complete", "failed" (after streaming `streamed[request_id]`) or "cancelled";
    `usage` maps each completed request_id to the usage it reported."""

    def __init__(self, plan: Callable[[CompletionRequest], Step], **kwargs):
        super().__init__(**kwargs)
        self.plan = plan
        self.outcomes: dict[str, str] = {}
        self.streamed: dict[str, str] = {}
        self.usage: dict[str, Usage] = {}

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        step = self.plan(request)
        text = step.text if step.text is not None else simulated_judge.respond(request)
        size = max(1, -(-len(text) // step.chunks))
        pieces = [text[i : i + size] for i in range(0, len(text), size)] or [""]
        key = request.request_id
        self.streamed[key] = ""
        try:
            if step.first_delay:
                await asyncio.sleep(step.first_delay)
            if step.reasoning:
                yield ReasoningDelta(step.reasoning)
            for i, piece in enumerate(pieces):
                if step.fail_after is not None and i == step.fail_after:
                    self.outcomes[key] = "failed"
                    assert step.error is not None
                    raise step.error(self.streamed[key], step.reasoning)
                if i and step.chunk_delay:
                    await asyncio.sleep(step.chunk_delay)
                self.streamed[key] += piece
                yield TextDelta(piece)
        except asyncio.CancelledError:
            self.outcomes[key] = "cancelled"
            raise
        prompt = sum(len(m.content) for m in request.messages)
        self.usage[key] = Usage(prompt // 4 + 1, len(text) // 4 + 1)
        self.outcomes[key] = "complete"
        yield Completion(request.model, self.usage[key], simulated=self.simulated)


class FirstShownBiasedLLM(FakeJudgeLLM):
    """A judge with pure position bias: whoever is shown first gets `high`, the others `low`."""

    def __init__(self, high: float = 9.0, low: float = 3.0, **kwargs):
        super().__init__(**kwargs)
        self.high, self.low = high, low

    def reply(self, request: CompletionRequest) -> str:
        view = read_prompt(next(m.content for m in request.messages if m.role == "user"))
        assert view is not None, "not a judge prompt"
        scores = {label: self.high if i == 0 else self.low for i, label in enumerate(view.labels)}
        return canned_answer(view.labels, view.criteria, view.wants_summary, scores)


class InstantJudgeLLM(FakeJudgeLLM):
    """Returns one fixed text for every request: no model time at all (for overhead benchmarks)."""

    def __init__(self, text: str, **kwargs):
        super().__init__(**kwargs)
        self.text = text

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        yield TextDelta(self.text)
        yield Completion(request.model, Usage(1000, 200), simulated=self.simulated)


def canned_answer(
    labels: Sequence[str] | int, criteria: Sequence[str], summary: bool, scores: dict[str, float] | None = None
) -> str:
    """A valid answer; `labels` may be a count (A, B, ...). Unlisted labels score 5."""
    if isinstance(labels, int):
        labels = [label_for(i) for i in range(labels)]
    scores = scores or {}
    answer: dict = {
        "debaters": {
            label: {
                "scores": {c: scores.get(label, 5.0) for c in criteria},
                "rationale": f"Debater {label} was scored.",
            }
            for label in labels
        }
    }
    if summary:
        answer["summary"] = "Debater A and the others were compared."
    return json.dumps(answer)
