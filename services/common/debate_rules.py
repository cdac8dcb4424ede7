"""What can be known about a debate before any money is spent, checked in one place.

The orchestrator checks a debate's config with these rules when the debate is created
(CreateDebate), the judge checks each request it gets with the same rules, and accounting
reads every amount a client sends with `services.common.money.read_money`. A config that
passes here does not fail later, after debaters were paid, on something that was knowable:

- the judge's rules (`check_judge`): the panel's models (allowed, not repeated, at most
  `max_panel`), the orderings (0 to the distinct orderings of the debaters, at most
  `max_orderings`), the rubric (at most `max_criteria` criteria named in lower snake case,
  not reserved, not repeated, each weight finite and not negative);
- the sizes of a debate's source documents (`check_source_sizes`): how many, the bytes of each
  and of all (services/common/limits.py);
- every model a debate may call, fallbacks of LLM_FALLBACKS included (`ModelRules.check`):
  allowed, priced by the PriceBook (or by a price declared for its endpoint in LLM_ENDPOINTS),
  and its provider key present in the services' environment.

Bad input is one field violation per problem (paths such as "config.judge.rubric.criteria[0].name"
at CreateDebate, "judge.rubric.criteria[0].name" at the judge), raised as INVALID_ARGUMENT with
nothing stored. A missing provider key is not the caller's input: it is collected apart
(`MissingKeys`) and raised after the violations as FAILED_PRECONDITION (`ProviderKeyMissing`)
naming the variable. The suite's services share one environment (the launcher and the compose
file give each the same), so the orchestrator's copy of the keys and prices stands for the
judge's and accounting's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.common.errors import FailedPrecondition, Violations
from services.common.limits import (
    MAX_JUDGE_ORDERINGS,
    MAX_JUDGE_PANEL,
    MAX_SOURCE_BYTES,
    MAX_SOURCES,
    MAX_SOURCES_TOTAL_BYTES,
    distinct_orderings,
)
from services.common.pricing import PriceBook

MAX_CRITERIA = 10
# The judge's output schema uses criterion names as JSON keys next to these.
CRITERION_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
RESERVED_CRITERIA = frozenset({"rationale", "scores", "summary", "debaters"})


# --------------------------------------------------------------------------- models


class ProviderKeyMissing(FailedPrecondition):
    """A model's provider key is not in the services' environment; metadata names the variable."""

    reason = "PROVIDER_KEY_MISSING"


@dataclass
class MissingKeys:
    """Provider keys found missing while checking a request: (variable, field path, model)."""

    items: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, variable: str, field_path: str, model: str) -> None:
        self.items.append((variable, field_path, model))

    def raise_if_any(self) -> None:
        """ProviderKeyMissing naming every missing variable and where it is needed."""
        if not self.items:
            return
        variables = sorted({variable for variable, _, _ in self.items})
        needs = "; ".join(f"{path} ({model!r}) needs {variable}" for variable, path, model in self.items)
        raise ProviderKeyMissing(
            f"provider key {', '.join(variables)} is not set in the services' environment: {needs}",
            metadata={
                "variables": ",".join(variables),
                "fields": ",".join(path for _, path, _ in self.items),
            },
        )


class ModelSettings(Protocol):
    """What ModelRules reads of the LLM settings (services.common.llm.settings.LLMSettings)."""

    @property
    def llm_fallbacks(self) -> dict[str, list[str]]: ...

    @property
    def llm_endpoints(self) -> Mapping[str, object]: ...

    def model_allowed(self, model: str) -> bool: ...

    def missing_key_env(self, model: str) -> str | None: ...


class ModelRules:
    """Whether a model can be used now: allowed, it and its fallbacks priced, their keys set.

    The orchestrator's engine and the judge's policy each hold one (built from the settings by
    the composition root, `from_settings`). Without a PriceBook (`prices=None`) prices are not
    checked; without `missing_key_env`, keys are not: `ModelRules(allowed)` checks the
    allowlist only.
    """

    def __init__(
        self,
        allowed: Callable[[str], bool],
        *,
        prices: PriceBook | None = None,
        fallbacks: Mapping[str, Sequence[str]] | None = None,
        missing_key_env: Callable[[str], str | None] | None = None,
        endpoints: Collection[str] = (),
    ) -> None:
        self.allowed = allowed
        self.prices = prices
        self.fallbacks = dict(fallbacks or {})
        self.missing_key_env = missing_key_env
        self.endpoints = frozenset(endpoints)

    @classmethod
    def from_settings(cls, settings: ModelSettings, prices: PriceBook | None) -> ModelRules:
        return cls(
            settings.model_allowed,
            prices=prices,
            fallbacks=settings.llm_fallbacks,
            missing_key_env=settings.missing_key_env,
            endpoints=settings.llm_endpoints.keys(),
        )

    def chain(self, model: str) -> list[str]:
        """The models a call for `model` may reach: it, then its allowed fallbacks, as the
        LLM router tries them (services/common/llm/router.py, `candidates`)."""
        chain = [model]
        for alternative in self.fallbacks.get(model, ()):
            if alternative not in chain and self.allowed(alternative):
                chain.append(alternative)
        return chain

    def check(self, model: str, path: str, v: Violations, keys: MissingKeys) -> None:
        """One violation at `path` when `model` is empty, not allowed or (with a fallback) not
        priced; a missing key of it or of a fallback goes to `keys`."""
        if not model.strip():
            v.add(path, "must not be empty")
            return
        if not self.allowed(model):
            v.add(path, f"model {model!r} is not allowed (LLM_ALLOWED_MODELS)")
            return
        chain = self.chain(model)
        if self.prices is not None:
            for candidate in chain:
                if self.prices.find(candidate) is None:
                    v.add(path, self._unpriced(model, candidate))
                    break
        if self.missing_key_env is not None:
            for candidate in chain:
                variable = self.missing_key_env(candidate)
                if variable is not None:
                    keys.add(variable, path, candidate)

    def _unpriced(self, model: str, candidate: str) -> str:
        whose = f"model {model!r}" if candidate == model else f"fallback {candidate!r} of {model!r} (LLM_FALLBACKS)"
        prefix = candidate.partition("/")[0]
        if prefix in self.endpoints:
            how = (
                f'declare a price for endpoint {prefix!r} in LLM_ENDPOINTS, e.g. {{"{prefix}": {{"api_base": ..., '
                '"price": {"input_per_million": "0", "output_per_million": "0"}}} for a self-hosted server'
            )
        else:
            how = (
                "add it to services/common/prices.toml, or serve it through an endpoint of LLM_ENDPOINTS "
                'that declares a "price"'
            )
        return f"{whose} has no known price, so its cost could not be counted: {how}"


# --------------------------------------------------------------------------- the judge's rules


class NamedWeight(Protocol):
    """A rubric criterion as either side holds it (common.v1.Criterion or the judge's Criterion)."""

    @property
    def name(self) -> str: ...

    @property
    def weight(self) -> float: ...


@dataclass(frozen=True, slots=True)
class JudgeLimits:
    """The judge's bounds; the judge's settings may lower them (JUDGE_MAX_PANEL, JUDGE_MAX_ORDERINGS)."""

    max_panel: int = MAX_JUDGE_PANEL
    max_orderings: int = MAX_JUDGE_ORDERINGS
    max_criteria: int = MAX_CRITERIA


def most_orderings(debaters: int, limits: JudgeLimits) -> int:
    """The most orderings a request may ask for with `debaters` debaters."""
    return min(limits.max_orderings, distinct_orderings(debaters))


def check_judge(
    v: Violations,
    keys: MissingKeys,
    *,
    models: Sequence[str],
    orderings: int,
    criteria: Sequence[NamedWeight],
    debaters: int,
    rules: ModelRules,
    limits: JudgeLimits,
    path: str = "judge",
    default_models: Sequence[str] = (),
) -> None:
    """Every rule of a JudgeConfig (`path`: where it sits in the request). `models` as asked;
    `default_models` are what the judge uses when none is asked (checked at `path`.models)."""
    check_judge_models(v, keys, models, rules, limits, path, default_models)
    check_orderings(v, orderings, debaters, limits, path)
    check_criteria(v, criteria, limits, f"{path}.rubric.criteria")


def check_judge_models(
    v: Violations,
    keys: MissingKeys,
    models: Sequence[str],
    rules: ModelRules,
    limits: JudgeLimits,
    path: str = "judge",
    default_models: Sequence[str] = (),
) -> None:
    used = models or default_models
    if len(used) > limits.max_panel:
        v.add(f"{path}.models", f"at most {limits.max_panel} judge models, got {len(used)}")
    seen: dict[str, int] = {}
    for i, model in enumerate(models):
        field_path = f"{path}.models[{i}]"
        if model in seen:
            v.add(field_path, f"duplicate of {path}.models[{seen[model]}]")
        else:
            rules.check(model, field_path, v, keys)
        seen.setdefault(model, i)
    if not models:
        for model in default_models:
            rules.check(model, f"{path}.models", v, keys)


def check_orderings(v: Violations, orderings: int, debaters: int, limits: JudgeLimits, path: str = "judge") -> None:
    limit = most_orderings(debaters, limits)
    if orderings < 0:
        v.add(f"{path}.orderings", f"must not be negative, got {orderings}")
    elif orderings > limit:
        v.add(f"{path}.orderings", f"at most {limit} orderings for {debaters} debaters, got {orderings}")


def check_criteria(v: Violations, criteria: Sequence[NamedWeight], limits: JudgeLimits, path: str) -> None:
    """Names in lower snake case (1 to 40 characters), not reserved, not repeated; weights
    finite and not negative (all zero means equal weights)."""
    if len(criteria) > limits.max_criteria:
        v.add(path, f"at most {limits.max_criteria} criteria, got {len(criteria)}")
    seen: dict[str, int] = {}
    for i, criterion in enumerate(criteria):
        item = f"{path}[{i}]"
        name = criterion.name
        if not CRITERION_NAME.fullmatch(name):
            v.add(
                f"{item}.name",
                f"must be 1 to 40 characters of a-z, 0-9 and _, starting with a letter "
                f"(lower snake case, e.g. 'logic'), got {name[:40]!r}",
            )
        elif name in RESERVED_CRITERIA:
            v.add(f"{item}.name", f"{name!r} is reserved")
        elif name in seen:
            v.add(f"{item}.name", f"duplicate of {path}[{seen[name]}].name")
        seen.setdefault(name, i)
        if not math.isfinite(criterion.weight) or criterion.weight < 0:
            v.add(f"{item}.weight", f"must be a finite number >= 0, got {criterion.weight}")


def check_source_sizes(v: Violations, texts: Sequence[str], path: str = "sources") -> bool:
    """The evidence documents' sizes: at most MAX_SOURCES documents, each text at most
    MAX_SOURCE_BYTES bytes of UTF-8 and all of them MAX_SOURCES_TOTAL_BYTES (violations at `path`
    and `{path}[i].text`). False when there are too many documents to look at one by one."""
    if len(texts) > MAX_SOURCES:
        v.add(path, f"must have at most {MAX_SOURCES} documents, got {len(texts)}")
        return False
    total = 0
    for i, text in enumerate(texts):
        size = len(text.encode())
        total += size
        if size > MAX_SOURCE_BYTES:
            v.add(f"{path}[{i}].text", f"must be at most {MAX_SOURCE_BYTES} bytes of UTF-8, got {size}")
    if total > MAX_SOURCES_TOTAL_BYTES:
        v.add(path, f"must be at most {MAX_SOURCES_TOTAL_BYTES} bytes of UTF-8 in all, got {total}")
    return True
