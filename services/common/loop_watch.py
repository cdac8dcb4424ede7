"""How late a service's event loop runs: a lag probe, and a stall tracer that names what
blocked it.

- `LoopLagProbe` schedules a callback every `interval` seconds and measures how late the loop
  ran it: the time the loop could not attend to anything else (a commit on its thread, a long
  callback, the garbage collector, or no CPU for the process). Each lateness is observed in the
  histogram `asyncio_event_loop_lag_seconds` (when metrics are on), and the largest since
  start is kept (`max_lag`). Twenty callbacks a second: no measurable cost.
- `StallTracer` (LOOP_STALL_TRACE_MS, off when 0) is a thread that looks at the loop every few
  milliseconds; when the loop has not run the probe's callback for longer than its threshold,
  it logs, once per stall, the Python stack the loop's thread is in at that moment (where it is
  blocked: a system call shows as the Python line that made it). A diagnostic: the thread takes
  the GIL a hundred times a second.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

# Seconds, from a missed millisecond to a frozen process.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LoopLagProbe:
    """Measures the loop's lateness every `interval` seconds (see the module's docstring);
    `registry`: where `asyncio_event_loop_lag_seconds` goes (None: only `max_lag` is kept)."""

    def __init__(self, interval: float = 0.05, registry: CollectorRegistry | None = None):
        self.interval = interval
        self.max_lag = 0.0  # seconds, the largest lateness seen
        self.last_run = time.monotonic()  # when the loop last ran the probe (StallTracer reads it)
        self._observe = None
        if registry is not None:
            from prometheus_client import Histogram

            self._observe = Histogram(
                "asyncio_event_loop_lag_seconds",
                "How late the event loop ran a callback due every 50 ms: time it could attend to nothing else",
                buckets=LAG_BUCKETS,
                registry=registry,
            ).observe
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self.thread_id = 0

    def start(self) -> None:
        """Starts probing the running loop (call from the loop's thread)."""
        self._loop = asyncio.get_running_loop()
        self.thread_id = threading.get_ident()
        self._schedule()

    def _schedule(self) -> None:
        assert self._loop is not None
        self._due = self._loop.time() + self.interval
        self._handle = self._loop.call_at(self._due, self._run)

    def _run(self) -> None:
        assert self._loop is not None
        lag = max(0.0, self._loop.time() - self._due)
        self.last_run = time.monotonic()
        if lag > self.max_lag:
            self.max_lag = lag
        if self._observe is not None:
            self._observe(lag)
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class StallTracer:
    """Logs the loop thread's stack when `probe` has not run for `threshold` seconds past its
    interval (once per stall). `start()` after `probe.start()`; `stop()` joins the thread."""

    def __init__(self, probe: LoopLagProbe, threshold: float):
        self.probe = probe
        self.threshold = threshold
        self.stalls = 0  # stalls logged
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="loop-stall-tracer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _watch(self) -> None:
        probe = self.probe
        limit = probe.interval + self.threshold
        reported = 0.0  # the probe run whose stall was logged
        check = min(0.01, self.threshold / 2)
        while not self._stop.wait(check):
            last = probe.last_run
            late = time.monotonic() - last
            if late < limit or last == reported:
                continue
            frame = sys._current_frames().get(probe.thread_id)
            if frame is None:
                continue
            reported = last
            self.stalls += 1
            stack = "".join(traceback.format_stack(frame, limit=25))
            log.warning("event loop stalled for %.0f ms so far; its thread is in:\n%s", late * 1000, stack)
