"""`debate-engine up`: the suite's processes, started, watched and stopped together.

`Suite` is also what the demo, the CLI and the end-to-end tests use to bring the services
up: each service runs as its own process, is polled through grpc.health.v1 until SERVING,
and has its output relayed line by line with a `[name]` prefix.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.tls import TlsFiles

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _terminate_with_parent() -> None:
    """In the child: SIGTERM when the launcher dies, even by SIGKILL, so nothing is orphaned."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    # Address polled through grpc.health.v1; None for a process checked another way.
    health_address: str | None
    health_service: str = ""
    env: dict[str, str] = field(default_factory=dict)
    # For a process that is not a gRPC service (Envoy, the page's file server): a check
    # that returns True once it is ready, polled like the health check.
    ready_check: Callable[[], Awaitable[bool]] | None = None
    # What `up` prints as the process's address (defaults to health_address).
    display_address: str | None = None


@dataclass
class RunningProcess:
    spec: ProcessSpec
    process: asyncio.subprocess.Process
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=20))
    relay: asyncio.Task | None = None


class ProcessDied(RuntimeError):
    def __init__(self, name: str, returncode: int, tail: list[str]):
        self.name, self.returncode, self.tail = name, returncode, tail
        last = "\n  ".join(tail[-10:]) or "(no output)"
        super().__init__(f"{name} exited with code {returncode}; its last lines:\n  {last}")


@dataclass
class SuiteConfig:
    host: str = "127.0.0.1"
    orchestrator_port: int = 50051
    judge_port: int = 50052
    accounting_port: int = 50053
    data_dir: str = "var"
    log_level: str = "INFO"
    extra_env: dict[str, str] = field(default_factory=dict)
    # Envoy (grpc-web) and the page; GATEWAY_ENABLED=0 leaves them out.
    gateway: GatewayConfig = field(default_factory=lambda: GatewayConfig.from_env())

    def address(self, port: int) -> str:
        return f"{self.host}:{port}"

    @property
    def orchestrator_address(self) -> str:
        return self.address(self.orchestrator_port)

    def process_specs(self) -> list[ProcessSpec]:
        common = {
            "HOST": self.host,
            "DATA_DIR": self.data_dir,
            "LOG_LEVEL": self.log_level,
            "JUDGE_SERVICE_ADDR": self.address(self.judge_port),
            "ACCOUNTING_SERVICE_ADDR": self.address(self.accounting_port),
            **self.extra_env,
        }
        python = sys.executable
        orchestrator_env = {**common, "PORT": str(self.orchestrator_port)}
        jwt = self.gateway.jwt() if self.gateway.enabled else None
        if jwt is not None:
            # The gateway authenticates callers and names their tenant in this header; the
            # orchestrator believes it (services.common.auth), so it must be reachable only
            # through the gateway or over mutual TLS (docs/reliability.md).
            orchestrator_env["TRUSTED_TENANT_HEADER"] = jwt.tenant_header
        return [
            ProcessSpec("accounting", [python, "-m", "services.accounting"], self.address(self.accounting_port),
                        "debate.accounting.v1.AccountingService", {**common, "PORT": str(self.accounting_port)}),
            ProcessSpec("judge", [python, "-m", "services.judge"], self.address(self.judge_port),
                        "debate.judge.v1.JudgeService", {**common, "PORT": str(self.judge_port)}),
            ProcessSpec("orchestrator", [python, "-m", "services.orchestrator"], self.orchestrator_address,
                        "debate.orchestrator.v1.OrchestratorService", orchestrator_env),
            *gateway_specs(self),
        ]


def _dial(address: str, tls: TlsFiles | None) -> grpc.aio.Channel:
    if tls is None:
        return grpc.aio.insecure_channel(address)
    from services.common.channels import open_channel

    # The credentials a service's own channels use: verify the server against the CA and
    # present the certificate (health is open, so no key is sent).
    return open_channel(address, service_key="", tls=tls)


def _process_tls(env: dict[str, str]) -> TlsFiles | None:
    """The TLS files a process is started with (its env over ours), None for plaintext."""
    try:
        return TlsFiles.from_environment({**os.environ, **env})
    except ValueError:
        return None  # the service itself stops at start with the error; the launcher reports that


async def wait_serving(address: str, service: str, timeout: float, *, tls: TlsFiles | None = None) -> None:
    """Polls grpc.health.v1 until `service` reports SERVING (over mutual TLS with `tls`)."""
    deadline = time.monotonic() + timeout
    async with _dial(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service or address} did not report SERVING within {timeout:.0f}s")
            await asyncio.sleep(0.1)


class Suite:
    """The suite's processes. Use `async with Suite(specs):` or start()/stop()."""

    def __init__(self, specs: list[ProcessSpec], *, output: Callable[[str], None] | None = print,
                 startup_timeout: float = 60.0, stop_timeout: float = 15.0):
        self.specs = specs
        self.output = output
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.running: list[RunningProcess] = []

    async def __aenter__(self) -> Suite:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def _relay(self, proc: RunningProcess) -> None:
        assert proc.process.stdout is not None
        width = max(len(s.name) for s in self.specs)
        async for raw in proc.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            proc.tail.append(line)
            if self.output:
                self.output(f"[{proc.spec.name:<{width}}] {line}")

    async def start(self) -> None:
        for spec in self.specs:
            process = await asyncio.create_subprocess_exec(
                *spec.argv,
                env={**os.environ, **spec.env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches the launcher only
                preexec_fn=_terminate_with_parent,
            )
            running = RunningProcess(spec, process)
            running.relay = asyncio.create_task(self._relay(running))
            self.running.append(running)
        try:
            await asyncio.gather(*(self._wait_ready(p) for p in self.running))
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self, proc: RunningProcess) -> None:
        if proc.spec.health_address is not None:
            check = wait_serving(proc.spec.health_address, proc.spec.health_service, self.startup_timeout,
                                 tls=_process_tls(proc.spec.env))
        elif proc.spec.ready_check is not None:
            check = wait_ready_check(proc.spec.name, proc.spec.ready_check, self.startup_timeout)
        else:
            return
        ready = asyncio.create_task(check)
        died = asyncio.create_task(proc.process.wait())
        await asyncio.wait({ready, died}, return_when=asyncio.FIRST_COMPLETED)
        if died.done():
            ready.cancel()
            await asyncio.sleep(0.05)  # let the relay read the last lines
            raise ProcessDied(proc.spec.name, proc.process.returncode, list(proc.tail))
        died.cancel()
        ready.result()

    async def wait_for_exit(self) -> RunningProcess:
        """Returns the first process that exits."""
        waits = {asyncio.create_task(p.process.wait()): p for p in self.running}
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        proc = waits[next(iter(done))]
        if proc.relay:
            await asyncio.wait({proc.relay}, timeout=1.0)
        return proc

    async def stop(self) -> None:
        """SIGTERM to every process, SIGKILL to any still alive after stop_timeout."""
        alive = [p for p in self.running if p.process.returncode is None]
        for proc in alive:
            try:
                proc.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        if alive:
            _, stuck = await asyncio.wait({asyncio.create_task(p.process.wait()) for p in alive},
                                          timeout=self.stop_timeout)
            for proc in alive:
                if proc.process.returncode is None:
                    log.warning("%s did not stop within %.0fs; killing it", proc.spec.name, self.stop_timeout)
                    proc.process.kill()
                    await proc.process.wait()
        for proc in self.running:
            if proc.relay:
                await asyncio.wait({proc.relay}, timeout=1.0)
        self.running = []


async def run_up(config: SuiteConfig) -> int:
    """Brings the suite up and keeps it up until Ctrl-C/SIGTERM (exit 0) or a death (exit 1);
    a bad setting (e.g. half a JWT or TLS configuration) is one line and exit 2."""
    try:
        specs = config.process_specs()
    except ValueError as error:
        print(f"debate-engine up: bad setting: {error}", file=sys.stderr)
        return 2
    suite = Suite(specs)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_requested.set)
    try:
        await suite.start()
    except (ProcessDied, TimeoutError) as error:
        print(f"debate-engine up: {error}", file=sys.stderr)
        return 1
    print("debate-engine suite is up:")
    for spec in suite.specs:
        print(f"  {spec.name:<13} {spec.display_address or spec.health_address}")
    if config.gateway.enabled and any(spec.name == "web" for spec in suite.specs):
        print(f"Open http://{config.gateway.browse_host}:{config.gateway.port}/ to run a debate in the browser.")
    print("Ctrl-C stops it.", flush=True)
    exited = asyncio.create_task(suite.wait_for_exit())
    stopping = asyncio.create_task(stop_requested.wait())
    await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if exited.done():
        proc = exited.result()
        error = ProcessDied(proc.spec.name, proc.process.returncode, list(proc.tail))
        print(f"debate-engine up: {error}", file=sys.stderr)
        await suite.stop()
        return 1
    exited.cancel()
    print("stopping the suite ...", flush=True)
    await suite.stop()
    print("stopped.")
    return 0


# --- The gateway: Envoy with grpc-web in front of the orchestrator, and the page ---------------
#
# Browsers cannot speak gRPC, so Envoy's grpc_web filter translates, with CORS for pages served
# elsewhere. The same Envoy serves the page: every path that is not a gRPC method goes to a
# small static file server (Python's http.server over web/dist), so the page and its API share
# one origin. The Envoy configuration is generated from these settings (`envoy_config`);
# gateway/envoy.yaml is the rendering for docker-compose, regenerated by
# `python -m services.launcher envoy-config --compose > gateway/envoy.yaml`.

ROOT = Path(__file__).resolve().parent.parent
WEB_DIST = ROOT / "web" / "dist"
ORCHESTRATOR_PREFIX = "/debate.orchestrator.v1.OrchestratorService/"
INTERNAL_PREFIXES = {"judge": "/debate.judge.v1.JudgeService/", "accounting": "/debate.accounting.v1.AccountingService/"}
# Headers a grpc-web client sends, and the ones its code must be able to read.
CORS_ALLOW_HEADERS = ("authorization,content-type,x-grpc-web,x-user-agent,grpc-timeout,keep-alive,user-agent,"
                      "cache-control,content-transfer-encoding,x-accept-content-transfer-encoding,"
                      "x-accept-response-streaming,connect-protocol-version,connect-timeout-ms")
CORS_EXPOSE_HEADERS = "grpc-status,grpc-message,grpc-status-details-bin"


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() not in ("0", "false", "no", "off", "")


@dataclass
class GatewayConfig:
    """Envoy and the page's file server. Read from GATEWAY_* / WEB_* variables by default."""

    enabled: bool = True
    host: str = "127.0.0.1"  # where Envoy listens (0.0.0.0 to reach it from a phone)
    port: int = 8080
    web_port: int = 0  # the page's file server, on loopback behind Envoy (0: any free port)
    web_dir: str = str(WEB_DIST)
    # Also route the judge's and accounting's gRPC methods through the gateway (off: only
    # the public orchestrator API is reachable from outside).
    expose_internal: bool = False
    # Origins allowed by CORS; "*" allows any (calls carry bearer keys, never cookies).
    allowed_origins: str = "*"
    envoy_binary: str = str(Path(sys.executable).parent / "envoy")
    log_level: str = "warning"
    # JWT checking (Envoy's jwt_authn), on when jwks_file is set: tokens signed by a key of that
    # local JWKS file (nothing is fetched), from `jwt_issuer`, for one of `jwt_audiences`
    # (comma-separated; empty: not checked). The `jwt_tenant_claim` claim is sent to the
    # orchestrator as the `jwt_tenant_header` header, which it then trusts.
    jwt_issuer: str = ""
    jwt_audiences: str = ""
    jwks_file: str = ""
    jwt_tenant_claim: str = "tenant"
    jwt_tenant_header: str = "x-debate-tenant"

    @classmethod
    def from_env(cls) -> GatewayConfig:
        env = os.environ
        default = cls()
        return cls(
            enabled=_env_flag("GATEWAY_ENABLED", default.enabled),
            host=env.get("GATEWAY_HOST", default.host),
            port=int(env.get("GATEWAY_PORT", default.port)),
            web_port=int(env.get("WEB_PORT", default.web_port)),
            web_dir=env.get("WEB_DIR", default.web_dir),
            expose_internal=_env_flag("GATEWAY_EXPOSE_INTERNAL", default.expose_internal),
            allowed_origins=env.get("GATEWAY_ALLOWED_ORIGINS", default.allowed_origins),
            envoy_binary=env.get("ENVOY_BINARY", default.envoy_binary),
            log_level=env.get("GATEWAY_LOG_LEVEL", default.log_level),
            jwt_issuer=env.get("GATEWAY_JWT_ISSUER", default.jwt_issuer),
            jwt_audiences=env.get("GATEWAY_JWT_AUDIENCES", default.jwt_audiences),
            jwks_file=env.get("GATEWAY_JWKS_FILE", default.jwks_file),
            jwt_tenant_claim=env.get("GATEWAY_JWT_TENANT_CLAIM", default.jwt_tenant_claim),
            jwt_tenant_header=env.get("GATEWAY_JWT_TENANT_HEADER", default.jwt_tenant_header),
        )

    def jwt(self) -> GatewayJwt | None:
        """The JWT settings, None when off; a half-made configuration is an error."""
        if not self.jwks_file:
            if self.jwt_issuer or self.jwt_audiences:
                raise ValueError("GATEWAY_JWT_ISSUER/GATEWAY_JWT_AUDIENCES need GATEWAY_JWKS_FILE (a local JWKS file)")
            return None
        if not self.jwt_issuer:
            raise ValueError("GATEWAY_JWKS_FILE needs GATEWAY_JWT_ISSUER (the issuer tokens must name)")
        path = Path(self.jwks_file)
        if not path.is_file():
            raise ValueError(f"GATEWAY_JWKS_FILE is not a readable file: {self.jwks_file}")
        from services.common.auth import parse_tenant_header

        claim = self.jwt_tenant_claim.strip()
        if not claim:
            raise ValueError("GATEWAY_JWT_TENANT_CLAIM must name a claim")
        return GatewayJwt(issuer=self.jwt_issuer.strip(), jwks_file=str(path.resolve()),
                          audiences=tuple(a.strip() for a in self.jwt_audiences.split(",") if a.strip()),
                          tenant_claim=claim, tenant_header=parse_tenant_header(self.jwt_tenant_header))

    @property
    def browse_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def web_available(self) -> bool:
        return (Path(self.web_dir) / "index.html").is_file()


@dataclass(frozen=True)
class GatewayJwt:
    """What Envoy's jwt_authn checks, and the header that carries the caller's tenant on."""

    issuer: str
    jwks_file: str
    audiences: tuple[str, ...] = ()
    tenant_claim: str = "tenant"
    tenant_header: str = "x-debate-tenant"


def _jwt_filters(jwt: GatewayJwt, prefixes: list[str]) -> list[dict]:
    """A filter that drops any tenant header a caller sends, then jwt_authn.

    Every gRPC method needs a valid token (CORS preflights pass; the page's GETs are not
    gRPC routes). The token is taken from `authorization: Bearer`, not forwarded upstream, and
    its tenant claim becomes the tenant header; a token without that claim reaches the
    orchestrator without the header and is refused there.
    """
    provider: dict = {
        "issuer": jwt.issuer,
        "local_jwks": {"filename": jwt.jwks_file},
        "forward": False,
        "claim_to_headers": [{"header_name": jwt.tenant_header, "claim_name": jwt.tenant_claim}],
    }
    if jwt.audiences:
        provider["audiences"] = list(jwt.audiences)
    return [
        {"name": "envoy.filters.http.header_mutation", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"remove": jwt.tenant_header}]}}},
        {"name": "envoy.filters.http.jwt_authn", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"debate": provider},
            "rules": [{"match": {"prefix": prefix}, "requires": {"provider_name": "debate"}} for prefix in prefixes],
            "bypass_cors_preflight": True,
        }},
    ]


def _upstream_tls(tls: TlsFiles, host: str) -> dict:
    """Envoy's side of mutual TLS to a service: its certificate, the CA, the server's name checked."""
    name = tls.server_name or host
    try:
        import ipaddress

        ipaddress.ip_address(name)
        san_type = "IP_ADDRESS"
    except ValueError:
        san_type = "DNS"
    context: dict = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "tls_certificates": [{"certificate_chain": {"filename": str(Path(tls.cert_file).resolve())},
                                  "private_key": {"filename": str(Path(tls.key_file).resolve())}}],
            "validation_context": {
                "trusted_ca": {"filename": str(Path(tls.ca_file).resolve())},
                "match_typed_subject_alt_names": [{"san_type": san_type, "matcher": {"exact": name}}],
            },
        },
    }
    if san_type == "DNS":
        context["sni"] = name
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def _cluster(name: str, host: str, port: int, *, http2: bool, tls: TlsFiles | None = None) -> dict:
    cluster: dict = {
        "name": name,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": host, "port_value": port}}}}]}],
        },
    }
    if http2:
        # gRPC upstreams speak HTTP/2; keepalive pings find a dead connection under a long stream.
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {
                    "connection_keepalive": {"interval": "30s", "timeout": "10s"}}},
            }
        }
    if tls is not None:
        cluster["transport_socket"] = _upstream_tls(tls, host)
    return cluster


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def envoy_config(*, listen_host: str, listen_port: int, orchestrator: str, web: str | None = None,
                 internal: dict[str, str] | None = None, allowed_origins: str = "*",
                 admin_port: int = 0, jwt: GatewayJwt | None = None, upstream_tls: TlsFiles | None = None) -> dict:
    """Envoy's bootstrap: grpc_web, cors and router in front of the orchestrator.

    `orchestrator`, `web` and the `internal` services ({"judge": addr, "accounting": addr},
    routed only when given) are host:port addresses. Streams are never cut: the route has no
    timeout and the connection manager no stream idle timeout (the orchestrator's heartbeats
    keep long-quiet streams warm through proxies further out).

    `jwt` adds JWT checking of every gRPC call (see `_jwt_filters`); `upstream_tls` makes Envoy
    dial the gRPC services over mutual TLS with those files (the page's server stays plaintext
    on loopback).
    """
    grpc_route = {"timeout": "0s", "max_stream_duration": {"grpc_timeout_header_max": "0s"}}
    routes = [{"match": {"prefix": ORCHESTRATOR_PREFIX}, "route": {"cluster": "orchestrator", **grpc_route}}]
    clusters = [_cluster("orchestrator", *_split(orchestrator), http2=True, tls=upstream_tls)]
    grpc_prefixes = [ORCHESTRATOR_PREFIX]
    for name, address in (internal or {}).items():
        routes.append({"match": {"prefix": INTERNAL_PREFIXES[name]}, "route": {"cluster": name, **grpc_route}})
        clusters.append(_cluster(name, *_split(address), http2=True, tls=upstream_tls))
        grpc_prefixes.append(INTERNAL_PREFIXES[name])
    if web:
        # Only GET and HEAD reach the file server: a call to an unrouted gRPC method gets
        # Envoy's 404, never the page.
        routes.append({"match": {"prefix": "/", "headers": [{"name": ":method", "string_match": {
            "safe_regex": {"regex": "GET|HEAD"}}}]}, "route": {"cluster": "web", "timeout": "30s"}})
        clusters.append(_cluster("web", *_split(web), http2=False))
    origins = [o.strip() for o in allowed_origins.split(",") if o.strip()]
    origin_match = ([{"safe_regex": {"regex": ".*"}}] if origins == ["*"] or not origins
                    else [{"exact": origin} for origin in origins])
    cors_policy = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": origin_match,
        "allow_methods": "GET, POST, OPTIONS",
        "allow_headers": CORS_ALLOW_HEADERS,
        "expose_headers": CORS_EXPOSE_HEADERS,
        "max_age": "86400",
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "grpc_web",
        "codec_type": "AUTO",
        "stream_idle_timeout": "0s",  # off: a debate's stream may stay open for as long as it runs
        "request_timeout": "0s",
        "route_config": {
            "name": "debate",
            "virtual_hosts": [{
                "name": "debate",
                "domains": ["*"],
                "typed_per_filter_config": {"envoy.filters.http.cors": cors_policy},
                "routes": routes,
            }],
        },
        "http_filters": [
            {"name": "envoy.filters.http.grpc_web", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"}},
            {"name": "envoy.filters.http.cors", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
            *(_jwt_filters(jwt, grpc_prefixes) if jwt else []),
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }
    return {
        # The admin interface (stats, /ready, /quitquitquit) is on loopback only.
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
                         "DownstreamConnectionsConfig",
                "max_active_downstream_connections": 10000,
            }}]},
        "static_resources": {
            "listeners": [{
                "name": "grpc_web",
                "address": {"socket_address": {"address": listen_host, "port_value": listen_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}],
            }],
            "clusters": clusters,
        },
    }


def render_envoy_yaml(config: dict, header: str = "") -> str:
    import yaml  # PyYAML comes with the suite's dependencies

    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=120)
    return (header + body) if header else body


COMPOSE_ENVOY_HEADER = """\
# Envoy for docker-compose: grpc-web + CORS in front of the orchestrator, and the page.
# Generated by services/launcher.py (envoy_config); do not edit by hand. Regenerate with
#   .venv/bin/python -m services.launcher envoy-config --compose > gateway/envoy.yaml
# `debate-engine up` renders its own copy with its ports into the data folder.
"""


def compose_envoy_config() -> dict:
    return envoy_config(listen_host="0.0.0.0", listen_port=8080, orchestrator="orchestrator:50051",
                        web="web:8081", admin_port=9901)


def _free_loopback_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _http_ok(url: str) -> bool:
    import httpx

    try:
        async with httpx.AsyncClient(timeout=1.0) as client:
            return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


async def wait_ready_check(name: str, check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} was not ready within {timeout:.0f}s")
        await asyncio.sleep(0.1)


def gateway_specs(config: SuiteConfig) -> list[ProcessSpec]:
    """The page's file server and Envoy, when the gateway is enabled."""
    gateway = config.gateway
    if not gateway.enabled:
        return []
    specs: list[ProcessSpec] = []
    web_address = None
    if gateway.web_available:
        web_port = gateway.web_port or _free_loopback_port()
        web_address = f"127.0.0.1:{web_port}"
        specs.append(ProcessSpec(
            "web", [sys.executable, "-m", "http.server", str(web_port), "--bind", "127.0.0.1",
                    "--directory", gateway.web_dir],
            None, env={"PYTHONUNBUFFERED": "1"},
            ready_check=lambda: _http_ok(f"http://{web_address}/index.html"),
            display_address=f"{web_address} (web/dist, served through the gateway)",
        ))
    else:
        log.warning("%s has no built page (run `make web`); the gateway serves the API only", gateway.web_dir)
    run_dir = Path(config.data_dir).resolve() / "gateway"
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / f"envoy-{gateway.port}.yaml"
    admin_path = run_dir / f"envoy-{gateway.port}.admin"
    internal = ({"judge": config.address(config.judge_port), "accounting": config.address(config.accounting_port)}
                if gateway.expose_internal else None)
    # Envoy dials the services with the suite's own TLS files, when they are configured.
    upstream_tls = TlsFiles.from_environment({**os.environ, **config.extra_env})
    config_path.write_text(render_envoy_yaml(envoy_config(
        listen_host=gateway.host, listen_port=gateway.port, orchestrator=config.orchestrator_address,
        web=web_address, internal=internal, allowed_origins=gateway.allowed_origins,
        jwt=gateway.jwt(), upstream_tls=upstream_tls)))
    admin_path.unlink(missing_ok=True)

    async def envoy_ready() -> bool:
        # Envoy picks a free admin port on loopback and writes its address to admin_path.
        try:
            admin = admin_path.read_text().strip()
        except FileNotFoundError:
            return False
        return bool(admin) and await _http_ok(f"http://{admin}/ready")

    specs.append(ProcessSpec(
        "envoy",
        [gateway.envoy_binary, "-c", str(config_path), "--admin-address-path", str(admin_path),
         "--disable-hot-restart",  # no shared memory: several Envoys (tests) can run at once
         "--log-level", gateway.log_level],
        None, ready_check=envoy_ready,
        display_address=f"{gateway.browse_host}:{gateway.port} (grpc-web and the page)",
    ))
    return specs


def _main(argv: list[str] | None = None) -> int:
    """`python -m services.launcher envoy-config [--compose]`: prints an Envoy configuration."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m services.launcher")
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("envoy-config", help="print the gateway's Envoy configuration")
    render.add_argument("--compose", action="store_true", help="the docker-compose set-up (gateway/envoy.yaml)")
    args = parser.parse_args(argv)
    if args.compose:
        sys.stdout.write(render_envoy_yaml(compose_envoy_config(), COMPOSE_ENVOY_HEADER))
    else:
        suite = SuiteConfig()
        gateway = suite.gateway
        web = f"127.0.0.1:{gateway.web_port or 8081}" if gateway.web_available else None
        sys.stdout.write(render_envoy_yaml(envoy_config(
            listen_host=gateway.host, listen_port=gateway.port, orchestrator=suite.orchestrator_address, web=web,
            allowed_origins=gateway.allowed_origins, jwt=gateway.jwt(), upstream_tls=TlsFiles.from_environment())))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
