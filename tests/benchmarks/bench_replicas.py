"""Orchestrator replicas on one PostgreSQL: what a second replica costs, and what a running debate
writes.

    python -m tests.benchmarks.bench_replicas [--quick]

1. **CPU per delivered event, 2 replicas against 1.** The suite as processes (accounting, judge,
   and the orchestrator replicas, each its own process, on one throwaway PostgreSQL with
   fsync on), D debates of simulated models started on the first replica, and W watchers a
   debate (batch_events), connected before the start: with one replica all watch it; with two,
   every other watcher watches the second replica, which owns nothing and follows the debates
   from the database (its listener's NOTIFY, one read per wake-up). The figure is the CPU time
   of every orchestrator process (user + system, psutil) from the start to the last watcher's
   end, divided by the events the watchers received; the ratio of the two runs is the cost of
   the second replica per event (the issue's aim: at most 1.1x).
2. **Writes per running debate**, on PostgreSQL and on SQLite: one orchestrator in this process,
   N long debates running through a window of T seconds; commits a second (the store's own
   count of committed transactions) and rows a second (PostgreSQL: inserted, updated and deleted
   tuples of the orchestrator's tables in pg_stat_user_tables, read at both ends of the window;
   SQLite: the connection's total_changes), each divided by N.

Without PostgreSQL's server binaries (`make postgres`), only SQLite's rows are given.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import threading
import time
from pathlib import Path

import grpc
import psutil
import psycopg
from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from tests.helpers import free_port
from tests.reliability.inprocess import InProcessSuite
from tests.reliability.processes import KillableSuite
from tests.support.postgres import DURABLE_OPTIONS, PostgresMissing, PostgresServer, find_bindir

TABLES = ("debates", "turns", "attempts", "assessments", "events", "debate_leases")


def _config(rounds: int, max_tokens: int) -> common_pb2.DebateConfig:
    return common_pb2.DebateConfig(
        topic="Should a second replica cost more than a tenth?",
        participants=[
            common_pb2.Participant(name="Ada", model="sim/debater", persona="an engineer", stance="for"),
            common_pb2.Participant(name="Milo", model="sim/debater", persona="an operator", stance="against"),
        ],
        judge=common_pb2.JudgeConfig(models=["sim/judge"]),
        format=common_pb2.DebateFormat(round_limit=rounds, turn_order=common_pb2.TURN_ORDER_SIMULTANEOUS),
        max_tokens_per_turn=max_tokens,
    )


# -- 1. CPU per delivered event --------------------------------------------------------------------
async def _watch(address: str, debate_id: str, counts: list[int]) -> int:
    """Streams the debate to its end; its last sequence. Raises if a sequence was missed or repeated."""
    last = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        request = pb.StreamDebateEventsRequest(debate_id=debate_id, batch_events=True)
        async for response in stub.StreamDebateEvents(request, timeout=300):
            for event in response.events:
                if event.HasField("heartbeat"):
                    continue
                if event.sequence != last + 1:
                    raise RuntimeError(f"watcher of {address} got {event.sequence} after {last}")
                last = event.sequence
                counts[0] += 1
    return last


async def cluster_run(url: str, data_dir: Path, replicas: int, debates: int, watchers: int, rounds: int) -> dict:
    """One run of the suite with `replicas` orchestrators: delivered events and their CPU."""
    env = {"SIM_TOKENS_PER_SECOND": "60", "SIM_FIRST_TOKEN_LATENCY": "0.05", "LEASE_SECONDS": "5"}
    suite = KillableSuite(data_dir, env, log_level="WARNING", database_url=url)
    base = suite.specs["orchestrator"]
    names = [f"orchestrator{i}" if i else "orchestrator" for i in range(replicas)]
    for i, name in enumerate(names):
        port = int(base.env["PORT"]) if i == 0 else free_port()
        env_i = {**base.env, "PORT": str(port), "REPLICA_ID": f"replica{i}"}
        suite.specs[name] = dataclasses.replace(
            base, name=name, health_address=f"127.0.0.1:{port}", env=env_i, display_address=None
        )
    try:
        for name in ("accounting", "judge", *names):
            await suite.start(name)
        addresses = [suite.address(name) for name in names]
        processes = [psutil.Process(suite.processes[name].pid) for name in names]
        async with grpc.aio.insecure_channel(addresses[0]) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            ids = []
            for _ in range(debates):
                created = await stub.CreateDebate(pb.CreateDebateRequest(config=_config(rounds, 120)), timeout=10)
                ids.append(created.debate.debate_id)
            counts = [0]
            tasks = [
                asyncio.create_task(_watch(addresses[w % replicas], debate_id, counts))
                for debate_id in ids
                for w in range(watchers)
            ]
            await asyncio.sleep(1.0)  # every watcher connected, following or owning
            before = [p.cpu_times() for p in processes]
            for debate_id in ids:
                await stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), timeout=10)
            lasts = await asyncio.gather(*tasks)
            after = [p.cpu_times() for p in processes]
            for i, debate_id in enumerate(ids):  # every watcher of a debate got all of it
                if len(set(lasts[i * watchers : (i + 1) * watchers])) != 1:
                    raise RuntimeError(f"the watchers of {debate_id} ended at different sequences")
        cpu = sum((a.user + a.system) - (b.user + b.system) for a, b in zip(after, before, strict=True))
        return {"events": counts[0], "cpu_s": cpu, "cpu_per_event_us": cpu / max(1, counts[0]) * 1e6}
    finally:
        await suite.stop_all()


def cpu_ratio(server: PostgresServer, quick: bool) -> list[dict]:
    debates, watchers, rounds = (2, 10, 1) if quick else (4, 100, 4)
    with tempfile.TemporaryDirectory() as tmp:
        one = asyncio.run(cluster_run(server.create_database(), Path(tmp) / "one", 1, debates, watchers, rounds))
        two = asyncio.run(cluster_run(server.create_database(), Path(tmp) / "two", 2, debates, watchers, rounds))
    ratio = two["cpu_per_event_us"] / one["cpu_per_event_us"]
    label = f"{debates} debates of {rounds} rounds x {watchers} watchers, batch_events"
    return [
        {
            "metric": f"orchestrator CPU per delivered event, 1 replica, {label}",
            "target": "(lower is better)",
            "value": round(one["cpu_per_event_us"], 1),
            "unit": "µs",
            "note": f"{one['events']} events, {one['cpu_s']:.2f} s CPU",
        },
        {
            "metric": f"orchestrator CPU per delivered event, 2 replicas summed (half the watchers follow), {label}",
            "target": "(lower is better)",
            "value": round(two["cpu_per_event_us"], 1),
            "unit": "µs",
            "note": f"{two['events']} events, {two['cpu_s']:.2f} s CPU",
        },
        {
            "metric": "CPU per delivered event, 2 replicas / 1",
            "target": "<= 1.1",
            "value": round(ratio, 3),
            "unit": "x",
        },
    ]


# -- 2. writes per running debate ----------------------------------------------------------------
def _pg_rows(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as db:
        row = db.execute(
            "SELECT COALESCE(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables "
            "WHERE relname = ANY(%s)",
            (list(TABLES),),
        ).fetchone()
    return int(row[0]) if row else 0


def writes_per_debate(root: Path, url: str, debates: int, window_s: float) -> dict:
    """One orchestrator in this process (url: PostgreSQL, '' SQLite), `debates` long debates
    running through `window_s` seconds: commits and rows a second, each per debate."""
    overrides: dict[str, object] = {
        "sim_tokens_per_second": 50.0,
        "sim_first_token_latency": 0.05,
        "max_running_debates": debates,
    }
    if url:
        overrides["database_url"] = url
    suite = InProcessSuite(root, overrides={"orchestrator": overrides})
    suite.start()
    try:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(grpc.insecure_channel(suite.addresses["orchestrator"]))
        for _ in range(debates):
            created = stub.CreateDebate(pb.CreateDebateRequest(config=_config(20, 400)), timeout=10)
            stub.StartDebate(pb.StartDebateRequest(debate_id=created.debate.debate_id), timeout=10)
        store = suite.services["orchestrator"].engine.store
        time.sleep(1.0)  # past the starts

        def rows() -> int:
            if url:
                return _pg_rows(url)
            changes: list[int] = []
            done = threading.Event()

            def read() -> None:  # on the store's own thread, the event loop's
                changes.append(store.db.total_changes)
                done.set()

            suite.loop.call_soon_threadsafe(read)
            done.wait(10)
            return changes[0]

        commits0, rows0, t0 = store.commits, rows(), time.monotonic()
        time.sleep(window_s)
        commits1, rows1, t1 = store.commits, rows(), time.monotonic()
        running = sum(1 for run in suite.services["orchestrator"].engine.lifecycle.runs.values())
        seconds = t1 - t0
        return {
            "commits": (commits1 - commits0) / seconds / debates,
            "rows": (rows1 - rows0) / seconds / debates,
            "running": running,
        }
    finally:
        suite.stop()


def writes(server: PostgresServer | None, quick: bool) -> list[dict]:
    debates, window = (5, 3.0) if quick else (20, 10.0)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        backends = [("SQLite", "")] + ([("PostgreSQL", server.create_database())] if server else [])
        for name, url in backends:
            figures = writes_per_debate(Path(tmp) / name, url, debates, window)
            note = f"{figures['running']} debates running, {window:.0f} s window; 2 debaters at 50 tokens/s"
            out += [
                {
                    "metric": f"{name}: commits a second per running debate",
                    "target": "(lower is better)",
                    "value": round(figures["commits"], 2),
                    "unit": "/s",
                    "note": note,
                },
                {
                    "metric": f"{name}: rows written a second per running debate",
                    "target": "(lower is better)",
                    "value": round(figures["rows"], 2),
                    "unit": "/s",
                    "note": "pg_stat_user_tables: inserted, updated, deleted (flushed about once a second)"
                    if url
                    else "the connection's total_changes",
                },
            ]
    return out


def run(quick: bool = False) -> list[dict]:
    """Rows {metric, target, value, unit[, note]} (see tests/benchmarks/run_all.py)."""
    try:
        find_bindir()
    except PostgresMissing:
        return writes(None, quick)
    with PostgresServer(options=DURABLE_OPTIONS) as server:
        return cpu_ratio(server, quick) + writes(server, quick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer debates and watchers (what the test suite runs)")
    started = time.perf_counter()
    rows = run(parser.parse_args(argv).quick)
    width = max(len(r["metric"]) for r in rows)
    for r in rows:
        print(f"{r['metric']:<{width}}  {r['value']:>8} {r['unit']:<3} {r.get('note', '')}")
    print(f"({time.perf_counter() - started:.0f} s, load average {psutil.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
