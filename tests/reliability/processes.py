"""The suite's three services as separate processes that a test can SIGKILL and restart one by one.

Built on the launcher's own process specs (ports, environment) and health polling; each
service keeps its port across restarts so the others' channels reconnect to it. With a
`database_url`, the orchestrator and accounting keep their state in that PostgreSQL database
(DATABASE_URL) instead of SQLite files in `data_dir`. With `replicas` > 1 (which needs the
database) every service runs that many processes, named `orchestrator-1`, `orchestrator-2`, ...
as `debate-engine up --replicas` names them; with `gateway`, Envoy runs in front of the
orchestrators as `up` configures it (the API only, no page), at `gateway_address`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path

import psycopg

from services.gateway import GatewayConfig
from services.launcher import SERVICES, SuiteConfig
from services.supervisor import ProcessSpec, wait_ready_check, wait_serving
from tests.helpers import free_port


class KillableSuite:
    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        *,
        log_level: str = "INFO",
        database_url: str = "",
        replicas: int = 1,
        gateway: bool = False,
    ):
        self.data_dir = Path(data_dir)
        self.database_url = database_url
        env = {**(env or {}), **({"DATABASE_URL": database_url} if database_url else {})}
        ports = {service: [free_port() for _ in range(replicas)] for service in SERVICES}
        self.config = SuiteConfig(
            orchestrator_port=ports["orchestrator"][0],
            judge_port=ports["judge"][0],
            accounting_port=ports["accounting"][0],
            data_dir=str(self.data_dir),
            log_level=log_level,
            extra_env=env,
            replicas=replicas,
            replica_ports=ports,
            gateway=GatewayConfig(
                enabled=gateway, port=free_port() if gateway else 0, web_dir=str(self.data_dir / "no-page")
            ),
        )
        self.specs: dict[str, ProcessSpec] = {s.name: s for s in self.config.process_specs()}
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.output: list[str] = []
        self._relays: list[asyncio.Task] = []
        self.kills: list[str] = []

    def address(self, name: str) -> str:
        address = self.specs[name].health_address
        assert address is not None, f"{name} is not a gRPC service"
        return address

    @property
    def gateway_address(self) -> str:
        """Envoy's listener (plain gRPC and grpc-web), when the suite has the gateway."""
        assert self.config.gateway.enabled, "started without the gateway"
        return f"127.0.0.1:{self.config.gateway.port}"

    def replica_id(self, name: str) -> str:
        """The REPLICA_ID an orchestrator process runs with (its lease owner name)."""
        return self.specs[name].env["REPLICA_ID"]

    async def start(self, name: str, timeout: float = 60.0) -> None:
        spec = self.specs[name]
        process = await asyncio.create_subprocess_exec(
            *spec.argv,
            env={**os.environ, **spec.env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        self._relays.append(asyncio.create_task(self._relay(name, process)))
        if spec.health_address is not None:
            check = wait_serving(spec.health_address, spec.health_service, timeout)
        else:
            assert spec.ready_check is not None, name
            check = wait_ready_check(name, spec.ready_check, timeout)
        ready = asyncio.create_task(check)
        died = asyncio.create_task(process.wait())
        await asyncio.wait({ready, died}, return_when=asyncio.FIRST_COMPLETED)
        if died.done():
            ready.cancel()
            tail = "\n".join(self.output[-15:])
            raise RuntimeError(f"{name} exited with {process.returncode} while starting:\n{tail}")
        died.cancel()
        ready.result()

    async def _relay(self, name: str, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            self.output.append(f"[{name}] {raw.decode(errors='replace').rstrip()}")

    async def start_all(self) -> None:
        """Every process, in the launcher's order (accounting, judge, orchestrator, Envoy)."""
        for name in self.specs:
            await self.start(name)

    async def kill(self, name: str) -> None:
        """SIGKILL: no cleanup, no flush, no graceful stop."""
        process = self.processes[name]
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await process.wait()
        self.kills.append(name)

    def pause(self, name: str) -> None:
        """SIGSTOP: the process stops dead (its sockets stay open, nothing answers) until `resume`."""
        self.processes[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        """SIGCONT: a paused process runs on from where it stopped."""
        self.processes[name].send_signal(signal.SIGCONT)

    async def stop_all(self, timeout: float = 15.0) -> None:
        alive = [p for p in self.processes.values() if p.returncode is None]
        for process in alive:
            process.send_signal(signal.SIGCONT)  # a paused process could not stop
            process.send_signal(signal.SIGTERM)
        if alive:
            await asyncio.wait({asyncio.create_task(p.wait()) for p in alive}, timeout=timeout)
        for process in alive:
            if process.returncode is None:
                process.kill()
                await process.wait()
        if self._relays:
            await asyncio.wait(self._relays, timeout=2)

    def sqlite_files(self) -> list[Path]:
        files = []
        for path in sorted(self.data_dir.rglob("*")):
            if path.is_file() and not path.name.endswith(("-wal", "-shm", "-journal")):
                with path.open("rb") as handle:
                    if handle.read(16) == b"SQLite format 3\x00":
                        files.append(path)
        return files

    def file_with_table(self, table: str) -> Path:
        for path in self.sqlite_files():
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
            try:
                if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone():
                    return path
            finally:
                db.close()
        raise LookupError(f"no SQLite file has a table {table!r}")

    def query(self, table: str, sql: str, params: tuple = ()) -> list[tuple]:
        """A read-only query ("?" placeholders) on the services' PostgreSQL database, or on their
        SQLite file that has `table`."""
        if self.database_url:
            with psycopg.connect(self.database_url, autocommit=True) as db:
                return db.execute(sql.replace("?", "%s"), params).fetchall()
        path = self.file_with_table(table)
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()
