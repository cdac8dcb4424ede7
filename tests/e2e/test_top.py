"""`debate-engine top` in a real terminal (tmux) against a suite started by `debate-engine up`.

The suite runs two debates with MAX_RUNNING_DEBATES=1 (one running, one queued); the debaters'
model is an endpoint of LLM_ENDPOINTS with a declared price, served by the local OpenAI-compatible
server (paced, so the debate lasts while top watches, and refusing its first call with a 429, a
provider error), so the tokens and the cost per hour are real figures of a priced model. A bad
CreateDebate adds a gRPC error. top runs inside `tmux new-session -d -x 120 -y 40`; the test
reads the pane (`tmux capture-pane -p`) until every figure shows, then sends q (and, in a second
run, Ctrl-C) and checks that top exits 0.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from tests.helpers import BIN, ROOT, free_port, read_until
from tests.support.fake_openai import Behavior, FakeOpenAIServer

TMUX = shutil.which("tmux")
PRICE = {"input_per_million": "0.15", "output_per_million": "0.60"}

pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed; run `make tmux`")


def _debate_engine(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "debate-engine"), *args], cwd=ROOT, text=True, **popen)


class Tmux:
    """A tmux server of its own (a socket in the test's folder) with one 120x40 session."""

    def __init__(self, folder: Path):
        self.socket = str(folder / "tmux.sock")

    def __call__(self, *args: str) -> str:
        return subprocess.run(
            [TMUX, "-S", self.socket, *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout

    def start(self, name: str, command: str) -> None:
        # The shell says how top exited, then stays so the pane can still be read.
        wrapped = f"{command}; echo TOP EXITED $?; sleep 600"
        self("new-session", "-d", "-s", name, "-x", "120", "-y", "40", "-c", str(ROOT), wrapped)

    def pane(self, name: str) -> str:
        return self("capture-pane", "-p", "-t", name)

    def wait_for(self, name: str, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.pane(name)
            if re.search(pattern, screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on the screen:\n{screen}")
            time.sleep(0.3)

    def close(self) -> None:
        subprocess.run([TMUX, "-S", self.socket, "kill-server"], capture_output=True, timeout=30)


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _figures(screen: str) -> dict[str, float] | None:
    """The figures the test needs from one screen of top, or None while one is missing or zero."""
    found = {}
    debates = re.search(r"running (\d+)\s+queued (\d+)", screen)
    relay = re.search(r"p50 ([\d.]+) (ms|s)\s+p99 ([\d.]+) (ms|s)", screen)
    cost = re.search(r"Cost\s+\$([\d.,]+) per hour", screen)
    model = re.search(r"^fake/debater\s+([\d.,]+)\s+([\d.,]+)\s+\$([\d.,]+)", screen, re.MULTILINE)
    if not (debates and relay and cost and model):
        return None
    found["running"], found["queued"] = int(debates.group(1)), int(debates.group(2))
    scale = {"ms": 1e-3, "s": 1.0}
    found["p50"] = _number(relay.group(1)) * scale[relay.group(2)]
    found["p99"] = _number(relay.group(3)) * scale[relay.group(4)]
    found["cost_per_hour"] = _number(cost.group(1))
    found["out_tokens_per_second"] = _number(model.group(1))
    found["model_cost_per_hour"] = _number(model.group(3))
    wanted = (
        found["running"] == 1
        and found["queued"] == 1
        and found["out_tokens_per_second"] > 0
        and found["cost_per_hour"] > 0
        and found["p50"] > 0
        and "RATE_LIMITED" in screen
        and "INVALID_ARGUMENT" in screen
    )
    return found if wanted else None


def test_top_in_tmux_shows_the_running_suite_and_quits_on_q_and_ctrl_c(tmp_path):
    ports = {name: free_port() for name in ("orchestrator", "judge", "accounting")}
    target = f"127.0.0.1:{ports['orchestrator']}"
    provider = FakeOpenAIServer(default=Behavior(chunks=100, chunk_delay=0.04)).start()
    provider.script(Behavior(status=429, retry_after=0.1))  # the first call: a provider error, retried
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "GATEWAY_ENABLED": "0",
        "MAX_RUNNING_DEBATES": "1",
        "LLM_ENDPOINTS": json.dumps({"fake": {"api_base": provider.base_url, "transport": "lean", "price": PRICE}}),
        "LLM_ALLOWED_MODELS": "sim/*,fake/*",
    }
    up = _debate_engine(
        "up",
        "--data-dir",
        str(tmp_path),
        *(arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    tmux = Tmux(tmp_path)
    debates: list[subprocess.Popen] = []
    try:
        read_until(up.stdout, r"Ctrl-C stops it", 120, [])
        assert (tmp_path / "suite.json").exists()
        for name, rounds in (("first", 4), ("second", 1)):
            debates.append(
                _debate_engine(
                    "debate",
                    "--target",
                    target,
                    "--topic",
                    f"The {name} debate: should cities ban private cars?",
                    "--debater",
                    "Ada=fake/debater:an urban economist:for",
                    "--debater",
                    "Milo=fake/debater:a shopkeeper:against",
                    "--judge",
                    "sim/judge",
                    "--rounds",
                    str(rounds),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            time.sleep(0.5)  # the first one takes the running slot
        with grpc.insecure_channel(target) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                orchestrator_pb2_grpc.OrchestratorServiceStub(channel).CreateDebate(
                    pb.CreateDebateRequest(config=common_pb2.DebateConfig(topic="")), timeout=30
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        top = f"{shlex.quote(str(BIN / 'debate-engine'))} top --data-dir {shlex.quote(str(tmp_path))}"
        tmux.start("top", top)
        deadline = time.monotonic() + 60
        figures = None
        while figures is None:
            screen = tmux.pane("top")
            figures = _figures(screen)
            if figures is None:
                assert time.monotonic() < deadline, f"top never showed every figure; last screen:\n{screen}"
                assert debates[0].poll() is None, f"the first debate ended before top showed it:\n{screen}"
                time.sleep(0.5)
        print(screen)  # what a person sees (pytest -s)
        assert "3 of 3 endpoints answer" in screen
        assert figures["p99"] >= figures["p50"] > 0
        assert figures["p99"] < 5, figures  # a relay latency, not a debate's length
        # fake/debater is the only priced model here: the suite's cost is its cost.
        assert figures["model_cost_per_hour"] == figures["cost_per_hour"] > 0
        # 100 chunks a turn, 0.04 s apart: a debater streams at most 25 tokens a second, two at once.
        assert 0 < figures["out_tokens_per_second"] < 2 * 25 * 1.5, figures
        assert re.search(r"^provider\s+fake/debater\s+PROVIDER_RATE_LIMITED", screen, re.MULTILINE), screen
        assert re.search(r"^OrchestratorService\s+CreateDebate\s+INVALID_ARGUMENT", screen, re.MULTILINE), screen

        tmux("send-keys", "-t", "top", "q")
        screen = tmux.wait_for("top", r"TOP EXITED \d+", 15)
        assert "TOP EXITED 0" in screen, screen
        assert "Traceback" not in screen

        tmux("kill-session", "-t", "top")
        tmux.start("top", top)
        tmux.wait_for("top", r"Debate Engine top", 30)
        tmux("send-keys", "-t", "top", "C-c")
        screen = tmux.wait_for("top", r"TOP EXITED \d+", 15)
        assert "TOP EXITED 0" in screen and "Traceback" not in screen, screen

        # One snapshot for scripts: the same figures, plain text, exit 0.
        once = subprocess.run(
            [str(BIN / "debate-engine"), "top", "--once", "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert once.returncode == 0, once.stderr
        assert re.search(r"running \d+\s+queued \d+", once.stdout) and "\x1b[" not in once.stdout
    finally:
        tmux.close()
        for debate in debates:
            debate.kill()
            debate.wait()
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        provider.stop()
    assert not (tmp_path / "suite.json").exists()  # up removes it when it stops


def test_top_without_a_suite_says_so_in_one_line(tmp_path):
    alone = subprocess.run(
        [str(BIN / "debate-engine"), "top", "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert alone.returncode == 1
    assert alone.stderr.strip().splitlines() == [
        f"debate-engine top: no suite is running on {tmp_path} (no {tmp_path}/suite.json); "
        "start one with `debate-engine up`"
    ]
    url = f"http://127.0.0.1:{free_port()}/metrics"
    unreachable = subprocess.run(
        [str(BIN / "debate-engine"), "top", "--metrics", url], capture_output=True, text=True, timeout=60
    )
    assert unreachable.returncode == 1
    assert unreachable.stderr.strip().splitlines() == [
        f"debate-engine top: no metrics endpoint answers ({url}: Connection refused); is the suite up?"
    ]
