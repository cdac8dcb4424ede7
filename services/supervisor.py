"""The suite's processes, started, watched and stopped together.

`Suite` is what `debate-engine up`, the demo, the CLI and the end-to-end tests use to bring the
services up: each service runs as its own process, is polled through grpc.health.v1 until
SERVING (a process that is not a gRPC service, through its own ready check), and has its
output relayed line by line with a `[name]` prefix. What the suite is (its processes and
their settings) is the launcher's (services/launcher.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.channels import open_channel
from services.common.tls import TlsFiles

log = logging.getLogger(__name__)

# util-linux's setpriv (Debian: always installed) sets the parent-death signal and then execs the
# command in the same process; None where it is missing (then a child outlives a killed launcher).
SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def terminating_with_parent(argv: list[str]) -> list[str]:
    """`argv` run so that the child gets SIGTERM when the launcher dies, even by SIGKILL, so that
    nothing is orphaned: `setpriv --pdeathsig TERM -- argv` (the same process, its pid unchanged).

    Not a `preexec_fn` calling prctl(PR_SET_PDEATHSIG): with one, Python forks instead of using
    vfork, so gRPC's fork handlers run in the child and restart its poller there, which then
    aborts on the epoll descriptor that close_fds closed before exec (grpc/grpc#43055, open): a
    service died at start about once in five starts while the launcher's channels were busy."""
    return [SETPRIV, "--pdeathsig", "TERM", "--", *argv] if SETPRIV else list(argv)


async def spawn(argv: list[str], env: dict[str, str]) -> asyncio.subprocess.Process:
    """One of the suite's processes: stdin empty, stdout and stderr one pipe, in a session of its
    own (a Ctrl-C in the terminal reaches the launcher only), terminated with the launcher."""
    return await asyncio.create_subprocess_exec(
        *terminating_with_parent(argv),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )


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
    # Where the process serves its Prometheus metrics (None: it serves none); `up` prints it.
    metrics_url: str | None = None
    # The TLS files the health check dials with; None: those of the process's environment
    # (TLS_* in `env` over ours), which is how the launcher configures its processes. A process
    # configured by flags (`--tls-cert-file ...`) gives them here.
    tls: TlsFiles | None = None
    # When Suite.stop() ends it: higher tiers first, each tier after the one above has exited.
    # Callers get a higher tier than the services they call, so that a caller closes its
    # channels (and its grpc.health.v1 watches) before those services stop.
    stop_tier: int = 0


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
            process = await spawn(spec.argv, {**os.environ, **spec.env})
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
                tls=proc.spec.tls if proc.spec.tls is not None else _process_tls(proc.spec.env),
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

    async def restart(self, proc: RunningProcess) -> RunningProcess:
        """Starts `proc`'s spec again, in its place in `running` (it has exited), and waits until
        the new process is ready: ProcessDied when it dies first, TimeoutError when it is not
        ready within startup_timeout (it is then left running for stop() to end)."""
        process = await spawn(proc.spec.argv, {**os.environ, **proc.spec.env})
        again = RunningProcess(proc.spec, process)
        again.relay = asyncio.create_task(self._relay(again))
        self.running[self.running.index(proc)] = again
        await self._wait_ready(again)
        return again

    async def wait_for_exit(self) -> RunningProcess:
        """Returns the first process that exits (of those still running, when any is)."""
        alive = [p for p in self.running if p.process.returncode is None] or self.running
        waits = {asyncio.create_task(p.process.wait()): p for p in alive}
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        proc = waits[next(iter(done))]
        if proc.relay:
            await asyncio.wait({proc.relay}, timeout=1.0)
        return proc

    async def stop(self) -> None:
        """Tier by tier, highest `stop_tier` first: SIGTERM to the tier's processes, SIGKILL to
        any still alive after stop_timeout. A caller's tier is above its services', so that no
        service goes away while a caller still holds calls open to it (a health watch that the
        server cancels at its stop is logged by grpc as an error)."""
        for tier in sorted({p.spec.stop_tier for p in self.running}, reverse=True):
            await self._stop_all([p for p in self.running if p.spec.stop_tier == tier])
        for proc in self.running:
            if proc.relay:
                await asyncio.wait({proc.relay}, timeout=1.0)
        self.running = []

    async def _stop_all(self, processes: list[RunningProcess]) -> None:
        """SIGTERM to each of `processes`, SIGKILL to any still alive after stop_timeout."""
        alive = [p for p in processes if p.process.returncode is None]
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


async def http_ok(url: str) -> bool:
    """True when `url` answers 200 within a second."""
    import httpx  # lazy: the command line starts without it

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
