"""ghz's report, computed the way ghz does it.

The shapes and the arithmetic follow bojand/ghz `runner/reporter.go` (structs `Report`,
`Options`, `LatencyDistribution`, `Bucket`, `ResultDetail`; functions `latencies` and
`histogram`), so that a dashboard that reads ghz's JSON reads ours (`services.loadtest.formats`
writes it as JSON, and as ghz's summary and CSV):

- durations are integer nanoseconds (Go's `time.Duration`);
- `date` is RFC 3339 in seconds, a detail's `timestamp` RFC 3339 with nanoseconds;
- maps come out with sorted keys (Go's encoding/json sorts them), empty maps as `{}`, and
  `latencyDistribution`, `histogram` and `details` as `null` when there is nothing in them;
- the `options` object follows the Go struct's field order and `omitempty` tags.

One extension, which Go's decoder (and ghz's web importer) ignores: a server-streaming or
bidirectional run adds a top-level `messages` object, the same statistics per received
message (see `MessageStats`).
"""

from __future__ import annotations

import bisect
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

# ghz keeps at most this many details (runner/requester.go: maxResult).
MAX_RESULT = 1_000_000
PERCENTILES = (10, 25, 50, 75, 90, 95, 99)
NS = 1_000_000_000


# --- collection -----------------------------------------------------------------------


@dataclass
class CallRecorder:
    """What every finished call leaves behind, kept compact (arrays of int64)."""

    skip_first: int = 0
    count: int = 0
    total_latency_ns: int = 0
    status_dist: dict[str, int] = field(default_factory=dict)
    error_dist: dict[str, int] = field(default_factory=dict)
    latencies: array = field(default_factory=lambda: array("q"))
    timestamps: array = field(default_factory=lambda: array("q"))  # wall clock, ns
    # Sparse: index in `latencies` -> (status, error) for calls that did not end OK.
    failures: dict[int, tuple[str, str]] = field(default_factory=dict)
    _skipped: int = 0

    def add(self, latency_ns: int, end_wall_ns: int, status: str = "OK", error: str = "") -> None:
        if self._skipped < self.skip_first:
            self._skipped += 1
            return
        self.count += 1
        self.total_latency_ns += latency_ns
        self.status_dist[status] = self.status_dist.get(status, 0) + 1
        if error:
            self.error_dist[error] = self.error_dist.get(error, 0) + 1
        if len(self.latencies) < MAX_RESULT:
            if status != "OK" or error:
                self.failures[len(self.latencies)] = (status, error)
            self.latencies.append(latency_ns)
            self.timestamps.append(end_wall_ns)


@dataclass
class MessageStats:
    """Messages received on streaming calls.

    `gap` is a message's latency: the time since the previous message of its call, or since
    the call began for the first one. `first` is the time to the first message of a call.
    """

    count: int = 0
    calls_with_messages: int = 0
    gaps: array = field(default_factory=lambda: array("q"))
    first: array = field(default_factory=lambda: array("q"))
    total_gap_ns: int = 0

    def add_call(self, gaps_ns: list[int]) -> None:
        if not gaps_ns:
            return
        self.count += len(gaps_ns)
        self.calls_with_messages += 1
        self.total_gap_ns += sum(gaps_ns)
        if len(self.first) < MAX_RESULT:
            self.first.append(gaps_ns[0])
        room = MAX_RESULT - len(self.gaps)
        if room > 0:
            self.gaps.extend(gaps_ns[:room])


# --- ghz's arithmetic ------------------------------------------------------------------


def go_float(value: float) -> float | int:
    """A whole float64 as an int (Go writes 0, not 0.0); `formats.to_json` writes the rest as Go does."""
    return int(value) if value.is_integer() and abs(value) < 1e21 else value


def latency_distribution(sorted_ns: list[int]) -> list[dict[str, int]]:
    """ghz's `latencies()`: nearest-rank percentiles; a zero latency gives a zero entry."""
    n = len(sorted_ns)
    out = []
    for p in PERCENTILES:
        ip = p / 100.0 * n
        di = int(ip)
        if ip == float(di):
            di -= 1
        di = max(di, 0)
        value = sorted_ns[di]
        out.append({"percentage": p, "latency": value} if value > 0 else {"percentage": 0, "latency": 0})
    return out


def histogram(sorted_ns: list[int]) -> list[dict[str, Any]]:
    """ghz's `histogram()`: 11 marks in seconds, from the fastest to the slowest in 10 equal
    steps; a latency counts in the first bucket whose mark is >= it."""
    seconds = [v / NS for v in sorted_ns]
    fastest, slowest = seconds[0], seconds[-1]
    bc = 10
    step = (slowest - fastest) / bc
    marks = [fastest + step * i for i in range(bc)] + [slowest]
    counts = []
    below = 0
    for mark in marks:
        upto = bisect.bisect_right(seconds, mark)
        counts.append(max(upto - below, 0))
        below = max(below, upto)
    n = len(seconds)
    return [{"mark": go_float(m), "count": c, "frequency": go_float(c / n)} for m, c in zip(marks, counts, strict=True)]


def _stats(values: array | list[int], total_ns: int, count: int) -> dict[str, Any]:
    ordered = sorted(values)
    if not ordered:
        return {"average": 0, "fastest": 0, "slowest": 0, "latencyDistribution": None}
    return {
        "average": int(total_ns / count) if count else 0,
        "fastest": ordered[0],
        "slowest": ordered[-1],
        "latencyDistribution": latency_distribution(ordered),
    }


# --- times as Go writes them -------------------------------------------------------------


def _offset(seconds: float) -> str:
    local = time.localtime(seconds)
    off = local.tm_gmtoff or 0
    if off == 0:
        return "Z"
    sign = "+" if off > 0 else "-"
    off = abs(off)
    return f"{sign}{off // 3600:02d}:{off % 3600 // 60:02d}"


def rfc3339(seconds: float) -> str:
    """Go's time.RFC3339 in local time, e.g. 2026-11-27T09:30:00Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(seconds)) + _offset(seconds)


def rfc3339nano(wall_ns: int, _cache: dict[int, tuple[str, str]] = {}) -> str:  # noqa: B006
    """Go's encoding of a time.Time: RFC 3339 with the fraction's trailing zeros trimmed."""
    secs, frac = divmod(wall_ns, NS)
    parts = _cache.get(secs)
    if parts is None:  # one strftime per second of the run, not one per call
        if len(_cache) > 4096:
            _cache.clear()
        parts = _cache[secs] = (time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(secs)), _offset(secs))
    if frac:
        return parts[0] + "." + f"{frac:09d}".rstrip("0") + parts[1]
    return parts[0] + parts[1]


# --- the report ----------------------------------------------------------------------------


@dataclass
class RunOptions:
    """The run's settings, reported as ghz's `Options` struct."""

    call: str = ""
    host: str = ""
    proto: str = ""
    protoset: str = ""
    insecure: bool = False
    cacert: str = ""
    cert: str = ""
    key: str = ""
    cname: str = ""
    authority: str = ""
    rps: int = 0
    concurrency: int = 50
    total: int = 200
    connections: int = 1
    duration_ns: int = 0
    timeout_ns: int = 20 * NS
    dial_timeout_ns: int = 10 * NS
    keepalive_ns: int = 0
    data: Any = None
    metadata: dict[str, str] | None = None
    cpus: int = 1
    name: str = ""
    skip_first: int = 0
    count_errors: bool = False
    enable_compression: bool = False
    tags: dict[str, str] | None = None

    def to_ghz(self) -> dict[str, Any]:
        out: dict[str, Any] = {}

        def put(key: str, value: Any, omitempty: bool = True) -> None:
            if omitempty and not value:
                return
            out[key] = value

        put("call", self.call)
        put("host", self.host)
        put("proto", self.proto)
        put("protoset", self.protoset)
        put("enable-compression", self.enable_compression)
        put("cacert", self.cacert)
        put("cert", self.cert)
        put("key", self.key)
        put("cname", self.cname)
        put("insecure", self.insecure, omitempty=False)
        put("authority", self.authority)
        put("rps", self.rps)
        out.update(
            {
                "load-schedule": "const",
                "load-start": 0,
                "load-end": 0,
                "load-step": 0,
                "load-step-duration": 0,
                "load-max-duration": 0,
            }
        )
        put("concurrency", self.concurrency)
        out.update(
            {
                "concurrency-schedule": "const",
                "concurrency-start": 0,
                "concurrency-end": 0,
                "concurrency-step": 0,
                "concurrency-step-duration": 0,
                "concurrency-max-duration": 0,
            }
        )
        put("total", self.total)
        put("connections", self.connections)
        put("duration", self.duration_ns)
        put("timeout", self.timeout_ns)
        put("dial-timeout", self.dial_timeout_ns)
        put("keepalive", self.keepalive_ns)
        if self.data is not None:
            out["data"] = self.data
        out["binary"] = False
        if self.metadata is not None:
            out["metadata"] = self.metadata
        out["CPUs"] = self.cpus
        put("name", self.name)
        put("skipFirst", self.skip_first)
        put("count-errors", self.count_errors)
        return out


def build_report(
    options: RunOptions,
    calls: CallRecorder,
    total_ns: int,
    end_reason: str,
    messages: MessageStats | None = None,
    date: float | None = None,
) -> dict[str, Any]:
    """ghz's `Reporter.Finalize`, as a dict in the order Go marshals it."""
    report: dict[str, Any] = {"date": rfc3339(time.time() if date is None else date)}
    if options.name:
        report["name"] = options.name
    if end_reason:
        report["endReason"] = end_reason
    report["options"] = options.to_ghz()
    report.update(
        {
            "count": calls.count,
            "total": total_ns,
            "average": 0,
            "fastest": 0,
            "slowest": 0,
            "rps": 0,
            "errorDistribution": dict(sorted(calls.error_dist.items())),
            "statusCodeDistribution": dict(sorted(calls.status_dist.items())),
            "latencyDistribution": None,
            "histogram": None,
            "details": None,
        }
    )
    if len(calls.latencies):
        report["average"] = int(calls.total_latency_ns / calls.count)
        report["rps"] = go_float(calls.count / (total_ns / NS)) if total_ns else 0
        if options.count_errors or not calls.failures:
            ok = sorted(calls.latencies)
        else:
            ok = sorted(v for i, v in enumerate(calls.latencies) if i not in calls.failures)
        if ok:
            report["fastest"], report["slowest"] = ok[0], ok[-1]
            report["histogram"] = histogram(ok)
            report["latencyDistribution"] = latency_distribution(ok)
        details = []
        failures = calls.failures
        for i, (lat, ts) in enumerate(zip(calls.latencies, calls.timestamps, strict=True)):
            status, error = failures.get(i, ("OK", ""))
            details.append({"timestamp": rfc3339nano(ts), "latency": lat, "error": error, "status": status})
        report["details"] = details
    if options.tags:
        report["tags"] = options.tags
    if messages is not None:
        section: dict[str, Any] = {
            "count": messages.count,
            "rate": go_float(messages.count / (total_ns / NS)) if total_ns else 0,
            "perCall": go_float(messages.count / calls.count) if calls.count else 0,
        }
        section.update(_stats(messages.gaps, messages.total_gap_ns, messages.count))
        first_total = sum(messages.first)
        section["firstMessage"] = _stats(messages.first, first_total, len(messages.first))
        report["messages"] = section
    return report
