"""`debate-engine up`: the suite's processes, started, watched and stopped together.

`Suite` is also what the demo, the CLI and the end-to-end tests use to bring the services
up: each service runs as its own process, is polled through grpc.health.v1 until SERVING,
and has its output relayed line by line with a `[name]` prefix.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
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

from services.common.channels import open_channel
from services.common.tls import TlsFiles
from services.gateway import GatewayConfig, envoy_config, render_envoy_yaml

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
    def __init__(self, name: str, returncode: int | None, tail: list[str]):
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
    gateway: GatewayConfig = field(default_factory=GatewayConfig)

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
            ProcessSpec(
                "accounting",
                [python, "-m", "services.accounting"],
                self.address(self.accounting_port),
                "debate.accounting.v1.AccountingService",
                {**common, "PORT": str(self.accounting_port)},
            ),
            ProcessSpec(
                "judge",
                [python, "-m", "services.judge"],
                self.address(self.judge_port),
                "debate.judge.v1.JudgeService",
                {**common, "PORT": str(self.judge_port)},
            ),
            ProcessSpec(
                "orchestrator",
                [python, "-m", "services.orchestrator"],
                self.orchestrator_address,
                "debate.orchestrator.v1.OrchestratorService",
                orchestrator_env,
            ),
            *gateway_specs(self),
        ]


def _dial(address: str, tls: TlsFiles | None) -> grpc.aio.Channel:
    if tls is None:
        return grpc.aio.insecure_channel(address)
    # The credentials a service's own channels use: verify the server against the CA and
    # present the certificate (health is open, so no key is sent).
    return open_channel(address, service_key="", tls=tls)


def _process_tls(env: dict[str, str]) -> TlsFiles | None:
    """The TLS files a process is started with (its env over ours), None for plaintext."""
    try:
        return TlsFiles.from_variables({**os.environ, **env})
    except ValueError:
        return None  # the service itself stops at start with the error; the launcher reports that


async def wait_serving(address: str, service: str, timeout: float, *, tls: TlsFiles | None = None) -> None:
    """Polls grpc.health.v1 until `service` reports SERVING (over mutual TLS with `tls`)."""
    deadline = time.monotonic() + timeout
    async with _dial(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                # types-grpcio's HealthStub declares no methods; Check is generated on the instance.
                reply = await stub.Check(  # type: ignore[attr-defined]
                    health_pb2.HealthCheckRequest(service=service), timeout=1.0
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service or address} did not report SERVING within {timeout:.0f}s")
            await asyncio.sleep(0.1)


class Suite:
    """The suite's processes. Use `async with Suite(specs):` or start()/stop()."""

    def __init__(
        self,
        specs: list[ProcessSpec],
        *,
        output: Callable[[str], None] | None = print,
        startup_timeout: float = 60.0,
        stop_timeout: float = 15.0,
    ):
        self.specs = specs
        self.output = output
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.running: list[RunningProcess] = []

    async def __aenter__(self) -> Suite:  # noqa: PYI034 (Suite is not subclassed)
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
            check = wait_serving(
                proc.spec.health_address,
                proc.spec.health_service,
                self.startup_timeout,
                tls=_process_tls(proc.spec.env),
            )
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
            with contextlib.suppress(ProcessLookupError):  # it died on its own meanwhile
                proc.process.send_signal(signal.SIGTERM)
        if alive:
            await asyncio.wait({asyncio.create_task(p.process.wait()) for p in alive}, timeout=self.stop_timeout)
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
        died = ProcessDied(proc.spec.name, proc.process.returncode, list(proc.tail))
        print(f"debate-engine up: {died}", file=sys.stderr)
        await suite.stop()
        return 1
    exited.cancel()
    print("stopping the suite ...", flush=True)
    await suite.stop()
    print("stopped.")
    return 0


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
        specs.append(
            ProcessSpec(
                "web",
                [
                    sys.executable,
                    "-m",
                    "http.server",
                    str(web_port),
                    "--bind",
                    "127.0.0.1",
                    "--directory",
                    gateway.web_dir,
                ],
                None,
                env={"PYTHONUNBUFFERED": "1"},
                ready_check=lambda: _http_ok(f"http://{web_address}/index.html"),
                display_address=f"{web_address} (web/dist, served through the gateway)",
            )
        )
    else:
        log.warning("%s has no built page (run `make web`); the gateway serves the API only", gateway.web_dir)
    run_dir = Path(config.data_dir).resolve() / "gateway"
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / f"envoy-{gateway.port}.yaml"
    admin_path = run_dir / f"envoy-{gateway.port}.admin"
    internal = (
        {"judge": config.address(config.judge_port), "accounting": config.address(config.accounting_port)}
        if gateway.expose_internal
        else None
    )
    # Envoy dials the services with the suite's own TLS files, when they are configured.
    upstream_tls = TlsFiles.from_variables({**os.environ, **config.extra_env})
    config_path.write_text(
        render_envoy_yaml(
            envoy_config(
                listen_host=gateway.host,
                listen_port=gateway.port,
                orchestrator=config.orchestrator_address,
                web=web_address,
                internal=internal,
                allowed_origins=gateway.allowed_origins,
                jwt=gateway.jwt(),
                upstream_tls=upstream_tls,
            )
        )
    )
    admin_path.unlink(missing_ok=True)

    async def envoy_ready() -> bool:
        # Envoy picks a free admin port on loopback and writes its address to admin_path.
        try:
            admin = admin_path.read_text().strip()
        except FileNotFoundError:
            return False
        return bool(admin) and await _http_ok(f"http://{admin}/ready")

    specs.append(
        ProcessSpec(
            "envoy",
            [
                gateway.envoy_binary,
                "-c",
                str(config_path),
                "--admin-address-path",
                str(admin_path),
                "--disable-hot-restart",  # no shared memory: several Envoys (tests) can run at once
                "--log-level",
                gateway.log_level,
            ],
            None,
            ready_check=envoy_ready,
            display_address=f"{gateway.browse_host}:{gateway.port} (grpc-web and the page)",
        )
    )
    return specs
