"""API keys, tenants and the auth interceptor, over real grpc.aio servers on port 0."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.auth import ApiKeys, bearer_token, current_tenant
from services.common.channels import open_channel
from services.common.grpc_errors import error_details
from services.common.handlers import HandlerCache
from services.common.server import GrpcService, ServiceBinding
from services.common.settings import ServiceSettings

KEY_A = "key-alpha-0123456789"
KEY_B = "key-bravo-9876543210"
KEYS = f"{KEY_A}=tenantA,{KEY_B}=tenantB"
SERVICE = "test.auth.v1.WhoService"


async def _whoami(request: bytes, context) -> bytes:
    await asyncio.sleep(0.01 * (len(request) % 3))  # interleave concurrent calls
    return current_tenant().encode()


async def _whoami_stream(request: bytes, context):
    for _ in range(3):
        await asyncio.sleep(0)
        yield current_tenant().encode()


async def _whoami_writes(request: bytes, context) -> None:
    await context.write(current_tenant().encode())


async def _whoami_client_stream(requests, context) -> bytes:
    async for _ in requests:
        pass
    return current_tenant().encode()


def _add(servicer, server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Whoami": grpc.unary_unary_rpc_method_handler(_whoami),
                    "WhoamiStream": grpc.unary_stream_rpc_method_handler(_whoami_stream),
                    "WhoamiWrites": grpc.unary_stream_rpc_method_handler(_whoami_writes),
                    "WhoamiClientStream": grpc.stream_unary_rpc_method_handler(_whoami_client_stream),
                },
            )
        ]
    )


async def _serve(**settings) -> GrpcService:
    service = GrpcService(ServiceSettings(port=0, **settings), [ServiceBinding(SERVICE, _add, None)])
    await service.start()
    return service


def _bearer(key: str):
    return (("authorization", f"Bearer {key}"),)


async def _who(channel: grpc.aio.Channel, metadata=None, payload: bytes = b"") -> str:
    return (await channel.unary_unary(f"/{SERVICE}/Whoami")(payload, metadata=metadata, timeout=10)).decode()


@pytest.fixture
async def keyed():
    service = await _serve(api_keys=KEYS)
    yield service
    await service.stop(grace=0)


def test_parse_keys_and_tenants():
    keys = ApiKeys.parse(f" {KEY_A} = tenantA ,\n{KEY_B}=tenantB,")
    assert len(keys) == 2 and keys.tenants == {"tenantA", "tenantB"}
    assert keys.tenant_for(KEY_A) == "tenantA" and keys.tenant_for(KEY_B) == "tenantB"
    assert keys.tenant_for("key-unknown-000") is None and keys.tenant_for("") is None
    assert KEY_A not in repr(keys) and KEY_B not in repr(keys)
    assert not ApiKeys.parse("") and not ApiKeys.parse(" , ")


@pytest.mark.parametrize(
    "spec",
    [
        "sk-secret-aaaaaaaa",  # no tenant
        "sk-secret-aaaaaaaa=",  # empty tenant
        "short=tenantA",  # key too short
        "sk-secret-aaaaaaaa=bad tenant!",  # tenant with spaces
        "sk-secret-aaaaaaaa=a,sk-secret-aaaaaaaa=b",  # one key, two tenants
    ],
)
def test_bad_key_specs_are_refused_without_echoing_the_key(spec):
    with pytest.raises(ValueError) as error:
        ApiKeys.parse(spec)
    assert "sk-secret" not in str(error.value) and "short" not in str(error.value)


def test_bearer_token_parsing():
    assert bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert bearer_token([("Authorization", "bearer  abc ")]) == "abc"
    assert bearer_token([("authorization", b"Bearer abc")]) == "abc"
    assert bearer_token([("authorization", "Basic abc")]) is None
    assert bearer_token([("authorization", "Bearer ")]) is None
    assert bearer_token([("x-other", "Bearer abc")]) is None
    assert bearer_token(None) is None


async def test_without_keys_every_caller_is_the_default_tenant():
    service = await _serve()
    try:
        async with grpc.aio.insecure_channel(service.address) as channel:
            assert await _who(channel) == "default"
            assert await _who(channel, _bearer("anything-at-all-123")) == "default"
    finally:
        await service.stop(grace=0)


async def test_keys_map_callers_to_tenants(keyed):
    async with grpc.aio.insecure_channel(keyed.address) as channel:
        assert await _who(channel, _bearer(KEY_A)) == "tenantA"
        assert await _who(channel, _bearer(KEY_B)) == "tenantB"
        stream = channel.unary_stream(f"/{SERVICE}/WhoamiStream")(b"", metadata=_bearer(KEY_B), timeout=10)
        assert [m async for m in stream] == [b"tenantB"] * 3
        writes = channel.unary_stream(f"/{SERVICE}/WhoamiWrites")(b"", metadata=_bearer(KEY_A), timeout=10)
        assert [m async for m in writes] == [b"tenantA"]

        async def requests():
            yield b"x"
            yield b"y"

        reply = await channel.stream_unary(f"/{SERVICE}/WhoamiClientStream")(
            requests(), metadata=_bearer(KEY_A), timeout=10
        )
        assert reply == b"tenantA"


async def test_concurrent_calls_keep_their_own_tenant(keyed):
    async with grpc.aio.insecure_channel(keyed.address) as channel:
        keys = [KEY_A, KEY_B] * 15
        tenants = await asyncio.gather(*(_who(channel, _bearer(k), payload=b"x" * i) for i, k in enumerate(keys)))
    assert tenants == ["tenantA", "tenantB"] * 15


@pytest.mark.parametrize(
    "metadata,expected",
    [
        (None, "missing"),
        (_bearer("key-wrong-0123456789"), "unknown"),
        ((("authorization", f"Basic {KEY_A}"),), "missing"),
        (_bearer(KEY_A + "x"), "unknown"),
    ],
)
async def test_missing_or_unknown_keys_are_unauthenticated(keyed, caplog, metadata, expected):
    caplog.set_level(logging.DEBUG)
    async with grpc.aio.insecure_channel(keyed.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _who(channel, metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert expected in refused.value.details()
        info, _ = error_details(refused.value)
        assert info is not None and info.reason == "UNAUTHENTICATED"
        stream = channel.unary_stream(f"/{SERVICE}/WhoamiStream")(b"", metadata=metadata, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as refused_stream:
            [m async for m in stream]
        assert refused_stream.value.code() == grpc.StatusCode.UNAUTHENTICATED
    shown = caplog.text + refused.value.details() + str(refused.value.trailing_metadata())
    for key in (KEY_A, "key-wrong-0123456789"):
        assert key not in shown


async def test_health_and_reflection_stay_open(keyed):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with grpc.aio.insecure_channel(keyed.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

        async def ask():
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        replies = [
            r async for r in reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(ask(), timeout=5)
        ]
        names = {s.name for s in replies[0].list_services_response.service}
        assert SERVICE in names


async def test_unknown_method_is_unimplemented_not_unauthenticated(keyed):
    async with grpc.aio.insecure_channel(keyed.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await channel.unary_unary(f"/{SERVICE}/NoSuchMethod")(b"", timeout=5)
        assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_open_channel_sends_the_service_key(keyed, monkeypatch):
    async with open_channel(keyed.address, service_key=KEY_B) as channel:
        assert await _who(channel) == "tenantB"
        # A call's own authorization wins over the channel's service key.
        assert await _who(channel, _bearer(KEY_A)) == "tenantA"
        stream = channel.unary_stream(f"/{SERVICE}/WhoamiStream")(b"", timeout=10)
        assert [m async for m in stream] == [b"tenantB"] * 3
    async with open_channel(keyed.address, settings=ServiceSettings(service_api_key=KEY_A)) as channel:
        assert await _who(channel) == "tenantA"
    monkeypatch.setenv("SERVICE_API_KEY", KEY_B)
    async with open_channel(keyed.address, settings=ServiceSettings()) as channel:
        assert await _who(channel) == "tenantB"
    monkeypatch.delenv("SERVICE_API_KEY")
    async with open_channel(keyed.address, settings=ServiceSettings()) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _who(channel)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_settings_read_keys_from_the_environment_and_hide_them(monkeypatch):
    monkeypatch.setenv("API_KEYS", KEYS)
    monkeypatch.setenv("SERVICE_API_KEY", KEY_A)
    settings = ServiceSettings()
    assert settings.api_keys.get_secret_value() == KEYS
    assert settings.service_api_key.get_secret_value() == KEY_A
    assert KEY_A not in repr(settings) and KEY_A not in str(settings.model_dump())


async def test_a_bad_key_spec_stops_the_service_from_starting():
    with pytest.raises(ValueError) as error:
        GrpcService(ServiceSettings(port=0, api_keys="sk-secret-zzzzzzzz"), [ServiceBinding(SERVICE, _add, None)])
    assert "sk-secret" not in str(error.value)


async def _hold_stream(request: bytes, context):
    yield current_tenant().encode()
    await asyncio.sleep(30)  # held open until the client cancels


def _add_holding(servicer, server: grpc.aio.Server) -> None:
    _add(servicer, server)
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.auth.v1.HoldService", {"Hold": grpc.unary_stream_rpc_method_handler(_hold_stream)}
            )
        ]
    )


@pytest.mark.parametrize("keys", [KEYS, ""], ids=["tenants", "no-keys"])
async def test_open_streams_per_caller_are_limited(keys):
    service = GrpcService(
        ServiceSettings(port=0, api_keys=keys, max_streams_per_caller=2), [ServiceBinding(SERVICE, _add_holding, None)]
    )
    await service.start()
    try:
        async with grpc.aio.insecure_channel(service.address) as channel:
            hold = channel.unary_stream("/test.auth.v1.HoldService/Hold")
            first = [hold(b"", metadata=_bearer(KEY_A), timeout=20) for _ in range(2)]
            for call in first:
                assert await call.read() == (b"tenantA" if keys else b"default")
            third = hold(b"", metadata=_bearer(KEY_A), timeout=20)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await third.read()
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            info, _ = error_details(refused.value)
            assert info is not None and info.reason == "TOO_MANY_STREAMS"
            if keys:  # another tenant has its own allowance
                other = hold(b"", metadata=_bearer(KEY_B), timeout=20)
                assert await other.read() == b"tenantB"
                other.cancel()
            # Unary calls are not counted.
            assert await _who(channel, _bearer(KEY_A)) == ("tenantA" if keys else "default")
            first[0].cancel()
            for _ in range(100):  # the server notices the cancellation
                if service.auth.streams.open.get("tenantA" if keys else "default", 0) < 2:
                    break
                await asyncio.sleep(0.05)
            again = hold(b"", metadata=_bearer(KEY_A), timeout=20)
            assert await again.read() == (b"tenantA" if keys else b"default")
            again.cancel()
            first[1].cancel()
    finally:
        await service.stop(grace=0)


async def test_a_tenants_wrapped_handler_is_built_once_and_kept_apart(keyed):
    """AuthInterceptor keeps the handler it wraps for a method and tenant (services.common.handlers.
    HandlerCache): many calls build one per tenant, and each call still runs as its own tenant."""
    async with grpc.aio.insecure_channel(keyed.address) as channel:
        for _ in range(3):
            tenants = await asyncio.gather(*(_who(channel, _bearer(k)) for k in (KEY_A, KEY_B, KEY_A)))
            assert tenants == ["tenantA", "tenantB", "tenantA"]
    assert len(keyed.auth._admitted) == 2


def test_handler_cache_builds_once_per_key_and_handler_and_stays_bounded():
    cache = HandlerCache(limit=3)
    handler = grpc.unary_unary_rpc_method_handler(_whoami)
    other = grpc.unary_unary_rpc_method_handler(_whoami)
    built: list[str] = []

    def build(tag: str):
        def make(h):
            built.append(tag)
            return grpc.unary_unary_rpc_method_handler(h.unary_unary)

        return make

    first = cache.get("a", handler, build("a"))
    assert cache.get("a", handler, build("a")) is first and built == ["a"]
    assert cache.get("a", other, build("a2")) is not first and built == ["a", "a2"]  # another handler object
    for key in "bcd":  # past the limit it starts again, never holding more than 3
        cache.get(key, handler, build(key))
        assert len(cache) <= 3
