"""The committed generated code matches the protos, and the protos pass buf lint."""

import subprocess
import sys

from tests.helpers import BIN, ROOT


def test_generated_code_has_not_drifted():
    result = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_passes_with_standard_rules():
    result = subprocess.run(
        [str(BIN / "buf"), "lint"], cwd=ROOT / "protos", capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "STANDARD" in (ROOT / "protos" / "buf.yaml").read_text()
