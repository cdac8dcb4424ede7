"""What an export costs the orchestrator: CPU time to render the largest debate the limits allow.

    python -m tests.benchmarks.bench_export [--quick]

The debate: 20 rounds of 8 debaters (the limits' maxima), each turn 512 tokens of text (about
2,600 characters), every round scored on four criteria, a verdict and a full cost breakdown.
For each step (the model built from the Debate message, then each format) the table gives the
calling thread's CPU time (time.thread_time), the median of --repeat runs of --runs renders each,
and the document's size. ExportDebate renders on a worker thread (asyncio.to_thread), so these
milliseconds are not one block of the event loop: the loop takes the GIL back at each switch
interval (5 ms) to relay tokens.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.orchestrator.export import RENDERERS, render
from services.orchestrator.export.model import build_document

WORDS = [
    "the",
    "evidence",
    "from",
    "cities",
    "that",
    "closed",
    "their",
    "centres",
    "to",
    "cars",
    "shows",
    "footfall",
    "and",
    "trade",
    "rising",
]


def large_debate(rounds: int = 20, debaters: int = 8, words: int = 420) -> pb.Debate:
    """A completed debate at the limits, with figures like a real one's."""
    names = [f"Debater {i + 1}" for i in range(debaters)]
    config = c.DebateConfig(
        topic="Cities should ban private cars from their historic centres",
        participants=[
            c.Participant(name=n, model="openai/gpt-4o-mini", persona="an urban economist", stance="for") for n in names
        ],
        judge=c.JudgeConfig(models=["openai/gpt-4o"]),
        format=c.DebateFormat(round_limit=rounds),
    )
    money = c.Money(currency_code="USD", amount="0.000123456789")
    usage = c.TokenUsage(prompt_tokens=3000, completion_tokens=512, total_tokens=3512)
    debate = pb.Debate(debate_id="bench", config=config, state=pb.DEBATE_STATE_COMPLETED)
    for r in range(1, rounds + 1):
        played = debate.rounds.add(round_number=r)
        for i, n in enumerate(names):
            text = " ".join(WORDS[(i + r + k) % len(WORDS)] for k in range(words)) + ". <b>& more</b>"
            played.turns.add(
                round_number=r, participant=n, model="openai/gpt-4o-mini", text=text, usage=usage, cost=money
            )
        a = played.assessment
        a.round_number, a.leader, a.rationale = r, names[0], "A close round, decided on evidence. " * 4
        for n in names:
            score = a.scores.add(debater=n, weighted_total=6.25, rationale="Argued with care. " * 3)
            for criterion in ("argument_strength", "evidence", "rebuttal", "clarity"):
                score.criteria.add(criterion=criterion, score=6.5)
    debate.verdict.winner, debate.verdict.confidence, debate.verdict.summary = (
        names[0],
        0.8,
        "Decided on evidence. " * 10,
    )
    for n in names:
        debate.verdict.final_scores.add(debater=n, score=6.1)
    line = c.CostLine(key="x", usage=usage, cost=money, calls=20)
    for key in names:
        debate.cost.by_participant.add().CopyFrom(line)
        debate.cost.by_participant[-1].key = key
    for r in range(rounds + 1):
        debate.cost.by_round.add().CopyFrom(line)
        debate.cost.by_round[-1].key = str(r)
    debate.cost.total.CopyFrom(money)
    return debate


def cpu_ms(step: Callable[[], object], runs: int) -> float:
    began = time.thread_time()
    for _ in range(runs):
        step()
    return (time.thread_time() - began) * 1000 / runs


def run(quick: bool = False) -> list[dict]:
    """The rows of `make bench`'s table: CPU ms of a whole export (ExportDebate's) in each format,
    of the largest debate the limits allow, median of 3 x (2 quick, else 10) runs."""
    runs = 2 if quick else 10
    debate = large_debate()
    turns = sum(len(r.turns) for r in debate.rounds)
    return [
        {
            "metric": f"export of a {turns}-turn debate as {fmt}, CPU per render",
            "target": "-",
            "value": round(statistics.median(cpu_ms(lambda f=fmt: render(debate, f), runs) for _ in range(3)), 1),
            "unit": "ms",
        }
        for fmt in RENDERERS
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = 2 if args.quick else args.runs
    debate = large_debate()
    doc = build_document(debate)
    turns = sum(len(r.turns) for r in debate.rounds)
    print(f"export of a debate of {len(debate.rounds)} rounds, {turns} turns, {debate.ByteSize():,} bytes as protobuf")
    print(f"load average {os.getloadavg()[0]:.2f}; CPU ms per render, median of {args.repeat} x {runs} runs\n")
    print(f"{'step':<28}{'CPU ms':>10}{'bytes':>12}")
    steps: list[tuple[str, Callable[[], object], int]] = [
        ("model (build_document)", lambda: build_document(debate), 0),
        *(
            (f"{fmt} (from the model)", (lambda f=fmt: RENDERERS[f](doc)), len(render(debate, fmt).content))
            for fmt in RENDERERS
        ),
        *((f"{fmt} (ExportDebate's whole)", (lambda f=fmt: render(debate, f)), 0) for fmt in RENDERERS),
    ]
    for name, step, size in steps:
        figure = statistics.median(cpu_ms(step, runs) for _ in range(args.repeat))
        print(f"{name:<28}{figure:>10.1f}{size or '':>12,}" if size else f"{name:<28}{figure:>10.1f}{'':>12}")


if __name__ == "__main__":
    main()
