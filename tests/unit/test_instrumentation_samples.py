"""bench_fanout.instrumentation_samples: which of py-spy's samples are the observability layers'."""

from __future__ import annotations

import sysconfig

from tests.benchmarks.bench_fanout import instrumentation_samples

SITE = "/venv/lib/python3.11/site-packages"
STDLIB = sysconfig.get_paths()["stdlib"]
LOOP = f"run (/repo/services/common/server.py:290);run ({SITE}/uvloop/__init__.py:82)"


def frame(function: str, path: str, line: int = 1) -> str:
    return f"{function} ({path}:{line})"


def test_the_layers_own_frames_count_and_what_they_wrap_does_not() -> None:
    traced_call = ";".join(
        [
            LOOP,
            frame("TracedLLM.stream_to", "/repo/services/common/tracing.py"),
            frame("LLMRouter.stream_to", "/repo/services/common/llm/router.py"),
            frame("Condition.wait", f"{STDLIB}/threading.py"),
        ]
    )
    span_attributes = ";".join(
        [
            LOOP,
            frame("TracedLLM.stream_to", "/repo/services/common/tracing.py"),
            frame("Span.set_attributes", f"{SITE}/opentelemetry/sdk/trace/__init__.py"),
            frame("Lock.__enter__", f"{STDLIB}/threading.py"),
        ]
    )
    counter = ";".join(
        [
            LOOP,
            frame("timed", "/repo/services/common/grpc_metrics.py"),
            frame("MutexValue.inc", f"{SITE}/prometheus_client/values.py"),
        ]
    )
    export = ";".join(
        [
            frame("Thread.run", f"{STDLIB}/threading.py"),
            frame("BatchProcessor.worker", f"{SITE}/opentelemetry/sdk/_shared_internal/__init__.py"),
            frame("_UnaryUnaryMultiCallable.__call__", f"{SITE}/grpc/_channel.py"),
        ]
    )
    encoding = ";".join([LOOP, frame("SerializeToString", f"{SITE}/google/protobuf/message.py")])
    raw = "\n".join([f"{traced_call} 7", f"{span_attributes} 2", f"{counter} 3", f"{export} 5", f"{encoding} 11", ""])
    total, ours, files = instrumentation_samples(raw)
    assert (total, ours) == (28, 10)
    assert files == {
        "opentelemetry/sdk/trace/__init__.py": 2,
        "prometheus_client/values.py": 3,
        "opentelemetry/sdk/_shared_internal/__init__.py": 5,
    }
