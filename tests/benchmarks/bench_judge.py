"""Judge benchmark: the judge's own overhead per EvaluateRound and per RenderVerdict.

    python -m tests.benchmarks.bench_judge [--quick]

The judge model is instant (a stand-in that returns a fixed valid answer at once), so the
figures are what the judge itself costs: validation and cleaning, one prompt per ordering
with fresh markers and masked names, JSON parsing and pydantic validation of every answer,
aggregation and agreement, and protobuf in and out. It is called in process through the
servicer (no network) and timed in CPU time of this thread; one row adds the gRPC loopback
(wall time) for comparison, and one shows the built-in simulated judge's own time per
answer (model time, not judge overhead). The "floor" of a row is the instant model alone
for the same number of calls.

`run(quick)` returns rows {metric, target, value, unit, floor} for `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import grpc
from debate.common.v1 import common_pb2
from debate.judge.v1 import judge_pb2, judge_pb2_grpc

from services.common.debate_rules import ModelRules
from services.common.llm.base import CompletionRequest, collect
from services.judge import simulated_judge
from services.judge.engine import Judge
from services.judge.model import DEFAULT_CRITERIA, Debater, JudgePolicy, Round, Turn
from services.judge.prompts import NameMasker, PromptParts, build_messages
from services.judge.server import build_service
from services.judge.servicer import JudgeServicer
from services.judge.settings import JudgeSettings
from services.judge.validation import default_rubric
from tests.support.judge_fakes import InstantJudgeLLM, canned_answer

CRITERIA = [name for name, _ in DEFAULT_CRITERIA]
NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
# About a 250-word debate turn, different per debater.
TURN = (
    "The evidence from cities that restricted cars points both ways: air quality improves because traffic "
    "falls, and a 2019 study found retail footfall rose 12%. However, {other} ignores deliveries, disabled "
    "access and night work. Therefore the policy needs exemptions. "
) * 5
TARGET = "< 15 ms (plan), aim < 1 ms"


def _debaters(n: int) -> list[judge_pb2.Debater]:
    return [
        judge_pb2.Debater(name=NAMES[i], stance="for" if i % 2 == 0 else "against", persona="an urban planner")
        for i in range(n)
    ]


def _turns(n: int) -> list[judge_pb2.DebaterTurn]:
    return [judge_pb2.DebaterTurn(debater=NAMES[i], text=TURN.format(other=NAMES[(i + 1) % n])) for i in range(n)]


def round_request(n: int, models: int = 1) -> judge_pb2.EvaluateRoundRequest:
    return judge_pb2.EvaluateRoundRequest(
        debate_id="bench",
        topic="Cities should ban cars from their centres",
        round_number=1,
        debaters=_debaters(n),
        turns=_turns(n),
        request_id="debates/bench/rounds/1",
        judge=common_pb2.JudgeConfig(models=[f"sim/judge-{m}" for m in range(models)]),
    )


def verdict_request(n: int, rounds: int) -> judge_pb2.RenderVerdictRequest:
    assessment = common_pb2.RoundAssessment(
        scores=[common_pb2.DebaterScore(debater=NAMES[i], weighted_total=5.0 + i / 10) for i in range(n)]
    )
    return judge_pb2.RenderVerdictRequest(
        debate_id="bench",
        topic="Cities should ban cars from their centres",
        debaters=_debaters(n),
        rounds=[judge_pb2.RoundTranscript(round_number=r + 1, turns=_turns(n)) for r in range(rounds)],
        assessments=[common_pb2.RoundAssessment(round_number=r + 1, scores=assessment.scores) for r in range(rounds)],
        request_id="debates/bench/verdict",
    )


def _policy() -> JudgePolicy:
    return JudgePolicy(model_rules=ModelRules(lambda model: model.startswith("sim/")))


async def _per_call(
    call: Callable[[], Awaitable[object]], seconds: float, clock: Callable[[], float] = time.process_time
) -> float:
    """Median seconds per call over batches filling about `seconds` (after a warm-up).

    In process everything runs on this thread, so CPU time (the default clock) is the
    judge's cost and is far less disturbed by other work on a shared machine than wall time.
    """
    await call()
    batch, samples, spent = 1, [], 0.0
    while spent < seconds or len(samples) < 5:
        start = clock()
        for _ in range(batch):
            await call()
        elapsed = clock() - start
        spent += elapsed
        samples.append(elapsed / batch)
        if elapsed < seconds / 20:
            batch *= 2
    return statistics.median(samples)


def _row(metric: str, value_ms: float, floor_ms: float | None = None, target: str = TARGET) -> dict:
    row = {"metric": metric, "target": target, "value": float(f"{value_ms:.3g}"), "unit": "ms/call"}
    if floor_ms is not None:
        row["floor"] = float(f"{floor_ms:.3g}")
    return row


async def _measure(seconds: float) -> list[dict]:
    rows: list[dict] = []

    async def overhead(label: str, request, n: int, calls: int, verdict: bool) -> None:
        llm = InstantJudgeLLM(canned_answer(n, CRITERIA, verdict))
        servicer = JudgeServicer(Judge(llm, _policy()))
        rpc = servicer.RenderVerdict if verdict else servicer.EvaluateRound
        per = await _per_call(lambda: rpc(request, None), seconds)
        probe = CompletionRequest("sim/judge", ())

        async def model_only() -> None:
            for _ in range(calls):
                await collect(llm, probe)

        floor = await _per_call(model_only, seconds / 4)
        rows.append(_row(f"{label} ({calls} judge calls), judge overhead", (per - floor) * 1e3, floor * 1e3))

    await overhead("EvaluateRound 2 debaters x 2 orderings", round_request(2), 2, 2, False)
    await overhead("EvaluateRound 4 debaters x 4 orderings", round_request(4), 4, 4, False)
    await overhead("EvaluateRound 8 debaters x 8 orderings", round_request(8), 8, 8, False)
    await overhead("EvaluateRound 2 debaters, panel of 3 models", round_request(2, models=3), 2, 6, False)
    await overhead("RenderVerdict 2 debaters, 5 rounds", verdict_request(2, 5), 2, 2, True)
    await overhead("RenderVerdict 4 debaters, 10 rounds", verdict_request(4, 10), 4, 4, True)

    # The same 2-debater round through a real server and channel on loopback.
    service = await build_service(JudgeSettings(port=0), InstantJudgeLLM(canned_answer(2, CRITERIA, False)))
    await service.start()
    try:
        async with grpc.aio.insecure_channel(service.address) as channel:
            stub = judge_pb2_grpc.JudgeServiceStub(channel)
            request = round_request(2)
            per = await _per_call(lambda: stub.EvaluateRound(request, timeout=10), seconds, time.perf_counter)
            rows.append(
                _row(
                    "EvaluateRound 2 debaters over gRPC loopback (judge + transport, wall time)",
                    per * 1e3,
                    target="for comparison",
                )
            )
    finally:
        await service.stop(grace=0)

    # Model time of the built-in simulated judge (what sim/judge adds per answer, before pacing).
    for n in (2, 8):
        turns = tuple(Turn(NAMES[i], TURN.format(other=NAMES[(i + 1) % n])) for i in range(n))
        parts = PromptParts(
            "Cities should ban cars",
            tuple(Debater(NAMES[i]) for i in range(n)),
            default_rubric(),
            (Round(1, turns),),
            verdict=False,
        )
        messages, _, _ = build_messages(parts, tuple(range(n)), NameMasker(NAMES[:n]))
        request = CompletionRequest("sim/judge", messages)

        async def answer(r=request) -> None:
            simulated_judge.respond(r)

        per = await _per_call(answer, seconds / 2)
        rows.append(
            _row(f"sim/judge answer, {n} debaters (model time, not overhead)", per * 1e3, target="informational")
        )
    return rows


def run(quick: bool = False) -> list[dict]:
    return asyncio.run(_measure(0.3 if quick else 2.0))


def print_table(rows: list[dict]) -> None:
    width = max(len(r["metric"]) for r in rows)
    target_width = max(len(r["target"]) for r in rows)
    print(f"{'metric':<{width}}  {'target':<{target_width}}  {'value':>10}  {'floor':>8}  unit")
    for r in rows:
        floor = f"{r['floor']:>8}" if "floor" in r else " " * 8
        print(f"{r['metric']:<{width}}  {r['target']:<{target_width}}  {r['value']:>10}  {floor}  {r['unit']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (for tests)")
    print_table(run(parser.parse_args(argv).quick))


if __name__ == "__main__":
    main()
