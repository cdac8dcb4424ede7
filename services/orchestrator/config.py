"""Validation and normalisation of a debate config.

`validate_config` reports every problem at once (one field violation each, with paths such
as "config.participants[1].name") and returns a normalised copy: defaults filled in, text
cleaned of control, zero-width and bidirectional characters, the budget in plain decimal
("100", never "1E+2"). Nothing is stored on failure.

What can be known before money is spent is checked here with the rules the judge and
accounting apply too (services/common/debate_rules.py, services/common/money.py): the judge's
rules, every model allowed and priced with its fallbacks, the budget's form and range; then a
provider key missing from the environment raises FAILED_PRECONDITION naming the variable.
"""

from __future__ import annotations

import re

from debate.common.v1 import common_pb2

from services.common.debate_rules import JudgeLimits, MissingKeys, ModelRules, check_judge, check_source_sizes
from services.common.errors import Violations
from services.common.limits import MAX_SOURCE_ID_CHARS, MAX_SOURCE_TITLE_CHARS, SOURCES_WINDOW_SHARE
from services.common.money import CURRENCY, format_amount, read_money
from services.common.quotes import sources_message
from services.common.text import clean_text
from services.common.tokens import count_text_tokens
from services.orchestrator.human_seat import check_config as check_human_seat
from services.orchestrator.human_seat import is_human
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.stopping import check_stopping

# Names end up in idempotency keys ("debates/{id}/rounds/{r}/turns/{name}/attempts/{a}"),
# so no slash and no surrounding space.
_NAME = re.compile(r"^[\w][\w .\-]{0,62}[\w.\-]$|^[\w]$")


class Limits:
    """The bounds a config is validated against (taken from the settings)."""

    def __init__(self, settings: OrchestratorSettings) -> None:
        self.max_participants = settings.max_participants
        self.max_rounds = settings.max_rounds
        self.max_topic_chars = settings.max_topic_chars
        self.max_persona_chars = settings.max_persona_chars
        self.max_stance_chars = settings.max_stance_chars
        self.max_tokens_per_turn = settings.max_tokens_per_turn_limit
        self.default_max_tokens_per_turn = settings.default_max_tokens_per_turn
        self.default_window_size = settings.default_window_size
        self.default_context_tokens = settings.default_context_tokens
        self.max_context_tokens = settings.max_context_tokens
        self.default_judge_model = settings.default_judge_model


def validate_config(
    config: common_pb2.DebateConfig,
    limits: Limits,
    rules: ModelRules,
    *,
    path: str = "config",
) -> common_pb2.DebateConfig:
    """Returns the normalised config, or raises InvalidArgument listing every problem, then
    ProviderKeyMissing (FAILED_PRECONDITION) naming each provider key the debate needs and the
    environment lacks. `rules` says which models are allowed, priced and keyed."""
    v = Violations()
    keys = MissingKeys()
    out = common_pb2.DebateConfig()
    out.CopyFrom(config)
    _check_topic(config, out, limits, v, path)
    _check_participants(config, out, limits, rules, v, keys, path)
    _check_judge(config, out, limits, rules, v, keys, path)
    _check_format(config, out, limits, v, path)
    _check_context(config, out, limits, v, path)
    _check_budget(config, out, v, path)
    _check_sources(config, out, v, path)
    check_human_seat(config, out, v, path)
    check_stopping(config, out, v, path)
    v.raise_if_any()
    keys.raise_if_any()
    return out


def _check_topic(
    config: common_pb2.DebateConfig, out: common_pb2.DebateConfig, limits: Limits, v: Violations, path: str
) -> None:
    topic = clean_text(config.topic)
    if not topic:
        v.add(f"{path}.topic", "must not be empty")
    elif len(topic) > limits.max_topic_chars:
        v.add(f"{path}.topic", f"must be at most {limits.max_topic_chars} characters")
    out.topic = topic


def _check_participants(
    config: common_pb2.DebateConfig,
    out: common_pb2.DebateConfig,
    limits: Limits,
    rules: ModelRules,
    v: Violations,
    keys: MissingKeys,
    path: str,
) -> None:
    n = len(config.participants)
    if not 2 <= n <= limits.max_participants:
        v.add(f"{path}.participants", f"must have 2 to {limits.max_participants} debaters, got {n}")
    seen: dict[str, int] = {}
    for i, participant in enumerate(config.participants):
        p = f"{path}.participants[{i}]"
        target = out.participants[i]
        target.name = _check_name(participant.name, seen, i, v, f"{p}.name")
        if not is_human(participant.model):  # a human seat calls no model: no allowlist, price or key
            rules.check(participant.model, f"{p}.model", v, keys)
        persona = clean_text(participant.persona)
        if len(persona) > limits.max_persona_chars:
            v.add(f"{p}.persona", f"must be at most {limits.max_persona_chars} characters")
        target.persona = persona
        stance = clean_text(participant.stance)
        if len(stance) > limits.max_stance_chars:
            v.add(f"{p}.stance", f"must be at most {limits.max_stance_chars} characters")
        target.stance = stance


def _check_name(raw: str, seen: dict[str, int], index: int, v: Violations, field: str) -> str:
    """The cleaned name; `seen` (casefolded name -> index) records it when it is valid and new."""
    name = clean_text(raw)
    if not name:
        v.add(field, "must not be empty")
    elif not _NAME.match(name):
        v.add(field, "must be 1 to 64 letters, digits, spaces, '.', '_' or '-', not starting or ending with a space")
    elif name.casefold() in seen:
        v.add(field, f"duplicates participants[{seen[name.casefold()]}].name")
    else:
        seen[name.casefold()] = index
    return name


def _check_judge(
    config: common_pb2.DebateConfig,
    out: common_pb2.DebateConfig,
    limits: Limits,
    rules: ModelRules,
    v: Violations,
    keys: MissingKeys,
    path: str,
) -> None:
    """The judge's own rules, so that the judge never refuses a round the debaters were paid for."""
    _judge_rules(config.judge, len(config.participants), limits, rules, v, keys, f"{path}.judge")
    if not config.judge.models:
        out.judge.models.append(limits.default_judge_model)


def _judge_rules(
    judge: common_pb2.JudgeConfig,
    debaters: int,
    limits: Limits,
    rules: ModelRules,
    v: Violations,
    keys: MissingKeys,
    path: str,
) -> None:
    check_judge(
        v,
        keys,
        models=judge.models,
        orderings=judge.orderings,
        criteria=judge.rubric.criteria,
        debaters=debaters,
        rules=rules,
        limits=JudgeLimits(),
        path=path,
        default_models=(limits.default_judge_model,),
    )


def validate_judge(
    judge: common_pb2.JudgeConfig, debaters: int, limits: Limits, rules: ModelRules, *, path: str = "judge"
) -> common_pb2.JudgeConfig:
    """A judge config on its own (a re-judging's, verdicts.py), by the rules of a new debate's
    judge for `debaters` debaters: the normalised config, or InvalidArgument / ProviderKeyMissing
    as validate_config raises them, under `path`."""
    v = Violations()
    keys = MissingKeys()
    _judge_rules(judge, debaters, limits, rules, v, keys, path)
    v.raise_if_any()
    keys.raise_if_any()
    out = common_pb2.JudgeConfig()
    out.CopyFrom(judge)
    if not out.models:
        out.models.append(limits.default_judge_model)
    return out


_TURN_ORDERS = (
    common_pb2.TURN_ORDER_UNSPECIFIED,
    common_pb2.TURN_ORDER_SIMULTANEOUS,
    common_pb2.TURN_ORDER_SEQUENTIAL,
)


def _check_format(
    config: common_pb2.DebateConfig, out: common_pb2.DebateConfig, limits: Limits, v: Violations, path: str
) -> None:
    rounds = config.format.round_limit
    if not 1 <= rounds <= limits.max_rounds:
        v.add(f"{path}.format.round_limit", f"must be 1 to {limits.max_rounds}, got {rounds}")
    if config.format.turn_order not in _TURN_ORDERS:
        v.add(f"{path}.format.turn_order", "unknown turn order")
    if config.format.turn_order == common_pb2.TURN_ORDER_UNSPECIFIED:
        out.format.turn_order = common_pb2.TURN_ORDER_SIMULTANEOUS


def _check_context(
    config: common_pb2.DebateConfig, out: common_pb2.DebateConfig, limits: Limits, v: Violations, path: str
) -> None:
    """The context window and the tokens of a turn (0: the default)."""
    ctx = config.context
    if ctx.max_tokens == 0:
        out.context.max_tokens = limits.default_context_tokens
    elif not 64 <= ctx.max_tokens <= limits.max_context_tokens:
        v.add(f"{path}.context.max_tokens", f"must be 64 to {limits.max_context_tokens} (0: default)")
    if ctx.window_size == 0:
        out.context.window_size = limits.default_window_size
    elif not 1 <= ctx.window_size <= 100:
        v.add(f"{path}.context.window_size", "must be 1 to 100 (0: default)")

    if config.max_tokens_per_turn == 0:
        out.max_tokens_per_turn = limits.default_max_tokens_per_turn
    elif not 1 <= config.max_tokens_per_turn <= limits.max_tokens_per_turn:
        v.add(f"{path}.max_tokens_per_turn", f"must be 1 to {limits.max_tokens_per_turn} (0: default)")


def _check_budget(config: common_pb2.DebateConfig, out: common_pb2.DebateConfig, v: Violations, path: str) -> None:
    """A positive USD amount in plain decimal (services/common/money.py), stored as "100", never "1E+2"."""
    if not config.HasField("budget"):
        return
    amount = read_money(config.budget, f"{path}.budget", v, positive=True)
    if amount is not None:
        out.budget.currency_code = CURRENCY
        out.budget.amount = format_amount(amount)


_SOURCE_ID = re.compile(rf"^[A-Za-z0-9._-]{{1,{MAX_SOURCE_ID_CHARS}}}$")


def _check_sources(config: common_pb2.DebateConfig, out: common_pb2.DebateConfig, v: Violations, path: str) -> None:
    """The evidence documents: their sizes (services/common/debate_rules.py, the judge's rules too);
    each with a unique id of letters, digits, '.', '_' or '-', a title of at most
    MAX_SOURCE_TITLE_CHARS characters and a text, cleaned (newlines kept), not empty; and, as every
    debater's prompt carries them, at most SOURCES_WINDOW_SHARE of the context window in each
    debater model's tokens. Runs after _check_context (the window's default filled in)."""
    if not config.sources:
        return
    before = len(v.items)
    seen: dict[str, int] = {}
    for i, source in enumerate(config.sources):
        _check_source(i, source, out.sources[i], seen, v, path)
    if not check_source_sizes(v, [s.text for s in out.sources], f"{path}.sources"):
        return
    if len(v.items) > before or not out.context.max_tokens:
        return
    allowed = int(out.context.max_tokens * SOURCES_WINDOW_SHARE)
    message = sources_message(out.sources)
    for model in dict.fromkeys(p.model for p in out.participants):
        tokens = count_text_tokens(model, message)
        if tokens > allowed:
            v.add(
                f"{path}.sources",
                f"take {tokens} tokens of {model}, more than half the context window"
                f" (context.max_tokens {out.context.max_tokens}) allows: {allowed}",
            )
            break


def _check_source(
    i: int,
    source: common_pb2.SourceDocument,
    target: common_pb2.SourceDocument,
    seen: dict[str, int],
    v: Violations,
    path: str,
) -> None:
    """Checks and cleans one document into `target` (its size: check_source_sizes)."""
    p = f"{path}.sources[{i}]"
    target.id = source.id.strip()
    if not _SOURCE_ID.match(target.id):
        v.add(f"{p}.id", f"must be 1 to {MAX_SOURCE_ID_CHARS} letters, digits, '.', '_' or '-'")
    elif target.id in seen:
        v.add(f"{p}.id", f"duplicates sources[{seen[target.id]}].id")
    else:
        seen[target.id] = i
    target.title = clean_text(source.title)
    if len(target.title) > MAX_SOURCE_TITLE_CHARS:
        v.add(f"{p}.title", f"must be at most {MAX_SOURCE_TITLE_CHARS} characters")
    target.text = clean_text(source.text, keep_newlines=True)
    if not target.text:
        v.add(f"{p}.text", "must not be empty")
