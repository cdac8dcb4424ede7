"""Mutual TLS: with certificates configured a server refuses clients without a good certificate."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.auth import current_tenant
from services.common.channels import open_channel
from services.common.server import GrpcService, ServiceBinding
from services.common.settings import ServiceSettings
from services.common.tls import TlsFiles
from tests.security.certs import TestCA

SERVICE = "test.tls.v1.WhoService"
KEY = "svc-key-0123456789"


async def _whoami(request: bytes, context) -> bytes:
    return current_tenant().encode()


def _add(servicer, server):
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(SERVICE, {"Whoami": grpc.unary_unary_rpc_method_handler(_whoami)})]
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = TestCA(folder)
    rogue = TestCA(folder, name="rogue CA")
    return {
        "ca": ca,
        "server": ca.issue("server"),
        "client": ca.issue("client", dns=("orchestrator",), ips=()),
        "rogue_client": rogue.issue("rogue-client"),
        "named": ca.issue("judge", dns=("judge",), ips=()),
    }


def _tls_settings(issued, **extra) -> ServiceSettings:
    return ServiceSettings(
        port=0, tls_cert_file=issued.cert_file, tls_key_file=issued.key_file, tls_ca_file=issued.ca_file, **extra
    )


async def _serve(settings: ServiceSettings) -> GrpcService:
    service = GrpcService(settings, [ServiceBinding(SERVICE, _add, None)])
    await service.start()
    return service


async def _who(channel) -> str:
    return (await channel.unary_unary(f"/{SERVICE}/Whoami")(b"", timeout=5, wait_for_ready=False)).decode()


async def _refused(channel) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _who(channel)
    return refused.value.code()


@pytest.fixture
async def tls_server(pki):
    service = await _serve(_tls_settings(pki["server"]))
    assert service.tls is not None
    yield service
    await service.stop(grace=0)


async def test_client_with_a_certificate_from_the_ca_is_served(tls_server, pki):
    async with open_channel(tls_server.address, settings=_tls_settings(pki["client"])) as channel:
        assert await _who(channel) == "default"
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_list_of_tls_replicas_is_verified_and_served(pki):
    """Two replicas with the server's certificate (an IP SAN of 127.0.0.1), one channel to both:
    the name checked is the first replica's host, and both serve."""
    replicas = [await _serve(_tls_settings(pki["server"])) for _ in range(2)]
    try:
        address = ",".join(replica.address for replica in replicas)
        async with open_channel(address, settings=_tls_settings(pki["client"])) as channel:
            assert [await _who(channel) for _ in range(4)] == ["default"] * 4
    finally:
        for replica in replicas:
            await replica.stop(grace=0)


async def test_plaintext_client_is_refused(tls_server):
    async with grpc.aio.insecure_channel(tls_server.address) as channel:
        assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE


async def test_client_without_a_certificate_is_refused(tls_server, pki):
    ca = Path(pki["server"].ca_file).read_bytes()
    async with grpc.aio.secure_channel(
        tls_server.address, grpc.ssl_channel_credentials(root_certificates=ca)
    ) as channel:
        assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE


async def test_client_with_a_certificate_from_another_ca_is_refused(tls_server, pki):
    rogue = pki["rogue_client"]
    # The rogue client trusts the real CA (so it accepts the server) but presents a foreign certificate.
    files = TlsFiles(rogue.cert_file, rogue.key_file, pki["server"].ca_file)
    async with open_channel(tls_server.address, tls=files) as channel:
        assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE


async def test_client_refuses_a_server_it_cannot_verify(pki):
    service = await _serve(_tls_settings(pki["server"]))
    try:
        rogue = pki["rogue_client"]
        # A client whose CA is the rogue one cannot verify the real server.
        async with open_channel(service.address, tls=TlsFiles(rogue.cert_file, rogue.key_file, rogue.ca_file)) as ch:
            assert await _refused(ch) == grpc.StatusCode.UNAVAILABLE
    finally:
        await service.stop(grace=0)


async def test_server_name_override_verifies_a_certificate_for_another_name(pki):
    service = await _serve(_tls_settings(pki["named"]))  # a certificate for DNS:judge only
    try:
        client = pki["client"]
        async with open_channel(service.address, tls=TlsFiles(client.cert_file, client.key_file, client.ca_file)) as ch:
            assert await _refused(ch) == grpc.StatusCode.UNAVAILABLE  # 127.0.0.1 is not "judge"
        named = TlsFiles(client.cert_file, client.key_file, client.ca_file, server_name="judge")
        async with open_channel(service.address, tls=named) as channel:
            assert await _who(channel) == "default"
    finally:
        await service.stop(grace=0)


async def test_mutual_tls_and_api_keys_together(pki):
    service = await _serve(_tls_settings(pki["server"], api_keys=f"{KEY}=suite"))
    try:
        async with open_channel(service.address, settings=_tls_settings(pki["client"], service_api_key=KEY)) as channel:
            assert await _who(channel) == "suite"
        async with open_channel(service.address, settings=_tls_settings(pki["client"])) as channel:
            assert await _refused(channel) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await service.stop(grace=0)


async def test_channels_read_tls_files_from_the_environment(tls_server, pki, monkeypatch):
    client = pki["client"]
    monkeypatch.setenv("TLS_CERT_FILE", client.cert_file)
    monkeypatch.setenv("TLS_KEY_FILE", client.key_file)
    monkeypatch.setenv("TLS_CA_FILE", client.ca_file)
    async with open_channel(tls_server.address, settings=ServiceSettings()) as channel:
        assert await _who(channel) == "default"


def test_partial_or_missing_tls_configuration_is_an_error(pki, tmp_path):
    assert TlsFiles.from_settings(ServiceSettings()) is None
    with pytest.raises(ValueError, match="TLS_KEY_FILE"):
        TlsFiles.from_settings(
            ServiceSettings(tls_cert_file=pki["server"].cert_file, tls_ca_file=pki["server"].ca_file)
        )
    with pytest.raises(ValueError, match="not a readable file"):
        TlsFiles.from_settings(
            ServiceSettings(
                tls_cert_file=str(tmp_path / "nope.crt"),
                tls_key_file=pki["server"].key_file,
                tls_ca_file=pki["server"].ca_file,
            )
        )
    with pytest.raises(ValueError):
        GrpcService(ServiceSettings(port=0, tls_cert_file=pki["server"].cert_file), [])
