"""Client channels for service-to-service calls.

Every channel retries UNAVAILABLE through gRPC's own retry policy (the call is re-sent only
when the server did not act on it, and every call that spends or records money carries an
idempotency key anyway).

A service's address may list its replicas, `host:port,host:port` (IP addresses; one name
that DNS resolves to several addresses works too, as in docker-compose). The channel then
spreads calls over them with gRPC's client-side `round_robin` and watches each replica through
grpc.health.v1 (`healthCheckConfig`): a replica that dies (its connection drops) or stops
(NOT_SERVING) leaves the rotation at once, and the UNAVAILABLE retry goes to another replica.
Client-side balancing keeps the orchestrator's calls to the judge and accounting one hop, with
no proxy to run and no extra copy of each token's usage through Envoy.

Two optional settings shape every channel (see docs/reliability.md):
- `SERVICE_API_KEY`: sent as `authorization: Bearer <key>` on every call, so the called
  service's `API_KEYS` can admit the suite's own services;
- `TLS_CERT_FILE`/`TLS_KEY_FILE`/`TLS_CA_FILE`: the channel uses TLS, verifies the server
  against the CA and presents this service's certificate (mutual TLS).
Both come from the settings passed in (the calling service's own, built once in its
`__main__`); a channel opened without settings sends no key and uses plaintext.
"""

from __future__ import annotations

import ipaddress
import json

import grpc

from services.common.auth import AUTHORIZATION_HEADER, bearer_metadata
from services.common.grpc_metrics import client_interceptors
from services.common.metrics import GrpcMetrics
from services.common.settings import ChannelSettings
from services.common.tls import TlsFiles
from services.common.tracing import Tracing

_SERVICE_CONFIG: dict = {
    # Every replica the address names, in turn; a replica is used only while its health
    # service says SERVING ("" is the server's overall health, NOT_SERVING from the start of
    # a graceful stop; a server without the health service counts as healthy).
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": ""},
    "methodConfig": [
        {
            "name": [{}],
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.1s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}
RETRY_SERVICE_CONFIG = json.dumps(_SERVICE_CONFIG)
# Through a gateway (Envoy: one address, its own health checks of the replicas behind it, and no
# grpc.health.v1 of its own to watch), without the client's health checks.
GATEWAY_SERVICE_CONFIG = json.dumps(
    {key: value for key, value in _SERVICE_CONFIG.items() if key != "healthCheckConfig"}
)

CHANNEL_OPTIONS = [
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


def _with_metadata(
    details: grpc.aio.ClientCallDetails, extra: tuple[tuple[str, str], ...]
) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(tuple(details.metadata) if details.metadata else ()))
    for key, value in extra:
        if key not in metadata:  # a call that brings its own authorization keeps it
            metadata.add(key, value)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _UnaryUnaryBearer(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, extra):
        self.extra = extra

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(_with_metadata(client_call_details, self.extra), request)


class _UnaryStreamBearer(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, extra):
        self.extra = extra

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(_with_metadata(client_call_details, self.extra), request)


class _StreamUnaryBearer(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, extra):
        self.extra = extra

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await continuation(_with_metadata(client_call_details, self.extra), request_iterator)


class _StreamStreamBearer(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, extra):
        self.extra = extra

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await continuation(_with_metadata(client_call_details, self.extra), request_iterator)


def bearer_interceptors(key: str) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors that send `key` as a bearer token on every kind of call."""
    extra = bearer_metadata(key)
    assert extra[0][0] == AUTHORIZATION_HEADER
    return [_UnaryUnaryBearer(extra), _UnaryStreamBearer(extra), _StreamUnaryBearer(extra), _StreamStreamBearer(extra)]


def channel_target(address: str) -> str:
    """The gRPC target for `address`: `host:port` as it is, or a list of replicas
    `ip:port,ip:port` as one `ipv4:`/`ipv6:` target. ValueError for an empty entry, or a name in
    a list (gRPC resolves one name per target: give it one DNS name that lists the replicas)."""
    parts = [part.strip() for part in address.split(",")]
    if len(parts) == 1:
        return parts[0]
    hosts = []
    for part in parts:
        host, _, port = part.rpartition(":")
        host = host.strip("[]")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"a list of replicas takes IP addresses (host:port,host:port), not {part!r}") from None
        if not port.isdigit():
            raise ValueError(f"a replica's address needs a port: {part!r}")
        hosts.append((ip.version, f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"))
    versions = {version for version, _ in hosts}
    if len(versions) > 1:
        raise ValueError(f"a list of replicas takes IPv4 or IPv6 addresses, not both: {address!r}")
    return f"ipv{versions.pop()}:" + ",".join(text for _, text in hosts)


def open_channel(
    address: str,
    settings: ChannelSettings | None = None,
    *,
    service_key: str | None = None,
    tls: TlsFiles | None = None,
    health_checks: bool = True,
    metrics: GrpcMetrics | None = None,
    tracing: Tracing | None = None,
) -> grpc.aio.Channel:
    """An aio channel to another service of the suite at `address` (host:port, or its replicas
    ip:port,ip:port: see `channel_target`).

    `settings` (the caller's ChannelSettings, e.g. its ServiceSettings) give SERVICE_API_KEY
    and the TLS files; `service_key` and `tls` override them. Without settings and overrides
    the channel sends no key and uses plaintext. ValueError for a partial TLS configuration.
    `health_checks=False` for an address that may be a gateway (the CLI's `--target`): the
    replicas' grpc.health.v1 is then not watched (Envoy has none to watch, and does it itself).
    `metrics`: the calling process's gRPC metrics, which then count and time every call
    (`grpc_client_*`). `tracing`: the calling process's traces (services.common.tracing), which
    then make a client span of every call and send its context (`traceparent`) to the service.
    """
    target = channel_target(address)
    # A list of replicas has no one name: calls (and TLS's check of the server's name, unless
    # TLS_SERVER_NAME says otherwise) use the first replica's, as every replica of a service
    # presents the same certificate.
    authority = [("grpc.default_authority", address.split(",")[0].strip())] if target != address.strip() else []
    key = service_key
    if key is None:
        key = settings.service_api_key.get_secret_value() if settings is not None else ""
    files = tls if tls is not None else (TlsFiles.from_settings(settings) if settings is not None else None)
    interceptors: list[grpc.aio.ClientInterceptor] = tracing.client_interceptors() if tracing is not None else []
    if metrics is not None:
        interceptors.extend(client_interceptors(metrics))
    if key:
        interceptors.extend(bearer_interceptors(key))
    config = [("grpc.service_config", RETRY_SERVICE_CONFIG if health_checks else GATEWAY_SERVICE_CONFIG)]
    if files is not None:
        return grpc.aio.secure_channel(
            target,
            files.channel_credentials(),
            options=[*config, *CHANNEL_OPTIONS, *authority, *files.channel_options()],
            interceptors=interceptors or None,
        )
    return grpc.aio.insecure_channel(
        target, options=[*config, *CHANNEL_OPTIONS, *authority], interceptors=interceptors or None
    )
