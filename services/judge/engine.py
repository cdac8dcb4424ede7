"""The judge: asks a panel of models, in several orderings each, for validated scores, and
turns their ballots into a round assessment or a verdict.

Every (model, ordering) pair is one judge call, made concurrently. A call whose answer is
not valid is repaired up to `policy.max_repairs` times; if it never becomes valid the whole
request fails with JudgeOutputInvalid and no scores: dropping the call instead would leave
the orderings unbalanced and let position bias back in, and filling it in would invent
scores.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.common.errors import Aborted, DomainError
from services.common.llm.base import CompletionRequest, LLMClient, collect
from services.common.usage import Usage
from services.judge import aggregate
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
    """

    reason = "JUDGE_OUTPUT_INVALID"


@dataclass
class _Spend:
    """Usage of every answer a request received, for the error metadata when it fails."""

    usage: Usage = field(default_factory=Usage)

    def add(self, usage: Usage) -> None:
        self.usage = self.usage + usage


class Judge:
    def __init__(self, llm: LLMClient, policy: JudgePolicy | None = None):
        self.llm = llm
        self.policy = policy or JudgePolicy()

    # ----------------------------------------------------------------------- rounds

    async def evaluate_round(self, case: RoundCase) -> RoundAssessment:
        """Scores one round. Each criterion score is the mean over a model's orderings, then
        over the models (each model weighs the same); the weighted total uses the normalised
        rubric weights; the leader must be ahead by more than the tie margin. Per-debater
        rationales are those of the first call (first model, orderings[0])."""
        case = validate_round(case, self.policy)
        panel = _panel(case.panel)
        parts = PromptParts(
            case.topic, case.debaters, panel.criteria, (Round(case.round_number, case.turns),), verdict=False
        )
        base = case.request_id or _default_key(case.debate_id, f"rounds/{case.round_number}")
        ballots = await self._poll(parts, panel, f"{base}/judge", case.seed)
        tally = _Tally(ballots, panel, self.policy.tie_margin)

        totals = tally.totals
        leader, tie, ranked = aggregate.leader(totals, self.policy.tie_margin)
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
        simulated = any(b.call.simulated for b in ballots)
        log.info(
            "round %d judged by %d call(s): %s; ordering agreement %.2f, judge agreement %.2f",
            case.round_number,
            len(ballots),
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
            calls=tuple(b.call for b in ballots),
            simulated=simulated,
        )

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
        parts = PromptParts(case.topic, case.debaters, panel.criteria, case.rounds, verdict=True)
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
        rankings = [*tally.ballot_totals, *priors]
        if tie:
            confidence = aggregate.agreement(rankings, margin)
        else:
            support = aggregate.mean([aggregate.top_share(r, winner, margin) for r in rankings])
            lead = final[winner] - final[ranked[1]]
            confidence = support * min(1.0, lead / self.policy.decisive_margin)

        simulated = any(b.call.simulated for b in ballots)
        log.info(
            "verdict by %d call(s): %s, confidence %.2f", len(ballots), "tie" if tie else f"{winner} wins", confidence
        )
        if tie:
            tied = [n for n in ranked if final[ranked[0]] - final[n] <= margin]
            outcome = f"The debate is a tie between {_names(tied)} ({_listing(tied, final)})."
        else:
            outcome = f"{winner} wins with {final[winner]:.2f} of 10, ahead of {_listing(ranked[1:], final)}."
        basis = (
            f"Final scores weigh the assessments of {len(priors)} round(s) at {weight:.0%} and the "
            f"whole-debate judgement at {1 - weight:.0%}."
            if priors
            else "Final scores are the whole-debate judgement (no round assessments were given)."
        )
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
            calls=tuple(b.call for b in ballots),
            simulated=simulated,
        )

    # ----------------------------------------------------------------------- calls

    async def _poll(self, parts: PromptParts, panel: Panel, key_prefix: str, seed: int | None) -> list[Ballot]:
        """One ballot per (model, ordering), all at once; the first failure cancels the rest."""
        masker = NameMasker([d.name for d in parts.debaters])
        spend = _Spend()
        jobs = [
            self._ballot(parts, masker, model, index, ordering, f"{key_prefix}/{model}/ordering/{index}", seed, spend)
            for model in panel.models
            for index, ordering in enumerate(panel.orderings)
        ]
        tasks = [asyncio.ensure_future(job) for job in jobs]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if not task.cancelled() and (error := task.exception()) is not None:
                if isinstance(error, DomainError):
                    error.metadata.update(
                        spent_prompt_tokens=str(spend.usage.prompt_tokens),
                        spent_completion_tokens=str(spend.usage.completion_tokens),
                    )
                raise error
        return [task.result() for task in tasks]

    async def _ballot(
        self,
        parts: PromptParts,
        masker: NameMasker,
        model: str,
        index: int,
        ordering: Sequence[int],
        key: str,
        seed: int | None,
        spend: _Spend,
    ) -> Ballot:
        messages, shape, label_to_name = build_messages(parts, ordering, masker)
        conversation = messages
        usage = Usage()
        simulated = False
        answered_by = model
        problems: list[str] = []
        attempts = self.policy.max_repairs + 1
        for attempt in range(1, attempts + 1):
            reply = await collect(
                self.llm,
                CompletionRequest(
                    model=model,
                    messages=conversation,
                    max_tokens=self.policy.max_output_tokens,
                    temperature=self.policy.temperature,
                    seed=seed,
                    request_id=f"{key}/attempts/{attempt}",
                ),
            )
            usage = usage + reply.completion.usage
            spend.add(reply.completion.usage)
            simulated = simulated or reply.completion.simulated
            answered_by = reply.completion.model or model
            try:
                answer = parse_answer(reply.text, shape)
            except JudgeOutputError as error:
                problems = error.problems
                log.warning(
                    "judge answer %s refused (attempt %d of %d): %s", key, attempt, attempts, "; ".join(problems[:3])
                )
                conversation = repair_messages(messages, reply.text, problems)
                continue
            shown = tuple(parts.debaters[i].name for i in ordering)
            return Ballot(
                model=model,
                ordering_index=index,
                scores={label_to_name[label]: s for label, s in answer.scores.items()},
                rationales={
                    label_to_name[label]: unmask_labels(r, label_to_name) for label, r in answer.rationales.items()
                },
                summary=unmask_labels(answer.summary, label_to_name),
                call=JudgeCall(answered_by, shown, usage, attempt, key, simulated),
            )
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
            f"Mean of {models * orderings} judge call(s) ({models} model(s) x {orderings} ordering(s)); "
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
