"""The suite beside what a user would write instead (issue 16, part 6): the same debate job, 4
debaters of 200 tokens each on the same fake OpenAI-compatible provider, run two ways in one run.

    python -m tests.benchmarks.bench_user_loop [--quick] [--jobs 3]

- **suite**: the three services (tests/benchmarks/scale.py's settings: the debaters are
  `fake/debater`, an endpoint of LLM_ENDPOINTS on the lean transport, judged by `sim/judge`);
  one debate of one round, created, started and followed to its end over gRPC. Measured: the
  orchestrator's CPU, and the whole suite's (orchestrator, judge, accounting), from psutil.
- **user loop**: the minimal loop a user writes with LiteLLM, in this process: the four calls
  at once with `litellm.acompletion(..., stream=True, stream_options={"include_usage": True})`,
  each collecting its text and its usage. LiteLLM as it comes (only its local price map, so that
  nothing is fetched from the network); CPU is this process's (time.process_time), with an idle
  pause after the job so that work LiteLLM defers (its logging) is counted.

The provider is tests/support/fast_provider.py in a process of its own (its CPU is not counted
on either side), 50 tokens a second (quick: 200), one token a chunk, each chunk in its own
network write: the same stream for both. A job runs `--jobs` times each way, alternating; the
figures are medians. Printed: CPU per model call and per token of each way, and their ratios
(suite / user loop). The suite does more than the loop (it stores every event, relays them to a
subscriber, prices and records every call in its ledger, judges the round); the orchestrator's
figure is what the streaming itself costs the suite beside that.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass

import grpc
import psutil
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from services.client.follow import events_of
from services.launcher import SuiteConfig
from services.supervisor import Suite
from tests.benchmarks.scale import PROVIDER_MODEL, TOKENS_PER_TURN, debate_config, provider_settings
from tests.helpers import free_port
from tests.support.fast_provider import ProviderProcesses, spawn_fast_provider

DEBATERS = 4
SERVICES = ("orchestrator", "judge", "accounting")
# What a user's debater sees: a persona and the motion (the suite builds its own prompts).
USER_PROMPTS = [
    [
        {"role": "system", "content": f"You are {persona}. Argue {stance} the motion, in about 200 tokens."},
        {"role": "user", "content": "Motion: should cities ban private cars from their centres?"},
    ]
    for persona, stance in (
        ("an urban planner", "for"),
        ("a shop owner", "against"),
        ("a paramedic", "for, with exceptions,"),
        ("a commuter", "against"),
    )
]


@dataclass
class Job:
    """One run of the job: CPU seconds, the debaters' calls and completion tokens, and the chunks
    the provider served for it."""

    cpu_s: float
    calls: int
    tokens: int
    chunks: int
    suite_cpu_s: float = 0.0  # suite only: the three services together

    @property
    def per_call_ms(self) -> float:
        return self.cpu_s / self.calls * 1e3

    @property
    def per_token_us(self) -> float:
        return self.cpu_s / self.tokens * 1e6


def _cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        times = process.cpu_times()
        total += times.user + times.system
    return total


async def suite_job(
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub,
    orchestrator: psutil.Process,
    services: list[psutil.Process],
    provider: ProviderProcesses,
    seed: int,
) -> Job:
    """One debate of 4 `fake/debater` debaters, one round, followed to its end."""
    created = await stub.CreateDebate(
        pb.CreateDebateRequest(config=debate_config(1, seed, PROVIDER_MODEL), request_id=f"user-loop-{uuid.uuid4()}"),
        timeout=60,
    )
    debate_id = created.debate.debate_id
    call = stub.StreamDebateEvents(pb.StreamDebateEventsRequest(debate_id=debate_id, batch_events=True), timeout=300)
    await asyncio.sleep(0.2)  # subscribed before the first token
    served0, orch0, suite0 = provider.stats()["chunks"], _cpu([orchestrator]), _cpu(services)
    await stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), timeout=60)
    calls = tokens = 0
    async for reply in call:
        for event in events_of(reply):
            kind = event.WhichOneof("payload")
            if kind == "debate_failed":
                raise RuntimeError(f"the debate failed: {event.debate_failed.reason} {event.debate_failed.message}")
            if kind == "debate_completed":
                for line in event.debate_completed.cost.by_model:
                    if line.key == PROVIDER_MODEL:
                        calls, tokens = int(line.calls), int(line.usage.completion_tokens)
        if calls:
            break
    call.cancel()
    await asyncio.sleep(0.2)  # the debate's last commits and ledger rows
    return Job(
        cpu_s=_cpu([orchestrator]) - orch0,
        calls=calls,
        tokens=tokens,
        chunks=provider.stats()["chunks"] - served0,
        suite_cpu_s=_cpu(services) - suite0,
    )


async def user_job(litellm, provider: ProviderProcesses) -> Job:
    """The user's loop: the four calls at once through litellm.acompletion(stream=True)."""

    async def one(messages: list[dict]) -> int:
        response = await litellm.acompletion(
            model="openai/debater",
            api_base=provider.base_url,
            api_key="sk-fake",
            messages=messages,
            max_tokens=TOKENS_PER_TURN,
            stream=True,
            stream_options={"include_usage": True},
        )
        parts: list[str] = []
        usage = None
        async for chunk in response:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            if getattr(chunk, "usage", None):
                usage = chunk.usage
        assert usage is not None and parts, "the stream ended without text or usage"
        return int(usage.completion_tokens)

    served0 = provider.stats()["chunks"]
    cpu0 = time.process_time()
    tokens = await asyncio.gather(*(one(messages) for messages in USER_PROMPTS))
    await asyncio.sleep(0.2)  # work LiteLLM defers after a call (its logging) counts for it
    cpu = time.process_time() - cpu0
    return Job(cpu_s=cpu, calls=len(tokens), tokens=sum(tokens), chunks=provider.stats()["chunks"] - served0)


async def measure(quick: bool, jobs: int) -> dict:
    """Runs the job `jobs` times each way, alternating; every Job of each way, and the provider's
    totals."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: no price map fetched
    import litellm  # as a user imports it

    rate, first = (200.0, 0.05) if quick else (50.0, 0.3)
    runs: dict[str, list[Job]] = {"suite": [], "user_loop": []}
    with (
        spawn_fast_provider(
            processes=1, tokens_per_second=rate, first_token_latency=first, chunks=TOKENS_PER_TURN
        ) as provider,
        tempfile.TemporaryDirectory(prefix="user-loop-") as data_dir,
    ):
        config = SuiteConfig(
            orchestrator_port=free_port(),
            judge_port=free_port(),
            accounting_port=free_port(),
            data_dir=data_dir,
            log_level="WARNING",
            extra_env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", **provider_settings(provider.base_url)},
        )
        specs = [spec for spec in config.process_specs() if spec.name in SERVICES]
        async with Suite(specs, output=None) as suite:
            pids = {p.spec.name: p.process.pid for p in suite.running}
            services = [psutil.Process(pids[name]) for name in SERVICES]
            async with grpc.aio.insecure_channel(config.orchestrator_address) as channel:
                stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
                # Warm-up, not counted: each way's first job loads what later ones share.
                await suite_job(stub, services[0], services, provider, 0)
                await user_job(litellm, provider)
                for i in range(jobs):
                    runs["suite"].append(await suite_job(stub, services[0], services, provider, i + 1))
                    runs["user_loop"].append(await user_job(litellm, provider))
        served = provider.stats()
    return {"runs": runs, "provider": served, "tokens_per_second": rate}


def summarise(measured: dict) -> dict[str, float]:
    """Medians of each way's CPU per call (ms) and per token (µs), and the ratios suite / loop."""
    suite, loop = measured["runs"]["suite"], measured["runs"]["user_loop"]
    out = {
        "orchestrator_ms_per_call": statistics.median(j.per_call_ms for j in suite),
        "orchestrator_us_per_token": statistics.median(j.per_token_us for j in suite),
        "suite_ms_per_call": statistics.median(j.suite_cpu_s / j.calls * 1e3 for j in suite),
        "suite_us_per_token": statistics.median(j.suite_cpu_s / j.tokens * 1e6 for j in suite),
        "user_loop_ms_per_call": statistics.median(j.per_call_ms for j in loop),
        "user_loop_us_per_token": statistics.median(j.per_token_us for j in loop),
    }
    out["ratio_orchestrator_to_user_loop"] = out["orchestrator_us_per_token"] / out["user_loop_us_per_token"]
    out["ratio_suite_to_user_loop"] = out["suite_us_per_token"] / out["user_loop_us_per_token"]
    return out


def rows_of(figures: dict[str, float], jobs: int) -> list[dict]:
    note = f"4 debaters x 200 tokens on the fast fake provider, median of {jobs} jobs each way"
    units = {"ms_per_call": "ms CPU/call", "us_per_token": "µs CPU/token", "ratio": "x"}
    rows = []
    for name, value in figures.items():
        unit = next(u for key, u in units.items() if key in name)
        rows.append({"metric": f"user_loop_{name}", "target": "", "value": round(value, 3), "unit": unit, "note": note})
    return rows


def run(quick: bool = False, jobs: int | None = None) -> list[dict]:
    """Rows for `make bench` (tests/benchmarks/run_all.py)."""
    jobs = jobs or (1 if quick else 3)
    return rows_of(summarise(asyncio.run(measure(quick, jobs))), jobs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one job each way, 200 tokens a second")
    parser.add_argument("--jobs", type=int, default=0, help="jobs each way (default 3, quick 1)")
    args = parser.parse_args(argv)
    jobs = args.jobs or (1 if args.quick else 3)
    measured = asyncio.run(measure(args.quick, jobs))
    for way, runs in measured["runs"].items():
        for job in runs:
            extra = f"  (whole suite {job.suite_cpu_s * 1e3:.0f} ms)" if way == "suite" else ""
            print(
                f"{way:<10} {job.calls} calls {job.tokens} tokens {job.chunks} chunks served:"
                f" CPU {job.cpu_s * 1e3:.0f} ms, {job.per_call_ms:.1f} ms/call, {job.per_token_us:.1f} µs/token{extra}"
            )
    figures = summarise(measured)
    print(f"\nthe same job ({DEBATERS} debaters x {TOKENS_PER_TURN} tokens), medians of {jobs} jobs each way:")
    print(
        f"  suite, orchestrator: {figures['orchestrator_ms_per_call']:.2f} ms CPU per model call,"
        f" {figures['orchestrator_us_per_token']:.1f} µs per token"
    )
    print(
        f"  suite, all three services: {figures['suite_ms_per_call']:.2f} ms per call,"
        f" {figures['suite_us_per_token']:.1f} µs per token"
    )
    print(
        f"  user loop (litellm.acompletion, stream=True): {figures['user_loop_ms_per_call']:.2f} ms per call,"
        f" {figures['user_loop_us_per_token']:.1f} µs per token"
    )
    print(
        f"  ratio orchestrator / user loop: {figures['ratio_orchestrator_to_user_loop']:.2f}x;"
        f" whole suite / user loop: {figures['ratio_suite_to_user_loop']:.2f}x"
    )
    print(f"  load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
