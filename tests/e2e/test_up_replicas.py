"""`debate-engine up --replicas N` as a user runs it: the refusal without a database, and two
replicas of each service on a throwaway PostgreSQL behind Envoy, where a debate runs through
Envoy, a killed replica is reported and restarted while the others carry on, and the database
is gone after the stop."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import grpc
import psutil
import pytest
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from services.common.postgres_server import sweep_orphans
from tests.e2e.test_gateway import debate_config
from tests.helpers import BIN, ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _free_pair(step: int = 10) -> int:
    """A port p with p and p + step both free (replica 2 listens on its service's port + step)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + step))
            except OSError:
                continue
        return port
    raise RuntimeError("no pair of free ports")


def _up(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    ports = [_free_pair() for _ in range(3)]
    return subprocess.Popen(
        [
            str(BIN / "debate-engine"),
            "up",
            "--data-dir",
            str(tmp_path),
            "--orchestrator-port",
            str(ports[0]),
            "--judge-port",
            str(ports[1]),
            "--accounting-port",
            str(ports[2]),
            *args,
        ],
        cwd=ROOT,
        env={**(env or {}), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _drain(launcher: subprocess.Popen) -> list[str]:
    """Collects the launcher's output lines in a thread; returns the list they go to, once `up`
    says the suite is up (an AssertionError with the last lines when it is not within 180 s)."""
    output: list[str] = []
    up = threading.Event()

    def drain() -> None:
        assert launcher.stdout is not None
        for line in launcher.stdout:
            output.append(line)
            if "Ctrl-C stops it" in line:
                up.set()
        up.set()

    threading.Thread(target=drain, daemon=True).start()
    if not (up.wait(180) and launcher.poll() is None):
        launcher.kill()
        launcher.wait()
        raise AssertionError("".join(output[-40:]))
    return output


def test_replicas_without_a_database_are_refused_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    launcher = _up(tmp_path, "--replicas", "2", env=env)
    output, _ = launcher.communicate(timeout=60)
    assert launcher.returncode == 2
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "need PostgreSQL" in lines[0] and "--postgres" in lines[0], output


def test_up_runs_two_replicas_of_each_service_on_a_throwaway_postgres_behind_envoy(tmp_path):
    gateway = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        "GATEWAY_PORT": str(gateway),
        "SIM_TOKENS_PER_SECOND": "60",
        "SIM_FIRST_TOKEN_LATENCY": "0.05",
        "LEASE_SECONDS": "2",
    }
    launcher = _up(tmp_path, "--replicas", "2", "--postgres", env=env)
    output = _drain(launcher)
    try:
        table = {m[1]: m[2] for line in output if (m := re.match(r"  (\S+)\s+(\S+)", line))}
        for name in ("accounting-1", "accounting-2", "judge-1", "judge-2", "orchestrator-1", "orchestrator-2"):
            assert name in table, "".join(output)
        # Each orchestrator's own REPLICA_ID, <host>:<its port>.
        ids = re.findall(r"(orchestrator-\d)\s+\S+ \(REPLICA_ID (\S+)\)", "".join(output))
        assert len(ids) == 2
        for name, replica_id in ids:
            assert replica_id.rsplit(":", 1)[1] == table[name].rsplit(":", 1)[1], (name, replica_id)
        pg_port = int(table["postgres"].rsplit(":", 1)[1])
        servers = [p for p in psutil.process_iter(["cmdline"]) if f"-p {pg_port}" in " ".join(p.info["cmdline"] or [])]
        assert servers, "no PostgreSQL server on the printed port"
        data_dir = Path(next(arg for arg in servers[0].cmdline() if arg.startswith("/tmp/debate-engine-pg-")))

        # judge-1 dies: up says so and keeps running; the orchestrators use judge-2.
        judge_port = int(table["judge-1"].rsplit(":", 1)[1])
        judge = next(c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == judge_port and c.pid)
        psutil.Process(judge).kill()
        deadline = time.monotonic() + 30
        while not any("judge-1 exited" in line and "judge-2 carries on" in line for line in output):
            assert time.monotonic() < deadline, "".join(output[-20:])
            time.sleep(0.1)
        assert launcher.poll() is None
        assert any("judge-1 exited" in line and "restarting it in 1 s" in line for line in output), output[-5:]
        # ... and comes back on its own port.
        while not any("judge-1 is back" in line for line in output):
            assert time.monotonic() < deadline, "".join(output[-20:])
            time.sleep(0.1)
        again = next(c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == judge_port and c.pid)
        assert again != judge

        with grpc.insecure_channel(f"127.0.0.1:{gateway}") as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            created = stub.CreateDebate(
                pb.CreateDebateRequest(config=debate_config(rounds=2, max_tokens=20), request_id="up-replicas"),
                timeout=30,
            )
            debate_id = created.debate.debate_id
            stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), timeout=30)
            deadline = time.monotonic() + 120
            while True:
                state = stub.GetDebateStatus(pb.GetDebateStatusRequest(debate_id=debate_id), timeout=30).debate.state
                if state == pb.DEBATE_STATE_COMPLETED:
                    break
                assert state in (pb.DEBATE_STATE_RUNNING, pb.DEBATE_STATE_QUEUED), state
                assert time.monotonic() < deadline
                time.sleep(0.2)

        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=90) == 0
        assert not data_dir.exists(), "the throwaway database outlived the suite"
        assert not [p for p in servers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


def test_a_sigkilled_up_leaves_no_postgres_and_no_service_behind(tmp_path):
    """`up --postgres` killed outright (no chance to stop anything): its children, the services,
    Envoy and the throwaway PostgreSQL, all end (their parent-death signal), and the database's
    folder goes at the next start of a throwaway server."""
    env = {**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, "GATEWAY_PORT": str(free_port())}
    launcher = _up(tmp_path, "--postgres", env=env)
    output = _drain(launcher)
    try:
        children = psutil.Process(launcher.pid).children(recursive=True)
        table = {m[1]: m[2] for line in output if (m := re.match(r"  (\S+)\s+(\S+)", line))}
        pg_port = int(table["postgres"].rsplit(":", 1)[1])
        server = next(p for p in children if f"-p {pg_port}" in " ".join(p.cmdline()))
        data_dir = Path(next(arg for arg in server.cmdline() if arg.startswith("/tmp/debate-engine-pg-")))
        assert len(children) >= 5, children  # PostgreSQL, three services and Envoy at least

        launcher.kill()
        launcher.wait(10)
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], [p.cmdline() for p in alive]
        assert data_dir.parent.exists() and data_dir.parent in sweep_orphans(data_dir.parent.parent)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
