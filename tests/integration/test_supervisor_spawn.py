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
