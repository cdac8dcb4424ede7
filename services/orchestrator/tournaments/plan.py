"""A tournament's config, checked, and laid out as matches and debate configs.

A round robin: every pair of models (i < j, in the order given) plays one match per topic,
topic by topic, so the first matches already cover every pair. A match is two debates under the
same topic, judge, format and seed (the tournament's seed + the match's index): in leg 1
model_a argues for the motion and model_b against; in leg 2 the sides are swapped. The side
arguing for speaks first in both legs, so each model has each side and each position once.

Every debate config is checked by the debate engine's own validation (`validate_config`, the
same limits and model rules as CreateDebate); its violations are reported on the tournament's
fields (`config.models[1]`, `config.topics[0]`, `config.judge.models[0]`, ...).
"""

from __future__ import annotations

import re
from decimal import Decimal

from debate.common.v1 import common_pb2 as common
from debate.orchestrator.v1 import tournament_pb2 as tpb

from services.common.debate_rules import ModelRules
from services.common.errors import FieldViolation, InvalidArgument, Violations
from services.common.money import read_money, usd
from services.common.text import clean_text
from services.orchestrator.config import Limits, validate_config

MAX_MODELS = 8
MAX_TOPICS = 20
MAX_NAME_CHARS = 200
MAX_PARALLEL_MATCHES = 8
PERSONA = "a debater"
_SEAT = re.compile(r"[^\w.\-]+")


def seat_names(model_a: str, model_b: str) -> tuple[str, str]:
    """The participant names of the two models in their debates: each model's last path part
    (a valid participant name), or "A" and "B" when those clash."""
    a, b = (_SEAT.sub("-", m.rsplit("/", 1)[-1]).strip("-.")[:60] for m in (model_a, model_b))
    return (a, b) if a and b and a.casefold() != b.casefold() else ("A", "B")


def pairings(config: tpb.TournamentConfig) -> list[tpb.Match]:
    """The round robin's matches, PENDING, in the order they are played."""
    models, matches = list(config.models), list[tpb.Match]()
    for topic in config.topics:
        for i in range(len(models)):
            for j in range(i + 1, len(models)):
                index = len(matches)
                matches.append(
                    tpb.Match(
                        match_index=index,
                        model_a=models[i],
                        model_b=models[j],
                        topic=topic,
                        seed=config.seed + index,
                        state=tpb.MatchState.MATCH_STATE_PENDING,
                    )
                )
    return matches


def debate_config(config: tpb.TournamentConfig, match: tpb.Match, leg: int) -> common.DebateConfig:
    """The debate config of a match's leg (1: model_a for; 2: sides swapped)."""
    name_a, name_b = seat_names(match.model_a, match.model_b)
    a = common.Participant(name=name_a, model=match.model_a, persona=PERSONA, stance="for" if leg == 1 else "against")
    b = common.Participant(name=name_b, model=match.model_b, persona=PERSONA, stance="against" if leg == 1 else "for")
    out = common.DebateConfig(
        topic=match.topic,
        participants=[a, b] if leg == 1 else [b, a],
        judge=config.judge,
        format=config.format,
        max_tokens_per_turn=config.max_tokens_per_turn,
        seed=match.seed,
    )
    if config.HasField("debate_budget"):
        out.budget.CopyFrom(config.debate_budget)
    return out


def debates_of(config: tpb.TournamentConfig) -> int:
    n = len(config.models)
    return n * (n - 1) * len(config.topics)  # two debates a match


def validate_tournament(config: tpb.TournamentConfig, limits: Limits, rules: ModelRules) -> tpb.TournamentConfig:
    """The normalised config (text cleaned; format 1 round when unset; `debate_budget` set to the
    budget shared by every debate when only `budget` is given), or InvalidArgument listing every
    problem (then ProviderKeyMissing, as CreateDebate)."""
    v = Violations()
    out = tpb.TournamentConfig()
    out.CopyFrom(config)
    out.name = clean_text(config.name)
    if len(out.name) > MAX_NAME_CHARS:
        v.add("config.name", f"must be at most {MAX_NAME_CHARS} characters")
    models = [m.strip() for m in config.models]
    del out.models[:]
    out.models.extend(models)
    if not 2 <= len(models) <= MAX_MODELS:
        v.add("config.models", f"must have 2 to {MAX_MODELS} models, got {len(models)}")
    seen: dict[str, int] = {}
    for i, model in enumerate(models):
        if model in seen:
            v.add(f"config.models[{i}]", f"duplicates config.models[{seen[model]}]")
        seen.setdefault(model, i)
    if not 1 <= len(config.topics) <= MAX_TOPICS:
        v.add("config.topics", f"must have 1 to {MAX_TOPICS} topics, got {len(config.topics)}")
    if not 0 <= config.parallel_matches <= MAX_PARALLEL_MATCHES:
        v.add("config.parallel_matches", f"must be 0 to {MAX_PARALLEL_MATCHES}")
    if not out.HasField("format") or out.format.round_limit == 0:
        out.format.round_limit = out.format.round_limit or 1
    budget = read_money(config.budget, "config.budget", v, positive=True) if config.HasField("budget") else None
    cap = (
        read_money(config.debate_budget, "config.debate_budget", v, positive=True)
        if config.HasField("debate_budget")
        else None
    )
    if budget is not None and cap is not None and cap * 2 > budget:
        v.add("config.debate_budget", "must be at most half the budget (a match is two debates)")
    _check_debates(out, models, limits, rules, v)
    v.raise_if_any()
    if budget is not None and cap is None:
        share = (budget / debates_of(out)).quantize(Decimal("0.000000000001"), rounding="ROUND_FLOOR")
        out.debate_budget.CopyFrom(usd(share))
    return out


def _check_debates(
    config: tpb.TournamentConfig, models: list[str], limits: Limits, rules: ModelRules, v: Violations
) -> None:
    """Each model and each topic through the debate engine's validation, its violations renamed
    onto the tournament's fields."""
    if len(models) < 2 or not config.topics:
        return
    probes: list[tuple[str, tpb.Match, dict[str, str]]] = []
    for i, model in enumerate(models):
        other = models[1] if i == 0 else models[0]
        match = tpb.Match(model_a=model, model_b=other, topic=config.topics[0], seed=config.seed)
        probes.append(("model", match, {"config.participants[0].model": f"config.models[{i}]"}))
    for t, topic in enumerate(config.topics):
        match = tpb.Match(model_a=models[0], model_b=models[1], topic=topic, seed=config.seed)
        probes.append(("topic", match, {"config.topic": f"config.topics[{t}]"}))
    found: dict[str, str] = {}
    for kind, match, renames in probes:
        probe = debate_config(config, match, 1)
        try:
            validate_config(probe, limits, rules)
        except InvalidArgument as error:
            for violation in error.violations:
                field = _rename(violation, renames, kind)
                if field is not None:
                    found.setdefault(field, violation.description)
    for field, description in found.items():
        v.add(field, description)


def _rename(violation: FieldViolation, renames: dict[str, str], kind: str) -> str | None:
    """A debate config's field as the tournament's, or None when another probe reports it."""
    field = violation.field
    if field in renames:
        return renames[field]
    if field.startswith("config.participants") or field == "config.topic":
        return None  # the other model's, or a topic: reported by its own probe
    if kind != "topic":
        return None  # judge, format, context and budget problems: reported once, by the topic probes
    return {"config.budget": "config.debate_budget"}.get(field, field)
