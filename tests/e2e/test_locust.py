"""A short headless locust run of tests/load/locustfile.py against the suite started by the
launcher: no failures, and the HTML and CSV reports written.

Only the users whose RPCs the services implement take part: each service is probed first
(an RPC that answers anything but UNIMPLEMENTED is implemented), so the orchestrator's users
join on their own once its RPCs work.
"""

from __future__ import annotations

import asyncio
import csv
import os
import sys

import grpc
import pytest
from debate.accounting.v1 import accounting_pb2, accounting_pb2_grpc
from debate.judge.v1 import judge_pb2, judge_pb2_grpc
from debate.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc

from services.launcher import SuiteConfig
from services.supervisor import Suite
from tests.helpers import BIN, ROOT, free_port

pytestmark = pytest.mark.e2e

SERVICES = {"accounting", "judge", "orchestrator"}


async def _implemented(address: str, stub_class, method: str, request) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            await getattr(stub_class(channel), method)(request, timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code() != grpc.StatusCode.UNIMPLEMENTED
    return True


async def _users(config: SuiteConfig) -> dict[str, list[str]]:
    """User classes to run, by the request names they must report."""
    users: dict[str, list[str]] = {}
    if await _implemented(
        config.address(config.accounting_port),
        accounting_pb2_grpc.AccountingServiceStub,
        "CalculateCost",
        accounting_pb2.CalculateCostRequest(),
    ):
        users["AccountingUser"] = ["CalculateCost", "RecordUsage", "CountTokens"]
    if await _implemented(
        config.address(config.judge_port),
        judge_pb2_grpc.JudgeServiceStub,
        "EvaluateRound",
        judge_pb2.EvaluateRoundRequest(),
    ):
        users["JudgeUser"] = ["EvaluateRound"]
    if await _implemented(
        config.orchestrator_address,
        orchestrator_pb2_grpc.OrchestratorServiceStub,
        "GetDebateStatus",
        orchestrator_pb2.GetDebateStatusRequest(debate_id="nope"),
    ):
        users["DebateUser"] = ["CreateDebate", "StartDebate"]
        users["WatcherUser"] = []
    return users


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


async def test_headless_locust_run_has_no_failures_and_writes_its_reports(tmp_path):
    config = SuiteConfig(
        orchestrator_port=free_port(),
        judge_port=free_port(),
        accounting_port=free_port(),
        data_dir=str(tmp_path / "data"),
        log_level="WARNING",
        extra_env={"SIM_TOKENS_PER_SECOND": "200", "SIM_FIRST_TOKEN_LATENCY": "0.05"},
    )
    specs = [spec for spec in config.process_specs() if spec.name in SERVICES]
    lines: list[str] = []
    async with Suite(specs, output=lines.append):
        users = await _users(config)
        if not users:
            pytest.skip("no service RPC is implemented yet")
        reports = tmp_path / "reports"
        reports.mkdir()
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "locust"),
            "-f",
            str(ROOT / "tests" / "load" / "locustfile.py"),
            "--headless",
            "-u",
            "8",
            "-r",
            "8",
            "-t",
            "12s",
            "--stop-timeout",
            "2",
            "--only-summary",
            "--html",
            str(reports / "locust.html"),
            "--csv",
            str(reports / "locust"),
            "--orchestrator-addr",
            config.orchestrator_address,
            "--judge-addr",
            config.address(config.judge_port),
            "--accounting-addr",
            config.address(config.accounting_port),
            "--rounds",
            "1",
            *users,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # The judge and accounting admit only the suite's service key (the orchestrator has no keys).
            env={**os.environ, "PYTHONUNBUFFERED": "1", "LOCUST_API_KEY": config.service_api_key},
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
    output = out.decode(errors="replace")
    sys.stdout.write(output)
    assert proc.returncode == 0, output + "\n".join(lines[-30:])

    assert (reports / "locust.html").stat().st_size > 0
    stats = {row["Name"]: row for row in _rows(reports / "locust_stats.csv")}
    assert stats["Aggregated"]["Failure Count"] == "0", output
    assert int(stats["Aggregated"]["Request Count"]) > 0
    assert _rows(reports / "locust_failures.csv") == []
    for names in users.values():
        for name in names:
            assert name in stats, f"{name} was never called: {sorted(stats)}"
    assert all(row["Type"] in ("grpc", "grpc-stream", "") for row in stats.values())
