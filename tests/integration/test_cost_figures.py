"""One source for every figure of cost and tokens (issue 20, item 4): against the three real
services, each round's RoundAssessed carries the round's cost (its turns and the judge's calls
that scored it), equal to the round's line in the final breakdown (GetDebate's cost.by_round,
from accounting's ledger); the running total a client holds when the scores arrive already
counts that round's judge calls; the last running total equals the breakdown's total. The
terminal client prints exactly those figures, so what it says after each round agrees with the
cost table it prints at the end."""

from __future__ import annotations

import io
import re

import pytest
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.client.style import Style
from services.client.view import DebateView
from tests.integration.test_orchestrator_suite import Client, debate_config
from tests.integration.test_orchestrator_suite import suite as suite  # the fixture: the three services

PLAIN = Style(color=False, unicode=True, width=100, live=False)


def figures(line: c.CostLine | pb.CostUpdated) -> tuple[str, int]:
    """(USD amount, total tokens) of a cost line or a running total."""
    if isinstance(line, pb.CostUpdated):
        return line.total.amount, line.usage.total_tokens
    return line.cost.amount, line.usage.total_tokens


@pytest.mark.parametrize(
    ("debaters", "turn_order"),
    [(2, c.TURN_ORDER_SIMULTANEOUS), (3, c.TURN_ORDER_SEQUENTIAL)],
)
async def test_each_rounds_figures_agree_with_the_cost_breakdown(suite, debaters, turn_order):
    client = Client(suite.orchestrator_address)
    try:
        await _check_figures(client, debaters, turn_order)
    finally:
        await client.channel.close()


async def _check_figures(client: Client, debaters: int, turn_order: int) -> None:
    cfg = debate_config(n=debaters, rounds=3)
    cfg.format.turn_order = turn_order
    debate_id, _ = await client.create_and_start(cfg)
    events = await client.events(debate_id)
    assert events[-1].WhichOneof("payload") == "debate_completed"
    debate = await client.get(debate_id)
    breakdown = debate.cost
    by_round = {line.key: line for line in breakdown.by_round}
    assert set(by_round) == {"0", "1", "2", "3"}  # three rounds and the verdict

    running: pb.CostUpdated | None = None
    seen_rounds: list[int] = []
    for event in events:
        kind = event.WhichOneof("payload")
        if kind == "cost_updated":
            if running is not None:  # never goes down
                assert event.cost_updated.usage.total_tokens >= running.usage.total_tokens
            running = event.cost_updated
        elif kind == "round_assessed":
            r = event.round_assessed.assessment.round_number
            seen_rounds.append(r)
            line = event.round_assessed.round_cost
            final = by_round[str(r)]
            assert (line.key, line.calls, figures(line)) == (final.key, final.calls, figures(final))
            assert line.usage.prompt_tokens == final.usage.prompt_tokens
            # The running total shown beside the scores counts this round's judge calls, and
            # every earlier round whole.
            assert running is not None
            done = sum(by_round[str(n)].usage.total_tokens for n in range(1, r + 1))
            assert running.usage.total_tokens >= done
        elif kind == "verdict_rendered":
            line = event.verdict_rendered.verdict_cost
            assert figures(line) == figures(by_round["0"]) and line.calls == by_round["0"].calls
            assert running is not None and running.usage.total_tokens == breakdown.usage.total_tokens
    assert seen_rounds == [1, 2, 3]
    # The judge's calls are in the round lines: a round took more tokens than its turns.
    for round_ in debate.rounds:
        turns = sum(turn.usage.total_tokens for turn in round_.turns)
        assert by_round[str(round_.round_number)].usage.total_tokens > turns > 0
    assert running is not None and figures(running) == (breakdown.total.amount, breakdown.usage.total_tokens)
    completed = events[-1].debate_completed.cost
    assert figures(running) == (completed.total.amount, completed.usage.total_tokens)

    # The terminal client: the figures it prints after each round and the cost table it ends with.
    out = io.StringIO()
    view = DebateView(out, PLAIN, participants=cfg.participants, round_limit=3)
    for event in events:
        view.handle(event)
    view.close()
    text = out.getvalue()
    printed = re.findall(r"round (\d+) cost \$([\d.,]+) · ([\d,]+) tokens; cost so far \$([\d.,]+) · ([\d,]+)", text)
    assert [int(r) for r, *_ in printed] == [1, 2, 3], text
    table = {
        m.group(1): int(m.group(2).replace(",", ""))
        for m in re.finditer(r"^\s+round (\d+)\s+\d+\s+[\d,]+\s+[\d,]+\s+([\d,]+)\s+\$", text, re.MULTILINE)
    }
    assert table == {r: by_round[r].usage.total_tokens for r in ("1", "2", "3")}, text
    for r, _amount, tokens, _so_far, so_far_tokens in printed:
        assert int(tokens.replace(",", "")) == table[r]
        assert int(so_far_tokens.replace(",", "")) >= sum(table[str(n)] for n in range(1, int(r) + 1))
    total_row = re.search(r"^\s*total\s+\d+\s+[\d,]+\s+[\d,]+\s+([\d,]+)\s+\$", text, re.MULTILINE)
    assert total_row and int(total_row.group(1).replace(",", "")) == breakdown.usage.total_tokens
