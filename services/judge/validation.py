"""Checks and cleans a judge request: every problem becomes one field violation, all at once.

Field paths follow the protobuf request (`debaters[1].name`, `judge.rubric.criteria[0].weight`)
so a caller can point at what to fix. The rules of a JudgeConfig (models allowed, priced and
keyed, panel size, orderings, criterion names and weights) are the shared ones of
services/common/debate_rules.py, which the orchestrator applies at CreateDebate too; a missing
provider key is FAILED_PRECONDITION, raised after the violations. Free text (topic, stance, persona, criterion
descriptions, turns) is cleaned of control, zero-width and bidirectional characters and cut
to a bounded length; names are identifiers and are refused, not altered, when unclean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from services.common.debate_rules import JudgeLimits, MissingKeys, check_judge, check_source_sizes, most_orderings
from services.common.errors import Violations
from services.common.limits import MAX_SOURCE_TITLE_CHARS
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
    QuoteCheck,
    Round,
    RoundCase,
    Source,
    Turn,
    VerdictCase,
)
from services.judge.output import SCORE_MAX, SCORE_MIN

MAX_DESCRIPTION_LENGTH = 300
# A quote, or its best match, as the judge's prompt shows it.
MAX_QUOTE_SHOWN_CHARS = 300
TRUNCATION_MARK = " [...]"


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
    sources = _sources(case.sources, v)
    keys = MissingKeys()
    panel = _panel(case.panel, len(debaters), policy, v, keys)
    v.raise_if_any()
    keys.raise_if_any()
    return replace(case, topic=topic, debaters=debaters, turns=turns, panel=panel, sources=sources)


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
    sources = _sources(case.sources, v)
    keys = MissingKeys()
    panel = _panel(case.panel, len(debaters), policy, v, keys)
    v.raise_if_any()
    keys.raise_if_any()
    ordered = tuple(sorted(rounds, key=lambda r: r.number))
    return replace(case, topic=topic, debaters=debaters, rounds=ordered, panel=panel, sources=sources)


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
        cleaned.append(Turn(turn.debater, text, _quotes(turn.quotes, f"{path}[{i}].quotes", v)))
    return tuple(cleaned)


_QUOTE_STATUSES = ("verified", "partial", "unverified")


def _quotes(quotes: Sequence[QuoteCheck], path: str, v: Violations) -> tuple[QuoteCheck, ...]:
    """A turn's quote checks, their texts cleaned and cut to MAX_QUOTE_SHOWN_CHARS."""
    cleaned = []
    for i, quote in enumerate(quotes):
        if quote.status not in _QUOTE_STATUSES:
            v.add(f"{path}[{i}].status", "must be verified, partial or unverified")
        cleaned.append(
            replace(
                quote,
                text=clean_text(quote.text[: 2 * MAX_QUOTE_SHOWN_CHARS], MAX_QUOTE_SHOWN_CHARS),
                source_id=clean_text(quote.source_id, 64),
                best_match=clean_text(quote.best_match[: 2 * MAX_QUOTE_SHOWN_CHARS], MAX_QUOTE_SHOWN_CHARS),
            )
        )
    return tuple(cleaned)


def _sources(sources: Sequence[Source], v: Violations) -> tuple[Source, ...]:
    """The documents within the shared bounds (services/common/debate_rules.py), cleaned."""
    if not check_source_sizes(v, [source.text for source in sources]):
        return ()
    return tuple(
        Source(
            clean_text(source.id, 64),
            clean_text(source.title, MAX_SOURCE_TITLE_CHARS),
            clean_text(source.text, None, keep_newlines=True),
        )
        for source in sources
    )


def _panel(
    request: PanelRequest | Panel, debaters: int, policy: JudgePolicy, v: Violations, keys: MissingKeys
) -> Panel:
    """The judge's rules are the shared ones (services/common/debate_rules.py), which the
    orchestrator also applies when a debate is created; here they resolve into a Panel."""
    if isinstance(request, Panel):
        return request
    limits = JudgeLimits(
        max_panel=policy.max_panel, max_orderings=policy.max_orderings, max_criteria=policy.max_criteria
    )
    check_judge(
        v,
        keys,
        models=request.models,
        orderings=request.orderings,
        criteria=request.criteria,
        debaters=debaters,
        rules=policy.model_rules,
        limits=limits,
        default_models=policy.default_models,
    )
    models = request.models or policy.default_models
    k = request.orderings or policy.default_orderings or max(debaters, 1)
    k = max(1, min(k, most_orderings(debaters, limits)))
    criteria = _criteria(request.criteria, v)
    orderings = choose_orderings(debaters, k) if debaters >= 2 else ((0,),)
    return Panel(models=tuple(models), orderings=orderings, criteria=criteria)


def default_rubric() -> tuple[Criterion, ...]:
    """argument_strength, evidence, rebuttal and clarity, equally weighted."""
    return normalise_weights([Criterion(name, 1.0, text) for name, text in DEFAULT_CRITERIA])


def _criteria(criteria: Sequence[Criterion], v: Violations) -> tuple[Criterion, ...]:
    """The rubric with descriptions cleaned and, when the request is valid, weights normalised."""
    if not criteria:
        return default_rubric()
    cleaned = [
        Criterion(criterion.name, criterion.weight, clean_text(criterion.description, MAX_DESCRIPTION_LENGTH))
        for criterion in criteria
    ]
    if v:
        return tuple(cleaned)
    return normalise_weights(cleaned)
