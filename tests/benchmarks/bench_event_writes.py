"""The SQLite event log's writes as the event hub makes them at scale, through `SqliteStore`.

    python -m tests.benchmarks.bench_event_writes --debates 300 --rows 2 --commits 400 --skip 50
    python -m tests.benchmarks.bench_event_writes --debates 300 --rows 4 --commits 160 --skip 0

Each commit writes `--rows` event rows (120 random bytes each) for each of `--debates` debates
(`add_events`), then commits, every 25 ms, while a worker thread runs `Store.checkpoint` every
second as the hub does. Prints the writing thread's CPU (`time.thread_time`: user and system) per
commit for `add_events` and for the COMMIT, averaged over the commits after the first `--skip`;
then the CPU of `read_events` of one debate's whole log (the first 50 debates, averaged) and the
file's size. Run it against two trees (PYTHONPATH) to compare store layouts
(docs/orchestrator-overhead.md, "Fifth step").
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
import uuid

from services.orchestrator.store import SqliteStore


def measure(debates: int, rows: int, commits: int, skip: int) -> dict[str, float]:
    """CPU ms per commit of add_events and of the COMMIT, ms to read one debate's log, its events, MiB."""
    folder = tempfile.mkdtemp(prefix="bench-event-writes-")
    path = os.path.join(folder, "orchestrator.sqlite3")
    store = SqliteStore(path)
    stop = threading.Event()

    def checkpoints() -> None:
        while not stop.wait(1.0):
            store.checkpoint()

    checkpointer = threading.Thread(target=checkpoints)
    checkpointer.start()
    ids = [str(uuid.uuid4()) for _ in range(debates)]
    last = dict.fromkeys(ids, 0)
    event = os.urandom(120)
    insert = commit = 0.0
    timed = 0
    start = time.perf_counter()
    try:
        for tick in range(commits):
            batch = []
            for debate_id in ids:
                for _ in range(rows):
                    last[debate_id] += 1
                    batch.append((debate_id, last[debate_id], event))
            a = time.thread_time()
            store.add_events(batch)
            b = time.thread_time()
            store.commit()
            c = time.thread_time()
            if tick >= skip:
                insert += b - a
                commit += c - b
                timed += 1
            time.sleep(max(0.0, start + (tick + 1) * 0.025 - time.perf_counter()))
    finally:
        stop.set()
        checkpointer.join()
    a = time.thread_time()
    for debate_id in ids[:50]:
        assert len(store.read_events(debate_id, 0, last[debate_id], 1_000_000)) == last[debate_id]
    read = (time.thread_time() - a) / min(50, len(ids))
    size = os.path.getsize(path) / 2**20
    store.close()
    shutil.rmtree(folder)
    return {
        "add_events_ms": insert / timed * 1e3,
        "commit_ms": commit / timed * 1e3,
        "read_ms": read * 1e3,
        "events": last[ids[0]],
        "file_mib": size,
    }


def describe(debates: int, rows: int, figures: dict[str, float]) -> str:
    return (
        f"{debates} debates: add_events {figures['add_events_ms']:.2f} ms, commit {figures['commit_ms']:.2f} ms "
        f"CPU per commit of {debates * rows} rows; read_events of a debate's {figures['events']:.0f} events "
        f"{figures['read_ms']:.2f} ms; file {figures['file_mib']:.1f} MiB"
    )


def run(quick: bool = False) -> list[dict[str, object]]:
    """The rows of `make bench` (tests/benchmarks/run_all.py): 300 debates, 2 rows each a commit."""
    debates, rows = 300, 2
    figures = measure(debates, rows, 40 if quick else 400, 5 if quick else 50)
    note = f"{debates} debates x {rows} event rows a commit, CPU of the writing thread; SQLite, WAL"
    return [
        {
            "metric": "event log: add_events per commit",
            "target": "-",
            "value": figures["add_events_ms"],
            "unit": "ms",
            "note": note,
        },
        {
            "metric": "event log: COMMIT per commit",
            "target": "-",
            "value": figures["commit_ms"],
            "unit": "ms",
            "note": note,
        },
        {
            "metric": f"event log: read_events of one debate's {figures['events']:.0f} events",
            "target": "-",
            "value": figures["read_ms"],
            "unit": "ms",
            "note": f"written among {debates} debates' events",
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debates", type=int, default=300)
    parser.add_argument("--rows", type=int, default=2, help="event rows of each debate a commit")
    parser.add_argument("--commits", type=int, default=400)
    parser.add_argument("--skip", type=int, default=50, help="first commits not timed")
    args = parser.parse_args()
    print(describe(args.debates, args.rows, measure(args.debates, args.rows, args.commits, args.skip)))


if __name__ == "__main__":
    main()
