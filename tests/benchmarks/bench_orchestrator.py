"""Orchestrator benchmarks: the test plan's latency and memory figures (sections 2 and 3),
ported to the gRPC suite.

    python -m tests.benchmarks.bench_orchestrator [--quick] [--overhead]

`--overhead` runs only the two figures of issue 16's part 5 (docs/orchestrator-overhead.md):
the orchestrator's own overhead per debater per round, and the same through the real judge and
accounting, the latter three times in the same run: with the ledger's group commit (today), the
same with a budget (a reservation before each turn), and with one transaction per usage row (before
it, LEDGER_GROUP_COMMIT=false). Each row also gives the orchestrator's gRPC calls to the judge and
accounting per debater per round, by method (its clients' stubs counted, `count_calls`).

The orchestrator runs in this process (so its time and memory can be measured) on a real gRPC
port, with an instant scripted model, and talks to the real judge and accounting services,
started as processes. Clients speak gRPC to it. Figures only: nothing here asserts a time.

- orchestration overhead per debater per round: from RoundStarted to the round's last
  TurnCompleted (event times, set by the orchestrator), divided by the debaters; it includes
  the window build, the TurnStarted/TokenDelta/TurnCompleted events, the store commits, the
  usage record (one BatchRecordUsage call for the turns that end together) and (with a budget)
  the reservation (one BatchReserveBudget call for the turns that start together). Wall time, so
  the rows also give the mean and median and, steadier on a shared machine, the CPU seconds each
  process spent per debater per round (this process runs the orchestrator and its client), the
  usage RPCs and all the gRPC calls to the judge and accounting sent per debater per round;
- parallel stream setup: RoundStarted to the first chunk of the last of 4 model streams;
- sliding window over 20 rounds: ContextBuilder.build with the real tokenizer;
- memory: tracemalloc peak of a whole 5-round 4-debater debate, per waiting subscriber (the
  orchestrator's own state per stream), retained after 3 debates; plus the process's RSS;
- relay latency: model chunk to a gRPC subscriber (p50, p99) with a paced model;
- messages per second one gRPC subscriber receives replaying a long log.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter

import grpc
import psutil
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc as pbg

from services.accounting.ledger import Accounting
from services.accounting.store import Role, SqliteLedgerStore
from services.common.pricing import PriceBook
from services.common.usage import Usage
from services.launcher import SuiteConfig
from services.orchestrator.context import ContextBuilder, Transcript
from services.orchestrator.server import build_service
from services.orchestrator.settings import OrchestratorSettings
from tests.helpers import ROOT, free_port
from tests.support.orchestrator_fakes import MemoryAccounting, MemoryJudge, ScriptedLLM

MB = 1024 * 1024


class TimedLLM(ScriptedLLM):
    """The scripted model, remembering when each stream produced its first chunk and each word."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.first_chunk_ns: list[int] = []
        self.word_ns: dict[str, float] = {}
        self.track_words = False

    async def stream(self, request):
        first = True
        async for event in super().stream(request):
            if first:
                self.first_chunk_ns.append(time.time_ns())
                first = False
            if self.track_words and hasattr(event, "text"):
                self.word_ns[f"{request.request_id}|{event.text.strip()}"] = time.perf_counter()
            yield event


def start_backends(data_dir: str, **env: str) -> tuple[SuiteConfig, list[subprocess.Popen]]:
    """The judge and accounting services as processes (in the launcher's order), with `env` added."""
    config = SuiteConfig(
        judge_port=free_port(),
        accounting_port=free_port(),
        data_dir=data_dir,
        log_level="WARNING",
        extra_env={"SIM_FIRST_TOKEN_LATENCY": "0", "SIM_TOKENS_PER_SECOND": "0", **env},
    )
    specs = [s for s in config.process_specs() if s.name in ("judge", "accounting")]
    procs = [
        subprocess.Popen(
            s.argv, cwd=ROOT, env={**os.environ, **s.env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for s in specs
    ]
    from tests.integration.test_orchestrator_suite import wait_serving

    for s in specs:
        wait_serving(s.health_address, s.health_service)
    return config, procs


def watch(config: SuiteConfig, procs: list[subprocess.Popen]) -> dict[str, psutil.Process]:
    """The processes of start_backends by service name, for their CPU times."""
    names = [s.name for s in config.process_specs() if s.name in ("judge", "accounting")]
    return {name: psutil.Process(proc.pid) for name, proc in zip(names, procs, strict=True)}


def debate_config(n: int, rounds: int, **kwargs) -> c.DebateConfig:
    return c.DebateConfig(
        topic="Cities should ban private cars from their centres",
        participants=[
            c.Participant(
                name=f"d{i}", model="sim/debater", persona=f"persona {i}", stance="for" if i % 2 == 0 else "against"
            )
            for i in range(n)
        ],
        format=c.DebateFormat(round_limit=rounds),
        **kwargs,
    )


def count_calls(stub: object, service: str, counts: Counter[str]) -> None:
    """Wraps each RPC method of a client's `stub` so that every call adds one to
    counts["<service>.<Method>"] (the clients look their stub's methods up at each call)."""
    for name in dir(stub):
        method = getattr(stub, name)
        if name[:1].isupper() and callable(method):

            def counted(*args, _method=method, _key=f"{service}.{name}", **kwargs):
                counts[_key] += 1
                return _method(*args, **kwargs)

            setattr(stub, name, counted)


class Bench:
    def __init__(self, backends: SuiteConfig, data_dir: str, llm: TimedLLM, **collaborators):
        self.backends, self.data_dir, self.llm = backends, data_dir, llm
        self.collaborators = collaborators  # judge= / accounting= stand-ins instead of the services
        self.calls: Counter[str] = Counter()  # the orchestrator's gRPC calls to the judge and accounting

    async def __aenter__(self):
        settings = OrchestratorSettings(
            port=0,
            data_dir=self.data_dir,
            log_level="WARNING",
            judge_service_addr=self.backends.address(self.backends.judge_port),
            accounting_service_addr=self.backends.address(self.backends.accounting_port),
            service_api_key=self.backends.service_api_key,  # the judge and accounting admit only the suite's key
        )
        self.service = await build_service(settings, llm=self.llm, **self.collaborators)
        engine = self.service.engine
        for service, client in (("judge", engine.judging.judge), ("accounting", engine.turns.accounting)):
            if hasattr(client, "stub"):  # the gRPC client, not an in-process stand-in
                count_calls(client.stub, service, self.calls)
        port = await self.service.start()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pbg.OrchestratorServiceStub(self.channel)
        return self

    async def __aexit__(self, *exc):
        await self.channel.close()
        await self.service.stop(0)

    async def run(self, cfg: c.DebateConfig) -> list[pb.DebateEvent]:
        debate = (await self.stub.CreateDebate(pb.CreateDebateRequest(config=cfg))).debate
        await self.stub.StartDebate(pb.StartDebateRequest(debate_id=debate.debate_id))
        return [
            r.event
            async for r in self.stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate.debate_id))
        ]


def round_overheads(events: list[pb.DebateEvent], debaters: int) -> list[float]:
    """Seconds per debater of each round: RoundStarted to the round's last TurnCompleted."""
    starts, ends = {}, {}
    for e in events:
        kind = e.WhichOneof("payload")
        if kind == "round_started":
            starts[e.round_started.round_number] = e.time.ToNanoseconds()
        elif kind == "turn_completed":
            ends[e.turn_completed.turn.round_number] = e.time.ToNanoseconds()
    return [(ends[r] - starts[r]) / 1e9 / debaters for r in starts if r in ends]


def _cpu(process: psutil.Process | None = None) -> float:
    """CPU seconds (user + system) of a process so far; this one by default."""
    if process is None:
        return time.process_time()
    times = process.cpu_times()
    return times.user + times.system


async def overhead_samples(bench: Bench, n: int, debates: int, procs: dict[str, psutil.Process], **config) -> dict:
    """`debates` debates of 3 rounds with `n` debaters: per debater per round, the wall seconds of
    each round (RoundStarted to its last TurnCompleted) and each process's mean CPU seconds (this
    one, "orchestrator", and the `procs`)."""
    await bench.run(debate_config(n, 2, **config))  # warm-up
    samples: list[float] = []
    before = {"orchestrator": _cpu(), **{name: _cpu(p) for name, p in procs.items()}}
    batches_before = _usage_batches(bench)
    calls_before = Counter(bench.calls)
    for _ in range(debates):
        samples += round_overheads(await bench.run(debate_config(n, 3, **config)), n)
    after = {"orchestrator": _cpu(), **{name: _cpu(p) for name, p in procs.items()}}
    turns = debates * 3 * n
    batches = _usage_batches(bench)
    calls = bench.calls - calls_before
    return {
        "mean": statistics.mean(samples),
        "median": statistics.median(samples),
        "rounds": len(samples),
        "cpu": {name: (after[name] - before[name]) / turns for name in after},
        "usage_rpcs": None if batches is None or batches_before is None else (batches - batches_before) / turns,
        "calls": {method: count / turns for method, count in sorted(calls.items())},
    }


def _usage_batches(bench: Bench) -> int | None:
    """BatchRecordUsage calls the orchestrator's accounting client has made (None: a stand-in)."""
    return getattr(bench.service.engine.turns.accounting, "batches_sent", None)


def _overhead_note(m: dict, what: str) -> str:
    cpu = ", ".join(f"{name} {seconds * 1000:.3f}" for name, seconds in m["cpu"].items())
    rpcs = "" if m.get("usage_rpcs") is None else f"; usage RPCs per debater per round {m['usage_rpcs']:.2f}"
    if m.get("calls"):
        by_method = ", ".join(f"{method.split('.')[1]} {count:.2f}" for method, count in m["calls"].items())
        rpcs += f"; gRPC calls to judge+accounting per debater per round {sum(m['calls'].values()):.2f} ({by_method})"
    return (
        f"{what}; median {m['median'] * 1000:.3f} ms; CPU ms per debater per round: {cpu}{rpcs}; {m['rounds']} rounds"
    )


async def bench_overhead(bench: Bench, quick: bool, procs: dict[str, psutil.Process]) -> list[dict]:
    rows = []
    debates = 2 if quick else 8
    means = {}
    for n in (2, 3, 4):
        m = await overhead_samples(bench, n, debates, procs)
        means[n] = m["mean"]
        rows.append(
            {
                "metric": f"orchestration overhead per debater per round, {n} debaters",
                "target": "< 10 ms mean (aim < 1 ms)",
                "value": round(m["mean"] * 1000, 3),
                "unit": "ms",
                "note": _overhead_note(m, "instant model, real judge+accounting over gRPC, group commit"),
            }
        )
    m = await overhead_samples(bench, 4, debates, procs, budget=c.Money(currency_code="USD", amount="100"))
    rows.append(
        {
            "metric": "orchestration overhead per debater per round, 4 debaters, with budget",
            "target": "< 10 ms mean",
            "value": round(m["mean"] * 1000, 3),
            "unit": "ms",
            "note": _overhead_note(m, "adds a reservation per turn (a BatchReserveBudget per round)"),
        }
    )
    rows.append(
        {
            "metric": "overhead growth 2 -> 4 debaters (per debater)",
            "target": "<= 2x (linear)",
            "value": round(means[4] / means[2], 2),
            "unit": "x",
        }
    )
    return rows


async def bench_services_before_after(data_dir: str, quick: bool) -> list[dict]:
    """Through the real judge and accounting, 4 debaters, in one run: the ledger with its group
    commit, then (new processes, new ledger) with one transaction per usage row, as before it."""
    rows = []
    debates = 4 if quick else 12
    budget = {"budget": c.Money(currency_code="USD", amount="100")}
    for label, group_commit, config in (
        ("group commit", "true", {}),
        ("group commit, with a budget", "true", budget),
        ("one transaction per row (before)", "false", {}),
    ):
        where = os.path.join(data_dir, f"services-{group_commit}-{len(config)}")
        os.makedirs(where)
        backends, procs = start_backends(where, LEDGER_GROUP_COMMIT=group_commit)
        try:
            watched = watch(backends, procs)
            async with Bench(backends, where, TimedLLM(chunks=20)) as bench:
                m = await overhead_samples(bench, 4, debates, watched, **config)
        finally:
            stop_backends(procs)
        rows.append(
            {
                "metric": f"overhead through the services per debater per round, 4 debaters, {label}",
                "target": "aim <= 1 ms mean",
                "value": round(m["mean"] * 1000, 3),
                "unit": "ms",
                "note": _overhead_note(
                    m, f"LEDGER_GROUP_COMMIT={group_commit}" + (", budget 100 USD" if config else "")
                ),
            }
        )
    return rows


async def bench_ledger_group_commit(quick: bool) -> list[dict]:
    """The ledger alone (accounting's domain and its SQLite store, in this process, no RPC):
    usage rows recorded by 4 concurrent callers at a time, as the 4 turns of a round end, with
    the group commit and with one transaction per row. Wall and CPU per row (CPU counts the
    ledger thread's fsyncs), and the transactions the rows took."""
    rows = []
    batches = 50 if quick else 300
    for label, group_commit in (("group commit", True), ("one transaction per row (before)", False)):
        with tempfile.TemporaryDirectory() as where:
            ledger = Accounting(
                PriceBook(), SqliteLedgerStore(os.path.join(where, "ledger.sqlite3")), group_commit=group_commit
            )
            try:
                usage = Usage(prompt_tokens=400, completion_tokens=20)
                await ledger.record_usage(
                    request_id="warm",
                    debate_id="warm",
                    participant="d0",
                    role=Role.DEBATER,
                    round_number=1,
                    model="sim/debater",
                    attempt=1,
                    usage=usage,
                )
                commits, cpu, wall = ledger.usage_commits, time.process_time(), time.perf_counter()
                for b in range(batches):
                    await asyncio.gather(
                        *(
                            ledger.record_usage(
                                request_id=f"debates/b{b}/rounds/1/turns/d{i}/attempts/1",
                                debate_id=f"b{b}",
                                participant=f"d{i}",
                                role=Role.DEBATER,
                                round_number=1,
                                model="sim/debater",
                                attempt=1,
                                usage=usage,
                            )
                            for i in range(4)
                        )
                    )
                n = batches * 4
                wall, cpu = (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n
                commits = (ledger.usage_commits - commits) / n
            finally:
                await ledger.close()
        rows.append(
            {
                "metric": f"ledger: usage row recorded by 4 concurrent callers, {label}",
                "target": "-",
                "value": round(wall * 1000, 3),
                "unit": "ms",
                "note": f"wall per row; CPU {cpu * 1000:.3f} ms per row; {commits:.2f} transactions (fsyncs) per row; "
                f"{n} rows, SQLite synchronous=FULL, in process",
            }
        )
    return rows


async def bench_own_overhead(backends: SuiteConfig, data_dir: str, quick: bool) -> list[dict]:
    """The same measure with the judge and ledger in process: the orchestrator's own share."""
    rows = []
    async with Bench(
        backends, os.path.join(data_dir, "own"), TimedLLM(chunks=20), judge=MemoryJudge(), accounting=MemoryAccounting()
    ) as bench:
        for n in (2, 4):
            m = await overhead_samples(bench, n, 2 if quick else 12, {})
            rows.append(
                {
                    "metric": f"orchestrator's own overhead per debater per round, {n} debaters",
                    "target": "aim <= 0.3 ms mean",
                    "value": round(m["mean"] * 1000, 3),
                    "unit": "ms",
                    "note": _overhead_note(m, "judge and ledger in process: no RPC, no ledger fsync"),
                }
            )
    return rows


async def bench_stream_setup(bench: Bench, quick: bool) -> list[dict]:
    samples = []
    for _ in range(3 if quick else 15):
        bench.llm.first_chunk_ns.clear()
        events = await bench.run(debate_config(4, 1))
        start = next(e.time.ToNanoseconds() for e in events if e.WhichOneof("payload") == "round_started")
        samples.append((max(bench.llm.first_chunk_ns[:4]) - start) / 1e6)
    return [
        {
            "metric": "parallel stream setup, 4 debaters",
            "target": "< 20 ms mean",
            "value": round(statistics.mean(samples), 3),
            "unit": "ms",
            "note": "RoundStarted to the 4th stream's first chunk",
        }
    ]


def _history(config: c.DebateConfig, rounds: int) -> Transcript:
    words = [
        "the",
        "evidence",
        "from",
        "cities",
        "that",
        "tried",
        "it",
        "shows",
        "fewer",
        "accidents",
        "and",
        "cleaner",
        "air",
    ]
    transcript = Transcript()
    for r in range(1, rounds + 1):
        for p in config.participants:
            transcript.add(r, p.name, " ".join(words[(r + i) % len(words)] for i in range(200)))
    return transcript


def bench_window(quick: bool) -> list[dict]:
    """Window builds after 5, 10, 20 and 50 rounds (window 5, 4096 tokens, 4 debaters): the
    window's size and its build time should not depend on the debate's length."""
    config = debate_config(4, 60)
    config.context.CopyFrom(c.ContextSettings(max_tokens=4096, window_size=5))
    config.max_tokens_per_turn = 512
    n = 200 if quick else 3000
    rows, means = [], {}
    for rounds in (5, 10, 20, 50):
        transcript = _history(config, rounds)
        builder = ContextBuilder(config)
        for participant in config.participants:  # counts each turn and prompt once, as a debate does
            window = builder.build(participant, rounds + 1, transcript)
        started = time.perf_counter()
        for i in range(n):
            builder.build(config.participants[i % 4], rounds + 1, transcript)
        means[rounds] = (time.perf_counter() - started) / n
        rows.append(
            {
                "metric": f"sliding window build after {rounds} rounds (4 debaters, window 5, 4096 tokens)",
                "target": "< 5 ms mean",
                "value": round(means[rounds] * 1000, 4),
                "unit": "ms",
                "note": f"{len(window.messages)} messages, {window.prompt_tokens} tokens; counts cached per turn",
            }
        )
    rows.append(
        {
            "metric": "sliding window build time, 50 rounds / 5 rounds",
            "target": "~1x (bounded)",
            "value": round(means[50] / means[5], 2),
            "unit": "x",
        }
    )
    transcript = _history(config, 20)
    cold_n = 20 if quick else 200
    elapsed = 0.0
    for _ in range(cold_n):
        fresh = Transcript()
        fresh.rounds = [{k: type(v)(v.participant, v.text) for k, v in rd.items()} for rd in transcript.rounds]
        builder = ContextBuilder(config)
        started = time.perf_counter()
        builder.build(config.participants[0], 21, fresh)
        elapsed += time.perf_counter() - started
    rows.append(
        {
            "metric": "sliding window build over 20 rounds, nothing cached (tokenizes the window)",
            "target": "< 5 ms mean",
            "value": round(elapsed / cold_n * 1000, 3),
            "unit": "ms",
        }
    )
    return rows


async def bench_memory(bench: Bench, quick: bool) -> list[dict]:
    rows = []
    process = psutil.Process()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    rss0 = process.memory_info().rss
    tracemalloc.reset_peak()
    await bench.run(debate_config(4, 5))
    peak = tracemalloc.get_traced_memory()[1] - base
    rows.append(
        {
            "metric": "memory of a whole 5-round debate, 4 debaters (peak, Python heap)",
            "target": "< 100 MB",
            "value": round(peak / MB, 3),
            "unit": "MB",
            "note": f"RSS grew {(process.memory_info().rss - rss0) / MB:.1f} MB",
        }
    )

    # Debater streams: the debate's state while 4 model streams are open, per stream.
    llm = bench.llm
    llm.delay, llm.chunks = 0.01, 60
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    debate = (await bench.stub.CreateDebate(pb.CreateDebateRequest(config=debate_config(4, 1)))).debate
    await bench.stub.StartDebate(pb.StartDebateRequest(debate_id=debate.debate_id))
    await asyncio.sleep(0.3)  # mid-turn: 4 streams open, text buffered, events logged
    per_stream = (tracemalloc.get_traced_memory()[0] - before) / 4
    async for _ in bench.stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate.debate_id)):
        pass
    llm.delay, llm.chunks = 0.0, 20
    rows.append(
        {
            "metric": "memory per active debater stream (4 streams open, mid-turn)",
            "target": "< 10 MB",
            "value": round(per_stream / 1024, 2),
            "unit": "KB",
            "note": "Python heap of the running debate / 4",
        }
    )

    # Subscribers: the orchestrator's own state per waiting stream (cursor, generator, future).
    hub = bench.service.engine.hub
    debate = (await bench.stub.CreateDebate(pb.CreateDebateRequest(config=debate_config(2, 1)))).debate
    count = 200 if quick else 2000
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    gens = [hub.subscribe(debate.debate_id, 0, terminal=False, last_sequence=0) for _ in range(count)]
    tasks = [asyncio.ensure_future(g.__anext__()) for g in gens]
    await asyncio.sleep(0.05)
    per_sub = (tracemalloc.get_traced_memory()[0] - before) / count
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for g in gens:
        await g.aclose()
    rows.append(
        {
            "metric": "memory per subscriber stream (orchestrator state of a waiting subscriber)",
            "target": "< 10 MB",
            "value": round(per_sub / 1024, 2),
            "unit": "KB",
            "note": "gRPC's own per-call buffers not included",
        }
    )

    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    rss0 = process.memory_info().rss
    for _ in range(3):
        await bench.run(debate_config(4, 3))
    gc.collect()
    await asyncio.sleep(0.1)
    retained = tracemalloc.get_traced_memory()[0] - base
    rows.append(
        {
            "metric": "memory retained after 3 debates (Python heap)",
            "target": "< 50 MB",
            "value": round(retained / MB, 3),
            "unit": "MB",
            "note": f"RSS grew {(process.memory_info().rss - rss0) / MB:.1f} MB",
        }
    )
    tracemalloc.stop()
    return rows


async def bench_relay(bench: Bench, quick: bool) -> list[dict]:
    llm = bench.llm
    llm.delay, llm.chunks, llm.track_words = 0.005, (60 if quick else 200), True
    llm.word_ns.clear()
    latencies = []
    debate = (await bench.stub.CreateDebate(pb.CreateDebateRequest(config=debate_config(4, 1 if quick else 2)))).debate
    keys = {}
    call = bench.stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate.debate_id))
    await bench.stub.StartDebate(pb.StartDebateRequest(debate_id=debate.debate_id))
    async for response in call:
        e = response.event
        kind = e.WhichOneof("payload")
        if kind == "turn_started":
            t = e.turn_started
            keys[(t.round_number, t.participant)] = (
                f"debates/{debate.debate_id}/rounds/{t.round_number}/turns/{t.participant}/attempts/{t.attempt}"
            )
        elif kind == "token_delta":
            now = time.perf_counter()
            d = e.token_delta
            key = keys[(d.round_number, d.participant)]
            for word in d.text.split():
                sent = llm.word_ns.get(f"{key}|{word}")
                if sent is not None:
                    latencies.append(now - sent)
    llm.delay, llm.chunks, llm.track_words = 0.0, 20, False
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    coalesce = bench.service.engine.settings.coalesce_ms
    return [
        {
            "metric": "relay latency model chunk -> subscriber, p50",
            "target": "(issue 8: p99 < 250 ms)",
            "value": round(p50, 2),
            "unit": "ms",
            "note": f"{len(latencies)} chunks, coalescing {coalesce:.0f} ms",
        },
        {
            "metric": "relay latency model chunk -> subscriber, p99",
            "target": "< 250 ms",
            "value": round(p99, 2),
            "unit": "ms",
        },
    ]


async def bench_messages(bench: Bench, quick: bool) -> list[dict]:
    """A log of token deltas as a debate writes them, read by one gRPC subscriber from the start."""
    hub = bench.service.engine.hub
    debate = (await bench.stub.CreateDebate(pb.CreateDebateRequest(config=debate_config(4, 1)))).debate
    total = 2000 if quick else 20000
    hub.open_log(debate.debate_id, 0)
    for i in range(total):
        hub.emit(
            debate.debate_id,
            token_delta=pb.TokenDelta(round_number=1, participant=f"d{i % 4}", text=f"word{i} and more ", attempt=1),
        )
        if i % 500 == 499:
            hub.flush()
    hub.flush()
    best = 0.0
    for _ in range(2 if quick else 4):
        started = time.perf_counter()
        n = 0
        call = bench.stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate.debate_id))
        async for _ in call:
            n += 1
            if n == total:
                call.cancel()
                break
        best = max(best, n / (time.perf_counter() - started))
    await bench.stub.CancelDebate(pb.CancelDebateRequest(debate_id=debate.debate_id))
    return [
        {
            "metric": "messages/s one gRPC subscriber receives",
            "target": "-",
            "value": round(best),
            "unit": "msg/s",
            "note": f"{total} token deltas from memory and SQLite; client in the same process",
        }
    ]


def stop_backends(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=15)


async def main_async(quick: bool, overhead_only: bool = False) -> list[dict]:
    with tempfile.TemporaryDirectory() as data_dir:
        backends, procs = start_backends(data_dir)
        try:
            if overhead_only:
                return await bench_own_overhead(backends, data_dir, quick)
            rows = bench_window(quick)
            watched = watch(backends, procs)
            async with Bench(backends, data_dir, TimedLLM(chunks=20)) as bench:
                rows = (await bench_overhead(bench, quick, watched)) + (await bench_stream_setup(bench, quick)) + rows
                rows += await bench_relay(bench, quick)
                rows += await bench_messages(bench, quick)
                rows += await bench_memory(bench, quick)
            own = await bench_own_overhead(backends, data_dir, quick)
            return own + rows
        finally:
            stop_backends(procs)


async def overhead_async(quick: bool) -> list[dict]:
    """Issue 16 part 5's two figures: the own overhead, then through the services before/after."""
    own = await main_async(quick, overhead_only=True)
    with tempfile.TemporaryDirectory() as data_dir:
        return own + await bench_services_before_after(data_dir, quick) + await bench_ledger_group_commit(quick)


def run(quick: bool = False, overhead: bool = False) -> list[dict]:
    """Rows {metric, target, value, unit[, note]} (see tests/benchmarks/run_all.py); `overhead`:
    only the overhead figures, the services' with and without the ledger's group commit and with a budget."""
    if overhead:
        return asyncio.run(overhead_async(quick))
    rows = asyncio.run(main_async(quick))
    with tempfile.TemporaryDirectory() as data_dir:
        rows += asyncio.run(bench_services_before_after(data_dir, quick))
    return rows + asyncio.run(bench_ledger_group_commit(quick))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (what the test suite runs)")
    parser.add_argument(
        "--overhead", action="store_true", help="only the overhead per debater per round, own and through the services"
    )
    args = parser.parse_args(argv)
    rows = run(args.quick, args.overhead)
    width = max(len(r["metric"]) for r in rows)
    print(f"{'metric':<{width}}  {'target':<22} {'value':>10} unit   note")
    for r in rows:
        print(f"{r['metric']:<{width}}  {r['target']:<22} {r['value']:>10} {r['unit']:<6} {r.get('note', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
