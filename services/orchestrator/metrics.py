"""The orchestrator's Prometheus metrics: debates, their live events, and replicas' leases.

Made by the composition root when METRICS_PORT is set (services.common.metrics), into the
process's registry. The hot path pays almost nothing: the event hub and the scheduler keep plain
integer counts, which `HubCollector` reads when Prometheus scrapes; the hub observes its relay
latency once per message a subscriber sends after a wake (not once per event).

| metric | type | labels |
| --- | --- | --- |
| debate_debates_running, debate_debates_queued | gauge | |
| debate_debates_started_total | counter | |
| debate_debates_ended_total | counter | state (COMPLETED, FAILED, CANCELLED, BUDGET_EXCEEDED), reason |
| debate_events_appended_total | counter | |
| debate_event_subscribers | gauge | |
| debate_event_messages_sent_total | counter | |
| debate_event_subscribers_cut_total | counter | reason (TOO_SLOW) |
| debate_event_relay_seconds | histogram | |
| debate_lease_takeovers_total, debate_fencing_refusals_total | counter | |

`reason` is a domain error's stable reason (a bounded set of upper-case codes), never a message.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from debate.orchestrator.v1 import orchestrator_pb2 as pb
from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.common.metrics import LLMMetrics, LoopHistogram, ServiceMetrics

if TYPE_CHECKING:
    from services.orchestrator.events import EventHub
    from services.orchestrator.scheduler import Scheduler

# Relay latency, from an event's append to the message that carries it leaving: the coalescing
# tick (COALESCE_MS, 25 ms) and a commit are inside it.
_STATE_NAMES = {value.number: value.name.removeprefix("DEBATE_STATE_") for value in pb.DebateState.DESCRIPTOR.values}
RELAY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class OrchestratorMetrics:
    """The orchestrator's own metric families, and the LLM layer's (`llm`)."""

    def __init__(self, metrics: ServiceMetrics):
        registry = metrics.registry
        self.grpc = metrics.grpc
        self.llm = LLMMetrics(registry)
        self.debates_started = Counter(
            "debate_debates_started_total",
            "Debates that started running (resumed ones are not counted again).",
            registry=registry,
        )
        self.debates_ended = Counter(
            "debate_debates_ended_total",
            "Debates that ended, by final state and reason (COMPLETED/COMPLETED for a verdict).",
            ("state", "reason"),
            registry=registry,
        )
        self.relay_seconds = LoopHistogram(
            "debate_event_relay_seconds",
            "Time from an event's append to the sending of the message that carries it (the oldest event of the "
            "message), observed once per message a live subscriber sends after a wake.",
            RELAY_BUCKETS,
            registry,
        )
        self.lease_takeovers = Counter(
            "debate_lease_takeovers_total",
            "Debates this replica took over from another whose lease lapsed (or that handed it over).",
            registry=registry,
        )
        self.fencing_refusals = Counter(
            "debate_fencing_refusals_total",
            "Debates stopped here because the store refused their writes: another replica holds their lease now.",
            registry=registry,
        )
        self._registry = registry

    def debate_ended(self, state: int, reason: str) -> None:
        """`state`: the final DebateState; `reason`: the ending's stable reason (an error's reason code)."""
        self.debates_ended.labels(_STATE_NAMES.get(state, "UNKNOWN"), reason).inc()

    def watch(self, hub: EventHub, scheduler: Scheduler) -> None:
        """Registers the collector that reads the hub's and the scheduler's counts at each scrape."""
        self._registry.register(HubCollector(hub, scheduler))


class HubCollector(Collector):
    """Reads the event hub's and the scheduler's plain counts when Prometheus scrapes."""

    def __init__(self, hub: EventHub, scheduler: Scheduler):
        self.hub = hub
        self.scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        hub, scheduler = self.hub, self.scheduler
        yield GaugeMetricFamily(
            "debate_debates_running", "Debates generating in this process now.", value=len(scheduler.running)
        )
        yield GaugeMetricFamily(
            "debate_debates_queued", "Debates waiting in this process for a running slot.", value=len(scheduler.queue)
        )
        yield CounterMetricFamily(
            "debate_events_appended", "Events appended to debates' logs and committed.", value=hub.events_appended
        )
        yield GaugeMetricFamily(
            "debate_event_subscribers",
            "Live StreamDebateEvents subscribers in this process.",
            value=hub.subscriber_count,
        )
        yield CounterMetricFamily(
            "debate_event_messages_sent",
            "Messages (one event, or a batch) sent to subscribers.",
            value=hub.messages_sent,
        )
        cut = CounterMetricFamily(
            "debate_event_subscribers_cut",
            "Subscribers cut off, by reason (TOO_SLOW: it fell more than SUBSCRIBER_MAX_LAG events behind).",
            labels=("reason",),
        )
        cut.add_metric(("TOO_SLOW",), hub.subscribers_cut)
        yield cut
