"""The judge: asks a panel of models, in several orderings each, for validated scores, and
turns their ballots into a round assessment or a verdict.

Every (model, ordering) pair is one ballot, asked concurrently. A ballot whose answer is
not valid is repaired up to `policy.max_repairs` times; if it never becomes valid the whole
request fails with JudgeOutputInvalid and no scores: dropping the call instead would leave
the orderings unbalanced and let position bias back in, and filling it in would invent
scores.

Every provider call is its own JudgeCall, under its own key `{ballot key}/attempts/{n}`,
refused answers and repairs included, so that each is one row of the ledger. A failed request
carries every call it made in its error (`billed_calls`; the servicer sends them as a
`judge.v1.BilledCalls` status detail), so the caller records what the provider billed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace

from services.common.errors import Aborted, DomainError
from services.common.llm.base import (
    CompletionRequest,
    LLMClient,
    LLMError,
    StreamReader,
)
from services.common.text import plural
from services.common.tokens import SIMULATED_PREFIX, count_message_tokens, count_text_tokens
from services.common.usage import Usage
from services.judge import aggregate
from services.judge.metrics import JudgeMetrics
from services.judge.model import (
    Ballot,
    DebaterScore,
    JudgeCall,
    JudgePolicy,
    Panel,
    Round,
    RoundAssessment,
    RoundCase,
    Verdict,
    VerdictCase,
)
from services.judge.output import JudgeOutputError, parse_answer
from services.judge.prompts import (
    NameMasker,
    PromptParts,
    build_messages,
    repair_messages,
    unmask_labels,
)
from services.judge.validation import validate_round, validate_verdict

log = logging.getLogger(__name__)

MAX_RATIONALE_CHARS = 500
MAX_SUMMARY_CHARS = 800


class JudgeOutputInvalid(Aborted):
    """A judge model gave no valid structured output within the allowed repairs.

    ABORTED, not UNAVAILABLE: the calls were made and paid for, so the service-to-service
    channels must not silently re-send the request (they retry UNAVAILABLE); the caller
    decides whether another attempt is worth its cost, or judges with another model. Not
    INTERNAL either: nothing in this service is broken. `reason` is stable for callers to
    match; the metadata names the model, the ordering and the tokens the request spent.
    `billed_calls` are every call the request made (see `_Request`).
    """

    reason = "JUDGE_OUTPUT_INVALID"
    billed_calls: tuple[JudgeCall, ...] = ()


class JudgeModelFailed(DomainError):
    """A judge model call failed (after the LLM layer's own retries), so the request has no scores.

    It keeps the provider error's reason, message and metadata (PROVIDER_STALLED, ...) and its
    code, except that UNAVAILABLE becomes ABORTED once the request has made billed calls: the
    channels re-send an UNAVAILABLE call on their own, which would make those calls again and
    lose the record of the first ones. `billed_calls` are every call the request made.
    """

    billed_calls: tuple[JudgeCall, ...] = ()

    def __init__(self, error: LLMError, *, billed: bool):
        super().__init__(error.message, reason=error.reason, metadata=error.metadata)
        self.code = Aborted.code if billed and error.code == "UNAVAILABLE" else error.code
        self.model = error.model


class Judge:
    def __init__(self, llm: LLMClient, policy: JudgePolicy | None = None, metrics: JudgeMetrics | None = None):
        self.llm = llm
        self.policy = policy or JudgePolicy()
        self.metrics = metrics  # None: metrics off

    # ----------------------------------------------------------------------- rounds

    async def evaluate_round(self, case: RoundCase) -> RoundAssessment:
        """Scores one round. Each criterion score is the mean over a model's orderings, then
        over the models (each model weighs the same); the weighted total uses the normalised
        rubric weights; the leader must be ahead by more than the tie margin. Per-debater
        rationales are those of the first call (first model, orderings[0]). Confidence is the
        verdict's rule (`_confidence`) over the round's ballots. With `assess_consensus`, each
        call also says whether the stated positions converged; `consensus` is a majority of
        the ballots saying so."""
        case = validate_round(case, self.policy)
        panel = _panel(case.panel)
        parts = PromptParts(
            case.topic,
            case.debaters,
            panel.criteria,
            (Round(case.round_number, case.turns),),
            verdict=False,
            sources=case.sources,
            consensus=case.assess_consensus,
        )
        base = case.request_id or _default_key(case.debate_id, f"rounds/{case.round_number}")
        ballots = await self._poll(parts, panel, f"{base}/judge", case.seed)
        tally = _Tally(ballots, panel, self.policy.tie_margin)
        if self.metrics is not None:
            self.metrics.agreement("round", tally.ordering_agreement, tally.judge_agreement)

        totals = tally.totals
        leader, tie, ranked = aggregate.leader(totals, self.policy.tie_margin)
        confidence = self._confidence(tally.ballot_totals, leader, tie, totals, ranked)
        consensus = case.assess_consensus and 2 * sum(bool(b.consensus) for b in ballots) > len(ballots)
        first = ballots[0]
        scores = tuple(
            DebaterScore(
                debater=name,
                criteria={c.name: round(tally.scores[name][c.name], 2) for c in panel.criteria},
                weighted_total=round(totals[name], 2),
                rationale=_cut(first.rationales[name], MAX_RATIONALE_CHARS),
            )
            for name in (d.name for d in case.debaters)
        )
        simulated = any(b.simulated for b in ballots)
        log.info(
            "round %d judged by %s: %s; ordering agreement %.2f, judge agreement %.2f",
            case.round_number,
            plural(len(ballots), "call"),
            "tie" if tie else f"{leader} leads",
            tally.ordering_agreement,
            tally.judge_agreement,
        )
        if tie:
            tied = [n for n in ranked if totals[ranked[0]] - totals[n] <= self.policy.tie_margin]
            outcome = (
                f"Round {case.round_number} is a tie between {_names(tied)} "
                f"({_listing(tied, totals)}, within {self.policy.tie_margin:g} of each other)."
            )
        else:
            outcome = (
                f"{leader} leads round {case.round_number} with {totals[leader]:.2f} of 10, "
                f"ahead of {_listing(ranked[1:], totals)}."
            )
        return RoundAssessment(
            round_number=case.round_number,
            scores=scores,
            leader=leader,
            tie=tie,
            rationale=f"{outcome} {tally.describe(simulated)}",
            judge_models=panel.models,
            ordering_agreement=tally.ordering_agreement,
            judge_agreement=tally.judge_agreement,
            calls=tuple(c for b in ballots for c in b.calls),
            simulated=simulated,
            confidence=round(confidence, 4),
            consensus=consensus,
        )

    def _confidence(
        self,
        rankings: Sequence[dict[str, float]],
        winner: str,
        tie: bool,
        final: dict[str, float],
        ranked: Sequence[str],
    ) -> float:
        """0..1, each ranking one ballot: for a win, the winner's share of the first places (shared
        first places split) times min(1, lead / policy.decisive_margin); for a tie, the rankings'
        agreement."""
        margin = self.policy.tie_margin
        if tie:
            return aggregate.agreement(rankings, margin)
        support = aggregate.mean([aggregate.top_share(r, winner, margin) for r in rankings])
        lead = final[winner] - final[ranked[1]]
        return support * min(1.0, lead / self.policy.decisive_margin)

    # ----------------------------------------------------------------------- verdicts

    async def render_verdict(self, case: VerdictCase) -> Verdict:
        """Decides the debate from the whole transcript, judged like a round (same rubric,
        orderings and panel), blended with the round assessments given:

            final = w * mean(round weighted totals) + (1 - w) * whole-debate weighted total

        with w = policy.verdict_round_weight (0 when no assessments are given). The winner must
        be ahead by more than the tie margin. Confidence (0..1), with every verdict call and
        every round assessment counted as one ballot:
        - a win: the winner's share of the ballots' first places (shared first places split)
          times min(1, lead / policy.decisive_margin);
        - a tie: the agreement among the ballots (a tie every ballot sees is a confident tie; one
          that comes from ballots cancelling out is not)."""
        case = validate_verdict(case, self.policy)
        panel = _panel(case.panel)
        parts = PromptParts(case.topic, case.debaters, panel.criteria, case.rounds, verdict=True, sources=case.sources)
        base = case.request_id or _default_key(case.debate_id, "verdict")
        ballots = await self._poll(parts, panel, f"{base}/verdict", case.seed)
        tally = _Tally(ballots, panel, self.policy.tie_margin)
        margin = self.policy.tie_margin
        names = [d.name for d in case.debaters]

        priors = [a.totals for a in case.assessments]
        weight = self.policy.verdict_round_weight if priors else 0.0
        final = {
            name: weight * (aggregate.mean([p[name] for p in priors]) if priors else 0.0)
            + (1 - weight) * tally.totals[name]
            for name in names
        }
        winner, tie, ranked = aggregate.leader(final, margin)
        confidence = self._confidence([*tally.ballot_totals, *priors], winner, tie, final, ranked)

        simulated = any(b.simulated for b in ballots)
        log.info(
            "verdict by %s: %s, confidence %.2f",
            plural(len(ballots), "call"),
            "tie" if tie else f"{winner} wins",
            confidence,
        )
        if tie:
            tied = [n for n in ranked if final[ranked[0]] - final[n] <= margin]
            outcome = f"The debate is a tie between {_names(tied)} ({_listing(tied, final)})."
        else:
            outcome = f"{winner} wins with {final[winner]:.2f} of 10, ahead of {_listing(ranked[1:], final)}."
        basis = (
            f"Final scores weigh the assessments of {plural(len(priors), 'round')} at {weight:.0%} and the "
            f"whole-debate judgement at {1 - weight:.0%}."
            if priors
            else "Final scores are the whole-debate judgement (no round assessments were given)."
        )
        if self.metrics is not None:
            self.metrics.agreement("verdict", tally.ordering_agreement, tally.judge_agreement)
        note = ballots[0].summary
        summary = f"{outcome} {basis} Confidence {confidence:.2f}. {tally.describe(simulated)}"
        if note:
            summary += f" Judge's summary: {_cut(note, MAX_SUMMARY_CHARS)}"
        return Verdict(
            winner=winner,
            tie=tie,
            final_scores={name: round(final[name], 2) for name in names},
            confidence=round(confidence, 4),
            summary=summary,
            judge_models=panel.models,
            ordering_agreement=tally.ordering_agreement,
            judge_agreement=tally.judge_agreement,
            calls=tuple(c for b in ballots for c in b.calls),
            simulated=simulated,
        )

    # ----------------------------------------------------------------------- calls

    async def _poll(self, parts: PromptParts, panel: Panel, key_prefix: str, seed: int | None) -> list[Ballot]:
        """One ballot per (model, ordering), all at once. Raises the first failure, carrying every
        call the request made (see `_Request`)."""
        masker = NameMasker([d.name for d in parts.debaters])
        jobs = [(model, index, ordering) for model in panel.models for index, ordering in enumerate(panel.orderings)]
        request = _Request(len(jobs))
        tasks = [
            asyncio.ensure_future(
                self._ballot(
                    parts, masker, model, index, ordering, f"{key_prefix}/{model}/ordering/{index}", seed, request, slot
                )
            )
            for slot, (model, index, ordering) in enumerate(jobs)
        ]
        failure: BaseException | None = None
        try:
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failure = _first_failure(tasks)
            if pending and isinstance(failure, JudgeOutputInvalid):
                request.stopped = True  # the others end the call they are in, and start none
                await asyncio.wait(pending)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if failure is None:
            return [task.result() for task in tasks]
        calls = request.calls()
        if isinstance(failure, LLMError):
            failure = JudgeModelFailed(failure, billed=bool(calls))
        if isinstance(failure, JudgeOutputInvalid | JudgeModelFailed):
            failure.billed_calls = calls
            spent = sum((c.usage for c in calls), Usage())
            failure.metadata.update(
                spent_prompt_tokens=str(spent.prompt_tokens),
                spent_completion_tokens=str(spent.completion_tokens),
                billed_calls=str(len(calls)),
            )
        raise failure

    async def _ballot(
        self,
        parts: PromptParts,
        masker: NameMasker,
        model: str,
        index: int,
        ordering: Sequence[int],
        key: str,
        seed: int | None,
        request: _Request,
        slot: int,
    ) -> Ballot:
        messages, shape, label_to_name = build_messages(parts, ordering, masker)
        shown = tuple(parts.debaters[i].name for i in ordering)
        conversation = messages
        calls: list[JudgeCall] = []
        problems: list[str] = []
        attempts = self.policy.max_repairs + 1
        try:
            for attempt in range(1, attempts + 1):
                if request.stopped:
                    raise _Stopped
                call = CompletionRequest(
                    model=model,
                    messages=conversation,
                    max_tokens=self.policy.max_output_tokens,
                    temperature=self.policy.temperature,
                    seed=seed,
                    request_id=f"{key}/attempts/{attempt}",
                )
                reader = StreamReader()
                try:
                    completion = await reader.read(self.llm, call)
                except LLMError as error:
                    if error.billed:
                        calls.append(_cut_call(call, shown, error.partial_text, error.partial_reasoning, attempt))
                    raise
                except asyncio.CancelledError:
                    if reader.streamed:
                        calls.append(_cut_call(call, shown, reader.text, reader.reasoning, attempt))
                    raise
                made = JudgeCall(
                    model=completion.model or model,
                    ordering=shown,
                    usage=completion.usage,
                    attempts=0,  # set when the ballot ends
                    request_id=call.request_id,
                    simulated=completion.simulated,
                    attempt=attempt,
                )
                try:
                    answer = parse_answer(reader.text, shape)
                except JudgeOutputError as error:
                    calls.append(made)
                    problems = error.problems
                    log.warning(
                        "judge answer %s refused (attempt %d of %d): %s",
                        call.request_id,
                        attempt,
                        attempts,
                        "; ".join(problems[:3]),
                    )
                    if self.metrics is not None:
                        self.metrics.outputs_invalid.labels(model).inc()
                        if attempt < attempts:
                            self.metrics.repairs.labels(model).inc()
                    conversation = repair_messages(messages, reader.text, problems)
                    continue
                scores = {label_to_name[label]: s for label, s in answer.scores.items()}
                totals = {name: round(aggregate.weighted_total(s, parts.criteria), 4) for name, s in scores.items()}
                calls.append(replace(made, accepted=True, totals=totals))
                return Ballot(
                    model=model,
                    ordering_index=index,
                    scores=scores,
                    rationales={
                        label_to_name[label]: unmask_labels(r, label_to_name) for label, r in answer.rationales.items()
                    },
                    summary=unmask_labels(answer.summary, label_to_name),
                    consensus=answer.consensus,
                    calls=tuple(replace(c, attempts=len(calls)) for c in calls),
                )
        finally:
            request.ended(slot, calls)
        if self.metrics is not None:
            self.metrics.ballots_failed.labels(model).inc()
        raise JudgeOutputInvalid(
            f"judge model {model} gave no valid structured output in {attempts} answers "
            f"(ordering {index}); last problems: {'; '.join(problems[:3])}",
            metadata={
                "model": model,
                "ordering": str(index),
                "attempts": str(attempts),
                "request_id": key,
                "problems": "; ".join(problems[:3])[:500],
            },
        )


class _Stopped(Exception):
    """A ballot did not start another call because its request had already failed."""


class _Request:
    """Every provider call of one judge request, ballot by ballot, kept as each ballot ends.

    When the request fails, these are the calls its error carries (`billed_calls`), so that the
    caller can record what the provider billed although there are no scores:
    - the calls that answered, valid or refused, with the usage the provider reported;
    - a call that failed after the provider had accepted it (`LLMError.billed`), and a call
      cancelled after it had streamed anything: an estimate with our tokenizer (the prompt,
      and the text and reasoning that streamed), marked estimated;
    - a call cancelled before anything streamed is not counted: the LLM layer shows nothing of a
      call before its first text or reasoning, so there is nothing to say the provider took it.
    After a ballot gives up (JudgeOutputInvalid), `stopped` is set: the other ballots finish the
    call they are in (it is paid for anyway, and finishing it gives the provider's exact usage
    instead of an estimate) and start no other. After a provider error they are cancelled at once.
    """

    def __init__(self, ballots: int):
        self.stopped = False
        self._calls: list[list[JudgeCall]] = [[] for _ in range(ballots)]

    def ended(self, slot: int, calls: list[JudgeCall]) -> None:
        self._calls[slot] = [replace(c, attempts=len(calls)) for c in calls]

    def calls(self) -> tuple[JudgeCall, ...]:
        return tuple(c for ballot in self._calls for c in ballot)


def _cut_call(request: CompletionRequest, shown: tuple[str, ...], text: str, reasoning: str, attempt: int) -> JudgeCall:
    """A call that ended before its usage came: its prompt, text and reasoning counted with our
    tokenizer, marked estimated."""
    reasoning_tokens = count_text_tokens(request.model, reasoning) if reasoning else 0
    usage = Usage(
        prompt_tokens=count_message_tokens(request.model, [m.as_dict() for m in request.messages]),
        completion_tokens=(count_text_tokens(request.model, text) if text else 0) + reasoning_tokens,
        reasoning_tokens=reasoning_tokens,
        estimated=True,
    )
    simulated = request.model.startswith(SIMULATED_PREFIX)
    return JudgeCall(request.model, shown, usage, 0, request.request_id, simulated, attempt)


def _first_failure(tasks: Sequence[asyncio.Future[Ballot]]) -> BaseException | None:
    """The first ballot's failure, in ballot order (a ballot that only stopped does not count)."""
    for task in tasks:
        if task.done() and not task.cancelled():
            error = task.exception()
            if error is not None and not isinstance(error, _Stopped):
                return error
    return None


class _Tally:
    """Aggregates of a set of ballots: means per model, then over models; and agreement."""

    def __init__(self, ballots: Sequence[Ballot], panel: Panel, margin: float):
        self.criteria = panel.criteria
        self.panel = panel
        self.ballot_totals = [self._totals(b.scores) for b in ballots]
        by_model = {m: [i for i, b in enumerate(ballots) if b.model == m] for m in panel.models}
        self.ordering_agreement = round(
            aggregate.mean(
                [aggregate.agreement([self.ballot_totals[i] for i in idx], margin) for idx in by_model.values()]
            ),
            4,
        )
        model_means = [aggregate.mean_scores([ballots[i].scores for i in idx]) for idx in by_model.values()]
        self.judge_agreement = round(aggregate.agreement([self._totals(m) for m in model_means], margin), 4)
        self.scores = aggregate.mean_scores(model_means)  # every model weighs the same
        self.totals = self._totals(self.scores)

    def _totals(self, scores: dict[str, dict[str, float]]) -> dict[str, float]:
        return {name: aggregate.weighted_total(s, self.criteria) for name, s in scores.items()}

    def describe(self, simulated: bool) -> str:
        models, orderings = len(self.panel.models), len(self.panel.orderings)
        text = (
            f"Mean of {plural(models * orderings, 'judge call')} ({plural(models, 'model')} x "
            f"{plural(orderings, 'ordering')}); "
            f"ordering agreement {self.ordering_agreement:.2f}, judge agreement {self.judge_agreement:.2f}."
        )
        return f"{text} Simulated judge." if simulated else text


def _panel(panel: object) -> Panel:
    assert isinstance(panel, Panel), "validation resolves the panel"
    return panel


def _default_key(debate_id: str, what: str) -> str:
    """Idempotency key prefix when the request gave none: stable per debate, else unique."""
    return f"debates/{debate_id}/{what}" if debate_id else f"judge-requests/{uuid.uuid4().hex}"


def _names(names: Sequence[str]) -> str:
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]


def _listing(names: Sequence[str], totals: dict[str, float]) -> str:
    return ", ".join(f"{n} {totals[n]:.2f}" for n in names)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."
