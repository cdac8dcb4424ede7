"""The event loop's lag probe and stall tracer (services.common.loop_watch), on a loop that a
callback blocks for 300 ms."""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import CollectorRegistry

from services.common.loop_watch import LoopLagProbe, StallTracer


def block_the_loop_in_a_commit() -> None:
    time.sleep(0.3)  # what a blocking call on the loop's thread looks like (an fsync, a socket())


async def test_a_blocked_loop_is_measured_and_its_stack_logged_once(caplog):
    registry = CollectorRegistry()
    probe = LoopLagProbe(interval=0.02, registry=registry)
    probe.start()
    tracer = StallTracer(probe, threshold=0.1)
    tracer.start()
    try:
        await asyncio.sleep(0.1)
        calm = probe.max_lag
        with caplog.at_level(logging.WARNING, logger="services.common.loop_watch"):
            asyncio.get_running_loop().call_soon(block_the_loop_in_a_commit)
            await asyncio.sleep(0.1)
    finally:
        tracer.stop()
        probe.stop()
    assert calm < 0.1 <= 0.25 <= probe.max_lag
    stalls = [r for r in caplog.records if "event loop stalled" in r.getMessage()]
    assert len(stalls) == 1 == tracer.stalls  # once per stall, however long it lasts
    assert "block_the_loop_in_a_commit" in stalls[0].getMessage()
    count = registry.get_sample_value("asyncio_event_loop_lag_seconds_count")
    over = count - registry.get_sample_value("asyncio_event_loop_lag_seconds_bucket", {"le": "0.25"})
    assert count >= 5 and over == 1  # one lateness past 250 ms: the blocked callback's


async def test_without_a_registry_only_the_largest_lag_is_kept():
    probe = LoopLagProbe(interval=0.01)
    probe.start()
    await asyncio.sleep(0.05)
    probe.stop()
    assert 0 <= probe.max_lag < 1
