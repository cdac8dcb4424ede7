"""Regenerate the Python code and type stubs of protos/ into protos/gen/python.

python scripts/gen_protos.py           # rewrite protos/gen/python
python scripts/gen_protos.py --check   # exit 1 when the committed code drifted
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
GEN_DIR = PROTO_ROOT / "gen" / "python"


def proto_files() -> list[Path]:
    return sorted(p for p in (PROTO_ROOT / "debate").rglob("*.proto"))


def generate(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent  # protoc-gen-mypy lives beside the interpreter
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"--mypy_out={out_dir}",
            f"--mypy_grpc_out={out_dir}",
            *files,
        ],
        check=True,
        cwd=PROTO_ROOT,
        env=env,
    )
    for package_dir in [p for p in out_dir.rglob("*") if p.is_dir()]:
        (package_dir / "__init__.py").touch()


def differences(a: Path, b: Path) -> list[str]:
    names_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    names_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    diff = sorted(str(n) for n in names_a ^ names_b)
    diff += sorted(str(n) for n in names_a & names_b if not filecmp.cmp(a / n, b / n, shallow=False))
    return diff


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail when protos/gen/python drifted")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            drift = differences(Path(tmp), GEN_DIR)
        if drift:
            print("generated code drifted from protos/ (run `make protos`):", *drift, sep="\n  ")
            return 1
        print("generated code matches protos/")
        return 0
    shutil.rmtree(GEN_DIR, ignore_errors=True)
    generate(GEN_DIR)
    print(f"generated {len(proto_files())} protos into {GEN_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
