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
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    # Address polled through grpc.health.v1; None for a process checked another way.
    health_address: str | None
    health_service: str = ""
    env: dict[str, str] = field(default_factory=dict)


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
        return [
            ProcessSpec("accounting", [python, "-m", "services.accounting"], self.address(self.accounting_port),
                        "debate.accounting.v1.AccountingService", {**common, "PORT": str(self.accounting_port)}),
            ProcessSpec("judge", [python, "-m", "services.judge"], self.address(self.judge_port),
                        "debate.judge.v1.JudgeService", {**common, "PORT": str(self.judge_port)}),
            ProcessSpec("orchestrator", [python, "-m", "services.orchestrator"], self.orchestrator_address,
                        "debate.orchestrator.v1.OrchestratorService", {**common, "PORT": str(self.orchestrator_port)}),
        ]


async def wait_serving(address: str, service: str, timeout: float) -> None:
    """Polls grpc.health.v1 until `service` reports SERVING."""
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
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
        if proc.spec.health_address is None:
            return
        ready = asyncio.create_task(wait_serving(proc.spec.health_address, proc.spec.health_service, self.startup_timeout))
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
    """Brings the suite up and keeps it up until Ctrl-C/SIGTERM (exit 0) or a death (exit 1)."""
    suite = Suite(config.process_specs())
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
        print(f"  {spec.name:<13} {spec.health_address}")
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
