"""`debate-engine demo` as a user runs it: the suite started, a debate shown, exit 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest

from tests.helpers import BIN, ROOT

pytestmark = pytest.mark.e2e


def test_demo_runs_a_debate_and_shows_scores_verdict_and_cost():
    # Faster simulated models (still streamed in many deltas) keep the test short.
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "NO_COLOR": "1",
        "SIM_TOKENS_PER_SECOND": "800",
        "SIM_FIRST_TOKEN_LATENCY": "0.02",
    }
    result = subprocess.run(
        [str(BIN / "debate-engine"), "demo"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = result.stdout
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{out}\nstderr:\n{result.stderr}"
    assert "\x1b" not in out  # not a TTY: plain text
    for name in ("Ada", "Milo"):  # every debater spoke in every round, with real words
        turns = re.findall(rf"^● {name}  round (\d)", out, re.MULTILINE)
        assert turns == ["1", "2", "3"], out
        words = " ".join(re.findall(rf"^  {name} +│ (.*)$", out, re.MULTILINE)).split()
        assert len(words) > 60, out
    for number in (1, 2, 3):
        scores = out[out.index(f"Round {number} scores") :]
        assert re.search(r"^  total +\d+\.\d+ +\d+\.\d+", scores, re.MULTILINE), out
        assert re.search(r"★ (leader: (Ada|Milo)|tie)", scores), out
    assert re.search(r"★ (Winner: (Ada|Milo)|A tie) \(confidence \d+%\)$", out, re.MULTILINE), out
    cost = out[out.index("━━━ Cost") :]
    for section in ("by participant", "by role", "by round", "by model"):
        assert section in cost
    assert re.search(r"^  total +\d+ +[\d,]+ +[\d,]+ +[\d,]+ +\$0", cost, re.MULTILINE), out
    assert "cost $0" in cost and "debate completed" in out


def test_make_demo_on_a_fresh_clone_is_quiet_and_installs_only_what_running_needs(tmp_path):
    """Issue 20, item 9: from a fresh clone, `make demo` prints fewer than 40 lines before the
    debate starts (a line a step, no package lists, no npm notes), and its .venv has no test tools."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    env.update({"PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "SIM_TOKENS_PER_SECOND": "800"})
    proc = subprocess.Popen(
        ["make", "demo"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    before: list[str] = []
    try:
        for line in proc.stdout:
            if line.startswith("━━━ Debate"):
                break
            before.append(line)
        else:
            raise AssertionError("the debate never started:\n" + "".join(before))
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the demo stops the suite it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert len(before) < 40, "".join(before)
    text = "".join(before)
    assert " + " not in text and "install-scripts" not in text and "npm warn" not in text, text
    assert not re.search(r"^added \d+ packages", text, re.MULTILINE), text  # npm's count
    bin_dir = clone / ".venv" / "bin"
    assert (bin_dir / "debate-engine").exists() and (bin_dir / "grpcurl").exists()
    for tool in ("pytest", "playwright", "locust", "ruff", "mypy"):
        assert not (bin_dir / tool).exists(), f"{tool} was installed by make demo"
