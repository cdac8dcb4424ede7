"""LoopHistogram (services/common/metrics.py): the same exposition as prometheus-client's own
Histogram for the same observations, bound values included (a bucket's upper bound is inclusive)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from services.common.metrics import LoopHistogram

BUCKETS = (0.001, 0.0025, 0.01, 0.1, 1.0)


def exposition(registry: CollectorRegistry) -> list[str]:
    # prometheus-client's Histogram adds a `_created` sample, which a LoopHistogram does not have.
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


@given(st.lists(st.one_of(st.sampled_from(BUCKETS), st.floats(0, 5, allow_nan=False)), max_size=50))
def test_a_loop_histogram_exposes_what_a_prometheus_histogram_does(values: list[float]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop = LoopHistogram("relay_seconds", "relay", BUCKETS, ours)
    locked = Histogram("relay_seconds", "relay", buckets=BUCKETS, registry=theirs)
    for value in values:
        loop.observe(value)
        locked.observe(value)
    assert exposition(ours) == exposition(theirs)


def test_a_loop_histogram_counts_each_observation_in_its_bucket() -> None:
    registry = CollectorRegistry()
    histogram = LoopHistogram("relay_seconds", "relay", BUCKETS, registry)
    for value in (0.0005, 0.001, 0.002, 3.0):
        histogram.observe(value)
    sample = registry.get_sample_value
    assert sample("relay_seconds_bucket", {"le": "0.001"}) == 2
    assert sample("relay_seconds_bucket", {"le": "0.0025"}) == 3
    assert sample("relay_seconds_bucket", {"le": "1.0"}) == 3
    assert sample("relay_seconds_bucket", {"le": "+Inf"}) == 4
    assert sample("relay_seconds_count") == 4
    assert abs(sample("relay_seconds_sum") - 3.0035) < 1e-12
