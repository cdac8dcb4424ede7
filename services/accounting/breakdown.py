"""Exact tallies of usage and cost, grouped by a key (participant, role, round, model)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

from services.common.money import EXACT, ZERO
from services.common.usage import Usage


@dataclass(frozen=True, slots=True)
class Line:
    key: str
    usage: Usage
    cost: Decimal
    calls: int
    # True when any summed usage was counted by our tokenizer rather than reported.
    estimated: bool = False


class Tally:
    """Running exact sum of usages and costs."""

    __slots__ = ("cache_creation", "cached", "calls", "completion", "cost", "estimated", "prompt", "reasoning")

    def __init__(self) -> None:
        self.prompt = self.completion = self.cached = self.reasoning = self.cache_creation = self.calls = 0
        self.cost = ZERO
        self.estimated = False

    def add(self, usage: Usage, cost: Decimal, estimated: bool = False, calls: int = 1) -> None:
        self.prompt += usage.prompt_tokens
        self.completion += usage.completion_tokens
        self.cached += usage.cached_prompt_tokens
        self.reasoning += usage.reasoning_tokens
        self.cache_creation += usage.cache_creation_prompt_tokens
        self.cost = EXACT.add(self.cost, cost)
        self.calls += calls
        self.estimated = self.estimated or estimated

    def line(self, key: str) -> Line:
        usage = Usage(
            self.prompt, self.completion, self.cached, self.reasoning, cache_creation_prompt_tokens=self.cache_creation
        )
        return Line(key, usage, self.cost, self.calls, self.estimated)


T = TypeVar("T")


class GroupedTally(Generic[T]):
    """One Tally per key, reported in the order `sort_key` gives."""

    def __init__(self, key_of: Callable[[T], str], sort_key: Callable[[str], Any] = str):
        self._key_of = key_of
        self._sort_key = sort_key
        self._tallies: dict[str, Tally] = {}

    def add(self, item: T, usage: Usage, cost: Decimal, estimated: bool = False, calls: int = 1) -> None:
        key = self._key_of(item)
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = Tally()
        tally.add(usage, cost, estimated, calls)

    def lines(self) -> list[Line]:
        return [self._tallies[k].line(k) for k in sorted(self._tallies, key=self._sort_key)]
