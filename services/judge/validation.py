"""Checks and cleans a judge request: every problem becomes one field violation, all at once.

Field paths follow the protobuf request (`debaters[1].name`, `judge.rubric.criteria[0].weight`)
so a caller can point at what to fix. Free text (topic, stance, persona, criterion
descriptions, turns) is cleaned of control, zero-width and bidirectional characters and cut
to a bounded length; names are identifiers and are refused, not altered, when unclean.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import replace

from services.common.errors import Violations
from services.common.limits import distinct_orderings
from services.common.text import (
    MAX_NAME_LENGTH,
    MAX_PERSONA_LENGTH,
    MAX_STANCE_LENGTH,
    MAX_TOPIC_LENGTH,
    clean_text,
)
from services.judge.aggregate import choose_orderings, normalise_weights
from services.judge.model import (
    DEFAULT_CRITERIA,
    Criterion,
    Debater,
    JudgePolicy,
    Panel,
    PanelRequest,
    Round,
    RoundCase,
    Turn,
    VerdictCase,
)
from services.judge.output import SCORE_MAX, SCORE_MIN

MAX_DESCRIPTION_LENGTH = 300
TRUNCATION_MARK = " [...]"
_CRITERION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_RESERVED_CRITERIA = frozenset({"rationale", "scores", "summary", "debaters"})


def validate_round(case: RoundCase, policy: JudgePolicy) -> RoundCase:
    """The case cleaned and with a resolved Panel, or InvalidArgument listing every problem."""
    v = Violations()
    if case.round_number < 1:
        v.add("round_number", f"must be at least 1, got {case.round_number}")
    topic = _topic(case.topic, v)
    debaters = _debaters(case.debaters, policy, v)
    names = {d.name for d in debaters}
    if not case.turns:
        v.add("turns", "at least one turn is required")
    turns = _turns(case.turns, "turns", names, policy.max_turn_chars, v)
    panel = _panel(case.panel, len(debaters), policy, v)
    v.raise_if_any()
    return replace(case, topic=topic, debaters=debaters, turns=turns, panel=panel)


def validate_verdict(case: VerdictCase, policy: JudgePolicy) -> VerdictCase:
    v = Violations()
    topic = _topic(case.topic, v)
    debaters = _debaters(case.debaters, policy, v)
    names = {d.name for d in debaters}
    if not case.rounds:
        v.add("rounds", "at least one round is required")
    if len(case.rounds) > policy.max_rounds:
        v.add("rounds", f"at most {policy.max_rounds} rounds")
    turn_count = sum(len(r.turns) for r in case.rounds) or 1
    turn_cap = max(200, min(policy.max_turn_chars, policy.max_transcript_chars // turn_count))
    rounds: list[Round] = []
    seen_numbers: dict[int, int] = {}
    for i, rnd in enumerate(case.rounds):
        path = f"rounds[{i}]"
        if rnd.number < 1:
            v.add(f"{path}.round_number", f"must be at least 1, got {rnd.number}")
        elif rnd.number in seen_numbers:
            v.add(f"{path}.round_number", f"duplicate of rounds[{seen_numbers[rnd.number]}]")
        seen_numbers.setdefault(rnd.number, i)
        if not rnd.turns:
            v.add(f"{path}.turns", "at least one turn is required")
        rounds.append(Round(rnd.number, _turns(rnd.turns, f"{path}.turns", names, turn_cap, v)))
    for i, prior in enumerate(case.assessments):
        path = f"assessments[{i}]"
        for name, total in prior.totals.items():
            if name not in names:
                v.add(f"{path}.scores", f"unknown debater {name!r}")
            elif not (math.isfinite(total) and SCORE_MIN <= total <= SCORE_MAX):
                v.add(f"{path}.scores", f"weighted_total of {name!r} must be 0 to 10, got {total}")
        missing = [n for n in names if n not in prior.totals]
        if missing and len(debaters) >= 2:
            v.add(f"{path}.scores", f"no score for {', '.join(repr(n) for n in sorted(missing))}")
    panel = _panel(case.panel, len(debaters), policy, v)
    v.raise_if_any()
    ordered = tuple(sorted(rounds, key=lambda r: r.number))
    return replace(case, topic=topic, debaters=debaters, rounds=ordered, panel=panel)


# --------------------------------------------------------------------------- parts


def _topic(topic: str, v: Violations) -> str:
    cleaned = clean_text(topic, MAX_TOPIC_LENGTH)
    if not cleaned:
        v.add("topic", "must not be empty")
    return cleaned


def _debaters(debaters: Sequence[Debater], policy: JudgePolicy, v: Violations) -> tuple[Debater, ...]:
    if len(debaters) < 2:
        v.add("debaters", f"at least 2 debaters are required, got {len(debaters)}")
    elif len(debaters) > policy.max_debaters:
        v.add("debaters", f"at most {policy.max_debaters} debaters, got {len(debaters)}")
    cleaned: list[Debater] = []
    first_index: dict[str, int] = {}
    for i, debater in enumerate(debaters):
        path = f"debaters[{i}].name"
        name = debater.name
        if not name.strip():
            v.add(path, "must not be empty")
        elif len(name) > MAX_NAME_LENGTH:
            v.add(path, f"must be at most {MAX_NAME_LENGTH} characters")
        elif clean_text(name, MAX_NAME_LENGTH) != name:
            v.add(
                path,
                "must not contain control, zero-width or bidirectional characters, "
                "or leading, trailing or repeated whitespace",
            )
        elif name in first_index:
            v.add(path, f"duplicate of debaters[{first_index[name]}].name")
        first_index.setdefault(name, i)
        cleaned.append(
            Debater(
                name=name,
                stance=clean_text(debater.stance, MAX_STANCE_LENGTH),
                persona=clean_text(debater.persona, MAX_PERSONA_LENGTH),
            )
        )
    return tuple(cleaned)


def _turns(turns: Sequence[Turn], path: str, names: set[str], max_chars: int, v: Violations) -> tuple[Turn, ...]:
    cleaned: list[Turn] = []
    for i, turn in enumerate(turns):
        if turn.debater not in names:
            v.add(f"{path}[{i}].debater", f"unknown debater {turn.debater!r}")
        raw = turn.text
        cut = len(raw) > 2 * max_chars  # bounds the cleaning work on a huge turn
        text = clean_text(raw[: 2 * max_chars] if cut else raw, None, keep_newlines=True)
        if cut or len(text) > max_chars:
            text = text[: max_chars - len(TRUNCATION_MARK)].rstrip() + TRUNCATION_MARK
        cleaned.append(Turn(turn.debater, text))
    return tuple(cleaned)


def _panel(request: PanelRequest | Panel, debaters: int, policy: JudgePolicy, v: Violations) -> Panel:
    if isinstance(request, Panel):
        return request
    models = request.models or policy.default_models
    if len(models) > policy.max_panel:
        v.add("judge.models", f"at most {policy.max_panel} judge models, got {len(models)}")
    seen: dict[str, int] = {}
    for i, model in enumerate(request.models):
        path = f"judge.models[{i}]"
        if not model.strip():
            v.add(path, "must not be empty")
        elif model in seen:
            v.add(path, f"duplicate of judge.models[{seen[model]}]")
        elif not policy.model_allowed(model):
            v.add(path, f"model {model!r} is not allowed")
        seen.setdefault(model, i)

    k = request.orderings or policy.default_orderings or max(debaters, 1)
    limit = min(policy.max_orderings, distinct_orderings(debaters))
    if request.orderings < 0:
        v.add("judge.orderings", f"must not be negative, got {request.orderings}")
    elif request.orderings > limit:
        v.add("judge.orderings", f"at most {limit} orderings for {debaters} debaters, got {request.orderings}")
    k = max(1, min(k, limit))

    criteria = _criteria(request.criteria, policy, v)
    orderings = choose_orderings(debaters, k) if debaters >= 2 else ((0,),)
    return Panel(models=tuple(models), orderings=orderings, criteria=criteria)


def default_rubric() -> tuple[Criterion, ...]:
    """argument_strength, evidence, rebuttal and clarity, equally weighted."""
    return normalise_weights([Criterion(name, 1.0, text) for name, text in DEFAULT_CRITERIA])


def _criteria(criteria: Sequence[Criterion], policy: JudgePolicy, v: Violations) -> tuple[Criterion, ...]:
    if not criteria:
        return default_rubric()
    if len(criteria) > policy.max_criteria:
        v.add("judge.rubric.criteria", f"at most {policy.max_criteria} criteria, got {len(criteria)}")
    seen: dict[str, int] = {}
    cleaned: list[Criterion] = []
    for i, criterion in enumerate(criteria):
        path = f"judge.rubric.criteria[{i}]"
        if not _CRITERION_NAME.match(criterion.name):
            v.add(f"{path}.name", "must be 1 to 40 characters of a-z, 0-9 and _, starting with a letter")
        elif criterion.name in _RESERVED_CRITERIA:
            v.add(f"{path}.name", f"{criterion.name!r} is reserved")
        elif criterion.name in seen:
            v.add(f"{path}.name", f"duplicate of judge.rubric.criteria[{seen[criterion.name]}].name")
        seen.setdefault(criterion.name, i)
        if not math.isfinite(criterion.weight) or criterion.weight < 0:
            v.add(f"{path}.weight", f"must be a finite number >= 0, got {criterion.weight}")
        cleaned.append(
            Criterion(criterion.name, criterion.weight, clean_text(criterion.description, MAX_DESCRIPTION_LENGTH))
        )
    if v:
        return tuple(cleaned)
    return normalise_weights(cleaned)
