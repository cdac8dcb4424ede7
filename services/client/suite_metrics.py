"""The figures of `debate-engine top`, computed from the suite's Prometheus endpoints.

A scrape of one endpoint becomes a `Snapshot` (every sample of the exposition text, parsed by
prometheus-client's own parser). A `Window` keeps the scrapes of the last `seconds` and turns
the oldest and the newest into `SuiteFigures`, as PromQL would over that range:

- gauges (debates running and queued, live subscribers): the newest value, summed over
  endpoints, like `sum(debate_debates_running)`;
- rates (tokens per second by model, cost per hour, events and errors per second): each
  endpoint's counter increase over its own interval, a counter that went down counted from zero
  (the process restarted), then summed over endpoints, like `sum(rate(x[window]))`;
- relay p50 and p99: the bucket increases of `debate_event_relay_seconds` summed over
  endpoints, then `histogram_quantile`.

Nothing here draws or does I/O; services/client/top.py scrapes and draws.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs


NOT_ERRORS = frozenset({"OK", "CANCELLED"})  # gRPC codes that `errors` leaves out


@dataclass(frozen=True)
class Snapshot:
    """Every sample of one scrape: {sample name: {labels: value}}, taken at `time` (seconds of a
    monotonic clock)."""

    time: float
    samples: Mapping[str, Mapping[Labels, float]]

    @classmethod
    def parse(cls, text: str, time: float) -> Snapshot:
        """Parses Prometheus text exposition. ValueError when `text` is not in that format."""
        samples: dict[str, dict[Labels, float]] = defaultdict(dict)
        try:
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    samples[sample.name][tuple(sorted(sample.labels.items()))] = float(sample.value)
        except (ValueError, TypeError, IndexError) as error:
            raise ValueError(f"not Prometheus text: {error}") from None
        return cls(time, dict(samples))

    def series(self, name: str) -> Mapping[Labels, float]:
        return self.samples.get(name, {})


def increase(before: Snapshot, after: Snapshot, name: str) -> dict[Labels, float]:
    """How much each series of counter `name` grew from `before` to `after`: a series that went
    down (a restarted process) counts from zero, a series new in `after` from zero."""
    old = before.series(name)
    grown = {}
    for labels, value in after.series(name).items():
        previous = old.get(labels, 0.0)
        grown[labels] = value - previous if value >= previous else value
    return grown


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile (0 <= q <= 1) of a histogram given as {upper bound `le`: cumulative count},
    the `+Inf` bucket included, as PromQL's histogram_quantile computes it: linear interpolation
    inside the bucket that holds rank q * total, the lowest bucket starting at 0, and the highest
    finite bound when the rank falls in the `+Inf` bucket. None when the histogram counted nothing."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile must be in [0, 1], not {q}")
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        raise ValueError("a histogram needs its +Inf bucket")
    # Cumulative counts never decrease; rounding of float sums may break that by a hair.
    counts: list[float] = []
    for bound in bounds:
        counts.append(max(buckets[bound], counts[-1] if counts else 0.0))
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    index = next(i for i, count in enumerate(counts) if count >= rank)
    if index == len(bounds) - 1:  # the +Inf bucket
        return bounds[-2] if len(bounds) > 1 else None
    upper = bounds[index]
    lower = bounds[index - 1] if index > 0 else 0.0
    below = counts[index - 1] if index > 0 else 0.0
    if index == 0 and upper <= 0:
        return upper
    inside = counts[index] - below
    if inside <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / inside


@dataclass(frozen=True)
class ModelFlow:
    """One model's token flow and cost over the window."""

    model: str
    output_tokens_per_second: float = 0.0
    input_tokens_per_second: float = 0.0
    cost_per_hour: float = 0.0  # USD


@dataclass(frozen=True)
class ErrorRate:
    """Failures of one kind: `source` is a gRPC service (its short name) or "provider", `what` a
    method or a model, `code` a gRPC status code or a provider error reason."""

    source: str
    what: str
    code: str
    per_second: float  # over the window
    total: float  # since each process started


@dataclass(frozen=True)
class SuiteFigures:
    """What `top` shows. Rates are over `window_seconds` (0 before a second scrape: every rate is 0
    and the relay quantiles None)."""

    window_seconds: float
    endpoints_up: int
    endpoints_down: dict[str, str]  # endpoint -> why it did not answer
    debates_running: int
    debates_queued: int
    debates_started: float  # in the window
    debates_ended: float  # in the window
    events_per_second: float
    subscribers: int
    relay_messages: float  # messages sent with a relay latency, in the window
    relay_p50: float | None  # seconds
    relay_p99: float | None  # seconds
    cost_per_hour: float  # USD, all models
    models: list[ModelFlow] = field(default_factory=list)  # busiest first
    errors: list[ErrorRate] = field(default_factory=list)  # most frequent first


def _label(labels: Labels, name: str) -> str:
    return dict(labels).get(name, "")


def _gauge(snapshots: Iterable[Snapshot], name: str) -> float:
    return sum(value for snap in snapshots for value in snap.series(name).values())


class Window:
    """The scrapes of the last `seconds` of every endpoint, and the figures over them.

    `add` takes one round of scrapes: {endpoint: Snapshot}, or {endpoint: reason} for an endpoint
    that did not answer. An endpoint's rates run from its oldest scrape still in the window (or
    the newest before it) to its newest one."""

    def __init__(self, seconds: float = 10.0):
        if seconds <= 0:
            raise ValueError("the window must be positive")
        self.seconds = seconds
        self._history: dict[str, deque[Snapshot]] = {}
        self._down: dict[str, str] = {}

    def add(self, scrapes: Mapping[str, Snapshot | str]) -> None:
        self._down = {}
        for endpoint, scrape in scrapes.items():
            if isinstance(scrape, str):
                self._down[endpoint] = scrape
                self._history.pop(endpoint, None)  # its next answer starts afresh
                continue
            history = self._history.setdefault(endpoint, deque())
            history.append(scrape)
            # keep one scrape at least `seconds` old, so the window is whole once it has filled
            while len(history) > 2 and history[1].time <= scrape.time - self.seconds:
                history.popleft()

    def figures(self) -> SuiteFigures:
        pairs = [(h[0], h[-1]) for h in self._history.values() if h]
        newest = [after for _, after in pairs]
        spans = [(before, after, after.time - before.time) for before, after in pairs if after.time > before.time]

        def rate(name: str) -> dict[Labels, float]:
            """Per-series rate of counter `name`, summed over endpoints by identical labels."""
            rates: dict[Labels, float] = defaultdict(float)
            for before, after, seconds in spans:
                for labels, grown in increase(before, after, name).items():
                    rates[labels] += grown / seconds
            return rates

        def over_window(name: str) -> float:
            return sum(sum(increase(b, a, name).values()) for b, a, _ in spans)

        relay: dict[float, float] = defaultdict(float)
        for before, after, _ in spans:
            for labels, grown in increase(before, after, "debate_event_relay_seconds_bucket").items():
                relay[float(_label(labels, "le"))] += grown
        has_relay = bool(relay) and math.inf in relay
        relay_messages = relay.get(math.inf, 0.0)

        flows: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for labels, per_second in rate("gen_ai_client_token_usage_sum").items():
            flows[_label(labels, "gen_ai_request_model")][_label(labels, "gen_ai_token_type")] += per_second
        for labels, per_second in rate("accounting_cost_usd_total").items():
            flows[_label(labels, "gen_ai_request_model")]["cost"] += per_second * 3600
        models = [
            ModelFlow(model, flow.get("output", 0.0), flow.get("input", 0.0), flow.get("cost", 0.0))
            for model, flow in flows.items()
        ]
        models.sort(key=lambda m: (-m.output_tokens_per_second, -m.cost_per_hour, m.model))

        return SuiteFigures(
            window_seconds=max((seconds for _, _, seconds in spans), default=0.0),
            endpoints_up=len(newest),
            endpoints_down=dict(self._down),
            debates_running=round(_gauge(newest, "debate_debates_running")),
            debates_queued=round(_gauge(newest, "debate_debates_queued")),
            debates_started=over_window("debate_debates_started_total"),
            debates_ended=over_window("debate_debates_ended_total"),
            events_per_second=sum(rate("debate_events_appended_total").values()),
            subscribers=round(_gauge(newest, "debate_event_subscribers")),
            relay_messages=relay_messages,
            relay_p50=histogram_quantile(0.5, relay) if has_relay else None,
            relay_p99=histogram_quantile(0.99, relay) if has_relay else None,
            cost_per_hour=sum(m.cost_per_hour for m in models),
            models=models,
            errors=self._errors(newest, rate),
        )

    @staticmethod
    def _errors(newest: list[Snapshot], rate: Callable[[str], dict[Labels, float]]) -> list[ErrorRate]:
        """gRPC calls a service ended with a code other than OK or CANCELLED, and provider errors by
        model. CANCELLED is the caller's own doing (a watcher that detaches ends its
        StreamDebateEvents so), not a fault of the suite's."""
        found: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])

        def key(name: str, labels: Labels) -> tuple[str, str, str] | None:
            if name == "grpc_server_handled_total":
                code = _label(labels, "grpc_code")
                if code in NOT_ERRORS:
                    return None
                service = _label(labels, "grpc_service").rpartition(".")[2]
                return (service, _label(labels, "grpc_method"), code)
            return ("provider", _label(labels, "gen_ai_request_model"), _label(labels, "reason"))

        for name in ("grpc_server_handled_total", "llm_provider_errors_total"):
            for snap in newest:
                for labels, value in snap.series(name).items():
                    if (k := key(name, labels)) is not None:
                        found[k][1] += value
            for labels, per_second in rate(name).items():
                if (k := key(name, labels)) is not None:
                    found[k][0] += per_second
        errors = [ErrorRate(*k, per_second, total) for k, (per_second, total) in found.items() if total > 0]
        errors.sort(key=lambda e: (-e.per_second, -e.total, e.source, e.what, e.code))
        return errors
