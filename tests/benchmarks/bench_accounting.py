"""Accounting benchmark: in-process cost of pricing and token counting, the RPC rate the
service sustains, the ledger's commit cost, and the service's memory at rest.

    python -m tests.benchmarks.bench_accounting [--quick]

`run(quick)` returns rows {metric, target, value, unit} for `make bench`; `main` prints them.
The service is started as its own process (`python -m services.accounting`) so that its RSS
and RPC rate are its own, with the load generated from this process over a real channel.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import grpc
import psutil
from debate.accounting.v1 import accounting_pb2 as pb
from debate.accounting.v1 import accounting_pb2_grpc
from debate.common.v1 import common_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.accounting.store import Role, SqliteLedgerStore, UsageRow
from services.common.pricing import PriceBook
from services.common.tokens import count_message_tokens, count_text_tokens
from services.common.usage import Usage
from tests.helpers import ROOT, free_port

SONNET = "claude-3-5-sonnet-20241022"
# About a 500-token debate turn.
TURN = (
    "The evidence from cities that restricted cars points both ways: air quality improves and "
    "retail footfall often rises, yet deliveries, disabled access and night work suffer. "
) * 14
CHAT = [
    {"role": "system", "content": "You are a pragmatic economist arguing for the motion."},
    {"role": "user", "content": TURN},
    {"role": "assistant", "content": TURN},
]


def _per_call(fn: Callable[[], object], seconds: float) -> tuple[float, int]:
    """Mean seconds per call over about `seconds` of calls (after a warm-up call)."""
    fn()
    calls, batch = 0, 1
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        calls += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / calls, calls
        batch = min(batch * 2, 10_000)


def _row(metric: str, target: str, value: float, unit: str) -> dict:
    return {
        "metric": metric,
        "target": target,
        "value": round(value, 3) if value >= 1 else float(f"{value:.3g}"),
        "unit": unit,
    }


def in_process(seconds: float) -> list[dict]:
    rows = []
    start = time.perf_counter()
    prices = PriceBook()
    rows.append(
        _row("price book load (LiteLLM map + project file)", "once at start", (time.perf_counter() - start) * 1e3, "ms")
    )
    per, _ = _per_call(lambda: prices.price(SONNET), seconds)
    rows.append(_row("price lookup", "< 1 µs", per * 1e6, "µs/call"))
    usage = Usage(1234, 567)
    per, _ = _per_call(lambda: prices.cost(SONNET, usage), seconds)
    rows.append(_row("CalculateCost in process", "< 450 µs (litellm.completion_cost)", per * 1e6, "µs/call"))
    for model, label in (("gpt-4", "tiktoken cl100k"), ("gpt-4o", "tiktoken o200k"), (SONNET, "anthropic tokenizer")):
        tokens = count_text_tokens(model, TURN)
        per, _ = _per_call(lambda m=model: count_text_tokens(m, TURN), seconds)
        rows.append(_row(f"CountTokens text {tokens} tok, {model} ({label})", "per call", per * 1e6, "µs/call"))
        rows.append(_row(f"CountTokens throughput, {model}", "tokens/s", tokens / per, "tokens/s"))
    tokens = count_message_tokens("gpt-4", CHAT)
    per, _ = _per_call(lambda: count_message_tokens("gpt-4", CHAT), seconds)
    rows.append(_row(f"CountTokens 3-message chat {tokens} tok, gpt-4", "per call", per * 1e6, "µs/call"))
    return rows


def ledger_commit(seconds: float) -> list[dict]:
    """One RecordUsage transaction (BEGIN IMMEDIATE, insert, COMMIT with fsync) on this disk:
    the time the ledger thread spends per row, which the event loop must not wait for."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteLedgerStore(Path(tmp) / "ledger.sqlite3")
        counter = iter(range(10**9))

        def commit():
            n = next(counter)
            store.record(
                UsageRow(
                    f"r{n}", "bench", "pro", Role.DEBATER, 1, SONNET, 1, Usage(1000, 500), False, Decimal("0.0105")
                )
            )

        per, _ = _per_call(commit, seconds)
        store.close()
        hop = asyncio.run(_thread_hop(seconds))
        via_domain = asyncio.run(_domain_record(Path(tmp) / "domain.sqlite3", seconds))
    return [
        _row("ledger commit (WAL, synchronous=FULL)", "per row, off the event loop", per * 1e3, "ms/row"),
        _row("ledger thread hop (await run_in_executor)", "small next to a commit", hop * 1e6, "µs"),
        _row("RecordUsage in process (validate, price, commit)", "per call, sequential", via_domain * 1e3, "ms/call"),
    ]


async def _thread_hop(seconds: float) -> float:
    from concurrent.futures import ThreadPoolExecutor

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as thread:
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            await loop.run_in_executor(thread, int)
            calls += 1
    return (time.perf_counter() - start) / calls


async def _domain_record(path: Path, seconds: float) -> float:
    from services.accounting.ledger import Accounting

    accounting = Accounting(PriceBook(), SqliteLedgerStore(path))
    try:
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            await accounting.record_usage(
                request_id=f"r{calls}",
                debate_id="bench",
                participant="pro",
                role=Role.DEBATER,
                round_number=1,
                model=SONNET,
                attempt=1,
                usage=Usage(1000, 500),
            )
            calls += 1
        return (time.perf_counter() - start) / calls
    finally:
        await accounting.close()


async def _wait_ready(address: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"accounting service at {address} did not become ready")
            await asyncio.sleep(0.1)


async def _rate(address: str, seconds: float, concurrency: int, make_call) -> float:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = accounting_pb2_grpc.AccountingServiceStub(channel)
        await make_call(stub, -1)
        done = 0
        stop = time.perf_counter() + seconds

        async def worker(w: int):
            nonlocal done
            i = 0
            while time.perf_counter() < stop:
                await make_call(stub, w * 10_000_000 + i)
                i += 1
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return done / (time.perf_counter() - start)


def service(seconds: float, concurrency: int = 32) -> list[dict]:
    port = free_port()
    address = f"127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "LOG_LEVEL": "WARNING"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.accounting", "--port", str(port), "--data-dir", tmp],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            asyncio.run(_wait_ready(address))
            time.sleep(0.5)
            server = psutil.Process(proc.pid)
            rest = server.memory_info().rss / 2**20
            cost_request = pb.CalculateCostRequest(
                model=SONNET, usage=common_pb2.TokenUsage(prompt_tokens=1234, completion_tokens=567)
            )

            async def calculate(stub, i):
                await stub.CalculateCost(cost_request, timeout=10)

            async def count(stub, i):
                await stub.CountTokens(pb.CountTokensRequest(model="gpt-4", text=TURN), timeout=10)

            async def record(stub, i):
                await stub.RecordUsage(
                    pb.RecordUsageRequest(
                        request_id=f"bench/{i}",
                        debate_id="bench",
                        participant="pro",
                        role=common_pb2.ROLE_DEBATER,
                        round_number=1,
                        model=SONNET,
                        attempt=1,
                        usage=common_pb2.TokenUsage(prompt_tokens=1000, completion_tokens=500),
                    ),
                    timeout=10,
                )

            cpu_start = server.cpu_times()
            calc_rate = asyncio.run(_rate(address, seconds, concurrency, calculate))
            cpu = server.cpu_times()
            cpu_per_call = ((cpu.user + cpu.system) - (cpu_start.user + cpu_start.system)) / max(1, calc_rate * seconds)
            count_rate = asyncio.run(_rate(address, seconds, concurrency, count))
            record_rate = asyncio.run(_rate(address, seconds, concurrency, record))
            loaded = server.memory_info().rss / 2**20
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    return [
        _row("service RSS at rest", "small (no litellm import)", rest, "MiB"),
        _row(f"CalculateCost RPC rate, {concurrency} concurrent", "RPC/s on 2 cores", calc_rate, "RPC/s"),
        _row("CalculateCost server CPU per RPC", "per call", cpu_per_call * 1e3, "ms CPU"),
        _row(f"CountTokens RPC rate (~500-token text), {concurrency} concurrent", "RPC/s", count_rate, "RPC/s"),
        _row(f"RecordUsage RPC rate (new rows, fsync each), {concurrency} concurrent", "RPC/s", record_rate, "RPC/s"),
        _row("service RSS after load", "small", loaded, "MiB"),
    ]


def run(quick: bool = False) -> list[dict]:
    seconds = 0.2 if quick else 1.0
    return in_process(seconds) + ledger_commit(seconds) + service(0.5 if quick else 5.0)


def print_table(rows: list[dict]) -> None:
    width = max(len(r["metric"]) for r in rows)
    target_width = max(len(r["target"]) for r in rows)
    print(f"{'metric':<{width}}  {'target':<{target_width}}  {'value':>12}  unit")
    for r in rows:
        print(f"{r['metric']:<{width}}  {r['target']:<{target_width}}  {r['value']:>12,}  {r['unit']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    print_table(run(parser.parse_args(argv).quick))


if __name__ == "__main__":
    main()
