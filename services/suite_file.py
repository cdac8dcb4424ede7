"""The suite file: what a running `debate-engine up` tells other commands about itself.

`up` writes `<data dir>/suite.json` once the suite is up and removes it when the suite stops;
`debate-engine top` reads it to find the services' Prometheus endpoints without the user
copying URLs. Its shape (JSON):

    {"pid": 1234,                       the `up` process
     "processes": [{"name": "orchestrator", "address": "127.0.0.1:50051",
                    "metrics_url": "http://127.0.0.1:40123/metrics"}, ...]}

`metrics_url` is null for a process that serves no metrics (Envoy, the page, or every process
under `up --no-metrics`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

SUITE_FILE_NAME = "suite.json"


class SuiteFileError(Exception):
    """The suite file is missing, unreadable, or names an `up` process that is gone; the message
    is one line for the user."""


@dataclass(frozen=True)
class SuiteProcess:
    name: str
    address: str | None
    metrics_url: str | None


def suite_file_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / SUITE_FILE_NAME


def write_suite_file(data_dir: str | os.PathLike[str], processes: list[SuiteProcess]) -> Path:
    """Writes the suite file of this process (atomically: a reader never sees half of it)."""
    path = suite_file_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"pid": os.getpid(), "processes": [vars(p) for p in processes]}
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    scratch.write_text(json.dumps(body, indent=2) + "\n")
    scratch.replace(path)
    return path


def remove_suite_file(data_dir: str | os.PathLike[str]) -> None:
    """Removes the suite file if this process wrote it (another `up` on the same data dir keeps its own)."""
    path = suite_file_path(data_dir)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def read_suite_file(data_dir: str | os.PathLike[str]) -> list[SuiteProcess]:
    """The processes of the suite running on `data_dir`. SuiteFileError when there is no suite file,
    it is not valid, or the `up` process that wrote it no longer runs."""
    path = suite_file_path(data_dir)
    try:
        body = json.loads(path.read_text())
        pid = int(body["pid"])
        processes = [SuiteProcess(str(p["name"]), p.get("address"), p.get("metrics_url")) for p in body["processes"]]
    except FileNotFoundError:
        raise SuiteFileError(
            f"no suite is running on {path.parent} (no {path}); start one with `debate-engine up`"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SuiteFileError(f"{path} is not a valid suite file ({error})") from None
    if not _alive(pid):
        raise SuiteFileError(f"the suite of {path} (pid {pid}) is not running; start one with `debate-engine up`")
    return processes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
