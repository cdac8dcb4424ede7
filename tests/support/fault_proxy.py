"""A loopback TCP proxy that injects faults on demand, for reliability tests.

    async with FaultProxy("127.0.0.1", judge_port) as proxy:
        open_channel(proxy.address)          # the client talks to the proxy
        proxy.drop_new = True                # new connections are reset at once
        proxy.cut()                          # live connections are reset now
        proxy.delay = 0.2                    # every chunk waits 0.2 s each way
        proxy.stall()                        # bytes are held (connections stay open) ...
        proxy.resume()                       # ... until resumed
        await proxy.pause(2.0)               # stall for 2 s, then resume (returns at once)
        proxy.stats                          # connections, bytes, drops, cuts

It listens on 127.0.0.1 on a free port and forwards to one target; it never listens on or
connects to anything but the addresses it is given (tests give it loopback ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

CHUNK = 64 * 1024


@dataclass
class ProxyStats:
    accepted: int = 0
    dropped: int = 0
    cut: int = 0
    failed_upstream: int = 0
    bytes_up: int = 0  # client -> target
    bytes_down: int = 0  # target -> client
    chunks_delayed: int = 0
    chunks_held: int = 0  # chunks that waited for a stall to end


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter):
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task] = []

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None and not writer.transport.is_closing():
                writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1"):
        self.target_host, self.target_port, self.host = target_host, target_port, host
        self.port = 0
        self.drop_new = False
        self.delay = 0.0
        self.stats = ProxyStats()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._links: set[_Link] = set()
        self._server: asyncio.base_events.Server | None = None
        self._handlers: set[asyncio.Task] = set()
        self._resume_task: asyncio.Task | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def live_connections(self) -> int:
        return len(self._links)

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut(count=False)
        if self._resume_task:
            self._resume_task.cancel()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)

    async def __aenter__(self) -> FaultProxy:  # noqa: PYI034
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # --- faults --------------------------------------------------------------------------

    def cut(self, *, count: bool = True) -> int:
        """Resets every live connection now (new ones are still accepted). Returns how many."""
        links = list(self._links)
        for link in links:
            link.abort()
        self._links.clear()
        if count:
            self.stats.cut += len(links)
        return len(links)

    def stall(self) -> None:
        """Holds every byte in both directions; connections stay open."""
        if self._resume_task:
            self._resume_task.cancel()
            self._resume_task = None
        self._flowing.clear()

    def resume(self) -> None:
        if self._resume_task:
            self._resume_task.cancel()
            self._resume_task = None
        self._flowing.set()

    async def pause(self, seconds: float) -> None:
        """Stalls for `seconds`, then resumes by itself; returns at once."""
        self.stall()

        async def later():
            await asyncio.sleep(seconds)
            self._flowing.set()

        self._resume_task = asyncio.create_task(later())

    # --- forwarding ----------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.drop_new:
            self.stats.dropped += 1
            writer.transport.abort()
            return
        self.stats.accepted += 1
        link = _Link(writer)
        self._links.add(link)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
            except OSError:
                self.stats.failed_upstream += 1
                return
            link.upstream = up_writer
            if link not in self._links:  # cut while connecting
                return
            link.tasks = [
                asyncio.create_task(self._pump(reader, up_writer, "bytes_up")),
                asyncio.create_task(self._pump(up_reader, writer, "bytes_down")),
            ]
            # Each direction ends on its own EOF (half-close); an error in either resets both.
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            pass
        finally:
            self._links.discard(link)
            link.abort()
            for task in link.tasks:  # errors of a pump only mean the connection ended
                if task.done() and not task.cancelled():
                    task.exception()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counter: str) -> None:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            if not self._flowing.is_set():
                self.stats.chunks_held += 1
                await self._flowing.wait()
            if self.delay > 0:
                self.stats.chunks_delayed += 1
                await asyncio.sleep(self.delay)
                await self._flowing.wait()
            writer.write(data)
            setattr(self.stats, counter, getattr(self.stats, counter) + len(data))
            await writer.drain()
        if writer.can_write_eof() and not writer.transport.is_closing():
            writer.write_eof()
