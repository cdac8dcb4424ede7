"""Real processes: graceful shutdown of one service, and the `debate-engine up` launcher."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers import BIN, ROOT, free_port
from tests.helpers import read_until as _read_until


def test_sigterm_turns_health_not_serving_then_exits_zero(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.judge", "--port", "0", "--grace-seconds", "2", "--data-dir", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    try:
        port = _read_until(proc.stdout, r"on 127\.0\.0\.1:(\d+)", 60, seen).group(1)
        statuses = []
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service="debate.judge.v1.JudgeService"), timeout=30
            )

            def follow():
                try:
                    for reply in watch:
                        statuses.append(reply.status)
                except grpc.RpcError:
                    pass

            follower = threading.Thread(target=follow)
            follower.start()
            while not statuses:
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            follower.join(timeout=10)
        assert statuses[0] == health_pb2.HealthCheckResponse.SERVING
        assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses
    finally:
        proc.kill()
        proc.wait()


def _launcher(tmp_path, ports: dict[str, int]) -> subprocess.Popen:
    return subprocess.Popen(
        [
            str(BIN / "debate-engine"),
            "up",
            "--data-dir",
            str(tmp_path),
            "--orchestrator-port",
            str(ports["orchestrator"]),
            "--judge-port",
            str(ports["judge"]),
            "--accounting-port",
            str(ports["accounting"]),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "GATEWAY_PORT": str(free_port()), "WEB_PORT": str(free_port())},
    )


def test_up_starts_three_services_and_sigterm_leaves_nothing_behind(tmp_path):
    ports = {name: free_port() for name in ("orchestrator", "judge", "accounting")}
    launcher = _launcher(tmp_path, ports)
    seen: list[str] = []
    try:
        _read_until(launcher.stdout, r"suite is up", 90, seen)
        table: list[str] = []
        _read_until(launcher.stdout, r"Ctrl-C stops it", 30, table)
        seen.extend(table)
        children = psutil.Process(launcher.pid).children(recursive=True)
        assert len(children) >= 3
        # Each service's row names its /metrics URL, served by that process (issue 17).
        for name in ports:
            row = next(line for line in table if line.split()[:1] == [name])
            url = re.search(r"metrics (http://127\.0\.0\.1:\d+/metrics)", row)
            assert url, row
            with urllib.request.urlopen(url.group(1), timeout=10) as response:
                text = response.read().decode()
            # The launcher's own health checks were calls this service handled.
            assert 'grpc_server_handled_total{grpc_code="OK",grpc_method="Check"' in text, name
        for name, port in ports.items():
            listed = subprocess.run(
                [str(BIN / "grpcurl"), "-plaintext", f"127.0.0.1:{port}", "list"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
            assert f"debate.{name}.v1." in listed
            health = subprocess.run(
                [str(BIN / "grpcurl"), "-plaintext", "-d", "{}", f"127.0.0.1:{port}", "grpc.health.v1.Health/Check"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
            assert '"SERVING"' in health
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=60) == 0
        time.sleep(0.2)
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        launcher.kill()
        launcher.wait()


def test_up_names_the_service_that_died_and_exits_nonzero(tmp_path):
    ports = {name: free_port() for name in ("orchestrator", "judge", "accounting")}
    blocker = __import__("socket").socket()
    blocker.bind(("127.0.0.1", ports["accounting"]))  # accounting cannot listen
    blocker.listen()
    try:
        launcher = _launcher(tmp_path, ports)
        output, _ = launcher.communicate(timeout=90)
        assert launcher.returncode != 0
        assert "accounting exited with code" in output
    finally:
        blocker.close()
