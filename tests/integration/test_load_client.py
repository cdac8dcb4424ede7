"""The load client against a small test service of its own, found through reflection.

The service is declared at run time (a FileDescriptorProto added to the default pool, which
the reflection servicer reads) so the client is shown to drive a method it has no generated
code for: a unary echo that fails on demand, a server stream of N messages, and an endless
stream.
"""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import jsonschema
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection

from services.loadtest.config import LoadConfig
from services.loadtest.formats import format_summary
from services.loadtest.reflection import CallError, parse_call
from services.loadtest.runner import run_load

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "load" / "ghz_report.schema.json").read_text())
SERVICE = "loadtest.test.v1.TestService"


def _declare_service() -> tuple[type, type]:
    """(Text, Number): messages with one field `value`, a string and a uint32."""
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(SERVICE)
    except KeyError:
        file = descriptor_pb2.FileDescriptorProto(
            name="loadtest/test/v1/test_service.proto", package="loadtest.test.v1", syntax="proto3"
        )
        F = descriptor_pb2.FieldDescriptorProto
        file.message_type.add(name="Text").field.add(name="value", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
        file.message_type.add(name="Number").field.add(
            name="value", number=1, type=F.TYPE_UINT32, label=F.LABEL_OPTIONAL
        )
        service = file.service.add(name="TestService")
        service.method.add(name="Echo", input_type=".loadtest.test.v1.Text", output_type=".loadtest.test.v1.Text")
        service.method.add(
            name="Count",
            input_type=".loadtest.test.v1.Number",
            output_type=".loadtest.test.v1.Text",
            server_streaming=True,
        )
        service.method.add(
            name="Forever",
            input_type=".loadtest.test.v1.Text",
            output_type=".loadtest.test.v1.Text",
            server_streaming=True,
        )
        pool.AddSerializedFile(file.SerializeToString())
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("loadtest.test.v1.Text")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("loadtest.test.v1.Number")),
    )


Text, Number = _declare_service()


class EchoServicer:
    def __init__(self):
        self.lock = threading.Lock()
        self.seen: list[str] = []
        self.peers: set[str] = set()
        self.metadata: list[dict[str, str]] = []

    def echo(self, request, context):
        with self.lock:
            self.seen.append(request.value)
            self.peers.add(context.peer())
            self.metadata.append(dict(context.invocation_metadata()))
        if request.value.startswith("fail:"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.value[5:])
        return Text(value=request.value)

    def count(self, request, context):
        for i in range(request.value):
            yield Text(value=str(i))

    def forever(self, request, context):
        while context.is_active():
            yield Text(value="tick")
            time.sleep(0.01)


@pytest.fixture(scope="module")
def server():
    servicer = EchoServicer()
    sv = Text
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(servicer.echo, sv.FromString, sv.SerializeToString),
        "Count": grpc.unary_stream_rpc_method_handler(servicer.count, Number.FromString, sv.SerializeToString),
        "Forever": grpc.unary_stream_rpc_method_handler(servicer.forever, sv.FromString, sv.SerializeToString),
    }
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    srv.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    reflection.enable_server_reflection([SERVICE, reflection.SERVICE_NAME], srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    yield f"127.0.0.1:{port}", servicer
    srv.stop(None)


def _run(address: str, call: str, **kwargs):
    return run_load(LoadConfig(target=address, call=call, insecure=True, **kwargs))


def test_unary_calls_are_counted_and_the_report_is_ghz_shaped(server):
    address, _ = server
    report = _run(address, f"{SERVICE}.Echo", data='{"value":"hi"}', total=50, concurrency=5)
    jsonschema.validate(report, SCHEMA)
    assert report["count"] == 50
    assert report["statusCodeDistribution"] == {"OK": 50}
    assert report["errorDistribution"] == {}
    assert report["endReason"] == "normal"
    assert len(report["details"]) == 50
    assert [e["percentage"] for e in report["latencyDistribution"]] == [10, 25, 50, 75, 90, 95, 99]
    assert len(report["histogram"]) == 11
    assert sum(b["count"] for b in report["histogram"]) == 50
    assert 0 < report["fastest"] <= report["average"] <= report["slowest"] <= report["total"]
    assert report["options"]["call"] == f"{SERVICE}.Echo"
    assert report["options"]["data"] == {"value": "hi"}
    assert "messages" not in report
    assert "Status code distribution:\n  [OK]" in format_summary(report)


def test_errors_are_reported_with_go_status_names_and_texts(server):
    address, _ = server
    data = json.dumps([{"value": "ok"}, {"value": "fail:bad input"}])
    report = _run(address, f"{SERVICE}/Echo", data=data, total=10, concurrency=2)
    jsonschema.validate(report, SCHEMA)
    assert report["statusCodeDistribution"] == {"InvalidArgument": 5, "OK": 5}
    assert report["errorDistribution"] == {"rpc error: code = InvalidArgument desc = bad input": 5}
    statuses = [d["status"] for d in report["details"]]
    assert statuses.count("InvalidArgument") == 5
    # Only OK calls are in the latency statistics, as in ghz without --count-errors.
    assert sum(b["count"] for b in report["histogram"]) == 5
    counted = _run(address, f"{SERVICE}/Echo", data=data, total=10, concurrency=2, count_errors=True)
    assert sum(b["count"] for b in counted["histogram"]) == 10


def test_call_template_data_gives_each_request_its_own_values(server):
    address, servicer = server
    with servicer.lock:
        servicer.seen.clear()
    report = _run(
        address, f"{SERVICE}.Echo", data='{"value":"req-{{.RequestNumber}}-{{.UUID}}"}', total=20, concurrency=4
    )
    assert report["statusCodeDistribution"] == {"OK": 20}
    with servicer.lock:
        seen = list(servicer.seen)
    assert sorted(int(v.split("-")[1]) for v in seen) == list(range(20))
    assert len(set(seen)) == 20


def test_metadata_reaches_the_server(server):
    address, servicer = server
    with servicer.lock:
        servicer.metadata.clear()
    _run(address, f"{SERVICE}.Echo", data='{"value":"m"}', total=3, concurrency=1, metadata={"x-tenant": "t1"})
    with servicer.lock:
        assert all(m.get("x-tenant") == "t1" for m in servicer.metadata) and len(servicer.metadata) == 3


def test_connections_are_separate_http2_connections(server):
    address, servicer = server
    with servicer.lock:
        servicer.peers.clear()
    _run(address, f"{SERVICE}.Echo", data='{"value":"c"}', total=30, concurrency=6, connections=3)
    with servicer.lock:
        assert len(servicer.peers) == 3


def test_server_streaming_is_measured_per_call_and_per_message(server):
    address, _ = server
    report = _run(address, f"{SERVICE}.Count", data='{"value":5}', total=10, concurrency=3)
    jsonschema.validate(report, SCHEMA)
    assert report["statusCodeDistribution"] == {"OK": 10}
    messages = report["messages"]
    assert messages["count"] == 50
    assert messages["perCall"] == 5
    assert messages["rate"] > 0
    assert [e["percentage"] for e in messages["latencyDistribution"]] == [10, 25, 50, 75, 90, 95, 99]
    assert messages["firstMessage"]["fastest"] > 0
    assert "Messages received (streaming):" in format_summary(report)


def test_an_endless_stream_ends_after_the_stream_call_count_as_ok(server):
    address, _ = server
    report = _run(address, f"{SERVICE}.Forever", data="{}", total=4, concurrency=2, stream_call_count=3)
    assert report["statusCodeDistribution"] == {"OK": 4}
    assert report["messages"]["count"] == 12


def test_duration_ignores_total_and_ends_as_timeout(server):
    address, _ = server
    report = _run(
        address, f"{SERVICE}.Echo", data='{"value":"z"}', total=1, concurrency=2, duration=0.3, duration_stop="wait"
    )
    jsonschema.validate(report, SCHEMA)
    assert report["endReason"] == "timeout"
    assert report["count"] > 1
    assert report["options"]["total"] == 2**31 - 1  # ghz: n is MaxInt32 under -z
    assert report["options"]["duration"] == 300_000_000
    assert set(report["statusCodeDistribution"]) == {"OK"}
    # "close" (ghz's default) reports the calls still in flight as Canceled.
    closed = _run(address, f"{SERVICE}.Forever", data="{}", concurrency=2, duration=0.2)
    assert closed["endReason"] == "timeout"
    assert closed["statusCodeDistribution"] == {"Canceled": 2}


def test_rps_spaces_the_calls(server):
    address, _ = server
    report = _run(address, f"{SERVICE}.Echo", data='{"value":"r"}', total=10, concurrency=5, rps=100)
    assert report["count"] == 10
    # Call i starts at i/rps: the tenth cannot start before 90 ms (a lower bound, not a limit).
    assert report["total"] >= 90_000_000


def test_unknown_methods_and_bad_data_are_reported_before_any_load(server):
    address, _ = server
    with pytest.raises(CallError, match="has: Count, Echo, Forever"):
        _run(address, f"{SERVICE}.Nope")
    with pytest.raises(CallError, match="not found"):
        _run(address, "no.such.Service/Call")
    with pytest.raises(CallError, match="does not fit"):
        _run(address, f"{SERVICE}.Echo", data='{"nope": 1}')


def test_parse_call_takes_both_ghz_spellings():
    assert parse_call("a.b.Svc.Method") == ("a.b.Svc", "Method")
    assert parse_call("a.b.Svc/Method") == ("a.b.Svc", "Method")
    assert parse_call("/a.b.Svc/Method") == ("a.b.Svc", "Method")
    with pytest.raises(CallError):
        parse_call("Method")


def test_several_processes_make_one_report_with_unique_request_numbers(server):
    from services.loadtest.multi import run_procs, split

    address, servicer = server
    with servicer.lock:
        servicer.seen.clear()
    config = LoadConfig(
        target=address,
        call=f"{SERVICE}.Echo",
        data='{"value":"p-{{.RequestNumber}}"}',
        total=41,
        concurrency=6,
        insecure=True,
    )
    assert [c.total for c in split(config, 2)] == [21, 20]
    assert [c.first_number for c in split(config, 2)] == [0, 21]
    report = run_procs(config, 2)
    jsonschema.validate(report, SCHEMA)
    assert report["count"] == 41 and report["statusCodeDistribution"] == {"OK": 41}

    def instant(text: str) -> tuple[str, str]:  # same offset throughout: whole seconds, then the fraction
        whole, fraction = re.fullmatch(r"(.*?)(?:\.(\d+))?(?:Z|[+-]\d\d:\d\d)", text).groups()
        return whole, (fraction or "").ljust(9, "0")

    stamps = [instant(d["timestamp"]) for d in report["details"]]
    assert stamps == sorted(stamps)
    with servicer.lock:
        assert sorted(int(v.split("-")[1]) for v in servicer.seen) == list(range(41))
