"""Orderings, aggregation and agreement: the judge's bias control, as plain arithmetic.

Agreement between two rankings of the same debaters (debater -> weighted total) is
(Kendall's tau-b + 1) / 2, with totals within the tie margin counted as tied: 1 means the
same order, 0 the reverse order, 0.5 no relation. Tau-b leaves out of its count the pairs
either ranking calls a tie and corrects for them, so debaters that both rankings lump
together neither inflate nor deflate it. If a ranking ties everyone, agreement is 1 when
the other does too and 0.5 otherwise. Agreement among several rankings is the mean over
their pairs; a single ranking agrees with itself (1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations

from services.judge.model import Criterion


def candidate_orderings(n: int) -> list[tuple[int, ...]]:
    """Distinct presentation orders of n debaters, in the order they are used.

    First the n cyclic rotations (a Latin square: every debater is shown in every position
    exactly once), then the rotations of the reversed order.
    """
    base = list(range(n))
    found: list[tuple[int, ...]] = []
    for sequence in (base, base[::-1]):
        for shift in range(n):
            rotated = tuple(sequence[shift:] + sequence[:shift])
            if rotated not in found:
                found.append(rotated)
    return found


def choose_orderings(n: int, k: int) -> tuple[tuple[int, ...], ...]:
    """k orderings of n debaters, spread evenly over `candidate_orderings(n)`.

    With k = n every debater is shown first (and in every other position) once, so a judge
    that favours a position favours every debater equally. With fewer orderings than
    debaters that balance is impossible (someone is never shown first), which is why the
    default is one ordering per debater.
    """
    candidates = candidate_orderings(n)
    if not 1 <= k <= len(candidates):
        raise ValueError(f"between 1 and {len(candidates)} orderings of {n} debaters, not {k}")
    rotations, reversed_rotations = candidates[:n], candidates[n:]
    if k <= n:
        return tuple(rotations[i * n // k] for i in range(k))
    extra = k - n
    return tuple(rotations) + tuple(reversed_rotations[i * len(reversed_rotations) // extra] for i in range(extra))


def normalise_weights(criteria: Sequence[Criterion]) -> tuple[Criterion, ...]:
    """Weights scaled to sum to 1; all zero (proto3's "unset") means equal weights."""
    total = sum(c.weight for c in criteria)
    if total <= 0:
        return tuple(Criterion(c.name, 1 / len(criteria), c.description) for c in criteria)
    return tuple(Criterion(c.name, c.weight / total, c.description) for c in criteria)


def weighted_total(scores: Mapping[str, float], criteria: Sequence[Criterion]) -> float:
    return sum(scores[c.name] * c.weight for c in criteria)


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean (statistics.fmean is several times slower on short lists)."""
    return sum(values) / len(values)


def mean_scores(ballots: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """Per debater and criterion, the mean over ballots (each maps debater -> criterion -> score)."""
    first = ballots[0]
    return {
        debater: {criterion: mean([b[debater][criterion] for b in ballots]) for criterion in criteria}
        for debater, criteria in first.items()
    }


def pair_agreement(a: Mapping[str, float], b: Mapping[str, float], margin: float) -> float:
    """Agreement (0..1) of two rankings given as debater -> total (see the module docstring)."""
    pairs = list(combinations(list(a), 2))
    if not pairs:
        return 1.0
    concordant = discordant = tied_a = tied_b = 0
    for x, y in pairs:
        da, db = _direction(a[x] - a[y], margin), _direction(b[x] - b[y], margin)
        tied_a += da == 0
        tied_b += db == 0
        if da and db:
            if da == db:
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((len(pairs) - tied_a) * (len(pairs) - tied_b))
    if denominator == 0:
        return 1.0 if tied_a == tied_b == len(pairs) else 0.5
    return ((concordant - discordant) / denominator + 1) / 2


def agreement(rankings: Sequence[Mapping[str, float]], margin: float) -> float:
    """Mean pairwise agreement of several rankings; 1 for fewer than two."""
    if len(rankings) < 2:
        return 1.0
    return mean([pair_agreement(a, b, margin) for a, b in combinations(rankings, 2)])


def _direction(difference: float, margin: float) -> int:
    if abs(difference) <= margin:
        return 0
    return 1 if difference > 0 else -1


def leader(totals: Mapping[str, float], margin: float) -> tuple[str, bool, list[str]]:
    """(leader, tie, ranked names): a tie when the runner-up is within `margin` of the top."""
    ranked = sorted(totals, key=lambda name: -totals[name])
    if len(ranked) > 1 and totals[ranked[0]] - totals[ranked[1]] <= margin:
        return "", True, ranked
    return ranked[0], False, ranked


def top_share(totals: Mapping[str, float], name: str, margin: float) -> float:
    """How much of one ballot goes to `name`: 1/k if it is among the k debaters within
    `margin` of the ballot's best total, else 0."""
    best = max(totals.values())
    top = [n for n, total in totals.items() if best - total <= margin]
    return 1 / len(top) if name in top else 0.0
