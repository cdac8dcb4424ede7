"""The finished pieces of a debate as terminal lines: a turn's footer, a round's score table,
the verdict and the cost table. `colour` gives a debater's colour index (the view's, so that a name keeps
its colour everywhere).
"""

from __future__ import annotations

from collections.abc import Callable

from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.client.style import Style, Wrapper, count, money, safe_text, table

Colour = Callable[[str], int]


def wrapped(s: Style, text: str, indent: str = "  ", *styles: str) -> list[str]:
    """`text` word-wrapped to the terminal's width under `indent`, painted with `styles`."""
    wrapper = Wrapper(s.width, indent, len(indent), lambda w: s.paint(w, *styles))
    return (wrapper.feed(safe_text(text)) + wrapper.finish()).rstrip("\n").split("\n") if text.strip() else []


def _dim(s: Style, text: str) -> str:
    return s.paint(text, "dim")


def _name(s: Style, colour: Colour, name: str, *extra: str) -> str:
    return s.debater(colour(name), name, *extra)


def turn_details(final: common_pb2.Turn) -> str:
    """The line under a finished turn: its tokens, its cost when not zero, why it ended early,
    and its attempt when not the first."""
    details = [f"{count(final.usage.completion_tokens)} tokens"]
    if final.cost.amount and any(c not in "0." for c in final.cost.amount):
        details.append(money(final.cost.amount, final.cost.currency_code))
    if final.finish_reason == common_pb2.FINISH_REASON_LENGTH:
        details.append("cut at the turn's token limit")
    elif final.finish_reason == common_pb2.FINISH_REASON_CANCELLED:
        details.append("cancelled")
    if final.attempt > 1:
        details.append(f"attempt {final.attempt}")
    return " · ".join(details)


def assessment_lines(
    s: Style,
    assessment: common_pb2.RoundAssessment,
    colour: Colour,
    cost: pb.CostUpdated | None,
    round_cost: common_pb2.CostLine | None = None,
) -> list[str]:
    """A round's score table: a row per criterion, the weighted totals, the leader, the judges'
    agreement, the rationale, what the round cost (its turns and the judge's calls: the cost
    table's line for the round) and the cost so far (the last CostUpdated, judge included)."""
    scores = list(assessment.scores)
    names = [score.debater for score in scores]
    criteria: list[str] = []
    for score in scores:
        criteria += [c.criterion for c in score.criteria if c.criterion not in criteria]
    by_debater = {score.debater: {c.criterion: c.score for c in score.criteria} for score in scores}
    rows = [
        [criterion.replace("_", " ")] + [f"{by_debater[n].get(criterion, 0):.1f}" for n in names]
        for criterion in criteria
    ]
    rows.append(["total"] + [f"{score.weighted_total:.2f}" for score in scores])
    total_row = len(rows) - 1

    def paint(row: int, column: int, cell: str) -> str:
        if row < 0:
            return s.debater(colour(names[column - 1]), cell, "bold") if column else s.paint(cell, "bold")
        if column == 0:
            return s.paint(cell, "bold") if row == total_row else cell
        name = names[column - 1]
        if row == total_row:
            return s.debater(colour(name), cell, "bold") if name == assessment.leader else s.paint(cell, "bold")
        return cell

    judges = ", ".join(assessment.judge_models)
    lines = [
        "",
        s.paint(f"  Round {assessment.round_number} scores", "bold")
        + (_dim(s, f"  judged by {judges}") if judges else ""),
    ]
    lines += table(s, ["criterion", *(n[:14] for n in names)], rows, paint=paint)
    star = s.glyph("★", "*")
    if assessment.tie or not assessment.leader:
        lines.append(f"  {star} " + s.paint("tie", "bold"))
    else:
        lines.append(f"  {star} leader: " + _name(s, colour, assessment.leader, "bold"))
    agreement = []
    if len(assessment.judge_models) > 1:
        agreement.append(f"judges agree {assessment.judge_agreement:.0%}")
    if assessment.ordering_agreement:
        agreement.append(f"orderings agree {assessment.ordering_agreement:.0%}")
    if agreement:
        lines.append(_dim(s, "  " + " · ".join(agreement)))
    lines += wrapped(s, assessment.rationale, "  ", "dim")
    return lines + _round_cost_lines(s, assessment.round_number, cost, round_cost)


def _round_cost_lines(
    s: Style, round_number: int, cost: pb.CostUpdated | None, round_cost: common_pb2.CostLine | None
) -> list[str]:
    """What the round cost (the cost table's line for it) and the running total, both with the
    judge's calls."""
    figures = []
    if round_cost is not None and round_cost.HasField("cost"):
        figures.append(f"round {round_number} cost {_cost_figure(round_cost.cost, round_cost.usage)}")
    if cost is not None and cost.HasField("total"):
        figures.append(f"cost so far {_cost_figure(cost.total, cost.usage)}")
    return [_dim(s, "  " + "; ".join(figures))] if figures else []


def _cost_figure(amount: common_pb2.Money, usage: common_pb2.TokenUsage) -> str:
    return f"{money(amount.amount, amount.currency_code)} · {count(usage.total_tokens)} tokens"


def verdict_lines(s: Style, verdict: common_pb2.Verdict, colour: Colour) -> list[str]:
    """The winner (or a tie), the confidence, a bar per debater's final score and the summary."""
    lines = ["", s.rule("Verdict")]
    if verdict.tie or not verdict.winner:
        lines.append("  " + s.paint("A tie", "bold"))
    else:
        lines.append(f"  {s.glyph('★', '*')} Winner: " + _name(s, colour, verdict.winner, "bold"))
    lines[-1] += _dim(s, f"   confidence {verdict.confidence:.0%}")
    if verdict.final_scores:
        width = max(len(f.debater) for f in verdict.final_scores)
        for final in verdict.final_scores:
            filled = round(max(0.0, min(10.0, final.score)) * 2)
            bar = s.debater(colour(final.debater), s.glyph("█", "#") * filled) + _dim(
                s, s.glyph("░", ".") * (20 - filled)
            )
            lines.append(f"  {_name(s, colour, final.debater.ljust(width))}  {bar}  {final.score:.2f}")
    lines.append("")
    lines += wrapped(s, verdict.summary)
    if verdict.judge_models:
        lines.append(_dim(s, f"  judged by {', '.join(verdict.judge_models)}"))
    return lines


def _price_notes(s: Style, cost: common_pb2.DebateCost, simulated: bool) -> list[str]:
    """Where the counts and prices come from: the simulated models' tokenizer counts, the other
    models' reported usage, and each price declared for an endpoint (LLM_ENDPOINTS)."""
    notes = []
    others = [line for line in cost.by_model if not line.key.startswith("sim/")]
    if simulated or len(others) < len(cost.by_model):
        counted = "every token count above comes" if not others else "their token counts come"
        notes.append("The built-in simulated models (sim/...) cost $0; " + counted)
        notes.append("from the real tokenizer, exactly as a paid model's would.")
    if others:
        notes.append("Other models' counts are the usage their providers reported.")
    for line in others:
        if line.price_source.startswith("declared-"):
            endpoint = line.price_source.removeprefix("declared-")
            notes.append(f"{line.key} is priced as declared for endpoint {endpoint!r} in LLM_ENDPOINTS.")
    return [_dim(s, "  " + note) for note in notes]


def cost_lines(s: Style, cost: common_pb2.DebateCost, simulated: bool) -> list[str]:
    """The cost table: by participant, role, round and model, the total and the budget."""
    rows: list[list[str] | str | None] = []

    def add(title: str, cost_lines, label=lambda key: key) -> None:
        if cost_lines:
            rows.append(title)
            rows.extend(
                [
                    f"  {label(line.key)}",
                    count(line.calls),
                    count(line.usage.prompt_tokens),
                    count(line.usage.completion_tokens),
                    count(line.usage.total_tokens),
                    money(line.cost.amount, line.cost.currency_code),
                ]
                for line in cost_lines
            )

    add("by participant", cost.by_participant)
    add("by role", cost.by_role, lambda key: key.removeprefix("ROLE_").lower())
    # round 0 holds what belongs to no round, the verdict: listed last
    by_round = sorted(cost.by_round, key=lambda line: (line.key == "0", int(line.key) if line.key.isdigit() else 0))
    add("by round", by_round, lambda key: ("verdict" if key == "0" else f"round {key}") if key.isdigit() else key)
    add("by model", cost.by_model)
    calls = sum(line.calls for line in cost.by_model) or sum(line.calls for line in cost.by_role)
    rows.append(None)
    rows.append(
        [
            "total",
            count(calls),
            count(cost.usage.prompt_tokens),
            count(cost.usage.completion_tokens),
            count(cost.usage.total_tokens),
            money(cost.total.amount, cost.total.currency_code),
        ]
    )
    last = len(rows) - 1
    lines = ["", s.rule("Cost")]
    lines += table(
        s,
        ["", "calls", "prompt tok", "completion tok", "total tok", "cost"],
        rows,
        paint=lambda r, c, cell: s.paint(cell, "bold") if r in (-1, last) else cell,
    )
    budget = cost.budget
    if budget.HasField("cap") and budget.cap.amount:
        lines.append(
            f"  budget {money(budget.cap.amount, budget.cap.currency_code)}: spent "
            f"{money(budget.spent.amount, budget.spent.currency_code)}, remaining "
            f"{money(budget.remaining.amount, budget.remaining.currency_code)}"
        )
    lines += _price_notes(s, cost, simulated)
    if cost.usage.estimated:
        lines.append(_dim(s, "  Some counts were estimated with our tokenizer: a provider reported no usage."))
    return lines
