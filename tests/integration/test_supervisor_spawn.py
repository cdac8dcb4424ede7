"""How the launcher starts the suite's processes (services.supervisor.spawn): none dies at start
while the launcher's own gRPC channels are busy (grpc/grpc#43055: a child forked with a
preexec_fn aborted on gRPC's closed epoll descriptor before exec), and each is terminated when
the launcher dies, even by SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.supervisor import SETPRIV, spawn
from tests.helpers import ROOT


async def test_no_child_dies_at_start_while_the_launchers_channels_are_busy():
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    done = False

    async def busy() -> int:
        calls = 0
        while not done:
            await stub.Check(health_pb2.HealthCheckRequest())
            calls += 1
        return calls

    callers = [asyncio.create_task(busy()) for _ in range(4)]
    codes = []
    try:
        for _ in range(150):  # with the preexec_fn, about one in five died (-11 or -6)
            child = await spawn(["true"], dict(os.environ))
            await child.communicate()
            codes.append(child.returncode)
    finally:
        done = True
        calls = await asyncio.gather(*callers)
        await channel.close()
        await server.stop(None)
    assert sum(calls) > 150  # the channels were busy throughout
    assert codes == [0] * 150


LAUNCHER = """
import asyncio, os, sys
from services.supervisor import spawn
async def main():
    child = await spawn(["sleep", "60"], dict(os.environ))
    print(child.pid, flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


@pytest.mark.skipif(SETPRIV is None, reason="no setpriv on this machine")
def test_a_child_is_terminated_when_its_launcher_is_killed():
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert launcher.stdout is not None
    child = int(launcher.stdout.readline())
    os.kill(child, 0)  # running
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the child outlived its launcher")


STOPPING = """
import os, signal, sys, time
name, record = sys.argv[1], sys.argv[2]
def note(what):
    with open(record, "a") as f:
        f.write(f"{name} {what}\\n")
def stop(*_):
    note("term")
    time.sleep(0.3)  # a stop that takes a while: a tier below must not be signalled meanwhile
    note("exit")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
note("ready")
while True:
    time.sleep(1)
"""


async def test_the_suite_stops_callers_before_the_services_they_call(tmp_path):
    from services.supervisor import ProcessSpec, Suite

    record = tmp_path / "record"
    record.touch()

    def ready(name):
        async def check() -> bool:
            return f"{name} ready" in record.read_text()

        return check

    tiers = {"accounting": 0, "judge": 1, "orchestrator": 2, "judge-2": 1}
    argv = [sys.executable, "-c", STOPPING]
    specs = [
        ProcessSpec(name, [*argv, name, str(record)], None, ready_check=ready(name), stop_tier=tier)
        for name, tier in tiers.items()
    ]
    async with Suite(specs, output=None):
        pass
    events = [line for line in record.read_text().splitlines() if not line.endswith(" ready")]
    # Tier by tier from the top; the two judges (one tier) are signalled together.
    assert events[:2] == ["orchestrator term", "orchestrator exit"]
    assert sorted(events[2:6]) == ["judge exit", "judge term", "judge-2 exit", "judge-2 term"]
    assert events[2:4] == ["judge term", "judge-2 term"] or events[2:4] == ["judge-2 term", "judge term"]
    assert events[6:] == ["accounting term", "accounting exit"]


def test_the_launcher_gives_each_caller_a_stop_tier_above_the_services_it_calls(tmp_path):
    from services.gateway import GatewayConfig
    from services.launcher import SuiteConfig

    config = SuiteConfig(
        data_dir=str(tmp_path),
        replicas=2,
        database_url="postgresql://x@127.0.0.1:1/x",
        gateway=GatewayConfig(enabled=True),
    )
    tiers = {spec.name: spec.stop_tier for spec in config.process_specs()}
    accounting = {t for n, t in tiers.items() if n.startswith("accounting")}
    judge = {t for n, t in tiers.items() if n.startswith("judge")}
    orchestrator = {t for n, t in tiers.items() if n.startswith("orchestrator")}
    assert len(accounting) == len(judge) == len(orchestrator) == 1  # replicas of a service stop together
    assert max(accounting) < min(judge) < min(orchestrator)
    assert tiers["envoy"] > max(orchestrator)  # the browsers' way in goes first
