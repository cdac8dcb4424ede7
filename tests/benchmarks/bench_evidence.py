"""Evidence benchmark: what checking quotes and carrying source documents cost, in CPU time.

    python -m tests.benchmarks.bench_evidence [--quick]

- the quote check of a finished turn (two marked quotes) against the largest sources a debate
  may carry (8 documents, 256 KiB): quotes that are verbatim (a substring search a document,
  the floor) and quotes that are invented (a rapidfuzz `partial_ratio` over every document: the
  worst case, run on the event loop once a turn);
- building the normalised index of those documents (once a debate);
- building a debater's window with 8 KiB of sources against the same window without them:
  the sources' tokens are counted once per model, so a build costs about the same.

Each figure is the median of 3 runs, in CPU ms (or µs) of this process. `run(quick)` returns rows
{metric, target, value, unit, floor} for `make bench`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from debate.common.v1 import common_pb2 as c

from services.common.limits import MAX_SOURCE_BYTES, MAX_SOURCES
from services.common.quotes import SourceIndex
from services.orchestrator.context import ContextBuilder, Transcript

SENTENCE = "Cities that removed cars from their centres saw footfall rise by a fifth within {n} years. "


def _document(size: int, seed: int) -> str:
    parts, n = [], seed
    while sum(len(p) for p in parts) < size:
        parts.append(SENTENCE.format(n=n))
        n += 1
    return "".join(parts)[:size]


def _cpu(work: Callable[[], object], repeat: int) -> float:
    """Median over 3 runs of the CPU seconds of one call of `work` (each run `repeat` calls)."""
    runs = []
    for _ in range(3):
        start = time.process_time()
        for _ in range(repeat):
            work()
        runs.append((time.process_time() - start) / repeat)
    return statistics.median(runs)


def run(quick: bool = False) -> list[dict]:
    size = MAX_SOURCE_BYTES // 2  # 8 x 32 KiB = 256 KiB, the total bound
    documents = [(f"doc-{i}", _document(size, i * 1000)) for i in range(MAX_SOURCES)]
    repeat = 3 if quick else 20
    build = _cpu(lambda: SourceIndex(documents), 1 if quick else 3)
    index = SourceIndex(documents)
    exact = (
        'As the study says, <quote source="doc-3">saw footfall rise by a fifth within 3005 years</quote>. And '
        '<quote source="doc-7">Cities that removed cars from their centres saw footfall rise</quote>.'
    )
    invented = (
        'As the study says, <quote source="doc-3">nine in ten experts agree the change paid for itself</quote>. And '
        "<quote>every independent study has confirmed this beyond any doubt</quote>."
    )
    assert all(q.status == c.QUOTE_STATUS_VERIFIED for q in index.check_turn(exact))
    assert all(q.status == c.QUOTE_STATUS_UNVERIFIED for q in index.check_turn(invented))
    verified = _cpu(lambda: index.check_turn(exact), repeat)
    unverified = _cpu(lambda: index.check_turn(invented), repeat)

    def windows(sources: list[c.SourceDocument]) -> float:
        config = c.DebateConfig(
            topic="Cities should ban cars",
            participants=[
                c.Participant(name="Ada", model="sim/debater", stance="for"),
                c.Participant(name="Milo", model="sim/debater", stance="against"),
            ],
            format=c.DebateFormat(round_limit=10),
            context=c.ContextSettings(max_tokens=16384, window_size=5),
            sources=sources,
        )
        builder, transcript = ContextBuilder(config), Transcript()
        for r in range(1, 11):
            for p in config.participants:
                transcript.add(r, p.name, SENTENCE.format(n=r) * 10)

        def all_rounds() -> None:
            for r in range(1, 11):
                for p in config.participants:
                    builder.build(p, r, transcript)

        return _cpu(all_rounds, repeat) / 20

    with_sources = windows([c.SourceDocument(id="doc-1", text=_document(8 * 1024, 0))])
    without = windows([])
    return [
        {
            "metric": "quote check of a turn (2 invented quotes) vs 8 x 32 KiB sources; floor: 2 verbatim quotes",
            "target": "-",
            "value": f"{unverified * 1000:.2f}",
            "floor": f"{verified * 1000:.2f}",
            "unit": "CPU ms/turn",
        },
        {
            "metric": "source index of 256 KiB (normalised once a debate)",
            "target": "-",
            "value": f"{build * 1000:.1f}",
            "unit": "CPU ms",
        },
        {
            "metric": "debater window with 8 KiB of sources; floor: the same window without them",
            "target": "-",
            "value": f"{with_sources * 1e6:.1f}",
            "floor": f"{without * 1e6:.1f}",
            "unit": "CPU µs/build",
        },
    ]


def print_table(rows: list[dict]) -> None:
    width = max(len(r["metric"]) for r in rows)
    print(f"{'metric':<{width}}  {'value':>10}  {'floor':>8}  unit")
    for r in rows:
        print(f"{r['metric']:<{width}}  {r['value']:>10}  {r.get('floor', ''):>8}  {r['unit']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (for tests)")
    print_table(run(parser.parse_args(argv).quick))


if __name__ == "__main__":
    main()
