"""The verdict history of a debate as terminal text (tables of `panels`' style): what the
`rejudge` and `continue` commands (verdicts.py) and the live view (view.py) show of verdict
versions."""

from __future__ import annotations

from collections.abc import Sequence

from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.client.style import Style, money, safe_text, table

REASONS = {
    pb.VERDICT_REASON_DEBATE_END: "debate end",
    pb.VERDICT_REASON_REJUDGE: "re-judged",
    pb.VERDICT_REASON_CONTINUATION: "continued",
}


def _winner(verdict: common_pb2.Verdict) -> str:
    return "tie" if verdict.tie or not verdict.winner else safe_text(verdict.winner)


def judge_text(judge: common_pb2.JudgeConfig) -> str:
    text = ", ".join(safe_text(m) for m in judge.models)
    if judge.orderings > 1:
        text += f" ×{judge.orderings}"
    if judge.rubric.criteria:
        text += " (" + "/".join(safe_text(c.name) for c in judge.rubric.criteria) + ")"
    return text


def agreement_text(agreement: pb.VerdictAgreement) -> str:
    """'same winner, τ 0.33' style: the winner's agreement and the rank correlation."""
    same = "same winner" if agreement.same_winner else "other winner"
    return f"{same}, τ {agreement.rank_correlation:+.2f}"


def history_lines(style: Style, versions: Sequence[pb.VerdictVersion]) -> list[str]:
    """The verdict history: a row per version (number, reason, winner, confidence, judge,
    agreement with version 1, cost), the latest marked."""
    rows = []
    last = max((v.version for v in versions), default=0)
    for v in versions:
        rows.append(
            [
                f"v{v.version}" + (" *" if v.version == last else ""),
                REASONS.get(v.reason, "?") + (f" (rounds {v.first_round}-{v.round_count})" if v.first_round else ""),
                _winner(v.verdict),
                f"{v.verdict.confidence:.0%}",
                judge_text(v.judge),
                agreement_text(v.agreement) if v.HasField("agreement") else "",
                money(v.cost.cost.amount, v.cost.cost.currency_code or "USD") if v.HasField("cost") else "",
            ]
        )
    lines = ["", style.rule("Verdict history")]
    lines += table(style, ["version", "why", "winner", "conf.", "judge", "vs v1", "cost"], rows, align="lllrlll")
    return lines


def version_lines(style: Style, rendered: pb.VerdictVersion) -> list[str]:
    """One new version as the live view announces it."""
    head = f"Verdict version {rendered.version} ({REASONS.get(rendered.reason, '?')} by {judge_text(rendered.judge)})"
    lines = ["", style.paint(head, "bold"), f"  winner: {_winner(rendered.verdict)}"]
    if rendered.HasField("agreement"):
        lines.append(f"  against version 1: {agreement_text(rendered.agreement)}")
    return lines
