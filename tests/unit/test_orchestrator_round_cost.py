"""The running cost a debate's events carry (services/orchestrator/run.py): the total and each
round's line (0: the verdict), counted once per ledger row, as accounting's breakdown sums them."""

from __future__ import annotations

from debate.accounting.v1 import accounting_pb2 as acc
from debate.common.v1 import common_pb2 as common

from services.orchestrator.run import DebateRun


def run() -> DebateRun:
    return DebateRun(debate_id="d1", config=common.DebateConfig(), context=None)  # type: ignore[arg-type]


def reply(key: str, round_number: int, amount: str, tokens: int, *, duplicate: bool = False) -> acc.RecordUsageResponse:
    usage = common.TokenUsage(prompt_tokens=tokens - 10, completion_tokens=10, total_tokens=tokens)
    record = acc.UsageRecord(
        request_id=key,
        round_number=round_number,
        usage=usage,
        cost=common.Money(currency_code="USD", amount=amount),
    )
    return acc.RecordUsageResponse(record=record, duplicate=duplicate)


def figures(line: common.CostLine) -> tuple[str, int, int, str]:
    return line.key, line.calls, line.usage.total_tokens, line.cost.amount


def test_each_round_sums_its_rows_once_and_the_total_sums_them_all():
    r = run()
    r.add_cost(reply("turn-a", 1, "0.0010", 100))
    r.add_cost(reply("turn-b", 1, "0.0020", 200))
    r.add_cost(reply("judge-1", 1, "0.0003", 1000))
    r.add_cost(reply("turn-b", 1, "0.0020", 200, duplicate=True))  # counted when first recorded
    r.add_cost(reply("verdict-1", 0, "0.0005", 3000))
    assert figures(r.round_cost(1)) == ("1", 3, 1300, "0.0033")
    assert figures(r.round_cost(0)) == ("0", 1, 3000, "0.0005")
    assert figures(r.round_cost(2)) == ("2", 0, 0, "0")  # nothing yet
    assert (str(r.total), r.usage.total_tokens) == ("0.0038", 4300)
    r.round_cost(1).calls = 99  # a copy: the event's line cannot change the sums
    assert r.round_cost(1).calls == 3


def test_a_duplicate_after_a_try_with_no_answer_is_counted_once():
    r = run()
    r.unanswered.add("turn-a")  # its first RecordUsage failed: stored or not, nobody knows
    r.add_cost(reply("turn-a", 1, "0.0010", 100, duplicate=True))  # it was stored
    r.add_cost(reply("turn-a", 1, "0.0010", 100, duplicate=True))  # and this one is a repeat
    assert figures(r.round_cost(1)) == ("1", 1, 100, "0.001")
    assert not r.unanswered


def test_a_rebuilt_run_takes_its_sums_from_the_breakdown_and_goes_on():
    r = run()
    r.restore_cost(
        common.DebateCost(
            total=common.Money(currency_code="USD", amount="0.004"),
            usage=common.TokenUsage(total_tokens=500),
            by_round=[
                common.CostLine(
                    key="1", calls=2, usage=common.TokenUsage(total_tokens=500), cost=common.Money(amount="0.004")
                )
            ],
        )
    )
    r.add_cost(reply("judge-1", 1, "0.001", 50))
    assert figures(r.round_cost(1)) == ("1", 3, 550, "0.005")
    assert (str(r.total), r.usage.total_tokens) == ("0.005", 550)
