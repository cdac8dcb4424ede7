"""The relay benchmark runs (quick mode) and the layer stays near the plain SSE reader.

Only ratios of figures measured in the same run are asserted, never wall-clock times.
"""

from __future__ import annotations

import pytest

from tests.benchmarks.bench_relay import TARGET_RATIO, run


@pytest.mark.benchmark_quick
def test_relay_benchmark_quick():
    rows = {row["metric"]: row for row in run(quick=True)}
    assert {"metric", "target", "value", "unit"} <= set(next(iter(rows.values())))
    reader = rows["relay_cpu_per_chunk_httpx_reader[burst]"]["value"]
    layer = rows["relay_cpu_per_chunk_layer[burst]"]["value"]
    litellm = rows["relay_cpu_per_chunk_litellm[burst]"]["value"]
    assert all(value > 0 for value in (reader, layer, litellm))
    assert rows["relay_ratio_layer_to_httpx_reader[burst]"]["value"] <= TARGET_RATIO
    assert layer * 3 < litellm  # measured ~14x apart; the lean path is what keeps the relay cheap
