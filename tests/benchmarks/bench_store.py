"""The orchestrator store's commit of one coalescing tick, on SQLite and on PostgreSQL.

    python -m tests.benchmarks.bench_store [--quick]

A tick is what the event hub's commit does every `coalesce_ms` (25 ms) with many debates
running: N TokenDelta events of 200 debates (about 100 bytes each, as the hub serialises them)
and 5 debate updates, written and committed through the store, on the calling thread, as the
hub does it on the event loop's thread. Two figures per tick, medians over the ticks:

- wall: how long the event loop is held (nothing else runs on it meanwhile);
- CPU: the calling thread's CPU time (the rest of the wall time is spent waiting for the
  database: a worker thread could hand only that part back to the loop).

PostgreSQL is a throwaway server on this machine (services.common.postgres_server, DURABLE_OPTIONS:
fsync and synchronous_commit on, as a production server runs). Beside the store's own path
(the writes in one pipeline; from 32 events on, the events by binary COPY), the same tick by
executemany in one pipeline (the store's path for fewer events, and after a failed commit) and
by an INSERT ... SELECT of unnest(arrays) (one statement, binary parameters) show why COPY was
chosen. SQLite is the default store's file (WAL, synchronous=NORMAL) on this disk.

Without PostgreSQL's server binaries (`make postgres`), only SQLite's rows are given.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import psycopg
from debate.common.v1 import common_pb2 as c
from debate.orchestrator.v1 import orchestrator_pb2 as pb

from services.common.migrations import Dialect
from services.common.postgres_server import DURABLE_OPTIONS, PostgresMissing, PostgresServer, find_bindir
from services.orchestrator.store import WRITE_EVENTS, DebateRow, SqliteStore, Store, in_dialect
from services.orchestrator.store_postgres import PostgresStore

DEBATES = 200
UPDATES = 5  # debate rows updated in a tick (costs, rounds)
TEXT = "and so the evidence suggests "  # a tick's worth of one turn's tokens
EventRow = tuple[str, int, bytes]


class Ticks:
    """`count` ticks' rows, made before the timing: N events each, spread over the debates (each
    debate's sequences gap-free), and the debates each tick updates."""

    def __init__(self, n: int, count: int) -> None:
        self.ids = [f"{i:08d}-bench-4000-8000-debate{i:06d}" for i in range(DEBATES)]
        last = dict.fromkeys(self.ids, 0)
        self.events: list[list[EventRow]] = []
        self.updated: list[list[str]] = []
        for tick in range(count):
            rows = []
            for i in range(n):
                debate_id = self.ids[(tick * n + i) % DEBATES]
                last[debate_id] += 1
                event = pb.DebateEvent(
                    sequence=last[debate_id],
                    debate_id=debate_id,
                    token_delta=pb.TokenDelta(round_number=1, participant="debater0", text=TEXT, attempt=1),
                )
                event.time.FromNanoseconds(time.time_ns())
                rows.append((debate_id, event.sequence, event.SerializeToString()))
            self.events.append(rows)
            self.updated.append([self.ids[(tick * UPDATES + i) % DEBATES] for i in range(UPDATES)])


def _debate(debate_id: str) -> DebateRow:
    return DebateRow(
        debate_id=debate_id,
        tenant="bench",
        request_id="",
        config=c.DebateConfig(topic="bench"),
        state=pb.DEBATE_STATE_RUNNING,
        create_ns=1,
        update_ns=1,
        queue_ns=0,
        current_round=1,
        end_reason="",
        cost_amount="",
        cost=None,
        verdict=None,
        verdict_recorded=False,
        last_sequence=0,
    )


WARM_UP = 2  # ticks not timed


def _median_tick(tick: Callable[[int], None], ticks: int) -> tuple[float, float]:
    """Median wall and thread-CPU milliseconds of tick(i) for the ticks after the warm-up."""
    for i in range(WARM_UP):
        tick(i)
    walls, cpus = [], []
    for i in range(WARM_UP, WARM_UP + ticks):
        wall, cpu = time.perf_counter(), time.thread_time()
        tick(i)
        cpus.append(time.thread_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return statistics.median(walls) * 1e3, statistics.median(cpus) * 1e3


def store_tick(store: Store, n: int, ticks: int, *, leased: bool = False) -> tuple[float, float]:
    """A tick through the store, as EventHub.commit runs it; `leased`: with the debates' leases
    held, so each commit is fenced (PostgreSQL: orchestrator_fence on the debates written)."""
    rows = Ticks(n, WARM_UP + ticks)
    for debate_id in rows.ids:
        store.insert_debate(_debate(debate_id))
        if leased:
            store.claim(debate_id)
    store.commit()

    def tick(i: int) -> None:
        for debate_id in rows.updated[i]:
            store.update_debate(debate_id, cost_amount="0.0123", current_round=2)
        store.add_events(rows.events[i])
        store.commit()

    return _median_tick(tick, ticks)


def raw_tick(url: str, n: int, ticks: int, how: str) -> tuple[float, float]:
    """The same tick written with psycopg directly, `how`: "executemany" or "unnest"."""
    store = PostgresStore(url)  # the schema
    rows = Ticks(n, WARM_UP + ticks)
    for debate_id in rows.ids:
        store.insert_debate(_debate(debate_id))
    store.close()
    update = in_dialect(
        "UPDATE debates SET cost_amount = ?, current_round = ?, update_ns = ? WHERE debate_id = ?", Dialect.POSTGRES
    )
    upsert = in_dialect(WRITE_EVENTS, Dialect.POSTGRES)
    unnest = (
        "INSERT INTO events (debate_id, sequence, event) SELECT * FROM unnest(%s::text[], %s::int8[], %s::bytea[]) "
        "ON CONFLICT (debate_id, sequence) DO UPDATE SET event = excluded.event"
    )
    with psycopg.connect(url, autocommit=True) as conn:

        def tick(i: int) -> None:
            events = rows.events[i]
            with conn.pipeline(), conn.cursor(binary=True) as cursor:
                cursor.execute("BEGIN")
                for debate_id in rows.updated[i]:
                    cursor.execute(update, (Decimal("0.0123"), 2, time.time_ns(), debate_id))
                if how == "executemany":
                    cursor.executemany(upsert, events)
                else:
                    cursor.execute(unnest, ([e[0] for e in events], [e[1] for e in events], [e[2] for e in events]))
                cursor.execute("COMMIT")

        return _median_tick(tick, ticks)


def _rows(backend: str, n: int, wall: float, cpu: float) -> list[dict]:
    return [
        {
            "metric": f"store tick, {backend}: {n} events + {UPDATES} updates, loop held",
            "target": "well under a 25 ms tick",
            "value": round(wall, 2),
            "unit": "ms",
        },
        {
            "metric": f"store tick, {backend}: {n} events + {UPDATES} updates, loop CPU",
            "target": "the rest is waiting",
            "value": round(cpu, 2),
            "unit": "ms",
        },
    ]


def run(quick: bool = False) -> list[dict]:
    levels = (1, 200) if quick else (1, 16, 32, 50, 200, 800)
    ticks = 10 if quick else 40
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in levels:
            store = SqliteStore(str(Path(tmp) / f"o{n}.sqlite3"))
            try:
                rows += _rows("SQLite", n, *store_tick(store, n, ticks))
            finally:
                store.close()
    try:
        find_bindir()
    except PostgresMissing:
        return rows
    with PostgresServer(options=DURABLE_OPTIONS) as server:
        for n in levels:
            store = PostgresStore(server.create_database())
            try:
                rows += _rows("PostgreSQL (the store's)", n, *store_tick(store, n, ticks))
            finally:
                store.close()
            store = PostgresStore(server.create_database(), lease_seconds=3600)
            try:
                fenced = store_tick(store, n, ticks, leased=True)
                rows += _rows("PostgreSQL (the store's, leases held: fenced)", n, *fenced)
            finally:
                store.close()
            for how in ("executemany", "unnest"):
                rows += _rows(
                    f"PostgreSQL ({how}, for comparison)", n, *raw_tick(server.create_database(), n, ticks, how)
                )
    return rows


def print_table(rows: list[dict]) -> None:
    width = max(len(r["metric"]) for r in rows)
    target_width = max(len(r["target"]) for r in rows)
    print(f"{'metric':<{width}}  {'target':<{target_width}}  {'value':>8}  unit")
    for r in rows:
        print(f"{r['metric']:<{width}}  {r['target']:<{target_width}}  {r['value']:>8}  {r['unit']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer ticks and levels (what the test suite runs)")
    print_table(run(parser.parse_args(argv).quick))


if __name__ == "__main__":
    main()
