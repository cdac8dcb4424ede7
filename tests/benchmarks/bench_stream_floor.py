"""The streaming read path's candidates side by side: CPU per streamed chunk, in one run.

    python -m tests.benchmarks.bench_stream_floor [--quick] [--mode spaced|burst] [--blocks N]
    python -m tests.benchmarks.bench_stream_floor --ladder     # where a spaced chunk's CPU goes
    python -m tests.benchmarks.bench_stream_floor --chain      # its Python alone, warm, per delta

The same 200-chunk OpenAI-style stream (tests/support/fake_openai.py, in a subprocess, so its
CPU is not ours) is read by each candidate, under each event loop (asyncio's own and uvloop),
in the same run, alternating: every block runs each loop once, and in each loop each reader
once, in an order reversed every other block, so that the noise of a shared machine falls on
all of them alike. The figure is the median over blocks of the process CPU time (time.process_
time: user + system, not wall time) per chunk.

Readers:
- `layer_httpx`: the whole LLM layer on the httpx reader it had before (the router, the
  watchdog, usage, errors: `transport="httpx"`);
- `layer_push`: the whole LLM layer on its lean path, each delta pushed to a sink inside the
  network read's callback (`stream_to`, as the orchestrator reads a turn);
- `layer`: the same, pulled through the router's and the provider's async generators
  (`llm.stream`, as the judge reads a verdict);
- `anthropic_layer`, `anthropic_layer_litellm`: the whole layer reading the same stream in
  Anthropic's Messages format (`anthropic/...` models; the fake's /v1/messages), on the lean
  path (anthropic_native.py; `_push` pushed) and through LiteLLM's Anthropic provider;
- `httpx_plain`: a bare httpx SSE reader (aiter_lines, json.loads);
- `aiohttp_plain`: aiohttp's client with its C parser (iter_any, SSE split, json.loads);
- `wire_json`, `wire_orjson`, `wire_msgspec`: a bare reader on services/common/llm/wire.py
  (the loop's protocol and httptools' parser, one keep-alive pool), the chunk decoded by
  json.loads, orjson.loads, or msgspec into a Struct of only the fields we read;
- `wire_push_msgspec`: the same, but each payload decoded and handed on inside the protocol's
  `data_received` (a callback, as an event hub would be given), the reading task woken only at
  the stream's end: what handing deltas on without a task step or a chain of async generators
  per chunk would save;
- `wire_push_nodecode`: the same with no JSON decoding at all (a substring test): one network
  read, one llhttp parse and one SSE split;
- `floor_protocol`: a bare protocol of the loop that only looks for the response's last bytes:
  one wake of the loop and one network read per chunk, below which no reader in this process
  can go (a connection per stream, negligible over 200 chunks).

Two streams: "spaced" (0.5 ms between chunks, so each comes in its own network read, as a real
model's tokens do) and "burst" (no delay, many chunks a read). Aims (issue 16): the layer at
most 40 µs per spaced chunk and 15 µs per burst chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httptools
import msgspec

from services.common.llm.wire import HttpPool, Response, WireError
from tests.benchmarks.bench_relay import CHUNKS, MESSAGES, MODES, _read_httpx, _read_layer

AIMS_US = {"spaced": 40.0, "burst": 15.0}
LOOPS = ("asyncio", "uvloop")
READERS = (
    "layer_push",
    "layer",
    "layer_httpx",
    "httpx_plain",
    "aiohttp_plain",
    "wire_json",
    "wire_orjson",
    "wire_msgspec",
    "wire_push_msgspec",
    "wire_push_nodecode",
    "floor_protocol",
    "anthropic_layer_push",
    "anthropic_layer",
    "anthropic_layer_litellm",
)
# (slower, faster): the ratios printed for each loop.
RATIOS = (
    ("layer_httpx", "layer_push"),
    ("layer_httpx", "layer"),
    ("layer", "layer_push"),
    ("anthropic_layer_litellm", "anthropic_layer_push"),
    ("layer_push", "wire_push_nodecode"),
    ("layer_push", "floor_protocol"),
)
BODY = {"model": "bench", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}


def _sse_split(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The `data:` payloads of the complete events in `buffer`, and the rest."""
    *events, rest = buffer.split(b"\n\n")
    return [e[6:] if e.startswith(b"data: ") else e[5:].strip() for e in events if e.startswith(b"data:")], rest


def _json_content(payload: bytes, loads: Callable[[bytes], Any]) -> bool:
    choices = loads(payload)["choices"]
    return bool(choices and choices[0]["delta"].get("content"))


class _Delta(msgspec.Struct):
    content: str | list[Any] | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] = []
    usage: dict[str, Any] | None = None


def _content_without_decoding(payload: bytes) -> bool:
    return b'"delta":{"content":"' in payload


def _msgspec_decoder() -> Callable[[bytes], bool]:
    decode = msgspec.json.Decoder(_Chunk).decode

    def content(payload: bytes) -> bool:
        choices = decode(payload).choices
        return bool(choices and choices[0].delta and choices[0].delta.content)

    return content


async def _read_wire(pool, target: bytes, headers: bytes, body: bytes, has_content: Callable[[bytes], bool]) -> int:
    response = await pool.request(target, headers, body)
    n = 0
    buffer = b""
    try:
        assert response.status == 200
        while (data := await response.read()) is not None:
            payloads, buffer = _sse_split(buffer + data)
            for payload in payloads:
                if payload == b"[DONE]":
                    continue
                if has_content(payload):
                    n += 1
    finally:
        response.release()
    return n


class _PushResponse(Response):
    """A response whose body is split and decoded in the protocol's own callback, each payload
    handed to `sink` there; the reading task wakes only at the end (no task step per read)."""

    __slots__ = ("sink", "sse")

    def __init__(self, pool: HttpPool):
        super().__init__(pool)
        self.sink: Callable[[bytes], object] | None = None
        self.sse = b""
        self.on_body = self._split_body  # the parser takes its callbacks when it is made
        self.parser = httptools.HttpResponseParser(self)

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except Exception as error:  # noqa: BLE001 - a bench reader: the task sees it at the end
            self.fail(WireError(str(error)))
        if self.complete or self.error is not None or self.sink is None:
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _split_body(self, body: bytes) -> None:
        sink = self.sink
        if sink is None:
            self._body.append(body)
            return
        payloads, self.sse = _sse_split(self.sse + body)
        for payload in payloads:
            if payload != b"[DONE]":
                sink(payload)


class _PushPool(HttpPool):
    connection_class = _PushResponse


async def _read_push(pool: HttpPool, target: bytes, headers: bytes, body: bytes, has_content) -> int:
    response = await pool.request(target, headers, body)
    assert isinstance(response, _PushResponse)
    count = [0]

    def sink(payload: bytes) -> None:
        if has_content(payload):
            count[0] += 1

    try:
        early = b"".join(response._body)
        response._body.clear()
        response.sse = b""
        response.sink = sink
        if early:
            response.on_body(early)
        while await response.read() is not None:
            pass
    finally:
        response.sink = None
        response.release()
    return count[0]


class _CountingProtocol(asyncio.Protocol):
    """Bytes only: no HTTP parsing, no SSE, no JSON; the response's end found by its last bytes."""

    def __init__(self) -> None:
        self.done: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        if data.endswith(b"0\r\n\r\n") and self.done is not None and not self.done.done():
            self.done.set_result(None)


async def _read_floor(pool: HttpPool, target: bytes, headers: bytes, body: bytes) -> int:
    """The floor: the loop's wake and one network read per chunk, and nothing else."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(_CountingProtocol, pool.host, pool.port)
    try:
        protocol.done = loop.create_future()
        transport.write(
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n%s"
            % (target, pool.authority, len(body), headers, body)
        )
        await protocol.done
    finally:
        transport.close()
    return CHUNKS


async def _read_aiohttp(session, url: str) -> int:
    n = 0
    buffer = b""
    async with session.post(url + "/chat/completions", json=BODY) as response:
        async for data in response.content.iter_any():
            payloads, buffer = _sse_split(buffer + data)
            for payload in payloads:
                if payload != b"[DONE]" and _json_content(payload, json.loads):
                    n += 1
    return n


async def _push_layer(llm, model: str) -> int:
    """The whole layer, its deltas pushed (stream_to), as the orchestrator reads a turn."""
    from services.common.llm import ChatMessage, CompletionRequest, TextDelta, stream_to

    request = CompletionRequest(model=model, messages=(ChatMessage("user", MESSAGES[0]["content"]),), max_tokens=4096)
    texts: list[str] = []

    def sink(event) -> None:
        if type(event) is TextDelta:
            texts.append(event.text)

    await stream_to(llm, request, sink)
    return len(texts)


async def _cpu_per_chunk(read: Callable[[], Awaitable[int]], streams: int, warmup: int) -> float:
    """CPU µs per chunk over `streams` streams, after `warmup` untimed ones."""
    for _ in range(warmup):
        assert await read() == CHUNKS
    gc.collect()
    start = time.process_time()
    for _ in range(streams):
        assert await read() == CHUNKS
    return (time.process_time() - start) * 1e6 / (streams * CHUNKS)


async def _block(url: str, readers: tuple[str, ...], streams: int, warmup: int) -> dict[str, float]:
    """One timed block of each reader, in the order given, in the running loop."""
    import aiohttp
    import httpx
    import orjson

    from services.common.llm import Endpoint, LLMSettings, build_llm_client

    settings = LLMSettings(
        llm_allowed_models=["bench/*", "benchhttpx/*", "anthropic/*"],
        llm_endpoints={
            "bench": Endpoint(api_base=url),
            "benchhttpx": Endpoint(api_base=url, transport="httpx"),
        },
        llm_anthropic_api_base=url.removesuffix("/v1"),
    )
    llm = build_llm_client(settings)
    # LiteLLM's Anthropic provider reads ANTHROPIC_API_BASE and ANTHROPIC_API_KEY (set by run()).
    llm_litellm = build_llm_client(settings.model_copy(update={"llm_anthropic_lean": False}))
    http = httpx.AsyncClient(timeout=30)
    session = aiohttp.ClientSession()
    pool = HttpPool(url, connect_timeout=10)
    push_pool = _PushPool(url, connect_timeout=10)
    target = pool.path("/chat/completions")
    headers = b"Content-Type: application/json\r\nAccept: text/event-stream\r\nAccept-Encoding: identity\r\n"
    body = json.dumps(BODY).encode()
    by_msgspec = _msgspec_decoder()
    calls: dict[str, Callable[[], Awaitable[int]]] = {
        "layer": lambda: _read_layer(llm, "bench/model"),
        "layer_httpx": lambda: _read_layer(llm, "benchhttpx/model"),
        "layer_push": lambda: _push_layer(llm, "bench/model"),
        "anthropic_layer_push": lambda: _push_layer(llm, "anthropic/claude-bench"),
        "anthropic_layer": lambda: _read_layer(llm, "anthropic/claude-bench"),
        "anthropic_layer_litellm": lambda: _read_layer(llm_litellm, "anthropic/claude-bench"),
        "httpx_plain": lambda: _read_httpx(http, url),
        "aiohttp_plain": lambda: _read_aiohttp(session, url),
        "wire_json": lambda: _read_wire(pool, target, headers, body, lambda p: _json_content(p, json.loads)),
        "wire_orjson": lambda: _read_wire(pool, target, headers, body, lambda p: _json_content(p, orjson.loads)),
        "wire_msgspec": lambda: _read_wire(pool, target, headers, body, by_msgspec),
        "wire_push_msgspec": lambda: _read_push(push_pool, target, headers, body, by_msgspec),
        "wire_push_nodecode": lambda: _read_push(push_pool, target, headers, body, _content_without_decoding),
        "floor_protocol": lambda: _read_floor(pool, target, headers, body),
    }
    figures = {}
    try:
        for name in readers:
            figures[name] = await _cpu_per_chunk(calls[name], streams, warmup)
    finally:
        await http.aclose()
        await session.close()
        await pool.aclose()
        await push_pool.aclose()
        await llm.aclose()
        await llm_litellm.aclose()
    return figures


def _run_in(loop_name: str, coroutine) -> Any:
    if loop_name == "uvloop":
        import uvloop

        return uvloop.run(coroutine)
    return asyncio.run(coroutine)


def measure(
    mode: str, *, blocks: int, streams: int, warmup: int, readers=READERS, loops=LOOPS
) -> dict[tuple[str, str], float]:
    """{(reader, loop): median CPU µs per chunk} for one stream spacing."""
    from tests.support.fake_openai import spawn_fake_openai

    samples: dict[tuple[str, str], list[float]] = {(r, lp): [] for r in readers for lp in loops}
    with spawn_fake_openai(chunks=CHUNKS, chunk_delay=MODES[mode]) as url:
        os.environ["ANTHROPIC_API_BASE"] = url.removesuffix("/v1")
        os.environ.setdefault("ANTHROPIC_API_KEY", "sk-ant-bench")
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        for block in range(blocks):
            order = tuple(readers) if block % 2 == 0 else tuple(reversed(readers))
            for loop_name in loops if block % 2 == 0 else tuple(reversed(loops)):
                figures = _run_in(loop_name, _block(url, order, streams, warmup))
                for name, value in figures.items():
                    samples[(name, loop_name)].append(value)
    return {key: statistics.median(values) for key, values in samples.items()}


def run(quick: bool = False, *, modes: tuple[str, ...] | None = None, blocks: int | None = None) -> list[dict]:
    """Rows {metric, target, value, unit}: CPU µs per chunk of each reader under each loop, the
    layer's ratios to today's httpx layer, and its aims."""
    rows = []
    streams, warmup = (2, 1) if quick else (8, 2)
    for mode in modes or (("burst",) if quick else ("spaced", "burst")):
        figures = measure(mode, blocks=blocks or (1 if quick else 5), streams=streams, warmup=warmup)
        for (name, loop_name), value in figures.items():
            target = f"<= {AIMS_US[mode]:g}" if name in ("layer", "layer_push", "anthropic_layer_push") else ""
            rows.append(
                {
                    "metric": f"stream_cpu_per_chunk_{name}[{mode},{loop_name}]",
                    "target": target,
                    "value": round(value, 1),
                    "unit": "µs CPU/chunk",
                }
            )
        for loop_name in LOOPS:
            for slower, faster in RATIOS:
                rows.append(
                    {
                        "metric": f"stream_ratio_{slower}_to_{faster}[{mode},{loop_name}]",
                        "target": "",
                        "value": round(figures[(slower, loop_name)] / figures[(faster, loop_name)], 2),
                        "unit": "x",
                    }
                )
        for name in READERS:
            rows.append(
                {
                    "metric": f"stream_ratio_asyncio_to_uvloop_{name}[{mode}]",
                    "target": "",
                    "value": round(figures[(name, "asyncio")] / figures[(name, "uvloop")], 2),
                    "unit": "x",
                }
            )
    return rows


# ---------------------------------------------------------------------------------------- ladder

LADDER = ("floor", "parse", "split", "decode", "feed", "layer")


async def _ladder_step(pool: HttpPool, make_consumer: Callable[[], Callable[[bytes], bool]], streams: int) -> float:
    """CPU µs per chunk of a pushed response whose consumer is `make_consumer()`."""
    target = pool.path("/chat/completions")
    headers = b"Content-Type: application/json\r\nAccept: text/event-stream\r\nAccept-Encoding: identity\r\n"
    body = json.dumps(BODY).encode()
    start = 0.0
    for i in range(streams + 1):
        if i == 1:
            start = time.process_time()
        response = await pool.request(target, headers, body)
        consumer = make_consumer()
        early = response.take()
        if early:
            consumer(early)
        response.consumer = consumer
        while not response.complete and response.error is None:
            await response.wait()
        response.release()
    return (time.process_time() - start) * 1e6 / (streams * CHUNKS)


def _ladder_consumers() -> dict[str, Callable[[], Callable[[bytes], bool]]]:
    from services.common.llm import openai_compat
    from services.common.llm.guard import Watchdog

    split, decode = openai_compat._split, openai_compat._decode_chunk

    def parse() -> Callable[[bytes], bool]:
        return lambda data: False

    def split_only() -> Callable[[bytes], bool]:
        def consume(data: bytes) -> bool:
            split(data)
            return False

        return consume

    def split_decode() -> Callable[[bytes], bool]:
        def consume(data: bytes) -> bool:
            for payload in split(data)[0]:
                decode(payload)
            return False

        return consume

    def feed() -> Callable[[bytes], bool]:
        # The lean provider's own consumer (_Push): split, decode, events, the watchdog, a sink.
        watchdog = Watchdog(30, 15)
        reader = openai_compat._ChunkReader("bench/model", watchdog, ())
        events: list = []
        return openai_compat._Push(reader, events.append, watchdog)

    return {"parse": parse, "split": split_only, "decode": split_decode, "feed": feed}


async def _ladder_block(url: str, order: tuple[str, ...], streams: int) -> dict[str, float]:
    from services.common.llm import Endpoint, LLMSettings, build_llm_client

    pool = HttpPool(url, connect_timeout=10)
    llm = build_llm_client(LLMSettings(llm_allowed_models=["bench/*"], llm_endpoints={"bench": Endpoint(api_base=url)}))
    consumers = _ladder_consumers()
    target = pool.path("/chat/completions")
    body = json.dumps(BODY).encode()
    figures = {}
    try:
        for name in order:
            if name == "floor":
                figures[name] = await _cpu_per_chunk(lambda: _read_floor(pool, target, b"", body), streams, 1)
            elif name == "layer":
                figures[name] = await _cpu_per_chunk(lambda: _push_layer(llm, "bench/model"), streams, 1)
            else:
                figures[name] = await _ladder_step(pool, consumers[name], streams)
    finally:
        await pool.aclose()
        await llm.aclose()
    return figures


def ladder(blocks: int = 6, streams: int = 4) -> dict[str, float]:
    """Where a spaced chunk's CPU goes, under uvloop, pushed: each step adds one thing to the one
    before (the bare read; llhttp; the SSE split; msgspec; the reader's events, the watchdog and
    a sink; the router around it). Medians over `blocks`, alternating the order."""
    import uvloop

    from tests.support.fake_openai import spawn_fake_openai

    samples: dict[str, list[float]] = {name: [] for name in LADDER}
    with spawn_fake_openai(chunks=CHUNKS, chunk_delay=MODES["spaced"]) as url:
        for block in range(blocks):
            order = LADDER if block % 2 == 0 else tuple(reversed(LADDER))
            for name, value in uvloop.run(_ladder_block(url, order, streams)).items():
                samples[name].append(value)
    return {name: statistics.median(values) for name, values in samples.items()}


# ----------------------------------------------------------------------------------- the chain

_TOKEN_HEAD = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"bench",'
    b'"system_fingerprint":null,"choices":[{"index":0,"delta":{"content":"'
)
_TOKEN_TAIL = b'"},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'


def chain(rounds: int = 3000) -> dict[str, float]:
    """The Python of a spaced chunk alone, warm, in this process (no network, no wake): the
    thread's CPU ns per delta of 200 reads of one token chunk each (fake_openai's shape) handed
    to the lean provider's consumer (openai_compat._Push) after the first token, its sink a
    bare list (`list`) or the orchestrator's own (`turn`: the sink TurnRunner._stream builds,
    the hub's add_text, behind a closure like the router's `forward`). The 10th percentile of
    `rounds` rounds each, the two alternating."""
    import types

    from services.common.llm import openai_compat
    from services.common.llm.base import Completion
    from services.common.llm.guard import Watchdog
    from services.common.usage import Usage
    from services.orchestrator.events import DeltaBuffer, EventHub
    from services.orchestrator.run import Inflight
    from services.orchestrator.turns import TurnRunner

    reads = [_TOKEN_HEAD + word + _TOKEN_TAIL for word in (b" word", b" other", b" thing", b" and", b" more") * 40]
    samples: dict[str, list[float]] = {"list": [], "turn": []}

    def pushed(sink: Callable[[Any], object], name: str) -> None:
        watchdog = Watchdog(30, 15)
        push = openai_compat._Push(openai_compat._ChunkReader("bench/m", watchdog, ()), sink, watchdog)
        push(reads[0])  # the first token
        start = time.thread_time_ns()
        for data in reads:
            push(data)
        samples[name].append((time.thread_time_ns() - start) / len(reads))
        watchdog.close()

    class _LLM:
        async def stream_to(self, request: Any, sink: Callable[[Any], object]) -> Completion:
            started = False

            def forward(event: Any) -> object:
                nonlocal started
                if not started:
                    started = True
                return sink(event)

            pushed(forward, "turn")
            return Completion(model="bench/m", usage=Usage(1, 1))

    async def run() -> None:
        hub = types.SimpleNamespace(_dirty_buffers=[], _pending=lambda: None)
        hub.add_text = types.MethodType(EventHub.add_text, hub)
        runner = types.SimpleNamespace(llm=_LLM(), hub=hub)
        seat = types.SimpleNamespace(name="alice", model="bench/m")
        debate = types.SimpleNamespace(config=types.SimpleNamespace(seed=1, max_tokens_per_turn=512))
        window = types.SimpleNamespace(messages=())
        for _ in range(rounds):
            pushed([].append, "list")
            buffer = DeltaBuffer("d", 1, "alice", 1)
            inflight = Inflight(1, seat, 1, (), "r", [], buffer)  # type: ignore[arg-type]
            hub._dirty_buffers.clear()
            await TurnRunner._stream(runner, debate, inflight, window, "k")  # type: ignore[arg-type]

    gc.disable()
    try:
        asyncio.run(run())
    finally:
        gc.enable()
    return {name: sorted(values)[len(values) // 10] for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--mode", choices=sorted(MODES), action="append")
    parser.add_argument("--blocks", type=int, default=None)
    parser.add_argument("--ladder", action="store_true", help="where a spaced chunk's CPU goes, step by step")
    parser.add_argument("--chain", action="store_true", help="a spaced chunk's Python alone, warm, per delta")
    args = parser.parse_args()
    if args.chain:
        for name, value in chain().items():
            print(f"{name:<8} {value:6.0f} ns CPU/delta")
        return
    if args.ladder:
        for name, value in ladder(args.blocks or 6).items():
            print(f"{name:<8} {value:6.1f} µs CPU/chunk")
        return
    rows = run(args.quick, modes=tuple(args.mode) if args.mode else None, blocks=args.blocks)
    width = max(len(r["metric"]) for r in rows)
    print(f"{'metric':<{width}}  {'value':>9}  unit           target")
    for row in rows:
        print(f"{row['metric']:<{width}}  {row['value']:>9}  {row['unit']:<13}  {row['target']}")


if __name__ == "__main__":
    main()
