"""The built-in simulated models' own CPU, in process: the debater's turns and the judge's ballots.

    python -m tests.benchmarks.bench_sim_models [--debates 300] [--repeats 3]

A scale-harness debate in miniature (tests/benchmarks/scale.py: 4 `sim/debater` debaters, one
round, 200 tokens a turn, judged by `sim/judge`, the models paced at 50 tokens/s), for `--debates`
debates with distinct topics, all at once as the harness runs them:

- debater: each turn streamed by `SimulatedLLM` (instant pacing) from the prompt the
  orchestrator's context builder writes, usage counted: what the orchestrator's process spends
  on the simulated debaters' text (reading, writing, budget, truncation, token counts);
- judge: `Judge.evaluate_round` then `Judge.render_verdict` over those turns through the
  simulated judge (`simulated_judge.responders()`), instant: what the judge's process spends
  on a debate's ballots (prompts, the simulated judge's features, token counts, validation).

Figures are CPU time of this process (time.process_time), per turn and per debate; each pass
starts with the token-count caches emptied (`tokens.clear_caches`), so a pass counts its lines
anew as a fresh process does. Prints the median of `--repeats` passes and the load average.
`digest(debates)` is a hash of every output (texts, usage, scores, verdicts) for the pin test.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import time

from services.common import tokens
from services.common.llm.base import ChatMessage, CompletionRequest, collect
from services.common.llm.simulated import SimulatedLLM
from services.judge import simulated_judge
from services.judge.engine import Judge
from services.judge.model import Debater, PanelRequest, PriorAssessment, Round, RoundCase, Turn, VerdictCase
from services.orchestrator.context import debater_system_prompt

NAMES = ("Ada", "Ben", "Cleo", "Dev")
STANCES = ("for", "against", "for", "against")
PERSONAS = ("an economist", "a nurse", "an engineer", "a historian")
SUBJECTS = ("cities", "schools", "hospitals", "farms", "ports", "railways", "libraries", "courts")
MAX_TOKENS = 200


def topic(i: int) -> str:
    return f"Debate {i}: {SUBJECTS[i % len(SUBJECTS)]} should be run by their users (case {i * 7919 % 1000})"


def turn_request(i: int, d: int) -> CompletionRequest:
    """Debater d's round-1 request of debate i, as the orchestrator's context builder writes it."""
    system = debater_system_prompt(
        topic=topic(i), persona=PERSONAS[d], stance=STANCES[d], round_number=1, rounds=1, max_tokens=MAX_TOKENS
    )
    messages = (
        ChatMessage("system", system),
        ChatMessage("user", "Please give your opening argument (round 1 of 1)."),
    )
    return CompletionRequest(model="sim/debater", messages=messages, max_tokens=MAX_TOKENS * 2, seed=i * 4 + d)


async def debater_turns(debates: int, tokens_per_second: float = 0.0) -> list[list[tuple[str, int, int]]]:
    """Every debate's four turns, all streamed at once: (text, prompt tokens, completion tokens)."""
    llm = SimulatedLLM(tokens_per_second=tokens_per_second)

    async def turn(i: int, d: int) -> tuple[str, int, int]:
        got = await collect(llm, turn_request(i, d))
        return got.text, got.completion.usage.prompt_tokens, got.completion.usage.completion_tokens

    async def debate(i: int) -> list[tuple[str, int, int]]:
        return list(await asyncio.gather(*(turn(i, d) for d in range(len(NAMES)))))

    return list(await asyncio.gather(*(debate(i) for i in range(debates))))


async def judge_debates(turns: list[list[tuple[str, int, int]]], tokens_per_second: float = 0.0) -> list[dict]:
    """Each debate's round assessment and verdict by the simulated judge, every debate at once, as
    plain data."""
    judge = Judge(SimulatedLLM(responders=simulated_judge.responders(), tokens_per_second=tokens_per_second))
    debaters = tuple(Debater(NAMES[d], STANCES[d], PERSONAS[d]) for d in range(len(NAMES)))

    async def one(i: int, debate: list[tuple[str, int, int]]) -> dict:
        round_turns = tuple(Turn(NAMES[d], text) for d, (text, _, _) in enumerate(debate))
        assessment = await judge.evaluate_round(
            RoundCase(f"d{i}", topic(i), 1, debaters, round_turns, PanelRequest(), f"debates/d{i}/rounds/1")
        )
        totals = {s.debater: s.weighted_total for s in assessment.scores}
        verdict = await judge.render_verdict(
            VerdictCase(
                f"d{i}",
                topic(i),
                debaters,
                (Round(1, round_turns),),
                (PriorAssessment(1, totals),),
                PanelRequest(),
                f"debates/d{i}/verdict",
            )
        )
        return {
            "scores": [(s.debater, s.criteria, s.rationale) for s in assessment.scores],
            "leader": assessment.leader,
            # A judge prompt's markers are random, so its prompt tokens vary from run to run.
            "usage": [(c.request_id, c.usage.completion_tokens) for c in assessment.calls],
            "winner": verdict.winner,
            "final": verdict.final_scores,
            "summary": verdict.summary,
            "verdict_usage": [(c.request_id, c.usage.completion_tokens) for c in verdict.calls],
        }

    return list(await asyncio.gather(*(one(i, debate) for i, debate in enumerate(turns))))


def clear_caches() -> None:
    """Empties the token-count caches (as a fresh process starts)."""
    clear = getattr(tokens, "clear_caches", None)
    if clear is not None:
        clear()
    else:  # before clear_caches existed
        tokens._resolved.clear()
        tokens._line_counter.cache_clear()


def digest(debates: int) -> str:
    """sha256 of every output of `debates` debates: turns, their usage, scores, rationales, verdicts
    and the judge's completion tokens (its prompt tokens vary with the prompts' random markers)."""

    async def both() -> tuple[list, list]:
        turns = await debater_turns(debates)
        return turns, await judge_debates(turns)

    turns, judged = asyncio.run(both())
    return hashlib.sha256(json.dumps([turns, judged], sort_keys=True).encode()).hexdigest()


def measure(debates: int, tokens_per_second: float) -> tuple[float, float]:
    """(debater CPU ms per turn, judge CPU ms per debate) of one pass."""
    clear_caches()
    start = time.process_time()
    turns = asyncio.run(debater_turns(debates, tokens_per_second))
    debater = (time.process_time() - start) / (debates * len(NAMES))
    clear_caches()
    start = time.process_time()
    asyncio.run(judge_debates(turns, tokens_per_second))
    judge = (time.process_time() - start) / debates
    return debater * 1000, judge * 1000


def medians(debates: int, tokens_per_second: float, repeats: int) -> tuple[float, float, list[tuple[float, float]]]:
    """(debater ms per turn, judge ms per debate, every pass's pair): medians of `repeats` passes
    of `measure`, after a small warm-up pass (imports, tokenizer files, regex compiles)."""
    measure(10, 0.0)
    runs = [measure(debates, tokens_per_second) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), runs


def run(quick: bool = False) -> list[dict[str, object]]:
    """The rows of `make bench` (tests/benchmarks/run_all.py): the models instant, medians of
    3 passes (quick: 20 debates, 1 pass; else 300 debates, as the scale harness's top level)."""
    debates, repeats = (20, 1) if quick else (300, 3)
    debater, judge, _ = medians(debates, 0.0, repeats)
    note = f"{debates} debates at once, instant, CPU of the process; median of {repeats}"
    return [
        {
            "metric": "simulated debater: CPU per turn",
            "target": "-",
            "value": round(debater, 3),
            "unit": "ms",
            "note": note,
        },
        {
            "metric": "simulated judge: CPU per debate (its ballots and verdict)",
            "target": "-",
            "value": round(judge, 3),
            "unit": "ms",
            "note": note,
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--debates", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--tokens-per-second", type=float, default=50.0, help="the models' pace, as the scale harness's (0: instant)"
    )
    args = parser.parse_args()
    debater, judge, runs = medians(args.debates, args.tokens_per_second, args.repeats)
    print(
        f"{args.debates} debates at {args.tokens_per_second:g} tokens/s, {args.repeats} passes (median):"
        f" debater {debater:.3f} ms CPU/turn, judge {judge:.3f} ms CPU/debate"
        f"  (passes: {', '.join(f'{a:.3f}/{b:.3f}' for a, b in runs)}; load {os.getloadavg()[0]:.2f})"
    )


if __name__ == "__main__":
    main()
