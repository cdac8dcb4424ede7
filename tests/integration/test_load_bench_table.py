"""`make bench` in quick mode: every benchmark module that is present runs and puts rows in
the one table (no wall-clock assertions: the figures are not checked, only that they come)."""

from __future__ import annotations

import pytest

from tests.benchmarks import run_all


# Every benchmark's quick mode, one after another: several minutes, more than the default timeout.
@pytest.mark.timeout(1500)
def test_every_present_benchmark_gives_rows_in_the_table():
    outcomes = run_all.run_all(quick=True, progress=None)
    present = [o for o in outcomes if o.status != "missing"]
    assert present, "no benchmark module at all"
    failed = {o.module: o.error for o in outcomes if o.status == "failed"}
    assert not failed, failed
    text = run_all.table(outcomes)
    for outcome in present:
        assert outcome.rows, f"{outcome.module} gave no rows"
        for row in outcome.rows:
            assert str(row["metric"])[:30] in text  # long metrics wrap over lines
    for outcome in outcomes:
        if outcome.status == "missing":
            assert f"MISSING: {outcome.module}" in text
