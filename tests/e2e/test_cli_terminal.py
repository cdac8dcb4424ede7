"""The `debate` command as a new user meets it (issue 20): Ctrl-C driven through a real terminal
(tmux) detaches (item 5); a missing provider key is refused before anything starts (item 6).

A suite runs under `debate-engine up` with slow simulated debaters, so a debate is still running
when Ctrl-C arrives; the debate's state is then read through the API.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid

import grpc
import pytest
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from tests.helpers import BIN, ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")]


def _without_openai_key() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """`debate-engine up` on free ports, without the gateway, with slow simulated debaters."""
    ports = {name: free_port() for name in ("orchestrator", "judge", "accounting")}
    proc = subprocess.Popen(
        [str(BIN / "debate-engine"), "up", "--data-dir", str(tmp_path_factory.mktemp("suite")), "--no-metrics"]
        + [arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **_without_openai_key(),
            "PYTHONUNBUFFERED": "1",
            "GATEWAY_ENABLED": "0",
            "SIM_TOKENS_PER_SECOND": "12",
            "SIM_FIRST_TOKEN_LATENCY": "0.05",
        },
    )
    seen = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if not line or "Ctrl-C stops it" in line:
            break
    assert "Ctrl-C stops it" in "".join(seen), "".join(seen)
    yield f"127.0.0.1:{ports['orchestrator']}"
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()


class Terminal:
    """One tmux session of its own server (a private socket), 100x40."""

    def __init__(self, command: str):
        self.socket = f"i20-test-{uuid.uuid4().hex[:8]}"
        script = f"cd {shlex.quote(str(ROOT))} && {command}; echo EXIT=$?; sleep 600"
        self.tmux("new-session", "-d", "-x", "100", "-y", "40", "-s", "t", script)

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True, timeout=30
        ).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-S", "-500", "-t", "t")

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.screen())
            if match:
                return match
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} not on the screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


def _debate_command(target: str, *extra: str) -> str:
    args = [
        str(BIN / "debate-engine"),
        "debate",
        "--topic",
        "Cities should ban private cars from their historic centres",
        "--debater",
        "Ada=sim/debater:an urban economist:for",
        "--debater",
        "Milo=sim/debater:a shopkeeper:against",
        "--judge",
        "sim/judge",
        "--rounds",
        "3",
        "--target",
        target,
        *extra,
    ]
    return " ".join(shlex.quote(a) for a in args)


def _state(target: str, debate_id: str) -> int:
    with grpc.insecure_channel(target) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        return stub.GetDebateStatus(pb.GetDebateStatusRequest(debate_id=debate_id), timeout=10).debate.state


def test_ctrl_c_detaches_says_how_to_come_back_and_the_debate_goes_on(suite):
    terminal = Terminal(_debate_command(suite))
    try:
        debate_id = terminal.wait_for(r"id ([0-9a-zA-Z_-]{6,})").group(1)
        terminal.wait_for(r"● Ada")  # the first turn is streaming
        terminal.tmux("send-keys", "-t", "t", "C-c")
        terminal.wait_for(r"EXIT=130")
        screen = terminal.screen()
        assert f"detached: debate {debate_id} goes on." in screen
        assert f"debate-engine attach {debate_id} --target {suite}" in screen
        assert f"debate-engine cancel {debate_id} --target {suite}" in screen
        assert "Traceback" not in screen and "cancelling" not in screen
        # Through the API: still running a moment later, and it makes progress.
        time.sleep(1.0)
        assert _state(suite, debate_id) == pb.DEBATE_STATE_RUNNING
        # The printed cancel command works.
        command = shlex.split(re.search(r"debate-engine cancel .*", screen).group(0))
        cancelled = subprocess.run(
            [str(BIN / "debate-engine"), *command[1:]],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cancelled.returncode == 0, cancelled.stderr
        assert _state(suite, debate_id) == pb.DEBATE_STATE_CANCELLED
    finally:
        terminal.close()


def test_ctrl_c_with_cancel_on_exit_cancels_the_debate(suite):
    terminal = Terminal(_debate_command(suite, "--cancel-on-exit"))
    try:
        debate_id = terminal.wait_for(r"id ([0-9a-zA-Z_-]{6,})").group(1)
        terminal.wait_for(r"● Ada")
        terminal.tmux("send-keys", "-t", "t", "C-c")
        terminal.wait_for(r"EXIT=130")
        assert f"debate {debate_id} cancelled" in terminal.screen()
        assert _state(suite, debate_id) == pb.DEBATE_STATE_CANCELLED
    finally:
        terminal.close()


def _debate_ids(target: str) -> list[str]:
    with grpc.insecure_channel(target) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        return [d.debate_id for d in stub.ListDebates(pb.ListDebatesRequest(page_size=100), timeout=10).debates]


@pytest.mark.parametrize("where", ["--target", "a suite started here"])
def test_a_missing_provider_key_is_refused_before_the_debate_starts_in_one_line(suite, where):
    before = _debate_ids(suite)
    args = shlex.split(_debate_command(suite))
    args[args.index("Ada=sim/debater:an urban economist:for")] = "Ada=openai/gpt-4o:an urban economist:for"
    if where != "--target":
        args = args[: args.index("--target")]
    result = subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, timeout=120, env={**_without_openai_key(), "NO_COLOR": "1"}
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    line = result.stderr.strip()
    assert line.startswith("debate-engine: not started: ") and "OPENAI_API_KEY" in line
    assert "config.participants[0].model" in line and "Traceback" not in line
    assert "Round 1" not in result.stdout and "id " not in result.stdout
    assert _debate_ids(suite) == before  # nothing stored, nothing started
