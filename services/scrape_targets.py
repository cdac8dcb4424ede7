"""Prometheus targets of a running `debate-engine up`, as a file for Prometheus's file-based
service discovery (`file_sd_configs`).

`up` picks free ports for each service's /metrics and for Envoy's admin, so a Prometheus
configuration cannot name them in advance: `up` writes them to `<data dir>/prometheus/targets.json`
once the suite is up, and deploy/observability/prometheus-local.yml reads that file (Prometheus
re-reads it when it changes). Each target group is one process:

    [{"targets": ["127.0.0.1:41234"],
      "labels": {"job": "orchestrator", "process": "orchestrator", "__metrics_path__": "/metrics"}},
     {"targets": ["127.0.0.1:41240"],
      "labels": {"job": "envoy", "process": "envoy", "__metrics_path__": "/stats/prometheus"}}]

`job` is the service (the same for every replica: `orchestrator-1` and `orchestrator-2` are both
`orchestrator`), as the compose file's Prometheus names them, so the dashboard and the alert rules
read both alike.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from services.supervisor import ProcessSpec

TARGETS_FILE = Path("prometheus") / "targets.json"  # under the suite's data dir


def service_of(process_name: str) -> str:
    """The service (Prometheus `job`) of a process name: `orchestrator-2` -> `orchestrator`."""
    base, _, suffix = process_name.rpartition("-")
    return base if base and suffix.isdigit() else process_name


def scrape_targets(specs: Iterable[ProcessSpec]) -> list[dict]:
    """One file_sd target group per process that serves metrics (its `metrics_url`), in order."""
    groups = []
    for spec in specs:
        if not spec.metrics_url:
            continue
        url = urlsplit(spec.metrics_url)
        groups.append(
            {
                "targets": [url.netloc],
                "labels": {"job": service_of(spec.name), "process": spec.name, "__metrics_path__": url.path},
            }
        )
    return groups


def write_scrape_targets(data_dir: str | Path, specs: Iterable[ProcessSpec]) -> Path:
    """Writes `scrape_targets(specs)` to `<data_dir>/prometheus/targets.json` (atomically: a
    Prometheus watching the file never reads half of it); returns the file's absolute path."""
    path = (Path(data_dir) / TARGETS_FILE).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(scrape_targets(specs), indent=2) + "\n")
    os.replace(partial, path)
    return path
