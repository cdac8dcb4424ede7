"""The loopback fault proxy: forwards, drops, cuts, stalls and pauses on demand."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.server import GrpcService
from services.common.settings import ServiceSettings
from tests.support.fault_proxy import FaultProxy

# Generous bounds for "it happens": these guard against a hang, they do not measure speed.
SOON = 10.0
# How long "nothing arrives" is watched while stalled.
QUIET = 0.3


@pytest.fixture
async def echo():
    async def handle(reader, writer):
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


@pytest.fixture
async def proxy(echo):
    async with FaultProxy("127.0.0.1", echo) as proxy:
        yield proxy


async def _connect(proxy: FaultProxy):
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", proxy.port), SOON)


async def _roundtrip(reader, writer, data: bytes) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), SOON)


async def _closed(reader) -> bool:
    """True when the connection ends (EOF or reset) within SOON."""
    try:
        return await asyncio.wait_for(reader.read(1), SOON) == b""
    except (ConnectionError, asyncio.IncompleteReadError):
        return True


async def test_forwards_both_ways(proxy):
    reader, writer = await _connect(proxy)
    assert await _roundtrip(reader, writer, b"hello") == b"hello"
    big = bytes(range(256)) * 2048  # 512 KiB, several chunks
    assert await _roundtrip(reader, writer, big) == big
    assert proxy.stats.accepted == 1 and proxy.stats.bytes_up == proxy.stats.bytes_down == 5 + len(big)
    writer.close()


async def test_drop_new_connections_keeps_live_ones(proxy):
    r1, w1 = await _connect(proxy)
    assert await _roundtrip(r1, w1, b"a") == b"a"
    proxy.drop_new = True
    r2, w2 = await _connect(proxy)
    assert await _closed(r2)
    assert proxy.stats.dropped == 1
    assert await _roundtrip(r1, w1, b"still here") == b"still here"
    proxy.drop_new = False
    r3, w3 = await _connect(proxy)
    assert await _roundtrip(r3, w3, b"b") == b"b"
    for w in (w1, w2, w3):
        w.close()


async def test_cut_resets_live_connections_and_accepts_new_ones(proxy):
    r1, w1 = await _connect(proxy)
    assert await _roundtrip(r1, w1, b"x") == b"x"
    assert proxy.cut() == 1
    assert await _closed(r1)
    assert proxy.live_connections == 0 and proxy.stats.cut == 1
    r2, w2 = await _connect(proxy)
    assert await _roundtrip(r2, w2, b"y") == b"y"
    w1.close()
    w2.close()


async def test_stall_holds_bytes_until_resumed(proxy):
    reader, writer = await _connect(proxy)
    assert await _roundtrip(reader, writer, b"1") == b"1"
    proxy.stall()
    writer.write(b"held")
    await writer.drain()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(reader.readexactly(4), QUIET)
    assert proxy.stalled and proxy.live_connections == 1
    proxy.resume()
    assert await asyncio.wait_for(reader.readexactly(4), SOON) == b"held"
    assert proxy.stats.chunks_held >= 1
    writer.close()


async def test_pause_resumes_by_itself(proxy):
    reader, writer = await _connect(proxy)
    await proxy.pause(0.5)
    writer.write(b"later")
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(5), SOON) == b"later"
    assert not proxy.stalled and proxy.stats.chunks_held >= 1
    writer.close()


async def test_delay_still_delivers_everything_in_order(proxy):
    proxy.delay = 0.05
    reader, writer = await _connect(proxy)
    for i in range(3):
        assert await _roundtrip(reader, writer, f"m{i}".encode()) == f"m{i}".encode()
    assert proxy.stats.chunks_delayed >= 6  # each message was delayed going up and coming back
    writer.close()


async def test_target_down_closes_the_client():
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with FaultProxy("127.0.0.1", port) as proxy:
        reader, writer = await _connect(proxy)
        assert await _closed(reader)
        assert proxy.stats.failed_upstream == 1
        writer.close()


async def test_grpc_through_the_proxy():
    service = GrpcService(ServiceSettings(port=0), [])
    await service.start()
    try:
        async with FaultProxy("127.0.0.1", service.port) as proxy, grpc.aio.insecure_channel(proxy.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=SOON)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            # A Watch stream stays open; cutting the connection ends it with UNAVAILABLE.
            watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=SOON * 3)
            first = await watch.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            proxy.drop_new = True
            proxy.cut()
            with pytest.raises(grpc.aio.AioRpcError) as cut:
                await watch.read()
            assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
            with pytest.raises(grpc.aio.AioRpcError) as dropped:
                await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
            assert dropped.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            proxy.drop_new = False
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=SOON, wait_for_ready=True)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await service.stop(grace=0)
