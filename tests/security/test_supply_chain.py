"""Supply chain: what is locked and what is installed.

- uv.lock pins every package to one version with sha256 hashes for every file it may install;
- the installer bootstrap (tools/bootstrap-requirements.txt) is pinned with the same hashes;
- every distribution installed in the environment is the locked one, at the locked version;
- no compromised LiteLLM release is locked or installed (1.82.7 and 1.82.8 shipped a
  credential stealer that ran from a `litellm_init.pth` file at interpreter start; the 1.107
  line is on the project's deny list too);
- no `.pth` file outside a short allowlist is installed: a `.pth` line starting with `import`
  runs at every interpreter start, which is how the LiteLLM compromise executed.
"""

from __future__ import annotations

import importlib.metadata
import re
import site
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from tests.helpers import ROOT

LOCK = ROOT / "uv.lock"
BOOTSTRAP = ROOT / "tools" / "bootstrap-requirements.txt"
SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")

COMPROMISED_LITELLM = re.compile(r"^(1\.82\.7|1\.82\.8|1\.107(\.\d+)*)([.+-].*)?$")

# Every .pth file that may be installed, with why, and the exact content it may have.
PTH_ALLOWLIST: dict[re.Pattern[str], tuple[str, re.Pattern[str]]] = {
    # setuptools (locked; build backend and a dependency) installs this shim so that
    # `import distutils` finds setuptools' copy; it imports only setuptools' own _distutils_hack.
    re.compile(r"^distutils-precedence\.pth$"): (
        "setuptools' distutils shim",
        re.compile(
            r"^import os; var = 'SETUPTOOLS_USE_DISTUTILS'; enabled = os\.environ\.get\(var, 'local'\) == 'local'; "
            r"enabled and __import__\('_distutils_hack'\)\.add_shim\(\); \s*$"
        ),
    ),
    # The project's own editable install (uv sync installs debate-engine in editable mode):
    # either a path line or setuptools' finder for this project only.
    re.compile(r"^__editable__\.debate_engine-[0-9][^/]*\.pth$"): (
        "this project's editable install",
        re.compile(
            r"^(import __editable___debate_engine_[0-9a-z_]+_finder; "
            r"__editable___debate_engine_[0-9a-z_]+_finder\.install\(\)|/[^\n;]*)\s*$"
        ),
    ),
}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict:
    with LOCK.open("rb") as handle:
        return tomllib.load(handle)


def _locked_packages() -> list[dict]:
    return _lock()["package"]


def _site_dirs() -> list[Path]:
    dirs = {Path(p) for p in site.getsitepackages()}
    dirs |= {Path(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
    venv_lib = ROOT / ".venv" / "lib"
    if venv_lib.is_dir():
        dirs |= {p for p in venv_lib.glob("python*/site-packages")}
    return sorted(d for d in dirs if d.is_dir())


def test_lock_file_pins_every_package_with_sha256_hashes():
    packages = _locked_packages()
    assert len(packages) > 20
    problems = []
    for package in packages:
        name, version, source = package["name"], package.get("version"), package.get("source", {})
        if not version:
            problems.append(f"{name}: no version")
        if "editable" in source or "virtual" in source:
            assert source.get("editable", source.get("virtual")) == ".", f"{name}: only the project itself may be local"
            continue
        if "registry" not in source:
            problems.append(f"{name}: source {source} is not a package registry (git/url/path sources are not allowed)")
            continue
        files = ([package["sdist"]] if "sdist" in package else []) + list(package.get("wheels", []))
        if not files:
            problems.append(f"{name}=={version}: no files")
        for file in files:
            if not SHA256.match(file.get("hash", "")):
                problems.append(f"{name}=={version}: {file.get('url', '?')} has no sha256 hash")
            if version and version not in file.get("url", ""):
                problems.append(f"{name}=={version}: {file.get('url', '?')} is not that version")
    assert not problems, "\n".join(problems)


def test_one_version_of_each_package():
    names = [_normalize(p["name"]) for p in _locked_packages()]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def test_bootstrap_requirements_are_hashed_and_match_the_lock():
    locked = {_normalize(p["name"]): p for p in _locked_packages()}
    text = BOOTSTRAP.read_text()
    requirements = [r for r in re.split(r"(?<!\\)\n", text) if r.strip() and not r.lstrip().startswith("#")]
    assert requirements
    for requirement in requirements:
        spec = re.match(r"^\s*([A-Za-z0-9_.-]+)==([^\s\\]+)", requirement)
        assert spec, f"not an exact pin: {requirement.strip()[:80]}"
        name, version = _normalize(spec.group(1)), spec.group(2)
        hashes = set(re.findall(r"--hash=(sha256:[0-9a-f]{64})", requirement))
        assert hashes, f"{name} has no --hash"
        assert name in locked and locked[name]["version"] == version, f"{name}=={version} is not the locked version"
        lock_hashes = {f["hash"] for f in locked[name].get("wheels", [])} | (
            {locked[name]["sdist"]["hash"]} if "sdist" in locked[name] else set()
        )
        assert hashes <= lock_hashes, f"{name}: bootstrap hashes differ from uv.lock"


# `python -m venv` seeds pip into the environment (the Makefile then uses it once, with
# --require-hashes, to install uv); it comes with the interpreter, not from the lock.
VENV_SEED_PACKAGES = {"pip"}


def test_installed_distributions_are_the_locked_ones():
    if not sys.prefix.startswith(str(ROOT / ".venv")):
        pytest.skip("not running in the project's .venv")
    locked = {_normalize(p["name"]): p["version"] for p in _locked_packages()}
    stray, drifted = [], []
    for dist in importlib.metadata.distributions():
        name = _normalize(dist.metadata["Name"])
        if name in VENV_SEED_PACKAGES:
            continue
        if name not in locked:
            stray.append(f"{name}=={dist.version}")
        elif locked[name] != dist.version:
            drifted.append(f"{name}: installed {dist.version}, locked {locked[name]}")
    assert not stray, f"installed but not in uv.lock (installed by hand?): {stray}"
    assert not drifted, drifted


def test_no_compromised_litellm_is_locked_or_installed():
    locked = [p["version"] for p in _locked_packages() if _normalize(p["name"]) == "litellm"]
    assert locked, "litellm is expected in the lock"
    assert not [v for v in locked if COMPROMISED_LITELLM.match(v)], locked
    installed = []
    for directory in _site_dirs():
        installed += [
            m.group(1)
            for d in directory.glob("litellm-*.dist-info")
            if (m := re.match(r"litellm-(.+)\.dist-info$", d.name))
        ]
    assert installed, "litellm is expected to be installed"
    assert not [v for v in installed if COMPROMISED_LITELLM.match(v)], installed
    for directory in _site_dirs():
        assert not list(directory.glob("litellm_init.pth")), "the 1.82.x stealer's .pth file is present"


@pytest.mark.parametrize(
    "version,bad",
    [
        ("1.82.7", True),
        ("1.82.8", True),
        ("1.107.0", True),
        ("1.107.3", True),
        ("1.107.3.post1", True),
        ("1.82.6", False),
        ("1.82.9", False),
        ("1.110.2", False),
        ("1.10.7", False),
        ("1.1070.0", False),
    ],
)
def test_compromised_version_pattern(version, bad):
    assert bool(COMPROMISED_LITELLM.match(version)) is bad


def test_only_allowlisted_pth_files_are_installed():
    found = []
    for directory in _site_dirs():
        found += sorted(directory.glob("*.pth"))
    assert found, "expected at least setuptools' distutils-precedence.pth"
    problems = []
    for path in found:
        rule = next((v for k, v in PTH_ALLOWLIST.items() if k.match(path.name)), None)
        if rule is None:
            problems.append(f"{path}: not on the allowlist")
            continue
        why, content = rule
        text = path.read_text(errors="replace")
        lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if len(lines) != 1 or not content.match(lines[0]):
            problems.append(f"{path} ({why}): unexpected content {text[:200]!r}")
    assert not problems, "\n".join(problems)
