"""The three services in this process, each on its own port, on one event loop in a daemon thread.

Tests drive them with synchronous grpc channels from the test thread; `row_counts()` counts the
rows of every SQLite file the services wrote.
"""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class InProcessSuite:
    """accounting, judge and orchestrator in this process, on one loop in a daemon thread."""

    root: Path
    # Per service: settings fields to override (e.g. {"orchestrator": {"api_keys": "..."}}).
    overrides: dict[str, dict] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    services: dict = field(default_factory=dict)
    thread: threading.Thread | None = None

    def run(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self.thread = threading.Thread(target=self.loop.run_forever, name="bad-input-suite", daemon=True)
        self.thread.start()
        for name in ("accounting", "judge", "orchestrator"):
            self.run(self._start(name))

    async def _start(self, name: str) -> None:
        settings_module = __import__(f"services.{name}.settings", fromlist=["x"])
        cls = next(
            v
            for k, v in vars(settings_module).items()
            if k.endswith("Settings") and isinstance(v, type) and v.__module__ == settings_module.__name__
        )
        extra = {}
        if name == "orchestrator":
            extra = {
                "judge_service_addr": self.addresses["judge"],
                "accounting_service_addr": self.addresses["accounting"],
            }
        data_dir = self.root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        # An override may be a callable of this suite, evaluated now (e.g. a proxy in front of a started service).
        # It runs on the suite's loop: it may be a coroutine function (never `self.run(...)`: that would deadlock).
        overrides = {}
        for key, value in self.overrides.get(name, {}).items():
            if callable(value):
                value = value(self)
                if inspect.isawaitable(value):
                    value = await value
            overrides[key] = value
        settings_obj = cls(port=0, data_dir=str(data_dir), **{**extra, **overrides})
        build = __import__(f"services.{name}.server", fromlist=["build_service"]).build_service
        service = await build(settings_obj)
        await service.start()
        self.services[name] = service
        self.addresses[name] = service.address

    def stop(self) -> None:
        for name in ("orchestrator", "judge", "accounting"):
            if name in self.services:
                try:
                    self.run(self.services[name].stop(grace=0), timeout=30)
                except Exception as error:  # noqa: BLE001 - best effort at teardown
                    print(f"stopping {name}: {error!r}")
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread:
            self.thread.join(timeout=10)

    def row_counts(self) -> dict[str, int]:
        """Rows of every table of every SQLite file under the services' data dirs."""
        counts: dict[str, int] = {}
        for path in sorted(self.root.rglob("*")):
            if not path.is_file() or path.name.endswith(("-wal", "-shm", "-journal")):
                continue
            with path.open("rb") as handle:
                if handle.read(16) != b"SQLite format 3\x00":
                    continue
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
            try:
                tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
                for table in tables:
                    counts[f"{path.name}:{table}"] = db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
            finally:
                db.close()
        return counts


def behind_fault_proxy(proxies: dict, name: str):
    """An address override for InProcessSuite: the service `name`, reached through a
    FaultProxy that is started with the suite and kept in `proxies[name]`."""
    from tests.support.fault_proxy import FaultProxy

    async def make(running: InProcessSuite) -> str:
        host, port = running.addresses[name].rsplit(":", 1)
        proxies[name] = await FaultProxy(host, int(port)).start()
        return proxies[name].address

    return make
