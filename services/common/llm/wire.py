"""HTTP/1.1 for the lean streaming path: keep-alive connections on the event loop's own
transports, responses parsed by httptools (llhttp, Node's parser), and nothing else between a
network read and the reader.

    pool = HttpPool("https://api.example.com/v1", connect_timeout=10.0)
    response = await pool.request(b"/v1/chat/completions", headers, body)   # its status and headers
    while (data := await response.read()) is not None: ...                  # the body as it arrives
    response.release()   # back to the pool when complete, else closed (always call it, e.g. in finally)

    response.consumer = on_body   # or push: on_body(bytes) -> wake? runs inside the protocol's data_received
    while not (response.complete or response.error): await response.wait()

Why not httpx here: through httpx, httpcore, h11 and anyio, one network read of one streamed
chunk cost about 250 µs of CPU; on a protocol of the loop (`data_received`) and llhttp it is one
parse and one wake of the reading task (docs/streaming-floor.md has the figures). What httpx
gave that this keeps: one keep-alive pool per provider (idle connections reused, a connection
the server closed while idle dropped, a reused connection that dies before any answer byte
replaced once by a new one), TLS with certifi's roots (as httpx verifies), a connect timeout,
chunked, sized and close-delimited bodies. What it does not do, on purpose: proxies and netrc
from the environment (the lean path never read them: trust_env was False), redirects (not
followed there either), decompression (we ask for `identity`), HTTP/2.

Errors are `WireError` (an OSError: connect refused, reset, a malformed response, a body cut
short); the caller types them.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

import httptools


class WireError(OSError):
    """The connection failed, closed early, or carried a response we cannot parse."""


_ssl_context: ssl.SSLContext | None = None


def default_ssl_context() -> ssl.SSLContext:
    """Certificates verified against certifi's roots, as httpx does (one context per process)."""
    global _ssl_context
    if _ssl_context is None:
        try:
            import certifi

            _ssl_context = ssl.create_default_context(cafile=certifi.where())
        except ImportError:  # pragma: no cover - certifi comes with httpx
            _ssl_context = ssl.create_default_context()
        _ssl_context.set_alpn_protocols(["http/1.1"])
    return _ssl_context


class Response(asyncio.Protocol):
    """One connection, and the response under way on it (the parser's callbacks are its own).

    `read()` is the body as it arrives: the bytes of every network read since the last call
    (one join when several came), None at its end. The protocol wakes the reading task once per
    network read, whatever the read held."""

    __slots__ = (
        "_body",
        "_loop",
        "_waiter",
        "complete",
        "consumer",
        "error",
        "headers",
        "keep_alive",
        "lost",
        "on_body",
        "parser",
        "pool",
        "received",
        "reused",
        "status",
        "transport",
    )

    def __init__(self, pool: HttpPool):
        self.pool = pool
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._body: list[bytes] = []
        # httptools' body callback is the list's own append (C to C, no Python frame per read);
        # the parser looks its callbacks up once, when it is made.
        self.on_body: Callable[[bytes], None] = self._body.append
        self.parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self.status = 0
        self.headers: dict[str, str] = {}
        self.complete = False
        self.keep_alive = False
        self.lost = False
        self.received = False  # a byte of the response came
        self.reused = False
        self.error: WireError | None = None
        # Push: the body bytes of each network read handed to `consumer` inside data_received;
        # the waiting task is woken only when it returns True, or at the end or an error.
        self.consumer: Callable[[bytes], bool] | None = None

    # ------------------------------------------------------------------ the loop's protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self.fail(WireError(f"malformed HTTP response: {error}"))
            if self.transport is not None:
                self.transport.abort()
        consumer = self.consumer
        if consumer is not None:
            body = self._body
            wake = False
            if body:
                data = body[0] if len(body) == 1 else b"".join(body)
                body.clear()
                wake = consumer(data)
            if not wake and not self.complete and self.error is None:
                return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.complete and self.error is None:
            if (
                self.status
                and "content-length" not in self.headers
                and "chunked" not in self.headers.get("transfer-encoding", "")
            ):
                self.complete = True  # a body delimited by the close of the connection
            else:
                reason = f": {exc}" if exc else ""
                what = "before the response ended" if self.status else "before any response"
                self.fail(WireError(f"connection closed {what}{reason}"))
        self.pool._forget(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------------ httptools' callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self.complete = True

    # ------------------------------------------------------------------ the caller's side

    def fail(self, error: WireError) -> None:
        if self.error is None:
            self.error = error

    async def wait(self) -> None:
        """Until the next wake: a network read (with a `consumer`: one it asked to wake for), the
        end of the response, or an error."""
        self._waiter = waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    async def head(self) -> None:
        """Waits for the status line and headers (WireError if the connection fails first)."""
        while not self.status:
            if self.error is not None:
                raise self.error
            await self.wait()

    async def read(self) -> bytes | None:
        """The body bytes that came since the last call (waiting for some), None at the end."""
        body = self._body
        while not body:
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            await self.wait()
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        return data

    def take(self) -> bytes:
        """The body bytes that came and were not read yet, without waiting."""
        data = b"".join(self._body)
        self._body.clear()
        return data

    async def aread(self) -> bytes:
        """The whole (rest of the) body."""
        parts = []
        while (data := await self.read()) is not None:
            parts.append(data)
        return b"".join(parts)

    def release(self) -> None:
        """Done with the response (its consumer dropped): the connection goes back to the pool if the response was read
        to its end and both sides keep it alive, else it is closed."""
        self.pool._release(self)


class HttpPool:
    """Keep-alive HTTP/1.1 connections to one origin (the scheme, host and port of `base_url`)."""

    connection_class: type[Response] = Response

    def __init__(
        self, base_url: str, *, connect_timeout: float, max_idle: int = 256, ssl_context: ssl.SSLContext | None = None
    ):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        default_port = self.port == (443 if self.tls else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = (host if default_port else f"{host}:{self.port}").encode("idna")
        self.base_path = parts.path.rstrip("/")
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.ssl_context = ssl_context  # None: default_ssl_context() (certifi's roots)
        self._idle: deque[Response] = deque()
        self._open: set[Response] = set()
        self._closed = False

    def busy(self) -> int:
        """Connections with a request under way (neither idle in the pool nor closed)."""
        return len(self._open) - len(self._idle)

    def idle(self) -> int:
        return len(self._idle)

    def path(self, suffix: str) -> bytes:
        """The request target of `suffix` under the base URL's path."""
        return (self.base_path + suffix).encode("ascii")

    async def request(self, target: bytes, headers: bytes, body: bytes, *, method: bytes = b"POST") -> Response:
        """Sends the request and returns its response once its status and headers came.
        `headers`: extra header lines, each ending in CRLF. A reused connection that fails before
        any byte of its answer (the server closed it as we sent) is replaced once by a new one."""
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            method,
            target,
            self.authority,
            len(body),
            headers,
        )
        while True:
            response = self._idle_connection() or await self._connect()
            transport = response.transport
            assert transport is not None
            transport.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                transport.write(body)
            try:
                await response.head()
            except WireError:
                response.release()
                if response.reused and not response.received:
                    continue
                raise
            except BaseException:
                response.release()
                raise
            return response

    def _idle_connection(self) -> Response | None:
        idle = self._idle
        while idle:
            response = idle.pop()
            if not response.lost and response.transport is not None and not response.transport.is_closing():
                # Ready for the next request on this connection (the parser resets itself after a message).
                response.status = 0
                response.headers = {}
                response.complete = response.received = False
                response._body.clear()
                response.reused = True
                return response
        return None

    async def _connect(self) -> Response:
        if self._closed:
            raise WireError("the connection pool is closed")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, response = await loop.create_connection(
                    lambda: self.connection_class(self),
                    self.host,
                    self.port,
                    ssl=(self.ssl_context or default_ssl_context()) if self.tls else None,
                    server_hostname=self.host if self.tls else None,
                )
        except TimeoutError:
            raise WireError(f"connect to {self.host}:{self.port} timed out after {self.connect_timeout:g}s") from None
        except OSError as error:
            if isinstance(error, WireError):
                raise
            raise WireError(f"connect to {self.host}:{self.port} failed: {error}") from None
        self._open.add(response)
        return response

    def _release(self, response: Response) -> None:
        response.consumer = None
        transport = response.transport
        if (
            response.complete
            and response.keep_alive
            and response.error is None
            and not response.lost
            and not self._closed
            and len(self._idle) < self.max_idle
            and transport is not None
            and not transport.is_closing()
        ):
            self._idle.append(response)  # its status and headers stay readable until it is reused
            return
        self._open.discard(response)
        if transport is not None and not transport.is_closing():
            transport.abort()  # a response not read to its end: no reuse, no lingering

    def _forget(self, response: Response) -> None:
        self._open.discard(response)
        if response in self._idle:
            self._idle.remove(response)

    async def aclose(self) -> None:
        """Closes every connection (those in use too)."""
        self._closed = True
        for response in list(self._open):
            if response.transport is not None:
                response.transport.abort()
        self._open.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports' connection_lost run
