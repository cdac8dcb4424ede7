"""A channel to a list of replicas (services.common.channels): calls spread over them by gRPC's
round_robin, and a replica that dies or goes NOT_SERVING leaves the rotation at once."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common.channels import channel_target, open_channel

METHOD = "/test.Who/Name"


async def _replica(name: str) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    async def answer(request: bytes, context) -> bytes:
        return name.encode()

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler("test.Who", {"Name": grpc.unary_unary_rpc_method_handler(answer)})
    server.add_generic_rpc_handlers((handler,))
    servicer = health.aio.HealthServicer()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, servicer, port


async def _names(channel: grpc.aio.Channel, calls: int) -> list[str]:
    call = channel.unary_unary(METHOD)
    return [(await call(b"", timeout=5)).decode() for _ in range(calls)]


def test_a_list_of_replicas_is_one_target_and_names_are_refused_in_a_list():
    assert channel_target("judge:50052") == "judge:50052"
    assert channel_target("127.0.0.1:1, 127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert channel_target("[::1]:1,[::1]:2") == "ipv6:[::1]:1,[::1]:2"
    for bad in ("judge-1:1,judge-2:2", "127.0.0.1:1,", "127.0.0.1:x,127.0.0.1:2", "127.0.0.1:1,[::1]:2"):
        with pytest.raises(ValueError):
            channel_target(bad)


async def test_calls_spread_over_the_replicas_and_skip_one_that_stops_or_dies():
    replicas = [await _replica(name) for name in ("a", "b", "c")]
    address = ",".join(f"127.0.0.1:{port}" for _, _, port in replicas)
    try:
        async with open_channel(address) as channel:
            first = await _names(channel, 30)
            # round_robin over every ready replica (the first calls may find some still connecting)
            await asyncio.sleep(0.2)
            spread = await _names(channel, 30)
            assert {name: spread.count(name) for name in "abc"} == {"a": 10, "b": 10, "c": 10}, first

            await replicas[1][1].set("", health_pb2.HealthCheckResponse.NOT_SERVING)  # b stops gracefully
            await asyncio.sleep(0.2)
            assert set(await _names(channel, 20)) == {"a", "c"}

            await replicas[0][0].stop(grace=None)  # a dies: its connection drops
            assert set(await _names(channel, 20)) == {"c"}  # every call answered, none failed
    finally:
        for server, _, _ in replicas:
            await server.stop(grace=None)


async def test_a_channel_without_health_checks_ignores_the_servers_health_as_a_gateways_client_should():
    """The CLI's channel to `--target` (maybe Envoy, which has no health service to watch and
    checks the replicas itself) does not watch grpc.health.v1; a service's channel does."""
    server, servicer, port = await _replica("only")
    await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        async with open_channel(f"127.0.0.1:{port}", health_checks=False) as channel:
            assert await channel.unary_unary(METHOD)(b"", timeout=5) == b"only"
        async with open_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(METHOD)(b"", timeout=1)
            assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        await server.stop(None)
