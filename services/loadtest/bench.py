"""What one process of `debate-engine load` can push, and what it costs per call.

    python -m services.loadtest.bench [--quick]

Starts the accounting service as its own process on 127.0.0.1 and drives it with the load
client (grpc.health.v1.Health/Check, then CalculateCost, c=20 on one connection), with the
floor measured in the same run: a bare grpc.aio loop making the same health checks (same
pre-serialised request, same deserialiser) and recording nothing. Each runs twice,
interleaved, and the better run of each is kept, as the machine is shared. The client's CPU per call against that floor
says how much of the machine the driver takes for itself; the server's CPU per call is shown
alongside. `run(quick)` gives the rows for `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2

from services.loadtest.config import LoadConfig
from services.loadtest.runner import LoadRunner

ROOT = Path(__file__).resolve().parents[2]
CALCULATE_COST = '{"model":"claude-3-5-sonnet-20241022","usage":{"promptTokens":1000,"completionTokens":500}}'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceProcess:
    """`python -m services.<name>` on a free 127.0.0.1 port, until close()."""

    def __init__(self, name: str, data_dir: str):
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                f"services.{name}",
                "--port",
                str(self.port),
                "--data-dir",
                data_dir,
                "--log-level",
                "WARNING",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        )
        self.tail: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        self.address = f"127.0.0.1:{self.port}"
        with grpc.insecure_channel(self.address) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=60)
            except grpc.FutureTimeoutError:
                self.close()
                raise RuntimeError(f"services.{name} did not start: {''.join(self.tail[-10:])}") from None
        self.ps = psutil.Process(self.proc.pid)

    def _drain(self) -> None:
        assert self.proc.stdout is not None  # stdout=PIPE
        for line in self.proc.stdout:
            self.tail = (self.tail + [line])[-20:]

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _loop_runner():
    try:
        import uvloop

        return uvloop.run
    except ImportError:
        return asyncio.run


def drive(address: str, call: str, data: str, total: int, concurrency: int) -> dict:
    """One load run; the calls' CPU and wall time only (reflection and report excluded)."""
    runner = LoadRunner(
        LoadConfig(target=address, call=call, data=data, total=total, concurrency=concurrency, insecure=True)
    )
    runner.prepare()
    cpu = time.process_time()
    total_ns = _loop_runner()(runner.drive())
    cpu = time.process_time() - cpu
    report = runner.report(total_ns)
    p = {e["percentage"]: e["latency"] for e in report["latencyDistribution"] or []}
    return {
        "count": report["count"],
        "rps": report["rps"],
        "cpu_per_call": cpu / max(report["count"], 1),
        "p50_ms": p.get(50, 0) / 1e6,
        "p99_ms": p.get(99, 0) / 1e6,
        "status": report["statusCodeDistribution"],
    }


async def _bare(address: str, total: int, concurrency: int) -> tuple[float, float]:
    async with grpc.aio.insecure_channel(address) as channel:
        await channel.channel_ready()
        check: grpc.aio.UnaryUnaryMultiCallable[bytes, health_pb2.HealthCheckResponse] = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=None,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        request = health_pb2.HealthCheckRequest().SerializeToString()
        left = total

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await check(request, timeout=20)

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.process_time() - cpu, time.perf_counter() - wall


def bare(address: str, total: int, concurrency: int) -> dict:
    cpu, wall = _loop_runner()(_bare(address, total, concurrency))
    return {"rps": total / wall, "cpu_per_call": cpu / total}


def _row(metric: str, target: str, value: float, unit: str, floor: float | None = None) -> dict:
    def r(v: float) -> float:
        return round(v, 1) if v >= 100 else float(f"{v:.3g}")

    row = {"metric": metric, "target": target, "value": r(value), "unit": unit}
    if floor is not None:
        row["floor"] = r(floor)
    return row


def run(quick: bool = False) -> list[dict]:
    total = 400 if quick else 10_000
    concurrency = 20
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-load-") as data_dir:
        service = ServiceProcess("accounting", data_dir)
        try:
            drive(service.address, "grpc.health.v1.Health/Check", "{}", min(total, 200), concurrency)  # warm-up
            floors, runs, server_cpus = [], [], []
            for _ in range(2):
                floors.append(bare(service.address, total, concurrency))
                before = service.cpu_seconds()
                runs.append(drive(service.address, "grpc.health.v1.Health/Check", "{}", total, concurrency))
                server_cpus.append((service.cpu_seconds() - before) / total)
            floor = {"rps": max(f["rps"] for f in floors), "cpu_per_call": min(f["cpu_per_call"] for f in floors)}
            ours = {"rps": max(r["rps"] for r in runs), "cpu_per_call": min(r["cpu_per_call"] for r in runs)}
            server_cpu = min(server_cpus)
            tag = f"Health/Check, c={concurrency}, 1 process"
            rows.append(
                _row(
                    f"load client calls/s ({tag})",
                    "drives the server, not itself",
                    ours["rps"],
                    "calls/s",
                    floor["rps"],
                )
            )
            rows.append(
                _row(
                    f"load client CPU per call ({tag})",
                    "near the bare grpc.aio floor",
                    ours["cpu_per_call"] * 1e6,
                    "µs",
                    floor["cpu_per_call"] * 1e6,
                )
            )
            rows.append(
                _row("server CPU per Health/Check call (accounting process)", "for comparison", server_cpu * 1e6, "µs")
            )
            cost = drive(
                service.address,
                "debate.accounting.v1.AccountingService/CalculateCost",
                CALCULATE_COST,
                total,
                concurrency,
            )
            if set(cost["status"]) == {"OK"}:
                rows.append(
                    _row(
                        f"CalculateCost calls/s via debate-engine load (c={concurrency})",
                        "per service",
                        cost["rps"],
                        "calls/s",
                    )
                )
                rows.append(_row("CalculateCost latency p50 via debate-engine load", "", cost["p50_ms"], "ms"))
                rows.append(_row("CalculateCost latency p99 via debate-engine load", "", cost["p99_ms"], "ms"))
            else:
                rows.append(
                    {
                        "metric": "CalculateCost via debate-engine load",
                        "target": "per service",
                        "value": "not OK: " + ", ".join(f"{k} {v}" for k, v in cost["status"].items()),
                        "unit": "",
                    }
                )
        finally:
            service.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    for row in run(parser.parse_args(argv).quick):
        floor = f"  (floor {row['floor']})" if "floor" in row else ""
        print(f"{row['metric']:<70} {row['value']:>10} {row['unit']}{floor}")


if __name__ == "__main__":
    main()
