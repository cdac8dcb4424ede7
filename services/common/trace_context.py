"""A trace context kept in a database, as a W3C `traceparent` string, through OpenTelemetry's own
TraceContext propagator (the API package only: nothing of the SDK, nothing of grpc).

The orchestrator stores one with each debate (schema version 9, services/orchestrator/lifecycle.py)
so that a queued debate launched by another replica or process continues StartDebate's trace and
a resumed one links to its first run.
"""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.trace import get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_W3C = TraceContextTextMapPropagator()
TRACEPARENT = "traceparent"


def traceparent(context: Context) -> str:
    """The W3C `traceparent` ("00-{trace id}-{span id}-{flags}", 55 characters) of the span
    current in `context`, as the propagator writes it; '' when `context` has no valid span."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=context)
    return carrier.get(TRACEPARENT, "")


def context_from_traceparent(value: str) -> Context | None:
    """The context whose current span is the (remote, non-recording) span a stored `traceparent`
    names, as the propagator reads it; None for '' or a value it does not accept."""
    if not value:
        return None
    context = _W3C.extract({TRACEPARENT: value})
    return context if get_current_span(context).get_span_context().is_valid else None
