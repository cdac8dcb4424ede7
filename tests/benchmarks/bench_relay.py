"""CPU per relayed chunk: the same 200-chunk stream read by a plain httpx SSE reader, the openai
client, litellm.acompletion(stream=True) and the LLM layer (its lean path and its LiteLLM path).

    python -m tests.benchmarks.bench_relay [--quick]

The server runs in a subprocess, so the process CPU time measured here (time.process_time,
not wall time) is the client's alone. Two streams: "spaced" (0.5 ms between chunks, each in
its own read, as a real model's tokens arrive) and "burst" (no delay). Each reader gets
warm-up streams, then a timed block; a block ends with an idle pause so that work a library
defers (LiteLLM's logging) is billed to it. The figure is the median over repeated blocks.
`run(quick)` returns rows for `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
from collections.abc import Awaitable, Callable

CHUNKS = 200
# "spaced": 0.5 ms between chunks, so each arrives in its own network read, as a real model's
# tokens do (per-read costs dominate); "burst": no delay, many chunks per read (parsing dominates).
MODES = {"burst": 0.0, "spaced": 0.0005}
MESSAGES = [{"role": "user", "content": "Say something long."}]
TARGET_RATIO = 2.0


async def _read_httpx(client, url: str) -> int:
    """The floor: httpx lines, `data:` payloads, json.loads, the content."""
    body = {"model": "bench", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    n = 0
    async with client.stream("POST", url + "/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data = line[6:]
                if data == "[DONE]":
                    break
                choices = json.loads(data)["choices"]
                if choices and choices[0]["delta"].get("content"):
                    n += 1
    return n


async def _read_openai(client, url: str) -> int:
    stream = await client.chat.completions.create(
        model="bench", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    n = 0
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            n += 1
    return n


async def _read_litellm(litellm, url: str) -> int:
    stream = await litellm.acompletion(
        model="openai/bench",
        api_base=url,
        api_key="sk-bench",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    n = 0
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            n += 1
    return n


async def _read_layer(llm, model: str) -> int:
    from services.common.llm import ChatMessage, CompletionRequest, TextDelta

    request = CompletionRequest(model=model, messages=(ChatMessage("user", MESSAGES[0]["content"]),), max_tokens=4096)
    n = 0
    async for event in llm.stream(request):
        if isinstance(event, TextDelta):
            n += 1
    return n


async def _cpu_per_chunk(read: Callable[[], Awaitable[int]], streams: int, warmup: int, pause: float) -> float:
    """CPU ms per chunk over one block of `streams` streams."""
    for _ in range(warmup):
        assert await read() == CHUNKS
    gc.collect()
    await asyncio.sleep(pause)
    start = time.process_time()
    for _ in range(streams):
        assert await read() == CHUNKS
    await asyncio.sleep(pause)  # deferred work (e.g. LiteLLM's success logging) counts for its reader
    return (time.process_time() - start) * 1000 / (streams * CHUNKS)


async def _measure(url: str, quick: bool, *, only: set[str] | None = None) -> dict[str, float]:
    import httpx
    import openai

    from services.common.llm import Endpoint, LLMSettings, build_llm_client
    from services.common.llm.litellm_provider import load_litellm

    litellm = await asyncio.to_thread(load_litellm)
    settings = LLMSettings(
        llm_allowed_models=["bench/*", "benchlite/*"],
        llm_endpoints={
            "bench": Endpoint(api_base=url),
            "benchlite": Endpoint(api_base=url, transport="litellm"),
        },
    )
    llm = build_llm_client(settings)
    http = httpx.AsyncClient(timeout=30)
    oai = openai.AsyncOpenAI(base_url=url, api_key="sk-bench", max_retries=0)
    readers: dict[str, Callable[[], Awaitable[int]]] = {
        "httpx_reader": lambda: _read_httpx(http, url),
        "openai_client": lambda: _read_openai(oai, url),
        "litellm": lambda: _read_litellm(litellm, url),
        "layer": lambda: _read_layer(llm, "bench/model"),
        "layer_litellm_path": lambda: _read_layer(llm, "benchlite/model"),
    }
    if only:
        readers = {name: read for name, read in readers.items() if name in only}
    streams, warmup, blocks, pause = (3, 1, 3, 0.05) if quick else (20, 3, 5, 0.2)
    samples: dict[str, list[float]] = {name: [] for name in readers}
    try:
        for _ in range(blocks):
            for name, read in readers.items():
                samples[name].append(await _cpu_per_chunk(read, streams, warmup, pause))
    finally:
        await http.aclose()
        await oai.close()
        await llm.aclose()
    return {name: statistics.median(values) for name, values in samples.items()}


def run(quick: bool = False, *, modes: tuple[str, ...] | None = None, only: set[str] | None = None) -> list[dict]:
    """Rows {metric, target, value, unit}: CPU ms per chunk of each reader, and layer/reader.

    Quick mode reads the burst stream only, a few times (a smoke run for the test suite)."""
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from tests.support.fake_openai import spawn_fake_openai

    rows = []
    for mode in modes or (("burst",) if quick else tuple(MODES)):
        with spawn_fake_openai(chunks=CHUNKS, chunk_delay=MODES[mode]) as url:
            figures = asyncio.run(_measure(url, quick, only=only))
        rows += [
            {
                "metric": f"relay_cpu_per_chunk_{name}[{mode}]",
                "target": "",
                "value": round(value, 4),
                "unit": "ms CPU/chunk",
            }
            for name, value in figures.items()
        ]
        if "layer" in figures and "httpx_reader" in figures:
            rows.append(
                {
                    "metric": f"relay_ratio_layer_to_httpx_reader[{mode}]",
                    "target": f"<= {TARGET_RATIO:g}",
                    "value": round(figures["layer"] / figures["httpx_reader"], 2),
                    "unit": "x",
                }
            )
        if "layer" in figures and "litellm" in figures:
            rows.append(
                {
                    "metric": f"relay_ratio_litellm_to_layer[{mode}]",
                    "target": "",
                    "value": round(figures["litellm"] / figures["layer"], 2),
                    "unit": "x",
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="burst stream only, fewer streams (a smoke run)")
    parser.add_argument("--mode", choices=sorted(MODES), action="append", help="stream spacing (default: both)")
    args = parser.parse_args()
    rows = run(args.quick, modes=tuple(args.mode) if args.mode else None)
    width = max(len(r["metric"]) for r in rows)
    print(f"{'metric':<{width}}  {'value':>9}  unit           target")
    for row in rows:
        print(f"{row['metric']:<{width}}  {row['value']:>9}  {row['unit']:<13}  {row['target']}")


if __name__ == "__main__":
    main()
