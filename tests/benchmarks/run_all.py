"""`make bench`: every benchmark of the project, one table.

    python -m tests.benchmarks.run_all [--quick] [--only accounting,relay] [--json reports/bench.json]

Runs `run(quick)` of each benchmark module (tests/benchmarks/bench_*.py, the known ones
first, and the load client's own figures in services/loadtest/bench.py) one after another,
and prints one table: the metric, the test plan's target, our figure, and the floor
measured in the same run where the module gives one. A module that is not there yet is
listed as missing, and one that fails is listed with its error; neither is hidden, and the
other modules still run. Exit code 1 when a module failed, else 0.

Rows are dicts {metric, target, value, unit} with an optional "floor" (a number in the
same unit, or a text) and an optional "note".
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import textwrap
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
METRIC_WIDTH = 80

# The benchmarks of issue 8, in the order the table shows them.
KNOWN = [
    ("orchestrator", "tests.benchmarks.bench_orchestrator"),
    ("relay", "tests.benchmarks.bench_relay"),
    ("judge", "tests.benchmarks.bench_judge"),
    ("accounting", "tests.benchmarks.bench_accounting"),
    ("load client", "services.loadtest.bench"),
    ("replicas", "tests.benchmarks.bench_replicas"),  # issue 15: a second replica's cost, writes per debate
]


def modules() -> list[tuple[str, str]]:
    """The known modules, then any other tests/benchmarks/bench_*.py."""
    found = list(KNOWN)
    known = {m for _, m in KNOWN}
    for path in sorted(HERE.glob("bench_*.py")):
        module = f"tests.benchmarks.{path.stem}"
        if module not in known:
            found.append((path.stem.removeprefix("bench_"), module))
    return found


def _module_exists(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@dataclass
class Outcome:
    name: str
    module: str
    status: str  # "ok", "missing", "failed"
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""


def run_module(name: str, module: str, quick: bool) -> Outcome:
    try:
        present = _module_exists(module)
    except ModuleNotFoundError:
        present = False
    if not present:
        return Outcome(name, module, "missing")
    start = time.perf_counter()
    try:
        mod = importlib.import_module(module)
        run = getattr(mod, "run", None)
        if run is None:
            raise AttributeError(f"{module} has no run(quick) function")
        rows = list(run(quick=quick))
        for row in rows:
            missing = {"metric", "value"} - set(row)
            if missing:
                raise ValueError(f"row without {sorted(missing)}: {row!r}")
    except Exception as error:  # noqa: BLE001 -- a broken benchmark is reported, and the others still run
        last = traceback.format_exception_only(type(error), error)[-1].strip()
        return Outcome(name, module, "failed", seconds=time.perf_counter() - start, error=last)
    return Outcome(name, module, "ok", rows, time.perf_counter() - start)


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 0.01:
            return f"{value:.3f}".rstrip("0").rstrip(".")
        return f"{value:.3g}"
    return str(value)


def _with_unit(value: Any, unit: str) -> str:
    text = _number(value)
    return f"{text} {unit}".strip() if unit and not isinstance(value, str) else text


def table(outcomes: list[Outcome]) -> str:
    header = ("benchmark", "metric", "target (test plan)", "ours", "floor (same run)")
    lines: list[tuple[str, ...]] = []
    for outcome in outcomes:
        if outcome.status == "missing":
            lines.append((outcome.name, f"MISSING: {outcome.module} is not there yet", "", "", ""))
            continue
        if outcome.status == "failed":
            lines.append((outcome.name, f"FAILED: {outcome.error}", "", "", ""))
        for row in outcome.rows:
            unit = str(row.get("unit", "") or "")
            floor = row.get("floor")
            metric = str(row["metric"]) + (f" ({row['note']})" if row.get("note") else "")
            lines.append(
                (
                    outcome.name,
                    metric,
                    str(row.get("target", "") or ""),
                    _with_unit(row["value"], unit),
                    "" if floor is None else _with_unit(floor, unit),
                )
            )
    # Long metrics wrap under themselves, so that the figures stay on a normal screen.
    wrapped: list[tuple[str, ...]] = []
    for line in lines:
        parts = textwrap.wrap(line[1], METRIC_WIDTH, subsequent_indent="  ") or [""]
        wrapped.append((line[0], parts[0], *line[2:]))
        wrapped.extend(("", part, "", "", "") for part in parts[1:])
    lines = wrapped
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]

    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(
            [
                cells[0].ljust(widths[0]),
                cells[1].ljust(widths[1]),
                cells[2].ljust(widths[2]),
                cells[3].rjust(widths[3]),
                cells[4].rjust(widths[4]),
            ]
        ).rstrip()

    out = [fmt(header), "  ".join("-" * w for w in widths)]
    previous = None
    for line in lines:
        shown = line if line[0] != previous else ("", *line[1:])
        previous = line[0] or previous
        out.append(fmt(shown))
    return "\n".join(out)


def run_all(quick: bool = False, only: set[str] | None = None, progress=print) -> list[Outcome]:
    outcomes = []
    for name, module in modules():
        if only and name not in only and module.rsplit(".", 1)[-1] not in only:
            continue
        if progress:
            progress(f"... {name} ({module})")
        outcome = run_module(name, module, quick)
        if progress:
            detail = {"ok": f"{len(outcome.rows)} rows", "missing": "missing", "failed": outcome.error}[outcome.status]
            progress(f"    {detail} in {outcome.seconds:.1f}s")
        outcomes.append(outcome)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (what the test suite does)")
    parser.add_argument("--only", default="", help="comma-separated benchmark names, e.g. accounting,relay")
    parser.add_argument("--json", default="", help="also write every row to this JSON file")
    args = parser.parse_args(argv)
    only = {part.strip() for part in args.only.split(",") if part.strip()} or None

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    outcomes = run_all(args.quick, only, progress)
    mode = "quick mode, figures indicative only" if args.quick else "full runs"
    print(f"\nDebate Engine benchmarks ({mode})\n")
    print(table(outcomes))
    missing = [o.module for o in outcomes if o.status == "missing"]
    failed = [o for o in outcomes if o.status == "failed"]
    if missing:
        print(f"\nmissing: {', '.join(missing)}")
    for outcome in failed:
        print(f"failed: {outcome.module}: {outcome.error}")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                [
                    {
                        "benchmark": o.name,
                        "module": o.module,
                        "status": o.status,
                        "error": o.error,
                        "seconds": round(o.seconds, 2),
                        "rows": o.rows,
                    }
                    for o in outcomes
                ],
                indent=2,
            )
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
