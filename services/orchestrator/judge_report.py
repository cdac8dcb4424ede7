"""Judge calibration and judge audits (issue 18 parts 4 and 5), over a tenant's stored debates.

Calibration. For each judge (a verdict's judge models: one model, or a panel's models joined
by " + "), over the tenant's COMPLETED debates with a verdict, at least `min_votes` human votes
and a strict human majority (more than half of the votes for one choice): how often the
verdict's choice (its winner, or a tie) equals the majority's. Every verdict version counts for
its own judge (a debate re-judged by another panel counts for both), each judge once per
debate, by its latest verdict on it.

Audits. For each judge model, over the accepted answers it gave in the tenant's round
assessments (`JudgeCall.totals`, the answer's weighted total per debater, and
`JudgeCall.ordering`, the order the debaters were shown in); answers stored before `totals`
existed are skipped:

- length bias: how the model's totals rank the debaters of a round against their turns'
  lengths (completion tokens; characters when no usage was stored): for each answer, the
  Spearman correlation over the round's debaters of their totals with their lengths; averaged
  over the model's answers of the round (its orderings), so each round counts once; then the
  mean over rounds. With two debaters a round's value is +1 when the longer turn scored higher
  and -1 when the shorter did, so the mean is the share of rounds the longer turn won minus the
  share the shorter won;
- position bias: the same with the 0-based position each debater was shown in instead of the
  length (negative: earlier positions score higher). With rotated orderings every debater is
  shown in every position, so the debaters' own strength cancels out within a round;
- ordering disagreement: over the rounds this model judged alone in several orderings, the
  mean of 1 - ordering_agreement (0: rotated orderings always agree).

Comparing within a round, and one value a round, keeps the debaters' quality and the
orderings of one round from passing for a bias: pooling every (length, score) point of every
answer would count a round once per ordering and per debater, and its p-value would claim far
more evidence than the rounds hold. The p-value is the Wilcoxon signed-rank test of the round
values against 0 (two-sided; rounds at 0 dropped).

A model is flagged "length" or "position" when the mean's magnitude reaches the threshold
(settings: AUDIT_MAX_LENGTH_BIAS, AUDIT_MAX_POSITION_BIAS) and its p-value is below
AUDIT_SIGNIFICANCE, and "ordering" when its disagreement is above
AUDIT_MAX_ORDERING_DISAGREEMENT. Statistics are SciPy's (`scipy.stats.spearmanr`, ties ranked
by their mean rank; `scipy.stats.wilcoxon`).

The report reads every stored debate of the tenant (four queries, whatever their number); it
is meant for the tens of thousands of debates a team keeps, not for a hot path.
"""

from __future__ import annotations

import asyncio
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from debate.common.v1 import common_pb2 as common

from services.orchestrator.run import S
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.store import Store
from services.orchestrator.votes import Choice, tally

PANEL_JOIN = " + "
LENGTH, POSITION, ORDERING = "length", "position", "ordering"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a judge is flagged (see the module docstring), and the votes calibration needs."""

    min_votes: int = 3
    max_length_bias: float = 0.5
    max_position_bias: float = 0.5
    max_ordering_disagreement: float = 0.25
    significance: float = 0.05

    @classmethod
    def from_settings(cls, settings: OrchestratorSettings, min_votes: int = 0) -> Thresholds:
        """The settings' thresholds; `min_votes` > 0 replaces CALIBRATION_MIN_VOTES."""
        return cls(
            min_votes=min_votes or settings.calibration_min_votes,
            max_length_bias=settings.audit_max_length_bias,
            max_position_bias=settings.audit_max_position_bias,
            max_ordering_disagreement=settings.audit_max_ordering_disagreement,
            significance=settings.audit_significance,
        )


@dataclass(frozen=True, slots=True)
class Correlation:
    """A within-round correlation (see the module docstring): `rho` in -1..1, the mean over
    `points` rounds of each round's Spearman correlation (0 when no round has one), and the
    two-sided p-value of the Wilcoxon signed-rank test of those round values (1 when undefined)."""

    rho: float = 0.0
    p_value: float = 1.0
    points: int = 0

    def biased(self, threshold: float, significance: float) -> bool:
        return self.points >= 2 and abs(self.rho) >= threshold and self.p_value < significance


def _scipy_stats() -> Any:
    """scipy.stats, imported on first use: it takes about 2 s of CPU to import, which every
    orchestrator process paid at start for a report few of them make."""
    from scipy import stats  # type: ignore[import-untyped]

    return stats


def spearman_rows(rows: Sequence[tuple[Sequence[float], Sequence[float]]]) -> list[float | None]:
    """The Spearman correlation of each row's paired values (ties ranked by their mean rank), or
    None where undefined (fewer than 2 points, or a side without variation). Rows of the same
    length are ranked together in one call (scipy.stats.rankdata along rows), so that a report
    over thousands of answers costs a few array operations, not a SciPy call per answer."""
    stats = _scipy_stats()
    result: list[float | None] = [None] * len(rows)
    by_size: dict[int, list[int]] = defaultdict(list)
    for index, (xs, _) in enumerate(rows):
        if len(xs) >= 2:
            by_size[len(xs)].append(index)
    for indexes in by_size.values():
        x = stats.rankdata(np.array([rows[i][0] for i in indexes], dtype=float), axis=1)
        y = stats.rankdata(np.array([rows[i][1] for i in indexes], dtype=float), axis=1)
        x -= x.mean(axis=1, keepdims=True)
        y -= y.mean(axis=1, keepdims=True)
        norm = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
        covariance = (x * y).sum(axis=1)
        for i, n, cov in zip(indexes, norm, covariance, strict=True):
            if n > 0:
                result[i] = max(-1.0, min(1.0, float(cov / n)))
    return result


def across_rounds(values: Sequence[float]) -> Correlation:
    """The mean of per-round correlations, with the Wilcoxon signed-rank p-value against 0."""
    if not values:
        return Correlation()
    p = 1.0
    if any(v != 0 for v in values):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = float(_scipy_stats().wilcoxon(values).pvalue)
        p = 1.0 if math.isnan(p) else p
    return Correlation(round(sum(values) / len(values), 4), p, len(values))


@dataclass(slots=True)
class JudgeReport:
    """One judge's line of the report (see the module docstring)."""

    judge: str
    calibration_debates: int = 0
    calibration_agreed: int = 0
    length_bias: Correlation = field(default_factory=Correlation)
    position_bias: Correlation = field(default_factory=Correlation)
    ordering_disagreement: float = 0.0
    ordering_rounds: int = 0
    flags: list[str] = field(default_factory=list)

    @property
    def calibration(self) -> float:
        return self.calibration_agreed / self.calibration_debates if self.calibration_debates else 0.0


def verdict_choice(verdict: common.Verdict) -> Choice:
    return ("", True) if verdict.tie else (verdict.winner, False)


def judge_name(models: Iterable[str]) -> str:
    return PANEL_JOIN.join(models)


def calibrate(
    verdicts: Iterable[tuple[str, common.Verdict]],
    votes: Mapping[str, Mapping[Choice, int]],
    min_votes: int,
) -> dict[str, tuple[int, int]]:
    """judge -> (debates counted, debates where the verdict agreed with the human majority), over
    `verdicts` ((debate_id, verdict) of completed debates, every verdict version in order) whose
    `votes` ((winner, tie) -> votes) number at least `min_votes` and have a strict majority.
    Each judge (a model, or a panel) counts a debate once, by its latest verdict on it: a debate
    re-judged by another judge counts for both."""
    latest: dict[tuple[str, str], common.Verdict] = {}
    for debate_id, verdict in verdicts:
        latest[(judge_name(verdict.judge_models), debate_id)] = verdict
    result: dict[str, tuple[int, int]] = {}
    for (_, debate_id), verdict in latest.items():
        counts = votes.get(debate_id, {})
        majority = tally([], counts).majority
        if sum(counts.values()) < max(1, min_votes) or majority is None:
            continue
        judge = judge_name(verdict.judge_models)
        counted, agreed = result.get(judge, (0, 0))
        result[judge] = (counted + 1, agreed + (verdict_choice(verdict) == majority))
    return result


def _length(turn: common.Turn) -> int:
    return turn.usage.completion_tokens or len(turn.text)


def audit(
    assessments: Iterable[tuple[str, common.RoundAssessment]],
    turns: Iterable[tuple[str, common.Turn]],
) -> dict[str, tuple[Correlation, Correlation, float, int]]:
    """model -> (length bias, position bias, ordering disagreement, rounds counted for it), over
    round `assessments` ((debate_id, assessment)) and the `turns` of the same debates."""
    lengths: dict[tuple[str, int], dict[str, int]] = defaultdict(dict)
    for debate_id, turn in turns:
        lengths[(debate_id, turn.round_number)][turn.participant] = _length(turn)
    # One row an accepted answer: (model, round), then its (xs, ys) for length and for position.
    keys: list[tuple[str, tuple[str, int]]] = []
    length_rows: list[tuple[Sequence[float], Sequence[float]]] = []
    position_rows: list[tuple[Sequence[float], Sequence[float]]] = []
    disagreement: dict[str, list[float]] = defaultdict(list)
    for debate_id, assessment in assessments:
        round_key = (debate_id, assessment.round_number)
        round_lengths = lengths.get(round_key, {})
        orderings: dict[str, set[tuple[str, ...]]] = defaultdict(set)
        for call in assessment.calls:
            if not call.accepted or not call.totals:
                continue
            orderings[call.model].add(tuple(call.ordering))
            keys.append((call.model, round_key))
            shown = [name for name in call.ordering if name in call.totals]
            position_rows.append((range(len(shown)), [call.totals[name] for name in shown]))
            measured = [name for name in call.totals if name in round_lengths]
            length_rows.append(([round_lengths[n] for n in measured], [call.totals[n] for n in measured]))
        if len(assessment.judge_models) == 1:
            model = assessment.judge_models[0]
            if len(orderings.get(model, ())) > 1:
                disagreement[model].append(1.0 - assessment.ordering_agreement)
    by_length = _per_round(keys, spearman_rows(length_rows))
    by_position = _per_round(keys, spearman_rows(position_rows))
    result = {}
    for model in set(by_length) | set(by_position) | set(disagreement):
        rounds = disagreement.get(model, [])
        result[model] = (
            across_rounds(by_length.get(model, [])),
            across_rounds(by_position.get(model, [])),
            round(sum(rounds) / len(rounds), 4) if rounds else 0.0,
            len(rounds),
        )
    return result


def _per_round(keys: Sequence[tuple[str, tuple[str, int]]], values: Sequence[float | None]) -> dict[str, list[float]]:
    """model -> one value a round: the mean of its answers' defined values in that round."""
    answers: dict[str, dict[tuple[str, int], list[float]]] = defaultdict(lambda: defaultdict(list))
    for (model, round_key), value in zip(keys, values, strict=True):
        if value is not None:
            answers[model][round_key].append(value)
    return {model: [sum(v) / len(v) for v in rounds.values()] for model, rounds in answers.items()}


def build_report(
    verdicts: Sequence[tuple[str, common.Verdict]],
    votes: Mapping[str, Mapping[Choice, int]],
    assessments: Sequence[tuple[str, common.RoundAssessment]],
    turns: Sequence[tuple[str, common.Turn]],
    thresholds: Thresholds,
) -> list[JudgeReport]:
    """One JudgeReport per judge (calibrated or audited), by name, flagged past `thresholds`."""
    reports: dict[str, JudgeReport] = {}
    for judge, (counted, agreed) in calibrate(verdicts, votes, thresholds.min_votes).items():
        reports[judge] = JudgeReport(judge, calibration_debates=counted, calibration_agreed=agreed)
    for model, (length, position, disagreement, rounds) in audit(assessments, turns).items():
        report = reports.setdefault(model, JudgeReport(model))
        report.length_bias, report.position_bias = length, position
        report.ordering_disagreement, report.ordering_rounds = disagreement, rounds
        if length.biased(thresholds.max_length_bias, thresholds.significance):
            report.flags.append(LENGTH)
        if position.biased(thresholds.max_position_bias, thresholds.significance):
            report.flags.append(POSITION)
        if rounds and disagreement > thresholds.max_ordering_disagreement:
            report.flags.append(ORDERING)
    return [reports[name] for name in sorted(reports)]


async def tenant_report(store: Store, tenant: str, thresholds: Thresholds) -> list[JudgeReport]:
    """The report over every stored debate of `tenant` (see the module docstring): the rows read
    on the event loop (the store's connection is the loop's), the statistics computed in a worker
    thread, so that neither they nor SciPy's first import hold up the loop's other debates."""
    rows = (
        store.tenant_verdicts(tenant, S.DEBATE_STATE_COMPLETED),
        store.tenant_vote_counts(tenant),
        store.tenant_assessments(tenant),
        store.tenant_turns(tenant),
    )
    return await asyncio.to_thread(build_report, *rows, thresholds)
