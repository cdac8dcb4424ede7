"""Stand-in judge models (LLMClients) for tests and the benchmark: instant, scripted to fail,
or biased on purpose. They read the judge's own prompt format, so they answer any shape."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence

from services.common.llm.base import Completion, CompletionRequest, StreamEvent, TextDelta
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
