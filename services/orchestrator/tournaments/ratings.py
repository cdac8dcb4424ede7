"""Bradley-Terry ratings of models from decided matches, with bootstrap confidence intervals.

Model: P(i beats j) = e^θi / (e^θi + e^θj). Ties count as half a win each (a tie between i and
j adds one comparison won by i and one won by j; a decided match adds two won by its winner, so
every match weighs the same). The fit is choix's iterative Luce spectral ranking
(`choix.ilsr_pairwise`, the maximum-likelihood estimate) with a small regularisation
(`ALPHA`), which keeps θ finite when a model won or lost every match. θ is centred on the mean
of the models rated and reported on the Elo scale: rating = 1500 + (400 / ln 10)·θ.

Intervals: the matches are resampled with replacement `RESAMPLES` times (numpy's generator
seeded with `seed`, so the same matches give the same intervals), refitted, and each model's
2.5th and 97.5th percentiles taken.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
RESAMPLES = 200
BASE = 1500.0
SCALE = 400.0 / math.log(10.0)
METHOD = (
    f"Bradley-Terry (choix.ilsr_pairwise, alpha={ALPHA}), ties as half a win each; "
    f"rating = {BASE:.0f} + 400/ln(10)·θ; 95% intervals from {RESAMPLES} bootstrap resamples of the matches"
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One decided match: `score_a` is a's points (1 win, 0.5 tie, 0 loss)."""

    model_a: str
    model_b: str
    score_a: float


@dataclass(frozen=True, slots=True)
class ModelRating:
    model: str
    rating: float
    low: float
    high: float
    matches: int
    wins: int
    losses: int
    ties: int
    rank: int


def _comparisons(outcomes: Sequence[Outcome], index: dict[str, int]) -> list[tuple[int, int]]:
    data: list[tuple[int, int]] = []
    for o in outcomes:
        a, b = index[o.model_a], index[o.model_b]
        if o.score_a == 0.5:
            data += [(a, b), (b, a)]
        elif o.score_a > 0.5:
            data += [(a, b), (a, b)]
        else:
            data += [(b, a), (b, a)]
    return data


def _fit(n: int, outcomes: Sequence[Outcome], index: dict[str, int]) -> np.ndarray:
    import choix  # on first use: with the SciPy it imports, about 2 s of CPU that every orchestrator paid at start

    theta = np.asarray(choix.ilsr_pairwise(n, _comparisons(outcomes, index), alpha=ALPHA), dtype=float)
    return BASE + SCALE * (theta - theta.mean())


def fit_ratings(outcomes: Sequence[Outcome], *, seed: int = 0, resamples: int = RESAMPLES) -> list[ModelRating]:
    """The ratings of every model in `outcomes`, highest first (empty for no outcome)."""
    models = sorted({o.model_a for o in outcomes} | {o.model_b for o in outcomes})
    if not models:
        return []
    index = {m: i for i, m in enumerate(models)}
    n = len(models)
    point = _fit(n, outcomes, index)
    rng = np.random.default_rng(seed)
    samples = np.empty((resamples, n))
    for r in range(resamples):
        picked = rng.integers(0, len(outcomes), len(outcomes))
        samples[r] = _fit(n, [outcomes[i] for i in picked], index)
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    tallies = {m: [0, 0, 0, 0] for m in models}  # matches, wins, losses, ties
    for o in outcomes:
        for model, score in ((o.model_a, o.score_a), (o.model_b, 1.0 - o.score_a)):
            t = tallies[model]
            t[0] += 1
            t[1 if score == 1.0 else 2 if score == 0.0 else 3] += 1
    order = sorted(range(n), key=lambda i: (-point[i], models[i]))
    return [
        ModelRating(
            model=models[i],
            rating=float(point[i]),
            low=float(low[i]),
            high=float(high[i]),
            matches=tallies[models[i]][0],
            wins=tallies[models[i]][1],
            losses=tallies[models[i]][2],
            ties=tallies[models[i]][3],
            rank=rank,
        )
        for rank, i in enumerate(order, start=1)
    ]
