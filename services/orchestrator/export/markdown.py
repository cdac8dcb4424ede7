"""The export as Markdown (CommonMark with GitHub's tables), to post as it is.

One function per part of the document, each returning its lines (none when the debate has no such
part), joined by `render_markdown` in reading order: the motion and the facts, the participants,
the verdicts, the audience's votes, an early stop, the transcript round by round (each turn with
its quotes marked, then the round's scores), the round scores at a glance, and the cost tables.

Text from the debate is escaped: names, personas and the topic are shown as written, never as
Markdown; a turn keeps the Markdown its model wrote (lists, emphasis), set in a block quote, with
every '<' written as an entity, so no HTML of a model's reaches the page it is posted on. Amounts
are the ledger's exact decimal strings, in columns headed "(USD)".
"""

from __future__ import annotations

import re

from services.common.text import plural
from services.orchestrator.export.model import (
    Assessment,
    CostLine,
    EarlyStop,
    ExportDocument,
    Money,
    Quote,
    Tokens,
    Turn,
    Verdict,
    Votes,
    segments,
    unquoted,
)

QUOTE_MARKS = {"verified": "✅", "partial": "〜", "unverified": "❌"}
VERDICT_REASONS = {"debate_end": "at the end", "rejudge": "re-judged", "continuation": "after more rounds"}
_SYNTAX = re.compile(r"([\\`*_\[\]<>|~])")  # what is syntax anywhere on a line (| in a table)
_LINE_START = re.compile(r"^([#+\-=]|\d+(?=[.)]))")  # syntax at the start of a line only (a list's "1.")
_STATE_WORDS = {"budget_exceeded": "Budget exceeded"}


def inline(text: str) -> str:
    """Text shown as written on one line of Markdown (a table cell, a heading): line breaks become
    spaces and every character Markdown could read as syntax is escaped."""
    text = _SYNTAX.sub(r"\\\1", " ".join(text.split()))
    match = _LINE_START.match(text)
    if match is None:
        return text
    if match.group(1)[0].isdigit():
        return text[: match.end()] + "\\" + text[match.end() :]  # 1. -> 1\.
    return "\\" + text


def amount(value: Money) -> str:
    """An exact amount with its currency: "0.000105 USD"."""
    return f"{value.amount} {value.currency_code}"


def count(value: int) -> str:
    return f"{value:,}"


def table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    """A GitHub table; `align` has an 'l' or 'r' per column."""
    rule = ["---:" if a == "r" else "---" for a in align]
    return [f"| {' | '.join(line)} |" for line in [header, rule, *rows]]


def state_word(state: str) -> str:
    return _STATE_WORDS.get(state, state.replace("_", " ").capitalize())


# ==== the parts ===================================================================================


def header(doc: ExportDocument) -> list[str]:
    s = doc.settings
    played = len([r for r in doc.rounds if r.turns])
    facts = [
        f"**{state_word(doc.state)}**",
        f"{played} of {s.round_limit} rounds" if played != s.round_limit else f"{s.round_limit} rounds",
        f"{s.turn_order} turns",
        f"judged by {', '.join(f'`{m}`' for m in s.judge_models) or 'the default judge'}",
        f"cost {amount(doc.cost.total)}",
    ]
    if s.budget is not None:
        facts.append(f"budget {amount(s.budget)}")
    lines = [f"# {inline(doc.topic)}", "", " · ".join(facts) + "  "]
    lines.append(f"Debate `{doc.debate_id}`, created {_when(doc.created_at)}, exported from the Debate Engine.")
    if doc.end_reason and doc.state != "completed":
        lines += ["", f"> **Ended:** {inline(doc.end_reason)}"]
    return lines


def _when(rfc3339: str) -> str:
    """ "2026-11-30T11:12:13.456Z" -> "2026-11-30 11:12 UTC"."""
    return f"{rfc3339[:10]} {rfc3339[11:16]} UTC" if len(rfc3339) >= 16 else "—"


def participants(doc: ExportDocument) -> list[str]:
    rows = [
        [
            f"**{inline(p.name)}**",
            inline(p.stance) or "—",
            "a person" if p.human else f"`{p.model}`",
            inline(p.persona) or "—",
        ]
        for p in doc.participants
    ]
    return ["## Participants", "", *table(["Debater", "Stance", "Model", "Persona"], rows, "llll")]


def verdicts(doc: ExportDocument) -> list[str]:
    if not doc.verdicts:
        return []
    if len(doc.verdicts) == 1:
        return ["## Verdict", "", *verdict(doc.verdicts[0])]
    lines = ["## Verdicts", "", f"{len(doc.verdicts)} versions, the latest first; the debate stands by the latest."]
    for v in reversed(doc.verdicts):
        why = VERDICT_REASONS.get(v.reason, "")
        lines += ["", f"### Version {v.version}{f' · {why}' if why else ''}{' (current)' if v.current else ''}"]
        lines += ["", *verdict(v)]
    return lines


def verdict(v: Verdict) -> list[str]:
    decision = "**A tie**" if v.tie else f"**{inline(v.winner)} wins**"
    lines = [f"{decision}, with confidence {v.confidence:.2f}.", ""]
    if v.summary:
        lines += [inline(v.summary), ""]
    rows = [[inline(s.debater), f"{s.score:.2f}"] for s in v.final_scores]
    lines += table(["Debater", "Final score (0-10)"], rows, "lr")
    judges = ", ".join(f"`{m}`" for m in v.judge_models)
    lines += [
        "",
        f"Judged by {judges or 'the default judge'} · ordering agreement {v.ordering_agreement:.2f} · "
        f"judge agreement {v.judge_agreement:.2f}" + (" · simulated" if v.simulated else ""),
    ]
    return lines


def votes(doc: ExportDocument) -> list[str]:
    tally: Votes | None = doc.votes
    if tally is None:
        return []
    rows = [
        ["Tie" if c.choice == "tie" else inline(c.choice), count(c.votes), f"{100 * c.votes / tally.total:.0f}%"]
        for c in tally.counts
    ]
    return [
        "## Audience votes",
        "",
        f"{count(tally.total)} votes, one per voter.",
        "",
        *table(["Choice", "Votes", "Share"], rows, "lrr"),
    ]


def early_stop(doc: ExportDocument) -> list[str]:
    stop: EarlyStop | None = doc.stop
    if stop is None:
        return []
    saved = f"{plural(stop.rounds_not_played, 'round')} not played"
    if stop.cost_avoided is not None:
        saved += f", about {amount(stop.cost_avoided)} not spent"
    lines = [
        "## Stopped early",
        "",
        f"The rule **{inline(stop.rule.replace('_', ' '))}** ended the debate after round {stop.after_round}: {saved}.",
    ]
    return lines + (["", inline(stop.reason)] if stop.reason else [])


def transcript(doc: ExportDocument) -> list[str]:
    stances = {p.name: p.stance for p in doc.participants}
    lines = ["## Transcript"]
    for r in doc.rounds:
        lines += ["", f"### Round {r.number}"]
        for t in r.turns:
            lines += ["", *turn(t, stances.get(t.participant, ""))]
        if r.assessment is not None:
            lines += ["", *round_scores(r.number, r.assessment)]
    if not doc.rounds:
        lines += ["", "_No turn yet._"]
    return lines


def turn(t: Turn, stance: str) -> list[str]:
    about = [f"**{inline(t.participant)}**" + (f" ({inline(stance)})" if stance else "")]
    about.append("a person" if t.human is not None else f"`{t.model}`")
    about += [f"{count(t.usage.total_tokens)} tokens", amount(t.cost)]
    if t.finish_reason == "length":
        about.append("cut at the turn's token limit")
    elif t.finish_reason not in ("stop", "unspecified"):
        about.append(t.finish_reason)
    lines = [" · ".join(about), ""]
    if t.human is not None and t.human.skipped:
        return [*lines, f"> _No turn: {inline(t.human.skip_reason.lower() or 'skipped')}._"]
    body = "".join(_quoted(text, quote) if quote else text for text, quote in segments(t)).replace("<", "&lt;")
    lines += [f"> {line}".rstrip() for line in (body.strip() or "(empty)").splitlines()]
    if t.quotes:
        lines += ["", *quote_list(t.quotes)]
    return lines


def _quoted(words: str, quote: Quote) -> str:
    return f"“{words}” {QUOTE_MARKS[quote.status]}"


def quote_list(quotes: list[Quote]) -> list[str]:
    lines = []
    for q in quotes:
        line = f"- {QUOTE_MARKS[q.status]} {q.status}: “{inline(unquoted(q.text))}”"
        if q.source_id:
            line += f" ({inline(q.source_id)})"
        if q.status == "partial" and q.best_match:
            line += f"; the source says “{inline(unquoted(q.best_match))}” ({q.score:.0f}/100)"
        lines.append(line)
    return lines


def round_scores(number: int, a: Assessment) -> list[str]:
    criteria = [c.criterion for c in a.scores[0].criteria] if a.scores else []
    header_row = ["Debater", *[c.replace("_", " ") for c in criteria], "Total"]
    rows = []
    for s in a.scores:
        by_name = {c.criterion: c.score for c in s.criteria}
        rows.append([inline(s.debater), *[f"{by_name.get(c, 0):.1f}" for c in criteria], f"**{s.weighted_total:.2f}**"])
    leader = "a tie" if a.tie else f"leader **{inline(a.leader)}**"
    return [
        f"**Round {number} scores** (0-10) · {leader}",
        "",
        *table(header_row, rows, "l" + "r" * (len(header_row) - 1)),
        "",
        f"_{inline(a.rationale)}_" if a.rationale else "",
    ]


def scores_at_a_glance(doc: ExportDocument) -> list[str]:
    judged = [r for r in doc.rounds if r.assessment is not None]
    if not judged:
        return []
    names = [p.name for p in doc.participants]
    rows = []
    for r in judged:
        assert r.assessment is not None
        totals = {s.debater: s.weighted_total for s in r.assessment.scores}
        leader = "tie" if r.assessment.tie else inline(r.assessment.leader)
        rows.append([str(r.number), *[f"{totals[n]:.2f}" if n in totals else "—" for n in names], leader])
    return [
        "## Round scores",
        "",
        *table(["Round", *[inline(n) for n in names], "Leader"], rows, "r" + "r" * len(names) + "l"),
    ]


def cost(doc: ExportDocument) -> list[str]:
    c = doc.cost
    lines = ["## Cost", "", f"**Total: {amount(c.total)}** · {_tokens(c.usage)}"]
    if c.budget is not None:
        b = c.budget
        lines += [
            "",
            f"Budget {amount(b.cap)}: spent {amount(b.spent)}, reserved {amount(b.reserved)}, "
            f"remaining {amount(b.remaining)}.",
        ]
    for title, cost_lines, key in (
        ("By participant", c.by_participant, "Participant"),
        ("By role", c.by_role, "Role"),
        ("By round (round 0 is the verdict)", c.by_round, "Round"),
    ):
        if cost_lines:
            lines += ["", f"### {title}", "", *cost_table(key, cost_lines)]
    if c.by_model:
        lines += ["", "### By model", "", *cost_table("Model", c.by_model, price_source=True)]
    return lines


def _tokens(usage: Tokens) -> str:
    text = f"{count(usage.total_tokens)} tokens ({count(usage.prompt_tokens)} prompt, "
    text += f"{count(usage.completion_tokens)} completion)"
    return text + (", some estimated" if usage.estimated else "")


def cost_table(key: str, cost_lines: list[CostLine], *, price_source: bool = False) -> list[str]:
    header_row = [key, "Calls", "Prompt tokens", "Completion tokens", f"Cost ({cost_lines[0].cost.currency_code})"]
    rows = [
        [
            f"`{line.key}`" if price_source else inline(line.key),
            count(line.calls),
            count(line.usage.prompt_tokens),
            count(line.usage.completion_tokens),
            line.cost.amount,
        ]
        for line in cost_lines
    ]
    if price_source:
        header_row.append("Price source")
        for row, line in zip(rows, cost_lines, strict=True):
            row.append(inline(line.price_source) or "—")
    return table(header_row, rows, "lrrrr" + ("l" if price_source else ""))


PARTS = (header, participants, verdicts, votes, early_stop, transcript, scores_at_a_glance, cost)


def render_markdown(doc: ExportDocument) -> str:
    """The document as Markdown: its PARTS in order, a blank line between two."""
    blocks = ["\n".join(lines) for lines in (part(doc) for part in PARTS) if lines]
    return "\n\n".join(blocks).rstrip() + "\n"
