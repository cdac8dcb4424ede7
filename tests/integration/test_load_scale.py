"""The scale harness (tests/benchmarks/scale.py) in a tiny run, so that it cannot rot: it
starts the suite, runs a level of debates and one of subscribers, and reports them. No
figure is checked against a limit (that is what the harness itself reports)."""

from __future__ import annotations

import pytest

from tests.benchmarks import scale


@pytest.mark.e2e
async def test_scale_harness_runs_a_tiny_ramp():
    results = await scale.scale(
        [2],
        [5],
        budget=120,
        subscriber_rounds=1,
        probes=2,
        tokens_per_second=400,
        first_token_latency=0.01,
        log_level="WARNING",
    )
    assert results["warm_up"]["completed"] == 1
    (debates,) = results["debates"]
    assert debates["n"] == 2 and debates["completed"] == 2 and debates["token_events"] > 0
    (subscribers,) = results["subscribers"]
    assert subscribers["n"] == 5 and subscribers["completed"] == 5 and subscribers["events"] > 0
    assert subscribers["relay_p99_ms"] >= 0
    summary = scale.summary(results)
    assert summary["levels_tried"] == {"debates": [2], "subscribers": [5]}
