"""The lean path's HTTP/1.1 client (services/common/llm/wire.py) against small loopback servers
that answer as scripted: keep-alive reuse, a connection the server closed while idle, a reused
connection that dies before its answer, the three kinds of body, and malformed answers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from services.common.llm.wire import HttpPool, WireError

OK_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"


class Server:
    """Answers each request with `answers(connection, served)`: the bytes to send, or None to
    close the connection without answering (`connection` counts connections from 1, `served`
    the requests on this one)."""

    def __init__(self, answers: Callable[[int, int], bytes | None], *, close: bool = False):
        self.answers = answers
        self.close = close  # close each connection after its first answer
        self.connections = 0
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                self.requests += 1
                served += 1
                answer = self.answers(connection, served)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close or b"Connection: close" in answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


async def test_a_connection_is_reused_for_the_next_request():
    async with Server(lambda connection, served: OK_CHUNKED) as server:
        pool = HttpPool(server.url, connect_timeout=5)
        for _ in range(3):
            response = await pool.request(pool.path("/chat/completions"), b"", b"{}")
            assert response.status == 200 and await response.aread() == b"hello world"
            response.release()
        assert server.connections == 1 and server.requests == 3 and pool.idle() == 1 and pool.busy() == 0
        await pool.aclose()


async def test_a_response_not_read_to_its_end_closes_its_connection():
    unfinished = OK_CHUNKED.removesuffix(b"0\r\n\r\n")  # the body's end not come yet
    async with Server(lambda connection, served: unfinished if connection == 1 else OK_CHUNKED) as server:
        pool = HttpPool(server.url, connect_timeout=5)
        response = await pool.request(pool.path("/x"), b"", b"")
        response.release()  # not read
        assert pool.idle() == 0 and pool.busy() == 0
        response = await pool.request(pool.path("/x"), b"", b"")
        assert await response.aread() == b"hello world"
        response.release()
        assert server.connections == 2
        await pool.aclose()


async def test_a_connection_the_server_closed_while_idle_is_not_reused():
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with Server(lambda connection, served: answer if served == 1 else None) as server:
        pool = HttpPool(server.url, connect_timeout=5)
        response = await pool.request(pool.path("/x"), b"", b"")
        assert await response.aread() == b"ok"
        response.release()
        # The server closes the connection when the next request comes on it; whether the pool saw
        # the close or not, the second request gets its answer on a new connection.
        response = await pool.request(pool.path("/x"), b"", b"")
        assert await response.aread() == b"ok"
        response.release()
        assert server.connections == 2
        await pool.aclose()


async def test_connection_close_and_a_body_delimited_by_the_close():
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\ndata: 1\n\ndata: 2\n\n"
    async with Server(lambda connection, served: answer) as server:
        pool = HttpPool(server.url, connect_timeout=5)
        response = await pool.request(pool.path("/x"), b"", b"")
        assert await response.aread() == b"data: 1\n\ndata: 2\n\n"
        response.release()
        assert pool.idle() == 0 and pool.busy() == 0
        await pool.aclose()


@pytest.mark.parametrize(
    "answer, message",
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", "before the response ended"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", "before the response ended"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed HTTP response"),
    ],
    ids=["chunked-cut", "sized-cut", "bad-chunk-size"],
)
async def test_a_body_cut_short_or_malformed_is_a_wire_error(answer, message):
    async with Server(lambda connection, served: answer, close=True) as server:
        pool = HttpPool(server.url, connect_timeout=5)
        response = await pool.request(pool.path("/x"), b"", b"")
        with pytest.raises(WireError, match=message):
            await response.aread()
        response.release()
        await pool.aclose()


async def test_no_answer_and_a_malformed_status_line_are_wire_errors():
    async with Server(lambda connection, served: None) as server:
        pool = HttpPool(server.url, connect_timeout=5)
        with pytest.raises(WireError, match="before any response"):
            await pool.request(pool.path("/x"), b"", b"")
        await pool.aclose()
    async with Server(lambda connection, served: b"SMTP ready\r\n\r\n") as server:
        pool = HttpPool(server.url, connect_timeout=5)
        with pytest.raises(WireError, match="malformed"):
            await pool.request(pool.path("/x"), b"", b"")
        await pool.aclose()


async def test_connect_refused_is_a_wire_error():
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    pool = HttpPool(f"http://127.0.0.1:{port}/v1", connect_timeout=5)
    with pytest.raises(WireError, match="connect to 127.0.0.1"):
        await pool.request(b"/v1/x", b"", b"")


def test_the_request_target_and_authority():
    pool = HttpPool("https://api.example.com/v1/", connect_timeout=1)
    assert (pool.tls, pool.port, pool.authority, pool.path("/chat/completions")) == (
        True,
        443,
        b"api.example.com",
        b"/v1/chat/completions",
    )
    pool = HttpPool("http://[::1]:8000", connect_timeout=1)
    assert (pool.tls, pool.port, pool.authority, pool.path("/x")) == (False, 8000, b"[::1]:8000", b"/x")
    with pytest.raises(ValueError):
        HttpPool("ftp://example.com", connect_timeout=1)


async def test_https_verifies_the_server_certificate(tmp_path):
    """TLS on the loop's own transport: a server whose certificate the context trusts answers;
    against certifi's roots (the default) the same server is refused."""
    import ssl

    from tests.security.certs import TestCA

    ca = TestCA(tmp_path)
    issued = ca.issue("provider")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(issued.cert_file, issued.key_file)
    handler = Server(lambda connection, served: OK_CHUNKED)
    server = await asyncio.start_server(handler.handle, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        trusting = ssl.create_default_context(cafile=issued.ca_file)
        pool = HttpPool(f"https://127.0.0.1:{port}/v1", connect_timeout=5, ssl_context=trusting)
        for _ in range(2):
            response = await pool.request(pool.path("/chat/completions"), b"", b"{}")
            assert response.status == 200 and await response.aread() == b"hello world"
            response.release()
        assert handler.connections == 1
        await pool.aclose()
        default = HttpPool(f"https://127.0.0.1:{port}/v1", connect_timeout=5)
        with pytest.raises(WireError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await default.request(b"/v1/x", b"", b"")
        await default.aclose()
    finally:
        server.close()
